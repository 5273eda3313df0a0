//! CPU time spent by a phase, per event, in this process and in the broker's. Throughput
//! on a shared two-core machine moves by a fifth between runs; the CPU an event costs
//! moves far less, so it is what tells two builds apart.

use std::time::Duration;

/// The fields of `/proc/<pid>/stat` after the command name (Linux only): field `n` of the
/// whole line is at `n - 3`.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain (the
    // state, field 3, is a letter and reads as 0).
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
}

/// Clock ticks to time: USER_HZ is 100 on every Linux architecture this runs on.
fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

/// User plus system time of a process so far (fields 14 and 15).
fn cpu_time(pid: &str) -> Option<Duration> {
    let f = stat_fields(pid)?;
    Some(ticks(f.get(11)? + f.get(12)?))
}

/// User plus system time of a process and of its children, those running (fields 14 and
/// 15 of each) and those it has reaped (its fields 16 and 17). PostgreSQL's backends are
/// children of its postmaster.
fn tree_time(pid: u32) -> Option<Duration> {
    let f = stat_fields(&pid.to_string())?;
    let mut total = ticks(f.get(11)? + f.get(12)? + f.get(13)? + f.get(14)?);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) =
            entry.file_name().to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).map(String::from)
        else {
            continue;
        };
        // The parent is field 4.
        if let Some(c) = stat_fields(&child).filter(|c| c.get(1) == Some(&(pid as u64))) {
            total += ticks(c.get(11).unwrap_or(&0) + c.get(12).unwrap_or(&0));
        }
    }
    Some(total)
}

/// The postmaster of the PostgreSQL server a backend belongs to, when that server runs on
/// this machine: the backend's parent, if both are called `postgres`.
pub fn postmaster_of(backend: u32) -> Option<u32> {
    let comm = |pid: u64| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    let parent = *stat_fields(&backend.to_string())?.get(1)?;
    (comm(backend as u64)?.trim() == "postgres" && comm(parent)?.trim() == "postgres").then_some(parent as u32)
}

/// Cores used over a stretch of time by this process, the broker and PostgreSQL: CPU time
/// over wall time. On a machine of two cores the three share, it says who had them.
#[derive(Debug, Clone, Copy)]
pub struct CoreMeter {
    at: std::time::Instant,
    broker: Option<u32>,
    postgres: Option<u32>,
    start: [Option<Duration>; 3],
}

/// Cores used by each, `None` where `/proc` could not tell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cores {
    pub ours: Option<f64>,
    pub broker: Option<f64>,
    pub postgres: Option<f64>,
}

impl CoreMeter {
    fn read(broker: Option<u32>, postgres: Option<u32>) -> [Option<Duration>; 3] {
        [cpu_time("self"), broker.and_then(|p| cpu_time(&p.to_string())), postgres.and_then(tree_time)]
    }

    pub fn start(broker: Option<u32>, postgres: Option<u32>) -> CoreMeter {
        CoreMeter { at: std::time::Instant::now(), broker, postgres, start: Self::read(broker, postgres) }
    }

    pub fn cores(&self) -> Cores {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let now = Self::read(self.broker, self.postgres);
        let used = |i: usize| Some(now[i]?.checked_sub(self.start[i]?)?.as_secs_f64() / wall);
        Cores { ours: used(0), broker: used(1), postgres: used(2) }
    }
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

    #[test]
    fn a_process_tree_counts_its_children_running_and_exited() {
        // A child that counts (some 0.2–0.5 s of CPU, however busy the machine) and exits:
        // reaped, its time is in ours as a parent.
        let me = std::process::id();
        // Less this process's own time: other tests spin in it meanwhile.
        let children = || tree_time(me).unwrap().saturating_sub(cpu_time("self").unwrap());
        let before = children();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let grew = children() - before;
        assert!(grew >= Duration::from_millis(100), "the child's time is counted: {grew:?}");
        let meter = CoreMeter::start(Some(me), None);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let cores = meter.cores();
        let (ours, broker) = (cores.ours.unwrap(), cores.broker.unwrap());
        // One busy thread is about one core; the clock ticks every 10 ms.
        assert!((0.3..=1.5).contains(&ours) && (ours - broker).abs() < 0.2, "{cores:?}");
        assert_eq!(cores.postgres, None);
        assert_eq!(postmaster_of(me), None, "this process is not a PostgreSQL backend");
    }
}
