//! Reaching workspace machines over Fly's private network (6PN), and waking stopped ones.
//!
//! - [`FlyNet::resolve`]: AAAA of `<machine_id>.vm.<app>.internal` on `fly.internal_dns`
//!   (hickory-resolver; answers cached for the record's TTL, "no such record" for at most
//!   [`NEGATIVE_TTL_MAX`]).
//! - [`FlyNet::address`]: resolve; when there is no record the machine is stopped, so start it
//!   through the Machines API (one `start` per machine however many requests wait: single flight),
//!   wait for `started`, wait for its AAAA record, then retry a TCP connection briefly because
//!   "started" is not "ready". Each request waits at most `fly.wake_timeout`.
//!
//! Every failure is a [`FlyError`] that says which HTTP answer the client gets; the wake task logs
//! API failures once per wake, with the status and the API's own words.

use crate::metrics;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use http_body_util::{BodyExt, Empty, Limited};
use hubify_edge_config::Fly;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, timeout_at, Instant};

/// Longest time a "no such machine record" answer is cached: a machine that just started must
/// not stay unreachable for long.
pub const NEGATIVE_TTL_MAX: Duration = Duration::from_secs(2);
/// Longest time a positive answer is cached, whatever the record says.
pub const POSITIVE_TTL_MAX: Duration = Duration::from_secs(60);
/// One DNS query's timeout (the 6PN resolver is local to the host).
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// One Machines API call's timeout, beyond the `wait` call's own server-side timeout.
const API_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of an API error body that goes into a log line.
const API_BODY_LOG_LIMIT: usize = 512;

/// Why a machine could not be reached; each maps to one HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlyError {
    /// The 6PN DNS server did not answer usefully (timeout, SERVFAIL, refused).
    Dns(String),
    /// The machine is (still) starting: the wait bound passed.
    Starting,
    /// The Machines API refused the token (401/403).
    ApiUnauthorized(u16),
    /// The Machines API does not know the machine (404).
    MachineNotFound,
    /// The Machines API failed (5xx, other 4xx, unreachable, timed out).
    Api(String),
    /// `fly.wake_max_pending` requests already wait for this machine.
    Busy,
    /// A browser navigation to a stopped machine with `fly.wake_page`: the wake runs on, the
    /// browser gets the "Starting your workspace…" page at once.
    WakePage,
}

impl FlyError {
    /// The status, page text, outcome label and whether a `Retry-After` goes with it.
    pub fn answer(&self) -> (u16, &'static str, crate::metrics::Outcome, bool) {
        match self {
            FlyError::Dns(_) => (
                503,
                "The private network's DNS did not answer; try again in a few seconds.",
                crate::metrics::Outcome::DnsError,
                true,
            ),
            FlyError::Starting => (
                503,
                "The workspace is starting. This page will work again in a few seconds.",
                crate::metrics::Outcome::Starting,
                true,
            ),
            FlyError::ApiUnauthorized(_) => (
                502,
                "The router is not allowed to start this workspace (its Fly API token was \
                 refused).",
                crate::metrics::Outcome::WakeUnauthorized,
                false,
            ),
            FlyError::MachineNotFound => (
                502,
                "The workspace machine was not found: its route points at a machine that does \
                 not exist.",
                crate::metrics::Outcome::MachineNotFound,
                false,
            ),
            FlyError::Api(_) => (
                503,
                "The workspace is stopped and could not be started right now (Fly's Machines \
                 API failed); try again shortly.",
                crate::metrics::Outcome::WakeFailed,
                true,
            ),
            FlyError::Busy => (
                503,
                "The workspace is starting and many requests already wait for it; try again in \
                 a few seconds.",
                crate::metrics::Outcome::Starting,
                true,
            ),
            FlyError::WakePage => (
                200,
                "Starting your workspace… This page reloads itself until it is ready.",
                crate::metrics::Outcome::Starting,
                false,
            ),
        }
    }
}

/// The outcome of one wake, shared by all requests waiting for it.
type WakeOutcome = Result<Ipv6Addr, FlyError>;
type MachineKey = (Arc<str>, Arc<str>);

