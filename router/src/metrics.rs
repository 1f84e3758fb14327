//! Prometheus metrics: the one registry of the process and the handles that feed it.
//!
//! **One registry.** Everything registers in the `prometheus` crate's default registry
//! ([`registry`]); `/metrics` renders all of it. Any library that registers there (Pingora 0.9.1
//! registers nothing itself; its optional `pingora-prometheus` app and the `prometheus` process
//! collector both use the default registry) shows up on the same page with no extra wiring.
//!
//! **Bounded labels only.** Label values come from closed enums in this module ([`Outcome`],
//! [`StatusClass`], [`DnsResult`], …), from the configured path-rule names, or from the
//! configured certificate names — never from a raw host, label, path or header.
//!
//! **Cheap on the request path.** Each handle resolves its label combination once (eagerly for
//! the small result enums, lazily into a `OnceLock` slot for the per-listener request table); a
//! request then costs an index computation and atomic adds — no string formatting, no map lookup,
//! no allocation.
//!
//! Handles, by who calls them:
//! - request path ([`crate::proxy`], [`crate::redirect`]): [`RequestMetrics`] (requests,
//!   durations, open WebSockets), [`upstream`], [`route_lookup`];
//! - the route store and its Redis cache: [`ROUTE_CACHE`] ([`RouteCacheMetrics`]: plain atomics
//!   rendered with the rest, `hubify_route_cache_*`);
//! - 6PN and Fly: [`dns_lookup`], [`machine_wake`];
//! - TLS and ACME: [`tls_handshake`] (successes from the listener's handshake callback, failures
//!   and timeouts from the accept loop in `listen.rs`), [`set_certificates`] /
//!   [`cert_not_after`], [`renewal`];
//! - process: [`init`] (build info, start time; the `process_*` family comes from the crate's
//!   process collector).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// The registry `/metrics` renders: the `prometheus` crate's default registry, shared with every
/// library that registers there.
pub fn registry() -> &'static Registry {
    prometheus::default_registry()
}

/// The git commit the binary was built from (`unknown` outside a git checkout); set by
/// `build.rs`, overridable with `HUBIFY_EDGE_GIT_COMMIT` at build time.
pub const GIT_COMMIT: &str = env!("HUBIFY_EDGE_GIT_COMMIT");

/// Registers every metric family of this module and sets the process facts (build info, start
/// time). Idempotent; `app::build` calls it once, `render` calls it again for safety.
pub fn init() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let process = &*PROCESS;
        process
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_COMMIT])
            .set(1);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        process.start_time.set(now);
        LazyLock::force(&FAMILIES);
        LazyLock::force(&UPSTREAM);
        LazyLock::force(&ROUTE_LOOKUPS);
        LazyLock::force(&AUTH);
        LazyLock::force(&LIMITED);
        LazyLock::force(&FLY);
        LazyLock::force(&TLS);
        LazyLock::force(&OPS);
        OPS.last_reload.set(now);
    });
}

/// The text exposition of every registered metric.
pub fn render() -> String {
    init();
    refresh_cpu();
    let encoder = prometheus::TextEncoder::new();
    let mut out = encoder
        .encode_to_string(&registry().gather())
        .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"));
    // The route cache keeps plain atomics (its hit path pays one relaxed add); render them here.
    ROUTE_CACHE.render_into(&mut out);
    out
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    if let Err(e) = registry().register(Box::new(c.clone())) {
        // Only a programming error (a name registered twice) gets here; the metric still works,
        // it is just not exported.
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| invalid(name, e)))
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(Histogram::with_opts(opts).unwrap_or_else(|e| invalid(name, e)))
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(HistogramVec::new(opts, labels).unwrap_or_else(|e| invalid(name, e)))
}

/// Metric definitions are constants of this module; an invalid one is a bug caught by the unit
/// tests, never by traffic.
fn invalid<T>(name: &str, e: prometheus::Error) -> T {
    panic!("invalid metric definition {name}: {e}")
}

fn slots<T>(n: usize) -> Box<[OnceLock<T>]> {
    (0..n).map(|_| OnceLock::new()).collect()
}

/// Resolves one child per value of a label enum, in the enum's order.
fn by<T, E: Copy>(all: &[E], f: impl Fn(E) -> T) -> Box<[T]> {
    all.iter().map(|e| f(*e)).collect()
}

macro_rules! label_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $variant,)+ }
        impl $name {
            /// Every value, in declaration order (the order of pre-resolved children).
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label,)+ }
            }
            #[allow(dead_code)]
            const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Label values.

label_enum! {
    /// The listener a request arrived on.
    pub enum Listener {
        Https => "https",
        Http => "http",
        Redirect => "redirect",
    }
}

