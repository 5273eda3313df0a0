//! Reports over small hand-built data sets whose figures are computed by hand.

use cxgap_domain::report::{self, Filter, GroupBy, GroupValue, Metric, ReportQuery, RiskView, Window};
use cxgap_domain::risk::RiskModel;
use cxgap_domain::validate::RatingDraft;
use cxgap_domain::*;

const NOW: Timestamp = Timestamp(4_000_000_000_000);
const D0: i32 = 20_400;

fn ev(id: &str, cust: &str, day: i32, ch: Channel, st: JourneyStage, tp: &str) -> FeedbackDraft {
    FeedbackDraft {
        event_id: id.into(),
        customer_id: cust.into(),
        channel: Some(ch),
        journey_stage: Some(st),
        touchpoint: tp.into(),
        occurred_at: Some(Day(D0 + day).start()),
        ..Default::default()
    }
}

fn apply(s: &mut GapState, d: FeedbackDraft) {
    s.apply(&d.validate(NOW, Violations::default()).unwrap());
}

#[test]
fn grouped_nps_and_windows() {
    let mut s = GapState::new();
    // Day 0 (old): 2 detractors on chat. Days 25–29: web 3 promoters + 1 detractor, chat 1 passive.
    for i in 0..2 {
        apply(
            &mut s,
            FeedbackDraft {
                nps: Some(3),
                ..ev(&format!("old{i}"), "a", 0, Channel::Chat, JourneyStage::Support, "helpline")
            },
        );
    }
    for (i, n) in [10, 9, 9, 2].iter().enumerate() {
        apply(
            &mut s,
            FeedbackDraft {
                nps: Some(*n),
                ..ev(&format!("w{i}"), "b", 25 + i as i32, Channel::Web, JourneyStage::Purchase, "checkout")
            },
        );
    }
    apply(
        &mut s,
        FeedbackDraft { nps: Some(7), ..ev("c0", "c", 29, Channel::Chat, JourneyStage::Support, "helpline") },
    );

    let mut q = ReportQuery::new(Day(D0 + 29), Window::Days(7));
    q.group_by = vec![GroupBy::Channel];
    let r = report::gap_report(&s, &q);
    assert_eq!(r.from, Some(Day(D0 + 23)));
    assert_eq!(r.overall.events, 5);
    // 3 promoters, 1 passive, 1 detractor of 5 → NPS 40.
    assert!((r.overall.nps.unwrap().wald.value - 40.0).abs() < 1e-9);
    assert_eq!(r.groups.len(), 2);
    assert_eq!(r.groups[0].key, vec![("channel".into(), GroupValue::Channel(Channel::Chat))]);
    assert_eq!(r.groups[0].summary.nps.unwrap().wald.value, 0.0);
    assert!((r.groups[1].summary.nps.unwrap().wald.value - 50.0).abs() < 1e-9);
    assert!(r.groups.iter().all(|g| g.summary.low_n), "n < 30 is flagged");

    q.window = Window::All;
    let all = report::gap_report(&s, &q);
    assert_eq!(all.overall.events, 7);
    // A late event for day 0 lands in day 0's bucket: it changes "all", not the 7-day window.
    apply(
        &mut s,
        FeedbackDraft { nps: Some(10), ..ev("late", "a", 0, Channel::Chat, JourneyStage::Support, "helpline") },
    );
    assert_eq!(report::gap_report(&s, &q).overall.events, 8);
    q.window = Window::Days(7);
    assert_eq!(report::gap_report(&s, &q), r);
}

