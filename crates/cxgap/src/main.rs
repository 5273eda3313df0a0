//! The `cxgap` command: the batch analyser (`analyze`), the three services (`ingest`,
//! `analytics`, `alerting`), all three in one process (`run`, embedded mode), and
//! tenant/key and rule administration (`tenants`, `keys`, `rules`).

mod analyze;
mod demo;
mod embedded;
mod render;
mod rules;
mod services;
mod table;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "cxgap", version, about = "Measure the customer experience gap and flag churn risk")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process (embedded mode): ingest, analytics and alerting over a
    /// durable in-process bus and SQLite files in a data directory. No setup needed.
    Run(embedded::RunArgs),
    /// Embedded mode fed by a realistic, seeded multi-channel stream: live gaps and alerts.
    Demo(demo::DemoArgs),
    /// Print the gap report of a feedback export (CSV or JSON lines), no services needed.
    Analyze(analyze::Args),
    /// Run the ingest service (gRPC + HTTP → Kafka), configured by CXGAP_* variables and flags.
    Ingest(services::ServiceArgs),
    /// Run the analytics service (Kafka → exactly-once gap state → query API, signals).
    Analytics(services::ServiceArgs),
    /// Run the alerting service (signals → rules → alerts → webhooks, Kafka, gRPC stream).
    Alerting(services::ServiceArgs),
    /// A tenant's alert rules: list, apply a YAML file, delete, print the defaults.
    Rules(rules::RulesArgs),
    /// Create and list tenants in the services' database.
    Tenants(services::TenantsArgs),
    /// Create, list and revoke API keys.
    Keys(services::KeysArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => embedded::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Ingest(args) => services::ingest(args),
        Command::Analytics(args) => services::analytics(args),
        Command::Alerting(args) => services::alerting(args),
        Command::Rules(args) => rules::run(args),
        Command::Tenants(args) => services::tenants(args),
        Command::Keys(args) => services::keys(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
