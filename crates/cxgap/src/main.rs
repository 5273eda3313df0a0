//! The `cxgap` command: the batch analyser (`analyze`), the three services (`ingest`,
//! `analytics`, `alerting`), all three in one process (`run`, embedded mode), and
//! tenant/key and rule administration (`tenants`, `keys`, `rules`), and the client
//! commands that speak gRPC to a running cxgap (`send`, `import`, `report`, `risk`,
//! `at-risk`, `alerts`, `subscribe`).

mod alerts;
mod analyze;
mod client;
mod demo;
mod embedded;
mod feed;
mod filter;
mod query;
mod render;
mod retention;
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
    /// Send feedback events (JSON) to a running cxgap.
    Send(feed::SendArgs),
    /// Import a feedback export (CSV or JSON lines) into a running cxgap.
    Import(feed::ImportArgs),
    /// The gap report of a running cxgap.
    Report(query::ReportArgs),
    /// One customer's churn risk, drivers and history.
    Risk(query::RiskArgs),
    /// Customers ordered by churn risk × value.
    AtRisk(query::AtRiskArgs),
    /// List, acknowledge, resolve and watch alerts.
    Alerts(alerts::AlertsArgs),
    /// Subscribe to alerts: webhook, Kafka topic or gRPC stream; list and delete.
    Subscribe(alerts::SubscribeArgs),
    /// A tenant's alert rules: list, apply a YAML file, delete, print the defaults.
    Rules(rules::RulesArgs),
    /// Every environment variable the binary reads (table, markdown or json).
    Settings(services::SettingsArgs),
    /// Bring the services' database schema up to date and exit (a deployment's migration Job).
    Migrate(services::MigrateArgs),
    /// Create and list tenants in the services' database.
    Tenants(services::TenantsArgs),
    /// Create, list and revoke API keys.
    Keys(services::KeysArgs),
}

// mimalloc instead of the system allocator: the services allocate many small, short-lived
// objects per event (decoded messages, records, statements), and glibc's allocator spent
// a quarter of ingest's CPU time (measured with the benchmark suite, docs/benchmarks-history.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => embedded::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Ingest(args) => services::ingest(args),
        Command::Analytics(args) => services::analytics(args),
        Command::Alerting(args) => services::alerting(args),
        Command::Send(args) => feed::send(args),
        Command::Import(args) => feed::import(args),
        Command::Report(args) => query::report(args),
        Command::Risk(args) => query::risk(args),
        Command::AtRisk(args) => query::at_risk(args),
        Command::Alerts(args) => alerts::alerts(args),
        Command::Subscribe(args) => alerts::subscribe(args),
        Command::Rules(args) => rules::run(args),
        Command::Migrate(args) => services::migrate(args),
        Command::Settings(args) => services::settings(args),
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
