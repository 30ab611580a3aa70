//! Where the threads of a measured path ran, core by core (`connsim
//! bench-real`'s "where the threads ran" lines).
//!
//! Why: on two cores a closed loop through two single-threaded forwarders
//! (relay-sim's thread and the connector) runs at one core's worth of
//! their CPU when the scheduler keeps them on the same core, whatever
//! the other core does (BENCHMARKS, rounds twelve, sixteen and
//! seventeen). CPU per request and the idle share cannot show that; a
//! sample of where each thread is running can, in every run, without a
//! tracer. A thread counts for a core in a sample when it is running or
//! waiting to run there (state `R` in `/proc/PID/task/TID/stat`, with the
//! core it is on in the same line).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the threads are looked at. A sample reads one short file a
/// thread (a few microseconds each): about 1 % of a core at this rate for
/// the fifteen or so threads of a bench, spent in the load generator's
/// process for every path alike.
pub const EVERY: Duration = Duration::from_millis(10);

/// A thread's name as the tables show it: its process's label, then the
/// thread's own name where it differs (`relay-sim/backends`). Threads of
/// one process that share a name (a runtime's workers) count as one.
type Who = String;

/// Counts of samples in which each thread was running, by core.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// How many times the threads were looked at.
    pub samples: u32,
    /// Core → thread → samples in which it ran (or waited to) there.
    pub running: BTreeMap<usize, BTreeMap<Who, u32>>,
    /// Two threads → samples in which both ran on one core (either
    /// core): the shares by core cannot tell threads that took turns on
    /// a core from threads that were there at once.
    pub together: BTreeMap<(Who, Who), u32>,
}

impl Placement {
    /// Adds one look at the threads: (who, core) of each that was running.
    fn add(&mut self, running: impl IntoIterator<Item = (Who, usize)>) {
        self.samples += 1;
        let mut by_core: BTreeMap<usize, Vec<Who>> = BTreeMap::new();
        for (who, core) in running {
            *self.running.entry(core).or_default().entry(who.clone()).or_default() += 1;
            by_core.entry(core).or_default().push(who);
        }
        for mut here in by_core.into_values() {
            here.sort();
            here.dedup();
            for (i, a) in here.iter().enumerate() {
                for b in &here[i + 1..] {
                    *self.together.entry((a.clone(), b.clone())).or_default() += 1;
                }
            }
        }
    }

    /// Core by core, the threads that ran there in at least 2 % of the
    /// samples, busiest first (`core 0: connector 47 %, relay-sim 45 %`);
    /// then the three pairs most often on one core at once, if in at
    /// least 5 % of the samples (`together: connector + relay-sim 30 %`).
    pub fn render(&self) -> String {
        if self.samples == 0 {
            return "no samples".into();
        }
        let share = |n: u32| f64::from(n) * 100.0 / f64::from(self.samples);
        let mut pairs: Vec<(&(Who, Who), u32)> =
            self.together.iter().map(|(p, n)| (p, *n)).filter(|(_, n)| n * 20 >= self.samples).collect();
        pairs.sort_by_key(|p| std::cmp::Reverse(p.1));
        let pairs: Vec<String> =
            pairs.iter().take(3).map(|((a, b), n)| format!("{a} + {b} {:.0} %", share(*n))).collect();
        let together = if pairs.is_empty() { String::new() } else { format!("; together: {}", pairs.join(", ")) };
        format!("{}{together}", self.by_core(share))
    }

    fn by_core(&self, share: impl Fn(u32) -> f64) -> String {
        let mut cores = Vec::new();
        for (core, threads) in &self.running {
            let mut shares: Vec<(&Who, u32)> = threads.iter().map(|(w, n)| (w, *n)).collect();
            // Busiest first; a tie in name order (the map's).
            shares.sort_by_key(|s| std::cmp::Reverse(s.1));
            let parts: Vec<String> = shares
                .into_iter()
                .filter(|(_, n)| n * 50 >= self.samples)
                .map(|(who, n)| format!("{who} {:.0} %", share(n)))
                .collect();
            if !parts.is_empty() {
                cores.push(format!("core {core}: {}", parts.join(", ")));
            }
        }
        cores.join(" | ")
    }
}

/// Looks at the threads of some processes every [`EVERY`] until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Placement>>,
}

impl Sampler {
    /// Starts looking at every thread of `pids` (label, pid), except the
    /// sampler's own.
    pub fn start(pids: &[(String, u32)]) -> Result<Sampler, String> {
        let pids = pids.to_vec();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("placement".into())
            .spawn(move || {
                let mut placement = Placement::default();
                while !stopping.load(Ordering::Relaxed) {
                    placement.add(pids.iter().flat_map(|(label, pid)| running(label, *pid)));
                    std::thread::sleep(EVERY);
                }
                placement
            })
            .map_err(|e| format!("starting the placement sampler: {e}"))?;
        Ok(Sampler { stop, thread: Some(thread) })
    }

