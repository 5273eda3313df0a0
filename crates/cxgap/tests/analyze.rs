//! `cxgap analyze` as a user runs it: the real binary on real files. Figures are checked
//! against an independent computation from the raw CSV, not against the engine itself.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

fn cxgap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cxgap")).args(args).output().expect("runs cxgap")
}

fn json(args: &[&str]) -> Value {
    let out = cxgap(args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

fn rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    csv::Reader::from_path(path).unwrap().deserialize().map(|r| r.unwrap()).collect()
}

fn num(r: &BTreeMap<String, String>, k: &str) -> Option<f64> {
    r.get(k).filter(|v| !v.is_empty()).map(|v| v.parse().unwrap())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// NPS the textbook way: 100 × (promoters − detractors) / n.
fn nps(scores: &[f64]) -> f64 {
    let p = scores.iter().filter(|&&s| s >= 9.0).count() as f64;
    let d = scores.iter().filter(|&&s| s <= 6.0).count() as f64;
    100.0 * (p - d) / scores.len() as f64
}

#[test]
fn example_report_matches_an_independent_computation() {
    let csv = example("feedback.csv");
    let data = rows(&csv);
    let out = json(&["analyze", csv.to_str().unwrap(), "--format", "json"]);
    let overall = &out["report"]["overall"];
    assert_eq!(out["input"]["applied"], data.len() as u64);
    assert_eq!(overall["events"], data.len() as u64);

    let scores: Vec<f64> = data.iter().filter_map(|r| num(r, "nps")).collect();
    assert!(close(overall["nps"]["wald"]["value"].as_f64().unwrap(), nps(&scores)));
    assert_eq!(overall["nps"]["wald"]["n"], scores.len() as u64);

    let csat: Vec<f64> = data.iter().filter_map(|r| num(r, "csat")).collect();
    let satisfied = csat.iter().filter(|&&c| c >= 4.0).count() as f64;
    assert!(close(overall["csat_percent"]["value"].as_f64().unwrap(), 100.0 * satisfied / csat.len() as f64));

    let ces: Vec<f64> = data.iter().filter_map(|r| num(r, "ces")).collect();
    assert!(close(overall["ces"]["value"].as_f64().unwrap(), ces.iter().sum::<f64>() / ces.len() as f64));

    for dim in overall["dimensions"].as_array().unwrap() {
        let name = dim["dimension"].as_str().unwrap().to_lowercase();
        let gaps: Vec<f64> = data
            .iter()
            .filter_map(|r| Some(num(r, &format!("{name}_perception"))? - num(r, &format!("{name}_expectation"))?))
            .collect();
        assert!(close(dim["gap"]["value"].as_f64().unwrap(), gaps.iter().sum::<f64>() / gaps.len() as f64), "{name}");
    }

    // Every channel and journey stage shows up, each with its own correct NPS.
    let by = |g: &str| {
        out["breakdowns"].as_array().unwrap().iter().find(|b| b["group_by"][0] == g).unwrap()["groups"]
            .as_array()
            .unwrap()
            .clone()
    };
    let channels = by("channel");
    assert_eq!(channels.len(), 10, "every channel");
    assert_eq!(by("journey_stage").len(), 9, "every stage");
    for g in &channels {
        let ch = g["key"][0][1].as_str().unwrap();
        let s: Vec<f64> = data.iter().filter(|r| r["channel"] == ch).filter_map(|r| num(r, "nps")).collect();
        assert!(close(g["summary"]["nps"]["wald"]["value"].as_f64().unwrap(), nps(&s)), "{ch}");
    }
    // The helpline is where the example's customers suffer: worst stage, worst SLA record.
    let stages = by("journey_stage");
    let worst = stages
        .iter()
        .min_by(|a, b| {
            a["summary"]["experience"]["value"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["summary"]["experience"]["value"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(worst["key"][0][1], "SUPPORT");
}

#[test]
fn text_report_shows_figures_with_n_and_interval() {
    let csv = example("feedback.csv");
    let out = cxgap(&["analyze", csv.to_str().unwrap(), "--assessments", example("assessments.csv").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let data = rows(&csv);
    let scores: Vec<f64> = data.iter().filter_map(|r| num(r, "nps")).collect();
    let line = text.lines().find(|l| l.trim_start().starts_with("NPS ")).unwrap();
    assert!(line.contains(&format!("{:.1} [", nps(&scores))), "{line}");
    assert!(line.contains(&format!("n={}", scores.len())), "{line}");
    for section in [
        "SERVQUAL GAPS",
        "BY CHANNEL",
        "BY JOURNEY_STAGE",
        "EXPERIENCE HEATMAP",
        "DELIVERY GAP",
        "PERCEPTION GAP",
        "WINDOWS",
        "AT-RISK CUSTOMERS",
    ] {
        assert!(text.contains(section), "missing {section}");
    }
    // Management overrates the helpline: the perception gap is positive.
    let help = text.lines().find(|l| l.contains("helpline (SUPPORT)") && l.contains("responsiveness")).unwrap();
    assert!(help.split_whitespace().nth(5).unwrap().parse::<f64>().unwrap() > 0.2, "{help}");
}

/// `--channel`, `--stage`, `--touchpoint` and `--segment` restrict the report to the
/// matching records, counted here from the raw CSV; a misspelt name is refused by name.
#[test]
fn filters_restrict_the_report_to_the_matching_records() {
    let csv = example("feedback.csv");
    let data = rows(&csv);
    let file = csv.to_str().unwrap();
    let out = json(&["analyze", file, "--format", "json", "--channel", "web,chat", "--segment", "tier=gold"]);
    let kept: Vec<_> = data
        .iter()
        .filter(|r| ["WEB", "CHAT"].contains(&r["channel"].as_str()) && r["segment.tier"] == "gold")
        .collect();
    assert!(!kept.is_empty() && kept.len() < data.len());
    assert_eq!(out["report"]["overall"]["events"], kept.len() as u64);
    let scores: Vec<f64> = kept.iter().filter_map(|r| num(r, "nps")).collect();
    assert!(close(out["report"]["overall"]["nps"]["wald"]["value"].as_f64().unwrap(), nps(&scores)));
    let at_risk = out["at_risk"].as_array().unwrap();
    let gold = serde_json::json!(["tier", "gold"]);
    assert!(
        !at_risk.is_empty() && at_risk.iter().all(|c| c["attributes"].as_array().unwrap().contains(&gold)),
        "{at_risk:?}"
    );
    assert_eq!(out["filter"]["channels"], serde_json::json!(["WEB", "CHAT"]));
    // The at-risk list holds customers who gave feedback through those channels.
    let through = |id: &str, channels: &[&str]| {
        data.iter().any(|r| r["customer_id"] == id && channels.contains(&r["channel"].as_str()))
    };
    assert!(at_risk.iter().all(|c| through(c["customer_id"].as_str().unwrap(), &["WEB", "CHAT"])), "{at_risk:?}");
    let everyone = json(&["analyze", file, "--format", "json", "--top", "1000"]);
    let expected: Vec<&Value> = everyone["at_risk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| through(c["customer_id"].as_str().unwrap(), &["PHONE"]))
        .collect();
    let by_phone = json(&["analyze", file, "--format", "json", "--top", "1000", "--channel", "phone"]);
    let by_phone: Vec<&Value> = by_phone["at_risk"].as_array().unwrap().iter().collect();
    assert!(!by_phone.is_empty() && by_phone.len() < everyone["at_risk"].as_array().unwrap().len());
    assert_eq!(by_phone, expected, "the whole list, less the customers with no phone feedback, in its order");

    let out = json(&["analyze", file, "--format", "json", "--stage", "support", "--touchpoint", "helpline"]);
    let kept = data.iter().filter(|r| r["journey_stage"] == "SUPPORT" && r["touchpoint"] == "helpline").count();
    assert!(kept > 0);
    assert_eq!(out["report"]["overall"]["events"], kept as u64);
    let text = String::from_utf8(cxgap(&["analyze", file, "--stage", "support"]).stdout).unwrap();
    assert!(text.contains("only stage SUPPORT"), "{text}");
    assert!(!text.contains("not filtered by touchpoint"), "{text}");
    let text = String::from_utf8(cxgap(&["analyze", file, "--touchpoint", "helpline"]).stdout).unwrap();
    assert!(text.contains("AT-RISK CUSTOMERS") && text.contains("(not filtered by touchpoint: "), "{text}");

    let out = cxgap(&["analyze", file, "--channel", "pigeon"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"pigeon\" is not a channel") && err.contains("mobile_app"), "{err}");
}

#[test]
fn order_duplicates_and_format_do_not_change_the_report() {
    let csv = example("feedback.csv");
    let dir = tempfile::tempdir().unwrap();
    // Reversed, every tenth record repeated, as JSON lines with a nested segment object.
    let data = rows(&csv);
    let mut lines = Vec::new();
    for (i, r) in data.iter().enumerate().rev() {
        let mut obj = serde_json::Map::new();
        let mut seg = serde_json::Map::new();
        for (k, v) in r {
            if v.is_empty() {
                continue;
            }
            match k.strip_prefix("segment.") {
                Some(key) => {
                    seg.insert(key.into(), v.clone().into());
                }
                None => {
                    obj.insert(k.clone(), v.clone().into());
                }
            }
        }
        obj.insert("segment".into(), seg.into());
        let line = Value::Object(obj).to_string();
        if i % 10 == 0 {
            lines.push(line.clone());
        }
        lines.push(line);
    }
    let jsonl = dir.path().join("shuffled.jsonl");
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let a = json(&["analyze", csv.to_str().unwrap(), "--format", "json"]);
    let b = json(&["analyze", jsonl.to_str().unwrap(), "--format", "json"]);
    assert_eq!(b["input"]["duplicates"].as_u64().unwrap(), data.len().div_ceil(10) as u64);
    for k in ["report", "breakdowns", "heatmap", "windows", "nps_trend", "at_risk"] {
        assert_eq!(a[k], b[k], "{k} differs");
    }
}

#[test]
fn bad_rows_are_named_and_nothing_is_skipped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    let mut bytes = b"event_id,customer_id,channel,journey_stage,occurred_at,nps,comment\n\
ok1,c1,WEB,USAGE,2026-03-01,9,\n\
b1,c1,FAX,USAGE,2026-03-01,9,\n\
b2,c2,WEB,USAGE,2026-03-01,12,\n\
,c3,WEB,USAGE,2099-01-01,,\n"
        .to_vec();
    bytes.extend_from_slice(b"b4,c4,WEB,USAGE,2026-03-01,5,caf\xe9\n");
    std::fs::write(&path, &bytes).unwrap();
    let p = path.to_str().unwrap();

    let out = cxgap(&["analyze", p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no report on invalid input");
    let err = String::from_utf8(out.stderr).unwrap();
    for want in [
        "line 3 (b1): channel: \"FAX\" is not one of",
        "line 4 (b2): nps: 12 is outside 0–10",
        "line 5: event_id: is required",
        "occurred_at: is more than 5 minutes in the future",
        "event: needs at least one of",
        "line 6 (b4): comment: is not valid UTF-8",
        "4 invalid record(s)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    let out = cxgap(&["analyze", p, "--skip-invalid", "--format", "json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["input"]["applied"].as_u64(), v["input"]["rejected"].as_u64()), (Some(1), Some(4)));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 invalid record(s) were left out"));
}

#[test]
fn bad_header_and_bad_arguments_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.csv");
    std::fs::write(&path, "event_id,customer_id,chanel,journey_stage,occurred_at,nps\ne,c,WEB,USAGE,2026-01-01,1\n")
        .unwrap();
    let out = cxgap(&["analyze", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown column \"chanel\"") && err.contains("missing required column \"channel\""), "{err}");

    let out = cxgap(&["analyze", "nope.csv"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("opening nope.csv"));

    let out = cxgap(&["analyze", path.to_str().unwrap(), "--window", "fortnight"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a window"));
}

#[test]
fn grouping_by_a_combination() {
    let csv = example("feedback.csv");
    let v = json(&[
        "analyze",
        csv.to_str().unwrap(),
        "--format",
        "json",
        "--by",
        "segment.tier,channel",
        "--window",
        "30d",
    ]);
    let b = &v["breakdowns"][0];
    assert_eq!(b["group_by"], serde_json::json!(["segment.tier", "channel"]));
    let total: u64 = b["groups"].as_array().unwrap().iter().map(|g| g["summary"]["events"].as_u64().unwrap()).sum();
    assert_eq!(total, v["report"]["overall"]["events"].as_u64().unwrap(), "groups partition the window");
    assert_eq!(v["report"]["window"], serde_json::json!({"days": 30}));
}
