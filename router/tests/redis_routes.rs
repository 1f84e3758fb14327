//! Routes from Redis, end to end: the real `hubify-edge` binary against a real `redis-server`
//! (Debian package `redis-server`) started on a free loopback port, forwarding to small upstream
//! servers on 127.0.0.1 and 127.0.0.2 (both loopback). Readiness is polled, never slept for; every
//! wait has a generous upper bound and no test asserts speed.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hubify-edge");
const DOMAIN: &str = "test.example";

// ---------------------------------------------------------------------------------------------
// Harness

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `f` every 20 ms until it returns `Some`, at most `bound`; panics naming `what`.
fn eventually<T>(what: &str, bound: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > bound {
            panic!("timed out after {bound:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `redis-server` child on a loopback port; killed on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    fn start_on(port: u16) -> RedisServer {
        RedisServer::launch(port, &[])
    }

    /// With extra `redis-server` arguments (TLS).
    fn start_with(extra: &[String]) -> RedisServer {
        RedisServer::launch(free_port(), extra)
    }

    fn launch(port: u16, extra: &[String]) -> RedisServer {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install the Debian package `redis-server`")
            });
        let mut server = RedisServer {
            port,
            child: Some(child),
        };
        eventually(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || {
                if let Some(Ok(Some(status))) = server.child.as_mut().map(|c| c.try_wait()) {
                    panic!("redis-server exited at start: {status}");
                }
                let mut c = server.try_conn()?;
                redis::cmd("PING").query::<String>(&mut c).ok()
            },
        );
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let c = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        Some(c)
    }

    fn conn(&self) -> redis::Connection {
        self.try_conn()
            .expect("a connection to the test redis-server")
    }

    fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = self.conn();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// `cmdstat_<name>:calls=N` from `INFO commandstats` (0 when absent).
    fn calls(&self, command: &str) -> u64 {
        let info: String = self.cmd(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two upstreams on one port: 127.0.0.1:P answers "one", 127.0.0.2:P answers "two". They run
/// for the rest of the test process.
fn upstreams() -> u16 {
    for _ in 0..50 {
        let Ok(first) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let port = first.local_addr().unwrap().port();
        let Ok(second) = TcpListener::bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            port,
        )) else {
            continue;
        };
        serve(first, "one");
        serve(second, "two");
        return port;
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn serve(listener: TcpListener, name: &'static str) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = s.write_all(resp.as_bytes());
            });
        }
    });
}