label_enum! {
    /// What the router did with a request (the `outcome` of the access log).
    pub enum Outcome {
        /// Proxied to the workspace.
        Forward => "forward",
        /// Answered with `fly-replay` (Fly's edge replays it elsewhere).
        Replay => "replay",
        /// A redirect (reserved label, the redirect listener).
        Redirect => "redirect",
        /// No such workspace, host outside the domain, or no path rule.
        NotFound => "not_found",
        /// Missing or malformed Host.
        BadRequest => "bad_request",
        /// A request head the router refuses itself (400/405/408/414/431: unreadable, a framing
        /// or target nginx and HAProxy refuse too, too large, too slow).
        Refused => "refused",
        /// SNI and Host disagree (421).
        Misdirected => "misdirected",
        /// A protected path refused by the access check (401/403).
        Denied => "denied",
        /// The route store cannot answer (503).
        Unavailable => "unavailable",
        /// A malformed route record (502).
        BadRoute => "bad_route",
        /// Proxying failed (502/504/…), or the request failed before a decision.
        Error => "error",
        /// Not replayable: the body may exceed Fly's 1 MiB replay limit (413).
        TooLarge => "too_large",
        /// Beyond one of the workspace's limits (429).
        Limited => "limited",
        /// Already replayed once (`fly-replay-src`): refused to avoid a loop (508).
        Loop => "loop",
        /// Fly's edge gave the replay back (`fly-replay-failed`): 503.
        ReplayFailed => "replay_failed",
        /// A stopped machine is being started; the request waited too long (503).
        Starting => "starting",
        /// 6PN DNS did not answer (503).
        DnsError => "dns_error",
        /// The Machines API refused the token (502).
        WakeUnauthorized => "wake_unauthorized",
        /// The route names a machine the Machines API does not know (502).
        MachineNotFound => "machine_not_found",
        /// The Machines API failed otherwise (503).
        WakeFailed => "wake_failed",
        /// An outcome name this module does not know yet (kept bounded).
        Other => "other",
    }
}

impl Outcome {
    /// The outcome for the name the proxy records in its context; unknown names are `other`.
    pub fn from_name(name: &str) -> Outcome {
        Outcome::ALL
            .iter()
            .copied()
            .find(|o| o.as_str() == name)
            .unwrap_or(Outcome::Other)
    }
}

label_enum! {
    /// The class of a response status.
    pub enum StatusClass {
        Informational => "1xx",
        Success => "2xx",
        Redirection => "3xx",
        ClientError => "4xx",
        ServerError => "5xx",
        /// No response was sent (the client went away first), or a status outside 100..=599.
        None => "none",
    }
}

impl StatusClass {
    pub const fn of(status: u16) -> StatusClass {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => StatusClass::None,
        }
    }
}

/// The `rule` label when a request matched no path rule (router answers, reserved upstreams).
pub const NO_RULE: &str = "none";

// ---------------------------------------------------------------------------------------------
// Requests (per listener, pre-resolved).

const SECONDS_REQUEST: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const SECONDS_CONNECT: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const SECONDS_WAKE: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0,
];

struct Families {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    websockets_open: IntGaugeVec,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    Families {
    requests: counter_vec(
        "hubify_requests_total",
        "Requests answered, by listener, outcome, path rule and status class.",
        &["listener", "outcome", "rule", "status_class"],
    ),
    request_duration: histogram_vec(
        "hubify_request_duration_seconds",
        "Time from the start of a request to the end of its response, by outcome and path rule \
         (WebSocket sessions excluded: see hubify_websockets_open).",
        &["outcome", "rule"],
        SECONDS_REQUEST,
    ),
    websockets_open: IntGaugeVec::new(
        Opts::new(
            "hubify_websockets_open",
            "WebSocket sessions open now (upgrade forwarded with 101 and not yet closed), by path rule.",
        ),
        &["rule"],
    )
    .map(register)
    .unwrap_or_else(|e| invalid("hubify_websockets_open", e)),
}
});

/// The request metrics of one listener, with every label combination resolved at most once.
///
/// Rule slot 0 is [`NO_RULE`]; slot `i + 1` is the configured path rule `i`.
pub struct RequestMetrics {
    listener: Listener,
    rules: Box<[Box<str>]>,
    requests: Box<[OnceLock<IntCounter>]>,
    durations: Box<[OnceLock<Histogram>]>,
    websockets: Box<[OnceLock<IntGauge>]>,
}

impl RequestMetrics {
    /// The listener these requests arrive on.
    pub fn listener(&self) -> Listener {
        self.listener
    }

    /// `rule_names`: the configured path rules' names, in configuration order.
    pub fn new<S: AsRef<str>>(listener: Listener, rule_names: &[S]) -> RequestMetrics {
        init();
        let rules: Box<[Box<str>]> = std::iter::once(NO_RULE)
            .chain(rule_names.iter().map(AsRef::as_ref))
            .map(Box::from)
            .collect();
        let n_outcomes = Outcome::ALL.len();
        let n_rules = rules.len();
        RequestMetrics {
            listener,
            requests: slots(n_outcomes * n_rules * StatusClass::ALL.len()),
            durations: slots(n_outcomes * n_rules),
            websockets: slots(n_rules),
            rules,
        }
    }

    fn rule_slot(&self, rule: Option<usize>) -> usize {
        match rule {
            Some(i) if i + 1 < self.rules.len() => i + 1,
            _ => 0,
        }
    }