#[test]
fn servqual_dimension_rows_and_delivery_gap() {
    let mut s = GapState::new();
    let rate =
        |d: Dimension, e: i64, p: i64| RatingDraft { dimension: Some(d), expectation: Some(e), perception: Some(p) };
    apply(
        &mut s,
        FeedbackDraft {
            ratings: vec![rate(Dimension::Reliability, 7, 4), rate(Dimension::Empathy, 6, 6)],
            wait_seconds: Some(600.0),
            promised_wait_seconds: Some(300.0),
            resolved: Some(false),
            ..ev("1", "a", 0, Channel::Phone, JourneyStage::Support, "helpline")
        },
    );
    apply(
        &mut s,
        FeedbackDraft {
            ratings: vec![rate(Dimension::Reliability, 6, 5)],
            wait_seconds: Some(100.0),
            promised_wait_seconds: Some(200.0),
            resolved: Some(true),
            ..ev("2", "b", 0, Channel::Phone, JourneyStage::Support, "helpline")
        },
    );
    let mut q = ReportQuery::new(Day(D0), Window::Days(1));
    q.group_by = vec![GroupBy::Touchpoint, GroupBy::Dimension];
    let r = report::gap_report(&s, &q);
    let dims: Vec<_> = r.overall.dimensions.iter().map(|d| (d.dimension, d.gap.value, d.gap.n)).collect();
    assert_eq!(dims, vec![(Dimension::Reliability, -2.0, 2), (Dimension::Empathy, 0.0, 1)]);
    // Unweighted: (−2 + 0)/2; weighted: (.32·−2 + .16·0)/.48
    assert!((r.overall.service_quality.unwrap().value + 1.0).abs() < 1e-12);
    assert!((r.overall.service_quality_weighted.unwrap().value + 0.32 * 2.0 / 0.48).abs() < 1e-12);
    assert_eq!(r.groups.len(), 2);
    assert_eq!(r.groups[0].key[1].1, GroupValue::Dimension(Dimension::Reliability));
    let d = r.overall.delivery.unwrap();
    assert_eq!(d.sla_breach_share.unwrap().value, 0.5);
    assert_eq!(d.unresolved_share.unwrap().value, 0.5);
    // Ratios 2.0 and 0.5 → mean 1.25
    assert!((d.wait_ratio.unwrap().value - 1.25).abs() < 1e-12);
    assert!((d.mean_wait_seconds.unwrap().value - 350.0).abs() < 1e-9);
}

#[test]
fn perception_gap_management_versus_customers() {
    let mut s = GapState::new();
    for (i, p) in [3, 4, 5, 4].iter().enumerate() {
        apply(
            &mut s,
            FeedbackDraft {
                ratings: vec![RatingDraft {
                    dimension: Some(Dimension::Responsiveness),
                    expectation: Some(6),
                    perception: Some(*p),
                }],
                ..ev(&format!("e{i}"), "a", 0, Channel::Phone, JourneyStage::Support, "helpline")
            },
        );
    }
    for (id, who, score, day) in [("a1", "coo", 7, 0), ("a2", "cx", 6, 0), ("a0", "coo", 2, -5)] {
        let a = AssessmentDraft {
            assessment_id: id.into(),
            touchpoint: "helpline".into(),
            assessor: who.into(),
            assessed_at: Some(Day(D0 + day).start()),
            instrument: Some(Instrument::Dimension(Dimension::Responsiveness)),
            score: Some(score),
            ..Default::default()
        };
        s.apply_assessment(&a.validate(NOW, Violations::default()).unwrap());
    }
    let gaps = report::perception_gaps(&s, Window::All, Day(D0));
    assert_eq!(gaps.len(), 1);
    let g = &gaps[0];
    // The COO's newer 7 replaces the older 2: management (7 + 6)/2 = 6.5 → (6.5−1)/6.
    assert_eq!(g.assessors, 2);
    assert!((g.internal_native - 6.5).abs() < 1e-12);
    // Customers: mean P = 4 → (4−1)/6 = .5; gap = 5.5/6 − .5
    let gap = g.gap.unwrap();
    assert!((gap.value - (5.5 / 6.0 - 0.5)).abs() < 1e-12);
    assert_eq!(gap.n, 4);
    assert!(gap.lower < gap.value && gap.value < gap.upper);
    let stages = report::stage_perception_gaps(&s, Window::All, Day(D0));
    assert!((stages[JourneyStage::Support.index()].unwrap() - gap.value).abs() < 1e-12);
    assert!(stages[JourneyStage::Purchase.index()].is_none());
}

#[test]
fn consistency_gap_across_channels() {
    let mut s = GapState::new();
    for i in 0..5 {
        apply(
            &mut s,
            FeedbackDraft {
                csat: Some(5),
                attributes: vec![("tier".into(), "gold".into())],
                ..ev(&format!("w{i}"), "a", 0, Channel::Web, JourneyStage::Usage, "")
            },
        );
        apply(
            &mut s,
            FeedbackDraft {
                csat: Some(2),
                attributes: vec![("tier".into(), "gold".into())],
                ..ev(&format!("p{i}"), "a", 0, Channel::Phone, JourneyStage::Usage, "")
            },
        );
    }
    let mut q = ReportQuery::new(Day(D0), Window::All);
    q.min_n = 5;
    let r = report::gap_report(&s, &q);
    let all = r.consistency.iter().find(|c| c.scope == "all").unwrap();
    assert_eq!((all.best, all.worst), (Channel::Web, Channel::Phone));
    assert!((all.spread - 0.75).abs() < 1e-12);
    assert!(r.consistency.iter().any(|c| c.scope == "tier=gold"));
    q.min_n = 6;
    assert!(report::gap_report(&s, &q).consistency.is_empty(), "channels below min n are not compared");
}

