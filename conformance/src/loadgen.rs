//! An HTTP/1.1 load generator for real-mode benchmarks: closed loop (N
//! kept-alive connections, each sending its next request when the last one
//! is answered, like `wrk`) and open loop (a fixed request rate, latency
//! counted from when each request was due, so a stalled server cannot hide
//! its queue: no coordinated omission).
//!
//! Real time only: this measures sockets on loopback, never a simulation, so
//! it reads the machine's clock and sleeps on tokio's timer directly.

#![allow(clippy::disallowed_methods, reason = "real sockets in real time: latencies are wall time")]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host` header (the published app's name for the ingress).
    pub host: String,
    pub path: String,
}

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Answered with a 2xx.
    pub ok: u64,
    /// Other statuses, refused connections, broken responses.
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency of every answered request, microseconds, sorted.
    latencies_us: Vec<u32>,
    /// The first error seen, to say what went wrong.
    pub first_error: Option<String>,
}

impl Stats {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency below which a fraction `q` of the answered requests
    /// fall (nearest rank), in microseconds; 0 when nothing was answered.
    pub fn percentile_us(&self, q: f64) -> u32 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_us[rank - 1]
    }

    fn merge(parts: Vec<Stats>, elapsed: Duration) -> Stats {
        let mut all = Stats { elapsed, ..Stats::default() };
        for p in parts {
            all.ok += p.ok;
            all.errors += p.errors;
            all.latencies_us.extend(p.latencies_us);
            if all.first_error.is_none() {
                all.first_error = p.first_error;
            }
        }
        all.latencies_us.sort_unstable();
        all
    }

    fn record(&mut self, started: Instant, result: Result<u16, String>) {
        match result {
            Ok(status) if (200..300).contains(&status) => {
                self.ok += 1;
                let us = started.elapsed().as_micros();
                self.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Ok(status) => self.fail(format!("status {status}")),
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

struct Conn {
    sender: Option<SendRequest<Empty<Bytes>>>,
    /// How long a request may wait for its answer (none: as long as it
    /// takes, for users who wait on a slow backend on purpose).
    limit: Option<Duration>,
}

impl Conn {
    /// One request on this connection (reconnecting when it was closed).
    async fn request(&mut self, target: &Target) -> Result<u16, String> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            self.sender = Some(connect(target.addr).await?);
        }
        let Some(sender) = self.sender.as_mut() else { return Err("no connection".into()) };
        let req = http::Request::get(target.path.as_str())
            .header(http::header::HOST, target.host.as_str())
            .body(Empty::new())
            .map_err(|e| format!("request: {e}"))?;
        let sent = async {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            Ok::<u16, hyper::Error>(status)
        };
        let answer = match self.limit {
            Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| limit),
            None => Ok(sent.await),
        };
        match answer {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => {
                self.sender = None;
                Err(format!("{}: {e}", target.addr))
            }
            Err(limit) => {
                self.sender = None;
                Err(format!("{}: no answer within {}s", target.addr, limit.as_secs()))
            }
        }
    }
}

/// How long a load's request may wait for its answer before it counts as
/// an error and its connection is dropped: a lost answer must show as an
/// error, not stop the run.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

async fn connect<B>(addr: SocketAddr) -> Result<SendRequest<B>, String>
where
    B: hyper::body::Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay {addr}: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `conns` connections, each sending requests back to back for `duration`.