    /// Counts one finished request. `duration`: `None` leaves the duration histogram alone (an
    /// upgraded WebSocket session is not a request latency).
    pub fn request(
        &self,
        outcome: Outcome,
        rule: Option<usize>,
        status: u16,
        duration: Option<Duration>,
    ) {
        let r = self.rule_slot(rule);
        let class = StatusClass::of(status);
        let n_rules = self.rules.len();
        let idx = (outcome.index() * n_rules + r) * StatusClass::ALL.len() + class.index();
        if let Some(slot) = self.requests.get(idx) {
            slot.get_or_init(|| {
                FAMILIES.requests.with_label_values(&[
                    self.listener.as_str(),
                    outcome.as_str(),
                    &self.rules[r],
                    class.as_str(),
                ])
            })
            .inc();
        }
        if let Some(d) = duration {
            if let Some(slot) = self.durations.get(outcome.index() * n_rules + r) {
                slot.get_or_init(|| {
                    FAMILIES
                        .request_duration
                        .with_label_values(&[outcome.as_str(), &self.rules[r]])
                })
                .observe(d.as_secs_f64());
            }
        }
    }

    /// Marks a WebSocket session open under its path rule; it counts as open until the returned
    /// guard is dropped (whatever ends the session: normal close, error, cancellation).
    pub fn websocket_opened(&self, rule: Option<usize>) -> WebSocketOpen {
        let r = self.rule_slot(rule);
        let gauge = self.websockets[r]
            .get_or_init(|| {
                FAMILIES
                    .websockets_open
                    .with_label_values(&[&self.rules[r]])
            })
            .clone();
        gauge.inc();
        WebSocketOpen(gauge)
    }
}

/// An open WebSocket session; dropping it decrements `hubify_websockets_open`.
#[derive(Debug)]
pub struct WebSocketOpen(IntGauge);

impl Drop for WebSocketOpen {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream connections.

label_enum! {
    /// Why proxying to an upstream failed.
    pub enum UpstreamErrorKind {
        ConnectRefused => "connect_refused",
        ConnectTimeout => "connect_timeout",
        /// No route, socket or bind errors, other connect failures.
        ConnectError => "connect_error",
        /// TLS to the upstream failed.
        Tls => "tls",
        ReadTimeout => "read_timeout",
        WriteTimeout => "write_timeout",
        /// The upstream closed the connection early.
        Closed => "closed",
        ReadError => "read_error",
        WriteError => "write_error",
        /// The upstream's response was not valid HTTP.
        InvalidResponse => "invalid_response",
        Other => "other",
    }
}

label_enum! {
    /// What went wrong on the client's side of a request, for the access log's `error`
    /// (upstream failures are named by [`UpstreamErrorKind`]).
    pub enum ClientError {
        Closed => "client_closed",
        ReadError => "client_read_error",
        WriteError => "client_write_error",
        ReadTimeout => "client_read_timeout",
        WriteTimeout => "client_write_timeout",
        /// A request Pingora's engine refused while reading it.
        BadRequest => "client_bad_request",
        Internal => "internal",
    }
}

/// The access log's name of a Pingora error: the [`UpstreamErrorKind`] of upstream failures (as
/// in `hubify_upstream_errors_total`), else a [`ClientError`].
pub fn error_name(e: &pingora_error::Error) -> &'static str {
    use pingora_error::{ErrorSource, ErrorType::*};
    if let Some(kind) = UpstreamErrorKind::of(e) {
        return kind.as_str();
    }
    let client = match (e.esource(), e.etype()) {
        (ErrorSource::Downstream, ConnectionClosed) => ClientError::Closed,
        (ErrorSource::Downstream, ReadError) => ClientError::ReadError,
        (ErrorSource::Downstream, WriteError) => ClientError::WriteError,
        (ErrorSource::Downstream, ReadTimedout) => ClientError::ReadTimeout,
        (ErrorSource::Downstream, WriteTimedout) => ClientError::WriteTimeout,
        (ErrorSource::Downstream, _) => ClientError::BadRequest,
        _ => ClientError::Internal,
    };
    client.as_str()
}

impl UpstreamErrorKind {
    /// The kind of a Pingora error, or `None` when it is not about the upstream (the client
    /// went away, an internal error).
    pub fn of(e: &pingora_error::Error) -> Option<UpstreamErrorKind> {
        use pingora_error::ErrorType::*;
        let kind = match e.etype() {
            ConnectRefused => UpstreamErrorKind::ConnectRefused,
            ConnectTimedout => UpstreamErrorKind::ConnectTimeout,
            ConnectNoRoute | ConnectError | SocketError | BindError | ConnectProxyFailure => {
                UpstreamErrorKind::ConnectError
            }
            TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
            | TLSWantX509Lookup => UpstreamErrorKind::Tls,
            _ if e.esource() != &pingora_error::ErrorSource::Upstream => return None,
            ReadTimedout => UpstreamErrorKind::ReadTimeout,
            WriteTimedout => UpstreamErrorKind::WriteTimeout,
            ConnectionClosed => UpstreamErrorKind::Closed,
            ReadError => UpstreamErrorKind::ReadError,
            WriteError => UpstreamErrorKind::WriteError,
            InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => {
                UpstreamErrorKind::InvalidResponse
            }
            _ => UpstreamErrorKind::Other,
        };
        Some(kind)
    }
}

/// Upstream connection metrics.
pub struct Upstream {
    connect_duration: Histogram,
    /// `[new, reused]`.
    connections: [IntCounter; 2],
    errors: Box<[IntCounter]>,
}

