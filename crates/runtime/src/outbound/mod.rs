//! The outbound gate: the one door through which guest HTTP requests reach the network.
//!
//! Every request a guest sends goes through [`Session::send`], which, for the request and for
//! every redirect hop it follows:
//! - validates the method, URL and headers (`invalid-request`);
//! - allows only `https` (and `http` if the operator says so), no userinfo, and only hosts
//!   matching the connector's declared hosts AND the tenant's policy (`denied`);
//! - refuses private, loopback, link-local/metadata and other non-public addresses, checked on
//!   IP literals before sending and on DNS answers inside the client's resolver, so the
//!   address checked is the address connected to (`denied`);
//! - attaches the connection's credential only for explicitly declared hosts, and only on hops
//!   whose origin (scheme, host, port) is the origin of the guest's request, replacing any
//!   header of the same name the guest set; drops the guest's own `Authorization` and `Cookie`
//!   on hops to another origin (as curl and browsers do), unless the operator opts in;
//! - enforces request counts, body sizes, byte totals and a timeout;
//! - scrubs every form of the credential out of the response before the guest sees it;
//! - refuses requests, without a connection attempt, to an origin that keeps failing for the
//!   tenant (the circuit breaker, [`breaker`]): the guest gets `connect-failed`, and if it
//!   then fails the invocation's kind is the retryable `upstream_unavailable`;
//! - when an upstream answers 401 to a request that carried an OAuth2 bearer token, gets a
//!   fresh token from the credential's refresher and re-sends that one request once (at most
//!   one refresh per invocation; see [`Session::send`]).
//!
//! One [`Gate`] per process (it owns the connection pool); one [`Session`] per invocation (it
//! owns the grant, the counters and the first limit hit).

mod address;
mod breaker;
mod credential;
mod error;
mod oauth;
mod resolve;
mod scrub;
pub mod trace;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ipnet::IpNet;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use airlock_model::TenantId;
use airlock_secrets::Secret;

pub use airlock_model::hosts::{HostPattern, HostPatternError};
pub use airlock_model::{ApiKeyLocation, AuthSpec, OutboundLimits};
pub use breaker::BreakerConfig;
pub use credential::{Credential, CredentialError};
pub use error::{HttpError, LimitHit, OutboundError, OutboundLimit};
pub use oauth::{
    REFRESH_TIMEOUT, RefreshAccessToken, RefreshError, RefreshRequest, TokenGrant, TokenRefresher,
};
pub use scrub::Scrubber;

use airlock_model::hosts::{self as policy, HostDecision, RequestHost};
use breaker::{Breakers, Origin, Outcome, Ticket};
use resolve::{BlockedAddress, GateResolver};

/// Sent when the guest sets no `user-agent` of its own, so upstreams can tell who calls them.
const DEFAULT_USER_AGENT: &str = concat!("airlock/", env!("CARGO_PKG_VERSION"));

/// The longest `Retry-After` the gate remembers: a durable run's policy caps the wait lower
/// (`max_backoff_ms`, at most an hour), and a longer ask is as good as "not today".
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Bounds on what a guest may put in its request headers; far above what any API needs.
const MAX_GUEST_HEADERS: usize = 100;
const MAX_GUEST_HEADER_BYTES: usize = 64 * 1024;

/// Process-wide settings, chosen by the operator. `Default` is the safe setting.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Whether plain `http://` URLs are allowed. Off: only `https://`.
    pub allow_http: bool,
    /// Non-public ranges guests may reach anyway (an internal API, or loopback in tests).
    /// Unspecified, multicast and broadcast addresses stay blocked whatever is listed.
    pub allowed_private_ranges: Vec<IpNet>,
    /// Host name -> addresses, used instead of DNS. The addresses are checked like DNS answers.
    pub resolve_overrides: HashMap<String, Vec<SocketAddr>>,
    /// Redirect hops followed per guest request; each hop is checked and counted like a request.
    pub max_redirects: u32,
    /// PEM certificates (each string may hold several) trusted in addition to the built-in
    /// web PKI roots: an internal CA, or a test CA. Certificate checks themselves can never be
    /// turned off.
    pub extra_root_certificates: Vec<String>,
    /// Whether a redirect to another origin (scheme, host or port) that is also an explicitly
    /// declared host still gets the credential, and the guest's own `Authorization` and
    /// `Cookie` headers. Off (the default, as in curl without `--location-trusted` and in
    /// browsers): only hops to the origin of the guest's request carry them, so a declared host
    /// cannot send the credential meant for it on to another declared host or port.
    pub credentials_follow_redirects_across_origins: bool,
    /// The per-tenant, per-origin circuit breaker ([`BreakerConfig`]).
    pub breaker: BreakerConfig,
}

