//! CPU time spent by a phase, per event, in this process and in the broker's. Throughput
//! on a shared two-core machine moves by a fifth between runs; the CPU an event costs
//! moves far less, so it is what tells two builds apart.

use std::time::Duration;

/// User plus system time of a process so far, from `/proc/<pid>/stat` (Linux only).
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux architecture this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// A reading of this process's and the broker's CPU time.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    broker: Option<u32>,
    ours: Option<Duration>,
    theirs: Option<Duration>,
}

/// CPU microseconds per event of one phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerEvent {
    pub ours_us: f64,
    pub broker_us: f64,
}

impl CpuMeter {
    pub fn start(broker: Option<u32>) -> CpuMeter {
        CpuMeter { broker, ours: cpu_time("self"), theirs: broker.and_then(|p| cpu_time(&p.to_string())) }
    }

    /// Per-event CPU since `start`; `None` where `/proc` cannot be read.
    pub fn per_event(&self, events: usize) -> Option<PerEvent> {
        let ours = cpu_time("self")?.checked_sub(self.ours?)?;
        let theirs = cpu_time(&self.broker?.to_string())?.checked_sub(self.theirs?)?;
        let us = |d: Duration| d.as_secs_f64() * 1e6 / events.max(1) as f64;
        Some(PerEvent { ours_us: us(ours), broker_us: us(theirs) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_cpu_time_that_grows_with_work() {
        let meter = CpuMeter::start(Some(std::process::id()));
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let per = meter.per_event(1).expect("readable /proc");
        // 300 ms of spinning at 10 ms resolution; the machine may steal some of it.
        assert!(per.ours_us >= 100_000.0 && per.broker_us >= 100_000.0, "{per:?}");
        assert!((per.ours_us - per.broker_us).abs() <= 20_000.0, "the same process read twice: {per:?}");
    }
}
