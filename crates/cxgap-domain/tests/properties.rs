//! Order independence and idempotence as tested properties (ARCHITECTURE §4): any
//! permutation of a set of events, with any number of duplicates, yields an identical
//! state snapshot and identical reports and risk rankings.

use cxgap_domain::report::{self, Filter, Granularity, GroupBy, Metric, ReportQuery, RiskView, Window};
use cxgap_domain::risk::RiskModel;
use cxgap_domain::validate::RatingDraft;
use cxgap_domain::*;
use proptest::prelude::*;

const NOW: Timestamp = Timestamp(4_000_000_000_000);
const BASE_DAY: i32 = 20_400;

const COMMENTS: &[&str] =
    &["", "Terrible wait, nobody called back!", "Great service, thanks", "not helpful at all", "ok", "Servicio pésimo"];

fn arb_draft() -> impl Strategy<Value = FeedbackDraft> {
    (
        (0..8u8, 0..10usize, 0..9usize, 0..4usize, 0..3usize, 0..120i32, 0..86_400_000i64),
        (
            proptest::option::of(0..=10i64),
            proptest::option::of(1..=5i64),
            proptest::option::of(1..=7i64),
            prop::array::uniform5(proptest::option::of((1..=7i64, 1..=7i64))),
            0..COMMENTS.len(),
        ),
        (
            proptest::option::of(0..2000u32),
            proptest::option::of(0..900u32),
            proptest::option::of(any::<bool>()),
            proptest::option::of(0..100_000u32),
        ),
    )
        .prop_map(
            |((cust, ch, st, tp, seg, day, ms), (nps, csat, ces, dims, comment), (wait, promised, resolved, value))| {
                let ratings: Vec<RatingDraft> = dims
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        r.map(|(e, p)| RatingDraft {
                            dimension: Some(Dimension::ALL[i]),
                            expectation: Some(e),
                            perception: Some(p),
                        })
                    })
                    .collect();
                let empty = nps.is_none() && csat.is_none() && ces.is_none() && ratings.is_empty() && comment == 0;
                FeedbackDraft {
                    event_id: String::new(),
                    customer_id: format!("c{cust}"),
                    attributes: vec![
                        ("tier".into(), ["gold", "silver", "bronze"][seg].into()),
                        ("region".into(), ["emea", "amer"][(cust % 2) as usize].into()),
                    ],
                    customer_value: value.map(f64::from),
                    channel: Some(Channel::ALL[ch]),
                    journey_stage: Some(JourneyStage::ALL[st]),
                    touchpoint: ["checkout", "helpline", "app", ""][tp].into(),
                    occurred_at: Some(Timestamp(Day(BASE_DAY + day).start().0 + ms)),
                    nps: if empty { Some(5) } else { nps },
                    csat,
                    ces,
                    ratings,
                    comment: COMMENTS[comment].into(),
                    wait_seconds: wait.map(f64::from),
                    promised_wait_seconds: promised.map(f64::from),
                    resolved,
                    ..Default::default()
                }
            },
        )
}

fn arb_assessment() -> impl Strategy<Value = AssessmentDraft> {
    (0..3usize, 0..2usize, 0..60i32, 1..=7i64, proptest::option::of(0..9usize)).prop_map(
        |(tp, who, day, score, stage)| AssessmentDraft {
            assessment_id: String::new(),
            touchpoint: ["checkout", "helpline", "app"][tp].into(),
            journey_stage: stage.map(|s| JourneyStage::ALL[s]),
            assessor: ["cx-lead", "coo"][who].into(),
            assessed_at: Some(Day(BASE_DAY + day).start()),
            instrument: Some(Instrument::Dimension(Dimension::Reliability)),
            score: Some(score),
        },
    )
}

/// A set of valid events with distinct ids, and a shuffled stream of them with duplicates.
fn arb_streams()
-> impl Strategy<Value = (Vec<FeedbackEvent>, Vec<FeedbackEvent>, Vec<InternalAssessment>, Vec<InternalAssessment>)> {
    (
        prop::collection::vec(arb_draft(), 1..80),
        prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        prop::collection::vec(arb_assessment(), 0..8),
    )
        .prop_flat_map(|(drafts, dups, assessments)| {
            let events: Vec<FeedbackEvent> = drafts
                .into_iter()
                .enumerate()
                .map(|(i, d)| {
                    FeedbackDraft { event_id: format!("e{i}"), ..d }.validate(NOW, Violations::default()).unwrap()
                })
                .collect();
            let assessments: Vec<InternalAssessment> = assessments
                .into_iter()
                .enumerate()
                .map(|(i, a)| {
                    AssessmentDraft { assessment_id: format!("a{i}"), ..a }
                        .validate(NOW, Violations::default())
                        .unwrap()
                })
                .collect();
            let mut stream = events.clone();
            stream.extend(dups.iter().map(|ix| events[ix.index(events.len())].clone()));
            let mut a_stream = assessments.clone();
            a_stream.extend(assessments.iter().take(2).cloned());
            (Just(events), Just(stream).prop_shuffle(), Just(assessments), Just(a_stream).prop_shuffle())
        })
}

fn build(events: &[FeedbackEvent], assessments: &[InternalAssessment]) -> GapState {
    let mut s = GapState::new();
    for e in events {
        s.apply(e);
    }
    for a in assessments {
        s.apply_assessment(a);
    }
    s
}

