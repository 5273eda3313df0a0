//! The cxgap benchmark suite, run by `cargo bench -p cxgap-bench`: in one run, on one
//! tansu broker and PostgreSQL, the bare rdkafka producer and consumer (the baselines),
//! gRPC and HTTP ingest, analytics with exactly-once state, the accepted-to-alert latency
//! under open-loop load, the engine's events per second per core and the memory per
//! tracked customer. It prints a table of ratios and targets and writes the figures as JSON.
//!
//! Settings (environment): `CXGAP_BENCH_EVENTS` (gRPC events, default 100 000; HTTP gets
//! half), `CXGAP_BENCH_ENGINE_EVENTS` (500 000), `CXGAP_BENCH_LATENCY_SECONDS` (20),
//! `CXGAP_BENCH_CALIBRATION_EVENTS` (10 000: the backlog that measures the pipeline's
//! sustainable rate), `CXGAP_BENCH_LATENCY_RATE` (events/s; default half that rate),
//! `CXGAP_BENCH_MEMORY` (customer counts, default `100000,1000000`), `CXGAP_BENCH_ONLY`
//! (comma list of parts: throughput, latency, engine, memory), `CXGAP_BENCH_OUT` (the
//! JSON file, default `target/cxgap-bench.json`).

pub mod cpu;
pub mod engine;
pub mod pipeline;
pub mod report;
pub mod workload;

use report::Results;
use serde_json::json;
use std::process::ExitCode;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}

/// What tells one virtual machine from another in `/proc/cpuinfo`: figures on the same
/// kind of machine differed by up to seven times, and a model name such as "AMD EPYC"
/// does not say which generation ran them.
fn processor(cpuinfo: &str) -> serde_json::Value {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let flags = field("flags").unwrap_or_default();
    let has: Vec<&str> =
        ["avx2", "avx512f", "sha_ni"].into_iter().filter(|f| flags.split_whitespace().any(|x| x == *f)).collect();
    json!({
        "model": field("model name").unwrap_or_default(),
        "family": field("cpu family"),
        "model_number": field("model"),
        "mhz": field("cpu MHz").and_then(|v| v.parse::<f64>().ok()).map(f64::round),
        "flags": has,
    })
}

/// The kernel's setting of transparent huge pages (`always`, `madvise` or `never`): on
/// these machines a large part of the engine's time is the kernel zeroing the pages its
/// state touches first, and the page size changes that cost.
fn huge_pages(setting: &str) -> Option<String> {
    let start = setting.find('[')? + 1;
    let len = setting[start..].find(']')?;
    Some(setting[start..start + len].to_string())
}

