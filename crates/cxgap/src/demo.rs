//! `cxgap demo`: embedded mode fed by a seeded, realistic multi-channel stream through the
//! real ingest API. Nothing is scripted on the output side: the gaps, the significant
//! segment changes and the churn alerts it prints come out of the engine and the rules.
//!
//! The population: thousands of customers in three tiers and three regions; every
//! channel and journey stage with its touchpoints; NPS, CSAT, CES, SERVQUAL ratings and
//! comments; a support helpline with long waits that get worse in the last week;
//! management assessments that overrate the helpline and the checkout; and a cohort (small
//! businesses in APAC) drifting toward churn over the last month.

use crate::embedded::{self, RunArgs};
use anyhow::{Context, Result};
use cxgap_proto::alerting as apb;
use cxgap_proto::alerting::alerting_service_client::AlertingServiceClient;
use cxgap_proto::common as cpb;
use cxgap_proto::ingest as ipb;
use cxgap_proto::ingest::ingest_service_client::IngestServiceClient;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Live events per second are 40 × speed (the 90-day history is sent first, at once).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Seed of the generated population and stream: the same seed, the same demo.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// How many customers.
    #[arg(long, default_value_t = 3000)]
    customers: usize,
    /// Data directory (emptied first: it is demo data).
    #[arg(long, default_value = "cxgap-demo-data")]
    data_dir: PathBuf,
    /// Stop after this many live events (default: run until Ctrl-C).
    #[arg(long)]
    live_events: Option<u64>,
    /// Listen on free ports instead of the usual 8080–8082 and 50051–50053.
    #[arg(long)]
    any_port: bool,
}

