//! Observability end to end: the router binary as a real process, real upstream servers on
//! `127.0.0.1:0`, real clients (raw TCP for plain HTTP, rustls for the TLS listener, a WebSocket
//! through `/terminal`), then the ops listener scraped and the exact counters asserted.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const DOMAIN: &str = "hubify.test";
/// Generous bound for "it answers rather than hangs" (shared, noisy machine).
const BOUND: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The router process.

fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

struct Router {
    child: Child,
    _dir: tempfile::TempDir,
    stdout: PathBuf,
    https: SocketAddr,
    http: SocketAddr,
    redirect: SocketAddr,
    ops: SocketAddr,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Ports {
    https: u16,
    http: u16,
    redirect: u16,
    ops: u16,
}

impl Ports {
    fn free() -> Ports {
        Ports {
            https: free_port(),
            http: free_port(),
            redirect: free_port(),
            ops: free_port(),
        }
    }
}

fn start_router(ports: &Ports, paths: &str) -> Router {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"
domain = "{DOMAIN}"

[server]
threads = 2
grace_period = "0s"
shutdown_timeout = "1s"

[listeners.https]
address = "127.0.0.1:{https}"

[listeners.http]
address = "127.0.0.1:{http}"
dispatch = "forward"

[listeners.redirect]
address = "127.0.0.1:{redirect}"

[ops]
address = "127.0.0.1:{ops}"

[tls]
source = "self-signed"

[upstream]
connect_timeout = "2s"

[routes]
store = "static"

[[routes.static]]
label = "alice"
address = "127.0.0.1"

{paths}

[log]
format = "json"
level = "info"
"#,
        https = ports.https,
        http = ports.http,
        redirect = ports.redirect,
        ops = ports.ops,
    );
    let config_path = dir.path().join("router.toml");
    std::fs::File::create(&config_path)
        .and_then(|mut f| f.write_all(config.as_bytes()))
        .expect("write config");
    let stdout = dir.path().join("stdout.log");
    let child = Command::new(env!("CARGO_BIN_EXE_hubify-edge"))
        .arg("--config")
        .arg(&config_path)
        .arg("run")
        .env_remove("HUBIFY_EDGE_LOG")
        .stdout(Stdio::from(
            std::fs::File::create(&stdout).expect("stdout file"),
        ))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the hubify-edge binary");
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    Router {
        child,
        _dir: dir,
        stdout,
        https: at(ports.https),
        http: at(ports.http),
        redirect: at(ports.redirect),
        ops: at(ports.ops),
    }
}

