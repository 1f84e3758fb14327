//! The router as a child process: config builder, spawn, readiness, logs, signals, `check`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{free_port, DOMAIN};

/// How long the router gets to accept connections on every listener after spawning.
pub const READY_BOUND: Duration = Duration::from_secs(30);

/// Where the router binary is: `$HUBIFY_EDGE_BIN`, else `<target dir>/debug/hubify-edge` next to
/// the test executable (which lives in `<target dir>/debug/deps/`). Panics when missing.
pub fn router_bin() -> PathBuf {
    let path = match std::env::var_os("HUBIFY_EDGE_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().expect("current_exe of the test binary");
            // <target>/debug/deps/<test exe> -> <target>/debug/hubify-edge
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test executable lives in <target>/<profile>/deps/");
            profile_dir.join(format!("hubify-edge{}", std::env::consts::EXE_SUFFIX))
        }
    };
    assert!(
        path.is_file(),
        "router binary not found at {}: run `cargo build --bins` first (the README test command does)",
        path.display()
    );
    path
}

/// Quote a string as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where the TLS listener's certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    SelfSigned,
    Files { cert: PathBuf, key: PathBuf },
}

/// One `[[paths]]` rule.
#[derive(Clone, Debug)]
pub struct PathRule {
    pub prefix: String,
    pub port: u16,
    pub strip_prefix: bool,
    pub idle_timeout: Option<String>,
    /// `auth = "token"` with this scope.
    pub scope: Option<String>,
}

impl PathRule {
    pub fn new(prefix: &str, port: u16) -> Self {
        PathRule {
            prefix: prefix.to_owned(),
            port,
            strip_prefix: false,
            idle_timeout: None,
            scope: None,
        }
    }

    /// Protected: `auth = "token"`, `scope = scope`.
    pub fn token(mut self, scope: &str) -> Self {
        self.scope = Some(scope.to_owned());
        self
    }

    pub fn strip(mut self) -> Self {
        self.strip_prefix = true;
        self
    }

    pub fn idle_timeout(mut self, d: &str) -> Self {
        self.idle_timeout = Some(d.to_owned());
        self
    }
}

/// The redirect listener: its own port and the port put into the `Location`.
#[derive(Clone, Copy, Debug)]
pub struct RedirectListener {
    pub port: u16,
    pub https_port: u16,
}

