//! Operating a running router: signals, rewriting its config file, one-shot commands (`health`,
//! `--version`), and `/metrics` scrapes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::client::{error_chain, try_http};
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
// One-shot commands (a second `run --upgrade` process is `Router::spawn_upgrade`)

pub use crate::router::{cli, cli_config, CliOutput};

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