impl Default for OutboundConfig {
    fn default() -> OutboundConfig {
        OutboundConfig {
            allow_http: false,
            allowed_private_ranges: Vec::new(),
            resolve_overrides: HashMap::new(),
            max_redirects: 5,
            extra_root_certificates: Vec::new(),
            credentials_follow_redirects_across_origins: false,
            breaker: BreakerConfig::default(),
        }
    }
}

/// What one invocation may do on the network.
#[derive(Debug, Clone)]
pub struct Grant {
    /// From the connector's manifest. Empty: no network at all.
    pub declared_hosts: Vec<HostPattern>,
    /// From the tenant's policy.
    pub tenant_hosts: Vec<HostPattern>,
    pub auth: AuthSpec,
    pub credential: Credential,
    pub limits: OutboundLimits,
    /// A durable run's step key: sent as `Idempotency-Key` on the step's requests that are
    /// not safe methods (unless the guest set one), so an upstream can drop the repeat of a
    /// step re-run after a crash.
    pub idempotency_key: Option<HeaderValue>,
    /// The tenant the requests are sent for: the circuit breaker judges each tenant's
    /// upstreams apart. `None` (host-side tests only) leaves the breaker out.
    pub tenant: Option<TenantId>,
    /// The invocation's span: each request is a client span under it and carries that
    /// span's `traceparent`. The guest's own `traceparent`/`tracestate` are dropped.
    pub trace: Option<airlock_telemetry::TraceContext>,
}