/// A TCP relay in front of Redis whose client→server direction can be held: bytes sent while
/// it is closed are delivered when it opens.
struct Gate {
    port: u16,
    open: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Gate {
    fn start(redis_port: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new((std::sync::Mutex::new(true), std::sync::Condvar::new()));
        let state = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let state = state.clone();
                // client → server, held while the gate is closed.
                std::thread::spawn(move || {
                    let (mut from, mut to) = (client, server);
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let (lock, cv) = &*state;
                        let mut open = lock.lock().unwrap();
                        while !*open {
                            open = cv.wait(open).unwrap();
                        }
                        drop(open);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
                // server → client.
                std::thread::spawn(move || {
                    let (mut from, mut to) = (s2, c2);
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Gate { port, open }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn set(&self, open: bool) {
        let (lock, cv) = &*self.open;
        *lock.lock().unwrap() = open;
        cv.notify_all();
    }

    fn close(&self) {
        self.set(false);
    }

    fn open(&self) {
        self.set(true);
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a new connection; `None` on any I/O failure.
fn http_get(port: u16, host: &str, path: &str) -> Option<Response> {
    http_get_with(port, host, path, "")
}

/// [`http_get`] with extra header lines (each ending in CRLF).
fn http_get_with(port: u16, host: &str, path: &str, extra: &str) -> Option<Response> {
    http_request(port, "GET", host, path, extra)
}

/// One request with `method` on a new connection.
fn http_request(port: u16, method: &str, host: &str, path: &str, extra: &str) -> Option<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The router binary on a temp config; killed on drop.
struct Router {
    child: Child,
    dir: tempfile::TempDir,
    http: u16,
    ops: u16,
}

impl Router {
    /// `routes` is extra TOML for the [routes] table; `redis` for the [redis] table.
    fn start(redis_url: &str, upstream_port: u16, redis: &str, routes: &str) -> Router {
        Router::start_env(redis_url, upstream_port, redis, routes, &[])
    }

    fn start_env(
        redis_url: &str,
        upstream_port: u16,
        redis: &str,
        routes: &str,
        env: &[(&str, &Path)],
    ) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let (http, ops) = (free_port(), free_port());
        // cache_ttl 1h unless the test sets its own.
        let routes = if routes.contains("cache_ttl") {
            routes.to_string()
        } else {
            format!("cache_ttl = \"1h\"\n{routes}")
        };
        let config = format!(
            r#"domain = "{DOMAIN}"

[server]
threads = 2
grace_period = "0s"
shutdown_timeout = "1s"

[listeners.http]
address = "127.0.0.1:{http}"
dispatch = "forward"

[ops]
address = "127.0.0.1:{ops}"

[redis]
url = "{redis_url}"
{redis}

[routes]
store = "redis"
{routes}

[[paths]]
prefix = "/"
port = {upstream_port}

[log]
level = "info"
"#
        );
        let cfg = dir.path().join("router.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("router.log")).unwrap();
        let child = Command::new(BIN)
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the hubify-edge binary runs");
        let mut router = Router {
            child,
            dir,
            http,
            ops,
        };
        eventually("the router's /healthz", Duration::from_secs(20), || {
            if let Ok(Some(status)) = router.child.try_wait() {
                panic!("the router exited at start: {status}\n{}", router.log());
            }
            http_get(router.ops, "localhost", "/healthz").filter(|r| r.status == 200)
        });
        router
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("router.toml")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("router.log")).unwrap_or_default()
    }

    fn get(&self, label: &str) -> Option<Response> {
        http_get(self.http, &format!("{label}.{DOMAIN}"), "/")
    }

    /// The body of a 200 for `label`, or the status as text.
    fn answer(&self, label: &str) -> String {
        match self.get(label) {
            Some(r) if r.status == 200 => r.body,
            Some(r) => r.status.to_string(),
            None => "no response".into(),
        }
    }

    fn wait_answer(&self, label: &str, want: &str, bound: Duration) -> Duration {
        let start = Instant::now();
        let mut last = String::new();
        let found = eventually_quiet(bound, || {
            last = self.answer(label);
            (last == want).then_some(())
        });
        assert!(
            found.is_some(),
            "{label}: wanted {want:?} within {bound:?}, last answer {last:?}\n--- router log ---\n{}",
            self.log()
        );
        start.elapsed()
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let r = http_get(self.ops, "localhost", "/metrics")?;
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    fn wait_metric(&self, name: &str, bound: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        eventually(&format!("metric {name}"), bound, || {
            self.metric(name).filter(|v| ok(*v))
        })
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually_quiet(bound: Duration, mut f: impl FnMut() -> Option<()>) -> Option<()> {
    let start = Instant::now();
    loop {
        if f().is_some() {
            return Some(());
        }
        if start.elapsed() > bound {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `hubify-edge --config <cfg> routes <args>`.
fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("routes")
        .args(args)
        .output()
        .expect("the hubify-edge binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cli_ok(config: &Path, args: &[&str]) -> String {
    let out = cli(config, args);
    assert!(
        out.status.success(),
        "routes {args:?} failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `hubify-edge routes set LABEL --app APP --machine MACHINE --address ADDRESS`, which must succeed.
fn set_route(config: &Path, label: &str, app: &str, machine: &str, address: &str) -> String {
    cli_ok(
        config,
        &[
            "set",
            label,
            "--app",
            app,
            "--machine",
            machine,
            "--address",
            address,
        ],
    )
}

const BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Tests

/// Set → served; changed → the new target, long before the 1 h TTL; deleted → 404.
#[test]
fn set_change_delete_follow_redis_at_once() {
    let redis = RedisServer::start();
    let up = upstreams();
    let router = Router::start(&redis.url(), up, "", "");
    let cfg = router.config();

    assert_eq!(router.answer("alice"), "404", "no route yet");
    set_route(&cfg, "alice", "hubify-ws-alice", "m1", "127.0.0.1");
    router.wait_answer("alice", "one", BOUND);
    router.wait_metric("hubify_route_cache_subscribed", BOUND, |v| v == 1.0);
    // Cached now: a second request does not read Redis.
    let reads = redis.calls("hgetall");
    assert_eq!(router.answer("alice"), "one");
    assert_eq!(redis.calls("hgetall"), reads, "a cache hit reads nothing");

    set_route(&cfg, "alice", "hubify-ws-alice", "m2", "127.0.0.2");
    let took = router.wait_answer("alice", "two", BOUND);
    println!("changed route served after {took:?} (cache_ttl = 1h)");

    cli_ok(&cfg, &["delete", "alice"]);
    let took = router.wait_answer("alice", "404", BOUND);
    println!("deleted route answered 404 after {took:?}");
    assert!(
        router
            .metric("hubify_route_cache_invalidations_total")
            .unwrap()
            >= 2.0
    );
}

/// 500 concurrent first requests for one label cause exactly one Redis read. The router talks
/// to Redis through a gate that holds its commands until every request is waiting on the store,
/// so the requests really overlap; the reads are counted by Redis (`INFO commandstats`).
#[test]
fn single_flight_500_requests_one_redis_read() {
    let redis = RedisServer::start();
    let gate = Gate::start(redis.port);
    let up = upstreams();
    let router = Router::start(&gate.url(), up, "command_timeout = \"20s\"", "");
    let _: i64 = redis.cmd(&[
        "HSET",
        "hubify:route:burst",
        "app",
        "a",
        "machine_id",
        "m1",
        "address",
        "127.0.0.1",
    ]);
    router.wait_metric("hubify_route_cache_subscribed", BOUND, |v| v == 1.0);
    router.wait_metric("hubify_route_cache_connected", BOUND, |v| v == 1.0);
    let misses_before = router.metric("hubify_route_cache_misses_total").unwrap();
    let _: String = redis.cmd(&["CONFIG", "RESETSTAT"]);
    gate.close();

    const N: usize = 500;
    let barrier = Arc::new(Barrier::new(N));
    let http = router.http;
    let threads: Vec<_> = (0..N)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    http_get(http, &format!("burst.{DOMAIN}"), "/")
                })
                .unwrap()
        })
        .collect();
    // Every request is waiting on the store before Redis gets the read.
    router.wait_metric(
        "hubify_route_cache_misses_total",
        Duration::from_secs(15),
        |v| v >= misses_before + N as f64,
    );
    assert_eq!(router.metric("hubify_route_cache_fetches_total"), Some(1.0));
    gate.open();
    for t in threads {
        match t.join().unwrap() {
            Some(r) if r.status == 200 && r.body == "one" => {}
            Some(r) => panic!("unexpected answer {} {:?}", r.status, r.body),
            None => panic!("a request got no response"),
        }
    }
    assert_eq!(
        redis.calls("hgetall"),
        1,
        "exactly one Redis read for {N} requests"
    );
    assert_eq!(router.metric("hubify_route_cache_fetches_total"), Some(1.0));
    assert_eq!(router.metric("hubify_route_cache_hits_total"), Some(0.0));
}

/// A router on `redis` serving `alice` (→ 127.0.0.1, the upstream `one`) from a cached record,
/// subscribed to route events.
fn serving_alice(redis: &RedisServer) -> Router {
    let router = Router::start(&redis.url(), upstreams(), "", "");
    set_route(&router.config(), "alice", "a", "m1", "127.0.0.1");
    router.wait_answer("alice", "one", BOUND);
    router.wait_metric("hubify_route_cache_subscribed", BOUND, |v| v == 1.0);
    router
}

/// Redis killed: cached routes keep serving, unknown labels get 503 + Retry-After quickly;
/// Redis restarted on the same port: fresh lookups work with no router restart, and routes cached
/// before the outage are revalidated (the new Redis is empty).
#[test]
fn redis_outage_serves_stale_and_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let router = serving_alice(&redis);
    let cfg = router.config();

    redis.kill();
    for _ in 0..5 {
        assert_eq!(
            router.answer("alice"),
            "one",
            "cached route served while Redis is down"
        );
    }
    for _ in 0..3 {
        let start = Instant::now();
        let r = router.get("bob").expect("a response while Redis is down");
        let took = start.elapsed();
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.header("retry-after").is_some(), "503 carries Retry-After");
        assert!(
            took < Duration::from_secs(2),
            "an unknown label answered in {took:?}"
        );
        println!("unknown label while Redis is down: 503 in {took:?}");
    }
    assert!(
        router
            .metric("hubify_route_cache_stale_served_total")
            .unwrap()
            >= 1.0
    );
    assert_eq!(router.answer("alice"), "one");

    let redis = RedisServer::start_on(port);
    set_route(&cfg, "bob", "b", "m2", "127.0.0.2");
    let took = router.wait_answer("bob", "two", Duration::from_secs(15));
    println!("fresh lookup works {took:?} after Redis came back");
    // alice is not in the new Redis: once revalidated it is gone.
    router.wait_answer("alice", "404", Duration::from_secs(15));
    drop(redis);
}

/// Redis that does not answer (its commands held): unknown labels get 503 within a bound (the
/// 50 ms command timeout, not seconds), cached routes keep serving, and recovery is automatic.
#[test]
fn unresponsive_redis_is_bounded() {
    let redis = RedisServer::start();
    let gate = Gate::start(redis.port);
    let up = upstreams();
    let router = Router::start(&gate.url(), up, "", "");
    let _: i64 = redis.cmd(&[
        "HSET",
        "hubify:route:alice",
        "app",
        "a",
        "machine_id",
        "m1",
        "address",
        "127.0.0.1",
    ]);
    router.wait_answer("alice", "one", BOUND);

    gate.close();
    for _ in 0..5 {
        let start = Instant::now();
        let r = router.get("bob").expect("a response while Redis hangs");
        let took = start.elapsed();
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.header("retry-after").is_some());
        assert!(took < Duration::from_secs(2), "answered in {took:?}");
        println!("unknown label while Redis hangs: 503 in {took:?}");
        assert_eq!(router.answer("alice"), "one");
    }
    assert!(
        router
            .metric("hubify_route_cache_fetch_errors_total")
            .unwrap()
            >= 5.0
    );

    gate.open();
    let _: i64 = redis.cmd(&[
        "HSET",
        "hubify:route:bob",
        "app",
        "b",
        "machine_id",
        "m2",
        "address",
        "127.0.0.2",
    ]);
    router.wait_answer("bob", "two", Duration::from_secs(15));
}

/// The pub/sub connection killed: the router resubscribes and later changes invalidate again.
#[test]
fn pubsub_killed_invalidations_resume() {
    let redis = RedisServer::start();
    let router = serving_alice(&redis);
    let cfg = router.config();
    let subs = router
        .metric("hubify_route_cache_resubscribes_total")
        .unwrap();

    let killed: i64 = redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed >= 1, "the router's subscription was killed");
    router.wait_metric("hubify_route_cache_resubscribes_total", BOUND, |v| v > subs);
    router.wait_metric("hubify_route_cache_subscribed", BOUND, |v| v == 1.0);
    // Re-read after the gap: fresh again, in the new epoch.
    router.wait_answer("alice", "one", BOUND);
    let reads = redis.calls("hgetall");
    assert_eq!(router.answer("alice"), "one");
    assert_eq!(
        redis.calls("hgetall"),
        reads,
        "fresh again: served from the cache"
    );

    let out = set_route(&cfg, "alice", "a", "m2", "127.0.0.2");
    assert!(out.contains("published to 1 subscriber"), "{out}");
    let took = router.wait_answer("alice", "two", BOUND);
    println!("change after the pub/sub kill served after {took:?}");
}

/// A malformed record is a 502 with a log line naming the key; fixing it heals at once. Junk
/// hosts never reach Redis.
#[test]
fn malformed_record_is_502_and_junk_never_reaches_redis() {
    let redis = RedisServer::start();
    let up = upstreams();
    let router = Router::start(&redis.url(), up, "", "");
    let cfg = router.config();
    let _: i64 = redis.cmd(&[
        "HSET",
        "hubify:route:broken",
        "app",
        "Bad App",
        "machine_id",
        "m1",
    ]);
    let _: String = redis.cmd(&["SET", "hubify:route:flat", "not a hash"]);
    let _: i64 = redis.cmd(&["HSET", "hubify:route:noaddr", "address", "300.1.2.3"]);

    for label in ["broken", "flat", "noaddr"] {
        let r = router.get(label).expect("a response");
        assert_eq!(r.status, 502, "{label}: {}", r.body);
    }
    let log = eventually("log lines naming the keys", BOUND, || {
        let log = router.log();
        [
            "hubify:route:broken",
            "field `app`",
            "hubify:route:flat",
            "hubify:route:noaddr",
            "field `address`",
        ]
        .iter()
        .all(|s| log.contains(s))
        .then_some(log)
    });
    assert!(!log.contains("panicked"), "{log}");

    set_route(&cfg, "broken", "good-app", "m1", "127.0.0.1");
    router.wait_answer("broken", "one", BOUND);

    let _: String = redis.cmd(&["CONFIG", "RESETSTAT"]);
    for host in [
        "a.b.test.example",
        "-x.test.example",
        "x_y.test.example",
        "evil.com",
        "test.example",
        &format!("{}.test.example", "a".repeat(64)),
    ] {
        let r = http_get(router.http, host, "/").expect("a response");
        assert!(r.status == 404 || r.status == 400, "{host}: {}", r.status);
    }
    assert_eq!(redis.calls("hgetall"), 0, "junk hosts never reach Redis");
}

/// More labels than the capacity: the cache stays within it and every route is still served.
#[test]
fn capacity_bound_respected() {
    let redis = RedisServer::start();
    let up = upstreams();
    let router = Router::start(&redis.url(), up, "", "cache_capacity = 8");
    assert_eq!(router.metric("hubify_route_cache_capacity"), Some(8.0));
    for i in 0..30 {
        let _: i64 = redis.cmd(&[
            "HSET",
            &format!("hubify:route:w{i}"),
            "app",
            "a",
            "machine_id",
            "m1",
            "address",
            "127.0.0.1",
        ]);
    }
    for pass in 0..2 {
        for i in 0..30 {
            let label = format!("w{i}");
            router.wait_answer(&label, "one", BOUND);
            let entries = router.metric("hubify_route_cache_entries").unwrap();
            assert!(
                entries <= 8.0,
                "pass {pass}: {entries} entries with capacity 8"
            );
        }
    }
    let evictions = router.metric("hubify_route_cache_evictions_total").unwrap();
    assert!(evictions >= 22.0, "evictions: {evictions}");
}

/// The routes CLI: set (validated, whole record replaced, published), get, list (SCAN), delete
/// (published), with a custom key prefix; clear errors without a [redis] section.
#[test]
fn routes_cli_round_trip() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cli.toml");
    std::fs::write(
        &cfg,
        format!(
            "paths = \"standard\"\ndomain = \"{DOMAIN}\"\n[listeners.http]\naddress = \"127.0.0.1:1\"\n[redis]\nurl = \"{}\"\nkey_prefix = \"hx\"\n[routes]\nstore = \"redis\"\n",
            redis.url()
        ),
    )
    .unwrap();

    // A subscriber on the events channel.
    let (tx, events) = mpsc::channel::<String>();
    let (ready_tx, ready) = mpsc::channel::<()>();
    let url = redis.url();
    std::thread::spawn(move || {
        let client = redis::Client::open(url).unwrap();
        let mut con = client.get_connection().unwrap();
        let mut ps = con.as_pubsub();
        ps.subscribe("hx:route-events").unwrap();
        ready_tx.send(()).unwrap();
        while let Ok(msg) = ps.get_message() {
            if tx
                .send(msg.get_payload::<String>().unwrap_or_default())
                .is_err()
            {
                return;
            }
        }
    });
    ready.recv_timeout(BOUND).expect("subscriber ready");
    let next_event = || {
        events
            .recv_timeout(BOUND)
            .expect("an event on hx:route-events")
    };

    let out = cli_ok(
        &cfg,
        &[
            "set",
            "alice",
            "--app",
            "hubify-ws-alice",
            "--machine",
            "m1",
            "--region",
            "iad",
            "--address",
            "127.0.0.1",
        ],
    );
    assert!(out.contains("set hx:route:alice"), "{out}");
    assert!(out.contains("published to 1 subscriber"), "{out}");
    assert_eq!(next_event(), "alice");

    // Invalid input: refused before Redis, naming the flag; nothing written, nothing published.
    let out = cli(
        &cfg,
        &[
            "set",
            "carol",
            "--app",
            "a",
            "--machine",
            "m1",
            "--address",
            "nope",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--address"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&cfg, &["set", "Carol", "--app", "a", "--machine", "m1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a workspace label"),
        "{}",
        text(&out.stderr)
    );
    let exists: i64 = redis.cmd(&["EXISTS", "hx:route:carol"]);
    assert_eq!(exists, 0);

    cli_ok(&cfg, &["set", "bob", "--app", "b", "--machine", "m2"]);
    assert_eq!(next_event(), "bob", "the refused sets published nothing");

    let got = cli_ok(&cfg, &["get", "alice"]);
    assert_eq!(
        got,
        "app=hubify-ws-alice\nmachine_id=m1\nregion=iad\naddress=127.0.0.1\n"
    );
    // A set replaces the whole record: the old region and address are gone.
    cli_ok(
        &cfg,
        &[
            "set",
            "alice",
            "--app",
            "hubify-ws-alice",
            "--machine",
            "m9",
        ],
    );
    assert_eq!(next_event(), "alice");
    assert_eq!(
        cli_ok(&cfg, &["get", "alice"]),
        "app=hubify-ws-alice\nmachine_id=m9\n"
    );
    let kind: String = redis.cmd(&["TYPE", "hx:route:alice"]);
    assert_eq!(kind, "hash");

    // Junk under the prefix and another prefix's keys are not listed as labels.
    let _: i64 = redis.cmd(&["HSET", "hx:route:Not_A_Label", "app", "x"]);
    let _: i64 = redis.cmd(&["HSET", "hubify:route:other", "app", "x"]);
    let out = cli(&cfg, &["list"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "alice\nbob\n");
    assert!(
        text(&out.stderr).contains("hx:route:Not_A_Label"),
        "{}",
        text(&out.stderr)
    );

    let out = cli_ok(&cfg, &["delete", "alice"]);
    assert!(out.contains("deleted hx:route:alice"), "{out}");
    assert_eq!(next_event(), "alice");
    let out = cli(&cfg, &["get", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no route for \"alice\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(cli_ok(&cfg, &["list"]), "bob\n");

    // A malformed record: get prints it and says what is wrong.
    let _: i64 = redis.cmd(&["HSET", "hx:route:bad", "app", "a", "machine_id", "M!"]);
    let out = cli(&cfg, &["get", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("hx:route:bad: field `machine_id`"),
        "{}",
        text(&out.stderr)
    );

    // No [redis] section: a clear error.
    let bare = dir.path().join("bare.toml");
    std::fs::write(
        &bare,
        format!("paths = \"standard\"\ndomain = \"{DOMAIN}\"\n[listeners.http]\naddress = \"127.0.0.1:1\"\n[routes]\nstore = \"static\"\n"),
    )
    .unwrap();
    let out = cli(&bare, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no [redis] section"),
        "{}",
        text(&out.stderr)
    );

    // Redis unreachable: a clear error, not a hang.
    drop(redis);
    let start = Instant::now();
    let out = cli(&cfg, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot connect to Redis"),
        "{}",
        text(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// `rediss://`: the route store and the CLI reach a TLS Redis (rustls with ring; the CA comes
/// from the system roots, here pointed at a test CA with `SSL_CERT_FILE`), and refuse one whose
/// certificate they cannot verify.
#[test]
fn rediss_tls_redis() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hubify-edge test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let ca_pem = dir.path().join("ca.pem");
    let cert = dir.path().join("redis.pem");
    let key = dir.path().join("redis.key");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();

    // The plain port is for the test's own client; the router gets the TLS port.
    let tls_port = free_port();
    let redis = RedisServer::start_with(&[
        "--tls-port".to_string(),
        tls_port.to_string(),
        "--tls-cert-file".to_string(),
        cert.display().to_string(),
        "--tls-key-file".to_string(),
        key.display().to_string(),
        "--tls-ca-cert-file".to_string(),
        ca_pem.display().to_string(),
        "--tls-auth-clients".to_string(),
        "no".to_string(),
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let up = upstreams();
    let router = Router::start_env(&url, up, "", "", &[("SSL_CERT_FILE", ca_pem.as_path())]);
    router.wait_metric("hubify_route_cache_connected", BOUND, |v| v == 1.0);
    let cfg = router.config();
    let out = Command::new(BIN)
        .env("SSL_CERT_FILE", &ca_pem)
        .arg("--config")
        .arg(&cfg)
        .args([
            "routes",
            "set",
            "alice",
            "--app",
            "a",
            "--machine",
            "m1",
            "--address",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    router.wait_answer("alice", "one", BOUND);
    assert_eq!(redis.calls("hgetall"), 1);

    // Without the CA the certificate is refused, with a clear error.
    let out = Command::new(BIN)
        .env("SSL_CERT_FILE", dir.path().join("missing.pem"))
        .arg("--config")
        .arg(&cfg)
        .args(["routes", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot connect to Redis"),
        "{}",
        text(&out.stderr)
    );
}

/// `/readyz` says "not ready: route_store" while Redis is unreachable and nothing is cached (the
/// router could answer no workspace), and turns ready again when Redis returns — no restart.
#[test]
fn readyz_follows_the_route_store() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let up = upstreams();
    let router = Router::start(&redis.url(), up, "", "");
    let readyz = |r: &Router| {
        http_get(r.ops, "localhost", "/readyz")
            .map(|resp| (resp.status, resp.body.trim().to_string()))
    };
    eventually("ready with Redis up", BOUND, || {
        readyz(&router).filter(|(s, _)| *s == 200)
    });

    redis.kill();
    let (status, body) = eventually(
        "not ready with Redis down and an empty cache",
        BOUND,
        || readyz(&router).filter(|(s, _)| *s == 503),
    );
    assert_eq!(status, 503);
    assert!(
        body.contains("route_store"),
        "the failing check is named: {body:?}"
    );
    assert_eq!(
        http_get(router.ops, "localhost", "/healthz").map(|r| r.status),
        Some(200),
        "alive while not ready"
    );

    let _redis = RedisServer::start_on(port);
    let (_, body) = eventually(
        "ready again once Redis is back",
        Duration::from_secs(15),
        || readyz(&router).filter(|(s, _)| *s == 200),
    );
    assert_eq!(body, "ready");
}

/// Sessions end when the workspace's `auth_epoch` is bumped (`routes revoke`), on every replica,
/// as soon as the route event arrives; a later `routes set` keeps the epoch; a session sealed by
/// one replica opens on another with the same key.
#[test]
fn revoke_ends_every_session_on_every_replica() {
    use hubify_edge::auth::testkit::{jwks, Issuer};
    let redis = RedisServer::start();
    let up = upstreams();
    let issuer = Issuer::ed25519("api-1");
    let keys = tempfile::tempdir().unwrap();
    let jwks_path = keys.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&issuer])).unwrap();
    let extra = format!(
        "\n[auth]\njwks = {:?}\n\n[[paths]]\nprefix = \"/terminal\"\nport = {up}\nauth = \"token\"\nscope = \"terminal\"\n",
        jwks_path.display().to_string()
    );
    let key = Path::new("revocation-test-session-key-0123456789abcdef");
    let env = [("HUBIFY_EDGE_SESSION_KEY", key)];
    let a = Router::start_env(&redis.url(), up, "", &extra, &env);
    let b = Router::start_env(&redis.url(), up, "", &extra, &env);
    let cfg = a.config();
    set_route(&cfg, "alice", "hubify-ws-alice", "m1", "127.0.0.1");
    let host = format!("alice.{DOMAIN}");

    // A first visit with a fresh token on `router`: the session cookie's `name=value` pair.
    let sign_in = |router: &Router| {
        let token = issuer.token(&host, "user-1", "terminal", 300);
        let r = http_get(
            router.http,
            &host,
            &format!("/terminal?hubify_token={token}"),
        )
        .unwrap();
        assert_eq!(r.status, 303, "{}", router.log());
        let set = r.header("set-cookie").unwrap();
        set.split(';').next().unwrap().to_string()
    };
    let session = sign_in(&a);
    let with_session = |router: &Router| {
        http_get_with(
            router.http,
            &host,
            "/terminal",
            &format!("Cookie: {session}\r\n"),
        )
        .map(|r| r.status)
    };
    assert_eq!(with_session(&a), Some(200));
    assert_eq!(
        with_session(&b),
        Some(200),
        "the session opens on the other replica"
    );

    let out = cli_ok(&cfg, &["revoke", "alice"]);
    assert!(out.contains("auth_epoch is now 1"), "{out}");
    for router in [&a, &b] {
        eventually("the revoked session refused", BOUND, || {
            (with_session(router) == Some(401)).then_some(())
        });
    }
    // A route update keeps the epoch: the old session stays refused.
    set_route(&cfg, "alice", "hubify-ws-alice", "m2", "127.0.0.1");
    let epoch: String = redis.cmd(&["HGET", "hubify:route:alice", "auth_epoch"]);
    assert_eq!(epoch, "1");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(with_session(&a), Some(401));
    // A new visit gets a session of the new epoch.
    let fresh = sign_in(&b);
    let r = http_get_with(a.http, &host, "/terminal", &format!("Cookie: {fresh}\r\n")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        cli(&cfg, &["revoke", "nobody"]).status.code(),
        Some(1),
        "revoking a workspace without a route fails"
    );
}

/// Redis killed and restarted on the same port: a route written as soon as the new server
/// answers PING is served within 30 attempts 100 ms apart (~3 s). The reconnect back-off is
/// capped at 500 ms (routes/redis.rs `BACKOFF_MAX`); without the cap (a back-off grown over
/// the outage) the final assertion fails.
#[test]
fn redis_restart_a_route_written_once_it_answers_is_served_within_30_attempts() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let router = serving_alice(&redis);

    redis.kill();
    // An uncached label while Redis is down: 503 (and the router learns the store is gone).
    // `bob` itself is not asked for before it exists, so no negative entry hides it.
    for _ in 0..3 {
        let r = router.get("carol").expect("a response while Redis is down");
        assert_eq!(r.status, 503, "{}", r.body);
    }
    // Let the outage last a few back-off rounds.
    std::thread::sleep(Duration::from_secs(2));

    let redis = RedisServer::start_on(port); // returns once PING answers
    let _: i64 = redis.cmd(&[
        "HSET",
        "hubify:route:bob",
        "app",
        "b",
        "machine_id",
        "m2",
        "address",
        "127.0.0.2",
    ]);
    let _: i64 = redis.cmd(&["PUBLISH", "hubify:route-events", "bob"]);
    let mut attempts = 0;
    let mut answers = Vec::new();
    while attempts < 30 {
        attempts += 1;
        let a = router.answer("bob");
        let done = a == "two";
        answers.push(a);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("bob served after {attempts} attempt(s), 100 ms apart, once the restarted Redis answered PING: {answers:?}");
    assert_eq!(
        answers.last().map(String::as_str),
        Some("two"),
        "a route written right after Redis restarted was not served within 30 attempts \
         (100 ms apart); answers: {answers:?}\n--- router log ---\n{}",
        router.log()
    );
}

/// Stale-while-revalidate: a cached route past its TTL is answered at once from the cache while
/// one background read refreshes it, even when Redis is slow (`DEBUG SLEEP 0.5`). The record
/// is changed in Redis without an event, so only a re-read can see the new address: answers
/// of the old one ("one") while Redis still sleeps prove the request did not wait for the
/// store (command_timeout is 3 s here, so without stale-while-revalidate the request would wait
/// for the read and answer "two": the `stale_while_asleep` assertion fails). Every request is
/// a 200 (failures counted, asserted 0), and the background read lands afterwards.
#[test]
fn expired_route_is_served_stale_while_redis_sleeps() {
    // Redis 7 refuses DEBUG unless enabled.
    let redis = RedisServer::start_with(&["--enable-debug-command".into(), "yes".into()]);
    let up = upstreams();
    let router = Router::start(
        &redis.url(),
        up,
        "command_timeout = \"3s\"",
        "cache_ttl = \"1s\"\nmax_stale = \"1h\"",
    );
    let _: i64 = redis.cmd(&[
        "HSET",
        "hubify:route:alice",
        "app",
        "a",
        "machine_id",
        "m1",
        "address",
        "127.0.0.1",
    ]);
    router.wait_answer("alice", "one", BOUND);
    router.wait_metric("hubify_route_cache_subscribed", BOUND, |v| v == 1.0);
    // Changed without an event: the cache holds "one" until it re-reads.
    let _: i64 = redis.cmd(&["HSET", "hubify:route:alice", "address", "127.0.0.2"]);
    assert_eq!(router.answer("alice"), "one", "still fresh in the cache");
    let revalidations = router
        .metric("hubify_route_cache_revalidations_total")
        .unwrap();
    // Past the 1 s TTL (+10 % jitter).
    std::thread::sleep(Duration::from_millis(1500));

    // Redis asleep for 0.5 s, on a connection of its own; a probe connection opened before
    // confirms it (its PING times out).
    let mut probe = redis.conn();
    let mut sleeper_conn = redis.conn();
    let sleeper = std::thread::spawn(move || {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("0.5")
            .query::<String>(&mut sleeper_conn)
    });
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut asleep = false;
    for _ in 0..20 {
        if redis::cmd("PING").query::<String>(&mut probe).is_err() {
            asleep = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        asleep,
        "Redis never stopped answering after DEBUG SLEEP (DEBUG answered: {:?})",
        if sleeper.is_finished() {
            Some(sleeper.join().unwrap())
        } else {
            None
        }
    );

    let (mut failures, mut stale_while_asleep, mut total) = (Vec::new(), 0, 0);
    while !sleeper.is_finished() && total < 200 {
        total += 1;
        match router.get("alice") {
            Some(r) if r.status == 200 => {
                if r.body == "one" && !sleeper.is_finished() {
                    stale_while_asleep += 1;
                }
            }
            Some(r) => failures.push(format!("{} {}", r.status, r.body)),
            None => failures.push("no response".to_string()),
        }
    }
    let slept = sleeper.join().unwrap();
    assert!(slept.is_ok(), "DEBUG SLEEP failed: {slept:?}");
    println!(
        "while Redis slept: {total} requests, {stale_while_asleep} answered stale before it woke"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} requests for an expired cached route failed while Redis slept: {:?}\n\
         --- router log ---\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        router.log()
    );
    assert!(
        stale_while_asleep >= 1,
        "no request was answered from the stale entry while Redis slept ({total} requests)"
    );
    assert!(
        router
            .metric("hubify_route_cache_revalidations_total")
            .unwrap()
            > revalidations,
        "no revalidation counted"
    );
    // The background read lands once Redis wakes.
    router.wait_answer("alice", "two", BOUND);
}

/// A replica's own view on the ops listener: `GET /routes/<label>` shows what this process caches
/// (record, state, age) and `POST /routes/<label>/purge` drops it, so a record changed without an
/// event (a lost publish) is read again at once instead of after `cache_ttl` (1 h here).
#[test]
fn ops_shows_and_purges_a_cached_route() {
    let redis = RedisServer::start();
    let up = upstreams();
    let router = Router::start(&redis.url(), up, "", "");
    let ops = |method: &str, path: &str| {
        let r = http_request(router.ops, method, "localhost", path, "").expect("ops answer");
        let json = serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default();
        (r.status, json)
    };
    assert_eq!(ops("GET", "/routes/alice").0, 404, "nothing cached yet");
    set_route(
        &router.config(),
        "alice",
        "hubify-ws-alice",
        "m1",
        "127.0.0.1",
    );
    router.wait_answer("alice", "one", BOUND);

    let (status, view) = ops("GET", "/routes/alice");
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["store"], "redis", "{view}");
    assert_eq!(view["answer"], "found", "{view}");
    assert_eq!(view["state"], "fresh", "{view}");
    assert_eq!(view["record"]["address"], "127.0.0.1", "{view}");
    assert_eq!(view["record"]["machine_id"], "m1", "{view}");
    assert!(
        view["age_seconds"].as_f64().is_some_and(|a| a >= 0.0),
        "{view}"
    );
    // An unknown label is remembered as not found (negative cache).
    assert_eq!(router.answer("nobody"), "404");
    let (status, view) = ops("GET", "/routes/nobody");
    assert_eq!(
        (status, &view["answer"]),
        (200, &serde_json::json!("not_found")),
        "{view}"
    );
    assert_eq!(ops("GET", "/routes/Not_A_Label").0, 400);
    assert_eq!(ops("GET", "/routes/alice/purge").0, 405, "purge needs POST");

    // Changed behind the router's back (no event): the cache keeps the old address...
    let _: i64 = redis.cmd(&["HSET", "hubify:route:alice", "address", "127.0.0.2"]);
    assert_eq!(router.answer("alice"), "one");
    // ...until this replica's entry is purged.
    let (status, purged) = ops("POST", "/routes/alice/purge");
    assert_eq!(
        (status, &purged["purged"]),
        (200, &serde_json::json!(true)),
        "{purged}"
    );
    assert_eq!(ops("GET", "/routes/alice").0, 404, "purged");
    assert_eq!(router.answer("alice"), "two");
    let (_, view) = ops("GET", "/routes/alice");
    assert_eq!(view["record"]["address"], "127.0.0.2", "{view}");
    let (_, again) = ops("POST", "/routes/zed/purge");
    assert_eq!(
        again["purged"], false,
        "nothing was cached for zed: {again}"
    );
}

/// A route record's limits, written by `routes set --requests-per-second … --burst …`, apply on
/// the routers (no `[limits]` in their config); `--burst` alone is refused naming the flag; a
/// malformed limit in a record is logged and ignored (the route still serves, unlimited).
#[test]
fn record_limits_from_the_cli_apply_and_a_malformed_one_is_ignored() {
    let redis = RedisServer::start();
    let router = serving_alice(&redis);
    let cfg = router.config();
    let set = |extra: &[&str]| {
        let mut args = vec![
            "set",
            "alice",
            "--app",
            "a",
            "--machine",
            "m1",
            "--address",
            "127.0.0.1",
        ];
        args.extend_from_slice(extra);
        cli(&cfg, &args)
    };
    let out = set(&["--requests-per-second", "1", "--burst", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fields = cli_ok(&cfg, &["get", "alice"]);
    assert!(
        fields.contains("requests_per_second") && fields.contains("burst"),
        "{fields}"
    );
    // The bucket holds 2: within a second, the third request is refused.
    eventually("the record's rate limit", BOUND, || {
        let statuses: Vec<u16> = (0..3)
            .map(|_| router.get("alice").map_or(0, |r| r.status))
            .collect();
        (statuses == [200, 200, 429]).then_some(())
    });
    let out = set(&["--burst", "2"]);
    assert!(!out.status.success(), "--burst without a rate was accepted");
    assert!(
        text(&out.stderr).contains("--burst"),
        "{}",
        text(&out.stderr)
    );

    let _: i64 = redis.cmd(&["HSET", "hubify:route:alice", "requests_per_second", "lots"]);
    let _: i64 = redis.cmd(&["PUBLISH", "hubify:route-events", "alice"]);
    // The next request reads the record again (the invalidation dropped the cached one).
    eventually("a malformed limit logged", BOUND, || {
        let _ = router.get("alice");
        router.log().contains("limit ignored").then_some(())
    });
    for i in 0..5 {
        let r = router.get("alice").expect("a response");
        assert_eq!(
            r.status, 200,
            "request {i} with a malformed limit: {}",
            r.body
        );
    }
}
