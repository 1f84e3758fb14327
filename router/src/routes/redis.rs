//! Routes from Redis: the key layout, the record parser, the [`Source`] that reads records, and
//! the pub/sub listener that invalidates cached entries.
//!
//! Contract (see `docs/routes.md`): key `<prefix>:route:<label>` is a hash with `app`,
//! `machine_id` and optional `region`, `address`, `auth_epoch` (a missing key: no such workspace); channel
//! `<prefix>:route-events` carries the label of every changed or deleted route.
//!
//! All Redis I/O runs on one dedicated thread with its own current-thread tokio runtime
//! (`route-store`), independent of Pingora's runtimes: the data connection (one multiplexed
//! connection, reconnected with back-off when it breaks), the pub/sub connection (resubscribed
//! with back-off when it drops, every cached entry then revalidated), and every single-flight read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError};
use async_trait::async_trait;
use futures_util::StreamExt;
use hubify_edge_config::{is_valid_label, Config, Limits, Route};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::metrics::RouteCacheMetrics;
use crate::routes::cache::{RouteCache, Ttls};
use crate::routes::cached::{CachedStore, FetchError, Fetched, Source};

/// The key of a label's route record.
pub fn route_key(prefix: &str, label: &str) -> String {
    format!("{prefix}:route:{label}")
}

/// The `SCAN MATCH` pattern of every route key.
pub fn route_key_pattern(prefix: &str) -> String {
    format!("{prefix}:route:*")
}

/// The channel that carries the labels of changed and deleted routes.
pub fn events_channel(prefix: &str) -> String {
    format!("{prefix}:route-events")
}

/// The record fields the router reads; any other field is ignored.
pub const FIELDS: [&str; 9] = [
    "app",
    "machine_id",
    "region",
    "address",
    "auth_epoch",
    "requests_per_second",
    "burst",
    "concurrent_requests",
    "max_websockets",
];

/// Turns a route hash (field → value, as `HGETALL` returns it) into an answer. An empty hash is
/// a missing key. Malformed records are [`Fetched::Invalid`] with a detail naming the key and the
/// field; [`Route::new`] is the validator.
pub fn parse_record(key: &str, fields: &HashMap<Vec<u8>, Vec<u8>>) -> Fetched {
    if fields.is_empty() {
        return Fetched::NotFound;
    }
    let mut values: [Option<&str>; 9] = [None; 9];
    for (i, name) in FIELDS.iter().enumerate() {
        if let Some(raw) = fields.get(name.as_bytes()) {
            match std::str::from_utf8(raw) {
                Ok(v) => values[i] = Some(v),
                Err(_) => {
                    return Fetched::Invalid(format!(
                        "route record {key}: field `{name}`: not UTF-8"
                    ))
                }
            }
        }
    }
    let [app, machine_id, region, address, auth_epoch, rps, burst, concurrent, websockets] = values;
    // A malformed limit is logged and left unset (the default applies): a typo must not take
    // the workspace down.
    let limit = |field: &'static str, v: Option<&str>| {
        let v = v?;
        Limits::parse(field, v)
            .map_err(
                |e| tracing::warn!(%key, field, error = %e.message, "route record: limit ignored"),
            )
            .ok()
    };
    let limits = Limits {
        requests_per_second: limit("requests_per_second", rps),
        burst: limit("burst", burst),
        concurrent_requests: limit("concurrent_requests", concurrent),
        websockets: limit("max_websockets", websockets),
    };
    let epoch = match auth_epoch.map(str::parse::<u64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return Fetched::Invalid(format!(
                "route record {key}: field `auth_epoch`: {:?} is not a whole number",
                auth_epoch.unwrap_or_default()
            ))
        }
    };
    match Route::new(app, machine_id, region, address) {
        Ok(route) => Fetched::Found(Route {
            auth_epoch: epoch,
            limits,
            ..route
        }),
        Err(e) => Fetched::Invalid(format!(
            "route record {key}: field `{}`: {}",
            e.field, e.message
        )),
    }
}

/// A start-up failure of the Redis route store.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    #[error("routes.store = \"redis\" needs a [redis] section with its url")]
    NoRedisSection,
    #[error("redis.url: {0}")]
    Url(String),
    #[error("cannot start the route-store thread: {0}")]
    Thread(std::io::Error),
}

/// The client for `[redis] url`, with a message naming the key when the URL is unusable.
pub fn client(url: &str) -> Result<Client, RedisStoreError> {
    Client::open(url).map_err(|e| RedisStoreError::Url(format!("{url:?} is not usable: {e}")))
}

