//! A service under test as a real process: stopped as Kubernetes stops it (SIGTERM, then
//! its exit within the grace period), and spoken to with `curl`, a client nobody here wrote.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// SIGTERM, then the exit within 30 s; returns the status and what it logged (its stderr,
/// which must be piped).
pub async fn stop(child: &mut Child) -> (ExitStatus, String) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("the child's status") {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the service did not stop within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    if let Some(e) = child.stderr.as_mut() {
        std::io::Read::read_to_string(e, &mut stderr).expect("the child's stderr");
    }
    (status, stderr)
}

/// `curl` to `url` with these options (TLS files, headers, a body): the HTTP status, or
/// the error curl printed when no response came.
pub fn curl(url: &str, args: &[&str]) -> Result<u16, String> {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (Debian package curl; .ci/run installs it)");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse().expect("curl's status code"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
