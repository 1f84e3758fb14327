#![allow(clippy::unwrap_used)]
//! End to end: the real `hubify-edge` binary on Fly's two topologies, against real servers on
//! loopback — a real DNS server (knotd, `internal.` zone updated with RFC 2136 `knsupdate`) for
//! 6PN, a Machines API stand-in that keeps machine state and publishes/withdraws the machine's
//! AAAA record, and upstream HTTP servers on `[::1]` that report what they saw.
//!
//! Routes are static routes with app + machine_id (the Redis route store is another module;
//! the replay logic reads only the `Route` it returns).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const APP: &str = "hubify-workspace-alice";
const MACHINE: &str = "90801679a10038";
const TOKEN: &str = "test-token-1";
/// Generous bound for "answers rather than hangs".
const BOUND: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Small HTTP/1.1 pieces (client and servers), enough for what the tests check.

#[derive(Debug, Default)]
struct Message {
    /// Status code (responses) or `METHOD path` (requests).
    start: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP/1.1 message (head + body by Content-Length, chunked, or none).
async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    is_response: bool,
) -> std::io::Result<Message> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a full head",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("").to_string();
    let mut m = Message {
        start: start.clone(),
        ..Default::default()
    };
    if is_response {
        m.status = start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
    }
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            m.headers
                .push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let no_body =
        is_response && (m.status == 204 || m.status == 304 || (100..200).contains(&m.status));
    if no_body {
        return Ok(m);
    }
    if let Some(cl) = m
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while rest.len() < cl {
            let n = s.read(&mut tmp).await?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&tmp[..n]);
        }
        rest.truncate(cl);
        m.body = rest;
    } else if m
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        let mut body = Vec::new();
        loop {
            while !rest.windows(2).any(|w| w == b"\r\n") {
                let n = s.read(&mut tmp).await?;
                if n == 0 {
                    return Ok(Message { body, ..m });
                }
                rest.extend_from_slice(&tmp[..n]);
            }
            let i = rest.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
            let size_line = String::from_utf8_lossy(&rest[..i]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            rest.drain(..i + 2);
            while rest.len() < size + 2 {
                let n = s.read(&mut tmp).await?;
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&tmp[..n]);
            }
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[..size.min(rest.len())]);
            rest.drain(..(size + 2).min(rest.len()));
        }
        m.body = body;
    } else if is_response {
        s.read_to_end(&mut rest).await?;
        m.body = rest;
    }
    Ok(m)
}

/// Sends raw request bytes and reads one response, within [`BOUND`].
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, req: &[u8]) -> Message {
    tokio::time::timeout(BOUND, async {
        s.write_all(req).await.expect("write request");
        s.flush().await.expect("flush");
        read_message(s, true).await.expect("read response")
    })
    .await
    .expect("the router answered within the bound")
}

async fn request(addr: SocketAddr, req: &[u8]) -> Message {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the router");
    exchange(&mut s, req).await
}

fn get(host: &str, path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

type Handler =
    Arc<dyn Fn(Message) -> Pin<Box<dyn Future<Output = (u16, String)> + Send>> + Send + Sync>;

/// Serves HTTP/1.1 on `listener`, one request per connection.
fn serve(listener: TcpListener, handler: Handler) {
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let Ok(req) = read_message(&mut s, false).await else {
                    return;
                };
                let (status, body) = handler(req).await;
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
}

/// The upstream stand-in for a workspace service: reports method, path, body size and headers.
fn echo_handler(name: &'static str, hits: Arc<AtomicUsize>) -> Handler {
    Arc::new(move |req: Message| {
        hits.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let mut out = format!(
                "service: {name}\nstart: {}\nbody-bytes: {}\n",
                req.start,
                req.body.len()
            );
            for (n, v) in &req.headers {
                out.push_str(&format!("header: {n}: {v}\n"));
            }
            (200, out)
        })
    })
}

async fn echo_upstream_v6(name: &'static str) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("[::1]:0")
        .await
        .expect("bind [::1] (IPv6 loopback needed)");
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    serve(l, echo_handler(name, hits.clone()));
    (port, hits)
}

fn seen_header<'a>(echo: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("header: {name}: ");
    echo.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// knotd: a real DNS server for the `internal.` zone.