#[derive(Clone)]
struct ConnState {
    /// Connection attempts finished so far.
    attempt: u64,
    conn: Option<MultiplexedConnection>,
    /// An attempt is under way (the next state change is its outcome).
    connecting: bool,
}

/// Reads route records over one multiplexed connection, which a background task keeps up.
pub struct RedisSource {
    prefix: String,
    command_timeout: Duration,
    state: watch::Sender<ConnState>,
    /// Reports "the connection of this attempt is broken" to the maintainer.
    broken: mpsc::UnboundedSender<u64>,
    consecutive_timeouts: AtomicU32,
    metrics: &'static RouteCacheMetrics,
}

/// Consecutive timeouts after which the connection is presumed dead (half-open) and replaced.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Low enough that the store is back within a second of Redis answering again (with jitter,
/// at most 600 ms between attempts); a refused connect costs next to nothing meanwhile.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// The pub/sub connection is pinged this often; no answer in `PING_TIMEOUT` means it is dead.
const PING_INTERVAL: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }
    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
    /// The next delay: doubling up to the cap, with ±20 % jitter.
    fn next(&mut self) -> Duration {
        use rand::Rng;
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        d.mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
    }
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

impl RedisSource {
    fn report_broken(&self, attempt: u64) {
        let _ = self.broken.send(attempt);
    }

    /// Keeps the data connection up: connects, waits until a reader reports it broken,
    /// reconnects at once, and backs off while connecting fails.
    async fn maintain(
        self: Arc<Self>,
        client: Client,
        connect_timeout: Duration,
        mut broken: mpsc::UnboundedReceiver<u64>,
    ) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(connect_timeout)
            .set_response_timeout(self.command_timeout.max(Duration::from_millis(1)) * 4);
        let mut backoff = Backoff::new();
        let mut was_down = false;
        loop {
            self.state.send_modify(|s| s.connecting = true);
            let result = tokio::time::timeout(
                connect_timeout,
                client.get_multiplexed_async_connection_with_config(&config),
            )
            .await;
            let conn = match result {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    self.connect_failed(&mut was_down, &e.to_string());
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
                Err(_) => {
                    self.connect_failed(&mut was_down, "connect timed out");
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            let mut attempt = 0;
            self.state.send_modify(|s| {
                s.attempt += 1;
                attempt = s.attempt;
                s.conn = Some(conn);
                s.connecting = false;
            });
            self.consecutive_timeouts.store(0, Relaxed);
            self.metrics.connected.store(1, Relaxed);
            if was_down {
                tracing::info!("route store: connected to Redis again");
            } else {
                tracing::info!("route store: connected to Redis");
            }
            was_down = false;
            backoff.reset();
            // Until a reader reports this connection broken (stale reports are skipped).
            loop {
                match broken.recv().await {
                    Some(a) if a == attempt => break,
                    Some(_) => continue,
                    None => return,
                }
            }
            self.state.send_modify(|s| {
                s.conn = None;
                s.connecting = true;
            });
            self.metrics.connected.store(0, Relaxed);
            tracing::warn!("route store: the Redis connection broke; reconnecting");
        }
    }

    fn connect_failed(&self, was_down: &mut bool, error: &str) {
        self.state.send_modify(|s| {
            s.attempt += 1;
            s.conn = None;
            s.connecting = false;
        });
        self.metrics.connected.store(0, Relaxed);
        if !*was_down {
            tracing::warn!(
                error,
                "route store: cannot connect to Redis; retrying with back-off"
            );
            *was_down = true;
        } else {
            tracing::debug!(error, "route store: still cannot connect to Redis");
        }
    }
}

/// Waits, until `deadline`, for a connection attempt newer than `attempt` to finish.
async fn next_attempt(
    rx: &mut watch::Receiver<ConnState>,
    attempt: u64,
    deadline: Instant,
) -> Result<(), FetchError> {
    match tokio::time::timeout_at(deadline, rx.wait_for(|s| s.attempt > attempt)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(FetchError::Down),
        Err(_) => Err(FetchError::Timeout),
    }
}

#[async_trait]
impl Source for RedisSource {
    /// `HGETALL <prefix>:route:<label>`, bounded by the command timeout in all (including one
    /// retry on a fresh connection when the first try finds the connection dropped). Fails at
    /// once when the store is known to be unreachable.
    async fn fetch(&self, label: &str) -> Result<Fetched, FetchError> {
        let key = route_key(&self.prefix, label);
        let deadline = Instant::now() + self.command_timeout;
        let mut rx = self.state.subscribe();
        let mut retried = false;
        loop {
            let (attempt, conn, connecting) = {
                let s = rx.borrow_and_update();
                (s.attempt, s.conn.clone(), s.connecting)
            };
            let mut conn = match conn {
                Some(c) => c,
                None if connecting && !retried => {
                    // The first connection (or a reconnection) is under way: wait for it.
                    retried = true;
                    next_attempt(&mut rx, attempt, deadline).await?;
                    continue;
                }
                None => return Err(FetchError::Down),
            };
            let reply = tokio::time::timeout_at(
                deadline,
                ::redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async::<HashMap<Vec<u8>, Vec<u8>>>(&mut conn),
            )
            .await;
            match reply {
                Err(_) => {
                    let n = self.consecutive_timeouts.fetch_add(1, Relaxed) + 1;
                    if n >= TIMEOUTS_BEFORE_RECONNECT {
                        self.consecutive_timeouts.store(0, Relaxed);
                        self.report_broken(attempt);
                    }
                    return Err(FetchError::Timeout);
                }
                Ok(Ok(fields)) => {
                    self.consecutive_timeouts.store(0, Relaxed);
                    return Ok(parse_record(&key, &fields));
                }
                Ok(Err(e)) if e.code() == Some("WRONGTYPE") => {
                    self.consecutive_timeouts.store(0, Relaxed);
                    return Ok(Fetched::Invalid(format!(
                        "route record {key}: not a hash (WRONGTYPE)"
                    )));
                }
                Ok(Err(e)) if e.kind() == ::redis::ErrorKind::TypeError => {
                    return Ok(Fetched::Invalid(format!("route record {key}: {e}")));
                }
                Ok(Err(e)) if is_connection_error(&e) => {
                    self.report_broken(attempt);
                    if retried {
                        return Err(FetchError::Store(e.to_string()));
                    }
                    // A dropped connection fails its first command; retry once on the new one.
                    retried = true;
                    next_attempt(&mut rx, attempt, deadline).await?;
                    continue;
                }
                Ok(Err(e)) => return Err(FetchError::Store(e.to_string())),
            }
        }
    }

