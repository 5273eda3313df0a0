//! The engine in this process, no I/O: events applied per second on one core, reports
//! over the result, and the resident memory each tracked customer costs (measured in a
//! child process, so nothing else this run allocated is counted).

use crate::report::{Figure, Results, Target};
use crate::workload::spec;
use cxgap_domain::customer::{CustomerState, stable_hash};
use cxgap_domain::model::Segment;
use cxgap_domain::report::{self, GroupBy, ReportQuery, Window};
use cxgap_domain::{FeedbackEvent, GapState};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The environment variable that turns the bench binary into the memory child.
pub const MEMORY_CHILD: &str = "CXGAP_BENCH_MEMORY_CUSTOMERS";

/// Best of `runs` timings: the least disturbed by the rest of the machine.
fn best<T>(runs: usize, f: impl FnMut() -> T) -> (Duration, T) {
    let (times, out) = timed(runs, f);
    (times.into_iter().min().expect("runs > 0"), out)
}

/// Every one of `runs` timings, in order, with the last run's result.
fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (Vec<Duration>, T) {
    let mut times = Vec::with_capacity(runs);
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        times.push(t.elapsed());
        out = Some(r);
    }
    (times, out.expect("runs > 0"))
}

/// The rate of each run, in order: a noisy machine shows as a wide spread beside the best.
fn each_run(events: usize, times: &[Duration]) -> String {
    let rates: Vec<String> = times.iter().map(|t| format!("{:.0}k", events as f64 / t.as_secs_f64() / 1e3)).collect();
    format!("the best of {} runs (in events/s: {})", times.len(), rates.join(", "))
}

pub fn throughput(results: &mut Results, n: usize) {
    let now = crate::workload::now_ms();
    let customers = (n as u64 / 5).max(1);
    let events: Vec<_> = (0..n as u64).map(|i| spec("engine", i, customers).to_domain(now)).collect();
    let (times, state) = timed(3, || {
        let mut s = GapState::new();
        s.apply_all(&events, |_, _| ());
        s
    });
    let t = times.iter().copied().min().expect("three runs");
    results.add(
        Figure::new(
            "engine_apply",
            "engine: events applied per second, one core",
            n as f64 / t.as_secs_f64(),
            "events/s",
        )
        .target(Target::AtLeast(2_000_000.0))
        .note(format!(
            "{n} events, {customers} customers, {} cells; sentiment of comments included, validation excluded; {}",
            state.cell_count(),
            each_run(n, &times)
        )),
    );
    let runs: Vec<(Duration, usize)> = (0..3).map(|_| in_batches(&events, BATCH)).collect();
    let (t, customers_kept) = runs.iter().copied().min_by_key(|r| r.0).expect("three runs");
    let times: Vec<Duration> = runs.iter().map(|r| r.0).collect();
    results.add(
        Figure::new(
            "engine_apply_batches",
            &format!("engine, as analytics applies it: a fresh state per batch of {BATCH}, one core"),
            n as f64 / t.as_secs_f64(),
            "events/s",
        )
        .target(Target::AtLeast(2_000_000.0))
        .note(format!(
            "the same {n} events in batches of {BATCH} (analytics' default CXGAP_BATCH_MAX_EVENTS); per batch a \
             new state, the batch's stored customers put in, the events applied, the state taken apart for \
             writing (cells and customers); {customers_kept} customers at the end; the map that stands in for \
             PostgreSQL holds them as JSON, decoded before each batch as analytics reads them, outside the clock; {}",
            each_run(n, &times)
        )),
    );
    let as_of = state.last_day().expect("events were applied");
    let mut q = ReportQuery::new(as_of, Window::Days(90));
    q.group_by = vec![GroupBy::JourneyStage, GroupBy::Channel, GroupBy::Segment("tier".into())];
    let (t, r) = best(5, || black_box(report::gap_report(&state, &q)));
    results.add(Figure::new(
        "engine_report",
        "engine: report by stage × channel × tier, events summarised per second",
        r.overall.events as f64 / t.as_secs_f64(),
        "events/s",
    ));
}