static UPSTREAM: LazyLock<Upstream> = LazyLock::new(|| {
    let connections = counter_vec(
        "hubify_upstream_connections_total",
        "Upstream connections used by forwarded requests, by whether they came from the keepalive pool.",
        &["reused"],
    );
    let errors = counter_vec(
        "hubify_upstream_errors_total",
        "Forwarded requests that failed because of the upstream, by kind.",
        &["kind"],
    );
    Upstream {
        connect_duration: histogram(
            "hubify_upstream_connect_duration_seconds",
            "Time to establish a new upstream connection (TCP connect, as Pingora measures it).",
            SECONDS_CONNECT,
        ),
        connections: [
            connections.with_label_values(&["false"]),
            connections.with_label_values(&["true"]),
        ],
        errors: by(UpstreamErrorKind::ALL, |k| {
            errors.with_label_values(&[k.as_str()])
        }),
    }
});

/// Upstream connection metrics.
pub fn upstream() -> &'static Upstream {
    &UPSTREAM
}

impl Upstream {
    /// A forwarded request got its upstream connection; `connect`: how long a new one took to
    /// establish (`None` for a pooled one, or when it was not measured).
    pub fn connected(&self, reused: bool, connect: Option<Duration>) {
        self.connections[usize::from(reused)].inc();
        if let (false, Some(d)) = (reused, connect) {
            self.connect_duration.observe(d.as_secs_f64());
        }
    }

    /// A forwarded request failed because of its upstream.
    pub fn error(&self, kind: UpstreamErrorKind) {
        self.errors[kind.index()].inc();
    }
}

// ---------------------------------------------------------------------------------------------
// Route lookups and the route store's cache.

label_enum! {
    /// The answer of a route lookup, as the request path saw it.
    pub enum LookupResult {
        Found => "found",
        NotFound => "not_found",
        Unavailable => "unavailable",
        Invalid => "invalid",
    }
}

static ROUTE_LOOKUPS: LazyLock<Box<[IntCounter]>> = LazyLock::new(|| {
    let v = counter_vec(
        "hubify_route_lookups_total",
        "Route lookups by the request path, by result (whatever the store: static or Redis).",
        &["result"],
    );
    by(LookupResult::ALL, |r| v.with_label_values(&[r.as_str()]))
});

/// Counts one route lookup of the request path.
pub fn route_lookup(result: LookupResult) {
    ROUTE_LOOKUPS[result.index()].inc();
}

label_enum! {
    /// The result of the access check of a protected path (see `auth`).
    pub enum AuthResult {
        /// A valid token or session with the scope: forwarded (or the session set).
        Ok => "ok",
        /// No token and no session.
        Missing => "missing",
        /// The token or session is past its expiry.
        Expired => "expired",
        /// Malformed, unknown `kid`, bad signature, too long a lifetime, a revoked session.
        Invalid => "invalid",
        /// Valid, but for another workspace or without the path's scope.
        Forbidden => "forbidden",
        /// A WebSocket handshake from another origin.
        Origin => "origin",
    }
}

static AUTH: LazyLock<Box<[IntCounter]>> = LazyLock::new(|| {
    let v = counter_vec(
        "hubify_auth_total",
        "Access checks of protected path rules, by result.",
        &["result"],
    );
    by(AuthResult::ALL, |r| v.with_label_values(&[r.as_str()]))
});

/// Counts one access check.
pub fn auth(result: AuthResult) {
    AUTH[result.index()].inc();
}

label_enum! {
    /// Which of a workspace's limits refused a request.
    pub enum LimitKind {
        /// Requests per second (the token bucket is empty).
        Rate => "rate",
        /// Concurrent requests.
        Concurrency => "concurrency",
        /// Open WebSockets.
        Websockets => "websockets",
    }
}

static LIMITED: LazyLock<Box<[IntCounter]>> = LazyLock::new(|| {
    let v = counter_vec(
        "hubify_limited_total",
        "Requests refused with 429 because their workspace is beyond one of its limits \
         (per replica), by limit.",
        &["kind"],
    );
    by(LimitKind::ALL, |k| v.with_label_values(&[k.as_str()]))
});

/// Counts one request refused by a workspace limit.
pub fn limited(kind: LimitKind) {
    LIMITED[kind.index()].inc();
}

/// Counters and gauges of the route cache and its Redis store. One process-wide instance,
/// [`ROUTE_CACHE`]; tests give a cache its own (leaked) instance.
#[derive(Debug, Default)]
pub struct RouteCacheMetrics {
    /// Lookups answered from a fresh cache entry.
    pub hits: AtomicU64,
    /// Lookups with nothing usable cached (they wait for a store read).
    pub misses: AtomicU64,
    /// Lookups whose entry was past its TTL or from before a pub/sub gap (re-read from the store).
    pub revalidations: AtomicU64,
    /// Lookups answered with a route past its TTL because the store failed (stale-if-error).
    pub stale_served: AtomicU64,
    /// Lookups answered "unavailable" (store failed, nothing usable cached).
    pub unavailable: AtomicU64,
    /// Store reads started (one per single-flight, however many requests wait on it).
    pub fetches: AtomicU64,
    /// Store reads that failed or timed out.
    pub fetch_errors: AtomicU64,
    /// Entries evicted to stay within the capacity.
    pub evictions: AtomicU64,
    /// Invalidation events received (one per label published on the events channel).
    pub invalidations: AtomicU64,
    /// Pub/sub (re)subscriptions; each one marks every cached entry for revalidation.
    pub resubscribes: AtomicU64,
    /// Entries in the cache now.
    pub entries: AtomicI64,
    /// The configured capacity.
    pub capacity: AtomicI64,
    /// 1 while the invalidation subscription is up.
    pub subscribed: AtomicI64,
    /// 1 while the data connection to the store is up.
    pub connected: AtomicI64,
}

