//! Streams held open through the tunnel, to weigh the connector's memory
//! per open stream. Two shapes, `n` streams at once each:
//!
//! - waiting: a request the echo backend holds before answering
//!   (`?delay_ms=`), as a long poll or a slow report does;
//! - uploading: an upload that stops partway, past the ingress's hold (so
//!   the connector has it and feeds the backend), then finishes.
//!
//! The connector's resident memory is sampled every 20 ms while they run;
//! the highest sample is what a host needs for that many open streams.
//! Every stream must end in a 2xx: memory saved by refusing work would not
//! count.

#![allow(clippy::disallowed_methods, reason = "real sockets in real time")]

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::loadgen::{self, Target};

/// How long each stream stays open.
pub const HOLD: Duration = Duration::from_secs(3);

/// How long a shape may take in all before the run fails (a stream the
/// tunnel lost would otherwise wait out the connector's backend timeout).
const SHAPE_LIMIT: Duration = Duration::from_secs(60);

/// What one shape measured.
#[derive(Debug, Clone, Copy)]
pub struct Weighed {
    /// The connector's highest resident memory while the streams ran, KiB.
    pub peak_kib: u64,
    /// Its resident memory just before, KiB.
    pub before_kib: u64,
}

impl Weighed {
    /// KiB per stream above what the connector held before.
    pub fn per_stream_kib(&self, n: usize) -> f64 {
        self.peak_kib.saturating_sub(self.before_kib) as f64 / n.max(1) as f64
    }
}

/// Both shapes' figures.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub streams: usize,
    pub waiting: Weighed,
    pub uploading: Weighed,
}

/// Resident memory of `pid` now, KiB (`None` once it is gone).
pub fn rss_kib(pid: u32) -> Option<u64> {
    crate::bench::status_kib(&pid.to_string(), "VmRSS")
}

/// Both shapes, `n` streams each, one after the other. Runs on the
/// caller's `LocalSet`.
pub async fn measure(target: &Target, pid: u32, n: usize) -> Result<Held, String> {
    let held = Target { path: format!("/held?delay_ms={}", HOLD.as_millis()), ..target.clone() };
    let waiting = weigh(pid, loadgen::each_once(&held, n, Duration::ZERO, Duration::ZERO)).await?;
    // Past the ingress's hold, so that the connector has the stream.
    let first = relay_sim::services::ingress::STREAM_AFTER_BYTES + (64 << 10);
    let uploads = (0..n).map(|_| {
        let target = target.clone();
        tokio::task::spawn_local(async move { paused_upload(&target, first, 2 * first).await })
    });
    let uploading = weigh(pid, loadgen::answers(uploads.collect())).await?;
    Ok(Held { streams: n, waiting, uploading })
}

/// Runs `streams` while sampling `pid`'s memory; every stream must end in
/// a 2xx.
async fn weigh(
    pid: u32,
    streams: impl std::future::Future<Output = Vec<Result<u16, String>>>,
) -> Result<Weighed, String> {
    let before_kib = rss_kib(pid).ok_or("the connector is gone")?;
    let peak = Rc::new(Cell::new(before_kib));
    let sampler = {
        let peak = peak.clone();
        tokio::task::spawn_local(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    peak.set(peak.get().max(kib));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let answers = tokio::time::timeout(SHAPE_LIMIT, streams).await;
    sampler.abort();
    let answers = answers.map_err(|_| format!("held streams not all answered within {}s", SHAPE_LIMIT.as_secs()))?;
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    let not_2xx = answers.iter().filter(|a| matches!(a, Ok(s) if !(200..300).contains(s))).count();
    if let Some(e) = failed.first() {
        return Err(format!("{} of {} held streams failed; the first: {e}", failed.len(), answers.len()));
    }
    if not_2xx > 0 {
        return Err(format!("{not_2xx} of {} held streams were answered without a 2xx", answers.len()));
    }
    Ok(Weighed { peak_kib: peak.get(), before_kib })
}

/// A `total`-byte upload that sends `first` bytes, waits [`HOLD`], then
/// sends the rest; the answer's status.
async fn paused_upload(target: &Target, first: usize, total: usize) -> Result<u16, String> {
    let addr = target.addr;
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: {}\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n",
        target.host
    );
    let body = relay_sim::pattern::pattern(total);
    let io = |e: std::io::Error| format!("{addr}: {e}");
    s.write_all(head.as_bytes()).await.map_err(io)?;
    s.write_all(&body[..first.min(total)]).await.map_err(io)?;
    tokio::time::sleep(HOLD).await;
    s.write_all(&body[first.min(total)..]).await.map_err(io)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.map_err(io)?;
    status_of(&answer).ok_or_else(|| {
        format!("{addr}: not an HTTP answer: {:?}", String::from_utf8_lossy(&answer[..answer.len().min(80)]))
    })
}

/// The status code of an HTTP/1.1 answer's first line.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let code = std::str::from_utf8(line).ok()?.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_reads_the_first_line_only() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.1 502 Bad Gateway\r\n"), Some(502));
        assert_eq!(status_of(b"HTTP/1.0 200 OK\r\n"), None);
        assert_eq!(status_of(b"garbage"), None);
        assert_eq!(status_of(b""), None);
    }

    #[test]
    fn per_stream_is_the_growth_over_the_streams() {
        let w = Weighed { peak_kib: 3_000, before_kib: 1_000 };
        assert!((w.per_stream_kib(1_000) - 2.0).abs() < 1e-9);
        assert_eq!(Weighed { peak_kib: 10, before_kib: 20 }.per_stream_kib(5), 0.0);
    }
}
