//! `cxgap analyze`: reads a feedback export, applies it to a fresh gap state and prints
//! the gap report. Bad records are listed with line and field; by default any bad record
//! fails the run (exit 1) so nothing is silently skipped, and `--skip-invalid` reports on
//! the valid records while still listing and counting every rejected one.

use crate::render;
use anyhow::{Context, Result, bail};
use cxgap_domain::report::{self, GroupBy, ReportQuery, RiskView, Window};
use cxgap_domain::risk::RiskModel;
use cxgap_domain::servqual::ImportanceWeights;
use cxgap_domain::{Day, Dimension, GapState, Timestamp};
use cxgap_import::{Format, ImportError, RecordError};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Feedback export: .csv, or .jsonl/.ndjson (JSON lines). `-` reads standard input.
    file: PathBuf,
    /// Management's internal assessments (same formats), for the perception gap.
    #[arg(long)]
    assessments: Option<PathBuf>,
    /// Input format when the extension does not say (csv, jsonl).
    #[arg(long, value_parser = parse_format)]
    input_format: Option<Format>,
    /// Output: human-readable text or JSON.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Event-time window ending at --as-of: 7d, 30d, 90d, any Nd, or all.
    #[arg(long, default_value = "all", value_parser = parse_window)]
    window: Window,
    /// Last day of the window (YYYY-MM-DD); defaults to the latest event's day.
    #[arg(long, value_parser = parse_day)]
    as_of: Option<Day>,
    /// Group by a combination, comma-separated: channel, stage, touchpoint, dimension,
    /// segment.KEY. Without it the report shows each of channel, stage and touchpoint.
    #[arg(long, value_delimiter = ',', value_parser = parse_group)]
    by: Vec<GroupBy>,
    /// Groups with fewer responses are marked low-n; channels below it are not compared.
    #[arg(long, default_value_t = 30)]
    min_n: u64,
    /// SERVQUAL importance weights, e.g. reliability=32,responsiveness=22,assurance=19,
    /// empathy=16,tangibles=11 (the default; normalised, missing ones count 0).
    #[arg(long, value_parser = parse_weights)]
    weights: Option<ImportanceWeights>,
    /// How many at-risk customers to list.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Report on the valid records even if some are invalid (each is still listed).
    #[arg(long)]
    skip_invalid: bool,
    #[command(flatten)]
    filter: crate::filter::FilterArgs,
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("unknown input format {s:?} (csv, jsonl)"))
}

fn parse_window(s: &str) -> Result<Window, String> {
    Window::parse(s).ok_or_else(|| format!("{s:?} is not a window (7d, 30d, 90d, Nd or all)"))
}

fn parse_day(s: &str) -> Result<Day, String> {
    Day::parse(s).ok_or_else(|| format!("{s:?} is not a date (YYYY-MM-DD)"))
}

fn parse_group(s: &str) -> Result<GroupBy, String> {
    GroupBy::parse(s)
        .ok_or_else(|| format!("{s:?} is not a grouping (channel, stage, touchpoint, dimension, segment.KEY)"))
}

fn parse_weights(s: &str) -> Result<ImportanceWeights, String> {
    let mut w = [0.0; 5];
    for part in s.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?} is not dimension=weight"))?;
        let d = Dimension::parse(k)
            .ok_or_else(|| format!("{k:?} is not one of {}", Dimension::allowed().to_lowercase()))?;
        w[d.index()] = v.trim().parse().map_err(|_| format!("{v:?} is not a number"))?;
    }
    ImportanceWeights::new(w)
}

fn open(path: &Path) -> Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin().lock()));
    }
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(io::BufReader::with_capacity(1 << 16, f)))
}

fn format_of(path: &Path, explicit: Option<Format>) -> Result<Format> {
    match explicit.or_else(|| Format::from_path(path)) {
        Some(f) => Ok(f),
        None => bail!("cannot tell the format of {} from its extension: pass --input-format csv|jsonl", path.display()),
    }
}

/// What was read, so the report says how many records it stands on.
#[derive(Debug, Default, Serialize)]
pub struct InputSummary {
    pub file: String,
    pub records: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub assessments: u64,
    pub assessments_rejected: u64,
}

#[derive(Debug, Serialize)]
pub struct Analysis {
    pub input: InputSummary,
    pub report: report::GapReport,
    /// Reports grouped one dimension at a time (when no --by was given), or by --by.
    pub breakdowns: Vec<report::GapReport>,
    /// Stage × channel: the gap heatmap.
    pub heatmap: report::GapReport,
    pub windows: Vec<report::GapReport>,
    pub nps_trend: report::Trend,
    pub at_risk: Vec<report::CustomerRisk>,
    /// What --channel, --stage, --touchpoint and --segment let through; empty lists pass all.
    pub filter: report::Filter,
}