impl RouteCacheMetrics {
    /// The static store (routes from the file) is always connected and up to date.
    pub fn static_store(&self) {
        self.connected.store(1, Relaxed);
        self.subscribed.store(1, Relaxed);
    }

    pub const fn new() -> RouteCacheMetrics {
        RouteCacheMetrics {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            revalidations: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            fetch_errors: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            resubscribes: AtomicU64::new(0),
            entries: AtomicI64::new(0),
            capacity: AtomicI64::new(0),
            subscribed: AtomicI64::new(0),
            connected: AtomicI64::new(0),
        }
    }

    /// A fresh instance that lives for the rest of the process (for tests and benches).
    pub fn leak() -> &'static RouteCacheMetrics {
        Box::leak(Box::new(RouteCacheMetrics::new()))
    }

    /// Appends the text exposition of these metrics.
    pub fn render_into(&self, out: &mut String) {
        let counters: [(&str, &AtomicU64, &str); 10] = [
            (
                "hits",
                &self.hits,
                "Route lookups answered from a fresh cache entry.",
            ),
            (
                "misses",
                &self.misses,
                "Route lookups with nothing usable cached.",
            ),
            (
                "revalidations",
                &self.revalidations,
                "Route lookups that re-read an expired or suspect entry.",
            ),
            (
                "stale_served",
                &self.stale_served,
                "Routes served past their TTL because the store failed.",
            ),
            (
                "unavailable",
                &self.unavailable,
                "Route lookups answered unavailable (503).",
            ),
            (
                "fetches",
                &self.fetches,
                "Route store reads (one per single-flight).",
            ),
            (
                "fetch_errors",
                &self.fetch_errors,
                "Route store reads that failed or timed out.",
            ),
            (
                "evictions",
                &self.evictions,
                "Route cache entries evicted for capacity.",
            ),
            (
                "invalidations",
                &self.invalidations,
                "Route invalidation events received.",
            ),
            (
                "resubscribes",
                &self.resubscribes,
                "Route event (re)subscriptions.",
            ),
        ];
        for (name, v, help) in counters {
            let _ = writeln!(out, "# HELP hubify_route_cache_{name}_total {help}");
            let _ = writeln!(out, "# TYPE hubify_route_cache_{name}_total counter");
            let _ = writeln!(out, "hubify_route_cache_{name}_total {}", v.load(Relaxed));
        }
        let gauges: [(&str, &AtomicI64, &str); 4] = [
            ("entries", &self.entries, "Route cache entries."),
            ("capacity", &self.capacity, "Route cache capacity."),
            (
                "subscribed",
                &self.subscribed,
                "1 while the route event subscription is up.",
            ),
            (
                "connected",
                &self.connected,
                "1 while the route store connection is up.",
            ),
        ];
        for (name, v, help) in gauges {
            let _ = writeln!(out, "# HELP hubify_route_cache_{name} {help}");
            let _ = writeln!(out, "# TYPE hubify_route_cache_{name} gauge");
            let _ = writeln!(out, "hubify_route_cache_{name} {}", v.load(Relaxed));
        }
    }
}

/// The route cache metrics of this process.
pub static ROUTE_CACHE: RouteCacheMetrics = RouteCacheMetrics::new();

// ---------------------------------------------------------------------------------------------
// 6PN DNS and machine wakes.

label_enum! {
    /// The result of a 6PN AAAA lookup.
    pub enum DnsResult {
        /// An address came back.
        Found => "found",
        /// NXDOMAIN or no AAAA record (the machine is stopped or gone).
        NotFound => "not_found",
        /// The resolver did not answer in time.
        Timeout => "timeout",
        /// Any other failure (SERVFAIL, network error, bad reply).
        Error => "error",
    }
}

label_enum! {
    /// The result of waking a stopped machine.
    pub enum WakeResult {
        /// The machine was started and is reachable.
        Started => "started",
        /// It was already running (nothing to do).
        AlreadyRunning => "already_running",
        /// It did not become reachable within `[fly] wake_timeout`.
        Timeout => "timeout",
        /// The Machines API refused or failed.
        Error => "error",
    }
}

struct FlyMetrics {
    dns: Box<[Histogram]>,
    wakes: Box<[Histogram]>,
    pending: IntGauge,
}

static FLY: LazyLock<FlyMetrics> = LazyLock::new(|| {
    let dns = histogram_vec(
        "hubify_sixpn_dns_lookup_duration_seconds",
        "6PN AAAA lookups (<machine>.vm.<app>.internal), by result; _count is the lookup count.",
        &["result"],
        SECONDS_CONNECT,
    );
    let wakes = histogram_vec(
        "hubify_machine_wake_duration_seconds",
        "Machine wakes (start a stopped machine and wait until it is reachable), by result; \
         _count is the wake count.",
        &["result"],
        SECONDS_WAKE,
    );
    let pending = register(
        IntGauge::new(
            "hubify_wake_pending",
            "Requests waiting now for a machine being started (at most fly.wake_max_pending per \
             machine).",
        )
        .unwrap_or_else(|e| invalid("hubify_wake_pending", e)),
    );
    FlyMetrics {
        pending,
        dns: by(DnsResult::ALL, |r| dns.with_label_values(&[r.as_str()])),
        wakes: by(WakeResult::ALL, |r| wakes.with_label_values(&[r.as_str()])),
    }
});

