//! `cxgap send` and `cxgap import`: feedback into a running cxgap through the ingest gRPC
//! API. Records are checked locally first with the same decoder as `cxgap analyze`; an
//! invalid record stops the command before anything is sent (unless `--skip-invalid`), so
//! a bad export never lands half-imported. Resending is harmless: event ids deduplicate.

use crate::client::{self, Conn, OutFormat};
use anyhow::{Context, Result, bail};
use cxgap_import::{Format, RecordError};
use cxgap_proto::common as cpb;
use cxgap_proto::ingest as ipb;
use cxgap_proto::ingest::ingest_service_client::IngestServiceClient;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    conn: Conn,
    /// One feedback event as JSON (the JSON-lines export format); `-` or nothing reads
    /// standard input, one event per line.
    event: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: OutFormat,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    conn: Conn,
    /// Feedback export: .csv or .jsonl/.ndjson; `-` reads standard input.
    file: PathBuf,
    /// Management's internal assessments (same formats), for the perception gap.
    #[arg(long)]
    assessments: Option<PathBuf>,
    /// Input format when the extension does not say (csv, jsonl).
    #[arg(long)]
    input_format: Option<String>,
    /// Send the valid records even if some are invalid (each invalid one is still listed).
    #[arg(long)]
    skip_invalid: bool,
    /// Events per gRPC batch.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5000))]
    batch: u32,
    #[arg(long, value_enum, default_value = "table")]
    format: OutFormat,
}

fn now() -> cxgap_domain::Timestamp {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    cxgap_domain::Timestamp(ms)
}

fn open(path: &Path) -> Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, f)))
}

fn format_of(path: &Path, explicit: Option<&str>) -> Result<Format> {
    if let Some(s) = explicit {
        return Format::parse(s).with_context(|| format!("unknown input format {s:?} (csv, jsonl)"));
    }
    match Format::from_path(path) {
        Some(f) => Ok(f),
        None if path == Path::new("-") => Ok(Format::JsonLines),
        None => bail!("cannot tell the format of {} from its extension: pass --input-format csv|jsonl", path.display()),
    }
}

/// Every record of a file, decoded; a problem with the file as a whole is an error.
fn read_feedback(
    input: Box<dyn Read>,
    format: Format,
    name: &str,
) -> Result<(Vec<cxgap_domain::FeedbackEvent>, Vec<RecordError>)> {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    let records = cxgap_import::feedback(input, format, now()).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    for item in records {
        match item.map_err(|e| anyhow::anyhow!("{name}: {e}"))? {
            Ok(ev) => ok.push(ev),
            Err(e) => bad.push(e),
        }
    }
    Ok((ok, bad))
}

fn list_invalid(kind: &str, errors: &[RecordError]) {
    for e in errors {
        eprintln!("invalid {kind}: {e}");
    }
}

/// Sends a batch as a well-behaved client: backs off while the tenant's rate limit says
/// so (RESOURCE_EXHAUSTED) or the service is briefly unavailable, and gives up otherwise.
pub async fn submit_batch(
    ingest: &mut IngestServiceClient<Channel>,
    key: &str,
    events: Vec<cpb::FeedbackEvent>,
) -> Result<ipb::SubmitFeedbackBatchResponse> {
    for attempt in 0..50u64 {
        let req = client::authed(key, ipb::SubmitFeedbackBatchRequest { events: events.clone(), atomic: false })?;
        match ingest.submit_feedback_batch(req).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable) => {
                tokio::time::sleep(Duration::from_millis(100 * (1 + attempt.min(10)))).await;
            }
            Err(s) => return Err(client::status(s)).context("ingest refused the batch"),
        }
    }
    bail!(
        "ingest stayed busy for over a minute; giving up (everything sent so far was accepted, and resending it is harmless)"
    )
}

