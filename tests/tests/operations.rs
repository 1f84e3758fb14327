//! Operating the router: SIGHUP reload, the one-host upgrade (`run --upgrade` + SIGQUIT),
//! `health` and `--version`, the README's metric list against `/metrics`, and what `check`
//! refuses about the ACME state dir.
//!
//! Each test names, in a comment, the assertion that fails when its feature is removed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hubify_edge_tests::certs::{self, Ca};
use hubify_edge_tests::client::{
    error_chain, https_alpn, peer_leaf, tls_connect, try_http, try_https_alpn, ws_connect_plain,
    ws_next_message, ws_read_until_closed, ws_roundtrip, H2Conn, Resp, ALPN_H1, ALPN_H2,
};
use hubify_edge_tests::ops::{
    cli, cli_config, ops_get, rewrite_config, scrape, scrape_until, sighup, sigquit, socket_in,
    toml_with_upgrade_socket, wait_for_log_count, Metrics,
};
use hubify_edge_tests::router::check_toml;
use hubify_edge_tests::{
    free_port, host, EdgeConfig, PathRule, Req, Router, Stack, Trust, Upstream,
};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// How long a reload (or its refusal) may take to show in the log.
const RELOAD_BOUND: Duration = Duration::from_secs(10);
/// How long a scrape may take to show a counter the router bumps after answering.
const METRIC_BOUND: Duration = Duration::from_secs(5);

const OK: &str = r#"hubify_config_reloads_total{result="ok"}"#;
const ERROR: &str = r#"hubify_config_reloads_total{result="error"}"#;
const REFUSED: &str = r#"hubify_config_reloads_total{result="refused"}"#;
const LAST_OK: &str = "hubify_config_last_reload_success_timestamp_seconds";

