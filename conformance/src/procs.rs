//! Child processes of real-world runs (`bench-real`, the netns world):
//! each logs to a file in a scratch folder, and all are killed and reaped
//! when the owner drops them, also on an error. On Linux the kernel also
//! kills them when the thread that started them dies: a `connsim` stopped
//! with Ctrl-C or `kill` runs no destructor, and would leave a relay-sim
//! and a connector serving on loopback behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::stopwatch::Stopwatch;

/// Child processes, killed and reaped on drop.
pub struct Procs {
    children: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Procs {
    /// Children whose logs go to `logs/<label>.log`.
    pub fn new(logs: &Path) -> Procs {
        Procs { children: Vec::new(), logs: logs.to_path_buf() }
    }

    /// Kills and reaps one child now (e.g. to read its final log).
    pub fn stop(&mut self, label: &str) {
        if let Some((_, child)) = self.children.iter_mut().find(|(l, _)| l == label) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops every child the way Ctrl-C would and kills those still
    /// running `grace` later; returns the labels of those it had to kill.
    /// A child that exits by itself runs its exit handlers: an instrumented
    /// build writes its profile then (`connsim pgo`), and a log ends with
    /// the process's own last words.
    pub fn interrupt(&mut self, grace: Duration) -> Vec<String> {
        let running = |child: &mut Child| matches!(child.try_wait(), Ok(None));
        let mut asked = false;
        for (_, child) in self.children.iter_mut().rev() {
            if running(child) {
                asked |= ask_to_stop(child.id());
            }
        }
        let since = Stopwatch::start();
        while asked && self.children.iter_mut().any(|(_, c)| running(c)) && since.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut killed = Vec::new();
        for (label, child) in self.children.iter_mut().rev() {
            if running(child) {
                killed.push(label.clone());
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        killed
    }

    /// Whether a child has exited by itself.
    pub fn exited(&mut self, label: &str) -> bool {
        self.children.iter_mut().find(|(l, _)| l == label).is_some_and(|(_, c)| matches!(c.try_wait(), Ok(Some(_))))
    }

    pub fn spawn(&mut self, label: &str, cmd: &mut Command) -> Result<u32, String> {
        let log = self.logs.join(format!("{label}.log"));
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        die_with_parent(cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {label} ({:?}): {e}", cmd.get_program()))?;
        let pid = child.id();
        self.children.push((label.to_string(), child));
        Ok(pid)
    }

    /// Fails with the child's log tail if it has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for (label, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.logs.join(format!("{label}.log"));
                return Err(format!("{label} exited ({status}); its log ends:\n{}", tail(&log, 15)));
            }
        }
        Ok(())
    }

    pub fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{label}.log"))).unwrap_or_default()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A workspace binary, with what to do when it is missing.
pub fn binary(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no {name} binary at {}: build the workspace first (cargo build --release --workspace)",
            p.display()
        ))
    }
}

/// Sends `SIGINT` to `pid`; false if it could not be sent.
#[cfg(unix)]
fn ask_to_stop(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill(2) takes plain integers; the pid is our unreaped child's,
    // so it names no other process.
    unsafe { libc::kill(pid, libc::SIGINT) == 0 }
}

#[cfg(not(unix))]
fn ask_to_stop(_: u32) -> bool {
    false
}

/// Asks the kernel to kill the child when its parent thread dies
/// (`PR_SET_PDEATHSIG`; it survives `exec`, so a child started through
/// `ip netns exec` keeps it).
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec, and only calls
    // prctl, which is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn interrupt_lets_a_child_run_its_exit_handler() {
        let dir = tempfile::tempdir().unwrap();
        let said = dir.path().join("said");
        let mut procs = Procs::new(dir.path());
        let ready = dir.path().join("ready");
        let script = format!(
            "trap 'echo bye > {}; exit 0' INT; touch {}; while :; do sleep 0.05; done",
            said.display(),
            ready.display()
        );
        procs.spawn("trapper", Command::new("sh").arg("-c").arg(script)).unwrap();
        wait_for_file(&ready);
        assert!(procs.interrupt(Duration::from_secs(10)).is_empty(), "it stopped by itself");
        assert!(procs.exited("trapper"));
        assert_eq!(std::fs::read_to_string(&said).unwrap().trim(), "bye");
    }

    #[test]
    fn interrupt_kills_a_child_that_ignores_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut procs = Procs::new(dir.path());
        let ready = dir.path().join("ready");
        let script = format!("trap '' INT; touch {}; while :; do sleep 0.05; done", ready.display());
        procs.spawn("stubborn", Command::new("sh").arg("-c").arg(script)).unwrap();
        wait_for_file(&ready);
        assert_eq!(procs.interrupt(Duration::from_millis(200)), ["stubborn"]);
        assert!(procs.exited("stubborn"));
    }

    /// Waits until the child's script has set its trap (it then touches `path`).
    fn wait_for_file(path: &Path) {
        let since = Stopwatch::start();
        while !path.exists() {
            assert!(since.elapsed() < Duration::from_secs(30), "the child never got ready");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
