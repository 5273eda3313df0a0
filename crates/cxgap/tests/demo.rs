//! `cxgap demo` as a real process, small and fast: the generated stream goes through the
//! real ingest API, and alerts come out of the engine and the rules — the segment the
//! generator makes drift (small businesses in APAC) and the overrated helpline among them.

use std::process::Command;

#[test]
fn the_demo_streams_feedback_and_real_alerts_emerge() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .args(["demo", "--customers", "600", "--speed", "50", "--live-events", "1000", "--seed", "7"])
        .args(["--data-dir", data.to_str().unwrap(), "--any-port"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("sent 7200 events of history"), "{stdout}");
    let alerts: Vec<&str> = stdout.lines().filter(|l| l.starts_with("[alert")).collect();
    assert!(alerts.iter().any(|l| l.contains("customer:")), "churn alerts: {stdout}");
    assert!(
        alerts.iter().any(|l| l.contains("touchpoint:helpline") && l.contains("Management overrates")),
        "the overrated helpline: {stdout}"
    );
    assert!(stdout.contains("last 30 days:"), "a live summary: {stdout}");
}
