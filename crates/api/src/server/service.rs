//! The per-connection hyper service in front of the axum router: the request-target length
//! limit, the health-only reserve connections, the limit on requests in flight and the request
//! timeout. Nothing here allocates on the way to the router.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, Uri, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::service::Service as HyperService;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use pin_project_lite::pin_project;
use tokio::time::Timeout;

use super::io::Phase;
use super::{MAX_URI_BYTES, ServerOptions, refusal};
use crate::ApiError;

/// What every connection shares.
pub(super) struct Shared {
    in_flight: AtomicUsize,
    max_in_flight: usize,
    request_timeout: Duration,
}

impl Shared {
    pub(super) fn new(options: &ServerOptions) -> Self {
        Shared {
            in_flight: AtomicUsize::new(0),
            max_in_flight: options.max_requests_in_flight,
            request_timeout: options.request_timeout,
        }
    }
}

/// A request counted in flight until its response is ready.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Option<InFlight> {
        let before = shared.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = InFlight(shared.clone());
        (before < shared.max_in_flight).then_some(permit)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

type RouterFuture = TowerToHyperServiceFuture<Router, Request<Incoming>>;

pub(super) struct ConnService {
    router: TowerToHyperService<Router>,
    shared: Arc<Shared>,
    phase: Arc<Phase>,
    /// A reserve connection, taken while the connection cap is reached: health checks only.
    health_only: bool,
}

impl ConnService {
    pub(super) fn new(
        router: Router,
        shared: Arc<Shared>,
        phase: Arc<Phase>,
        health_only: bool,
    ) -> Self {
        ConnService {
            router: TowerToHyperService::new(router),
            shared,
            phase,
            health_only,
        }
    }

    fn refuse(&self, error: ApiError, close: bool) -> ResponseFuture {
        let mut response = error.into_response();
        if close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        ResponseFuture {
            state: State::Refused {
                response: Some(response),
            },
            phase: self.phase.clone(),
            _in_flight: None,
        }
    }
}

fn is_health_check(uri: &Uri) -> bool {
    matches!(uri.path(), "/healthz" | "/readyz")
}

/// The request target's length as sent: the path and query, and the authority of an
/// absolute-form target.
fn target_len(uri: &Uri) -> usize {
    uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
}

impl HyperService<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        self.phase.start();
        if target_len(request.uri()) > MAX_URI_BYTES {
            return self.refuse(refusal::uri_too_long(), false);
        }
        let health = is_health_check(request.uri());
        if self.health_only && !health {
            return self.refuse(
                ApiError::ServerBusy {
                    detail: "the server is at its connection limit; this connection answers \
                             only /healthz and /readyz",
                    retry_after_s: 1,
                },
                true,
            );
        }
        // Probes are not counted: an orchestrator must see a live process that is busy as
        // alive, not restart it for being busy.
        let in_flight = if health {
            None
        } else {
            match InFlight::enter(&self.shared) {
                Some(permit) => Some(permit),
                None => {
                    return self.refuse(
                        ApiError::ServerBusy {
                            detail: "the server has as many requests in flight as it accepts; \
                                     retry shortly",
                            retry_after_s: 1,
                        },
                        false,
                    );
                }
            }
        };
        let timeout = self.shared.request_timeout;
        ResponseFuture {
            state: State::Running {
                future: tokio::time::timeout(timeout, self.router.call(request)),
                limit_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            },
            phase: self.phase.clone(),
            _in_flight: in_flight,
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Refused { response: Option<Response<Body>> },
        Running {
            #[pin]
            future: Timeout<RouterFuture>,
            limit_ms: u64,
        },
    }
}

pin_project! {
    pub(super) struct ResponseFuture {
        #[pin]
        state: State,
        phase: Arc<Phase>,
        _in_flight: Option<InFlight>,
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.state.project() {
            StateProj::Refused { response } => response
                .take()
                .unwrap_or_else(|| ApiError::Internal.into_response()),
            StateProj::Running { future, limit_ms } => match ready!(future.poll(cx)) {
                Ok(Ok(response)) => response,
                Ok(Err(infallible)) => match infallible {},
                Err(_elapsed) => {
                    let mut response = ApiError::RequestTimeout {
                        limit_ms: *limit_ms,
                    }
                    .into_response();
                    // The request body may be half read: do not reuse the connection.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    response
                }
            },
        };
        this.phase.finish();
        Poll::Ready(Ok(response))
    }
}