fn now() -> Timestamp {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    Timestamp(ms)
}

fn report_errors(kind: &str, errors: &[RecordError]) {
    let mut err = io::stderr().lock();
    for e in errors {
        let _ = writeln!(err, "invalid {kind}: {e}");
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let filter = args.filter.domain()?;
    let now = now();
    let mut state = GapState::new();
    let mut input = InputSummary { file: args.file.display().to_string(), ..Default::default() };
    let mut errors = Vec::new();
    let format = format_of(&args.file, args.input_format)?;
    let records = cxgap_import::feedback(open(&args.file)?, format, now)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    // Applied in chunks: the engine overlaps the memory accesses of a chunk's events.
    const CHUNK: usize = 4096;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut apply = |chunk: &mut Vec<_>, input: &mut InputSummary| {
        state.apply_all(chunk.iter(), |_, applied| match applied {
            cxgap_domain::Applied::New => input.applied += 1,
            cxgap_domain::Applied::Duplicate => input.duplicates += 1,
        });
        chunk.clear();
    };
    for item in records {
        input.records += 1;
        match item.map_err(|e: ImportError| anyhow::anyhow!("{}: {e}", args.file.display()))? {
            Ok(ev) => {
                chunk.push(ev);
                if chunk.len() == CHUNK {
                    apply(&mut chunk, &mut input);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    apply(&mut chunk, &mut input);
    input.rejected = errors.len() as u64;
    report_errors("record", &errors);
    let mut assessment_errors = Vec::new();
    if let Some(path) = &args.assessments {
        let format = format_of(path, args.input_format)?;
        let records = cxgap_import::assessments(open(path)?, format, now)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for item in records {
            match item.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? {
                Ok(a) => {
                    state.apply_assessment(&a);
                    input.assessments += 1;
                }
                Err(e) => assessment_errors.push(e),
            }
        }
        input.assessments_rejected = assessment_errors.len() as u64;
        report_errors("assessment", &assessment_errors);
    }
    let bad = input.rejected + input.assessments_rejected;
    if bad > 0 && !args.skip_invalid {
        eprintln!(
            "{bad} invalid record(s); nothing was reported. Fix them, or pass --skip-invalid to report on the valid ones."
        );
        return Ok(ExitCode::from(1));
    }
    let Some(last_day) = state.last_day() else {
        bail!("{} holds no valid feedback records", args.file.display());
    };
    let analysis = analyse(&state, input, &args, args.as_of.unwrap_or(last_day), filter);
    let mut out = io::stdout().lock();
    if args.format == "json" {
        serde_json::to_writer_pretty(&mut out, &analysis)?;
        writeln!(out)?;
    } else {
        out.write_all(render::text(&analysis, args.top).as_bytes())?;
    }
    if bad > 0 {
        eprintln!("warning: {bad} invalid record(s) were left out of this report (listed above)");
    }
    Ok(ExitCode::SUCCESS)
}

/// The report, breakdowns, trend and at-risk list, all over the feedback (and customers)
/// `filter` lets through.
fn analyse(state: &GapState, input: InputSummary, args: &Args, as_of: Day, filter: report::Filter) -> Analysis {
    let mut q = ReportQuery::new(as_of, args.window);
    q.min_n = args.min_n;
    q.filter = filter;
    if let Some(w) = args.weights {
        q.weights = w;
    }
    let grouped = |by: Vec<GroupBy>| {
        let mut q = q.clone();
        q.group_by = by;
        report::gap_report(state, &q)
    };
    let breakdowns = if args.by.is_empty() {
        [GroupBy::Channel, GroupBy::JourneyStage, GroupBy::Touchpoint, GroupBy::Dimension]
            .into_iter()
            .map(|g| grouped(vec![g]))
            .collect()
    } else {
        vec![grouped(args.by.clone())]
    };
    let windows = Window::STANDARD
        .iter()
        .map(|w| {
            let mut q = q.clone();
            q.window = *w;
            report::gap_report(state, &q)
        })
        .collect();
    let model = RiskModel::default();
    Analysis {
        report: report::gap_report(state, &q),
        breakdowns,
        heatmap: grouped(vec![GroupBy::JourneyStage, GroupBy::Channel]),
        windows,
        nps_trend: report::trend(
            state,
            report::Metric::Nps,
            report::Granularity::Week,
            Window::Days(30),
            as_of,
            &q.filter,
        ),
        at_risk: RiskView::new(state, &model, as_of).at_risk(
            0.0,
            &report::CustomerFilter::lenient(&q.filter),
            args.top,
        ),
        filter: q.filter,
        input,
    }
}
