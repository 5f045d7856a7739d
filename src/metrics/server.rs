//! The HTTP endpoint: `GET /metrics` (Prometheus text format), `/healthz`
//! and `/readyz`, on `metrics.addr` (`--metrics-addr`).
//!
//! A scrape every few seconds needs no HTTP stack: one thread accepts
//! connections and answers each with one HTTP/1.1 response, then closes it.
//! Requests are read with a short timeout, so a client that connects and
//! sends nothing cannot hold the endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request line and headers read.
const MAX_REQUEST: usize = 8 * 1024;

/// The running endpoint; dropping it stops the thread.
pub struct Endpoint {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Endpoint {
    /// Binds `addr` and serves `metrics` from a thread. Port 0 picks a free
    /// port; [`Endpoint::addr`] tells which.
    pub fn start(addr: SocketAddr, metrics: &'static Metrics) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|source| Error::Endpoint { addr, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Endpoint { addr, source })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("prescale-metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    // A failed accept or a client gone mid-request concerns
                    // that client only.
                    if let Ok(stream) = stream
                        && let Err(e) = answer(stream, metrics)
                    {
                        tracing::debug!(error = %e, "metrics endpoint: request failed");
                    }
                }
            })
            .map_err(|e| Error::Runtime(format!("starting the metrics endpoint: {e}")))?;
        Ok(Endpoint { addr, stop, thread: Some(thread) })
    }

    /// The address bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request and writes one response.
fn answer(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.by_ref().take(MAX_REQUEST as u64).read_line(&mut request_line)?;
    // Skip the headers: nothing in them changes the answer.
    let mut read = request_line.len();
    loop {
        let mut header = String::new();
        let n = reader.by_ref().take((MAX_REQUEST - read.min(MAX_REQUEST)) as u64).read_line(&mut header)?;
        read += n;
        if n == 0 || header == "\r\n" || header == "\n" || read >= MAX_REQUEST {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", prometheus_client::encoding::prometheus_text::CONTENT_TYPE, metrics.encode()),
        ("GET", "/healthz") => check(metrics.health.liveness()),
        ("GET", "/readyz") => check(metrics.health.readiness()),
        ("GET", _) => ("404 Not Found", TEXT, "try /metrics, /healthz or /readyz\n".to_owned()),
        _ => ("405 Method Not Allowed", TEXT, "only GET\n".to_owned()),
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

const TEXT: &str = "text/plain; charset=utf-8";

fn check(result: std::result::Result<String, String>) -> (&'static str, &'static str, String) {
    match result {
        Ok(text) => ("200 OK", TEXT, text + "\n"),
        Err(text) => ("503 Service Unavailable", TEXT, text + "\n"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        s.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[test]
    fn serves_metrics_health_and_readiness() {
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let endpoint = Endpoint::start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")), metrics)
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = endpoint.addr();
        let scrape = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
        assert!(scrape.contains("# TYPE prescale_decision_latency_seconds histogram"), "{scrape}");
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503"));
        metrics.health.start(1, Duration::from_secs(60));
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503"));
        metrics.health.worker_ready(0);
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        metrics.health.finished(false);
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 503"));
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    }

    #[test]
    fn a_stalled_worker_is_unhealthy() {
        let health = crate::metrics::health::Health::default();
        health.start(2, Duration::from_millis(50));
        assert!(health.liveness().is_ok());
        std::thread::sleep(Duration::from_millis(80));
        health.beat(0);
        let why = health.liveness().err().unwrap_or_default();
        assert!(why.contains("stalled workers: 1"), "{why}");
    }
}