/// Runs on the caller's `LocalSet`.
pub async fn closed_loop(target: &Target, conns: usize, duration: Duration) -> Stats {
    let start = Instant::now();
    let end = start + duration;
    let parts = Rc::new(RefCell::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..conns.max(1) {
        let target = target.clone();
        let parts = parts.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut stats = Stats::default();
            let mut conn = Conn { sender: None, limit: Some(ANSWER_LIMIT) };
            while Instant::now() < end {
                let t = Instant::now();
                let r = conn.request(&target).await;
                let failed = r.is_err();
                stats.record(t, r);
                if failed {
                    // A refused connection would otherwise spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            parts.borrow_mut().push(stats);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let parts = std::mem::take(&mut *parts.borrow_mut());
    Stats::merge(parts, start.elapsed())
}

/// `rate` requests a second for `duration`, spread over `conns` connections
/// (request i is due at i/rate and goes on connection i mod conns). Latency
/// counts from when a request was due, or from when the timer woke if it
/// woke late: tokio's timer has millisecond granularity, a wait behind a
/// slow answer does not.
pub async fn open_loop(target: &Target, rate: u32, conns: usize, duration: Duration) -> Stats {
    let rate = rate.max(1);
    let total = (u64::from(rate) as f64 * duration.as_secs_f64()).round() as u64;
    let conns = conns.max(1);
    let start = Instant::now() + Duration::from_millis(20);
    let parts = Rc::new(RefCell::new(Vec::new()));
    let mut tasks = Vec::new();
    for j in 0..conns as u64 {
        let target = target.clone();
        let parts = parts.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut stats = Stats::default();
            let mut conn = Conn { sender: None, limit: Some(ANSWER_LIMIT) };
            let mut i = j;
            while i < total {
                let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
                let began = if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                let r = conn.request(&target).await;
                stats.record(began, r);
                i += conns as u64;
            }
            parts.borrow_mut().push(stats);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let parts = std::mem::take(&mut *parts.borrow_mut());
    Stats::merge(parts, start.elapsed())
}

/// `n` requests, request i sent at `start + i * interval` (all at once
/// when both are zero), each on its own connection; the status of each (or
/// why it got none), in the order they were started.
pub async fn each_once(target: &Target, n: usize, start: Duration, interval: Duration) -> Vec<Result<u16, String>> {
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = t0 + start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let target = target.clone();
        tasks.push(tokio::task::spawn_local(async move { Conn { sender: None, limit: None }.request(&target).await }));
    }
    answers(tasks).await
}

/// What each of `tasks` answered (a status, or why none), in their order.
pub async fn answers(tasks: Vec<tokio::task::JoinHandle<Result<u16, String>>>) -> Vec<Result<u16, String>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Err(format!("request task: {e}"))));
    }
    out
}

/// Which way a large body goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `GET ?size=N`: the backend sends `N` bytes.
    Down,
    /// `POST` of `N` bytes: the backend reads and hashes them.
    Up,
}

/// `times` transfers of `size` bytes one after the other on one kept-alive
/// connection; bytes a second over all of them. A short body or a non-2xx
/// answer is an error: a fast wrong answer must not count.
pub async fn transfer(target: &Target, size: usize, way: Direction, times: u32) -> Result<f64, String> {
    let addr = target.addr;
    let mut sender = connect::<http_body_util::Full<Bytes>>(addr).await?;
    let upload = match way {
        Direction::Up => relay_sim::pattern::pattern(size),
        Direction::Down => Bytes::new(),
    };
    let start = Instant::now();
    for _ in 0..times.max(1) {
        let req = match way {
            Direction::Down => http::Request::get(format!("/download?size={size}")),
            Direction::Up => http::Request::post("/upload"),
        };
        let req = req
            .header(http::header::HOST, target.host.as_str())
            .body(http_body_util::Full::new(upload.clone()))
            .map_err(|e| format!("request: {e}"))?;
        sender.ready().await.map_err(|e| format!("{addr}: {e}"))?;
        let resp = sender.send_request(req).await.map_err(|e| format!("{addr}: {e}"))?;
        let status = resp.status();
        let resp_bytes = resp.headers().get("x-body-bytes").and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut body = resp.into_body();
        let mut got = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("{addr}: body after {got} bytes: {e}"))?;
            got += frame.data_ref().map_or(0, Bytes::len);
        }
        // The echo backend says how much of an upload it read.
        let read = resp_bytes.and_then(|v| v.parse::<usize>().ok());
        let whole = match way {
            Direction::Down => got == size,
            Direction::Up => read == Some(size),
        };
        if !status.is_success() || !whole {
            return Err(format!("{addr}: {status}, {got} bytes down, backend read {read:?} of {size}"));
        }
    }
    let moved = size as f64 * f64::from(times.max(1));
    Ok(moved / start.elapsed().as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let s = Stats { latencies_us: (1..=100).collect(), ..Stats::default() };
        assert_eq!(s.percentile_us(0.5), 50);
        assert_eq!(s.percentile_us(0.99), 99);
        assert_eq!(s.percentile_us(1.0), 100);
        assert_eq!(Stats::default().percentile_us(0.5), 0);
    }
}
