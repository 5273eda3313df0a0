//! Real dependencies for tests, on loopback: a fresh PostgreSQL database per test and a
//! tansu broker (Apache-2.0, Kafka protocol) per test, started by the harness itself, and
//! TLS in front of either (openssl's certificates, socat's terminator).
//! Nothing here mocks anything.

pub mod broker;
pub mod http;
pub mod pgserver;
pub mod postgres;
pub mod process;
pub mod tls;

pub use broker::Broker;
pub use pgserver::PgServer;
pub use postgres::TestDb;

use std::future::Future;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests on one machine).
/// Never the same port twice in one test process: the kernel may hand a just-released
/// port out again, and a test asking for six ports must get six.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn random_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("random");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Polls `check` until it returns `Some` or `timeout` passes: a bounded wait for a
/// condition, never a bare sleep.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