impl Default for Grant {
    /// No declared hosts (so no network), any tenant host, no credential, default limits.
    fn default() -> Grant {
        Grant {
            declared_hosts: Vec::new(),
            tenant_hosts: vec![HostPattern::Any],
            auth: AuthSpec::None,
            credential: Credential::None,
            limits: OutboundLimits::default(),
            idempotency_key: None,
            tenant: None,
            trace: None,
        }
    }
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A request as the guest wrote it (the WIT `http.request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A response as the guest sees it (the WIT `http.response`), already scrubbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundStats {
    /// Requests sent (or attempted), each redirect hop counted.
    pub requests: u32,
    /// Requests (or hops) refused by policy.
    pub denied: u32,
    /// Request body bytes sent.
    pub bytes_out: u64,
    /// Response body bytes received.
    pub bytes_in: u64,
}

/// The process-wide gate. Cheap to clone; all clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Gate {
    inner: Arc<GateInner>,
}

#[derive(Debug)]
struct GateInner {
    client: reqwest::Client,
    allow_http: bool,
    allowed_ranges: Arc<[IpNet]>,
    max_redirects: u32,
    credentials_follow_redirects_across_origins: bool,
    breakers: Arc<Breakers>,
    metrics: Arc<airlock_telemetry::Metrics>,
}

impl Gate {
    pub fn new(config: OutboundConfig) -> Result<Gate, OutboundError> {
        for (host, addrs) in &config.resolve_overrides {
            let invalid = |reason: &str| OutboundError::InvalidOverride {
                host: host.clone(),
                reason: reason.to_owned(),
            };
            match host.parse::<HostPattern>() {
                Ok(HostPattern::Exact(name))
                    if name.parse::<IpAddr>().is_err() && !name.starts_with('[') => {}
                _ => return Err(invalid("not a host name")),
            }
            if addrs.is_empty() {
                return Err(invalid("no addresses"));
            }
        }
        let allowed_ranges: Arc<[IpNet]> = config.allowed_private_ranges.into();
        let resolver = GateResolver::new(config.resolve_overrides, Arc::clone(&allowed_ranges));
        let mut builder = reqwest::Client::builder();
        for (index, pem) in config.extra_root_certificates.iter().enumerate() {
            let invalid = |reason: String| OutboundError::InvalidCertificate { index, reason };
            let certificates = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|err| invalid(err.to_string()))?;
            if certificates.is_empty() {
                return Err(invalid("no PEM certificate found".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            // Redirects are followed by the gate, which re-checks every hop.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and connect on our behalf, past the address checks.
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            // The Referer header would tell a redirect target where the guest came from,
            // including a query that may hold a credential.
            .referer(false)
            // A retry is a request the session did not count.
            .retry(reqwest::retry::never())
            .https_only(!config.allow_http)
            .build()
            .map_err(OutboundError::Client)?;
        Ok(Gate {
            inner: Arc::new(GateInner {
                client,
                allow_http: config.allow_http,
                allowed_ranges,
                max_redirects: config.max_redirects,
                credentials_follow_redirects_across_origins: config
                    .credentials_follow_redirects_across_origins,
                breakers: Arc::new(Breakers::new(config.breaker)),
                metrics: Arc::default(),
            }),
        })
    }

    /// Records into `metrics` (outbound requests by status class). Call right after
    /// [`Gate::new`], before the gate is shared.
    pub fn with_metrics(mut self, metrics: Arc<airlock_telemetry::Metrics>) -> Gate {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics = metrics;
        }
        self
    }

    /// Checks a URL the host itself will call for a tenant (an OAuth2 token endpoint, a
    /// dead-letter webhook) before any request: its scheme (`https`, or `http` where the
    /// operator allows it), no `user:password@`, a host the tenant's policy allows, and no
    /// literal address in a blocked range. A host name's addresses are checked again at
    /// every connection, as for guests. The error says why, without the URL.
    pub fn check_host_url(&self, url: &str, tenant_hosts: &[HostPattern]) -> Result<Url, String> {
        let url = Url::parse(url).map_err(|_| "not a URL".to_owned())?;
        match url.scheme() {
            "https" => {}
            "http" if self.inner.allow_http => {}
            other => return Err(format!("scheme {other}: is not allowed; use https")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("it carries user:password@".to_owned());
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err("it has no host".to_owned()),
        };
        let Some(host) = RequestHost::of(&url) else {
            return Err("it has no host".to_owned());
        };
        let declared = [HostPattern::Exact(host.name.clone())];
        if let HostDecision::Denied(reason) = policy::decide(&declared, tenant_hosts, &host) {
            return Err(reason);
        }
        if let Some(ip) = literal
            && let Some(reason) = address::blocked_reason(ip, &self.inner.allowed_ranges)
        {
            return Err(format!("address {ip} is {reason}"));
        }
        Ok(url)
    }

    /// Starts the session of one invocation.
    pub fn session(&self, grant: Grant) -> Session {
        let scrubber = Scrubber::new(credential::secret_forms(&grant.credential));
        Session {
            gate: Arc::clone(&self.inner),
            reserved_headers: credential::reserved_headers(&grant.auth),
            grant,
            scrubber,
            stats: OutboundStats::default(),
            limit_hit: None,
            refreshed_after_401: false,
            upstream_retry_after: None,
            asked_retry_after: None,
            in_flight: None,
            breaker_refusal: None,
            trace: None,
        }
    }
}

/// One invocation's view of the gate: its grant, counters and first limit hit.
#[derive(Debug)]
pub struct Session {
    gate: Arc<GateInner>,
    grant: Grant,
    /// Computed once; an invalid header name in the auth spec fails credentialed requests.
    reserved_headers: Result<Vec<HeaderName>, CredentialError>,
    scrubber: Scrubber,
    stats: OutboundStats,
    limit_hit: Option<LimitHit>,
    /// Whether this invocation already asked for a new OAuth2 token after a 401: it asks once.
    refreshed_after_401: bool,
    /// The `Retry-After` of the last 429 or 503 the guest was given, unless a later response
    /// succeeded: what the upstream asked a failed invocation's retry to wait.
    upstream_retry_after: Option<Duration>,
    /// The wait the guest itself asked for (the `invocation.retry-after` import).
    asked_retry_after: Option<Duration>,
    /// The breaker's ticket of the hop on the wire, kept here (not in the sending future) so
    /// a hop cut off by the request timeout is still counted as the upstream's failure.
    in_flight: Option<Ticket>,
    /// The wait before a probe, when a breaker refused one of this session's requests.
    breaker_refusal: Option<Duration>,
    /// What was sent and received, when the caller asked (`testAction`).
    trace: Option<Vec<trace::Exchange>>,
}

/// One hop, ready to send.
struct Hop {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
    /// The OAuth2 access token this hop carries, when its credential can be refreshed.
    refreshable: Option<Secret>,
    /// The breaker let this hop through; settled with how it ended.
    ticket: Option<Ticket>,
    /// The hop's client span (its `traceparent` is in `headers`); ends with the response.
    span: Option<airlock_telemetry::Span>,
}

impl Session {
    /// The invocation's idempotency key (a durable run step's `<run>:<step>`), if it has one.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.grant
            .idempotency_key
            .as_ref()
            .and_then(|key| key.to_str().ok())
    }

    /// Sends one guest request, following redirects, and returns the scrubbed response.
    ///
    /// A 401 to a hop that carried a refreshable OAuth2 token, the first in this session, is
    /// read (and counted) like any response; then the credential's refresher is asked for a
    /// token in place of the rejected one, the session's credential and scrubber take the new
    /// token, and the same hop (method, URL, headers, body bytes) is sent again, checked and
    /// counted as one more request. A 401 has not been processed by the upstream, so this is
    /// safe for any method. The guest gets the 401 as it came when the refresh fails, when the
    /// limits leave no room for the retry, or when the retry is answered 401 again; the whole
    /// exchange stays within the request's timeout.
    pub async fn send(&mut self, request: GuestRequest) -> Result<GuestResponse, HttpError> {
        let timeout = self.grant.limits.request_timeout;
        let result = match tokio::time::timeout(timeout, self.send_checked(request)).await {
            Ok(result) => result,
            Err(_) => {
                if let Some(ticket) = self.in_flight.take() {
                    ticket.settle(Outcome::Failure, Instant::now());
                }
                Err(HttpError::Timeout)
            }
        };
        // Messages may quote transport errors or URLs; neither may carry the credential.
        let result = result.map_err(|err| self.scrub_error(err));
        if let Some(trace) = &mut self.trace
            && let Some(last) = trace.last_mut()
            && last.response.is_none()
            && last.error.is_none()
        {
            match &result {
                Ok(response) => {
                    last.response = Some(trace::response(
                        response.status,
                        &response.headers,
                        &response.body,
                    ));
                }
                Err(error) => last.error = Some(error.to_string()),
            }
        }
        result
    }

    pub fn stats(&self) -> OutboundStats {
        self.stats
    }

    /// Records every hop from now on (see [`trace`]).
    pub fn enable_trace(&mut self) {
        self.trace.get_or_insert_with(Vec::new);
    }

    /// The hops recorded so far.
    pub fn take_trace(&mut self) -> Vec<trace::Exchange> {
        self.trace.take().unwrap_or_default()
    }

    pub fn limit_hit(&self) -> Option<LimitHit> {
        self.limit_hit.clone()
    }

    /// When a circuit breaker refused one of this session's requests: how long until it lets
    /// a probe through (as of the last refusal).
    pub fn breaker_refusal(&self) -> Option<Duration> {
        self.breaker_refusal
    }

    /// How long a retry of this invocation should wait, if anyone asked: the guest's own ask
    /// ([`Session::ask_retry_after`]) if it made one, else the `Retry-After` of the last 429
    /// or 503 it was given (cleared by a later 2xx, which says the upstream took requests
    /// again). At most [`MAX_RETRY_AFTER`].
    pub fn retry_after(&self) -> Option<Duration> {
        self.asked_retry_after.or(self.upstream_retry_after)
    }

    /// The guest asks a retry to wait `wait` (it knows better than the headers: a rate-limit
    /// reset in a body, another header); the last ask counts.
    pub fn ask_retry_after(&mut self, wait: Duration) {
        self.asked_retry_after = Some(wait.min(MAX_RETRY_AFTER));
    }

    /// Redacts this grant's credential (and its derived forms) from logs and outputs.
    pub fn scrubber(&self) -> Scrubber {
        self.scrubber.clone()
    }

    async fn send_checked(&mut self, request: GuestRequest) -> Result<GuestResponse, HttpError> {
        let mut method = parse_method(&request.method)?;
        let mut url = Url::parse(&request.url)
            .map_err(|err| HttpError::InvalidRequest(format!("invalid URL: {err}")))?;
        let mut guest_headers = guest_headers(&request.headers)?;
        let mut body = request.body.map(Bytes::from);
        let mut redirects = 0;
        // Credentials are meant for the origin the guest asked for; a redirect elsewhere does
        // not carry them (compared per hop, so a chain that comes back gets them back).
        let origin = url.origin();
        loop {
            let trusted =
                url.origin() == origin || self.gate.credentials_follow_redirects_across_origins;
            let hop = self.prepare_hop(&method, &url, &guest_headers, body.as_ref(), trusted)?;
            self.record(&hop);
            let refreshable = hop.refreshable.clone();
            let response = self.execute(hop).await?;
            if response.status() == StatusCode::UNAUTHORIZED
                && let Some(rejected) = refreshable
                && !self.refreshed_after_401
            {
                self.refreshed_after_401 = true;
                let unauthorized = self.read_response(response).await?;
                let body_len = body.as_ref().map_or(0, |b| b.len() as u64);
                if self.refresh_after_401(&rejected).await && self.room_for(body_len).is_ok() {
                    continue;
                }
                return Ok(unauthorized);
            }
            let Some(location) = redirect_location(&response) else {
                return self.read_response(response).await;
            };
            if redirects >= self.gate.max_redirects {
                return Err(HttpError::Other(format!(
                    "too many redirects (limit {})",
                    self.gate.max_redirects
                )));
            }
            redirects += 1;
            let next = url
                .join(&location)
                .map_err(|err| HttpError::Other(format!("invalid redirect location: {err}")))?;
            if switches_to_get(response.status(), &method) {
                if method != Method::HEAD {
                    method = Method::GET;
                }
                body = None;
                for name in BODY_HEADERS {
                    guest_headers.remove(name);
                }
            }
            url = next;
        }
    }

    /// Checks one hop against the policy and the limits, and builds its headers. Nothing has
    /// touched the network when this refuses. `trusted`: the hop may carry credentials (its
    /// origin is the guest's, or the operator lets credentials follow redirects anywhere).
    fn prepare_hop(
        &mut self,
        method: &Method,
        url: &Url,
        guest_headers: &HeaderMap,
        body: Option<&Bytes>,
        trusted: bool,
    ) -> Result<Hop, HttpError> {
        let credentialed = self.check_url(url)? && trusted;
        // A server that echoes the credential into a Location would otherwise have the gate
        // carry it to wherever that Location points. Hops that get the credential may see it:
        // they get it anyway.
        if !credentialed && self.scrubber.contains_secret(url.as_str().as_bytes()) {
            return Err(self.deny("the URL contains the connection's credential".into()));
        }
        self.charge(body.map_or(0, |b| b.len() as u64))?;
        // After the policy checks (a denied request is the guest's doing, not the upstream's
        // state) and after the charge: a refused request is an attempt, so a guest retrying in
        // a loop against an open breaker still meets `max_requests`.
        let ticket = self.admit(url)?;

        let mut url = url.clone();
        url.set_fragment(None);
        let mut headers = guest_headers.clone();
        // The trace is the host's to say: a guest cannot continue another trace or leak
        // state through these headers.
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        let span = self.grant.trace.as_ref().map(|parent| {
            let mut span = self.gate.metrics.spans().start(
                method.as_str().to_owned(),
                airlock_telemetry::SpanKind::Client,
                parent,
            );
            span.set("http.request.method", method.as_str());
            // The origin only: a path or query can carry a token.
            span.set("server.address", url.host_str().unwrap_or_default());
            if let Some(port) = url.port_or_known_default() {
                span.set("server.port", port);
            }
            span
        });
        if let Some(span) = &span
            && let Ok(value) = HeaderValue::from_str(&span.context().traceparent())
        {
            headers.insert(TRACEPARENT, value);
        }
        if let Some(key) = &self.grant.idempotency_key
            && !method.is_safe()
            && !headers.contains_key(IDEMPOTENCY_KEY)
        {
            headers.insert(IDEMPOTENCY_KEY, key.clone());
        }
        if !trusted {
            // The guest's own credentials, which it gave to the origin it asked for (curl drops
            // the same two; `Proxy-Authorization` never leaves the gate at all).
            headers.remove(header::AUTHORIZATION);
            headers.remove(header::COOKIE);
        }
        let mut refreshable = None;
        if credentialed {
            let reserved = self
                .reserved_headers
                .as_ref()
                .map_err(|err| HttpError::Other(err.to_string()))?;
            for name in reserved {
                headers.remove(name);
            }
            credential::apply(
                &self.grant.auth,
                &self.grant.credential,
                &mut url,
                &mut headers,
            )
            .map_err(|err| HttpError::Other(err.to_string()))?;
            if let Credential::OAuth2 {
                access_token,
                refresher: Some(_),
            } = &self.grant.credential
            {
                refreshable = Some(access_token.clone());
            }
        }
        if !self.scrubber.is_empty() {
            // The scrubber reads plain bytes: a compressed echo of the credential would pass
            // it, and the guest would decompress it. So a session with a secret asks for no
            // content coding whatever the guest asked for (and `read_response` refuses one).
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        if !headers.contains_key(header::USER_AGENT) {
            headers.insert(
                header::USER_AGENT,
                HeaderValue::from_static(DEFAULT_USER_AGENT),
            );
        }
        Ok(Hop {
            method: method.clone(),
            url,
            headers,
            body: body.cloned(),
            refreshable,
            ticket,
            span,
        })
    }

    /// Adds `hop` to the trace, if one is kept; the hop before it (a redirect, a 401 sent
    /// again) ends without a response of its own.
    fn record(&mut self, hop: &Hop) {
        let Some(trace) = &mut self.trace else {
            return;
        };
        let masked: &[HeaderName] = match &self.reserved_headers {
            Ok(names) => names,
            Err(_) => &[],
        };
        trace.push(trace::Exchange {
            request: trace::request(
                &hop.method,
                &hop.url,
                &hop.headers,
                hop.body.as_deref(),
                masked,
                &self.scrubber,
            ),
            response: None,
            error: None,
        });
    }

    /// Asks the tenant's breaker for `url`'s origin whether this hop may go out.
    fn admit(&mut self, url: &Url) -> Result<Option<Ticket>, HttpError> {
        let (Some(tenant), Some(origin)) = (&self.grant.tenant, Origin::of(url)) else {
            return Ok(None);
        };
        match self.gate.breakers.admit(tenant, origin, Instant::now()) {
            Ok(ticket) => Ok(ticket),
            Err(refused) => {
                self.breaker_refusal = Some(refused.retry_in);
                Err(HttpError::ConnectFailed(refused.to_string()))
            }
        }
    }

    /// Asks the credential's refresher for a token in place of `rejected`. On success the
    /// session attaches the new token from now on, and its scrubber (shared with the runtime's
    /// copy) redacts it before any response carrying it can reach the guest.
    async fn refresh_after_401(&mut self, rejected: &Secret) -> bool {
        let Credential::OAuth2 {
            refresher: Some(refresher),
            ..
        } = &self.grant.credential
        else {
            return false;
        };
        let refresher = refresher.clone();
        match refresher.refresh(rejected).await {
            Ok(access_token) => {
                self.scrubber.add([access_token.clone()]);
                self.grant.credential = Credential::OAuth2 {
                    access_token,
                    refresher: Some(refresher),
                };
                true
            }
            Err(_) => false,
        }
    }

    /// Scheme, userinfo, host allowlist and IP-literal checks. Returns whether the hop gets the
    /// credential.
    fn check_url(&mut self, url: &Url) -> Result<bool, HttpError> {
        match url.scheme() {
            "https" => {}
            "http" if self.gate.allow_http => {}
            "http" => return Err(self.deny("plain http is not allowed; use https".into())),
            other => return Err(self.deny(format!("scheme {other}: is not allowed"))),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                self.deny("URLs with credentials (user:password@host) are not allowed".into())
            );
        }
        let Some(host) = RequestHost::of(url) else {
            return Err(HttpError::InvalidRequest("the URL has no host".into()));
        };
        let credentialed =
            match policy::decide(&self.grant.declared_hosts, &self.grant.tenant_hosts, &host) {
                HostDecision::Allowed { credential } => credential,
                HostDecision::Denied(reason) => return Err(self.deny(reason)),
            };
        // IP literals never reach the resolver (hyper connects to them directly), so they are
        // checked here; names are checked on their DNS answers in `resolve`.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && let Some(reason) = address::blocked_reason(ip, &self.gate.allowed_ranges)
        {
            return Err(self.deny(format!("address {ip} is {reason}")));
        }
        Ok(credentialed)
    }

    /// Counts one request and its body against the limits, before it is sent.
    fn charge(&mut self, body_len: u64) -> Result<(), HttpError> {
        if let Err((limit, err)) = self.room_for(body_len) {
            return Err(self.limit(limit, err));
        }
        self.stats.requests += 1;
        self.stats.bytes_out += body_len;
        Ok(())
    }

    /// Whether the limits leave room for one more request with a body of `body_len` bytes.
    fn room_for(&self, body_len: u64) -> Result<(), (OutboundLimit, HttpError)> {
        let limits = &self.grant.limits;
        if self.stats.requests >= limits.max_requests {
            return Err((OutboundLimit::Requests, HttpError::TooManyRequests));
        }
        if body_len > limits.max_request_body_bytes {
            let message = format!(
                "request body of {body_len} bytes exceeds the limit of {}",
                limits.max_request_body_bytes
            );
            return Err((OutboundLimit::RequestBody, HttpError::TooLarge(message)));
        }
        if self.stats.bytes_out.saturating_add(body_len) > limits.max_total_bytes_out {
            let message = format!(
                "request body of {body_len} bytes would exceed the invocation's limit of {} bytes sent",
                limits.max_total_bytes_out
            );
            return Err((OutboundLimit::TotalBytesOut, HttpError::TooLarge(message)));
        }
        Ok(())
    }

    async fn execute(&mut self, mut hop: Hop) -> Result<reqwest::Response, HttpError> {
        self.in_flight = hop.ticket.take();
        let mut builder = self
            .gate
            .client
            .request(hop.method, hop.url)
            .headers(hop.headers);
        if let Some(body) = hop.body {
            builder = builder.body(body);
        }
        let sent = builder.send().await;
        let ticket = self.in_flight.take();
        let status = sent.as_ref().ok().map(|r| r.status().as_u16());
        self.gate.metrics.outbound(status);
        if let Some(mut span) = hop.span.take() {
            match status {
                Some(status) => {
                    span.set("http.response.status_code", status);
                    if status >= 500 {
                        span.fail(status.to_string());
                    }
                }
                None => span.fail("no response"),
            }
        }
        match sent {
            Ok(response) => {
                if let Some(ticket) = ticket {
                    let outcome = if matches!(
                        response.status(),
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    ) {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    ticket.settle(outcome, Instant::now());
                }
                Ok(response)
            }
            Err(err) => {
                let err = self.transport_error(err);
                // A blocked address is the gate's refusal, not the upstream failing: the
                // ticket is dropped unsettled.
                if let Some(ticket) = ticket
                    && !matches!(err, HttpError::Denied(_))
                {
                    ticket.settle(Outcome::Failure, Instant::now());
                }
                Err(err)
            }
        }
    }

    /// Reads the final response, stopping as soon as a cap is crossed, and scrubs it.
    async fn read_response(
        &mut self,
        mut response: reqwest::Response,
    ) -> Result<GuestResponse, HttpError> {
        let limits = &self.grant.limits;
        let remaining_in = limits
            .max_total_bytes_in
            .saturating_sub(self.stats.bytes_in);
        let (cap, limit) = if limits.max_response_body_bytes <= remaining_in {
            (limits.max_response_body_bytes, OutboundLimit::ResponseBody)
        } else {
            (remaining_in, OutboundLimit::TotalBytesIn)
        };
        let too_large = |limit| {
            let message = match limit {
                OutboundLimit::ResponseBody => {
                    format!("response body exceeds the limit of {cap} bytes")
                }
                _ => format!(
                    "response body exceeds the invocation's remaining {cap} of {} bytes received",
                    limits.max_total_bytes_in
                ),
            };
            HttpError::TooLarge(message)
        };
        // A declared length over the cap fails before a byte of the body is read.
        if response.content_length().is_some_and(|len| len > cap) {
            let err = too_large(limit);
            return Err(self.limit(limit, err));
        }
        if !self.scrubber.is_empty()
            && let Some(coding) = content_coding(response.headers())
        {
            return Err(HttpError::Other(format!(
                "the response is encoded ({coding}) although the gate asked for no encoding; \
                 an encoded body cannot be checked for the connection's credential"
            )));
        }
        let status = response.status().as_u16();
        if matches!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            self.upstream_retry_after = retry_after(response.headers(), SystemTime::now());
        } else if response.status().is_success() {
            self.upstream_retry_after = None;
        }
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    self.scrubber.scrub_str(name.as_str()),
                    self.scrubber
                        .scrub_str(&String::from_utf8_lossy(value.as_bytes())),
                )
            })
            .collect();
        let mut body: Vec<u8> = Vec::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => return Err(self.transport_error(err)),
            };
            self.stats.bytes_in = self.stats.bytes_in.saturating_add(chunk.len() as u64);
            // Checked before appending: at most `cap` bytes are buffered, plus the chunk in hand.
            if (body.len() as u64).saturating_add(chunk.len() as u64) > cap {
                let err = too_large(limit);
                return Err(self.limit(limit, err));
            }
            body.extend_from_slice(&chunk);
        }
        if self.scrubber.contains_secret(&body) {
            body = self.scrubber.scrub_bytes(&body);
            describe_changed_body(&mut headers, body.len());
        }
        Ok(GuestResponse {
            status,
            headers,
            body,
        })
    }

    /// Turns a reqwest failure into what the guest sees. A resolver refusal (blocked address)
    /// is a policy denial, not a connection failure.
    fn transport_error(&mut self, err: reqwest::Error) -> HttpError {
        let mut source = err.source();
        while let Some(cause) = source {
            if let Some(blocked) = cause.downcast_ref::<BlockedAddress>() {
                return self.deny(blocked.to_string());
            }
            source = cause.source();
        }
        if err.is_timeout() {
            return HttpError::Timeout;
        }
        // reqwest's `is_connect` covers DNS failures, refusals and TLS handshakes alike.
        let is_connect = err.is_connect();
        // Without the URL: it may carry a query-string credential, and the guest knows it anyway.
        let message = describe(&err.without_url());
        if is_connect {
            HttpError::ConnectFailed(message)
        } else {
            HttpError::Other(message)
        }
    }

    fn deny(&mut self, reason: String) -> HttpError {
        let reason = self.scrubber.scrub_str(&reason);
        self.stats.denied += 1;
        self.limit_hit
            .get_or_insert(LimitHit::HttpDenied(reason.clone()));
        HttpError::Denied(reason)
    }

    fn limit(&mut self, limit: OutboundLimit, err: HttpError) -> HttpError {
        self.limit_hit.get_or_insert(LimitHit::OutboundLimit(limit));
        err
    }

    fn scrub_error(&self, err: HttpError) -> HttpError {
        let scrub = |text: String| self.scrubber.scrub_str(&text);
        match err {
            HttpError::Denied(m) => HttpError::Denied(scrub(m)),
            HttpError::TooLarge(m) => HttpError::TooLarge(scrub(m)),
            HttpError::ConnectFailed(m) => HttpError::ConnectFailed(scrub(m)),
            HttpError::InvalidRequest(m) => HttpError::InvalidRequest(scrub(m)),
            HttpError::Other(m) => HttpError::Other(scrub(m)),
            HttpError::Timeout => HttpError::Timeout,
            HttpError::TooManyRequests => HttpError::TooManyRequests,
        }
    }
}

/// The wait a `Retry-After` header asks for (RFC 9110 §10.2.3): delta-seconds, or an HTTP
/// date, counted from the response's own `Date` when it has one (so a skewed clock on
/// either side does not stretch or cancel the wait), else from `now`. A date in the past is
/// no wait; an unreadable value is none. At most [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let from = headers
        .get(header::DATE)
        .and_then(|date| date.to_str().ok())
        .and_then(|date| httpdate::parse_http_date(date.trim()).ok())
        .unwrap_or(now);
    Some(
        at.duration_since(from)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// The methods a connector may use. CONNECT (tunnels) and TRACE (echoes headers back) have no
/// place in an API call.
fn parse_method(method: &str) -> Result<Method, HttpError> {
    let upper = method.to_ascii_uppercase();
    match upper.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => {
            Method::from_bytes(upper.as_bytes())
                .map_err(|_| HttpError::InvalidRequest(format!("invalid method {method:?}")))
        }
        _ => Err(HttpError::InvalidRequest(format!(
            "method {method:?} is not allowed (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS)"
        ))),
    }
}

/// Headers that describe the connection or the framing rather than the request. The guest's
/// values are dropped, not refused: hyper derives the right ones from the URL and the body, and
/// many HTTP client libraries set `Host` or `Content-Length` themselves, so refusing would
/// break ordinary guests while stripping loses nothing. Letting them through would allow
/// request smuggling (conflicting `Content-Length`/`Transfer-Encoding`), virtual-host
/// confusion (`Host` not matching the checked URL) or proxy tricks (`Proxy-*`).
fn is_transport_header(name: &HeaderName) -> bool {
    const TRANSPORT: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "http2-settings",
    ];
    let name = name.as_str();
    TRANSPORT.contains(&name) || name.starts_with("proxy-")
}

/// Validates the guest's headers into a map, dropping transport headers.
fn guest_headers(headers: &[(String, String)]) -> Result<HeaderMap, HttpError> {
    if headers.len() > MAX_GUEST_HEADERS {
        return Err(HttpError::InvalidRequest(format!(
            "{} headers; at most {MAX_GUEST_HEADERS} are allowed",
            headers.len()
        )));
    }
    let total: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if total > MAX_GUEST_HEADER_BYTES {
        return Err(HttpError::InvalidRequest(format!(
            "headers take {total} bytes; at most {MAX_GUEST_HEADER_BYTES} are allowed"
        )));
    }
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("invalid header name {name:?}")))?;
        // Rejects CR, LF and NUL, so a value cannot inject a header of its own.
        let value = HeaderValue::from_str(value)
            .map_err(|_| HttpError::InvalidRequest(format!("invalid value for header {name}")))?;
        if !is_transport_header(&name) {
            map.append(name, value);
        }
    }
    Ok(map)
}

/// Headers describing a body, dropped with it when a redirect turns the request into a GET.
const BODY_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LOCATION,
];

/// Response headers that describe the exact bytes of the body (validators and digests): wrong
/// once the scrubber has changed them, so dropped rather than passed on.
const BODY_DIGEST_HEADERS: &[&str] = &[
    "etag",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
];

/// Makes the response headers describe the body the guest gets after the scrubber changed it:
/// `Content-Length` says its new length, and digests of the old bytes go.
fn describe_changed_body(headers: &mut Vec<(String, String)>, len: usize) {
    headers.retain(|(name, _)| !BODY_DIGEST_HEADERS.contains(&name.as_str()));
    for (name, value) in headers.iter_mut() {
        if name == header::CONTENT_LENGTH.as_str() {
            *value = len.to_string();
        }
    }
}

/// The content coding of a response, if it has one other than `identity`.
fn content_coding(headers: &HeaderMap) -> Option<String> {
    let codings: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|coding| !coding.is_empty() && coding != "identity")
        .collect();
    (!codings.is_empty()).then(|| codings.join(", "))
}

/// The Location of a redirect the gate follows (301, 302, 303, 307, 308). Other 3xx, and
/// redirects without a usable Location, go back to the guest as they are.
fn redirect_location(response: &reqwest::Response) -> Option<String> {
    let status = response.status();
    let follows = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !follows {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    Some(location.to_owned())
}

/// RFC 9110 15.4: 303 always becomes GET; 301 and 302 turn POST into GET, as every client
/// does; 307 and 308 keep the method and the body.
fn switches_to_get(status: StatusCode, method: &Method) -> bool {
    status == StatusCode::SEE_OTHER
        || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
            && *method == Method::POST)
}

/// The error and its causes on one line ("client error (Connect): tcp connect error: ...").
fn describe(err: &reqwest::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
