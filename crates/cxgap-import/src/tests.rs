use super::*;

const NOW: Timestamp = Timestamp(1_790_000_000_000); // 2026-09-21

fn feedback_all(input: &[u8], format: Format) -> Vec<Result<FeedbackEvent, RecordError>> {
    feedback(input, format, NOW).unwrap().map(|r| r.unwrap()).collect()
}

const HEADER: &str = "event_id,customer_id,channel,journey_stage,touchpoint,occurred_at,nps,csat,ces,reliability_expectation,reliability_perception,comment,wait_seconds,promised_wait_seconds,resolved,contact_reason,customer_value,segment.tier\n";

#[test]
fn a_full_row_decodes() {
    let csv = format!(
        "{HEADER}e1,c1,chat,SUPPORT,helpline,2026-03-01T09:30:00+01:00,3,2,2,7,3,\"Slow, rude\",600,120,no,billing,12000,gold\n"
    );
    let rows = feedback_all(csv.as_bytes(), Format::Csv);
    let ev = rows[0].as_ref().unwrap();
    assert_eq!(ev.channel, cxgap_domain::Channel::Chat);
    assert_eq!(ev.occurred_at, Timestamp(1_772_353_800_000));
    assert_eq!(ev.ratings[cxgap_domain::Dimension::Reliability.index()].unwrap().perception, 3);
    assert_eq!(ev.comment.as_deref(), Some("Slow, rude"));
    assert_eq!(ev.operational.resolved, Some(false));
    assert_eq!(ev.attributes.get("tier"), Some("gold"));
    assert_eq!(ev.customer_value, Some(12000.0));
}

#[test]
fn header_problems_are_refused_up_front() {
    let err = feedback("event_id,customer_id,chanel,journey_stage,occurred_at,nps\n".as_bytes(), Format::Csv, NOW)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("unknown column \"chanel\""), "{msg}");
    assert!(msg.contains("missing required column \"channel\""), "{msg}");
    let err = feedback("event_id,customer_id,channel,journey_stage,occurred_at,nps,nps\n".as_bytes(), Format::Csv, NOW)
        .unwrap_err();
    assert!(err.to_string().contains("appears twice"));
}

#[test]
fn bad_rows_name_line_and_field() {
    let csv = format!(
        "{HEADER}\
e1,c1,chat,SUPPORT,helpline,2026-03-01,11,,,,,\"multi\nline\",,,,,,\n\
e2,c1,fax,SUPPORT,,2026-03-01,x,,,8,,,,,maybe,,,\n\
,c1,chat,SUPPORT,,2031-01-01,5,,,,,,-3,,,,,\n\
e4,c1,chat\n\
e5,c1,web,USAGE,,03/01/2026,9,,,,,,,,,,,\n"
    );
    let rows = feedback_all(csv.as_bytes(), Format::Csv);
    let err = |i: usize| rows[i].as_ref().unwrap_err().clone();
    let fields = |e: &RecordError| {
        let mut f = e.violations.iter().map(|v| v.field.clone()).collect::<Vec<_>>();
        f.sort();
        f
    };
    assert_eq!(err(0).line, 2);
    assert_eq!(fields(&err(0)), ["nps"]);
    // The quoted comment spans two lines: the next record starts on line 4.
    let e = err(1);
    assert_eq!((e.line, e.event_id.as_deref()), (4, Some("e2")));
    assert_eq!(
        fields(&e),
        ["channel", "nps", "operational.resolved", "reliability_expectation", "reliability_perception"]
    );
    let e = err(2);
    assert_eq!(e.line, 5);
    assert_eq!(fields(&e), ["event_id", "occurred_at", "operational.wait_seconds"]);
    assert!(e.to_string().contains("more than 5 minutes in the future"), "{e}");
    assert!(err(3).to_string().contains("has 3 fields; the header has 18"));
    assert_eq!(fields(&err(4)), ["occurred_at"]);
    assert_eq!(rows.len(), 5, "every row is accounted for");
}