/// What `program args` printed, run from this crate's directory; `None` when it could not
/// run or failed.
fn stdout_of(program: &str, args: &[&str]) -> Option<String> {
    std::process::Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The commit measured, `+` when the tree held changes beside it: figures are compared
/// across runs by the code they ran.
fn commit() -> Option<String> {
    let git = |args: &[&str]| stdout_of("git", args);
    let head = git(&["rev-parse", "--short=7", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+") } else { head })
}

fn machine() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let processor = processor(&read("/proc/cpuinfo"));
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let tansu = stdout_of("tansu", &["--version"]).unwrap_or_default();
    json!({
        "cpu": processor["model"],
        "processor": processor,
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "os": std::env::consts::OS,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "transparent_huge_pages": huge_pages(&read("/sys/kernel/mm/transparent_hugepage/enabled")),
        "broker": tansu,
        "commit": commit(),
        "date": workload::now_ms(),
    })
}

pub fn main() -> ExitCode {
    if let Ok(n) = std::env::var(engine::MEMORY_CHILD) {
        return match n.parse() {
            Ok(n) => engine::memory_child(n),
            Err(_) => {
                eprintln!("{}={n:?} is not a number", engine::MEMORY_CHILD);
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        // Missed targets are findings, reported in the table, not a failed run.
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let events: usize = env_or("CXGAP_BENCH_EVENTS", 100_000)?;
    let engine_events: usize = env_or("CXGAP_BENCH_ENGINE_EVENTS", 500_000)?;
    let seconds: u64 = env_or("CXGAP_BENCH_LATENCY_SECONDS", 20)?;
    let calibration: usize = env_or("CXGAP_BENCH_CALIBRATION_EVENTS", 10_000)?;
    let rate: Option<f64> = match std::env::var("CXGAP_BENCH_LATENCY_RATE") {
        Ok(v) => Some(v.trim().parse().map_err(|_| anyhow::anyhow!("CXGAP_BENCH_LATENCY_RATE={v:?} is not a number"))?),
        Err(_) => None,
    };
    let memory: Vec<u64> = std::env::var("CXGAP_BENCH_MEMORY")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| anyhow::anyhow!("CXGAP_BENCH_MEMORY: {s:?} is not a number")))
        .collect::<anyhow::Result<_>>()?;
    let only = std::env::var("CXGAP_BENCH_ONLY").unwrap_or_default();
    let parts: Vec<&str> = only.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    for p in &parts {
        anyhow::ensure!(
            ["throughput", "latency", "engine", "memory"].contains(p),
            "CXGAP_BENCH_ONLY: unknown part {p:?} (throughput, latency, engine, memory)"
        );
    }
    let wants = |p: &str| parts.is_empty() || parts.contains(&p);
    let out = std::env::var("CXGAP_BENCH_OUT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/cxgap-bench.json").into());

    let mut results = Results {
        machine: machine(),
        settings: json!({
            "events": events,
            "http_events": events / 2,
            "engine_events": engine_events,
            "latency_seconds": seconds,
            "latency_rate": rate,
            "calibration_events": calibration,
            "memory_customers": memory,
        }),
        ..Default::default()
    };
    println!("cxgap benchmark suite — {}", results.machine);
    if wants("engine") {
        println!("== engine ({engine_events} events)");
        engine::throughput(&mut results, engine_events);
    }
    if wants("memory") {
        println!("== memory per tracked customer");
        engine::memory(&mut results, &memory)?;
    }
    let rt = tokio::runtime::Runtime::new()?;
    if wants("throughput") {
        println!("== throughput ({events} events; tansu and PostgreSQL on this machine)");
        rt.block_on(pipeline::throughput(&mut results, events))?;
    }
    if wants("latency") {
        println!(
            "== latency ({seconds} s at {}; calibrated with {calibration} events)",
            match rate {
                Some(r) => format!("{r} events/s"),
                None => "half the pipeline's sustainable rate".into(),
            }
        );
        rt.block_on(pipeline::latency(&mut results, rate, seconds, calibration))?;
    }
    println!("\n{}", results.table());
    let json = results.json();
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("figures written to {out}");
    Ok(results.figures.iter().all(|f| results.met(f) != Some(false)))
}

#[cfg(test)]
mod tests {
    use super::{huge_pages, processor};
    use serde_json::json;

    #[test]
    fn the_processor_is_told_by_family_model_and_the_flags_that_matter_here() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
                       model name\t: AMD EPYC\ncpu MHz\t\t: 2596.132\n\
                       flags\t\t: fpu avx2 avx512f avx512_vnni sha_ni\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n";
        assert_eq!(
            processor(cpuinfo),
            json!({
                "model": "AMD EPYC",
                "family": "25",
                "model_number": "17",
                "mhz": 2596.0,
                "flags": ["avx2", "avx512f", "sha_ni"],
            })
        );
        // `avx512_vnni` is not `avx512f`; a machine without the fields reads as unknown.
        let bare = processor("flags\t: avx512_vnni sha\n");
        assert_eq!(bare["flags"], json!([]));
        assert_eq!((bare["model"].as_str(), bare["family"].is_null()), (Some(""), true));
    }

    #[test]
    fn the_huge_page_setting_is_the_bracketed_choice() {
        assert_eq!(huge_pages("always [madvise] never\n").as_deref(), Some("madvise"));
        assert_eq!(huge_pages("[always] madvise never").as_deref(), Some("always"));
        assert_eq!(huge_pages(""), None);
    }
}