/// SplitMix64: small, seeded, good enough for synthetic data.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
    fn normal(&mut self) -> f64 {
        // Box–Muller.
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[derive(Debug, Clone)]
struct Customer {
    id: String,
    tier: &'static str,
    region: &'static str,
    value: f64,
    base: f64,
    drifting: bool,
}

const STAGES: [(cpb::JourneyStage, &[&str]); 9] = [
    (cpb::JourneyStage::Awareness, &["ads", "social-media"]),
    (cpb::JourneyStage::Consideration, &["website", "sales-demo"]),
    (cpb::JourneyStage::Purchase, &["checkout", "quote"]),
    (cpb::JourneyStage::Delivery, &["shipping", "installation"]),
    (cpb::JourneyStage::Onboarding, &["setup-call", "welcome-email"]),
    (cpb::JourneyStage::Usage, &["app", "reporting"]),
    (cpb::JourneyStage::Support, &["helpline", "chat-support"]),
    (cpb::JourneyStage::Billing, &["invoice", "payment"]),
    (cpb::JourneyStage::Renewal, &["account-manager", "renewal-offer"]),
];

const CHANNELS: [cpb::Channel; 10] = [
    cpb::Channel::Survey,
    cpb::Channel::Email,
    cpb::Channel::Chat,
    cpb::Channel::Phone,
    cpb::Channel::Social,
    cpb::Channel::Review,
    cpb::Channel::InStore,
    cpb::Channel::Web,
    cpb::Channel::MobileApp,
    cpb::Channel::SupportTicket,
];

const PRAISE: [&str; 5] = [
    "Great service, the team was quick and friendly",
    "Excellent experience, everything worked as promised",
    "Very helpful staff, problem solved in minutes",
    "Love the new app, so easy to use",
    "Smooth and fast, thank you",
];
const COMPLAINTS: [&str; 6] = [
    "Waited forever on the phone and nobody solved my problem",
    "Terrible support, I had to explain the issue three times",
    "The invoice was wrong again, very frustrating",
    "Slow delivery and no updates, really disappointed",
    "We are seriously considering other vendors",
    "Awful experience, the app keeps crashing",
];

fn population(rng: &mut Rng, n: usize) -> Vec<Customer> {
    (0..n)
        .map(|i| {
            let tier = match rng.unit() {
                x if x < 0.1 => "enterprise",
                x if x < 0.4 => "mid-market",
                _ => "smb",
            };
            let region = ["emea", "amer", "apac"][rng.below(3)];
            let value = match tier {
                "enterprise" => 50_000.0 + rng.unit() * 150_000.0,
                "mid-market" => 10_000.0 + rng.unit() * 40_000.0,
                _ => 1_000.0 + rng.unit() * 9_000.0,
            };
            Customer {
                id: format!("C{i:05}"),
                tier,
                region,
                value: value.round(),
                base: (0.8 + 0.1 * rng.normal()).clamp(0.1, 0.98),
                drifting: tier == "smb" && region == "apac",
            }
        })
        .collect()
}

/// One piece of feedback from `c`, `days_ago` days before now.
fn event(rng: &mut Rng, seed: u64, n: u64, c: &Customer, days_ago: f64, now_s: i64) -> cpb::FeedbackEvent {
    let (stage, touchpoints) = STAGES[rng.below(STAGES.len())];
    let touchpoint = touchpoints[rng.below(touchpoints.len())];
    let channel = match touchpoint {
        "helpline" => cpb::Channel::Phone,
        "chat-support" => cpb::Channel::Chat,
        "app" => cpb::Channel::MobileApp,
        "checkout" | "website" => cpb::Channel::Web,
        _ => CHANNELS[rng.below(CHANNELS.len())],
    };
    let mut s = c.base + 0.08 * rng.normal();
    // The helpline underdelivers; the app delights.
    s += match touchpoint {
        "helpline" => -0.18,
        "invoice" => -0.08,
        "app" => 0.06,
        _ => 0.0,
    };
    // The drifting cohort slides over the last 30 days.
    if c.drifting && days_ago < 30.0 {
        s -= 0.45 * (30.0 - days_ago) / 30.0;
    }
    let s = s.clamp(0.0, 1.0);
    let score = |max: f64, noise: f64, rng: &mut Rng| ((s * max + noise * rng.normal()).round()).clamp(0.0, max) as u32;
    let mut e = cpb::FeedbackEvent {
        event_id: format!("demo-{seed}-{n}"),
        customer_id: c.id.clone(),
        segment: Some(cpb::Segment {
            attributes: [("tier".to_string(), c.tier.to_string()), ("region".to_string(), c.region.to_string())].into(),
            customer_value: Some(c.value),
        }),
        channel: channel as i32,
        journey_stage: stage as i32,
        touchpoint: touchpoint.into(),
        occurred_at: Some(prost_types::Timestamp { seconds: now_s - (days_ago * 86_400.0) as i64, nanos: 0 }),
        ..Default::default()
    };
    if rng.chance(0.55) {
        e.nps = Some(score(10.0, 1.2, rng));
    }
    if rng.chance(0.45) {
        e.csat = Some(1 + score(4.0, 0.6, rng));
    }
    if stage == cpb::JourneyStage::Support || rng.chance(0.15) {
        e.ces = Some(1 + score(6.0, 0.8, rng));
    }
    if rng.chance(0.25) {
        let dims = [
            cpb::Dimension::Reliability,
            cpb::Dimension::Assurance,
            cpb::Dimension::Tangibles,
            cpb::Dimension::Empathy,
            cpb::Dimension::Responsiveness,
        ];
        e.ratings = dims
            .iter()
            .map(|d| cpb::DimensionRating {
                dimension: *d as i32,
                expectation: (6.0 + 0.6 * rng.normal()).round().clamp(1.0, 7.0) as u32,
                perception: (1.0 + s * 6.0 + 0.7 * rng.normal()).round().clamp(1.0, 7.0) as u32,
            })
            .collect();
    }
    if rng.chance(0.3) || (s < 0.35 && rng.chance(0.7)) {
        e.comment = if s < 0.45 { COMPLAINTS[rng.below(COMPLAINTS.len())] } else { PRAISE[rng.below(PRAISE.len())] }
            .to_string();
    }
    if stage == cpb::JourneyStage::Support {
        let promised = if touchpoint == "helpline" { 180.0 } else { 60.0 };
        // Helpline waits got much worse this week.
        let breach = if touchpoint == "helpline" && days_ago < 7.0 { 0.65 } else { 0.15 };
        let wait =
            if rng.chance(breach) { promised * (1.3 + 2.0 * rng.unit()) } else { promised * (0.2 + 0.7 * rng.unit()) };
        e.operational = Some(cpb::Operational {
            wait_seconds: Some(wait.round()),
            promised_wait_seconds: Some(promised),
            resolved: Some(rng.chance(s.max(0.2))),
            contact_reason: None,
        });
    }
    if e.nps.is_none() && e.csat.is_none() && e.ces.is_none() && e.ratings.is_empty() && e.comment.is_empty() {
        e.nps = Some(score(10.0, 1.2, rng));
    }
    e
}

fn assessments(seed: u64, now_s: i64) -> Vec<cpb::InternalAssessment> {
    use cpb::internal_assessment::Score;
    let a = |id: &str, tp: &str, stage: cpb::JourneyStage, who: &str, score: Score| cpb::InternalAssessment {
        assessment_id: format!("demo-{seed}-{id}"),
        tenant_id: String::new(),
        touchpoint: tp.into(),
        journey_stage: stage as i32,
        assessed_at: Some(prost_types::Timestamp { seconds: now_s - 20 * 86_400, nanos: 0 }),
        assessor: who.into(),
        score: Some(score),
    };
    let dim = |d: cpb::Dimension, p| Score::Dimension(cpb::DimensionScore { dimension: d as i32, perception: p });
    vec![
        // The 80 %-vs-8 % gap: management believes the helpline is responsive and checkout delights.
        a("a1", "helpline", cpb::JourneyStage::Support, "vp-support", dim(cpb::Dimension::Responsiveness, 6)),
        a("a2", "helpline", cpb::JourneyStage::Support, "cx-director", Score::Nps(9)),
        a("a3", "checkout", cpb::JourneyStage::Purchase, "head-of-ecommerce", Score::Csat(5)),
        a("a4", "app", cpb::JourneyStage::Usage, "product-lead", Score::Nps(8)),
        a("a5", "invoice", cpb::JourneyStage::Billing, "cfo", Score::Csat(4)),
    ]
}

/// Sends a generated batch; the generator makes valid events only, so a rejection is a bug.
async fn send(
    ingest: &mut IngestServiceClient<tonic::transport::Channel>,
    key: &str,
    events: Vec<cpb::FeedbackEvent>,
) -> Result<()> {
    let r = crate::feed::submit_batch(ingest, key, events).await?;
    if let Some(first) = r.rejected.first() {
        anyhow::bail!("the generator produced {} invalid events, e.g. {first:?}", r.rejected.len());
    }
    Ok(())
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn authed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {key}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    if !(args.speed > 0.0 && args.speed <= 100.0) {
        anyhow::bail!("--speed must be above 0 and at most 100, not {}", args.speed);
    }
    // sqlx warns about every slow statement; a demo on a laptop has many.
    cxgap_runtime::telemetry::init(cxgap_runtime::telemetry::LogFormat::Plain, "warn,sqlx=error");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(demo(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: DemoArgs) -> Result<()> {
    if args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir).with_context(|| format!("emptying {}", args.data_dir.display()))?;
    }
    let stop = cxgap_runtime::shutdown::on_signal();
    let mut run_args = RunArgs::new(args.data_dir.clone());
    if args.any_port {
        run_args.any_port();
    }
    let running = embedded::start(&run_args, stop.clone(), false).await?;
    let key = running.key.clone();
    println!("cxgap demo (seed {}, {} customers, speed {})", args.seed, args.customers, args.speed);
    println!("  dashboard:   http://{}/dashboard#key={key}", running.analytics_http);
    println!("  gap reports: http://{}/v1/report?window=30d&by=channel,stage", running.analytics_http);
    println!("  API key:     {key}  (also in {}/api-key)", args.data_dir.display());
    println!("  Ctrl-C stops it.\n");

    let mut ingest = IngestServiceClient::connect(format!("http://{}", running.ingest_grpc)).await?;
    let mut alerting = AlertingServiceClient::connect(format!("http://{}", running.alerting_grpc)).await?;
    let sub = apb::Subscription {
        subscription_id: "demo-terminal".into(),
        name: "this terminal".into(),
        target: Some(apb::subscription::Target::GrpcStream(apb::GrpcStreamTarget {})),
        ..Default::default()
    };
    alerting.create_subscription(authed(&key, apb::CreateSubscriptionRequest { subscription: Some(sub) })).await?;
    // The terminal follows the alert stream; a dropped stream (a busy SQLite file under the
    // demo's load) resumes from the last cursor, so no alert goes unprinted.
    let mut alerts_api = alerting.clone();
    let stream_key = key.clone();
    let printer = tokio::spawn(async move {
        let mut cursor = "0".to_string();
        loop {
            let req = apb::SubscribeRequest { subscription_id: "demo-terminal".into(), cursor: cursor.clone() };
            if let Ok(resp) = alerts_api.subscribe(authed(&stream_key, req)).await {
                let mut alerts = resp.into_inner();
                while let Ok(Some(n)) = alerts.message().await {
                    cursor = n.cursor.clone();
                    let Some(a) = n.alert else { continue };
                    let state = apb::AlertState::try_from(n.state)
                        .map_or("?", |s| s.as_str_name())
                        .trim_start_matches("ALERT_STATE_");
                    let sev = apb::Severity::try_from(a.severity)
                        .map_or("?", |s| s.as_str_name())
                        .trim_start_matches("SEVERITY_");
                    println!("[alert {state:<12}] {sev:<8} {:<28} {}", a.subject, a.summary);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    let now = now_s();
    let mut rng = Rng(args.seed);
    let people = population(&mut rng, args.customers);
    for a in assessments(args.seed, now) {
        ingest.submit_assessment(authed(&key, ipb::SubmitAssessmentRequest { assessment: Some(a) })).await?;
    }
    // History: about 12 pieces of feedback per customer over the last 90 days.
    let mut n = 0u64;
    let history = args.customers as u64 * 12;
    let mut batch = Vec::with_capacity(500);
    while n < history && !stop.is_cancelled() {
        let c = &people[rng.below(people.len())];
        let days_ago = 1.0 + 89.0 * rng.unit();
        batch.push(event(&mut rng, args.seed, n, c, days_ago, now));
        n += 1;
        if batch.len() == 500 || n == history {
            let events = std::mem::take(&mut batch);
            send(&mut ingest, &key, events).await?;
        }
    }
    println!("sent {n} events of history; now live at {:.0} events/s\n", 40.0 * args.speed);
    let pace = Duration::from_secs_f64(0.25);
    let per_tick = ((40.0 * args.speed) * pace.as_secs_f64()).ceil() as usize;
    let mut live = 0u64;
    let mut summary_at = std::time::Instant::now();
    let mut analytics = cxgap_proto::analytics::analytics_service_client::AnalyticsServiceClient::connect(format!(
        "http://{}",
        running.analytics_grpc
    ))
    .await
    .ok();
    while !stop.is_cancelled() && args.live_events.is_none_or(|max| live < max) {
        let events: Vec<cpb::FeedbackEvent> = (0..per_tick)
            .map(|_| {
                let c = &people[rng.below(people.len())];
                let days_ago = rng.unit() / 24.0;
                let e = event(&mut rng, args.seed, n, c, days_ago, now_s());
                n += 1;
                e
            })
            .collect();
        live += events.len() as u64;
        send(&mut ingest, &key, events).await?;
        if summary_at.elapsed() >= Duration::from_secs(10) {
            summary_at = std::time::Instant::now();
            if let Some(client) = analytics.as_mut() {
                let _ = print_summary(client, &key, n).await;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(pace) => {}
        }
    }
    // A bounded run ends once everything sent is analysed and its alerts had time to leave.
    if args.live_events.is_some() && !stop.is_cancelled() {
        if let Some(client) = analytics.as_mut() {
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            while std::time::Instant::now() < deadline && !stop.is_cancelled() {
                if counted(client, &key).await >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    if let Some(client) = analytics.as_mut() {
        // The last word: retried, since a query may wait behind a large batch on SQLite.
        for _ in 0..20 {
            if print_summary(client, &key, n).await {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    stop.cancel();
    printer.abort();
    running.wait().await
}

/// Events analytics has applied, all time.
async fn counted(
    client: &mut cxgap_proto::analytics::analytics_service_client::AnalyticsServiceClient<tonic::transport::Channel>,
    key: &str,
) -> u64 {
    use cxgap_proto::analytics as anpb;
    let req = anpb::GetGapReportRequest { window: cpb::Window::All as i32, ..Default::default() };
    match client.get_gap_report(authed(key, req)).await {
        Ok(r) => r.into_inner().overall.map_or(0, |o| o.events),
        Err(_) => 0,
    }
}

async fn print_summary(
    client: &mut cxgap_proto::analytics::analytics_service_client::AnalyticsServiceClient<tonic::transport::Channel>,
    key: &str,
    sent: u64,
) -> bool {
    use cxgap_proto::analytics as anpb;
    let req = anpb::GetGapReportRequest { window: cpb::Window::Window30d as i32, ..Default::default() };
    let r = match client.get_gap_report(authed(key, req)).await {
        Ok(r) => r,
        Err(e) => {
            println!("-- {sent} events sent; summary not available right now: {}", e.message());
            return false;
        }
    };
    let Some(o) = r.into_inner().overall else { return false };
    let nps =
        o.nps.and_then(|n| n.wald).map_or("-".into(), |w| format!("{:.1} [{:.1}, {:.1}]", w.value, w.lower, w.upper));
    println!("-- {sent} events sent; last 30 days: {} events, NPS {nps}", o.events);
    true
}