/// One 6PN DNS lookup finished.
pub fn dns_lookup(result: DnsResult, duration: Duration) {
    FLY.dns[result.index()].observe(duration.as_secs_f64());
}

/// Counts a request waiting for a wake until dropped.
pub struct WakeWaiting(());

impl WakeWaiting {
    pub fn enter() -> WakeWaiting {
        FLY.pending.inc();
        WakeWaiting(())
    }
}

impl Drop for WakeWaiting {
    fn drop(&mut self) {
        FLY.pending.dec();
    }
}

/// One machine wake finished.
pub fn machine_wake(result: WakeResult, duration: Duration) {
    FLY.wakes[result.index()].observe(duration.as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// TLS: handshakes, certificates, renewals.

label_enum! {
    /// The result of a TLS handshake on the public listener.
    pub enum HandshakeResult {
        Ok => "ok",
        /// The handshake failed (bad ClientHello, no certificate, protocol error, not TLS at all).
        Error => "error",
        /// The client did not finish the handshake within Pingora's 60 s.
        Timeout => "timeout",
    }
}

label_enum! {
    /// The TLS version a handshake agreed on (`none`: it did not complete).
    pub enum TlsVersion {
        V12 => "1.2",
        V13 => "1.3",
        None => "none",
    }
}

impl TlsVersion {
    /// From rustls's name of the version (`TLSv1_3`, `TLSv1.3`).
    pub fn of(name: Option<&str>) -> TlsVersion {
        match name.map(|n| n.trim_start_matches("TLSv").replace('_', ".")) {
            Some(v) if v == "1.2" => TlsVersion::V12,
            Some(v) if v == "1.3" => TlsVersion::V13,
            _ => TlsVersion::None,
        }
    }
}

label_enum! {
    /// The result of a certificate renewal (or first issuance).
    pub enum RenewalResult {
        Ok => "ok",
        Error => "error",
    }
}

struct TlsMetrics {
    /// By result, then version.
    handshakes: Box<[Box<[IntCounter]>]>,
    not_after: GaugeVec,
    renewals: Box<[IntCounter]>,
}

static TLS: LazyLock<TlsMetrics> = LazyLock::new(|| {
    let handshakes = counter_vec(
        "hubify_tls_handshakes_total",
        "TLS handshakes on the public listener, by result and agreed version.",
        &["result", "version"],
    );
    let renewals = counter_vec(
        "hubify_tls_renewals_total",
        "Certificate orders (renewal or first issuance) by result.",
        &["result"],
    );
    TlsMetrics {
        handshakes: by(HandshakeResult::ALL, |r| {
            by(TlsVersion::ALL, |v| {
                handshakes.with_label_values(&[r.as_str(), v.as_str()])
            })
        }),
        not_after: GaugeVec::new(
            Opts::new(
                "hubify_tls_certificate_not_after_seconds",
                "Expiry (Unix time) of the certificate served for each name it covers.",
            ),
            &["name"],
        )
        .map(register)
        .unwrap_or_else(|e| invalid("hubify_tls_certificate_not_after_seconds", e)),
        renewals: by(RenewalResult::ALL, |r| {
            renewals.with_label_values(&[r.as_str()])
        }),
    }
});

/// Counts one TLS handshake.
pub fn tls_handshake(result: HandshakeResult, version: TlsVersion) {
    TLS.handshakes[result.index()][version.index()].inc();
}

/// Sets the expiry of the certificate served for `name` (a configured certificate name such as
/// `*.hubify.com`).
pub fn cert_not_after(name: &str, unix_secs: i64) {
    TLS.not_after
        .with_label_values(&[name])
        .set(unix_secs as f64);
}

/// Replaces the certificate gauges with what is loaded now: one series per name; when several
/// certificates cover a name, the first (the one the resolver serves) wins.
pub fn set_certificates(infos: &[hubify_edge_acme::CertInfo]) {
    let mut seen: Vec<&str> = Vec::new();
    let mut series: Vec<(&str, i64)> = Vec::new();
    for info in infos {
        let secs = match info.not_after.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(_) => 0,
        };
        for name in &info.names {
            if !seen.contains(&name.as_str()) {
                seen.push(name);
                series.push((name, secs));
            }
        }
    }
    TLS.not_after.reset();
    for (name, secs) in series {
        cert_not_after(name, secs);
    }
}

/// Counts one certificate order.
pub fn renewal(result: RenewalResult) {
    TLS.renewals[result.index()].inc();
}

// ---------------------------------------------------------------------------------------------
// Process.

struct ProcessMetrics {
    build_info: IntGaugeVec,
    start_time: Gauge,
}

static PROCESS: LazyLock<ProcessMetrics> = LazyLock::new(|| ProcessMetrics {
    build_info: IntGaugeVec::new(
        Opts::new(
            "hubify_build_info",
            "Always 1; the labels say which build is running.",
        ),
        &["version", "git_commit"],
    )
    .map(register)
    .unwrap_or_else(|e| invalid("hubify_build_info", e)),
    start_time: register(
        Gauge::with_opts(Opts::new(
            "hubify_start_time_seconds",
            "When the router started (Unix time).",
        ))
        .unwrap_or_else(|e| invalid("hubify_start_time_seconds", e)),
    ),
});

label_enum! {
    /// The result of a configuration reload (SIGHUP).
    pub enum ReloadResult {
        /// The new file is in force.
        Ok => "ok",
        /// The file did not load or failed the checks `check` makes: the running one stays.
        Error => "error",
        /// The file changes keys that need a restart: the running one stays.
        Refused => "refused",
    }
}

struct OpsMetrics {
    reloads: Box<[IntCounter]>,
    last_reload: Gauge,
    ready: IntGauge,
    in_flight: Box<[IntGauge]>,
    connections: Box<[IntGauge]>,
    cpu: prometheus::Counter,
}

static OPS: LazyLock<OpsMetrics> = LazyLock::new(|| {
    let reloads = counter_vec(
        "hubify_config_reloads_total",
        "Configuration reloads (SIGHUP), by result.",
        &["result"],
    );
    let gauge = |name: &str, help: &str| {
        register(Gauge::with_opts(Opts::new(name, help)).unwrap_or_else(|e| invalid(name, e)))
    };
    let int_gauge = |name: &str, help: &str| {
        register(IntGauge::with_opts(Opts::new(name, help)).unwrap_or_else(|e| invalid(name, e)))
    };
    let per_listener = |name: &str, help: &str| {
        let vec = register(
            IntGaugeVec::new(Opts::new(name, help), &["listener"])
                .unwrap_or_else(|e| invalid(name, e)),
        );
        by(Listener::ALL, |l| vec.with_label_values(&[l.as_str()]))
    };
    OpsMetrics {
        reloads: by(ReloadResult::ALL, |r| {
            reloads.with_label_values(&[r.as_str()])
        }),
        last_reload: gauge(
            "hubify_config_last_reload_success_timestamp_seconds",
            "When the configuration in force was loaded (Unix time): the start, or the last \
             successful reload.",
        ),
        ready: int_gauge(
            "hubify_ready",
            "1 while /readyz answers 200 (evaluated at each scrape), else 0.",
        ),
        in_flight: per_listener(
            "hubify_requests_in_flight",
            "Requests being served now (open WebSockets included), by listener.",
        ),
        connections: per_listener(
            "hubify_connections_open",
            "Client connections open now, by listener.",
        ),
        cpu: {
            let name = "hubify_process_cpu_seconds_total";
            register(
                prometheus::Counter::with_opts(Opts::new(
                    name,
                    "User and system CPU time of the process in seconds, to the microsecond (the \
                     process collector's process_cpu_seconds_total moves in whole seconds).",
                ))
                .unwrap_or_else(|e| invalid(name, e)),
            )
        },
    }
});

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Counts one configuration reload; a successful one also sets the last-success time.
pub fn config_reload(result: ReloadResult) {
    OPS.reloads[result.index()].inc();
    if result == ReloadResult::Ok {
        OPS.last_reload.set(unix_now());
    }
}

/// Whether `/readyz` would answer 200 now.
pub fn set_ready(ready: bool) {
    OPS.ready.set(i64::from(ready));
}

/// Counts a request (or an open WebSocket) in flight on `listener` until dropped.
#[derive(Debug)]
pub struct InFlightOn(Listener);

impl InFlightOn {
    pub fn enter(listener: Listener) -> InFlightOn {
        OPS.in_flight[listener.index()].inc();
        InFlightOn(listener)
    }
}

impl Drop for InFlightOn {
    fn drop(&mut self) {
        OPS.in_flight[self.0.index()].dec();
    }
}

/// Client connections open now on the https and http listeners.
pub fn connections_open() -> i64 {
    OPS.connections.iter().map(IntGauge::get).sum()
}

/// Counts an open client connection on `listener` until dropped.
#[derive(Debug)]
pub struct ConnectionOpen(Listener);

impl ConnectionOpen {
    pub fn enter(listener: Listener) -> ConnectionOpen {
        OPS.connections[listener.index()].inc();
        ConnectionOpen(listener)
    }
}

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        OPS.connections[self.0.index()].dec();
    }
}

