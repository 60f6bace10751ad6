//! A PostgreSQL outage at the API: while the database cannot be reached, requests answer 503
//! with `Retry-After` within about a second (the pool's short acquire timeout, then the
//! store's circuit breaker failing them at once), `/readyz` says why, no driver text reaches
//! a response, and requests succeed again once the database is back.
//!
//! The service reaches PostgreSQL through a TCP proxy owned by the test, so the outage is
//! the proxy going away (connections dropped, new ones refused), not a server restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::api_support::{Body, Db, PgDatabase, Reply, TestServer, assert_problem};

/// A generous bound for "within about a second" on a loaded 2-core machine (before the
/// short acquire timeout, a request waited for sqlx's 30 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Forwards 127.0.0.1:`port` to PostgreSQL until [`Proxy::down`].
struct Proxy {
    port: u16,
    target: SocketAddr,
    up: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut proxy = Proxy {
            port,
            target,
            up: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let target = self.target;
        let token = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        self.up = Some((stop, task));
    }

    /// Closes the listener (new connections are refused) and every forwarded connection.
    async fn down(&mut self) {
        if let Some((stop, task)) = self.up.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    async fn back(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the proxy's port is free again");
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_answers_503_at_once_and_readyz_says_why() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    // postgres://user@host:port/name: the proxy stands in for host:port.
    let (head, rest) = pg.url.split_once('@').expect("url has a user");
    let (host_port, name) = rest.split_once('/').expect("url has a database");
    let target: SocketAddr = tokio::net::lookup_host(host_port)
        .await
        .expect("resolve")
        .next()
        .expect("an address");
    let mut proxy = Proxy::start(target).await;
    let proxied = format!("{head}@127.0.0.1:{}/{name}", proxy.port);
    let mut options = crate::support::options();
    options.engine.pool_size = 4;
    // A database URL given here is kept (`Db::Sqlite` makes no database of its own).
    let server = TestServer::start_configured(Db::Sqlite, options, |config| {
        config.database_url = Some(proxied.clone());
    })
    .await
    .expect("server starts");
    assert!(
        server.database_url.starts_with("postgres"),
        "{}",
        server.database_url
    );
    let admin = server.tenant("acme").await;
    let listed = server.get("/v1/workflows", &admin).await;
    assert_eq!(listed.status, 200, "{}", listed.text);

    proxy.down().await;
    // Longer than the hot-row cache's second, so the tenant check needs the database too.
    for attempt in 0..8 {
        let (reply, took) = timed(server.get("/v1/workflows", &admin)).await;
        assert!(
            took <= ANSWER_WITHIN,
            "request {attempt} took {took:?} with the database unreachable"
        );
        assert_problem(&reply, 503, "unavailable");
        assert!(
            reply.headers.contains_key("retry-after"),
            "request {attempt}: {:?}",
            reply.headers
        );
        no_driver_text(&reply);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Several at once: none waits behind the others.
    let started = Instant::now();
    let replies =
        futures::future::join_all((0..8).map(|_| server.get("/v1/workflows", &admin))).await;
    assert!(
        started.elapsed() <= ANSWER_WITHIN,
        "8 concurrent requests took {:?}",
        started.elapsed()
    );
    for reply in &replies {
        assert_problem(reply, 503, "unavailable");
    }
    assert!(
        server.state.store().unreachable(),
        "the breaker is open after failures in a row"
    );
    let (ready, took) = timed(server.call(Method::GET, "/readyz", None, Body::None)).await;
    assert!(took <= ANSWER_WITHIN, "/readyz took {took:?}");
    assert_problem(&ready, 503, "unavailable");
    assert_eq!(ready.body["ready"], false, "{}", ready.text);
    assert_eq!(
        ready.body["reason"], "database unreachable",
        "{}",
        ready.text
    );
    assert!(ready.headers.contains_key("retry-after"));
    no_driver_text(&ready);

    proxy.back().await;
    let recovered = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let reply = server.get("/v1/workflows", &admin).await;
            if reply.status == 200 {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("requests succeed again once the database is back");
    assert_eq!(recovered.status, 200);
    let ready = server.call(Method::GET, "/readyz", None, Body::None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert!(!server.state.store().unreachable());
    drop(server);
    drop(pg);
}

async fn timed(request: impl std::future::Future<Output = Reply>) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = request.await;
    (reply, started.elapsed())
}

/// The problem names no driver, address, or error of the connection.
fn no_driver_text(reply: &Reply) {
    let text = reply.text.to_lowercase();
    for word in [
        "sqlx",
        "pool",
        "postgres",
        "refused",
        "127.0.0.1",
        "circuit",
        "io error",
        "timed out",
    ] {
        assert!(!text.contains(word), "{word:?} in {}", reply.text);
    }
}
