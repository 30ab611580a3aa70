//! Which cores a measured process may run on (`connsim bench-real
//! --split-cores`).
//!
//! Why: on a two-core machine the scheduler places the processes of a
//! path by its own rules, and a process woken through a loopback socket
//! tends to run on the core of the one that woke it. Two single-threaded
//! ends that wake each other (the connector and relay-sim's thread) were
//! measured sharing one core while the other core waited on them
//! (BENCHMARKS, rounds twelve and sixteen); a multi-threaded peer
//! (rathole) is not held back the same way. Pinning
//! every path's sides the same way takes the scheduler's placement out of
//! a comparison, so that a ratio can be read as cost, not as placement.
//! It is a diagnosis, not the setting targets are judged in.

use std::io;

/// The first two cores this process may run on: the client side's and the
/// server side's.
pub fn two() -> Result<[usize; 2], String> {
    let allowed = allowed().map_err(|e| format!("cannot read which cores this process may use: {e}"))?;
    match allowed[..] {
        [a, b, ..] => Ok([a, b]),
        _ => Err(format!("--split-cores needs two cores; this process may use {}", allowed.len())),
    }
}

/// Pins every thread of process `pid` to `core`; how many threads were
/// pinned. Threads started later inherit the mask of the thread that
/// starts them, so the threads are listed again until a pass finds none
/// new (one started by a thread not yet pinned would keep the old mask).
pub fn pin(pid: u32, core: usize) -> Result<usize, String> {
    let mut pinned = std::collections::BTreeSet::new();
    loop {
        let mut new = 0;
        for tid in threads(pid)? {
            if pinned.contains(&tid) {
                continue;
            }
            match set(tid, core) {
                Ok(()) => {
                    pinned.insert(tid);
                    new += 1;
                }
                // A thread that ended since the folder was read.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(format!("pinning thread {tid} of process {pid} to core {core}: {e}")),
            }
        }
        if new == 0 {
            break;
        }
    }
    if pinned.is_empty() {
        return Err(format!("process {pid} has no thread left to pin (it ended)"));
    }
    Ok(pinned.len())
}

/// The thread ids of process `pid`.
fn threads(pid: u32) -> Result<Vec<u32>, String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| format!("threads of process {pid}: {e}"))?;
    let mut tids = Vec::new();
    for task in tasks {
        let task = task.map_err(|e| format!("threads of process {pid}: {e}"))?;
        if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// The cores this process may run on, lowest first.
#[cfg(target_os = "linux")]
fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is plain bits (all zero is an empty set);
    // sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into
    // it, and CPU_ISSET reads within it for every index below
    // CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        let size = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
        Ok((0..size).filter(|&c| libc::CPU_ISSET(c, &set)).collect())
    }
}

/// Lets thread `tid` run on `core` only.
#[cfg(target_os = "linux")]
fn set(tid: u32, core: usize) -> io::Result<()> {
    let tid = libc::pid_t::try_from(tid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if core >= usize::try_from(libc::CPU_SETSIZE).unwrap_or(0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: as in `allowed`; CPU_SET writes the bit of `core`, checked
    // above to lie within the set, and sched_setaffinity reads the set and
    // takes plain integers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn allowed() -> io::Result<Vec<usize>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "pinning to cores is done on Linux only"))
}

#[cfg(not(target_os = "linux"))]
fn set(_: u32, _: usize) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "pinning to cores is done on Linux only"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The cores the kernel lets process `pid` run on, as
    /// `/proc/PID/status` lists them.
    fn allowed_list(pid: u32) -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string()
    }

    /// Kills its child when dropped, also when an assertion fails first.
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_pinned_process_runs_on_its_core_only() {
        let allowed = allowed().unwrap();
        let child = Child(std::process::Command::new("sleep").arg("30").spawn().unwrap());
        let pid = child.0.id();
        // The last core: with more than one allowed, the child's list
        // differs from it until pinned.
        let core = *allowed.last().unwrap();
        if allowed.len() > 1 {
            assert_ne!(allowed_list(pid), core.to_string());
        }
        assert_eq!(pin(pid, core), Ok(1), "sleep has one thread");
        assert_eq!(allowed_list(pid), core.to_string());
    }

    #[test]
    fn no_process_no_pinning() {
        // Past the largest pid the kernel hands out (2^22).
        let err = pin(1 << 23, 0).unwrap_err();
        assert!(err.contains("threads of process"), "{err}");
    }
}