/// Advances the CPU counter to the process's CPU time (getrusage: user + system, microseconds).
fn refresh_cpu() {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return;
    };
    let total = (usage.user_time().num_microseconds() + usage.system_time().num_microseconds())
        as f64
        / 1e6;
    // Scrapes may run concurrently: one at a time reads and advances the counter.
    static ADVANCE: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _one = ADVANCE.lock();
    let delta = total - OPS.cpu.get();
    if delta > 0.0 {
        OPS.cpu.inc_by(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(101).as_str(), "1xx");
        assert_eq!(StatusClass::of(200).as_str(), "2xx");
        assert_eq!(StatusClass::of(308).as_str(), "3xx");
        assert_eq!(StatusClass::of(404).as_str(), "4xx");
        assert_eq!(StatusClass::of(421).as_str(), "4xx");
        assert_eq!(StatusClass::of(502).as_str(), "5xx");
        assert_eq!(StatusClass::of(599).as_str(), "5xx");
        assert_eq!(StatusClass::of(0).as_str(), "none");
        assert_eq!(StatusClass::of(600).as_str(), "none");
        assert_eq!(StatusClass::of(99).as_str(), "none");
    }

    #[test]
    fn outcome_names_round_trip_and_unknown_is_other() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_name(o.as_str()), *o);
        }
        assert_eq!(Outcome::from_name("forward"), Outcome::Forward);
        assert_eq!(Outcome::from_name("something-new"), Outcome::Other);
        assert_eq!(Outcome::from_name(""), Outcome::Other);
    }

    #[test]
    fn enum_indexes_follow_declaration_order() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
        for (i, c) in StatusClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        for (i, k) in UpstreamErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn upstream_error_kinds() {
        use pingora_error::{Error, ErrorType};
        let refused = Error::new(ErrorType::ConnectRefused);
        assert_eq!(
            UpstreamErrorKind::of(&refused),
            Some(UpstreamErrorKind::ConnectRefused)
        );
        let read = Error::new_up(ErrorType::ReadTimedout);
        assert_eq!(
            UpstreamErrorKind::of(&read),
            Some(UpstreamErrorKind::ReadTimeout)
        );
        let client_gone = Error::new_down(ErrorType::ConnectionClosed);
        assert_eq!(UpstreamErrorKind::of(&client_gone), None);
        let internal = Error::new(ErrorType::InternalError);
        assert_eq!(UpstreamErrorKind::of(&internal), None);
    }

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn request_table_exports_only_what_happened_with_bounded_labels() {
        let m = RequestMetrics::new(Listener::Http, &["unit_a", "unit_b"]);
        m.request(
            Outcome::Forward,
            Some(1),
            204,
            Some(Duration::from_millis(3)),
        );
        m.request(
            Outcome::Forward,
            Some(1),
            200,
            Some(Duration::from_millis(3)),
        );
        m.request(Outcome::NotFound, None, 404, Some(Duration::from_millis(1)));
        // An index past the configured rules falls back to "none" rather than panicking.
        m.request(Outcome::Error, Some(99), 502, None);
        let text = render();
        assert_eq!(
            line_value(
                &text,
                r#"hubify_requests_total{listener="http",outcome="forward",rule="unit_b",status_class="2xx"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            line_value(
                &text,
                r#"hubify_requests_total{listener="http",outcome="error",rule="none",status_class="5xx"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            line_value(
                &text,
                r#"hubify_request_duration_seconds_count{outcome="forward",rule="unit_b"}"#
            ),
            Some(2.0)
        );
        assert!(
            !text.contains(r#"rule="unit_a""#),
            "unused combinations stay unexported"
        );
        assert_eq!(
            line_value(
                &text,
                r#"hubify_request_duration_seconds_count{outcome="error",rule="none"}"#
            ),
            None
        );
    }

    #[test]
    fn websocket_guard_counts_open_sessions() {
        let m = RequestMetrics::new(Listener::Https, &["unit_ws"]);
        let a = m.websocket_opened(Some(0));
        let b = m.websocket_opened(Some(0));
        let key = r#"hubify_websockets_open{rule="unit_ws"}"#;
        assert_eq!(line_value(&render(), key), Some(2.0));
        drop(a);
        assert_eq!(line_value(&render(), key), Some(1.0));
        drop(b);
        assert_eq!(line_value(&render(), key), Some(0.0));
    }

    #[test]
    fn certificate_gauges_follow_what_is_loaded() {
        let (cert, _) = hubify_edge_acme::self_signed("unit.test").expect("self-signed");
        let expected = cert
            .info
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as f64;
        set_certificates(std::slice::from_ref(&cert.info));
        let text = render();
        for name in &cert.info.names {
            let key = format!("hubify_tls_certificate_not_after_seconds{{name=\"{name}\"}}");
            assert_eq!(line_value(&text, &key), Some(expected), "{key}");
        }
        set_certificates(&[]);
        assert!(!render().contains("hubify_tls_certificate_not_after_seconds{"));
    }

    #[test]
    fn every_family_is_registered_and_build_info_is_set() {
        let text = render();
        for family in [
            "hubify_route_cache_hits_total",
            "hubify_route_cache_entries",
            "hubify_upstream_connect_duration_seconds_count",
            "hubify_start_time_seconds",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(family)),
                "{family} missing"
            );
        }
        assert!(text.contains(&format!(
            "hubify_build_info{{git_commit=\"{GIT_COMMIT}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains(r#"hubify_tls_handshakes_total{result="ok",version="1.3"}"#));
        assert!(
            text.contains(r#"hubify_sixpn_dns_lookup_duration_seconds_count{result="found"} 0"#)
        );
        assert!(text.contains(r#"hubify_machine_wake_duration_seconds_count{result="timeout"} 0"#));
    }

    #[test]
    fn renders_named_counters_and_gauges() {
        let m = RouteCacheMetrics::new();
        m.hits.fetch_add(3, Relaxed);
        m.entries.store(7, Relaxed);
        let mut s = String::new();
        m.render_into(&mut s);
        assert!(s.contains("hubify_route_cache_hits_total 3\n"), "{s}");
        assert!(
            s.contains("# TYPE hubify_route_cache_entries gauge\n"),
            "{s}"
        );
        assert!(s.contains("hubify_route_cache_entries 7\n"), "{s}");
    }
}