/// The 6PN resolver, the Machines API client and the wakes in flight.
pub struct FlyNet {
    resolver: TokioResolver,
    api: MachinesApi,
    wake_timeout: Duration,
    wake_max_pending: usize,
    wake_page: bool,
    connect_timeout: Duration,
    wakes: Arc<Mutex<Wakes>>,
    /// Machines a wake just started, with the address it found and when: used while 6PN DNS
    /// has not published the record yet, for as long as a positive answer is cached.
    woken: Arc<Mutex<HashMap<MachineKey, (Ipv6Addr, Instant)>>>,
}

/// How long a woken machine's address stands in for a missing AAAA record (the record's TTL on
/// Fly is a few seconds).
const WOKEN_TTL: Duration = Duration::from_secs(5);

/// A wake in flight: its outcome when it comes, and how many requests wait for it.
#[derive(Clone)]
struct Wake {
    outcome: watch::Receiver<Option<WakeOutcome>>,
    waiting: Arc<AtomicUsize>,
}

type Wakes = HashMap<MachineKey, Wake>;

/// One request's place among a wake's waiters, given back when dropped.
struct Waiter {
    waiting: Arc<AtomicUsize>,
    _gauge: metrics::WakeWaiting,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `<machine_id>.vm.<app>.internal.` — both parts are checked again here (route records are
/// validated on the way in; this is the second line).
pub fn machine_name(app: &str, machine_id: &str) -> Option<String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && !s.starts_with('-')
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    };
    (ok(app) && ok(machine_id)).then(|| format!("{machine_id}.vm.{app}.internal."))
}

impl FlyNet {
    /// Builds the resolver and the API client; no I/O happens until a request needs it.
    /// The bearer token comes from `FLY_API_TOKEN`.
    pub fn new(fly: &Fly, connect_timeout: Duration) -> Result<FlyNet, String> {
        let mut ns = NameServerConfig::new(
            fly.internal_dns.ip(),
            true,
            vec![ConnectionConfig::udp(), ConnectionConfig::tcp()],
        );
        for c in &mut ns.connections {
            c.port = fly.internal_dns.port();
        }
        let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
        let mut opts = ResolverOpts::default();
        opts.timeout = DNS_TIMEOUT;
        opts.attempts = 1;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ndots = 0;
        opts.negative_max_ttl = Some(NEGATIVE_TTL_MAX);
        opts.positive_max_ttl = Some(POSITIVE_TTL_MAX);
        opts.cache_size = 16_384;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| format!("6PN resolver: {e}"))?;
        let token = std::env::var("FLY_API_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        let api = MachinesApi::new(&fly.machines_api, token)?;
        Ok(FlyNet {
            resolver,
            api,
            wake_timeout: fly.wake_timeout,
            wake_max_pending: fly.wake_max_pending,
            wake_page: fly.wake_page,
            connect_timeout,
            wakes: Arc::new(Mutex::new(HashMap::new())),
            woken: Arc::default(),
        })
    }

    /// The machine's 6PN address: `Ok(None)` when there is no AAAA record (NXDOMAIN or no
    /// data: the machine is stopped or gone).
    pub async fn resolve(&self, app: &str, machine_id: &str) -> Result<Option<Ipv6Addr>, FlyError> {
        let Some(name) = machine_name(app, machine_id) else {
            return Err(FlyError::Dns(format!(
                "invalid machine name {machine_id:?} / {app:?}"
            )));
        };
        self.lookup(&name).await
    }

    async fn lookup(&self, name: &str) -> Result<Option<Ipv6Addr>, FlyError> {
        let start = Instant::now();
        let result = lookup_aaaa(&self.resolver, name).await;
        let label = match &result {
            Ok(Some(_)) => metrics::DnsResult::Found,
            Ok(None) => metrics::DnsResult::NotFound,
            Err(FlyError::Dns(why)) if why.contains("timed out") || why.contains("timeout") => {
                metrics::DnsResult::Timeout
            }
            Err(_) => metrics::DnsResult::Error,
        };
        metrics::dns_lookup(label, start.elapsed());
        result
    }