#[test]
fn crlf_files_name_the_same_lines() {
    // Excel writes CRLF; a quoted comment may still hold a bare LF or a CRLF.
    let lf = format!(
        "{HEADER}\
e1,c1,chat,SUPPORT,helpline,2026-03-01,5,,,,,,,,,,,\n\
e2,c1,chat,SUPPORT,,2026-03-01,11,,,,,\"multi\nline\",,,,,,\n\
e3,c1,chat,SUPPORT,,2026-03-01,5,,,,,\"two\nmore\nlines\",,,,,,\n\
e4,c1,fax,SUPPORT,,2026-03-01,5,,,,,,,,,,,\n\
e5,c1,chat,SUPPORT,,2026-03-01,12,,,,,,,,,,,\n"
    );
    let lines = |csv: &str| -> Vec<(u64, bool)> {
        feedback_all(csv.as_bytes(), Format::Csv)
            .iter()
            .map(|r| match r {
                Ok(_) => (0, true),
                Err(e) => (e.line, false),
            })
            .collect()
    };
    let want = vec![(0, true), (3, false), (0, true), (8, false), (9, false)];
    assert_eq!(lines(&lf), want, "LF");
    assert_eq!(lines(&lf.replace('\n', "\r\n")), want, "CRLF");
}

#[test]
fn invalid_utf8_is_named_by_column() {
    let mut csv = HEADER.as_bytes().to_vec();
    csv.extend_from_slice(b"e1,c1,chat,SUPPORT,,2026-03-01,5,,,,,bad \xff\xfe text,,,,,,\n");
    let rows = feedback_all(&csv, Format::Csv);
    let e = rows[0].as_ref().unwrap_err();
    assert_eq!(e.violations.0[0].field, "comment");
    assert!(e.violations.0[0].description.contains("UTF-8"));
}

#[test]
fn json_lines_share_the_columns() {
    let input = br#"{"event_id":"j1","customer_id":"c","channel":"MOBILE_APP","journey_stage":"onboarding","occurred_at":"2026-03-01T00:00:00Z","nps":10,"segment":{"tier":"gold","seats":40},"resolved":true}

{"event_id":"j2","customer_id":"c","channel":"WEB","journey_stage":"USAGE","occurred_at":"2026-03-01","npss":3,"comment":"hi"}
[1,2]
{"event_id":
{"event_id":"j5","customer_id":"c","channel":"WEB","journey_stage":"USAGE","occurred_at":"2026-03-01","ratings":{"x":1}}
"#;
    let rows = feedback_all(input, Format::JsonLines);
    let ok = rows[0].as_ref().unwrap();
    assert_eq!(ok.attributes.get("seats"), Some("40"));
    assert_eq!(ok.operational.resolved, Some(true));
    let e = rows[1].as_ref().unwrap_err();
    assert_eq!((e.line, e.violations.0[0].field.as_str()), (3, "npss"));
    assert!(rows[2].as_ref().unwrap_err().to_string().contains("must be a JSON object"));
    assert!(rows[3].as_ref().unwrap_err().to_string().contains("not valid JSON"));
    assert!(rows[4].as_ref().unwrap_err().to_string().contains("ratings: is not a known field"));
    assert_eq!(rows.len(), 5);
}

#[test]
fn assessments_decode() {
    let csv = "assessment_id,touchpoint,journey_stage,assessor,assessed_at,instrument,score\n\
a1,helpline,SUPPORT,coo,2026-03-01,responsiveness,6\n\
a2,checkout,,coo,2026-03-01,csat,9\n\
a3,checkout,,coo,2026-03-01,speed,3\n";
    let rows: Vec<_> = assessments(csv.as_bytes(), Format::Csv, NOW).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(
        rows[0].as_ref().unwrap().instrument,
        cxgap_domain::Instrument::Dimension(cxgap_domain::Dimension::Responsiveness)
    );
    assert!(rows[1].as_ref().unwrap_err().to_string().contains("score: 9 is outside 1–5"));
    assert!(rows[2].as_ref().unwrap_err().to_string().contains("instrument"));
}

#[test]
fn format_by_extension() {
    assert_eq!(Format::from_path(Path::new("x.CSV")), Some(Format::Csv));
    assert_eq!(Format::from_path(Path::new("x.ndjson")), Some(Format::JsonLines));
    assert_eq!(Format::from_path(Path::new("x.txt")), None);
}