/// A router config, rendered to TOML in the shape of `examples/local.toml`.
///
/// `EdgeConfig::new()` gives an https listener (self-signed) and an http listener on free ports,
/// routes `alice` and `bob` to 127.0.0.1, no path rules (add them), short timeouts.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub domain: String,
    pub threads: u32,
    pub grace_period: String,
    pub shutdown_timeout: String,
    pub https: Option<u16>,
    pub http: Option<u16>,
    pub redirect: Option<RedirectListener>,
    pub ops: Option<u16>,
    pub tls: TlsSource,
    pub connect_timeout: String,
    pub read_timeout: String,
    pub keepalive_pool: u32,
    /// `(label, address)` pairs for `[[routes.static]]`.
    pub routes: Vec<(String, String)>,
    pub paths: Vec<PathRule>,
    pub log_level: String,
    /// `server.fast_path`; `None` leaves the router's default.
    pub fast_path: Option<bool>,
    /// `server.header_timeout`; `None` leaves the router's default.
    pub header_timeout: Option<String>,
    /// `server.websocket_drain`; `None` leaves the router's default.
    pub websocket_drain: Option<String>,
    /// `listeners.http.behind_fly`.
    pub behind_fly: bool,
    /// The body of an `[auth]` table.
    pub auth: Option<String>,
    /// The body of a `[limits]` section.
    pub limits: Option<String>,
    /// Environment variables of the router process.
    pub env: Vec<(String, String)>,
    /// `tls.hsts`.
    pub hsts: Option<String>,
    /// `log.paths`; `None` leaves the router's default (on).
    pub log_paths: Option<bool>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl EdgeConfig {
    pub fn new() -> Self {
        EdgeConfig {
            domain: DOMAIN.to_owned(),
            threads: 1,
            grace_period: "1s".to_owned(),
            shutdown_timeout: "10s".to_owned(),
            https: Some(free_port()),
            http: Some(free_port()),
            redirect: None,
            ops: None,
            tls: TlsSource::SelfSigned,
            connect_timeout: "2s".to_owned(),
            read_timeout: "10s".to_owned(),
            keepalive_pool: 8,
            routes: vec![
                ("alice".to_owned(), "127.0.0.1".to_owned()),
                ("bob".to_owned(), "127.0.0.1".to_owned()),
            ],
            paths: Vec::new(),
            log_level: "info".to_owned(),
            fast_path: None,
            header_timeout: None,
            websocket_drain: None,
            behind_fly: false,
            auth: None,
            limits: None,
            env: Vec::new(),
            hsts: None,
            log_paths: None,
        }
    }

    /// `[log] paths = on`.
    pub fn log_paths(mut self, on: bool) -> Self {
        self.log_paths = Some(on);
        self
    }

    /// `[tls] hsts = value`.
    pub fn hsts(mut self, value: &str) -> Self {
        self.hsts = Some(value.to_owned());
        self
    }

    /// The standard three-way split: `/terminal` (stripped) → `terminal`, `/dashboard` →
    /// `dashboard`, `/` → `gateway`.
    pub fn standard_paths(self, gateway: u16, dashboard: u16, terminal: u16) -> Self {
        self.path(PathRule::new("/terminal", terminal).strip())
            .path(PathRule::new("/dashboard", dashboard))
            .path(PathRule::new("/", gateway))
    }

    /// `[auth]` with these keys (TOML lines), e.g. `jwks = "…"`.
    /// A `[limits]` section with this body.
    pub fn limits(mut self, body: &str) -> Self {
        self.limits = Some(body.to_owned());
        self
    }

    pub fn auth(mut self, body: &str) -> Self {
        self.auth = Some(body.to_owned());
        self
    }

    /// An environment variable of the router process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn path(mut self, rule: PathRule) -> Self {
        self.paths.push(rule);
        self
    }

    pub fn with_redirect(mut self, https_port: u16) -> Self {
        self.redirect = Some(RedirectListener {
            port: free_port(),
            https_port,
        });
        self
    }

    pub fn with_ops(mut self) -> Self {
        self.ops = Some(free_port());
        self
    }

    pub fn without_http(mut self) -> Self {
        self.http = None;
        self
    }

    pub fn without_https(mut self) -> Self {
        self.https = None;
        self
    }

    pub fn tls_files(mut self, cert: &Path, key: &Path) -> Self {
        self.tls = TlsSource::Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        self
    }

    pub fn read_timeout(mut self, d: &str) -> Self {
        self.read_timeout = d.to_owned();
        self
    }

    pub fn connect_timeout(mut self, d: &str) -> Self {
        self.connect_timeout = d.to_owned();
        self
    }

    /// The http listener sits behind Fly's http handler (`behind_fly = true`).
    pub fn behind_fly(mut self) -> Self {
        self.behind_fly = true;
        self
    }

    /// Sets `server.header_timeout`.
    pub fn header_timeout(mut self, d: &str) -> Self {
        self.header_timeout = Some(d.to_owned());
        self
    }

    /// Sets `server.fast_path`.
    pub fn fast_path(mut self, on: bool) -> Self {
        self.fast_path = Some(on);
        self
    }

    /// Sets `server.websocket_drain`: how long open WebSockets get at shutdown to answer the
    /// router's close frames.
    pub fn websocket_drain(mut self, d: &str) -> Self {
        self.websocket_drain = Some(d.to_owned());
        self
    }

    pub fn grace_period(mut self, d: &str) -> Self {
        self.grace_period = d.to_owned();
        self
    }

    pub fn shutdown_timeout(mut self, d: &str) -> Self {
        self.shutdown_timeout = d.to_owned();
        self
    }

    /// The TLS listener's port (panics if the config has none).
    pub fn https_port(&self) -> u16 {
        self.https.expect("config has an https listener")
    }

    /// The plain listener's port (panics if the config has none).
    pub fn http_port(&self) -> u16 {
        self.http.expect("config has an http listener")
    }

    /// Every listener port, for readiness.
    pub fn listener_ports(&self) -> Vec<u16> {
        let mut ports = Vec::new();
        ports.extend(self.https);
        ports.extend(self.http);
        ports.extend(self.redirect.map(|r| r.port));
        ports.extend(self.ops);
        ports
    }

    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        // `write!` into a String cannot fail.
        if self.paths.is_empty() {
            // A top-level key: before the first table.
            let _ = writeln!(t, "paths = \"standard\"");
        }
        let _ = writeln!(t, "domain = {}\n", toml_str(&self.domain));
        let _ = writeln!(
            t,
            "[server]\nthreads = {}\ngrace_period = {}\nshutdown_timeout = {}\n",
            self.threads,
            toml_str(&self.grace_period),
            toml_str(&self.shutdown_timeout)
        );
        if let Some(on) = self.fast_path {
            // Still inside the [server] table written above.
            let _ = writeln!(t, "fast_path = {on}\n");
        }
        if let Some(d) = &self.header_timeout {
            // Still inside the [server] table.
            let _ = writeln!(t, "header_timeout = {}\n", toml_str(d));
        }
        if let Some(d) = &self.websocket_drain {
            // Still inside the [server] table.
            let _ = writeln!(t, "websocket_drain = {}\n", toml_str(d));
        }
        if let Some(port) = self.https {
            let _ = writeln!(
                t,
                "[listeners.https]\naddress = \"127.0.0.1:{port}\"\nproxy_protocol = false\ndispatch = \"forward\"\n"
            );
        }
        if let Some(port) = self.http {
            let _ = writeln!(
                t,
                "[listeners.http]\naddress = \"127.0.0.1:{port}\"\ndispatch = \"forward\"\nbehind_fly = {}\n",
                self.behind_fly
            );
        }
        if let Some(r) = self.redirect {
            let _ = writeln!(
                t,
                "[listeners.redirect]\naddress = \"127.0.0.1:{}\"\nhttps_port = {}\n",
                r.port, r.https_port
            );
        }
        if let Some(port) = self.ops {
            let _ = writeln!(t, "[ops]\naddress = \"127.0.0.1:{port}\"\n");
        }
        match &self.tls {
            TlsSource::SelfSigned => {
                let _ = writeln!(t, "[tls]\nsource = \"self-signed\"");
            }
            TlsSource::Files { cert, key } => {
                let _ = writeln!(
                    t,
                    "[tls]\nsource = \"files\"\ncert = {}\nkey = {}",
                    toml_str(&cert.to_string_lossy()),
                    toml_str(&key.to_string_lossy())
                );
            }
        }
        if let Some(hsts) = &self.hsts {
            // Still inside the [tls] table.
            let _ = writeln!(t, "hsts = {}", toml_str(hsts));
        }
        t.push('\n');
        let _ = writeln!(
            t,
            "[upstream]\nconnect_timeout = {}\nread_timeout = {}\nkeepalive_pool = {}\n",
            toml_str(&self.connect_timeout),
            toml_str(&self.read_timeout),
            self.keepalive_pool
        );
        let _ = writeln!(
            t,
            "[routes]\nstore = \"static\"\ncache_ttl = \"30s\"\nnegative_ttl = \"5s\"\nmax_stale = \"1h\"\ncache_capacity = 1000\n"
        );
        for (label, address) in &self.routes {
            let _ = writeln!(
                t,
                "[[routes.static]]\nlabel = {}\naddress = {}\n",
                toml_str(label),
                toml_str(address)
            );
        }
        for p in &self.paths {
            let _ = write!(
                t,
                "[[paths]]\nprefix = {}\nport = {}\nstrip_prefix = {}\n",
                toml_str(&p.prefix),
                p.port,
                p.strip_prefix
            );
            if let Some(idle) = &p.idle_timeout {
                let _ = writeln!(t, "idle_timeout = {}", toml_str(idle));
            }
            if let Some(scope) = &p.scope {
                let _ = writeln!(t, "auth = \"token\"\nscope = {}", toml_str(scope));
            }
            t.push('\n');
        }
        if let Some(auth) = &self.auth {
            let _ = writeln!(t, "[auth]\n{auth}\n");
        }
        if let Some(limits) = &self.limits {
            let _ = writeln!(t, "[limits]\n{limits}\n");
        }
        let _ = writeln!(
            t,
            "[log]\nformat = \"text\"\nlevel = {}",
            toml_str(&self.log_level)
        );
        if let Some(on) = self.log_paths {
            let _ = writeln!(t, "paths = {on}");
        }
        t
    }
}

