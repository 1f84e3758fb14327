//! Operating a running router: signals, rewriting its config file, a second process started with
//! `run --upgrade`, one-shot commands (`health`, `--version`), and `/metrics` scrapes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::client::{error_chain, try_http};
use crate::router::router_bin;
use crate::{EdgeConfig, Req, Router};

/// Send `sig` to the process `pid`.
pub fn signal_pid(pid: u32, sig: Signal) {
    let pid = i32::try_from(pid).expect("pid fits in i32");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .unwrap_or_else(|e| panic!("send {sig} to process {pid}: {e}"));
}

/// SIGHUP: re-read the config file.
pub fn sighup(router: &Router) {
    signal_pid(router.pid(), Signal::SIGHUP);
}

/// SIGQUIT: hand the listening sockets to a `run --upgrade` process.
pub fn sigquit(router: &Router) {
    signal_pid(router.pid(), Signal::SIGQUIT);
}

/// Replace the router's config file (written beside it, then renamed, so a reload never reads
/// half a file).
pub fn rewrite_config(router: &Router, toml: &str) {
    let path = router.config_path();
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, toml).expect("write the new router config");
    std::fs::rename(&tmp, path).expect("rename the new router config into place");
}

/// `cfg` as TOML with `server.upgrade_socket = path` (the generated [server] table gets the key).
pub fn toml_with_upgrade_socket(cfg: &EdgeConfig, path: &Path) -> String {
    let toml = cfg.to_toml();
    assert_eq!(toml.matches("[server]\n").count(), 1, "one [server] table");
    toml.replacen(
        "[server]\n",
        &format!(
            "[server]\nupgrade_socket = {}\n",
            crate::router::toml_str(&path.to_string_lossy())
        ),
        1,
    )
}

/// Wait (bounded) until at least `n` of the router's log lines contain `needle`; returns them.
pub async fn wait_for_log_count(
    router: &Router,
    needle: &str,
    n: usize,
    bound: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + bound;
    loop {
        let lines: Vec<String> = router
            .logs()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} log line(s) containing {needle:?} after {bound:?}, wanted {n} \
             (the router's config and logs are printed below)",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A second router process (`run --upgrade`)

/// A router process started with arbitrary arguments; killed on drop, its output printed on
/// drop when the test is failing.
pub struct Spawned {
    child: Child,
    logs: Arc<Mutex<String>>,
    pumps: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
    what: String,
    _dir: tempfile::TempDir,
}

fn pump<R: Read + Send + 'static>(
    reader: R,
    stream: &'static str,
    logs: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let mut g = logs.lock().unwrap_or_else(|e| e.into_inner());
                    g.push_str(stream);
                    g.push_str(&line);
                    if !line.ends_with('\n') {
                        g.push('\n');
                    }
                }
            }
        }
    })
}

impl Spawned {
    /// `hubify-edge run --upgrade --config FILE`, FILE holding `toml` (in a temp dir of its own).
    pub fn upgrade(toml: &str) -> Spawned {
        Self::spawn(toml, &["run", "--upgrade"])
    }

    /// `hubify-edge <args…> --config FILE`.
    pub fn spawn(toml: &str, args: &[&str]) -> Spawned {
        let bin = router_bin();
        let dir = tempfile::tempdir().expect("tempdir for the config");
        let path = dir.path().join("hubify-edge.toml");
        std::fs::write(&path, toml).expect("write the config");
        let mut child = Command::new(&bin)
            .args(args)
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let logs = Arc::new(Mutex::new(String::new()));
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, "[stdout] ", logs.clone()));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, "[stderr] ", logs.clone()));
        }
        Spawned {
            child,
            logs,
            pumps,
            exit: None,
            what: format!(
                "hubify-edge {} --config {}\n{toml}",
                args.join(" "),
                path.display()
            ),
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
            }
        }
        self.exit
    }

    /// Wait (bounded) until a log line contains `needle`; returns that line. Panics (with the
    /// logs) after `bound` or when the process exits first.
    pub async fn wait_for_log(&mut self, needle: &str, bound: Duration) -> String {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(line) = self.logs().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "{} exited with {status} before logging {needle:?}",
                    self.what
                );
            }
            assert!(
                Instant::now() < deadline,
                "no log line containing {needle:?} after {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} ---\n--- its logs ---\n{}--- end of its logs ---",
                self.what,
                self.logs()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One-shot commands

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

// ---------------------------------------------------------------------------------------------
// /metrics

/// One `/metrics` scrape.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub text: String,
}

impl Metrics {
    /// The value of the sample whose name and labels are exactly `series` (e.g.
    /// `hubify_config_reloads_total{result="ok"}`).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The metric family names (from `# TYPE` lines).
    pub fn families(&self) -> BTreeSet<String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }
}

/// GET `path` on the ops listener at 127.0.0.1:`port`: status and body.
pub async fn ops_get(port: u16, path: &str) -> Result<(u16, String), String> {
    try_http(port, &Req::get("localhost", path))
        .await
        .map(|r| (r.status.as_u16(), r.text()))
        .map_err(|e| error_chain(e.as_ref()))
}

/// Scrape `/metrics` (panics unless it answers 200).
pub async fn scrape(port: u16) -> Metrics {
    match ops_get(port, "/metrics").await {
        Ok((200, text)) => Metrics { text },
        Ok((status, body)) => panic!("GET /metrics answered {status}: {body}"),
        Err(e) => panic!("GET /metrics on 127.0.0.1:{port}: {e}"),
    }
}

/// Scrape until `ready` holds (bounded); returns the last scrape either way.
pub async fn scrape_until(port: u16, bound: Duration, ready: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + bound;
    loop {
        let m = scrape(port).await;
        if ready(&m) || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A path for a Unix socket in `dir` (short enough for `sun_path`).
pub fn socket_in(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    assert!(
        p.as_os_str().len() < 100,
        "socket path too long for sun_path: {}",
        p.display()
    );
    p
}