    /// The address to connect to for `port` on the machine, starting it when it is stopped.
    /// `navigation`: the request is a browser's page load (with `fly.wake_page` it gets the
    /// starting page instead of waiting). At most `fly.wake_max_pending` requests wait for one
    /// wake; the others get [`FlyError::Busy`] at once. With the address: how long this request
    /// waited for a wake (`None`: the machine was running).
    pub async fn address(
        &self,
        app: &Arc<str>,
        machine_id: &Arc<str>,
        port: u16,
        navigation: bool,
    ) -> Result<(Ipv6Addr, Option<Duration>), FlyError> {
        if let Some(ip) = self.resolve(app, machine_id).await? {
            return Ok((ip, None));
        }
        if let Some(ip) = self.recently_woken(app, machine_id) {
            return Ok((ip, None));
        }
        let waited = Instant::now();
        let deadline = waited + self.wake_timeout;
        let wake = self.join_wake(app, machine_id);
        if navigation && self.wake_page {
            // The wake goes on without this request; the page reloads until it is done.
            return Err(FlyError::WakePage);
        }
        let taken = wake
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.wake_max_pending).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(FlyError::Busy);
        }
        let _waiter = Waiter {
            waiting: wake.waiting.clone(),
            _gauge: metrics::WakeWaiting::enter(),
        };
        let mut rx = wake.outcome;
        let outcome = match timeout_at(deadline, rx.wait_for(|v| v.is_some())).await {
            Err(_) => return Err(FlyError::Starting),
            Ok(Err(_)) => {
                return Err(FlyError::Api(
                    "the wake task ended without an answer".into(),
                ))
            }
            Ok(Ok(v)) => v.clone(),
        };
        let ip = match outcome {
            Some(r) => r?,
            None => return Err(FlyError::Starting),
        };
        // "started" is not "ready": retry the connection briefly, within the same bound.
        let addr = SocketAddr::new(IpAddr::V6(ip), port);
        let mut pause = Duration::from_millis(50);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(%app, machine = %machine_id, %addr, "machine started but not accepting connections within fly.wake_timeout");
                return Err(FlyError::Starting);
            }
            let probe = timeout(
                left.min(self.connect_timeout),
                tokio::net::TcpStream::connect(addr),
            );
            if let Ok(Ok(_connected)) = probe.await {
                return Ok((ip, Some(waited.elapsed())));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The address a wake of this machine found less than [`WOKEN_TTL`] ago.
    fn recently_woken(&self, app: &Arc<str>, machine_id: &Arc<str>) -> Option<Ipv6Addr> {
        let key: MachineKey = (app.clone(), machine_id.clone());
        let mut woken = self.woken.lock().unwrap_or_else(|p| p.into_inner());
        match woken.get(&key) {
            Some((ip, at)) if at.elapsed() < WOKEN_TTL => Some(*ip),
            Some(_) => {
                woken.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Joins the wake of this machine, starting one when none is in flight.
    fn join_wake(&self, app: &Arc<str>, machine_id: &Arc<str>) -> Wake {
        let key: MachineKey = (app.clone(), machine_id.clone());
        let mut wakes = lock(&self.wakes);
        if let Some(wake) = wakes.get(&key) {
            return wake.clone();
        }
        let (tx, rx) = watch::channel(None);
        let wake = Wake {
            outcome: rx,
            waiting: Arc::default(),
        };
        wakes.insert(key.clone(), wake.clone());
        drop(wakes);
        tracing::info!(app = %key.0, machine = %key.1, "machine has no 6PN address: starting it");
        let me = WakeJob {
            api: self.api.clone(),
            resolver: self.resolver.clone(),
            wake_timeout: self.wake_timeout,
        };
        let wakes = self.wakes.clone();
        let woken = self.woken.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let outcome = me.run(&key.0, &key.1).await;
            if let Ok(ip) = &outcome {
                let mut woken = woken.lock().unwrap_or_else(|p| p.into_inner());
                woken.retain(|_, (_, at)| at.elapsed() < WOKEN_TTL);
                woken.insert(key.clone(), (*ip, Instant::now()));
            }
            let result = match &outcome {
                Ok(_) => metrics::WakeResult::Started,
                Err(FlyError::Starting) => metrics::WakeResult::Timeout,
                Err(_) => metrics::WakeResult::Error,
            };
            metrics::machine_wake(result, start.elapsed());
            let _ = tx.send(Some(outcome));
            lock(&wakes).remove(&key);
        });
        wake
    }

    /// Number of wakes in flight (for tests and metrics).
    pub fn wakes_in_flight(&self) -> usize {
        lock(&self.wakes).len()
    }
}

fn lock(m: &Mutex<Wakes>) -> std::sync::MutexGuard<'_, Wakes> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One wake: start, wait for `started`, then the machine's `private_ip` from the API (else wait
/// for the AAAA record).
struct WakeJob {
    api: MachinesApi,
    resolver: TokioResolver,
    wake_timeout: Duration,
}

impl WakeJob {
    async fn run(&self, app: &str, machine_id: &str) -> WakeOutcome {
        let Some(name) = machine_name(app, machine_id) else {
            return Err(FlyError::MachineNotFound);
        };
        let deadline = Instant::now() + self.wake_timeout;
        self.api.start(app, machine_id).await?;
        self.api
            .wait_started(app, machine_id, self.wake_timeout)
            .await?;
        // The API knows a started machine's 6PN address at once; DNS publishes it later.
        if let Some(ip) = self.api.private_ip(app, machine_id).await {
            tracing::info!(%app, machine = %machine_id, %ip, "machine started (private_ip)");
            return Ok(ip);
        }
        // Fly publishes the AAAA record once the machine runs; poll without the cache.
        let mut pause = Duration::from_millis(25);
        loop {
            self.resolver
                .clear_lookup_cache(name.as_str(), RecordType::AAAA);
            match lookup_aaaa(&self.resolver, &name).await {
                Ok(Some(ip)) => {
                    tracing::info!(%app, machine = %machine_id, %ip, "machine started");
                    return Ok(ip);
                }
                Ok(None) => {}
                Err(FlyError::Dns(e)) => {
                    tracing::warn!(%app, machine = %machine_id, error = %e, "6PN lookup failed while waiting for a started machine")
                }
                Err(_) => {}
            }
            if Instant::now() + pause >= deadline {
                tracing::warn!(%app, machine = %machine_id, "machine is started but has no 6PN address within fly.wake_timeout");
                return Err(FlyError::Starting);
            }
            sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}

/// The first AAAA of `name`; `Ok(None)` for NXDOMAIN or no data.
async fn lookup_aaaa(resolver: &TokioResolver, name: &str) -> Result<Option<Ipv6Addr>, FlyError> {
    match resolver.ipv6_lookup(name).await {
        Ok(lookup) => Ok(lookup.answers().iter().find_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(None),
        Err(e) => Err(FlyError::Dns(dns_error_text(&e))),
    }
}

fn dns_error_text(e: &NetError) -> String {
    e.to_string()
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A small client of Fly's Machines API: `start` and `wait`, bearer token, bounded calls.
#[derive(Clone)]
pub struct MachinesApi {
    base: Arc<str>,
    authorization: Option<Arc<str>>,
    client: HttpsClient,
}

impl MachinesApi {
    /// `base` is `http://_api.internal:4280` inside Fly, `https://api.machines.dev` outside.
    pub fn new(base: &str, token: Option<String>) -> Result<MachinesApi, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(|e| format!("Machines API TLS: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(MachinesApi {
            base: Arc::from(base.trim_end_matches('/')),
            authorization: token.map(|t| Arc::from(format!("Bearer {}", t.trim()))),
            client,
        })
    }

    /// `POST /v1/apps/{app}/machines/{id}/start`.
    pub async fn start(&self, app: &str, machine_id: &str) -> Result<(), FlyError> {
        let path = format!("/v1/apps/{app}/machines/{machine_id}/start");
        let (status, body) = self
            .call(http::Method::POST, &path, API_CALL_TIMEOUT, app, machine_id)
            .await?;
        match status {
            200..=299 => Ok(()),
            _ => Err(self.failure("start", status, &body, app, machine_id)),
        }
    }

    /// `GET /v1/apps/{app}/machines/{id}/wait?state=started&timeout=<s>` (Fly caps it at 60 s).
    pub async fn wait_started(
        &self,
        app: &str,
        machine_id: &str,
        bound: Duration,
    ) -> Result<(), FlyError> {
        let secs = bound.as_secs_f64().ceil().clamp(1.0, 60.0) as u64;
        let path =
            format!("/v1/apps/{app}/machines/{machine_id}/wait?state=started&timeout={secs}");
        let (status, body) = self
            .call(
                http::Method::GET,
                &path,
                Duration::from_secs(secs) + API_CALL_TIMEOUT,
                app,
                machine_id,
            )
            .await?;
        match status {
            200..=299 => Ok(()),
            408 => {
                tracing::warn!(%app, machine = %machine_id, "Machines API wait: the machine did not reach `started` in {secs}s");
                Err(FlyError::Starting)
            }
            _ => Err(self.failure("wait", status, &body, app, machine_id)),
        }
    }

    /// `GET /v1/apps/{app}/machines/{id}`: the machine's `private_ip` (its 6PN address) when
    /// the API gives one; `None` on any failure (the caller falls back to DNS).
    pub async fn private_ip(&self, app: &str, machine_id: &str) -> Option<Ipv6Addr> {
        let path = format!("/v1/apps/{app}/machines/{machine_id}");
        let (status, body) = self
            .call(http::Method::GET, &path, API_CALL_TIMEOUT, app, machine_id)
            .await
            .ok()?;
        if !(200..300).contains(&status) {
            return None;
        }
        let machine: serde_json::Value = serde_json::from_slice(&body).ok()?;
        machine.get("private_ip")?.as_str()?.parse().ok()
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        bound: Duration,
        app: &str,
        machine_id: &str,
    ) -> Result<(u16, Bytes), FlyError> {
        let url = format!("{}{}", self.base, path);
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(url.as_str())
            .header(
                http::header::USER_AGENT,
                concat!("hubify-edge/", env!("CARGO_PKG_VERSION")),
            );
        match &self.authorization {
            Some(a) => req = req.header(http::header::AUTHORIZATION, a.as_ref()),
            None => {
                tracing::warn!("FLY_API_TOKEN is not set: calling the Machines API without a token")
            }
        }
        let req = req.body(Empty::new()).map_err(|e| {
            tracing::error!(%url, error = %e, "cannot build a Machines API request (check fly.machines_api)");
            FlyError::Api(format!("bad request URL: {e}"))
        })?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, String>((status, body))
        };
        match timeout(bound, call).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                tracing::error!(%app, machine = %machine_id, %method, %url, error = %e, "Machines API unreachable");
                Err(FlyError::Api(format!("unreachable: {e}")))
            }
            Err(_) => {
                tracing::error!(%app, machine = %machine_id, %method, %url, timeout = ?bound, "Machines API call timed out");
                Err(FlyError::Api("timed out".into()))
            }
        }
    }

    fn failure(
        &self,
        call: &str,
        status: u16,
        body: &[u8],
        app: &str,
        machine_id: &str,
    ) -> FlyError {
        let text =
            String::from_utf8_lossy(&body[..body.len().min(API_BODY_LOG_LIMIT)]).into_owned();
        match status {
            401 | 403 => {
                tracing::error!(%app, machine = %machine_id, status, body = %text, "Machines API {call}: the token was refused: check FLY_API_TOKEN (it needs rights on the workspace apps)");
                FlyError::ApiUnauthorized(status)
            }
            404 => {
                tracing::error!(%app, machine = %machine_id, status, body = %text, "Machines API {call}: machine not found (stale route?)");
                FlyError::MachineNotFound
            }
            _ => {
                tracing::error!(%app, machine = %machine_id, status, body = %text, "Machines API {call} failed");
                FlyError::Api(format!("{call}: HTTP {status}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_names() {
        assert_eq!(
            machine_name("hubify-workspace-alice", "90801679a10038").as_deref(),
            Some("90801679a10038.vm.hubify-workspace-alice.internal.")
        );
        for bad in ["", "a.b", "a;b", "A", "-a", "a b", "a\n"] {
            assert_eq!(machine_name(bad, "m1"), None, "{bad:?}");
            assert_eq!(machine_name("app", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn answers() {
        assert_eq!(FlyError::Starting.answer().0, 503);
        assert!(FlyError::Starting.answer().1.contains("starting"));
        assert!(FlyError::Starting.answer().3);
        assert_eq!(FlyError::ApiUnauthorized(401).answer().0, 502);
        assert_eq!(FlyError::MachineNotFound.answer().0, 502);
        assert!(FlyError::MachineNotFound.answer().1.contains("not found"));
        assert_eq!(FlyError::Api("x".into()).answer().0, 503);
    }

    #[test]
    fn api_urls_accept_fly_internal_host() {
        let uri: http::Uri = "http://_api.internal:4280/v1/apps/a/machines/m/start"
            .parse()
            .unwrap();
        assert_eq!(uri.host(), Some("_api.internal"));
    }
}