impl Router {
    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Polls `/readyz` until it answers 200 (bounded).
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the router exited with {status}:\n{}", self.stdout());
            }
            if let Ok((200, _)) = ops_get(self.ops, "/readyz").await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz not 200 within {BOUND:?}:\n{}",
                self.stdout()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self) -> Metrics {
        let (status, body) = ops_get(self.ops, "/metrics")
            .await
            .expect("scrape /metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        Metrics::parse(&body)
    }

    /// Scrapes until `ready` holds for the scrape (bounded), and returns that scrape.
    async fn metrics_when(&self, what: &str, ready: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + BOUND;
        loop {
            let m = self.metrics().await;
            if ready(&m) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {BOUND:?}:\n{}",
                m.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The exposition, parsed.

struct Metrics {
    text: String,
    values: BTreeMap<String, f64>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let values = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect();
        Metrics {
            text: text.to_string(),
            values,
        }
    }

    fn get(&self, series: &str) -> Option<f64> {
        self.values.get(series).copied()
    }

    /// Asserts the exact line `series value` is in the exposition.
    fn assert_line(&self, series: &str, value: f64) {
        assert_eq!(
            self.get(series),
            Some(value),
            "expected `{series} {value}` in /metrics:\n{}",
            self.text
        );
    }

    fn sum(&self, family_prefix: &str) -> f64 {
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with(family_prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 by hand: one request per connection, the response read by its Content-Length.

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
) -> std::io::Result<(u16, String)> {
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "connection closed before the response head: {:?}",
                String::from_utf8_lossy(&buf)
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    Ok((status, body))
}

fn request(host: &str, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

async fn http_get(addr: SocketAddr, host: &str, path: &str, extra: &str) -> (u16, String) {
    let s = tokio::time::timeout(BOUND, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    tokio::time::timeout(BOUND, exchange(s, &request(host, path, extra)))
        .await
        .expect("answer in time")
        .expect("HTTP exchange")
}

async fn ops_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let s = TcpStream::connect(addr).await?;
    tokio::time::timeout(BOUND, exchange(s, &request("ops", path, "")))
        .await
        .map_err(|_| std::io::Error::other("ops timeout"))?
}

/// Accepts whatever certificate the router shows (its self-signed one is generated at start),
/// still checking the handshake signatures with ring.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn https_get(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect https");
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("server name");
    let tls = tokio::time::timeout(BOUND, tls_connector().connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake with the router");
    tokio::time::timeout(BOUND, exchange(tls, &request(host, path, "")))
        .await
        .expect("answer in time")
        .expect("HTTPS exchange")
}

// ---------------------------------------------------------------------------------------------
// Upstreams.

/// An HTTP/1.1 server answering `200 gateway` and closing every connection (so each forwarded
/// request opens exactly one new upstream connection).
async fn gateway() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\ngateway",
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A WebSocket echo server (stands in for ttyd behind `/terminal`).
async fn websocket_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let echo = msg.is_text() || msg.is_binary();
                    if echo && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// Real traffic of every kind, then the exact counter lines and histogram counts it must have
/// produced; the access log as one JSON object per request; the certificate and build gauges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_produces_exact_metrics_and_access_lines() {
    let gw = gateway().await;
    let ws = websocket_echo().await;
    let closed = free_port();
    let paths = format!(
        r#"
[[paths]]
prefix = "/terminal"
port = {ws}
strip_prefix = true
idle_timeout = "1h"

[[paths]]
prefix = "/dead"
port = {closed}

[[paths]]
prefix = "/"
port = {gw}
"#,
        ws = ws.port(),
        gw = gw.port(),
    );
    let ports = Ports::free();
    let mut router = start_router(&ports, &paths);
    router.wait_ready().await;

    assert_eq!(
        ops_get(router.ops, "/healthz").await.expect("healthz"),
        (200, "ok\n".to_string())
    );
    assert_eq!(
        ops_get(router.ops, "/readyz").await.expect("readyz"),
        (200, "ready\n".to_string())
    );

    let host = format!("alice.{DOMAIN}");
    // Secrets a client sends that must never reach the log.
    let secrets =
        "Cookie: session=cookie-secret-1234\r\nAuthorization: Bearer auth-secret-5678\r\n\
                   User-Agent: probe/1.0\r\n";
    for _ in 0..3 {
        assert_eq!(
            http_get(router.http, &host, "/?t=query-secret-9999", secrets).await,
            (200, "gateway".into())
        );
    }
    for _ in 0..2 {
        assert_eq!(
            https_get(router.https, &host, "/").await,
            (200, "gateway".into())
        );
    }
    let (status, _) = http_get(router.http, &format!("bob.{DOMAIN}"), "/", "").await;
    assert_eq!(status, 404);
    let (status, _) = http_get(router.http, &host, "/dead/x", "").await;
    assert_eq!(status, 502);
    let (status, _) = http_get(router.redirect, &host, "/r", "").await;
    assert_eq!(status, 308);

    // Not TLS at all on the TLS port: a failed handshake.
    {
        let mut s = TcpStream::connect(router.https)
            .await
            .expect("connect https");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(BOUND, s.read_to_end(&mut sink)).await;
    }

    // A WebSocket through /terminal: open while it is open, closed after.
    let open_key = r#"hubify_websockets_open{rule="terminal"}"#;
    {
        let tcp = TcpStream::connect(router.http).await.expect("connect http");
        let (mut socket, resp) = tokio::time::timeout(
            BOUND,
            tokio_tungstenite::client_async(format!("ws://{host}/terminal"), tcp),
        )
        .await
        .expect("upgrade in time")
        .expect("WebSocket upgrade through the router");
        assert_eq!(resp.status(), 101);
        socket.send(Message::text("hello")).await.expect("send");
        let echoed = tokio::time::timeout(BOUND, socket.next())
            .await
            .expect("echo in time")
            .expect("a message")
            .expect("not an error");
        assert_eq!(echoed, Message::text("hello"));
        // The open WebSocket is a request in flight and an open connection of its listener.
        let m = router
            .metrics_when("websocket gauge at 1", |m| m.get(open_key) == Some(1.0))
            .await;
        m.assert_line(r#"hubify_requests_in_flight{listener="http"}"#, 1.0);
        m.assert_line(r#"hubify_connections_open{listener="http"}"#, 1.0);
        m.assert_line(r#"hubify_requests_in_flight{listener="https"}"#, 0.0);
        socket.close(None).await.expect("close");
        while let Ok(Some(Ok(_))) = tokio::time::timeout(BOUND, socket.next()).await {}
    }
    router
        .metrics_when("websocket gauge back at 0", |m| {
            m.get(open_key) == Some(0.0)
                && m.get(r#"hubify_requests_in_flight{listener="http"}"#) == Some(0.0)
                && m.get(r#"hubify_connections_open{listener="http"}"#) == Some(0.0)
        })
        .await;

    // Every request is logged (and counted) when it ends; wait for all 9, then demand exact values.
    let m = router
        .metrics_when("nine requests counted and the TLS failure seen", |m| {
            m.sum("hubify_requests_total{") >= 9.0
                && m.get(r#"hubify_tls_handshakes_total{result="error",version="none"}"#)
                    >= Some(1.0)
        })
        .await;
    let requests = |listener: &str, outcome: &str, rule: &str, class: &str| {
        format!(
            r#"hubify_requests_total{{listener="{listener}",outcome="{outcome}",rule="{rule}",status_class="{class}"}}"#
        )
    };
    m.assert_line(&requests("http", "forward", "gateway", "2xx"), 3.0);
    m.assert_line(&requests("https", "forward", "gateway", "2xx"), 2.0);
    m.assert_line(&requests("http", "not_found", "none", "4xx"), 1.0);
    m.assert_line(&requests("http", "error", "dead", "5xx"), 1.0);
    m.assert_line(&requests("http", "forward", "terminal", "1xx"), 1.0);
    m.assert_line(&requests("redirect", "redirect", "none", "3xx"), 1.0);
    assert_eq!(
        m.sum("hubify_requests_total{"),
        9.0,
        "no other request counted:\n{}",
        m.text
    );

    let duration_count = |outcome: &str, rule: &str| {
        format!(r#"hubify_request_duration_seconds_count{{outcome="{outcome}",rule="{rule}"}}"#)
    };
    m.assert_line(&duration_count("forward", "gateway"), 5.0);
    m.assert_line(&duration_count("not_found", "none"), 1.0);
    m.assert_line(&duration_count("error", "dead"), 1.0);
    m.assert_line(&duration_count("redirect", "none"), 1.0);
    assert_eq!(
        m.get(&duration_count("forward", "terminal")),
        None,
        "WebSocket sessions are not timed"
    );

    // Five gateway requests and one WebSocket, each on a new upstream connection; the dead rule
    // never connected.
    m.assert_line("hubify_upstream_connect_duration_seconds_count", 6.0);
    m.assert_line(r#"hubify_upstream_connections_total{reused="false"}"#, 6.0);
    m.assert_line(r#"hubify_upstream_connections_total{reused="true"}"#, 0.0);
    m.assert_line(
        r#"hubify_upstream_errors_total{kind="connect_refused"}"#,
        1.0,
    );
    m.assert_line(
        r#"hubify_upstream_errors_total{kind="connect_timeout"}"#,
        0.0,
    );

    // alice: 3 + 2 + 1 (dead) + 1 (WebSocket); bob: unknown. Redirect listener: no lookup.
    m.assert_line(r#"hubify_route_lookups_total{result="found"}"#, 7.0);
    m.assert_line(r#"hubify_route_lookups_total{result="not_found"}"#, 1.0);
    // The static store has no cache.
    m.assert_line("hubify_route_cache_hits_total", 0.0);

    // By the version agreed (none when the handshake failed).
    m.assert_line(
        r#"hubify_tls_handshakes_total{result="ok",version="1.3"}"#,
        2.0,
    );
    m.assert_line(
        r#"hubify_tls_handshakes_total{result="ok",version="1.2"}"#,
        0.0,
    );
    m.assert_line(
        r#"hubify_tls_handshakes_total{result="error",version="none"}"#,
        1.0,
    );
    m.assert_line(
        r#"hubify_tls_handshakes_total{result="timeout",version="none"}"#,
        0.0,
    );

    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    for name in [format!("*.{DOMAIN}"), DOMAIN.to_string()] {
        let key = format!(r#"hubify_tls_certificate_not_after_seconds{{name="{name}"}}"#);
        let not_after = m
            .get(&key)
            .unwrap_or_else(|| panic!("{key} missing:\n{}", m.text));
        assert!(not_after > now, "{key} = {not_after} is not in the future");
    }

    let build = m
        .values
        .keys()
        .find(|k| k.starts_with("hubify_build_info{"))
        .unwrap_or_else(|| panic!("no hubify_build_info:\n{}", m.text));
    assert!(build.contains(r#"version="0.1.0""#), "{build}");
    let commit = build
        .split("git_commit=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default();
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "git_commit = {commit:?}"
    );
    // CPU to the microsecond (process_cpu_seconds_total moves in whole seconds): a counter with
    // a fractional part (an exact integer has odds of one in a million).
    assert!(m
        .text
        .contains("# TYPE hubify_process_cpu_seconds_total counter"));
    let cpu = m.get("hubify_process_cpu_seconds_total").expect("cpu");
    assert!(cpu > 0.0 && cpu.fract() != 0.0, "cpu seconds {cpu}");
    let start = m.get("hubify_start_time_seconds").expect("start time");
    assert!(start > 0.0 && start <= now + 1.0, "start time {start}");
    assert!(
        m.get("process_start_time_seconds").is_some(),
        "process collector:\n{}",
        m.text
    );
    assert!(m
        .get("process_resident_memory_bytes")
        .is_some_and(|v| v > 0.0));

    // Every metric the Grafana dashboard queries exists on this page.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    ))
    .expect("deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    m.text.contains(&format!("# TYPE {family} ")),
                    "the dashboard queries {name}, which /metrics does not have"
                );
                queried += 1;
            }
        }
    }
    assert!(queried > 30, "the dashboard queries only {queried} metrics");

    // Bounded labels: no workspace label, host or path leaks into the exposition.
    for leak in ["alice", "bob", "/dead", "/terminal"] {
        assert!(
            !m.text.contains(leak),
            "{leak:?} appears in /metrics:\n{}",
            m.text
        );
    }

    // The access log: one JSON object per line, one `access` line per proxied request.
    // (A request is counted just before its line is written: wait for the lines too.)
    let deadline = Instant::now() + BOUND;
    let (stdout, access) = loop {
        let stdout = router.stdout();
        let mut access = Vec::new();
        for line in stdout.lines().filter(|l| l.ends_with('}')) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout line is not one JSON object ({e}): {line}"));
            if v["target"] == "access" {
                access.push(v);
            }
        }
        if access.len() >= 8 || Instant::now() > deadline {
            break (stdout, access);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Complete lines only (the process may be writing one right now).
    for line in stdout
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter(|l| !l.trim().is_empty())
    {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "stdout line is not one JSON object: {line}"
        );
    }
    assert_eq!(
        access.len(),
        8,
        "8 proxied requests (the redirect listener has no access line):\n{stdout}"
    );
    for field in [
        "timestamp",
        "request_id",
        "listener",
        "method",
        "label",
        "outcome",
        "rule",
        "status",
        "duration_ms",
        "upstream",
        "bytes_sent",
        "bytes_received",
        "client",
        "error",
        "host",
        "path",
        "protocol",
        "tls_version",
        "user_agent",
        "auth",
    ] {
        for a in &access {
            assert!(a.get(field).is_some(), "access line without {field}: {a}");
        }
    }
    let forwarded: Vec<_> = access
        .iter()
        .filter(|a| a["outcome"] == "forward" && a["rule"] == "gateway")
        .collect();
    assert_eq!(forwarded.len(), 5);
    for a in &forwarded {
        assert_eq!(a["label"], "alice");
        assert_eq!(a["status"], 200);
        assert_eq!(a["upstream"], gw.to_string());
        assert_eq!(a["client"], "127.0.0.1");
        assert_eq!(a["bytes_sent"], 7);
        assert_eq!(a["request_id"].as_str().map(str::len), Some(32), "{a}");
        assert_eq!(a["host"], host, "{a}");
        // The path without its query (which may carry a token).
        assert_eq!(a["path"], "/", "{a}");
        assert_eq!(a["protocol"], "HTTP/1.1", "{a}");
        // Missing values are null, not "-".
        assert!(a["error"].is_null() && a["auth"].is_null(), "{a}");
        if a["listener"] == "https" {
            assert_eq!(a["tls_version"], "1.3", "{a}");
            assert!(a["user_agent"].is_null(), "{a}");
        } else {
            assert!(a["tls_version"].is_null(), "{a}");
            assert_eq!(a["user_agent"], "probe/1.0", "{a}");
        }
    }
    assert_eq!(
        forwarded
            .iter()
            .filter(|a| a["listener"] == "https")
            .count(),
        2
    );
    let not_found = access
        .iter()
        .find(|a| a["status"] == 404)
        .expect("404 line");
    assert_eq!(not_found["label"], "bob");
    assert_eq!(not_found["outcome"], "not_found");
    assert_eq!(not_found["rule"], "none");
    assert!(not_found["upstream"].is_null(), "{not_found}");
    let dead = access
        .iter()
        .find(|a| a["status"] == 502)
        .expect("502 line");
    assert_eq!(dead["rule"], "dead");
    // As in hubify_upstream_errors_total{kind}.
    assert_eq!(dead["error"], "connect_refused");
    assert_eq!(dead["path"], "/dead/x");
    assert_eq!(dead["upstream"], format!("127.0.0.1:{closed}"));
    let ws_line = access
        .iter()
        .find(|a| a["status"] == 101)
        .expect("101 line");
    assert_eq!(ws_line["rule"], "terminal");
    assert_eq!(ws_line["upstream"], ws.to_string());

    for secret in [
        "cookie-secret-1234",
        "auth-secret-5678",
        "query-secret-9999",
    ] {
        assert!(
            !stdout.contains(secret),
            "{secret} reached the log:\n{stdout}"
        );
    }
    // Pingora's own `log` output arrives through the bridge, as JSON with its real target.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(r#""target":"pingora_core::"#)),
        "no line of Pingora's in the log:\n{stdout}"
    );
    // The failed handshake (a non-TLS client on the TLS port) is logged with the client.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("TLS handshake failed") && l.contains(r#""client":"127.0.0.1:"#)),
        "the failed handshake is not in the log:\n{stdout}"
    );
}

/// The `hubify_*` and `process_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("hubify_") || rest.starts_with("process_")) {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            names.push(rest[..len].to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

/// `/readyz` names a listener the process could not bind, and turns ready once it binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_an_unbound_listener_until_it_binds() {
    let gw = gateway().await;
    let ports = Ports::free();
    // Someone else holds the https port; Pingora retries the bind every second for 30 s.
    let squatter = StdListener::bind(("127.0.0.1", ports.https)).expect("hold the https port");
    let paths = format!("[[paths]]\nprefix = \"/\"\nport = {}\n", gw.port());
    let mut router = start_router(&ports, &paths);

    let deadline = Instant::now() + BOUND;
    let body = loop {
        if let Ok(Some(status)) = router.child.try_wait() {
            panic!("the router exited with {status}:\n{}", router.stdout());
        }
        if let Ok((status, body)) = ops_get(router.ops, "/readyz").await {
            if body == "not ready: listener_https\n" {
                assert_eq!(status, 503);
                break body;
            }
            assert_ne!(
                status, 200,
                "ready while the https port is held by another socket: {body}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never named listener_https"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body, "not ready: listener_https\n");
    assert_eq!(
        ops_get(router.ops, "/healthz").await.expect("healthz").0,
        200
    );
    // The other listeners serve meanwhile.
    let host = format!("alice.{DOMAIN}");
    assert_eq!(
        http_get(router.http, &host, "/", "").await,
        (200, "gateway".into())
    );

    drop(squatter);
    router.wait_ready().await;
    assert_eq!(
        https_get(router.https, &host, "/").await,
        (200, "gateway".into())
    );
}
