//! A real browser against the access control (docs/auth.md): headless Chromium (Debian package
//! `chromium`) loads `https://alice.<domain>/terminal/?hubify_token=…`, follows the 303, keeps
//! the `__Host-` session cookie, and the page's own script opens a WebSocket to `/terminal/ws`
//! that echoes; then the same script served from another origin (bob's workspace) tries a
//! WebSocket to alice's terminal — the browser sends alice's cookie (same site), so only the
//! router's `Origin` check stands in the way. The page reports what happened with a request to
//! `/report?<result>` on bob's (public) gateway, which the test reads from that upstream. On both
//! engines; the browser speaks HTTP/2 to the router.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hubify_edge::auth::testkit::{jwks, Issuer};
use hubify_edge_tests::{host, EdgeConfig, PathRule, Router, Upstream, DOMAIN};

/// Served at alice's `/terminal/` and at every workspace's `/` (the gateway): on alice it opens
/// the terminal's WebSocket and, once it echoes, goes to bob's page with the result; on bob it
/// tries alice's terminal WebSocket from bob's origin.
const PAGE: &str = r#"<!doctype html>
<html><body><pre id="out">pending</pre><script>
const out = document.getElementById("out");
const port = location.port ? ":" + location.port : "";
const alice = "alice.DOMAIN";
if (location.hostname === alice) {
  const ws = new WebSocket("wss://" + location.host + "/terminal/ws");
  ws.onopen = () => ws.send("hello from the page");
  ws.onmessage = (e) => {
    ws.close();
    location.href = "https://bob.DOMAIN" + port + "/?alice=" + encodeURIComponent(e.data);
  };
  ws.onerror = () => {
    location.href = "https://bob.DOMAIN" + port + "/?alice=error";
  };
} else {
  const first = new URLSearchParams(location.search).get("alice");
  const report = (r) => {
    out.textContent = r;
    fetch("/report?" + encodeURIComponent("alice=" + first + ";cross-site=" + r));
  };
  const ws = new WebSocket("wss://" + alice + port + "/terminal/ws");
  ws.onopen = () => report("open");
  ws.onerror = () => report("refused");
}
</script></body></html>
"#;

fn chromium() -> std::path::PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("chromium");
        if p.is_file() {
            return p;
        }
    }
    panic!("no `chromium` on PATH: install the Debian package `chromium` (scripts/deps test does)");
}

/// A headless Chromium on `url` (fresh profile), killed when dropped.
fn open(url: &str, profile: &Path) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--ignore-certificate-errors",
        &format!("--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1"),
        &format!("--user-data-dir={}", profile.display()),
        url,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    cmd.spawn().expect("chromium starts")
}

/// The page's report: the query of the first `/report?…` request the gateway saw (bounded).
async fn report(gateway: &Upstream) -> Option<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Some(r) = gateway
            .requests()
            .iter()
            .find_map(|s| s.path.strip_prefix("/report?").map(str::to_string))
        {
            return Some(
                r.replace("%3D", "=")
                    .replace("%3B", ";")
                    .replace("%20", " "),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_opens_the_terminal_and_another_origin_cannot() {
    let page: &'static str = Box::leak(PAGE.replace("DOMAIN", DOMAIN).into_boxed_str());
    for fast in [true, false] {
        let issuer = Issuer::ed25519("api-1");
        let dir = tempfile::tempdir().expect("a temp dir");
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks(&[&issuer])).expect("write the JWKS");
        let terminal = Upstream::page("terminal", page).await;
        let gateway = Upstream::page("gateway", page).await;
        let cfg = EdgeConfig::new()
            .fast_path(fast)
            .path(
                PathRule::new("/terminal", terminal.port)
                    .strip()
                    .token("terminal"),
            )
            .path(PathRule::new("/", gateway.port))
            .auth(&format!("jwks = {:?}", jwks_path.display().to_string()))
            .env(
                "HUBIFY_EDGE_SESSION_KEY",
                "browser-test-session-key-0123456789abcdef",
            );
        let router = Router::start(&cfg).await;

        let alice = host("alice");
        let token = issuer.token(&alice, "user-7", "terminal", 300);
        let url = format!(
            "https://{alice}:{}/terminal/?hubify_token={token}",
            cfg.https_port()
        );
        let browser = open(&url, &dir.path().join("profile"));
        let result = report(&gateway).await;
        drop(browser);
        assert_eq!(
            result.as_deref(),
            Some("alice=hello from the page;cross-site=refused"),
            "fast={fast}: the page's report\n--- router ---\n{}",
            router.logs()
        );
        // The terminal saw the page load (after the redirect) and one WebSocket: the page's own.
        let seen = terminal.requests();
        assert_eq!(
            seen.iter().filter(|s| s.websocket).count(),
            1,
            "fast={fast}: {seen:?}"
        );
        assert!(
            seen.iter().all(|s| !s.path.contains("hubify_token")),
            "fast={fast}: {seen:?}"
        );
        assert!(
            seen.iter().all(|s| s.header("cookie").is_none()),
            "fast={fast}: {seen:?}"
        );
        router
            .wait_for_log("auth=origin", Duration::from_secs(5))
            .await;
    }
}