    /// Stops looking; what was seen.
    pub fn stop(mut self) -> Placement {
        self.finish()
    }

    fn finish(&mut self) -> Placement {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}

/// The threads of `pid` running now, and on which core (none off Linux,
/// or once the process is gone). The sampler's own thread is left out.
fn running(label: &str, pid: u32) -> Vec<(Who, usize)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let Some(stat) = Stat::parse(&text) else { continue };
        if stat.state == 'R' && stat.name != "placement" {
            // The main thread by the process's label; the others by their
            // own names too.
            let main = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) == Some(pid);
            let who = if main || stat.name == label { label.to_string() } else { format!("{label}/{}", stat.name) };
            out.push((who, stat.core));
        }
    }
    out
}

/// What a sample needs of a thread's `stat` line.
#[derive(Debug, PartialEq)]
struct Stat<'a> {
    /// The thread's name (`comm`, at most 15 bytes; it may hold spaces and
    /// parentheses, so it is read up to the line's last `)`).
    name: &'a str,
    state: char,
    /// The core it runs on, or last ran on (field 39, `processor`).
    core: usize,
}

impl<'a> Stat<'a> {
    fn parse(line: &'a str) -> Option<Stat<'a>> {
        let open = line.find('(')?;
        let close = line.rfind(')')?;
        let name = line.get(open + 1..close)?;
        let mut fields = line.get(close + 1..)?.split_whitespace();
        // Fields from the state (3rd) on: the core is the 39th.
        let state = fields.next()?.chars().next()?;
        let core = fields.nth(35)?.parse().ok()?;
        Some(Stat { name, state, core })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `stat` line as Linux writes it, with `name`, `state` and `core`.
    fn line(name: &str, state: char, core: usize) -> String {
        let mut fields: Vec<String> = (4..=52).map(|n| n.to_string()).collect();
        fields[39 - 4] = core.to_string();
        format!("4242 ({name}) {state} {}\n", fields.join(" "))
    }

    #[test]
    fn a_stat_line_gives_name_state_and_core() {
        assert_eq!(Stat::parse(&line("connector", 'R', 1)), Some(Stat { name: "connector", state: 'R', core: 1 }));
        // A name with spaces and parentheses is read to the last `)`.
        let odd = line("a) (b c", 'S', 0);
        assert_eq!(Stat::parse(&odd), Some(Stat { name: "a) (b c", state: 'S', core: 0 }));
        assert_eq!(Stat::parse("4242 (cut"), None);
        assert_eq!(Stat::parse("4242 (short) R 1 2 3"), None);
    }

    #[test]
    fn shares_are_per_core_busiest_first_and_small_ones_left_out() {
        let mut p = Placement::default();
        for i in 0..100 {
            let mut seen = vec![("connector".to_string(), 0), ("relay-sim".to_string(), 0)];
            if i % 2 == 0 {
                seen.push(("relay-sim/backends".to_string(), 1));
            }
            if i == 0 {
                seen.push(("connsim".to_string(), 1));
            }
            p.add(seen);
        }
        p.add(Vec::new());
        assert_eq!(p.samples, 101);
        assert_eq!(
            p.render(),
            "core 0: connector 99 %, relay-sim 99 % | core 1: relay-sim/backends 50 %; together: connector + relay-sim 99 %"
        );
        // Taking turns on one core is not being there together.
        let mut turns = Placement::default();
        turns.add(vec![("a".to_string(), 0)]);
        turns.add(vec![("b".to_string(), 0)]);
        assert_eq!(turns.render(), "core 0: a 50 %, b 50 %");
        assert_eq!(Placement::default().render(), "no samples");
    }

    /// A thread that spins is seen running, on a core, in most samples;
    /// the sampler does not count itself.
    #[test]
    fn a_spinning_thread_is_seen_running() {
        if std::fs::metadata("/proc/self/task").is_err() {
            return; // Not Linux: nothing to sample.
        }
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = stop.clone();
        let spinner = std::thread::Builder::new()
            .name("spinner".into())
            .spawn(move || {
                while !spinning.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
            .unwrap();
        let sampler = Sampler::start(&[("test".into(), std::process::id())]).unwrap();
        std::thread::sleep(EVERY * 30);
        let placement = sampler.stop();
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        let seen: u32 = placement.running.values().filter_map(|t| t.get("test/spinner")).sum();
        assert!(placement.samples >= 10, "{placement:?}");
        assert!(seen * 2 > placement.samples, "the spinner ran in {seen} of {} samples", placement.samples);
        assert!(placement.running.values().all(|t| !t.contains_key("test/placement")), "{placement:?}");
    }
}