/// The echo upstream that answered, if the response is a 200 from one.
fn served_by(resp: &Resp) -> Option<String> {
    if resp.status != StatusCode::OK {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
    v.get("service")?.as_str().map(str::to_owned)
}

/// Which upstream serves `GET /` for alice on a new connection, over each of plain HTTP/1.1,
/// TLS HTTP/1.1 and TLS HTTP/2: `[(transport, service or error)]`.
async fn who_serves_new_connections(cfg: &EdgeConfig) -> Vec<(&'static str, String)> {
    let alice = host("alice");
    let req = Req::get(&alice, "/");
    let mut out = Vec::new();
    let plain = match try_http(cfg.http_port(), &req).await {
        Ok(r) => served_by(&r).unwrap_or_else(|| r.summary()),
        Err(e) => format!("error: {}", error_chain(e.as_ref())),
    };
    out.push(("plain h1", plain));
    for (name, alpn, want) in [("tls h1", ALPN_H1, "http/1.1"), ("tls h2", ALPN_H2, "h2")] {
        let got = match try_https_alpn(cfg.https_port(), &alice, alpn, &req).await {
            Ok((r, proto)) if proto.as_deref() == Some(want) => {
                served_by(&r).unwrap_or_else(|| r.summary())
            }
            Ok((_, proto)) => format!("negotiated {proto:?}, not {want}"),
            Err(e) => format!("error: {}", error_chain(e.as_ref())),
        };
        out.push((name, got));
    }
    out
}

fn assert_all_served_by(seen: &[(&'static str, String)], want: &str, what: &str) {
    for (transport, got) in seen {
        assert_eq!(
            got, want,
            "{what}: {transport} was served by {got:?}, not {want:?}"
        );
    }
}

/// A plain HTTP/1.1 keep-alive connection for several requests in turn.
struct H1KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1KeepAlive {
    async fn open(port: u16) -> H1KeepAlive {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the plain listener");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H1KeepAlive { sender }
    }

    /// The service that answered `GET /` for alice, or what went wrong.
    async fn who_serves(&mut self) -> String {
        let fut = async {
            self.sender.ready().await?;
            let req = http::Request::builder()
                .uri("/")
                .header("host", host("alice"))
                .body(Full::new(Bytes::new()))?;
            let resp = self.sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Resp {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(Duration::from_secs(30), fut).await {
            Ok(Ok(r)) => served_by(&r).unwrap_or_else(|| r.summary()),
            Ok(Err(e)) => format!("error: {}", error_chain(e.as_ref())),
            Err(_) => "no answer within 30 s".to_owned(),
        }
    }
}

async fn h2_who_serves(conn: &H2Conn) -> String {
    match conn.request(&Req::get(&host("alice"), "/")).await {
        Ok(r) => served_by(&r).unwrap_or_else(|| r.summary()),
        Err(e) => format!("error: {}", error_chain(e.as_ref())),
    }
}

fn value(m: &Metrics, series: &str) -> f64 {
    m.get(series)
        .unwrap_or_else(|| panic!("no `{series}` in /metrics:\n{}", m.text))
}

// ---------------------------------------------------------------------------------------------
// 1. SIGHUP reload

/// `/` → `gateway`; rewritten to `/` → `second`; SIGHUP: new requests (new connections on every
/// transport, and new requests on connections opened before the reload) reach `second`.
async fn reload_switches_the_path_rule(fast: bool) {
    let gateway = Upstream::echo("gateway").await;
    let second = Upstream::echo("second").await;
    let cfg = EdgeConfig::new()
        .fast_path(fast)
        .with_ops()
        .path(PathRule::new("/", gateway.port));
    let mut router = Router::start(&cfg).await;
    let ops = cfg.ops.expect("ops listener");

    assert_all_served_by(
        &who_serves_new_connections(&cfg).await,
        "gateway",
        &format!("fast={fast}, before the reload"),
    );
    let mut h1 = H1KeepAlive::open(cfg.http_port()).await;
    assert_eq!(
        h1.who_serves().await,
        "gateway",
        "fast={fast}: keep-alive h1 before"
    );
    let h2 = H2Conn::open(cfg.https_port(), &host("alice"))
        .await
        .unwrap_or_else(|e| panic!("h2 connection: {}", error_chain(e.as_ref())));
    assert_eq!(
        h2_who_serves(&h2).await,
        "gateway",
        "fast={fast}: h2 connection before"
    );
    let before = scrape(ops).await;
    let started = value(&before, LAST_OK);

    let mut new_cfg = cfg.clone();
    new_cfg.paths = vec![PathRule::new("/", second.port)];
    rewrite_config(&router, &new_cfg.to_toml());
    sighup(&router);
    router
        .wait_for_log("configuration reloaded", RELOAD_BOUND)
        .await;

    // Without the SIGHUP handler the signal's default action ends the process: this fails.
    assert!(
        router.is_running_now(),
        "fast={fast}: the router exited after SIGHUP"
    );
    // Without the reload every transport still reaches `gateway`: these fail.
    assert_all_served_by(
        &who_serves_new_connections(&cfg).await,
        "second",
        &format!("fast={fast}, new connections after the reload"),
    );
    // "A request loads the current configuration when it starts" (reload.rs): connections
    // opened before the reload take the new rule for their next request.
    assert_eq!(
        h1.who_serves().await,
        "second",
        "fast={fast}: a new request on an h1 keep-alive connection opened before the reload"
    );
    assert_eq!(
        h2_who_serves(&h2).await,
        "second",
        "fast={fast}: a new stream on an h2 connection opened before the reload"
    );

    let after = scrape_until(ops, METRIC_BOUND, |m| m.get(OK) == Some(1.0)).await;
    assert_eq!(
        after.get(OK),
        Some(1.0),
        "fast={fast}: ok reloads:\n{}",
        after.text
    );
    assert_eq!(
        after.get(ERROR).unwrap_or(0.0),
        0.0,
        "fast={fast}: error reloads"
    );
    assert_eq!(
        after.get(REFUSED).unwrap_or(0.0),
        0.0,
        "fast={fast}: refused reloads"
    );
    let reloaded = value(&after, LAST_OK);
    assert!(
        reloaded > started,
        "fast={fast}: {LAST_OK} did not increase with a good reload ({started} → {reloaded})"
    );
    assert!(
        router.is_running_now(),
        "fast={fast}: router still running at the end"
    );
}

/// Helper trait: `Router::try_exit` needs `&mut`; this reads better in assertions.
trait Running {
    fn is_running_now(&mut self) -> bool;
}

impl Running for Router {
    fn is_running_now(&mut self) -> bool {
        self.try_exit().is_none()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_switches_the_path_rule_fast_path() {
    reload_switches_the_path_rule(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_switches_the_path_rule_pingora_path() {
    reload_switches_the_path_rule(false).await;
}

/// A file that does not parse, then one with an unknown key: both keep the running
/// configuration, the process and `gateway`, and count as `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_bad_file_keeps_the_running_configuration() {
    let gateway = Upstream::echo("gateway").await;
    let second = Upstream::echo("second").await;
    let cfg = EdgeConfig::new()
        .with_ops()
        .path(PathRule::new("/", gateway.port));
    let mut router = Router::start(&cfg).await;
    let ops = cfg.ops.expect("ops listener");
    let started = value(&scrape(ops).await, LAST_OK);

    // Each bad file also points `/` at `second`, so a partial application would show.
    let mut changed = cfg.clone();
    changed.paths = vec![PathRule::new("/", second.port)];
    let good = changed.to_toml();
    let bad_files = [
        good.replacen("[server]\n", "[server\n", 1),
        good.replacen("[server]\n", "[server]\ncolour = \"blue\"\n", 1),
    ];
    for (i, bad) in bad_files.iter().enumerate() {
        assert_ne!(bad, &good, "test bug: the mutation did not apply");
        rewrite_config(&router, bad);
        sighup(&router);
        let lines =
            wait_for_log_count(&router, "configuration not reloaded", i + 1, RELOAD_BOUND).await;
        assert!(
            lines[i].contains(&router.config_path().display().to_string()),
            "the refusal does not name the file: {}",
            lines[i]
        );
        // Without the handler SIGHUP kills the process: this fails.
        assert!(
            router.is_running_now(),
            "the router exited after SIGHUP with bad file {i}"
        );
        assert_all_served_by(
            &who_serves_new_connections(&cfg).await,
            "gateway",
            &format!("after bad file {i}"),
        );
    }
    assert!(
        !router.logs().contains("configuration reloaded"),
        "a bad file was reported as reloaded"
    );
    let m = scrape_until(ops, METRIC_BOUND, |m| m.get(ERROR) == Some(2.0)).await;
    // Without the reload metrics (or with a bad file counted otherwise) these fail.
    assert_eq!(m.get(ERROR), Some(2.0), "error reloads:\n{}", m.text);
    assert_eq!(m.get(OK).unwrap_or(0.0), 0.0, "ok reloads");
    assert_eq!(m.get(REFUSED).unwrap_or(0.0), 0.0, "refused reloads");
    assert_eq!(
        value(&m, LAST_OK),
        started,
        "{LAST_OK} moved without a good reload"
    );
}

/// A file that moves the plain listener (and points `/` elsewhere) is refused as a whole: the
/// log names the key and says a restart is needed, the old listener keeps serving the old rule,
/// the new address is not bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_listener_change_is_refused() {
    let gateway = Upstream::echo("gateway").await;
    let second = Upstream::echo("second").await;
    let cfg = EdgeConfig::new()
        .with_ops()
        .path(PathRule::new("/", gateway.port));
    let mut router = Router::start(&cfg).await;
    let ops = cfg.ops.expect("ops listener");

    let mut moved = cfg.clone();
    let new_port = free_port();
    moved.http = Some(new_port);
    moved.paths = vec![PathRule::new("/", second.port)];
    rewrite_config(&router, &moved.to_toml());
    sighup(&router);
    // reload.rs: "configuration not reloaded: FILE changes listeners which need a restart; …"
    let line = router.wait_for_log("need a restart", RELOAD_BOUND).await;
    assert!(line.contains("configuration not reloaded"), "{line}");
    assert!(
        line.contains("listeners"),
        "the refusal does not name the key: {line}"
    );

    // Without the handler SIGHUP kills the process; without the refusal `/` moves to `second`.
    assert!(router.is_running_now(), "the router exited after SIGHUP");
    assert_all_served_by(
        &who_serves_new_connections(&cfg).await,
        "gateway",
        "after a refused reload",
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", new_port))
            .await
            .is_err(),
        "something listens on the refused new address 127.0.0.1:{new_port}"
    );
    let m = scrape_until(ops, METRIC_BOUND, |m| m.get(REFUSED) == Some(1.0)).await;
    assert_eq!(m.get(REFUSED), Some(1.0), "refused reloads:\n{}", m.text);
    assert_eq!(m.get(OK).unwrap_or(0.0), 0.0, "ok reloads");
    assert_eq!(m.get(ERROR).unwrap_or(0.0), 0.0, "error reloads");
}

/// `tls.cert`/`tls.key` pointing at another pair (same `source = "files"`): the file watcher was
/// started on the old paths, so a reload refuses it (a restart key), names those keys, and the old
/// pair keeps serving — never "reloaded" while the old pair stays. (To change the certificate
/// itself without a restart, replace the files' contents: they are polled.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_new_certificate_paths_is_refused() {
    let names = ["*.hubify.test", "hubify.test"];
    let ca = Ca::new();
    let first = ca.leaf(&names, 0x1001);
    let second = ca.leaf(&names, 0x2002);
    let dir = tempfile::tempdir().expect("tempdir for certificates");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write a PEM file");
        p
    };
    let (cert1, key1) = (
        write("c1.pem", &first.cert_pem),
        write("k1.pem", &first.key_pem),
    );
    let (cert2, key2) = (
        write("c2.pem", &second.cert_pem),
        write("k2.pem", &second.key_pem),
    );

    let gateway = Upstream::echo("gateway").await;
    let cfg = EdgeConfig::new()
        .with_ops()
        .tls_files(&cert1, &key1)
        .path(PathRule::new("/", gateway.port));
    let mut router = Router::start(&cfg).await;
    let trust = Trust::Ca(vec![ca.der()]);
    let serial = || async {
        let tls = tls_connect(cfg.https_port(), &host("alice"), ALPN_H1, &trust)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake: {}", error_chain(e.as_ref())));
        certs::serial_bytes(&peer_leaf(&tls).expect("a peer certificate"))
    };
    assert_eq!(serial().await, certs::serial_of(first.serial));

    rewrite_config(&router, &cfg.clone().tls_files(&cert2, &key2).to_toml());
    sighup(&router);
    let deadline = Instant::now() + RELOAD_BOUND;
    let outcome = loop {
        let logs = router.logs();
        if let Some(l) = logs
            .lines()
            .find(|l| l.contains("configuration not reloaded"))
        {
            break Err(l.to_owned());
        }
        if let Some(l) = logs.lines().find(|l| l.contains("configuration reloaded")) {
            break Ok(l.to_owned());
        }
        assert!(
            Instant::now() < deadline,
            "no reload result logged after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(router.is_running_now(), "the router exited after SIGHUP");
    let refusal = outcome.expect_err("new certificate paths were reported as reloaded");
    assert!(
        refusal.contains("tls.cert/tls.key") && refusal.contains("restart"),
        "the refusal does not name the tls keys: {refusal}"
    );
    assert_eq!(
        serial().await,
        certs::serial_of(first.serial),
        "refused, the old pair keeps serving"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. One-host upgrade

#[derive(Default)]
struct Tally {
    total: AtomicUsize,
    ok: AtomicUsize,
    ok_after_exit: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// Requests, each on a new connection, until `stop` (or 3000 requests across the loops, or 25 s):
/// plain HTTP/1.1 or TLS HTTP/1.1. Every answer must be `gateway`'s 200.
fn client_loop(
    cfg: &EdgeConfig,
    tls: bool,
    tally: Arc<Tally>,
    a_exited: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (http, https) = (cfg.http_port(), cfg.https_port());
    tokio::spawn(async move {
        let start = Instant::now();
        let alice = host("alice");
        let req = Req::get(&alice, "/");
        while !stop.load(Ordering::SeqCst)
            && tally.total.load(Ordering::SeqCst) < 3000
            && start.elapsed() < Duration::from_secs(25)
        {
            let after = a_exited.load(Ordering::SeqCst);
            tally.total.fetch_add(1, Ordering::SeqCst);
            let result = if tls {
                try_https_alpn(https, &alice, ALPN_H1, &req)
                    .await
                    .map(|r| r.0)
            } else {
                try_http(http, &req).await
            };
            let verdict = match &result {
                Ok(r) if served_by(r).as_deref() == Some("gateway") => Ok(()),
                Ok(r) => Err(r.summary()),
                Err(e) => Err(error_chain(e.as_ref())),
            };
            match verdict {
                Ok(()) => {
                    tally.ok.fetch_add(1, Ordering::SeqCst);
                    if after {
                        tally.ok_after_exit.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(why) => tally
                    .failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "{} request: {why}",
                        if tls { "tls" } else { "plain" }
                    )),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Waits (bounded: 10 s) until `pid_file` names `router`: it serves and is the process the next
/// `run --upgrade` takes over from.
async fn wait_for_pid_file(pid_file: &Path, router: &Router) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(pid_file)
        .map(|s| s.trim().to_owned())
        .ok()
        != Some(router.pid().to_string())
    {
        assert!(
            Instant::now() < deadline,
            "{} does not hold the pid of process {}",
            pid_file.display(),
            router.pid()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_hands_the_listening_sockets_over_without_a_failed_request() {
    let gateway = Upstream::echo("gateway").await;
    let dir = tempfile::tempdir().expect("tempdir for the upgrade socket");
    let socket = socket_in(dir.path(), "up.sock");
    let cfg = EdgeConfig::new()
        .with_ops()
        .grace_period("1s")
        .shutdown_timeout("10s")
        .path(PathRule::new("/", gateway.port));
    let toml = toml_with_upgrade_socket(&cfg, &socket);
    let mut a = Router::start_raw(&toml, &cfg.listener_ports()).await;

    // A records itself for the next upgrade once it serves.
    let pid_file = dir.path().join("up.sock.pid");
    wait_for_pid_file(&pid_file, &a).await;

    let tally = Arc::new(Tally::default());
    let a_exited = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let loops = [
        client_loop(&cfg, false, tally.clone(), a_exited.clone(), stop.clone()),
        client_loop(&cfg, true, tally.clone(), a_exited.clone(), stop.clone()),
    ];
    // Traffic flows through A first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tally.ok.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "no traffic through A");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // B signals A itself (SIGQUIT via the pid file) and takes the sockets over.
    let mut b = Router::spawn_upgrade(&toml);
    b.wait_for_log_while_running("taking the listening sockets over", Duration::from_secs(20))
        .await;
    // A: receiver wait (5 s) + Pingora's overlap (5 s) + shutdown_timeout (10 s) + slack.
    let bound = Duration::from_secs(5 + 5 + 10 + 15);
    let status = a.wait_exit(bound).await;
    a_exited.store(true, Ordering::SeqCst);
    let status = status.unwrap_or_else(|| panic!("A still running {bound:?} after B started"));

    // Keep going until B has served a few requests on its own (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while tally.ok_after_exit.load(Ordering::SeqCst) < 20
        && !loops.iter().all(|l| l.is_finished())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.expect("client loop");
    }

    let failures = tally
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    eprintln!(
        "upgrade: {} requests, {} ok, {} ok after A exited, {} failed",
        tally.total.load(Ordering::SeqCst),
        tally.ok.load(Ordering::SeqCst),
        tally.ok_after_exit.load(Ordering::SeqCst),
        failures.len()
    );
    let (total, ok, after) = (
        tally.total.load(Ordering::SeqCst),
        tally.ok.load(Ordering::SeqCst),
        tally.ok_after_exit.load(Ordering::SeqCst),
    );
    // Without the hand-over (A closes, B binds anew) connections are refused in between: this
    // fails. Without `--upgrade`, B cannot bind while A holds the ports and exits with an error.
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed during the upgrade; first: {:?}\n--- B ---\n{}",
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>(),
        b.logs()
    );
    assert!(
        after >= 1,
        "no request was served after A exited ({ok} of {total} ok, all before); the loops \
         stopped too early (3000 requests or 25 s)"
    );
    assert!(
        status.success(),
        "A exited with {status} after handing over, expected 0"
    );
    assert!(
        a.logs()
            .contains("handing the listening sockets to the new process"),
        "A did not log the hand-over"
    );
    assert!(b.try_exit().is_none(), "B is not running after the upgrade");
    // B serves on its own now, and is the one the next upgrade finds.
    assert_all_served_by(
        &who_serves_new_connections(&cfg).await,
        "gateway",
        "B alone",
    );
    let (code, body) = ops_get(cfg.ops.expect("ops"), "/readyz")
        .await
        .expect("B's ops listener answers");
    assert_eq!(code, 200, "B /readyz: {body}");
    assert_eq!(
        std::fs::read_to_string(&pid_file)
            .map(|s| s.trim().to_owned())
            .ok(),
        Some(b.pid().to_string()),
        "the pid file does not name B"
    );
}

/// The one-host upgrade drains the old process's open WebSockets as SIGTERM does: they keep
/// flowing through Pingora's 5 s overlap, then the client and the upstream each get
/// `1001 Going Away`; A exits 0 once they are closed (overlap + `websocket_drain` + slack, long
/// before `shutdown_timeout`), and a new WebSocket on the same port is served by B.
///
/// `fast_path = true` only: the drain is the tunnel's own code, the same on both engines (and
/// websocket.rs runs the SIGTERM drain on both). Without the drain at the hand-over, A holds the
/// WebSocket until `shutdown_timeout` (60 s): no close frame comes and the exit bound fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_drains_the_old_process_websockets_with_going_away() {
    // Pingora's overlap (5 s) + websocket_drain (3 s) + slack (4 s), from the hand-over.
    const BOUND: Duration = Duration::from_secs(5 + 3 + 4);
    let terminal = Upstream::echo("terminal").await;
    let dir = tempfile::tempdir().expect("tempdir for the upgrade socket");
    let socket = socket_in(dir.path(), "up.sock");
    let cfg = EdgeConfig::new()
        .fast_path(true)
        .shutdown_timeout("60s")
        .websocket_drain("3s")
        .read_timeout("60s")
        .path(PathRule::new("/terminal", terminal.port).strip());
    let toml = toml_with_upgrade_socket(&cfg, &socket);
    let mut a = Router::start_raw(&toml, &cfg.listener_ports()).await;
    wait_for_pid_file(&dir.path().join("up.sock.pid"), &a).await;

    let alice = host("alice");
    let (mut ws, _) = ws_connect_plain(cfg.http_port(), &alice, "/terminal/ws")
        .await
        .expect("WebSocket through A");
    let back = ws_roundtrip(&mut ws, Message::text("before"), Duration::from_secs(10))
        .await
        .expect("echo through A");
    assert_eq!(back, Message::text("before"));

    // B signals A itself (SIGQUIT via the pid file) and takes the sockets over.
    let mut b = Router::spawn_upgrade(&toml);
    a.wait_for_log_while_running(
        "handing the listening sockets to the new process",
        Duration::from_secs(20),
    )
    .await;
    let handed = Instant::now();
    // The hand-over does not cut the WebSocket: it still echoes during the overlap.
    let back = ws_roundtrip(&mut ws, Message::text("overlap"), Duration::from_secs(3))
        .await
        .expect("echo through A during the overlap");
    assert_eq!(back, Message::text("overlap"));

    let tag = "A's WebSocket at the upgrade";
    match ws_next_message(&mut ws, BOUND, tag).await {
        Ok(Message::Close(Some(f))) => assert_eq!(
            f.code,
            CloseCode::Away,
            "{tag}: the close frame the client got"
        ),
        other => panic!("{tag}: the client got {other:?}, not a 1001 close"),
    }
    let closed_after = handed.elapsed();
    assert!(
        closed_after >= Duration::from_secs(4),
        "{tag}: closed {closed_after:?} after the hand-over, before Pingora's 5 s overlap ended"
    );
    // tungstenite answers the close as it reads on; A then closes the connection.
    ws_read_until_closed(&mut ws, BOUND.saturating_sub(handed.elapsed()), tag).await;
    let closes = terminal
        .wait_for_ws_closes(1, BOUND.saturating_sub(handed.elapsed()))
        .await;
    assert_eq!(
        closes,
        vec![Some(1001)],
        "the close codes the upstream received"
    );
    let status = a
        .wait_exit(BOUND.saturating_sub(handed.elapsed()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "A still running {BOUND:?} after the hand-over with its WebSocket drained \
                 (overlap 5 s, drain 3 s; shutdown_timeout 60 s must not be what ends it)"
            )
        });
    assert!(status.success(), "A exited with {status} after the upgrade");

    // B alone on the port: a new WebSocket echoes.
    assert!(b.try_exit().is_none(), "B is not running after the upgrade");
    let (mut ws, _) = ws_connect_plain(cfg.http_port(), &alice, "/terminal/ws")
        .await
        .expect("WebSocket through B");
    let back = ws_roundtrip(&mut ws, Message::text("after"), Duration::from_secs(10))
        .await
        .expect("echo through B");
    assert_eq!(back, Message::text("after"));
    assert_eq!(terminal.ws_paths().len(), 2, "{:?}", terminal.ws_paths());
}

/// SIGQUIT with no `run --upgrade` process waiting: one error line, and the router keeps
/// serving. (Pingora's own SIGQUIT handling would try to send the sockets, fail, and shut down:
/// the `is_running_now` and request assertions fail without the feature.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_without_a_waiting_process_keeps_serving() {
    let gateway = Upstream::echo("gateway").await;
    let dir = tempfile::tempdir().expect("tempdir for the upgrade socket");
    let socket = socket_in(dir.path(), "up.sock");
    let cfg = EdgeConfig::new()
        .with_ops()
        .path(PathRule::new("/", gateway.port));
    let mut router = Router::start_raw(
        &toml_with_upgrade_socket(&cfg, &socket),
        &cfg.listener_ports(),
    )
    .await;
    sigquit(&router);
    // While it waits for a receiver, it serves.
    assert_all_served_by(
        &who_serves_new_connections(&cfg).await,
        "gateway",
        "while waiting for a receiver",
    );
    // shutdown.rs: "SIGQUIT: no new process is waiting for the listening sockets …; still serving"
    let line = router
        .wait_for_log("no new process is waiting", Duration::from_secs(20))
        .await;
    assert!(line.contains("still serving"), "{line}");
    assert!(router.is_running_now(), "the router exited after SIGQUIT");
    assert_all_served_by(
        &who_serves_new_connections(&cfg).await,
        "gateway",
        "after SIGQUIT with no receiver",
    );
    let (code, body) = ops_get(cfg.ops.expect("ops"), "/readyz")
        .await
        .expect("ops answers");
    assert_eq!(code, 200, "/readyz after SIGQUIT: {body}");
    // Still exits 0 on SIGTERM afterwards (the signal loop goes on).
    router.sigterm();
    let status = router
        .wait_exit(Duration::from_secs(40))
        .await
        .expect("router exits after SIGTERM");
    assert!(status.success(), "exit status {status} after SIGTERM");
}

// ---------------------------------------------------------------------------------------------
// 3. health and --version

/// `health` exits 0 against a ready router and non-zero once none runs. (Without the command,
/// clap refuses `health` with exit 2: the first assertion fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_zero_when_ready_and_non_zero_without_a_router() {
    let gateway = Upstream::echo("gateway").await;
    let cfg = EdgeConfig::new()
        .with_ops()
        .path(PathRule::new("/", gateway.port));
    let mut router = Router::start(&cfg).await;
    let ops = cfg.ops.expect("ops");
    // /readyz is 200 first (it may lag the TCP accept by the first certificate load).
    let deadline = Instant::now() + Duration::from_secs(10);
    while ops_get(ops, "/readyz").await.map(|r| r.0) != Ok(200) {
        assert!(Instant::now() < deadline, "/readyz never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = router.config_path().to_owned();
    let out = cli_config(&["health"], &config);
    assert!(out.status.success(), "{}", out.describe());

    router.sigterm();
    router
        .wait_exit(Duration::from_secs(40))
        .await
        .expect("router exits after SIGTERM");
    let out = cli_config(&["health"], &config);
    assert!(
        !out.status.success(),
        "health succeeded with no router running\n{}",
        out.describe()
    );
    assert!(
        !out.stderr.is_empty(),
        "health failed silently\n{}",
        out.describe()
    );

    // A config without [ops] has nothing to ask.
    let dir = tempfile::tempdir().expect("tempdir");
    let no_ops = dir.path().join("no-ops.toml");
    std::fs::write(
        &no_ops,
        EdgeConfig::new().path(PathRule::new("/", 3000)).to_toml(),
    )
    .expect("write a config");
    let out = cli_config(&["health"], &no_ops);
    assert!(!out.status.success(), "{}", out.describe());
}

/// `--version` names the commit, and it is the commit `hubify_build_info` carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_the_commit_the_build_info_metric_carries() {
    let out = cli(&["--version"]);
    assert!(out.status.success(), "{}", out.describe());
    // "hubify-edge 0.1.0 (commit <sha>)"; without the commit: "hubify-edge 0.1.0".
    let commit = out
        .stdout
        .split("(commit ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(str::trim)
        .unwrap_or_else(|| panic!("--version names no commit: {:?}", out.stdout));
    assert!(!commit.is_empty(), "empty commit in {:?}", out.stdout);

    let gateway = Upstream::echo("gateway").await;
    let cfg = EdgeConfig::new()
        .with_ops()
        .path(PathRule::new("/", gateway.port));
    let _router = Router::start(&cfg).await;
    let m = scrape(cfg.ops.expect("ops")).await;
    let info = m
        .text
        .lines()
        .find(|l| l.starts_with("hubify_build_info{"))
        .unwrap_or_else(|| panic!("no hubify_build_info:\n{}", m.text));
    assert!(
        info.contains(&format!("\"{commit}\"")),
        "hubify_build_info does not carry the --version commit {commit:?}: {info}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. README vs /metrics

/// The `hubify_*` names in backticks in the README's Observability section: exact family names,
/// and prefixes (a name written `hubify_route_cache_*`).
fn readme_metric_names() -> (Vec<String>, Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let start = readme
        .find("\n## Observability")
        .unwrap_or_else(|| panic!("no `## Observability` section in {}", path.display()));
    let section = &readme[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let (mut names, mut prefixes) = (Vec::new(), Vec::new());
    // Backticked spans: every other piece between backticks.
    for span in section.split('`').skip(1).step_by(2) {
        let mut rest = span;
        while let Some(at) = rest.find("hubify_") {
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..len];
            if tail[len..].starts_with('*') {
                prefixes.push(name.to_owned());
            } else {
                names.push(name.to_owned());
            }
            rest = &tail[len..];
        }
    }
    (names, prefixes)
}

/// Every family the README lists is exported, and every exported `hubify_` family is in the
/// README, after one request of each kind and one WebSocket (`hubify_websockets_open` appears
/// only once a WebSocket opened). Fails whenever a family is added, renamed or dropped on one
/// side only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_metric_families_match_the_metrics_export() {
    let (names, prefixes) = readme_metric_names();
    assert!(
        names.len() >= 20,
        "found only {} metric names in the README's Observability section: {names:?}",
        names.len()
    );
    let s = Stack::start_with(|c| c.with_ops()).await;
    let alice = host("alice");
    let resp = try_http(s.http_port(), &Req::get(&alice, "/"))
        .await
        .expect("plain request");
    assert_eq!(served_by(&resp).as_deref(), Some("gateway"));
    let (resp, _) = https_alpn(
        s.https_port(),
        &alice,
        ALPN_H1,
        &Req::get(&alice, "/dashboard"),
    )
    .await;
    assert_eq!(served_by(&resp).as_deref(), Some("dashboard"));
    let (resp, proto) = https_alpn(s.https_port(), &alice, ALPN_H2, &Req::get(&alice, "/")).await;
    assert_eq!(proto.as_deref(), Some("h2"));
    assert_eq!(served_by(&resp).as_deref(), Some("gateway"));
    let nobody = host("nobody");
    let resp = try_http(s.http_port(), &Req::get(&nobody, "/"))
        .await
        .expect("unknown label");
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    let (mut ws, _) = ws_connect_plain(s.http_port(), &alice, "/terminal/ws")
        .await
        .unwrap_or_else(|e| panic!("WebSocket: {}", error_chain(e.as_ref())));
    ws_roundtrip(&mut ws, Message::text("ping"), Duration::from_secs(10))
        .await
        .expect("WebSocket echo");

    let ops = s.cfg.ops.expect("ops");
    let covered = |family: &str| {
        names.iter().any(|n| n == family) || prefixes.iter().any(|p| family.starts_with(p.as_str()))
    };
    let m = scrape_until(ops, METRIC_BOUND, |m| {
        let fams = m.families();
        names.iter().all(|n| fams.contains(n))
    })
    .await;
    let families = m.families();
    let missing: Vec<&String> = names.iter().filter(|n| !families.contains(*n)).collect();
    let empty_prefixes: Vec<&String> = prefixes
        .iter()
        .filter(|p| !families.iter().any(|f| f.starts_with(p.as_str())))
        .collect();
    let undocumented: Vec<&String> = families
        .iter()
        .filter(|f| f.starts_with("hubify_") && !covered(f))
        .collect();
    let _ = ws.close(None).await;
    assert!(
        missing.is_empty() && empty_prefixes.is_empty(),
        "the README lists metric families /metrics does not export: {missing:?} (prefixes \
         matching nothing: {empty_prefixes:?})\n--- exported ---\n{families:?}"
    );
    assert!(
        undocumented.is_empty(),
        "/metrics exports hubify_ families the README's Observability section does not list: \
         {undocumented:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. check: the ACME state dir
//
// (ops address = a listener's, `[log] level = "verbose"` and missing `tls.source = "files"` files
// are covered in config_errors.rs: ops_and_listeners_may_not_share_a_socket,
// a_log_level_that_is_not_a_level_is_refused, check_opens_the_certificate_files.)

/// `tls.source = "acme"` with `acme.state_dir` = `dir` (no Redis: the state dir is the store).
fn acme_toml(state_dir: &Path) -> String {
    let cfg = EdgeConfig::new().path(PathRule::new("/", 3000));
    let toml = cfg.to_toml();
    assert_eq!(toml.matches("[tls]\nsource = \"self-signed\"\n").count(), 1);
    let toml = toml.replacen(
        "[tls]\nsource = \"self-signed\"\n",
        "[tls]\nsource = \"acme\"\n",
        1,
    );
    format!(
        "{toml}\n[acme]\ndirectory = \"https://127.0.0.1:14000/dir\"\ncontact = \
         [\"mailto:ops@hubify.test\"]\nnames = [\"*.hubify.test\", \"hubify.test\"]\nstate_dir = \
         {}\n\n[acme.dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:5353\"\nzone = \
         \"hubify.test.\"\ntsig_key_name = \"acme-key\"\ntsig_algorithm = \"hmac-sha256\"\n",
        hubify_edge_tests::router::toml_str(&state_dir.to_string_lossy())
    )
}

/// A state dir that cannot exist (below a regular file) is refused naming `acme.state_dir`;
/// one that does not exist yet but can be created is accepted (app.rs `writable_dir`: "a
/// directory the process can write to, or could create"). Without the preflight check the first
/// assertion fails (the file itself is valid TOML and a valid config).
#[test]
fn check_refuses_an_acme_state_dir_that_cannot_be_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let impossible = file.join("acme");
    let toml = acme_toml(&impossible);
    let (out, _keep) = check_toml(&toml);
    assert!(
        !out.status.success(),
        "check accepted an ACME state dir below a regular file\n{}\n--- config ---\n{toml}",
        out.describe()
    );
    assert!(
        out.stderr.contains("`acme.state_dir`"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains(&impossible.display().to_string()),
        "{}",
        out.describe()
    );

    let later = dir.path().join("not-yet").join("acme");
    let toml = acme_toml(&later);
    let (out, _keep) = check_toml(&toml);
    assert!(
        out.status.success(),
        "check refused a state dir it could create\n{}\n--- config ---\n{toml}",
        out.describe()
    );
    assert!(!later.exists(), "check created the state dir");
}