fn rejections(list: &[ipb::EventRejection]) -> Vec<serde_json::Value> {
    list.iter()
        .map(|r| {
            serde_json::json!({
                "event_id": r.event_id,
                "violations": r.violations.iter().map(|v| serde_json::json!({"field": v.field, "description": v.description})).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

pub fn send(args: SendArgs) -> Result<ExitCode> {
    let key = args.conn.key()?;
    let (events, bad) = match args.event.as_deref() {
        None | Some("-") => read_feedback(Box::new(std::io::stdin().lock()), Format::JsonLines, "stdin")?,
        Some(json) => read_feedback(Box::new(std::io::Cursor::new(json.to_string())), Format::JsonLines, "event")?,
    };
    if !bad.is_empty() {
        list_invalid("event", &bad);
        eprintln!("nothing was sent");
        return Ok(ExitCode::from(1));
    }
    if events.is_empty() {
        bail!("no event given: pass one as JSON, or pipe JSON lines in");
    }
    runtime()?.block_on(async move {
        let mut ingest = IngestServiceClient::new(args.conn.ingest().await?);
        let mut results = Vec::new();
        for ev in &events {
            let pb = cxgap_proto::convert::feedback_to_pb(ev, "", now());
            let r = ingest
                .submit_feedback(client::authed(&key, ipb::SubmitFeedbackRequest { event: Some(pb) })?)
                .await
                .map_err(client::status)
                .with_context(|| format!("sending event {}", ev.event_id))?
                .into_inner();
            results.push(r);
        }
        match args.format {
            OutFormat::Json => client::print_json(&serde_json::Value::Array(
                results.iter().map(|r| serde_json::json!({"event_id": r.event_id, "duplicate": r.duplicate})).collect(),
            ))?,
            OutFormat::Table => {
                for r in &results {
                    let what = if r.duplicate { "already accepted (duplicate)" } else { "accepted" };
                    println!("{}: {what}", r.event_id);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn import(args: ImportArgs) -> Result<ExitCode> {
    let key = args.conn.key()?;
    let name = args.file.display().to_string();
    let (events, bad) = read_feedback(open(&args.file)?, format_of(&args.file, args.input_format.as_deref())?, &name)?;
    list_invalid("record", &bad);
    let mut assessments = Vec::new();
    let mut bad_assessments = Vec::new();
    if let Some(path) = &args.assessments {
        let format = format_of(path, args.input_format.as_deref())?;
        let records = cxgap_import::assessments(open(path)?, format, now())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for item in records {
            match item.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? {
                Ok(a) => assessments.push(a),
                Err(e) => bad_assessments.push(e),
            }
        }
        list_invalid("assessment", &bad_assessments);
    }
    let invalid = bad.len() + bad_assessments.len();
    if invalid > 0 && !args.skip_invalid {
        eprintln!(
            "{invalid} invalid record(s); nothing was sent. Fix them, or pass --skip-invalid to send the valid ones."
        );
        return Ok(ExitCode::from(1));
    }
    runtime()?.block_on(async move {
        let mut ingest = IngestServiceClient::new(args.conn.ingest().await?);
        for a in &assessments {
            let pb = cxgap_proto::convert::assessment_to_pb(a, "");
            ingest
                .submit_assessment(client::authed(&key, ipb::SubmitAssessmentRequest { assessment: Some(pb) })?)
                .await
                .map_err(client::status)
                .context("sending an assessment")?;
        }
        let (mut accepted, mut duplicates, mut refused) = (0u64, 0u64, Vec::new());
        for chunk in events.chunks(args.batch as usize) {
            let pbs = chunk.iter().map(|e| cxgap_proto::convert::feedback_to_pb(e, "", now())).collect();
            let r = submit_batch(&mut ingest, &key, pbs).await?;
            accepted += u64::from(r.accepted);
            duplicates += u64::from(r.duplicates);
            refused.extend(r.rejected);
        }
        match args.format {
            OutFormat::Json => client::print_json(&serde_json::json!({
                "file": name,
                "records": events.len() + bad.len(),
                "accepted": accepted,
                "duplicates": duplicates,
                "invalid": bad.len(),
                "refused_by_service": rejections(&refused),
                "assessments": assessments.len(),
                "assessments_invalid": bad_assessments.len(),
            }))?,
            OutFormat::Table => {
                println!(
                    "{name}: {} records, {accepted} accepted, {duplicates} already there, {} invalid locally, {} refused by the service",
                    events.len() + bad.len(),
                    bad.len(),
                    refused.len()
                );
                if args.assessments.is_some() {
                    println!("assessments: {} sent, {} invalid", assessments.len(), bad_assessments.len());
                }
                for r in &refused {
                    let why: Vec<String> = r.violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect();
                    eprintln!("refused {}: {}", r.event_id, why.join("; "));
                }
            }
        }
        Ok(if refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}