/// Shared, append-only log of the child's stdout and stderr.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<String>>);

impl Logs {
    fn push_line(&self, stream: &str, line: &str) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.push_str(stream);
        g.push_str(line);
        if !line.ends_with('\n') {
            g.push('\n');
        }
    }

    fn snapshot(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn pump<R: Read + Send + 'static>(reader: R, stream: &'static str, logs: Logs) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => logs.push_line(stream, &String::from_utf8_lossy(&buf)),
            }
        }
    })
}

/// A running `hubify-edge run --config FILE`. Killed (SIGKILL) on drop; its logs are printed on
/// drop when the test is failing.
pub struct Router {
    child: Child,
    logs: Logs,
    pumps: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
    /// The subcommand and its flags (`run`, `run --upgrade`).
    command: String,
    config_path: PathBuf,
    config_text: String,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Router {
    /// Write `cfg`, spawn the router, wait until every listener accepts TCP connections.
    pub async fn start(cfg: &EdgeConfig) -> Router {
        let mut router = Self::spawn_env(&cfg.to_toml(), &cfg.listener_ports(), &cfg.env);
        router.wait_ready().await;
        router
    }

    /// Same with a raw TOML text; `ports` are the listener ports to wait for.
    pub async fn start_raw(toml: &str, ports: &[u16]) -> Router {
        let mut router = Self::spawn_raw(toml, ports);
        router.wait_ready().await;
        router
    }

    /// Spawn without waiting for readiness.
    pub fn spawn_raw(toml: &str, ports: &[u16]) -> Router {
        Self::spawn_env(toml, ports, &[])
    }

    /// Spawn with these environment variables, without waiting for readiness.
    pub fn spawn_env(toml: &str, ports: &[u16], env: &[(String, String)]) -> Router {
        Self::spawn_command(toml, ports, env, &["run"])
    }

    /// `hubify-edge run --upgrade --config FILE`, FILE holding `toml`: takes the listening sockets
    /// over from the router running on the same configuration (no readiness wait: the old process
    /// still answers on those ports).
    pub fn spawn_upgrade(toml: &str) -> Router {
        Self::spawn_command(toml, &[], &[], &["run", "--upgrade"])
    }

    /// `hubify-edge <args…> --config FILE`, FILE holding `toml` in a temp dir of its own.
    fn spawn_command(toml: &str, ports: &[u16], env: &[(String, String)], args: &[&str]) -> Router {
        let bin = router_bin();
        let dir = tempfile::tempdir().expect("tempdir for the router config");
        let config_path = dir.path().join("hubify-edge.toml");
        std::fs::write(&config_path, toml).expect("write router config");
        let mut child = Command::new(&bin)
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let logs = Logs::default();
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, "[stdout] ", logs.clone()));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, "[stderr] ", logs.clone()));
        }
        Router {
            child,
            logs,
            pumps,
            exit: None,
            command: args.join(" "),
            config_path,
            config_text: toml.to_owned(),
            ports: ports.to_vec(),
            _dir: dir,
        }
    }

    /// Poll a TCP connect on every listener port until all accept (bounded by [`READY_BOUND`]).
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_BOUND;
        for &port in &self.ports.clone() {
            loop {
                if let Some(status) = self.try_exit() {
                    panic!(
                        "router exited with {status} before listening on 127.0.0.1:{port} \
                         (its config and logs are printed below)"
                    );
                }
                let attempt = tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(("127.0.0.1", port)),
                )
                .await;
                if let Ok(Ok(_stream)) = attempt {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "router not listening on 127.0.0.1:{port} after {READY_BOUND:?} \
                         (its config and logs are printed below)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Everything the router printed so far (stdout and stderr, each line prefixed).
    pub fn logs(&self) -> String {
        self.logs.snapshot()
    }

    /// Wait (bounded) until a log line contains `needle`; returns that line.
    pub async fn wait_for_log(&self, needle: &str, bound: Duration) -> String {
        let deadline = Instant::now() + bound;
        loop {
            let logs = self.logs();
            if let Some(line) = logs.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line containing {needle:?} after {bound:?} \
                     (the router's config and logs are printed below)"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Like [`Router::wait_for_log`], but failing at once when the process exits first.
    pub async fn wait_for_log_while_running(&mut self, needle: &str, bound: Duration) -> String {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(line) = self.logs().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Some(status) = self.try_exit() {
                panic!("the router exited with {status} before logging {needle:?}");
            }
            assert!(
                Instant::now() < deadline,
                "no log line containing {needle:?} after {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Send SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in i32");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM to the router");
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
            }
        }
        self.exit
    }

    /// Wait (bounded) for the process to exit; `None` if it is still running after `bound`.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The config and the logs, for panic messages.
    pub fn describe(&self) -> String {
        format!(
            "--- router config (hubify-edge {} --config {}) ---\n{}\n--- router logs ---\n{}--- end of router logs ---",
            self.command,
            self.config_path.display(),
            self.config_text,
            self.logs()
        )
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
    }
}

/// What `hubify-edge check --config FILE` did.
#[derive(Debug)]
pub struct CheckOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The config file that was checked.
    pub path: PathBuf,
}

impl CheckOutput {
    pub fn describe(&self) -> String {
        format!(
            "check --config {} exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.path.display(),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// Run `hubify-edge check --config PATH` (bounded: 30 s).
pub fn check_path(path: &Path) -> CheckOutput {
    let out = cli_config(&["check"], path);
    CheckOutput {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
        path: path.to_owned(),
    }
}

/// What a one-shot `hubify-edge …` command did.
#[derive(Debug)]
pub struct CliOutput {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn describe(&self) -> String {
        format!(
            "`hubify-edge {}` exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Run `hubify-edge <args…>` to completion (bounded: 30 s).
pub fn cli(args: &[&str]) -> CliOutput {
    let bin = router_bin();
    let command = args.join(" ");
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let read = |s: Option<Box<dyn Read + Send>>| {
        s.map(|mut s| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = s.read_to_end(&mut v);
                String::from_utf8_lossy(&v).into_owned()
            })
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`hubify-edge {command}` still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let join = |h: Option<JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    CliOutput {
        command,
        status,
        stdout: join(out),
        stderr: join(err),
    }
}

/// `hubify-edge <args…> --config PATH`.
pub fn cli_config(args: &[&str], config: &Path) -> CliOutput {
    let config = config.to_string_lossy().into_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.push("--config");
    all.push(&config);
    cli(&all)
}

/// Write `toml` into a fresh temp dir as `hubify-edge.toml` and `check` it. The temp dir is
/// returned so the file outlives the check (for messages).
pub fn check_toml(toml: &str) -> (CheckOutput, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir for a checked config");
    let path = dir.path().join("hubify-edge.toml");
    std::fs::write(&path, toml).expect("write config to check");
    (check_path(&path), dir)
}
