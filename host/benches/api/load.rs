//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each sending
//! its next request as soon as the previous answer has been read in full, for a fixed time.
//! Like wrk, but in-repo (no install step) and able to give each request its own tenant and
//! body, and to check each answer rather than only its status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One request to send; built per request so that bodies and tokens can vary.
pub struct Shot {
    pub method: hyper::Method,
    pub path: String,
    pub token: Option<Arc<str>>,
    pub body: Option<Bytes>,
}

/// What a phase sends and how an answer counts as a success.
pub trait Scenario: Send + Sync + 'static {
    /// The `n`-th request of the run (counted across all connections).
    fn shot(&self, n: u64) -> Shot;
    /// Whether an answer is what the scenario expects.
    fn accept(&self, status: u16, body: &[u8]) -> bool;
    /// How long a connection waits before its next request after an answer it did not
    /// accept (a client honouring `Retry-After`); `None` sends at once.
    fn backoff(&self, _status: u16) -> Option<Duration> {
        None
    }
}

/// The outcome of one phase.
pub struct Measured {
    pub elapsed: Duration,
    /// Latencies of accepted answers, sorted.
    pub latencies: Vec<Duration>,
    /// Answers the scenario refused, by status, with the first body seen for each.
    pub failures: Vec<(u16, u64, String)>,
    /// Transport errors (connect, reset).
    pub transport_errors: u64,
}

impl Measured {
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th percentile (0..=100) by nearest rank.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    pub fn failed(&self) -> u64 {
        self.failures.iter().map(|(_, n, _)| n).sum::<u64>() + self.transport_errors
    }
}

/// Runs `scenario` against `addr` over `connections` connections for `duration`.
pub async fn run(
    addr: SocketAddr,
    scenario: Arc<dyn Scenario>,
    connections: usize,
    duration: Duration,
) -> Measured {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(connection(
                addr,
                scenario.clone(),
                counter.clone(),
                deadline,
            ))
        })
        .collect();
    let mut measured = Measured {
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        failures: Vec::new(),
        transport_errors: 0,
    };
    for worker in workers {
        let Ok(one) = worker.await else {
            measured.transport_errors += 1;
            continue;
        };
        measured.latencies.extend(one.latencies);
        measured.transport_errors += one.transport_errors;
        for (status, body) in one.failures {
            match measured.failures.iter_mut().find(|(s, _, _)| *s == status) {
                Some((_, n, _)) => *n += 1,
                None => measured.failures.push((status, 1, body)),
            }
        }
    }
    measured.elapsed = start.elapsed();
    measured.latencies.sort_unstable();
    measured
}

struct ConnectionResult {
    latencies: Vec<Duration>,
    failures: Vec<(u16, String)>,
    transport_errors: u64,
}

async fn connection(
    addr: SocketAddr,
    scenario: Arc<dyn Scenario>,
    counter: Arc<AtomicU64>,
    deadline: Instant,
) -> ConnectionResult {
    let mut result = ConnectionResult {
        latencies: Vec::with_capacity(1 << 16),
        failures: Vec::new(),
        transport_errors: 0,
    };
    'reconnect: while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(addr).await else {
            result.transport_errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await
        else {
            result.transport_errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            let shot = scenario.shot(counter.fetch_add(1, Ordering::Relaxed));
            let request = build(shot);
            let sent = Instant::now();
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(_) => {
                    result.transport_errors += 1;
                    continue 'reconnect;
                }
            };
            let status = response.status().as_u16();
            let Ok(body) = response.into_body().collect().await else {
                result.transport_errors += 1;
                continue 'reconnect;
            };
            let latency = sent.elapsed();
            let body = body.to_bytes();
            if scenario.accept(status, &body) {
                result.latencies.push(latency);
            } else {
                result.failures.push((
                    status,
                    String::from_utf8_lossy(&body).chars().take(300).collect(),
                ));
                if let Some(pause) = scenario.backoff(status) {
                    tokio::time::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
            }
        }
    }
    result
}

fn build(shot: Shot) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(shot.body.clone().unwrap_or_default()));
    *request.method_mut() = shot.method;
    *request.uri_mut() = shot.path.parse().unwrap_or_default();
    let headers = request.headers_mut();
    headers.insert(hyper::header::HOST, HeaderValue::from_static("localhost"));
    if let Some(token) = shot.token
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        headers.insert(AUTHORIZATION, value);
    }
    if shot.body.is_some() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    request
}