fn reports(s: &GapState) -> String {
    let as_of = Day(BASE_DAY + 119);
    let mut q = ReportQuery::new(as_of, Window::All);
    q.min_n = 3;
    q.group_by = vec![GroupBy::Channel, GroupBy::Segment("tier".into()), GroupBy::Dimension];
    let all = report::gap_report(s, &q);
    q.window = Window::Days(30);
    q.group_by = vec![GroupBy::JourneyStage, GroupBy::Touchpoint];
    let month = report::gap_report(s, &q);
    let trend = report::trend(s, Metric::Nps, Granularity::Week, Window::Days(90), as_of, &Filter::default());
    let model = RiskModel::default();
    let risk = RiskView::new(s, &model, as_of).at_risk(0.0, &cxgap_domain::report::CustomerFilter::default(), 1000);
    // Debug output of floats is exact (shortest round-trip), so equal text is equal bits.
    format!("{all:?}\n{month:?}\n{trend:?}\n{risk:?}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_order_any_duplicates_same_state((events, stream, assessments, a_stream) in arb_streams()) {
        let reference = build(&events, &assessments);
        let shuffled = build(&stream, &a_stream);
        prop_assert_eq!(shuffled.events(), events.len());
        prop_assert_eq!(shuffled.duplicates() as usize, stream.len() - events.len());
        prop_assert_eq!(reference.snapshot(), shuffled.snapshot());
        prop_assert_eq!(reports(&reference), reports(&shuffled));
    }

    #[test]
    fn reapplying_everything_changes_nothing((events, _stream, assessments, _a) in arb_streams()) {
        let once = build(&events, &assessments);
        let mut twice = once.clone();
        for e in &events {
            prop_assert_eq!(twice.apply(e), Applied::Duplicate);
        }
        for a in &assessments {
            prop_assert_eq!(twice.apply_assessment(a), Applied::Duplicate);
        }
        prop_assert_eq!(once.snapshot(), twice.snapshot());
        prop_assert_eq!(reports(&once), reports(&twice));
    }

    /// `apply_all` works through events in groups (of 32), each step for the whole group
    /// first; the streams here span several groups, with duplicates inside one group and
    /// across groups.
    #[test]
    fn applying_in_groups_equals_one_at_a_time((_events, stream, _a, _as) in arb_streams()) {
        let mut one = GapState::new();
        let singly: Vec<(String, Applied)> = stream.iter().map(|e| (e.event_id.clone(), one.apply(e))).collect();
        let mut all = GapState::new();
        let mut grouped = Vec::new();
        all.apply_all(&stream, |e, applied| grouped.push((e.event_id.clone(), applied)));
        prop_assert_eq!(singly, grouped);
        prop_assert_eq!(one.duplicates(), all.duplicates());
        prop_assert_eq!(one.snapshot(), all.snapshot());
        prop_assert_eq!(reports(&one), reports(&all));
    }
}

/// The analytics service's persistence, in pure form: each batch starts from an empty
/// state holding only the stored customers it touches, its cells are deltas added to the
/// stored rows (as integer rows, the storage format), and its customers replace the
/// stored ones. Whatever the batching, the stored result equals one state built from all
/// events.
fn persisted_in_batches(events: &[FeedbackEvent], cuts: &[usize]) -> GapState {
    use std::collections::BTreeMap;
    let mut cells: BTreeMap<state::CellCoords, [i64; aggregate::CELL_ROW_WIDTH]> = BTreeMap::new();
    let mut customers: BTreeMap<String, customer::CustomerState<model::Segment>> = BTreeMap::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (events.len() + 1)).collect();
    bounds.extend([0, events.len()]);
    bounds.sort();
    for w in bounds.windows(2) {
        let batch = &events[w[0]..w[1]];
        let mut delta = GapState::new();
        for e in batch {
            if let Some(c) = customers.get(&e.customer_id) {
                delta.put_customer(&e.customer_id, c.clone());
            }
        }
        for e in batch {
            delta.apply(e);
        }
        // As the analytics processor ends a batch's delta.
        let snap = delta.into_writes();
        for (coords, agg) in snap.cells {
            let row = agg.to_row().expect("fits");
            let stored = cells.entry(coords).or_insert([0; aggregate::CELL_ROW_WIDTH]);
            for (s, d) in stored.iter_mut().zip(row) {
                *s += d;
            }
        }
        for (id, c) in snap.customers {
            customers.insert(id, c);
        }
    }
    let mut rebuilt = GapState::new();
    for (coords, row) in &cells {
        rebuilt.merge_cell(coords, &aggregate::CellAgg::from_row(row));
    }
    for (id, c) in customers {
        rebuilt.put_customer(&id, c);
    }
    rebuilt
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn batched_persistence_equals_one_state((events, _s, _a, _as) in arb_streams(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let whole = build(&events, &[]);
        let rebuilt = persisted_in_batches(&events, &cuts);
        let (w, r) = (whole.snapshot(), rebuilt.snapshot());
        prop_assert_eq!(w.cells, r.cells);
        prop_assert_eq!(w.customers, r.customers);
        prop_assert_eq!(reports(&whole), reports(&rebuilt));
    }
}
