//! `cxgap rules`: a tenant's alert rules through the alerting service's gRPC API — list,
//! apply a declarative YAML file (create or update each rule; `--prune` deletes the rest),
//! delete one, or print the defaults as a starting file.

use crate::client::{Conn, authed, status};
use anyhow::{Context, Result, bail};
use cxgap_alerting::grpc::{rule_from_pb, rule_to_pb};
use cxgap_alerting::model::{Rule, default_rules};
use cxgap_proto::alerting as pb;
use cxgap_proto::alerting::alerting_service_client::AlertingServiceClient;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::ExitCode;
use tonic::transport::Channel;

#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RulesCommand {
    /// List the tenant's rules.
    List {
        #[command(flatten)]
        client: Conn,
        /// table or yaml (the file format `apply` reads).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Create or update every rule of a YAML file (`rules: [...]`).
    Apply {
        #[command(flatten)]
        client: Conn,
        file: PathBuf,
        /// Also delete the tenant's rules the file does not name.
        #[arg(long)]
        prune: bool,
        /// Check the file and show what would change, without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete one rule.
    Delete {
        #[command(flatten)]
        client: Conn,
        rule_id: String,
    },
    /// Print the rules a new tenant starts with, as a YAML file to edit.
    Defaults,
}

#[derive(Debug, Serialize, Deserialize)]
struct RulesFile {
    rules: Vec<Rule>,
}

/// Reads and checks a rules file; every problem names the rule and what is wrong.
pub fn read_file(path: &std::path::Path) -> Result<Vec<Rule>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: RulesFile = serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, r) in file.rules.iter().enumerate() {
        if let Err(e) = r.validate() {
            problems.push(format!("rule {} ({:?}): {e}", i + 1, r.id));
        }
        if !seen.insert(r.id.as_str()) {
            problems.push(format!("rule {} ({:?}): the id is used twice", i + 1, r.id));
        }
    }
    if !problems.is_empty() {
        bail!("{}:\n  {}", path.display(), problems.join("\n  "));
    }
    Ok(file.rules)
}

async fn connect(c: &Conn) -> Result<(AlertingServiceClient<Channel>, String)> {
    let key = c.key()?;
    Ok((AlertingServiceClient::new(c.alerting().await?), key))
}

pub fn run(args: RulesArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match args.command {
            RulesCommand::Defaults => {
                print!("{}", serde_yaml::to_string(&RulesFile { rules: default_rules() })?);
            }
            RulesCommand::List { client, format } => {
                let (mut api, auth) = connect(&client).await?;
                let list = api.list_rules(authed(&auth, pb::ListRulesRequest {})?).await.map_err(status)?.into_inner();
                let rules: Vec<Rule> = list.rules.iter().map(rule_from_pb).collect::<Result<_, _>>().map_err(status)?;
                match format.as_str() {
                    "yaml" => print!("{}", serde_yaml::to_string(&RulesFile { rules })?),
                    "table" => {
                        println!("{:<24} {:<18} {:<9} {:<8} name", "id", "kind", "severity", "enabled");
                        for r in rules {
                            println!(
                                "{:<24} {:<18} {:<9} {:<8} {}",
                                r.id,
                                r.params.kind(),
                                format!("{:?}", r.severity).to_lowercase(),
                                r.enabled,
                                r.name
                            );
                        }
                    }
                    other => bail!("--format {other:?} is not table or yaml"),
                }
            }
            RulesCommand::Apply { client, file, prune, dry_run } => {
                let wanted = read_file(&file)?;
                let (mut api, auth) = connect(&client).await?;
                let current =
                    api.list_rules(authed(&auth, pb::ListRulesRequest {})?).await.map_err(status)?.into_inner();
                let existing: Vec<String> = current.rules.iter().map(|r| r.rule_id.clone()).collect();
                for r in &wanted {
                    let exists = existing.contains(&r.id);
                    let verb = if exists { "update" } else { "create" };
                    println!("{verb} {}", r.id);
                    if dry_run {
                        continue;
                    }
                    let rule = Some(rule_to_pb(r));
                    if exists {
                        api.update_rule(authed(&auth, pb::UpdateRuleRequest { rule })?).await.map_err(status)?;
                    } else {
                        api.create_rule(authed(&auth, pb::CreateRuleRequest { rule })?).await.map_err(status)?;
                    }
                }
                if prune {
                    for id in existing.iter().filter(|id| !wanted.iter().any(|r| &r.id == *id)) {
                        println!("delete {id}");
                        if !dry_run {
                            api.delete_rule(authed(&auth, pb::DeleteRuleRequest { rule_id: id.clone() })?)
                                .await
                                .map_err(status)?;
                        }
                    }
                }
            }
            RulesCommand::Delete { client, rule_id } => {
                let (mut api, auth) = connect(&client).await?;
                api.delete_rule(authed(&auth, pb::DeleteRuleRequest { rule_id: rule_id.clone() })?)
                    .await
                    .map_err(status)?;
                println!("deleted {rule_id}");
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