fn need(bin: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{bin}` is missing: install the Debian package `{package}` (apt-get install -y {package})"
    );
}

struct Knot {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_tcp_port() -> u16 {
    // A port free for both TCP and UDP on 127.0.0.1.
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Knot {
    async fn start() -> Knot {
        need("knotd", "knot");
        need("knsupdate", "knot-dnsutils");
        need("kdig", "knot-dnsutils");
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_tcp_port();
        let d = dir.path();
        std::fs::write(
            d.join("internal.zone"),
            "$ORIGIN internal.\n$TTL 5\n@ SOA ns.internal. hostmaster.internal. 1 60 60 3600 1\n@ NS ns.internal.\nns AAAA ::1\n",
        )
        .unwrap();
        let conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    pidfile: \"{d}/knot.pid\"\n\
             log:\n  - target: stderr\n    any: warning\n\
             database:\n    storage: \"{d}\"\n\
             acl:\n  - id: local_update\n    address: 127.0.0.1\n    action: update\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n\
             zone:\n  - domain: internal.\n    file: \"{d}/internal.zone\"\n    acl: local_update\n",
            d = d.display()
        );
        std::fs::write(d.join("knot.conf"), conf).unwrap();
        let child = Command::new("knotd")
            .arg("-c")
            .arg(d.join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("knot.log")).unwrap())
            .spawn()
            .expect("start knotd");
        let knot = Knot {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            let out = Command::new("kdig")
                .args([
                    "@127.0.0.1".to_string(),
                    "-p".into(),
                    port.to_string(),
                    "internal.".into(),
                    "SOA".into(),
                    "+short".into(),
                    "+timeout=1".into(),
                    "+retry=0".into(),
                ])
                .output()
                .expect("run kdig");
            if out.status.success() && !out.stdout.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < BOUND,
                "knotd did not answer: {}",
                std::fs::read_to_string(knot._dir.path().join("knot.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        knot
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// RFC 2136 update through `knsupdate`.
    async fn update(port: u16, line: String) {
        let script = format!("server 127.0.0.1 {port}\nzone internal.\n{line}\nsend\nquit\n");
        let mut child = tokio::process::Command::new("knsupdate")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run knsupdate");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .await
            .unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "knsupdate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn publish(port: u16, app: &str, machine: &str) {
        Knot::update(
            port,
            format!("update add {machine}.vm.{app}.internal. 5 AAAA ::1"),
        )
        .await;
    }

    async fn withdraw(port: u16, app: &str, machine: &str) {
        Knot::update(
            port,
            format!("update delete {machine}.vm.{app}.internal. AAAA"),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// The Machines API stand-in: real state per machine, AAAA records published when started.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Stopped,
    Starting,
    Started,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Started => "started",
        }
    }
}

struct Machine {
    app: String,
    state: State,
    /// How long `starting` lasts.
    boot: Duration,
    /// The host under this machine is broken: `start` fails with 500.
    broken: bool,
    /// The workspace service: bound but not listening until the machine is up ("started" is
    /// not "ready"), then an echo server.
    service: Option<TcpSocket>,
    hits: Arc<AtomicUsize>,
    /// The AAAA record is published when the machine starts (false: DNS never catches up).
    publish_dns: bool,
}

#[derive(Default)]
struct ApiState {
    machines: HashMap<String, Machine>,
    starts: usize,
    calls: Vec<String>,
}

#[derive(Clone)]
struct MachinesApi {
    state: Arc<Mutex<ApiState>>,
    addr: SocketAddr,
    dns_port: u16,
}

impl MachinesApi {
    async fn start(dns_port: u16) -> MachinesApi {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let api = MachinesApi {
            state: Arc::default(),
            addr,
            dns_port,
        };
        let me = api.clone();
        serve(
            l,
            Arc::new(move |req| {
                let me = me.clone();
                Box::pin(async move { me.handle(req).await })
            }),
        );
        api
    }

    /// Adds a stopped machine whose service listens on `[::1]:<returned port>` once it runs.
    fn add_machine(
        &self,
        app: &str,
        id: &str,
        boot: Duration,
        broken: bool,
    ) -> (u16, Arc<AtomicUsize>) {
        let sock = TcpSocket::new_v6().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind("[::1]:0".parse().unwrap()).unwrap();
        let port = sock.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        self.state.lock().unwrap().machines.insert(
            id.to_string(),
            Machine {
                app: app.to_string(),
                state: State::Stopped,
                boot,
                broken,
                service: Some(sock),
                hits: hits.clone(),
                publish_dns: true,
            },
        );
        (port, hits)
    }

    fn starts(&self) -> usize {
        self.state.lock().unwrap().starts
    }

    fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// This machine's AAAA record is never published (DNS lags behind the API).
    fn without_dns(&self, id: &str) {
        if let Some(m) = self.state.lock().unwrap().machines.get_mut(id) {
            m.publish_dns = false;
        }
    }

    fn state_of(&self, id: &str) -> Option<State> {
        self.state.lock().unwrap().machines.get(id).map(|m| m.state)
    }

    async fn handle(&self, req: Message) -> (u16, String) {
        let mut parts = req.start.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        self.state
            .lock()
            .unwrap()
            .calls
            .push(format!("{method} {target}"));
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return (401, "{\"error\":\"unauthorized\"}".into());
        }
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (app, id, action) = match segs.as_slice() {
            ["v1", "apps", app, "machines", id] => (*app, *id, ""),
            ["v1", "apps", app, "machines", id, action] => (*app, *id, *action),
            _ => return (404, "{\"error\":\"no such endpoint\"}".into()),
        };
        {
            let st = self.state.lock().unwrap();
            match st.machines.get(id) {
                Some(m) if m.app == app => {}
                _ => return (404, "{\"error\":\"machine not found\"}".into()),
            }
        }
        match (method.as_str(), action) {
            ("GET", "") => {
                let st = self.state.lock().unwrap();
                let state = st.machines.get(id).map(|m| m.state);
                let s = state.map(|s| s.as_str()).unwrap_or("?");
                // Like Fly's: a started machine's 6PN address (the services listen on ::1).
                let ip = if state == Some(State::Started) {
                    ",\"private_ip\":\"::1\""
                } else {
                    ""
                };
                (200, format!("{{\"id\":\"{id}\",\"state\":\"{s}\"{ip}}}"))
            }
            ("POST", "start") => self.start_machine(id),
            ("POST", "stop") => {
                let prev = {
                    let mut st = self.state.lock().unwrap();
                    let m = st.machines.get_mut(id).unwrap();
                    std::mem::replace(&mut m.state, State::Stopped)
                };
                Knot::withdraw(self.dns_port, app, id).await;
                (200, format!("{{\"previous_state\":\"{}\"}}", prev.as_str()))
            }
            ("GET", "wait") => {
                let want = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("state="))
                    .unwrap_or("started");
                let secs: u64 = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("timeout="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(60);
                let until = Instant::now() + Duration::from_secs(secs);
                loop {
                    if self.state_of(id).map(|s| s.as_str()) == Some(want) {
                        return (200, "{\"ok\":true}".into());
                    }
                    if Instant::now() >= until {
                        return (408, "{\"error\":\"timeout waiting for machine\"}".into());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            _ => (405, "{\"error\":\"method not allowed\"}".into()),
        }
    }

    fn start_machine(&self, id: &str) -> (u16, String) {
        let mut st = self.state.lock().unwrap();
        let m = st.machines.get_mut(id).unwrap();
        if m.broken {
            return (500, "{\"error\":\"host unavailable\"}".into());
        }
        let prev = m.state;
        if prev != State::Stopped {
            return (200, format!("{{\"previous_state\":\"{}\"}}", prev.as_str()));
        }
        m.state = State::Starting;
        let boot = m.boot;
        let app = m.app.clone();
        let service = m.service.take();
        let hits = m.hits.clone();
        let publish_dns = m.publish_dns;
        st.starts += 1;
        drop(st);
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(boot).await;
            if let Some(m) = me.state.lock().unwrap().machines.get_mut(&id) {
                m.state = State::Started;
            }
            // Fly's DNS follows the machine state: publish after `started`.
            if publish_dns {
                Knot::publish(me.dns_port, &app, &id).await;
            }
            // The service comes up a little after the machine ("started" is not "ready").
            tokio::time::sleep(Duration::from_millis(150)).await;
            if let Some(sock) = service {
                let l = sock.listen(1024).unwrap();
                serve(l, echo_handler("woken", hits));
            }
        });
        (200, format!("{{\"previous_state\":\"{}\"}}", prev.as_str()))
    }
}

// ---------------------------------------------------------------------------------------------
// The router binary.

struct Router {
    child: Child,
    dir: tempfile::TempDir,
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup<'a> {
    http_dispatch: Option<&'a str>,
    behind_fly: Option<bool>,
    https_proxy_protocol: Option<bool>,
    /// `[fly]` and `[replay]` bodies and extra top-level TOML.
    fly: String,
    replay: &'a str,
    routes: &'a str,
    /// Upstream port of the path rules.
    port: u16,
    token: Option<&'a str>,
    /// `server.fast_path` (default true).
    fast_path: bool,
}

impl Router {
    async fn start(s: Setup<'_>) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let mut conf = String::from("domain = \"hubify.test\"\n[server]\nthreads = 2\ngrace_period = \"0s\"\nshutdown_timeout = \"1s\"\n");
        conf.push_str(&format!("fast_path = {}\n", s.fast_path));
        let mut http = None;
        let mut https = None;
        if let Some(dispatch) = s.http_dispatch {
            let a = SocketAddr::from(([127, 0, 0, 1], free_port()));
            conf.push_str(&format!(
                "[listeners.http]\naddress = \"{a}\"\ndispatch = \"{dispatch}\"\n"
            ));
            if let Some(b) = s.behind_fly {
                conf.push_str(&format!("behind_fly = {b}\n"));
            }
            http = Some(a);
        }
        if let Some(pp) = s.https_proxy_protocol {
            let a = SocketAddr::from(([127, 0, 0, 1], free_port()));
            conf.push_str(&format!("[listeners.https]\naddress = \"{a}\"\nproxy_protocol = {pp}\n[tls]\nsource = \"self-signed\"\n"));
            https = Some(a);
        }
        conf.push_str(&format!(
            "[upstream]\nconnect_timeout = \"1s\"\nread_timeout = \"10s\"\n\
             [routes]\nstore = \"static\"\n{routes}\n\
             [[paths]]\nprefix = \"/terminal\"\nport = {p}\nstrip_prefix = true\nidle_timeout = \"1h\"\n\
             [[paths]]\nprefix = \"/\"\nport = {p}\n\
             [fly]\n{fly}\n[replay]\n{replay}\n[log]\nlevel = \"info\"\n",
            routes = s.routes,
            p = s.port,
            fly = s.fly,
            replay = s.replay,
        ));
        let path = dir.path().join("router.toml");
        std::fs::write(&path, &conf).unwrap();
        let bin = env!("CARGO_BIN_EXE_hubify-edge");
        let check = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .arg("check")
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "config rejected: {}\n{conf}",
            String::from_utf8_lossy(&check.stderr)
        );
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&path).arg("run");
        match s.token {
            Some(t) => cmd.env("FLY_API_TOKEN", t),
            None => cmd.env_remove("FLY_API_TOKEN"),
        };
        let child = cmd
            .env("HUBIFY_EDGE_LOG", "info")
            .stdout(std::fs::File::create(dir.path().join("out.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("err.log")).unwrap())
            .spawn()
            .expect("start the router");
        let mut r = Router {
            child,
            dir,
            http,
            https,
        };
        let start = Instant::now();
        for a in [r.http, r.https].into_iter().flatten() {
            while TcpStream::connect(a).await.is_err() {
                if let Ok(Some(status)) = r.child.try_wait() {
                    panic!("router exited ({status}): {}", r.logs());
                }
                assert!(
                    start.elapsed() < BOUND,
                    "router not listening: {}",
                    r.logs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        r
    }

    fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("out.log"), read("err.log"))
    }

    fn http(&self) -> SocketAddr {
        self.http.expect("http listener")
    }
}

fn static_route(label: &str, app: &str, machine: &str) -> String {
    format!("[[routes.static]]\nlabel = \"{label}\"\napp = \"{app}\"\nmachine_id = \"{machine}\"\n")
}

fn replay_setup<'a>(dispatch: &'a str, replay: &'a str) -> Setup<'a> {
    Setup {
        http_dispatch: Some(dispatch),
        behind_fly: None,
        https_proxy_protocol: None,
        fly: String::new(),
        replay,
        routes: "",
        port: 3000,
        token: None,
        fast_path: true,
    }
}

const HOST: &str = "alice.hubify.test";

// ---------------------------------------------------------------------------------------------
// Replay.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_answers_307_with_exact_fly_replay_header() {
    let routes = static_route("alice", APP, MACHINE);
    let r = Router::start(Setup {
        routes: &routes,
        ..replay_setup("replay", "timeout = \"5s\"\nfallback = \"force_self\"\n")
    })
    .await;
    for path in ["/", "/terminal/ws?x=1", "/no/rule/needed"] {
        let resp = request(r.http(), &get(HOST, path, "")).await;
        assert_eq!(resp.status, 307, "{path}: {resp:?}\n{}", r.logs());
        assert_eq!(resp.header("content-length"), Some("0"));
        assert_eq!(resp.header("location"), None);
        assert!(resp.body.is_empty());
        assert_eq!(
            resp.header("fly-replay"),
            Some(
                "app=hubify-workspace-alice;instance=90801679a10038;timeout=5s;fallback=force_self"
            )
        );
        assert_eq!(resp.header("fly-replay-cache"), None);
        assert!(resp.header("x-request-id").is_some());
    }
    // A small body with Content-Length is replayed too.
    let post = format!(
        "POST /api HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    let resp = request(r.http(), post.as_bytes()).await;
    assert_eq!(resp.status, 307);
    // Fly's edge keeps connections to the router alive: a replayed request with a body must
    // leave the connection usable for the next one.
    let mut s = TcpStream::connect(r.http()).await.unwrap();
    let keep = format!("POST /api HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello");
    for _ in 0..3 {
        let resp = exchange(&mut s, keep.as_bytes()).await;
        assert_eq!(resp.status, 307, "{resp:?}");
        let next = format!("GET /next HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        let resp = exchange(&mut s, next.as_bytes()).await;
        assert_eq!(resp.status, 307, "{resp:?}");
    }
    // A workspace that does not exist is still a 404 page, never a replay.
    let resp = request(r.http(), &get("bob.hubify.test", "/", "")).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("fly-replay"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_cache_variant() {
    let routes = static_route("alice", APP, MACHINE);
    let r = Router::start(Setup {
        routes: &routes,
        ..replay_setup(
            "replay",
            "timeout = \"800ms\"\nfallback = \"prefer_self\"\ncache_ttl = \"30s\"\n",
        )
    })
    .await;
    let resp = request(r.http(), &get(HOST, "/", "")).await;
    assert_eq!(resp.status, 307, "{}", r.logs());
    assert_eq!(
        resp.header("fly-replay"),
        Some("app=hubify-workspace-alice;instance=90801679a10038")
    );
    assert_eq!(resp.header("fly-replay-cache"), Some("/*"));
    assert_eq!(resp.header("fly-replay-cache-ttl-secs"), Some("30"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_fallback_loop_bodies_and_websocket() {
    let routes = static_route("alice", APP, MACHINE);
    let r = Router::start(Setup {
        routes: &routes,
        ..replay_setup("replay", "timeout = \"5s\"\nfallback = \"force_self\"\n")
    })
    .await;

    // Fly's fallback request after a failed replay: a "workspace unavailable" page.
    let failed = "fly-replay-failed: instance=90801679a10038;app=hubify-workspace-alice;region=iad;replay_source=148e;reason=timeout;elapsed_ms=5003\r\n";
    let resp = request(r.http(), &get(HOST, "/", failed)).await;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert_eq!(resp.header("fly-replay"), None);
    assert!(
        resp.text().contains("did not answer in time"),
        "{}",
        resp.text()
    );
    let nc = "fly-replay-failed: instance=x;app=y;reason=no_candidate;elapsed_ms=1\r\nAccept: application/json\r\n";
    let resp = request(r.http(), &get(HOST, "/", nc)).await;
    assert_eq!(resp.status, 503);
    assert!(resp.text().contains("not running"), "{}", resp.text());

    // Loop: already replayed once.
    let src = "fly-replay-src: instance=90801679a10038;region=iad;t=1700000000000000;state=x\r\n";
    let resp = request(r.http(), &get(HOST, "/", src)).await;
    assert_eq!(resp.status, 508, "{resp:?}");
    assert_eq!(resp.header("fly-replay"), None);
    assert!(resp.text().contains("fly-replay-src"));

    // Bodies Fly cannot replay: 413 with an explanation.
    let large = format!(
        "PUT /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        1 << 20
    );
    let resp = request(r.http(), large.as_bytes()).await;
    assert_eq!(resp.status, 413, "{resp:?}");
    assert!(resp.text().contains("1 MiB"));
    let chunked = format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    let resp = request(r.http(), chunked.as_bytes()).await;
    assert_eq!(resp.status, 413, "{resp:?}");
    assert!(resp.text().contains("Content-Length"));
    // Just under the limit is replayed.
    let under = format!(
        "PUT /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        (1 << 20) - 1
    );
    let mut s = TcpStream::connect(r.http()).await.unwrap();
    let mut req = under.into_bytes();
    req.extend(std::iter::repeat_n(b'x', (1 << 20) - 1));
    let resp = exchange(&mut s, &req).await;
    assert_eq!(resp.status, 307);

    // WebSocket handshake: replayed like a GET, never 101.
    let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let req = format!("GET /terminal/ws HTTP/1.1\r\nHost: {HOST}\r\n{ws}\r\n");
    let resp = request(r.http(), req.as_bytes()).await;
    assert_eq!(resp.status, 307, "{resp:?}");
    assert_eq!(
        resp.header("fly-replay"),
        Some("app=hubify-workspace-alice;instance=90801679a10038;timeout=5s;fallback=force_self")
    );
}

// ---------------------------------------------------------------------------------------------
// Auto: replay by default, forward over 6PN where replay cannot work.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_forwards_over_6pn_what_cannot_be_replayed() {
    let knot = Knot::start().await;
    Knot::publish(knot.port, APP, MACHINE).await;
    let (port, hits) = echo_upstream_v6("gateway").await;
    let routes = static_route("alice", APP, MACHINE);
    let fly = format!(
        "internal_dns = \"{}\"\nmachines_api = \"http://127.0.0.1:9\"\nwake_timeout = \"5s\"\n",
        knot.addr()
    );
    let r = Router::start(Setup {
        routes: &routes,
        fly,
        port,
        ..replay_setup("auto", "timeout = \"5s\"\n")
    })
    .await;

    // Ordinary request: replayed, the upstream never sees it.
    let resp = request(r.http(), &get(HOST, "/", "")).await;
    assert_eq!(resp.status, 307, "{}", r.logs());
    assert_eq!(
        resp.header("fly-replay"),
        Some("app=hubify-workspace-alice;instance=90801679a10038;timeout=5s")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // 2 MiB body: forwarded to [::1]:port (the machine's AAAA), whole.
    let size = 2 << 20;
    let mut req = format!("POST /terminal/upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {size}\r\nFly-Client-IP: 198.51.100.9\r\nX-Forwarded-For: 198.51.100.9, 66.241.1.1\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n").into_bytes();
    req.extend(std::iter::repeat_n(b'y', size));
    let mut s = TcpStream::connect(r.http()).await.unwrap();
    let resp = exchange(&mut s, &req).await;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", r.logs());
    let echo = resp.text();
    assert!(echo.contains(&format!("body-bytes: {size}")), "{echo}");
    assert!(echo.contains("start: POST /upload HTTP/1.1"), "{echo}");
    // Behind Fly: the client is Fly-Client-IP, the scheme Fly's X-Forwarded-Proto.
    assert_eq!(seen_header(&echo, "x-forwarded-for"), vec!["198.51.100.9"]);
    assert_eq!(seen_header(&echo, "x-forwarded-proto"), vec!["https"]);

    // Chunked body: forwarded.
    let req = format!("POST /api HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let resp = request(r.http(), req.as_bytes()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.text().contains("body-bytes: 11"), "{}", resp.text());

    // Loop: already replayed once, so forwarded — without the Fly headers.
    let src = "fly-replay-src: instance=90801679a10038;region=iad;t=1;state=x\r\nfly-force-region: ams\r\n";
    let resp = request(r.http(), &get(HOST, "/x", src)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(seen_header(&resp.text(), "fly-replay-src").is_empty());
    assert!(seen_header(&resp.text(), "fly-force-region").is_empty());
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_over_6pn_strips_fly_headers() {
    let knot = Knot::start().await;
    Knot::publish(knot.port, APP, MACHINE).await;
    let (port, hits) = echo_upstream_v6("gateway").await;
    let routes = static_route("alice", APP, MACHINE) + &static_route("bob", APP, "0000stopped");
    let fly = format!(
        "internal_dns = \"{}\"\nmachines_api = \"http://127.0.0.1:9\"\nwake_timeout = \"2s\"\n",
        knot.addr()
    );
    let r = Router::start(Setup {
        routes: &routes,
        fly,
        port,
        ..replay_setup("forward", "")
    })
    .await;

    let hdrs = "fly-replay-src: instance=x;region=iad;t=1;state=s\r\n\
                fly-replay-failed: instance=x;app=y;reason=timeout\r\n\
                fly-force-region: ams\r\nfly-force-instance-id: abc\r\n\
                fly-prefer-region: fra\r\nfly-prefer-instance-id: def\r\n\
                Fly-Client-IP: 198.51.100.9\r\nX-Forwarded-For: 192.0.2.1\r\n";
    let resp = request(r.http(), &get(HOST, "/terminal/ws?arg=1", hdrs)).await;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", r.logs());
    let echo = resp.text();
    assert!(echo.contains("start: GET /ws?arg=1 HTTP/1.1"), "{echo}");
    for h in [
        "fly-replay-src",
        "fly-replay-failed",
        "fly-force-region",
        "fly-force-instance-id",
        "fly-prefer-region",
        "fly-prefer-instance-id",
    ] {
        assert!(
            seen_header(&echo, h).is_empty(),
            "{h} reached the workspace:\n{echo}"
        );
    }
    // Not behind Fly: Fly-Client-IP is not trusted; the peer is appended to the chain.
    assert_eq!(
        seen_header(&echo, "x-forwarded-for"),
        vec!["192.0.2.1, 127.0.0.1"]
    );
    assert_eq!(seen_header(&echo, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen_header(&echo, "host"), vec![HOST]);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A machine without AAAA whose wake fails (the Machines API is unreachable) answers a page,
    // within the bound.
    let t = Instant::now();
    let resp = request(r.http(), &get("bob.hubify.test", "/", "")).await;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert!(t.elapsed() < BOUND);
    assert!(
        r.logs().contains("Machines API unreachable"),
        "{}",
        r.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol v2 on the TLS listener.

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    use ppp::v2::{Builder, Command as PCommand, Protocol, Version};
    Builder::with_addresses(Version::Two | PCommand::Proxy, Protocol::Stream, (src, dst))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_client_ip_reaches_x_forwarded_for() {
    let (port, _hits) = echo_upstream_v6("gateway").await;
    let routes = "[[routes.static]]\nlabel = \"alice\"\naddress = \"::1\"\n";
    let r = Router::start(Setup {
        http_dispatch: None,
        behind_fly: None,
        https_proxy_protocol: Some(true),
        fly: String::new(),
        replay: "",
        routes,
        port,
        token: None,
        fast_path: true,
    })
    .await;
    let https = r.https.unwrap();
    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();

    // With a v2 header naming 203.0.113.7, then TLS.
    let mut tcp = TcpStream::connect(https).await.unwrap();
    tcp.write_all(&proxy_v2(
        "203.0.113.7:51000".parse().unwrap(),
        "10.0.0.1:443".parse().unwrap(),
    ))
    .await
    .unwrap();
    let mut tls = tokio::time::timeout(BOUND, tls_connector().connect(name.clone(), tcp))
        .await
        .unwrap()
        .expect("TLS after the PROXY header");
    let resp = exchange(&mut tls, &get(HOST, "/", "X-Forwarded-For: 192.0.2.66\r\n")).await;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", r.logs());
    assert_eq!(
        seen_header(&resp.text(), "x-forwarded-for"),
        vec!["192.0.2.66, 203.0.113.7"]
    );
    assert_eq!(
        seen_header(&resp.text(), "x-forwarded-proto"),
        vec!["https"]
    );

    // IPv6 client address.
    let mut tcp = TcpStream::connect(https).await.unwrap();
    tcp.write_all(&proxy_v2(
        "[2001:db8::7]:4000".parse().unwrap(),
        "[2001:db8::1]:443".parse().unwrap(),
    ))
    .await
    .unwrap();
    let mut tls = tls_connector()
        .connect(name.clone(), tcp)
        .await
        .expect("TLS after a v6 PROXY header");
    let resp = exchange(&mut tls, &get(HOST, "/", "")).await;
    assert_eq!(
        seen_header(&resp.text(), "x-forwarded-for"),
        vec!["2001:db8::7"]
    );

    // Without the header: the connection is dropped, no TLS, no answer.
    let tcp = TcpStream::connect(https).await.unwrap();
    let res = tokio::time::timeout(BOUND, tls_connector().connect(name.clone(), tcp))
        .await
        .expect("dropped within the bound");
    assert!(res.is_err(), "TLS succeeded without a PROXY header");

    // A v1 (text) header is not accepted either.
    let mut tcp = TcpStream::connect(https).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n")
        .await
        .unwrap();
    let res = tokio::time::timeout(BOUND, tls_connector().connect(name, tcp))
        .await
        .expect("dropped within the bound");
    assert!(res.is_err(), "TLS succeeded after a v1 header");
}

// ---------------------------------------------------------------------------------------------
// Wake: a stopped machine (no AAAA) is started through the Machines API.

fn wake_fly(knot: &Knot, api: &MachinesApi, timeout: &str) -> String {
    format!(
        "internal_dns = \"{}\"\nmachines_api = \"http://{}\"\nwake_timeout = \"{timeout}\"\n",
        knot.addr(),
        api.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wake_starts_the_machine_once_for_50_concurrent_requests() {
    let knot = Knot::start().await;
    let api = MachinesApi::start(knot.port).await;
    let (port, hits) = api.add_machine(APP, MACHINE, Duration::from_millis(400), false);
    let routes = static_route("alice", APP, MACHINE);
    let r = Router::start(Setup {
        routes: &routes,
        fly: wake_fly(&knot, &api, "20s"),
        port,
        token: Some(TOKEN),
        ..replay_setup("forward", "")
    })
    .await;

    let http = r.http();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            tokio::spawn(async move { request(http, &get(HOST, &format!("/req/{i}"), "")).await })
        })
        .collect();
    for t in tasks {
        let resp = t.await.unwrap();
        assert_eq!(resp.status, 200, "{resp:?}\n{}", r.logs());
        assert!(resp.text().contains("service: woken"));
    }
    assert_eq!(api.starts(), 1, "calls: {:?}", api.calls());
    assert_eq!(hits.load(Ordering::SeqCst), 50);
    assert_eq!(api.state_of(MACHINE), Some(State::Started));
    let calls = api.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("POST ") && c.ends_with("/start"))
            .count(),
        1,
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.starts_with(&format!(
            "GET /v1/apps/{APP}/machines/{MACHINE}/wait?state=started&timeout=20"
        ))),
        "{calls:?}"
    );

    // Running now: no further API call.
    let before = api.calls().len();
    let resp = request(http, &get(HOST, "/again", "")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(api.calls().len(), before);

    // Stopped again (the stand-in withdraws the AAAA): the next request starts it again.
    let stop = format!("POST /v1/apps/{APP}/machines/{MACHINE}/stop HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n");
    let resp = request(api.addr, stop.as_bytes()).await;
    assert_eq!(resp.status, 200);
    assert_eq!(api.state_of(MACHINE), Some(State::Stopped));
    // The router may hold the positive answer up to the record TTL (5 s); wait it out by polling
    // the API's own view: a request after the TTL must trigger a second start.
    let start = Instant::now();
    loop {
        let resp = request(http, &get(HOST, "/after-stop", "")).await;
        assert_eq!(resp.status, 200, "{resp:?}\n{}", r.logs());
        if api.starts() == 2 {
            break;
        }
        assert!(
            start.elapsed() < BOUND,
            "no second start: {:?}",
            api.calls()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_timeout_answers_503_starting_within_the_bound() {
    let knot = Knot::start().await;
    let api = MachinesApi::start(knot.port).await;
    let (port, _) = api.add_machine(APP, MACHINE, Duration::from_secs(120), false);
    let routes = static_route("alice", APP, MACHINE);
    let r = Router::start(Setup {
        routes: &routes,
        fly: wake_fly(&knot, &api, "1s"),
        port,
        token: Some(TOKEN),
        ..replay_setup("forward", "")
    })
    .await;
    let t = Instant::now();
    let resp = request(r.http(), &get(HOST, "/", "Accept: application/json\r\n")).await;
    assert_eq!(resp.status, 503, "{resp:?}\n{}", r.logs());
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert!(resp.text().contains("starting"), "{}", resp.text());
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(api.starts(), 1);
    assert_eq!(api.state_of(MACHINE), Some(State::Starting));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_api_errors_get_clear_answers() {
    let knot = Knot::start().await;
    let api = MachinesApi::start(knot.port).await;
    let (port, _) = api.add_machine(APP, MACHINE, Duration::from_millis(100), false);
    api.add_machine(
        "hubify-workspace-carol",
        "c0ffee",
        Duration::from_millis(100),
        true,
    );
    let routes = static_route("alice", APP, MACHINE)
        + &static_route("bob", "hubify-workspace-bob", "0b0b")
        + &static_route("carol", "hubify-workspace-carol", "c0ffee");

    // 401: the router's token is wrong.
    let r = Router::start(Setup {
        routes: &routes,
        fly: wake_fly(&knot, &api, "5s"),
        port,
        token: Some("wrong-token"),
        ..replay_setup("forward", "")
    })
    .await;
    let resp = request(r.http(), &get(HOST, "/", "")).await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(resp.text().contains("token was refused"), "{}", resp.text());
    assert!(r.logs().contains("check FLY_API_TOKEN"), "{}", r.logs());
    assert_eq!(api.state_of(MACHINE), Some(State::Stopped));
    drop(r);

    let r = Router::start(Setup {
        routes: &routes,
        fly: wake_fly(&knot, &api, "5s"),
        port,
        token: Some(TOKEN),
        ..replay_setup("forward", "")
    })
    .await;
    // 404: the route names a machine the API does not know.
    let resp = request(r.http(), &get("bob.hubify.test", "/", "")).await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(
        resp.text().contains("machine was not found"),
        "{}",
        resp.text()
    );
    assert!(r.logs().contains("machine not found"), "{}", r.logs());
    // 500: the API fails.
    let resp = request(r.http(), &get("carol.hubify.test", "/", "")).await;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert!(
        resp.text().contains("could not be started"),
        "{}",
        resp.text()
    );
    assert!(r.logs().contains("status=500"), "{}", r.logs());
    // And the healthy machine still wakes with the right token.
    let resp = request(r.http(), &get(HOST, "/", "")).await;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", r.logs());
}

/// A stopped machine (`MACHINE` of `APP`, booting in `boot`) behind the Machines API stand-in
/// and knot, and a router forwarding `alice` to it with `wake_timeout` and the `[fly]` lines
/// `extra`. Fields drop in order: the router first; bind `_knot` (not `..`) to keep DNS up.
struct Stopped {
    router: Router,
    api: MachinesApi,
    hits: Arc<AtomicUsize>,
    _knot: Knot,
}

async fn stopped_machine(
    boot: Duration,
    wake_timeout: &str,
    extra: &str,
    fast_path: bool,
) -> Stopped {
    let knot = Knot::start().await;
    let api = MachinesApi::start(knot.port).await;
    let (port, hits) = api.add_machine(APP, MACHINE, boot, false);
    let routes = static_route("alice", APP, MACHINE);
    let router = Router::start(Setup {
        routes: &routes,
        fly: wake_fly(&knot, &api, wake_timeout) + extra,
        port,
        token: Some(TOKEN),
        fast_path,
        ..replay_setup("forward", "")
    })
    .await;
    Stopped {
        router,
        api,
        hits,
        _knot: knot,
    }
}

/// `fly.wake_max_pending = 3`: of 5 concurrent requests to a stopped machine, 3 wait for the
/// wake and are answered by it; exactly the 2 beyond get 503 + Retry-After at once (before any
/// of the waiting ones is answered). One start for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wake_max_pending_turns_the_excess_away_at_once() {
    for fast_path in [true, false] {
        wake_max_pending_on(fast_path).await;
    }
}

async fn wake_max_pending_on(fast_path: bool) {
    let boot = Duration::from_millis(1500);
    let Stopped {
        router: r,
        api,
        hits,
        _knot,
    } = stopped_machine(boot, "20s", "wake_max_pending = 3\n", fast_path).await;
    let http = r.http();
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            tokio::spawn(async move {
                let resp = request(http, &get(HOST, &format!("/req/{i}"), "")).await;
                (resp, Instant::now())
            })
        })
        .collect();
    let mut answered = Vec::new();
    for t in tasks {
        answered.push(t.await.unwrap());
    }
    let ok: Vec<_> = answered.iter().filter(|(m, _)| m.status == 200).collect();
    let busy: Vec<_> = answered.iter().filter(|(m, _)| m.status == 503).collect();
    assert_eq!(
        (ok.len(), busy.len()),
        (3, 2),
        "fast_path={fast_path}: statuses {:?}\n{}",
        answered.iter().map(|(m, _)| m.status).collect::<Vec<_>>(),
        r.logs()
    );
    for (m, _) in &busy {
        assert_eq!(m.header("retry-after"), Some("5"), "{m:?}");
        assert!(m.text().contains("many requests"), "{}", m.text());
    }
    let first_ok = ok.iter().map(|(_, t)| *t).min().unwrap();
    let last_busy = busy.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        last_busy < first_ok,
        "a 503 came after the wake answered the waiting requests"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(api.starts(), 1, "{:?}", api.calls());
}

/// `fly.wake_page = true`: a browser's page load of a stopped workspace gets the "Starting your
/// workspace" page at once (200, no-store, Refresh) and starts the machine; an API call waits for
/// the wake and gets the workspace's answer; once up, the browser gets the workspace too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_page_for_a_browser_navigation_while_api_calls_wait() {
    for fast_path in [true, false] {
        wake_page_on(fast_path).await;
    }
}

async fn wake_page_on(fast_path: bool) {
    let boot = Duration::from_millis(1500);
    let Stopped {
        router: r,
        api,
        hits,
        _knot,
    } = stopped_machine(boot, "20s", "wake_page = true\n", fast_path).await;
    let http = r.http();
    let browser = "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n";
    let page = request(http, &get(HOST, "/", browser)).await;
    assert_eq!(page.status, 200, "{page:?}\n{}", r.logs());
    assert!(
        page.text().contains("Starting your workspace"),
        "{}",
        page.text()
    );
    assert_eq!(page.header("refresh"), Some("2"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the page came from the workspace"
    );
    // The wake runs on after the page went out.
    let t = Instant::now();
    while api.starts() == 0 && t.elapsed() < BOUND {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.starts(), 1, "the page load did not start the machine");
    // Fetch Metadata says navigation even without an HTML Accept.
    let nav = request(http, &get(HOST, "/", "Sec-Fetch-Mode: navigate\r\n")).await;
    assert!(nav.text().contains("Starting your workspace"), "{nav:?}");

    // An API call is held until the machine runs, then answered by it.
    let call = request(http, &get(HOST, "/api", "Accept: application/json\r\n")).await;
    assert_eq!(
        call.status,
        200,
        "fast_path={fast_path}: {call:?}\n{}",
        r.logs()
    );
    assert!(call.text().contains("service: woken"), "{}", call.text());
    // It says how long it waited for the machine.
    let timing = call.header("server-timing").unwrap_or_default();
    assert!(
        timing.starts_with("wake;dur=") && timing[9..].parse::<u64>().is_ok(),
        "fast_path={fast_path}: Server-Timing {timing:?}"
    );
    // Up now: the browser gets the workspace, with no wake timing.
    let page = request(http, &get(HOST, "/", browser)).await;
    assert!(page.text().contains("service: woken"), "{}", page.text());
    assert_eq!(page.header("server-timing"), None, "fast_path={fast_path}");
    assert_eq!(api.starts(), 1, "{:?}", api.calls());
}

/// After `wait?state=started` the router connects to the `private_ip` the Machines API gives,
/// without waiting for 6PN DNS to publish the AAAA record (here it never does). Requests while
/// DNS lags join a quick wake (the machine is already started: no second start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_connects_to_the_api_s_private_ip_before_dns_has_it() {
    for fast_path in [true, false] {
        let Stopped {
            router: r,
            api,
            hits,
            _knot,
        } = stopped_machine(Duration::from_millis(300), "10s", "", fast_path).await;
        api.without_dns(MACHINE);
        for i in 0..3 {
            let resp = request(r.http(), &get(HOST, &format!("/r/{i}"), "")).await;
            assert_eq!(
                resp.status,
                200,
                "fast_path={fast_path} request {i}: {resp:?}\n{}",
                r.logs()
            );
            assert!(resp.text().contains("service: woken"), "{}", resp.text());
        }
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        assert_eq!(api.starts(), 1, "fast_path={fast_path}: {:?}", api.calls());
        let get_machine = format!("GET /v1/apps/{APP}/machines/{MACHINE}");
        assert!(api.calls().contains(&get_machine), "{:?}", api.calls());
    }
}
