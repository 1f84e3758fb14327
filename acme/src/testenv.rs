//! Test environment (feature `testenv`): real `knotd` (RFC 2136 with TSIG), real `pebble` (the
//! ACME test CA, validating DNS-01 against that knotd) and real `redis-server`, each started on
//! free loopback ports in a temporary directory and killed on drop. A missing binary fails with
//! the Debian package to install. Readiness is polled, never slept for.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dns::wire;

/// The full path of `bin`, or a panic naming the Debian package that provides it.
pub fn require(bin: &str, package: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/sbin",
        "/bin",
    ] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(bin);
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "`{bin}` not found: install the Debian package `{package}` (apt-get install -y {package})"
    );
}

/// A loopback port free for both TCP and UDP right now.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for TCP+UDP");
}

/// Polls `f` every 20 ms until it returns true or `limit` passes.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not ready within {limit:?}");
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc {
            child: Some(child),
            log,
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn check_alive(&mut self, what: &str) {
        if let Some(c) = &mut self.child {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("{what} exited ({status}):\n{}", self.log_text());
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A knotd serving one zone, with a TSIG key allowed to update TXT records at
/// `_acme-challenge.<zone>` and nothing else.
pub struct Knot {
    pub addr: SocketAddr,
    pub zone: String,
    pub key_name: String,
    /// base64, as HUBIFY_EDGE_TSIG_SECRET wants it.
    pub secret: String,
    /// A second key, hmac-sha512, with the same rights: `(name, base64 secret)`.
    pub sha512_key: (String, String),
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

impl Knot {
    pub fn start(zone: &str) -> Knot {
        let knotd = require("knotd", "knot");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let key_name = "acme-key".to_string();
        let b64 = |b: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        let secret = b64(&rand::random::<[u8; 32]>());
        let secret512 = b64(&rand::random::<[u8; 32]>());
        let d = dir.path().display().to_string();
        let conf = format!(
            r#"server:
    listen: 127.0.0.1@{port}
    rundir: "{d}"
    pidfile: "{d}/knot.pid"

control:
    listen: "{d}/knot.sock"

database:
    storage: "{d}"

log:
  - target: stderr
    any: info

key:
  - id: {key_name}
    algorithm: hmac-sha256
    secret: {secret}
  - id: {key_name}-512
    algorithm: hmac-sha512
    secret: {secret512}

acl:
  - id: acme-update
    key: [{key_name}, {key_name}-512]
    action: update
    update-type: [TXT]
    update-owner: name
    update-owner-match: equal
    update-owner-name: [_acme-challenge]

template:
  - id: default
    storage: "{d}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off

zone:
  - domain: {zone}.
    file: "{d}/{zone}.zone"
    acl: acme-update
"#
        );
        std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
        let zonefile = format!(
            "$ORIGIN {zone}.\n$TTL 60\n@ SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 1\n@ NS ns1.{zone}.\nns1 A 127.0.0.1\n"
        );
        std::fs::write(dir.path().join(format!("{zone}.zone")), zonefile).unwrap();
        let mut cmd = Command::new(knotd);
        cmd.arg("-c").arg(dir.path().join("knot.conf"));
        let mut proc = Proc::spawn(cmd, dir.path().join("knotd.log"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let z = zone.to_string();
        wait_until("knotd (SOA answer)", Duration::from_secs(20), || {
            proc.check_alive("knotd");
            soa_answers(addr, &z)
        });
        Knot {
            addr,
            zone: zone.to_string(),
            sha512_key: (format!("{key_name}-512"), secret512),
            key_name,
            secret,
            proc,
            dir,
        }
    }

    /// The TXT values at `name` as knotd has them now.
    pub fn txt(&self, name: &str) -> Vec<String> {
        blocking_txt(self.addr, name).unwrap_or_default()
    }
}

fn blocking_exchange(server: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    s.send_to(q, server).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn soa_answers(server: SocketAddr, zone: &str) -> bool {
    let Ok(q) = wire::query(4242, zone, wire::TYPE_SOA, false) else {
        return false;
    };
    match blocking_exchange(server, &q).and_then(|r| wire::parse(&r).ok()) {
        Some(m) => m.rcode() == 0 && m.answer_types.contains(&wire::TYPE_SOA),
        None => false,
    }
}

/// TXT values at `name` on `server` (blocking, for tests).
pub fn blocking_txt(server: SocketAddr, name: &str) -> Option<Vec<String>> {
    let q = wire::query(rand::random(), name, wire::TYPE_TXT, false).ok()?;
    let m = wire::parse(&blocking_exchange(server, &q)?).ok()?;
    Some(m.txt)
}

/// pebble, validating DNS-01 against `dns`.
pub struct Pebble {
    pub directory: String,
    pub management: SocketAddr,
    /// The CA of pebble's own API certificate (PEM): `acme.ca_bundle`.
    pub api_ca_pem: PathBuf,
    api_ca_der: Vec<u8>,
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

impl Pebble {
    /// `validity`: certificateValidityPeriod in seconds.
    pub fn start(dns: SocketAddr, validity: u64) -> Pebble {
        let pebble = require("pebble", "pebble");
        let dir = tempfile::tempdir().unwrap();
        // pebble ships no TLS material for its API: a CA and a localhost leaf.
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hubify-edge test pebble API CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("api-ca.pem"), ca.pem()).unwrap();
        std::fs::write(p("api-cert.pem"), leaf.pem()).unwrap();
        std::fs::write(p("api-key.pem"), leaf_key.serialize_pem()).unwrap();

        let (port, mgmt) = (free_port(), free_port());
        let (http_port, tls_port) = (free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt}"),
                "certificate": p("api-cert.pem"),
                "privateKey": p("api-key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity,
            }
        });
        std::fs::write(p("pebble.json"), config.to_string()).unwrap();
        let mut cmd = Command::new(pebble);
        cmd.arg("-config")
            .arg(p("pebble.json"))
            .arg("-dnsserver")
            .arg(dns.to_string())
            .arg("-strict")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            // Deterministic: tests count orders exactly (instant-acme retries badNonce itself).
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .current_dir(dir.path());
        let mut proc = Proc::spawn(cmd, p("pebble.log"));
        let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{mgmt}").parse().unwrap();
        let api_ca_der = ca.der().to_vec();
        wait_until("pebble (GET /dir)", Duration::from_secs(30), || {
            proc.check_alive("pebble");
            matches!(https_get(api, "/dir", &api_ca_der), Ok((200, _)))
        });
        Pebble {
            directory: format!("https://127.0.0.1:{port}/dir"),
            management,
            api_ca_pem: p("api-ca.pem"),
            api_ca_der,
            proc,
            dir,
        }
    }

    /// The root that signs issued certificates (changes at every pebble start).
    pub fn issuing_root_pem(&self) -> String {
        let (status, body) = https_get(self.management, "/roots/0", &self.api_ca_der).unwrap();
        assert_eq!(status, 200, "pebble /roots/0");
        String::from_utf8(body).unwrap()
    }
}

/// A minimal blocking HTTPS GET (HTTP/1.1, `Connection: close`) trusting only `ca_der`.
pub fn https_get(addr: SocketAddr, path: &str, ca_der: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP head")?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let mut body = raw[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        if b.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < n {
            break;
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n..];
        let mut crlf = String::new();
        let _ = b.read_line(&mut crlf);
    }
    out
}

/// A redis-server on a free port.
pub struct Redis {
    pub port: u16,
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        Redis::start_on(port, dir)
    }

    fn start_on(port: u16, dir: tempfile::TempDir) -> Redis {
        let bin = require("redis-server", "redis-server");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .current_dir(dir.path());
        let mut proc = Proc::spawn(cmd, dir.path().join("redis.log"));
        wait_until("redis-server (PING)", Duration::from_secs(20), || {
            proc.check_alive("redis-server");
            redis_cmd(port, "PING").is_some_and(|r| r.starts_with("+PONG"))
        });
        Redis { port, proc, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts a fresh, empty server on the same port (after [`Redis::stop`]).
    pub fn restart(&mut self) {
        self.proc.kill();
        let dir = tempfile::tempdir().unwrap();
        let fresh = Redis::start_on(self.port, dir);
        *self = fresh;
    }
}

/// Sends one inline command and returns the first reply line (tests only).
pub fn redis_cmd(port: u16, command: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    if let Some(len) = line.strip_prefix('$') {
        let n: i64 = len.trim().parse().ok()?;
        if n < 0 {
            return Some(String::new());
        }
        let mut body = vec![0u8; n as usize + 2];
        r.read_exact(&mut body).ok()?;
        return Some(String::from_utf8_lossy(&body[..n as usize]).into_owned());
    }
    Some(line)
}

/// knotd + pebble together, with the settings a router's `[acme]` section needs.
pub struct AcmeEnv {
    pub knot: Knot,
    pub pebble: Pebble,
}

impl AcmeEnv {
    pub fn start(zone: &str, validity: u64) -> AcmeEnv {
        let knot = Knot::start(zone);
        let pebble = Pebble::start(knot.addr, validity);
        AcmeEnv { knot, pebble }
    }

    /// `[acme]` + `[acme.dns]` TOML for the rfc2136 provider. `extra` adds `[acme]` keys; unless
    /// it sets its own, failed issuances are retried after 1 s (up to 5 s).
    pub fn acme_toml(&self, state_dir: &Path, extra: &str) -> String {
        let retry = if extra.contains("retry_") {
            ""
        } else {
            "retry_initial = \"1s\"\nretry_max = \"5s\""
        };
        format!(
            r#"[acme]
directory = "{}"
contact = ["mailto:ops@{}"]
state_dir = "{}"
ca_bundle = "{}"
{retry}
{extra}

[acme.dns]
provider = "rfc2136"
server = "{}"
zone = "{}."
tsig_key_name = "{}"
tsig_algorithm = "hmac-sha256"
propagation_timeout = "20s"
"#,
            self.pebble.directory,
            self.knot.zone,
            state_dir.display(),
            self.pebble.api_ca_pem.display(),
            self.knot.addr,
            self.knot.zone,
            self.knot.key_name,
        )
    }
}
