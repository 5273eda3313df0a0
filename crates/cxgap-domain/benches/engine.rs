//! Engine micro-benchmark: events per second per core for applying feedback to gap state
//! and for producing reports over it, and customers per second for churn risk.
//! Run with `cargo bench -p cxgap-domain`; single-threaded, so figures are per core.
//! `CXGAP_BENCH_EVENTS` sets the event count (default 500 000).

use cxgap_domain::report::{self, GroupBy, ReportQuery, RiskView, Window};
use cxgap_domain::risk::RiskModel;
use cxgap_domain::validate::RatingDraft;
use cxgap_domain::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A small deterministic generator (SplitMix64), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const COMMENTS: &[&str] = &[
    "Great service, thanks!",
    "Waited 40 minutes on the helpline, nobody answered. Awful!",
    "The invoice was wrong again",
    "Quick and easy checkout",
];

fn events(n: usize, customers: u64) -> Vec<FeedbackEvent> {
    let mut rng = Rng(42);
    let now = Timestamp(i64::MAX / 2);
    let touchpoints = ["checkout", "helpline", "app", "courier", "invoice", "setup", "store", "chatbot"];
    (0..n)
        .map(|i| {
            let kind = rng.below(10);
            let ratings = if kind >= 7 {
                Dimension::ALL
                    .iter()
                    .map(|d| RatingDraft {
                        dimension: Some(*d),
                        expectation: Some(1 + rng.below(7) as i64),
                        perception: Some(1 + rng.below(7) as i64),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let cust = rng.below(customers);
            FeedbackDraft {
                event_id: format!("ev-{i}"),
                customer_id: format!("cust-{cust}"),
                attributes: vec![
                    ("tier".into(), ["gold", "silver", "bronze"][(cust % 3) as usize].into()),
                    ("region".into(), ["emea", "amer", "apac"][(cust / 3 % 3) as usize].into()),
                ],
                customer_value: Some((cust % 50) as f64 * 1000.0),
                channel: Some(Channel::ALL[rng.below(10) as usize]),
                journey_stage: Some(JourneyStage::ALL[rng.below(9) as usize]),
                touchpoint: touchpoints[rng.below(8) as usize].into(),
                occurred_at: Some(Timestamp(1_780_000_000_000 + rng.below(90 * 86_400_000) as i64)),
                nps: (kind < 6).then(|| rng.below(11) as i64),
                csat: kind.is_multiple_of(3).then(|| 1 + rng.below(5) as i64),
                ces: (kind == 6).then(|| 1 + rng.below(7) as i64),
                ratings,
                comment: if rng.below(10) < 3 { COMMENTS[rng.below(4) as usize].into() } else { String::new() },
                wait_seconds: (kind == 4).then(|| rng.below(900) as f64),
                promised_wait_seconds: (kind == 4).then_some(300.0),
                resolved: (kind == 4).then(|| rng.below(4) != 0),
                ..Default::default()
            }
            .validate(now, Violations::default())
            .expect("generated events are valid")
        })
        .collect()
}

/// Best of `runs` timings: the least disturbed by the rest of the machine.
fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (best, out.expect("runs > 0"))
}

fn main() {
    let n: usize = std::env::var("CXGAP_BENCH_EVENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(500_000);
    let customers = (n as u64 / 5).max(1);
    let evs = events(n, customers);
    let with_comment = evs.iter().filter(|e| e.comment.is_some()).count();
    println!("engine benchmark: {n} events, {customers} customers, {with_comment} with comments");

    let (t, state) = best(3, || {
        let mut s = GapState::new();
        for e in &evs {
            s.apply(e);
        }
        s
    });
    println!(
        "apply (validate excluded, sentiment included): {:>12.0} events/s  ({:.1} ms; {} cells, {} customers)",
        n as f64 / t.as_secs_f64(),
        t.as_secs_f64() * 1e3,
        state.cell_count(),
        state.customer_count()
    );

    let (t, _) = best(3, || {
        let mut s = state.clone();
        for e in evs.iter().take(n / 5) {
            s.apply(e);
        }
        s
    });
    let clone_t = best(3, || state.clone()).0;
    let dup = t.saturating_sub(clone_t);
    println!("apply duplicates (no-op path):                  {:>12.0} events/s", (n / 5) as f64 / dup.as_secs_f64());

    let as_of = state.last_day().expect("non-empty");
    for (label, by) in [
        ("report overall", vec![]),
        ("report by channel", vec![GroupBy::Channel]),
        (
            "report by stage × channel × tier",
            vec![GroupBy::JourneyStage, GroupBy::Channel, GroupBy::Segment("tier".into())],
        ),
    ] {
        let mut q = ReportQuery::new(as_of, Window::Days(90));
        q.group_by = by;
        let (t, r) = best(5, || black_box(report::gap_report(&state, &q)));
        println!(
            "{label:<34} {:>12.0} events/s  ({:.2} ms per report over {} events)",
            r.overall.events as f64 / t.as_secs_f64(),
            t.as_secs_f64() * 1e3,
            r.overall.events
        );
    }

    let model = RiskModel::default();
    let (t, top) = best(3, || RiskView::new(&state, &model, as_of).at_risk(0.5, &[], 100));
    println!(
        "churn risk, all customers ranked:  {:>12.0} customers/s  ({:.1} ms; {} at ≥50% in top 100)",
        state.customer_count() as f64 / t.as_secs_f64(),
        t.as_secs_f64() * 1e3,
        top.len()
    );
}
