//! Which runs `connsim run` makes: the seeds of each scenario, and the part
//! of them this machine takes when a sweep is split.

/// A seed range: `7`, `1..1000` (inclusive) or `1..=1000`.
#[derive(Clone, Copy, Debug)]
pub struct Seeds {
    pub first: u64,
    pub last: u64,
}

pub fn parse_seeds(s: &str) -> Result<Seeds, String> {
    let num = |t: &str| t.trim().parse::<u64>().map_err(|_| format!("{t:?} is not a seed (a whole number)"));
    let (first, last) = match s.split_once("..") {
        Some((a, b)) => (num(a)?, num(b.trim_start_matches('='))?),
        None => (num(s)?, num(s)?),
    };
    if last < first {
        return Err(format!("empty seed range {s:?}: the end is below the start"));
    }
    Ok(Seeds { first, last })
}

/// One part of a run split over machines: `k/n`, the k-th of n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub k: usize,
    pub n: usize,
}

impl Partition {
    /// Whether the run at `index` (in the order of an unsplit run:
    /// scenario files sorted, then seeds) is this part's. Parts take runs
    /// in turn, so each gets every n-th and the split is the same on every
    /// machine given the same files and seeds.
    pub fn takes(self, index: usize) -> bool {
        index % self.n == self.k - 1
    }
}

pub fn parse_partition(s: &str) -> Result<Partition, String> {
    let bad = || format!("{s:?} is not a partition: write k/n, the k-th of n parts (1 <= k <= n), e.g. 2/4");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n) = (k.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
    if k == 0 || k > n {
        return Err(bad());
    }
    Ok(Partition { k, n })
}