/// Analytics' default batch (`CXGAP_BATCH_MAX_EVENTS`).
const BATCH: usize = 2_000;

/// The engine's time over `events` applied as analytics applies them: each batch into a
/// fresh state that holds only the batch's customers, put in from storage and taken apart
/// for writing at the end (the processor's delta). A map stands in for storage, holding
/// each customer as analytics' table does, as JSON: decoded right before the batch, as
/// analytics reads its customers, so the engine gets them as it does there, each with a
/// segment of its own and just written to memory. Reads, decoding and writes are off the
/// clock, so the time is the engine's alone. Returns the time, with the number of
/// customers stored at the end.
fn in_batches(events: &[FeedbackEvent], batch: usize) -> (Duration, usize) {
    // Keyed by a hash of the id, not by the id: analytics frees the ids of a batch's
    // writes when the batch ends, so the next batch's allocations find warm memory; ids
    // kept as this map's keys were freed at random, batches later, and gave the engine's
    // allocations cold memory that analytics does not give it. 64 bits for 100,000 ids:
    // a collision (odds about 3·10⁻¹⁰) would show as one customer fewer in the note.
    let mut stored: HashMap<u64, String> = HashMap::new();
    let mut engine = Duration::ZERO;
    for chunk in events.chunks(batch) {
        let mut ids: Vec<&str> = chunk.iter().map(|e| e.customer_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let loaded: Vec<(&str, CustomerState<Segment>)> = ids
            .iter()
            .filter_map(|id| {
                stored
                    .remove(&stable_hash(id.as_bytes()))
                    .map(|json| (*id, serde_json::from_str(&json).expect("a stored customer")))
            })
            .collect();
        let t = Instant::now();
        let mut delta = GapState::with_capacity(chunk.len());
        for (id, s) in loaded {
            delta.put_customer(id, s);
        }
        delta.apply_all(chunk, |_, _| ());
        let writes = black_box(delta.into_writes());
        engine += t.elapsed();
        stored.extend(
            writes
                .customers
                .into_iter()
                .map(|(id, c)| (stable_hash(id.as_bytes()), serde_json::to_string(&c).expect("a customer as JSON"))),
        );
    }
    (engine, stored.len())
}

/// Resident set size of this process, from /proc.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The memory child: builds the state of `customers` customers (three events each, one
/// week of days so the aggregate cells stay few) one event at a time, and prints the
/// growth of its resident set as JSON.
pub fn memory_child(customers: u64) -> std::process::ExitCode {
    let now = crate::workload::now_ms();
    let before = rss_bytes().unwrap_or(0);
    let mut state = GapState::new();
    for i in 0..customers * 3 {
        let mut s = spec("mem", i, customers);
        s.customer_id = format!("cust-{}", i % customers);
        s.age_ms = 60_000 + (i % 7) as i64 * 86_400_000;
        state.apply(&s.to_domain(now));
    }
    let after = rss_bytes().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "customers": state.customer_count(),
            "cells": state.cell_count(),
            "rss_before": before,
            "rss_after": after,
        })
    );
    black_box(state);
    std::process::ExitCode::SUCCESS
}

/// Runs the memory child for each customer count and reports bytes per customer.
pub fn memory(results: &mut Results, counts: &[u64]) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    for &n in counts {
        let out = std::process::Command::new(&exe).env(MEMORY_CHILD, n.to_string()).output()?;
        anyhow::ensure!(out.status.success(), "memory child for {n}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let grew = v["rss_after"].as_f64().unwrap_or(0.0) - v["rss_before"].as_f64().unwrap_or(0.0);
        let tracked = v["customers"].as_f64().unwrap_or(0.0);
        anyhow::ensure!(tracked as u64 == n, "the memory child tracked {tracked} customers, not {n}");
        results.add(
            Figure::new(
                &format!("memory_per_customer_{n}"),
                &format!("resident memory per tracked customer, {n} customers"),
                grew / tracked,
                "bytes",
            )
            .target(Target::AtMost(1024.0))
            .note(format!(
                "3 events each; {} aggregate cells; RSS growth {:.0} MiB",
                v["cells"],
                grew / 1048576.0
            )),
        );
    }
    Ok(())
}