    /// Reachable: the data connection is up and so is the events subscription. The subscription
    /// notices a dead server at once (its socket closes, or the 5 s ping fails), while the data
    /// connection only learns it from its next failed command.
    fn is_connected(&self) -> bool {
        self.state.borrow().conn.is_some() && self.metrics.subscribed.load(Relaxed) == 1
    }
}

/// Listens on the events channel and invalidates each label published there. When the
/// subscription drops (or stops answering pings) it resubscribes with back-off; every entry
/// cached before the gap is revalidated, at the drop and again once resubscribed.
async fn listen(
    store: Arc<CachedStore>,
    client: Client,
    channel: String,
    connect_timeout: Duration,
    metrics: &'static RouteCacheMetrics,
) {
    let mut backoff = Backoff::new();
    let mut was_down = false;
    loop {
        let subscribed = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                if !was_down {
                    tracing::warn!(error = %e, %channel, "route store: cannot subscribe; retrying with back-off");
                    was_down = true;
                }
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
            Err(_) => {
                if !was_down {
                    tracing::warn!(%channel, "route store: subscribing timed out; retrying with back-off");
                    was_down = true;
                }
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        // Anything cached so far may have missed events.
        store.revalidate_all();
        metrics.resubscribes.fetch_add(1, Relaxed);
        metrics.subscribed.store(1, Relaxed);
        tracing::info!(%channel, "route store: subscribed to route events");
        was_down = false;
        backoff.reset();

        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        let payload = msg.get_payload_bytes();
                        match std::str::from_utf8(payload).map(str::trim) {
                            Ok(label) if is_valid_label(label) => store.invalidate(label),
                            _ => tracing::warn!(
                                %channel,
                                payload = %String::from_utf8_lossy(payload),
                                "route store: ignoring an event that is not a label"
                            ),
                        }
                    }
                    None => break "connection closed",
                },
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(PING_TIMEOUT, sink.ping::<::redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break "ping unanswered";
                    }
                }
            }
        };
        metrics.subscribed.store(0, Relaxed);
        store.revalidate_all();
        tracing::warn!(%channel, reason = why, "route store: route event subscription lost; resubscribing");
    }
}

