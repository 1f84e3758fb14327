//! `tls.source = "acme"` end to end: the real router binary against real pebble + knotd (+ a real
//! redis-server), TLS handshakes verified against pebble's issuing root.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hubify_edge_acme::testenv::{free_port, redis_cmd, AcmeEnv, Redis};

const DOMAIN: &str = "hubify.test";

/// A running router process, killed on drop.
struct Router {
    child: Option<Child>,
    log: PathBuf,
    https: SocketAddr,
    ops: SocketAddr,
    config: PathBuf,
}

impl Router {
    fn start(
        dir: &Path,
        name: &str,
        acme_toml: &str,
        redis: Option<&str>,
        env: &[(&str, &str)],
    ) -> Router {
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let redis = redis
            .map(|u| format!("[redis]\nurl = \"{u}\"\nkey_prefix = \"t\"\n"))
            .unwrap_or_default();
        let toml = format!(
            "paths = \"standard\"\ndomain = \"{DOMAIN}\"\n[server]\nthreads = 1\ngrace_period = \"0s\"\nshutdown_timeout = \"1s\"\n\
             [listeners.https]\naddress = \"{https}\"\n[ops]\naddress = \"{ops}\"\n[tls]\nsource = \"acme\"\n\
             [[routes.static]]\nlabel = \"alice\"\naddress = \"127.0.0.1\"\n{redis}\n{acme_toml}"
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubify-edge"));
        cmd.arg("--config")
            .arg(&config)
            .arg("run")
            .env("HUBIFY_EDGE_LOG", "info,hubify_edge_acme=debug")
            .env_remove("HUBIFY_EDGE_TSIG_SECRET")
            .env_remove("CLOUDFLARE_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Router {
            child: Some(child),
            log,
            https,
            ops,
            config,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn readyz(&self) -> Option<(u16, String)> {
        http_get(self.ops, "/readyz")
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(c) = &mut self.child {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("router exited ({st}):\n{}", self.log_text());
                }
            }
            if matches!(self.readyz(), Some((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "router not ready within {limit:?}: {:?}\n{}",
            self.readyz(),
            self.log_text()
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.stop();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn tls_config(root_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A full TLS handshake to `addr` for `sni`, verified; returns the leaf's serial (hex).
fn handshake(
    addr: SocketAddr,
    sni: &str,
    config: &Arc<rustls::ClientConfig>,
) -> Result<String, String> {
    let name =
        rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    sock.set_write_timeout(Some(Duration::from_secs(10))).ok();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    Ok(cert.raw_serial_as_string())
}

fn wait_serial(
    r: &Router,
    config: &Arc<rustls::ClientConfig>,
    limit: Duration,
    accept: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match handshake(r.https, &format!("alice.{DOMAIN}"), config) {
            Ok(s) if accept(&s) => return s,
            Ok(s) => last = format!("serial {s}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no acceptable certificate within {limit:?} (last: {last})\n{}",
        r.log_text()
    );
}

fn cli(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubify-edge"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("HUBIFY_EDGE_TSIG_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_missing_tsig_secret_is_a_start_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let acme = "[acme]\ndirectory = \"https://127.0.0.1:9/dir\"\nstate_dir = \"state\"\n\
                [acme.dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:53\"\nzone = \"hubify.test.\"\ntsig_key_name = \"k\"\n";
    let mut r = Router::start(dir.path(), "r", acme, None, &[]);
    let status = r.child.as_mut().unwrap().wait().unwrap();
    assert!(!status.success());
    let log = r.log_text();
    assert!(log.contains("HUBIFY_EDGE_TSIG_SECRET"), "{log}");
    let mut r = Router::start(
        dir.path(),
        "r2",
        acme,
        None,
        &[("HUBIFY_EDGE_TSIG_SECRET", "not base64!")],
    );
    assert!(!r.child.as_mut().unwrap().wait().unwrap().success());
    assert!(
        r.log_text().contains("not valid base64"),
        "{}",
        r.log_text()
    );
}

#[test]
fn no_certificate_yet_fails_handshakes_and_is_not_ready() {
    let env = AcmeEnv::start(DOMAIN, 3600);
    let dir = tempfile::tempdir().unwrap();
    // A directory nobody listens on: issuance keeps failing, nothing is served.
    let closed = free_port();
    let acme = env
        .acme_toml(
            &dir.path().join("state"),
            "retry_initial = \"200ms\"\nretry_max = \"1s\"",
        )
        .replace(
            &env.pebble.directory,
            &format!("https://127.0.0.1:{closed}/dir"),
        );
    let mut r = Router::start(
        dir.path(),
        "r",
        &acme,
        None,
        &[("HUBIFY_EDGE_TSIG_SECRET", &env.knot.secret)],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !r.log_text().contains("ACME issuance failed") {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        r.log_text().contains("ACME issuance failed"),
        "{}",
        r.log_text()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && r.readyz().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = r.readyz().unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("certificate"), "{body}");
    let config = tls_config(&env.pebble.issuing_root_pem());
    assert!(handshake(r.https, &format!("alice.{DOMAIN}"), &config).is_err());
    r.stop();
}

#[test]
fn first_issuance_serves_wildcard_and_apex_only() {
    let env = AcmeEnv::start(DOMAIN, 3600);
    let dir = tempfile::tempdir().unwrap();
    let acme = env.acme_toml(&dir.path().join("state"), "");
    let mut r = Router::start(
        dir.path(),
        "r",
        &acme,
        None,
        &[("HUBIFY_EDGE_TSIG_SECRET", &env.knot.secret)],
    );
    r.wait_ready(Duration::from_secs(60));
    let config = tls_config(&env.pebble.issuing_root_pem());
    let s1 = handshake(r.https, &format!("alice.{DOMAIN}"), &config).unwrap();
    let s2 = handshake(r.https, DOMAIN, &config).unwrap();
    assert_eq!(s1, s2);
    let e = handshake(r.https, &format!("a.b.{DOMAIN}"), &config).unwrap_err();
    assert!(
        e.contains("NotValidForName") || e.contains("not valid for"),
        "{e}"
    );
    assert!(
        env.knot
            .txt(&format!("_acme-challenge.{DOMAIN}"))
            .is_empty(),
        "TXT cleaned up"
    );

    let (ok, out) = cli(&r.config, &["cert", "status"], &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("names: *.hubify.test, hubify.test")
            || out.contains("names: hubify.test, *.hubify.test"),
        "{out}"
    );
    assert!(
        out.contains("next-renewal:")
            && out.contains("not-after:")
            && out.contains("source: state dir"),
        "{out}"
    );
    assert!(out.contains(&s1.replace(':', "").to_uppercase()), "{out}");

    // Without Redis, a `cert renew` from another process lands in the state dir; the running
    // router notices it there and swaps it in.
    let secret = [("HUBIFY_EDGE_TSIG_SECRET", env.knot.secret.as_str())];
    let (ok, out) = cli(&r.config, &["cert", "renew"], &secret);
    assert!(ok, "{out}");
    let renewed = wait_serial(&r, &config, Duration::from_secs(60), |s| s != s1);
    assert_eq!(handshake(r.https, DOMAIN, &config).unwrap(), renewed);
}

#[test]
fn renewals_swap_in_without_a_failed_handshake() {
    let env = AcmeEnv::start(DOMAIN, 30);
    let dir = tempfile::tempdir().unwrap();
    let acme = env.acme_toml(&dir.path().join("state"), "check_interval = \"1s\"");
    let mut r = Router::start(
        dir.path(),
        "r",
        &acme,
        None,
        &[("HUBIFY_EDGE_TSIG_SECRET", &env.knot.secret)],
    );
    r.wait_ready(Duration::from_secs(60));
    let config = tls_config(&env.pebble.issuing_root_pem());
    let mut serials: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    let mut handshakes = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while serials.len() < 3 && Instant::now() < deadline {
        match handshake(r.https, &format!("alice.{DOMAIN}"), &config) {
            Ok(s) => {
                if serials.last() != Some(&s) {
                    serials.push(s);
                }
            }
            Err(e) => failures.push(e),
        }
        handshakes += 1;
    }
    eprintln!("{handshakes} handshakes, serials seen in order: {serials:?}");
    if std::env::var_os("SHOW_ROUTER_LOG").is_some() {
        eprintln!("{}", r.log_text());
    }
    assert!(
        failures.is_empty(),
        "{} failed handshakes: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        serials.len(),
        3,
        "two renewals within the time limit:\n{}",
        r.log_text()
    );
    let distinct: BTreeSet<_> = serials.iter().collect();
    assert_eq!(distinct.len(), 3);
}

#[test]
fn two_replicas_share_one_order_per_renewal() {
    let env = AcmeEnv::start(DOMAIN, 30);
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = [("HUBIFY_EDGE_TSIG_SECRET", env.knot.secret.as_str())];
    let a_toml = env.acme_toml(&dir.path().join("state-a"), "check_interval = \"1s\"");
    let b_toml = env.acme_toml(&dir.path().join("state-b"), "check_interval = \"1s\"");
    let mut a = Router::start(dir.path(), "a", &a_toml, Some(&redis.url()), &secret);
    let mut b = Router::start(dir.path(), "b", &b_toml, Some(&redis.url()), &secret);
    a.wait_ready(Duration::from_secs(60));
    b.wait_ready(Duration::from_secs(60));
    let config = tls_config(&env.pebble.issuing_root_pem());
    let orders = || {
        redis_cmd(redis.port, "GET t:acme:orders")
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };

    let first = wait_serial(&a, &config, Duration::from_secs(30), |_| true);
    wait_serial(&b, &config, Duration::from_secs(30), |s| s == first);
    assert_eq!(orders(), 1, "one order for the first issuance");

    // Through a renewal: both serve the new certificate, one more order.
    let second = wait_serial(&a, &config, Duration::from_secs(60), |s| s != first);
    wait_serial(&b, &config, Duration::from_secs(30), |s| s == second);
    assert_eq!(
        orders(),
        2,
        "one order per renewal\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );

    // A forced renewal from the CLI under the same lock: both swap to it.
    let (ok, out) = cli(&a.config, &["cert", "renew"], &secret);
    assert!(ok, "{out}");
    let third = wait_serial(&a, &config, Duration::from_secs(30), |s| {
        s != first && s != second
    });
    wait_serial(&b, &config, Duration::from_secs(30), |s| s == third);
    let n = orders();
    assert!(
        n == 3 || n == 4,
        "forced renewal is one order (plus at most one scheduled renewal): {n}"
    );
    let issued_a = a.log_text().matches("ACME certificate issued").count();
    let issued_b = b.log_text().matches("ACME certificate issued").count();
    assert_eq!(issued_a + issued_b + 1, n as usize, "issuances = orders");
    let (ok, out) = cli(&a.config, &["cert", "status"], &[]);
    assert!(
        ok && out.contains("source: redis t:tls:hubify.test"),
        "{out}"
    );
}

#[test]
fn restart_with_redis_down_serves_the_disk_copy() {
    let env = AcmeEnv::start(DOMAIN, 3600);
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = [("HUBIFY_EDGE_TSIG_SECRET", env.knot.secret.as_str())];
    let toml = env.acme_toml(&dir.path().join("state"), "check_interval = \"1s\"");
    let mut r = Router::start(dir.path(), "r", &toml, Some(&redis.url()), &secret);
    r.wait_ready(Duration::from_secs(60));
    let config = tls_config(&env.pebble.issuing_root_pem());
    let serial = handshake(r.https, &format!("alice.{DOMAIN}"), &config).unwrap();
    r.stop();
    redis.stop();

    let mut r2 = Router::start(dir.path(), "r2", &toml, Some(&redis.url()), &secret);
    r2.wait_ready(Duration::from_secs(30));
    assert_eq!(
        handshake(r2.https, &format!("alice.{DOMAIN}"), &config).unwrap(),
        serial
    );
    // Still serving after a few checks against the dead Redis.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !r2
            .log_text()
            .contains("cannot read the certificate from Redis")
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        r2.log_text()
            .contains("cannot read the certificate from Redis"),
        "{}",
        r2.log_text()
    );
    assert_eq!(handshake(r2.https, DOMAIN, &config).unwrap(), serial);
    let (ok, out) = cli(&r2.config, &["cert", "status"], &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("Redis unavailable") && out.contains("source: state dir"),
        "{out}"
    );
}

#[test]
fn wrong_tsig_secret_keeps_the_old_certificate_and_backs_off() {
    let env = AcmeEnv::start(DOMAIN, 3600);
    let dir = tempfile::tempdir().unwrap();
    let good = env.acme_toml(&dir.path().join("state"), "");
    let mut r = Router::start(
        dir.path(),
        "good",
        &good,
        None,
        &[("HUBIFY_EDGE_TSIG_SECRET", &env.knot.secret)],
    );
    r.wait_ready(Duration::from_secs(60));
    let config = tls_config(&env.pebble.issuing_root_pem());
    let serial = handshake(r.https, &format!("alice.{DOMAIN}"), &config).unwrap();
    r.stop();

    // Always due for renewal, with a wrong secret: every attempt fails.
    let bad = env.acme_toml(
        &dir.path().join("state"),
        "renew_before = \"3650d\"\nretry_initial = \"300ms\"\nretry_max = \"1200ms\"\ncheck_interval = \"1s\"",
    );
    let mut r = Router::start(
        dir.path(),
        "bad",
        &bad,
        None,
        &[(
            "HUBIFY_EDGE_TSIG_SECRET",
            "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0xMjM0NTY=",
        )],
    );
    r.wait_ready(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && r.log_text().matches("ACME issuance failed").count() < 5 {
        assert_eq!(
            handshake(r.https, &format!("alice.{DOMAIN}"), &config).unwrap(),
            serial
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = r.log_text();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ACME issuance failed"))
        .collect();
    assert!(failures.len() >= 5, "{log}");
    assert!(
        failures[0].contains("BADSIG") && failures[0].contains("HUBIFY_EDGE_TSIG_SECRET"),
        "{}",
        failures[0]
    );
    let delays: Vec<u64> = failures
        .iter()
        .map(|l| {
            let v = l.split("retry_in_ms=").nth(1).unwrap();
            v.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        &delays[..5],
        &[300, 600, 1200, 1200, 1200],
        "exponential backoff, capped"
    );
    assert_eq!(
        handshake(r.https, DOMAIN, &config).unwrap(),
        serial,
        "the old certificate keeps serving"
    );
    assert!(env
        .knot
        .txt(&format!("_acme-challenge.{DOMAIN}"))
        .is_empty());
}

/// A stand-in for the few Cloudflare endpoints the provider uses, with real state; created and
/// deleted records are mirrored into knotd (RFC 2136) so pebble's validation sees them.
struct FakeCloudflare {
    addr: SocketAddr,
    state: Arc<Mutex<CfState>>,
    _rt: tokio::runtime::Runtime,
}

#[derive(Default)]
struct CfState {
    records: HashMap<String, (String, String)>,
    next_id: u64,
    created: u64,
    deleted: u64,
    unauthorized: u64,
}

impl FakeCloudflare {
    fn start(knot: &hubify_edge_acme::testenv::Knot, token: &str) -> FakeCloudflare {
        use base64::Engine;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let secret = base64::engine::general_purpose::STANDARD
            .decode(&knot.secret)
            .unwrap();
        let key = hubify_edge_acme::dns::wire::TsigKey::new(
            &knot.key_name,
            hubify_edge_acme::dns::wire::TsigAlgorithm::HmacSha256,
            &secret,
        );
        let mirror = Arc::new(hubify_edge_acme::dns::rfc2136::Rfc2136::new(
            knot.addr, &knot.zone, key,
        ));
        let state = Arc::new(Mutex::new(CfState::default()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (st, token) = (state.clone(), token.to_string());
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_cf(sock, st.clone(), token.clone(), mirror.clone()));
            }
        });
        FakeCloudflare {
            addr,
            state,
            _rt: rt,
        }
    }
}

async fn serve_cf(
    mut sock: tokio::net::TcpStream,
    state: Arc<Mutex<CfState>>,
    token: String,
    mirror: Arc<hubify_edge_acme::dns::rfc2136::Rfc2136>,
) {
    use hubify_edge_acme::dns::DnsProvider;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        // One request: head, then Content-Length bytes.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end + 4..head_end + 4 + len].to_vec();
        buf.drain(..head_end + 4 + len);
        let mut parts = head.lines().next().unwrap_or("").split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let authorized = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {token}")));
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let base = "/client/v4/zones/zone123";
        let ok = |result: serde_json::Value| {
            (
                200,
                serde_json::json!({"success": true, "errors": [], "result": result}),
            )
        };
        let (status, json) = if !authorized {
            state.lock().unwrap().unauthorized += 1;
            (
                403,
                serde_json::json!({"success": false, "errors": [{"code": 10000, "message": "Authentication error"}], "result": null}),
            )
        } else if method == "GET" && path == format!("{base}/dns_records") {
            let name = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("name="))
                .unwrap_or("")
                .to_string();
            let st = state.lock().unwrap();
            let list: Vec<_> = st
                .records
                .iter()
                .filter(|(_, (n, _))| *n == name)
                .map(|(id, (n, c))| serde_json::json!({"id": id, "type": "TXT", "name": n, "content": format!("\"{c}\"")}))
                .collect();
            ok(serde_json::json!(list))
        } else if method == "POST" && path == format!("{base}/dns_records") {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let name = v["name"].as_str().unwrap_or("").to_string();
            let content = v["content"].as_str().unwrap_or("").to_string();
            mirror.add_txt(&name, &content).await.unwrap();
            let mut st = state.lock().unwrap();
            st.next_id += 1;
            st.created += 1;
            let id = format!("rec{}", st.next_id);
            st.records
                .insert(id.clone(), (name.clone(), content.clone()));
            ok(serde_json::json!({"id": id, "type": "TXT", "name": name, "content": content}))
        } else if method == "DELETE" && path.starts_with(&format!("{base}/dns_records/")) {
            let id = path.rsplit('/').next().unwrap_or("").to_string();
            let removed = state.lock().unwrap().records.remove(&id);
            match removed {
                Some((name, content)) => {
                    mirror.remove_txt(&name, &content).await.unwrap();
                    state.lock().unwrap().deleted += 1;
                    ok(serde_json::json!({"id": id}))
                }
                None => (
                    404,
                    serde_json::json!({"success": false, "errors": [{"code": 81044, "message": "Record does not exist."}], "result": null}),
                ),
            }
        } else {
            (
                404,
                serde_json::json!({"success": false, "errors": [{"code": 7003, "message": "No route"}], "result": null}),
            )
        };
        let body = json.to_string();
        let rsp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if sock.write_all(rsp.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[test]
fn cloudflare_provider_against_a_local_stand_in() {
    let env = AcmeEnv::start(DOMAIN, 3600);
    let cf = FakeCloudflare::start(&env.knot, "cf-token-123");
    let dir = tempfile::tempdir().unwrap();
    let acme = env.acme_toml(
        &dir.path().join("state"),
        "retry_initial = \"500ms\"\nretry_max = \"1s\"",
    );
    let head = acme.split("[acme.dns]").next().unwrap();
    let acme = format!(
        "{head}[acme.dns]\nprovider = \"cloudflare\"\nzone_id = \"zone123\"\napi_base = \"http://{}/client/v4\"\npropagation_server = \"{}\"\npropagation_timeout = \"20s\"\n",
        cf.addr, env.knot.addr
    );

    // A wrong token first: a clear error, nothing served.
    let mut r = Router::start(
        dir.path(),
        "badtoken",
        &acme,
        None,
        &[("CLOUDFLARE_API_TOKEN", "wrong")],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !r.log_text().contains("ACME issuance failed") {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = r.log_text();
    assert!(
        log.contains("HTTP 403") && log.contains("CLOUDFLARE_API_TOKEN"),
        "{log}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && r.readyz().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(r.readyz().unwrap().0, 503);
    r.stop();

    let mut r = Router::start(
        dir.path(),
        "cf",
        &acme,
        None,
        &[("CLOUDFLARE_API_TOKEN", "cf-token-123")],
    );
    r.wait_ready(Duration::from_secs(60));
    let config = tls_config(&env.pebble.issuing_root_pem());
    handshake(r.https, &format!("alice.{DOMAIN}"), &config).unwrap();
    handshake(r.https, DOMAIN, &config).unwrap();
    let st = cf.state.lock().unwrap();
    assert_eq!(st.created, 2, "both challenge values published");
    assert_eq!(st.deleted, 2, "and removed again");
    assert!(st.records.is_empty());
    assert!(st.unauthorized >= 1);
    drop(st);
    assert!(env
        .knot
        .txt(&format!("_acme-challenge.{DOMAIN}"))
        .is_empty());
}
