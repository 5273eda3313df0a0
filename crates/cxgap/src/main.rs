//! The `cxgap` command. Today: `cxgap analyze`, the batch analyser that runs the gap engine
//! over an export with no services. The services and embedded mode join as they land.

mod analyze;
mod render;
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
    /// Print the gap report of a feedback export (CSV or JSON lines), no services needed.
    Analyze(analyze::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Analyze(args) => analyze::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