#[test]
fn trend_comparison_and_at_risk_ordering() {
    let mut s = GapState::new();
    for i in 0..60 {
        let n = if i % 2 == 0 { 10 } else { 8 };
        apply(
            &mut s,
            FeedbackDraft {
                nps: Some(n),
                ..ev(&format!("p{i}"), &format!("h{i}"), i % 30, Channel::Survey, JourneyStage::Usage, "")
            },
        );
        apply(
            &mut s,
            FeedbackDraft {
                nps: Some(if i % 2 == 0 { 2 } else { 8 }),
                ..ev(&format!("c{i}"), &format!("h{i}"), 30 + i % 30, Channel::Survey, JourneyStage::Usage, "")
            },
        );
    }
    let t =
        report::trend(&s, Metric::Nps, report::Granularity::Day, Window::Days(30), Day(D0 + 59), &Filter::default());
    assert_eq!(t.points.len(), 30);
    let c = t.comparison.unwrap();
    assert!((c.previous.value - 50.0).abs() < 1e-9 && (c.current.value + 50.0).abs() < 1e-9);
    assert!(c.significant(0.001));

    apply(
        &mut s,
        FeedbackDraft {
            nps: Some(0),
            customer_value: Some(50_000.0),
            comment: "awful, nobody helps".into(),
            resolved: Some(false),
            ..ev("vip", "vip", 59, Channel::Phone, JourneyStage::Support, "helpline")
        },
    );
    let model = RiskModel::default();
    let view = RiskView::new(&s, &model, Day(D0 + 59));
    let top = view.at_risk(0.0, &report::CustomerFilter::default(), 3);
    assert_eq!(top[0].customer_id, "vip", "risk × value puts the valuable detractor first");
    assert!(top[0].drivers.iter().any(|d| d.feature == "detractor"));
    let vip = view.customer("vip").unwrap();
    assert!(vip.risk > view.customer("h1").unwrap().risk);
}

#[test]
fn the_at_risk_list_selects_customers_by_stage_channel_and_segment() {
    let mut s = GapState::new();
    let gold = || vec![("tier".to_string(), "gold".to_string())];
    // a: phone support, gold. b: web purchase. c: chat onboarding with a comment only
    // (its sentiment is its experience score), gold.
    apply(
        &mut s,
        FeedbackDraft {
            nps: Some(2),
            attributes: gold(),
            ..ev("a1", "a", 1, Channel::Phone, JourneyStage::Support, "helpline")
        },
    );
    apply(&mut s, FeedbackDraft { nps: Some(9), ..ev("b1", "b", 1, Channel::Web, JourneyStage::Purchase, "checkout") });
    apply(
        &mut s,
        FeedbackDraft {
            comment: "slow setup".into(),
            attributes: gold(),
            ..ev("c1", "c", 1, Channel::Chat, JourneyStage::Onboarding, "setup")
        },
    );
    let model = RiskModel::default();
    let view = RiskView::new(&s, &model, Day(D0 + 2));
    let ids = |f: Filter| {
        let mut ids: Vec<String> = view
            .at_risk(0.0, &report::CustomerFilter::of(&f).unwrap(), 10)
            .into_iter()
            .map(|r| r.customer_id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(Filter::default()), ["a", "b", "c"]);
    let stages = |st: Vec<JourneyStage>| Filter { journey_stages: st, ..Filter::default() };
    assert_eq!(ids(stages(vec![JourneyStage::Support])), ["a"]);
    assert_eq!(ids(stages(vec![JourneyStage::Purchase, JourneyStage::Onboarding])), ["b", "c"]);
    assert!(ids(stages(vec![JourneyStage::Usage])).is_empty());
    let channels = |ch: Vec<Channel>| Filter { channels: ch, ..Filter::default() };
    assert_eq!(ids(channels(vec![Channel::Phone, Channel::Web])), ["a", "b"]);
    assert_eq!(ids(channels(vec![Channel::Chat])), ["c"]);
    assert!(ids(channels(vec![Channel::Email])).is_empty());
    let gold_support = Filter {
        journey_stages: vec![JourneyStage::Support, JourneyStage::Purchase],
        segment: gold(),
        ..Filter::default()
    };
    assert_eq!(ids(gold_support), ["a"], "every part of the filter holds");
    assert_eq!(ids(Filter { segment: gold(), ..Filter::default() }), ["a", "c"]);

    let by_touchpoint = Filter { touchpoints: vec!["helpline".into()], ..Filter::default() };
    let e = report::CustomerFilter::of(&by_touchpoint).unwrap_err();
    assert!(e.starts_with("touchpoints cannot select customers"), "{e}");
    assert_eq!(report::CustomerFilter::lenient(&by_touchpoint), report::CustomerFilter::default());
}
