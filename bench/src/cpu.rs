//! CPU time spent during a scenario, from `/proc`: this process (the clients,
//! the gate, and SQLite, which runs in-process), the `serve` child, and the
//! PostgreSQL backends serving this run's scratch databases. On a 2-core
//! machine this says whether a figure is bound by CPU rather than by fsync or
//! locks.
//!
//! Backends are told apart by their process title (`postgres: … <user>
//! <database> <client> <state>`, PostgreSQL's default `update_process_title`):
//! other clients of a shared server, and the server's own background
//! processes (WAL writer, checkpointer), are not counted.

use std::sync::Mutex;
use std::time::Duration;

/// The scratch databases whose backends are counted.
static DATABASES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Counts the backends of `database` from now on.
pub fn watch_database(database: &str) {
    DATABASES
        .lock()
        .expect("databases lock")
        .push(database.to_owned());
}

/// `/proc/<pid>/stat` counts in USER_HZ, which Linux fixes at 100 per second.
const TICK: Duration = Duration::from_millis(10);

/// CPU time consumed so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// This process.
    pub bench: Duration,
    /// The `serve` child, when there is one.
    pub serve: Option<Duration>,
    /// The PostgreSQL backends connected to this run's scratch databases.
    pub postgres: Duration,
}

impl Cpu {
    /// A reading now; `serve` is the child's pid.
    pub fn now(serve: Option<u32>) -> Self {
        Self {
            bench: process("self").unwrap_or_default(),
            serve: serve.and_then(|pid| process(&pid.to_string())),
            postgres: postgres(),
        }
    }

    /// CPU time spent between `earlier` and this reading.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            bench: self.bench.saturating_sub(earlier.bench),
            serve: self
                .serve
                .zip(earlier.serve)
                .map(|(now, then)| now.saturating_sub(then)),
            postgres: self.postgres.saturating_sub(earlier.postgres),
        }
    }
}

/// User plus system time of one process (`self` or a pid).
fn process(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are positional.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) are 11 and 12 after the name.
    let utime: u32 = fields.get(11)?.parse().ok()?;
    let stime: u32 = fields.get(12)?.parse().ok()?;
    Some(TICK * (utime + stime))
}

fn postgres() -> Duration {
    let databases = DATABASES.lock().expect("databases lock").clone();
    if databases.is_empty() {
        return Duration::ZERO;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            pid.bytes().all(|b| b.is_ascii_digit()).then_some(pid)
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .filter(|pid| {
            // The title replaces the command line; words are space-separated.
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|title| {
                let title = String::from_utf8_lossy(&title);
                title
                    .split(|c: char| c.is_whitespace() || c == '\0')
                    .any(|word| databases.iter().any(|d| d == word))
            })
        })
        .filter_map(|pid| process(&pid))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_seen_to_use_cpu() {
        // Work until the accounting shows 30 ms of CPU, however busy the machine
        // is; broken accounting never gets there and the bound fails the test.
        let before = Cpu::now(Some(std::process::id()));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        let spent = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            std::hint::black_box(x);
            let spent = Cpu::now(Some(std::process::id())).since(&before);
            if spent.bench >= Duration::from_millis(30) || std::time::Instant::now() > deadline {
                break spent;
            }
        };
        assert!(spent.bench >= Duration::from_millis(30), "{spent:?}");
        assert!(spent.serve.is_some());
    }
}