/// Starts the Redis route store: the `route-store` thread and runtime, the data connection, the
/// event listener. Returns at once; the first connection is made in the background (lookups
/// meanwhile wait for it up to the command timeout).
pub fn start(config: &Config) -> Result<Arc<CachedStore>, RedisStoreError> {
    start_with_metrics(config, &crate::metrics::ROUTE_CACHE)
}

pub fn start_with_metrics(
    config: &Config,
    metrics: &'static RouteCacheMetrics,
) -> Result<Arc<CachedStore>, RedisStoreError> {
    let redis = config
        .redis
        .as_ref()
        .ok_or(RedisStoreError::NoRedisSection)?;
    let client = client(&redis.url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("route-store")
        .build()
        .map_err(RedisStoreError::Thread)?;
    let (state, _) = watch::channel(ConnState {
        attempt: 0,
        conn: None,
        connecting: true,
    });
    let (broken_tx, broken_rx) = mpsc::unbounded_channel();
    let source = Arc::new(RedisSource {
        prefix: redis.key_prefix.clone(),
        command_timeout: redis.command_timeout,
        state,
        broken: broken_tx,
        consecutive_timeouts: AtomicU32::new(0),
        metrics,
    });
    let routes = &config.routes;
    let cache = RouteCache::new(
        routes.cache_capacity,
        Ttls {
            ttl: routes.cache_ttl,
            negative_ttl: routes.negative_ttl,
            max_stale: routes.max_stale,
        },
        metrics,
    );
    // The source bounds a read by the command timeout; this is the backstop.
    let fetch_timeout = redis.command_timeout + Duration::from_millis(20);
    let dyn_source: Arc<dyn Source> = source.clone();
    let store = Arc::new(CachedStore::new(
        cache,
        dyn_source,
        runtime.handle().clone(),
        fetch_timeout,
        metrics,
    ));
    let channel = events_channel(&redis.key_prefix);
    let connect_timeout = redis.connect_timeout;
    let listener_store = store.clone();
    std::thread::Builder::new()
        .name("route-store".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(source.maintain(client.clone(), connect_timeout, broken_rx));
                listen(listener_store, client, channel, connect_timeout, metrics).await;
            })
        })
        .map_err(RedisStoreError::Thread)?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> HashMap<Vec<u8>, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn keys() {
        assert_eq!(route_key("hubify", "alice"), "hubify:route:alice");
        assert_eq!(route_key_pattern("hubify"), "hubify:route:*");
        assert_eq!(events_channel("hubify"), "hubify:route-events");
    }

    #[test]
    fn records() {
        let key = "hubify:route:alice";
        assert_eq!(parse_record(key, &HashMap::new()), Fetched::NotFound);
        let ok = parse_record(
            key,
            &record(&[
                ("app", "hubify-ws-alice"),
                ("machine_id", "90801679a10038"),
                ("region", "iad"),
                ("extra", "ignored"),
            ]),
        );
        let Fetched::Found(r) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!(r.machine_id.as_deref(), Some("90801679a10038"));
        assert_eq!(r.region.as_deref(), Some("iad"));
        for (rec, field) in [
            (record(&[("app", "a")]), "machine_id"),
            (record(&[("app", "Bad App"), ("machine_id", "m1")]), "app"),
            (record(&[("address", "not-an-ip")]), "address"),
            (record(&[("region", "iad")]), "app"),
        ] {
            match parse_record(key, &rec) {
                Fetched::Invalid(why) => {
                    assert!(why.contains(key), "{why}");
                    assert!(why.contains(&format!("`{field}`")), "{why}");
                }
                other => panic!("{rec:?}: {other:?}"),
            }
        }
        let mut bad = record(&[("machine_id", "m1")]);
        bad.insert(b"app".to_vec(), vec![0xff, 0xfe]);
        assert!(
            matches!(parse_record(key, &bad), Fetched::Invalid(w) if w.contains("`app`: not UTF-8"))
        );
    }

    #[test]
    fn tls_urls_are_supported() {
        assert!(client("rediss://127.0.0.1:6380/").is_ok());
        assert!(client("redis://127.0.0.1:6379/0").is_ok());
        let e = client("redis://127.0.0.1:notaport/").expect_err("bad url");
        assert!(e.to_string().starts_with("redis.url: "), "{e}");
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first <= BACKOFF_MIN.mul_f64(1.2));
        for _ in 0..20 {
            assert!(b.next() <= BACKOFF_MAX.mul_f64(1.2));
        }
        b.reset();
        assert!(b.next() <= BACKOFF_MIN.mul_f64(1.2));
    }
}
