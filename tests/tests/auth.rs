//! Workspace access control (docs/auth.md), end to end: tokens minted here the way the Hubify
//! API mints them (Ed25519 keys made on the spot, a JWKS file written by the test), the router
//! binary, the echo upstreams. Every case on both engines (`server.fast_path = true` and
//! `false`) and, for plain requests, over HTTP/1.1 and HTTP/2.

use std::path::Path;
use std::time::{Duration, Instant};

use hubify_edge::auth::testkit::{jwks, Issuer};
use hubify_edge_tests::client::{https_alpn, ws_connect_tls_with, ws_roundtrip, ALPN_H1, ALPN_H2};
use hubify_edge_tests::{host, EdgeConfig, PathRule, Req, Resp, Stack};
use tokio_tungstenite::tungstenite::Message;

const ENGINES: [bool; 2] = [true, false];
const SESSION_KEY: &str = "test-session-key-0123456789abcdef0123456789";
const COOKIE: &str = "__Host-hubify_session";

/// Standard paths with `/terminal` (scope `terminal`) and `/dashboard` (scope `dashboard`)
/// protected, `[auth]` naming `jwks`.
fn protected(cfg: EdgeConfig, jwks_path: &Path, fast: bool) -> EdgeConfig {
    let (g, d, t) = (cfg.paths[2].port, cfg.paths[1].port, cfg.paths[0].port);
    let mut cfg = cfg.fast_path(fast);
    cfg.paths = vec![
        PathRule::new("/terminal", t).strip().token("terminal"),
        PathRule::new("/dashboard", d).token("dashboard"),
        PathRule::new("/", g),
    ];
    cfg.auth(&format!(
        "jwks = {:?}\nlogin_url = \"https://hubify.test/login\"",
        jwks_path.display().to_string()
    ))
    .env("HUBIFY_EDGE_SESSION_KEY", SESSION_KEY)
}

struct Env {
    stack: Stack,
    issuer: Issuer,
    jwks_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn env(fast: bool) -> Env {
    let issuer = Issuer::ed25519("api-1");
    let dir = tempfile::tempdir().expect("a temp dir");
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&issuer])).expect("write the JWKS");
    let p = jwks_path.clone();
    let stack = Stack::start_with(move |c| protected(c, &p, fast)).await;
    Env {
        stack,
        issuer,
        jwks_path,
        _dir: dir,
    }
}

impl Env {
    async fn get(&self, alpn: &[&str], req: &Req) -> Resp {
        let alice = host("alice");
        https_alpn(self.stack.https_port(), &alice, alpn, req)
            .await
            .0
    }
}

fn alice() -> String {
    host("alice")
}

fn protocols() -> [(&'static str, &'static [&'static str]); 2] {
    [("h1", ALPN_H1), ("h2", ALPN_H2)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_paths_refuse_without_a_token_and_public_paths_pass() {
    for fast in ENGINES {
        let e = env(fast).await;
        for (proto, alpn) in protocols() {
            let what = format!("fast={fast} {proto}");
            let r = e.get(alpn, &Req::get(&alice(), "/terminal/")).await;
            assert_eq!(r.status, 401, "{what}: {}", r.summary());
            assert_eq!(
                r.header("www-authenticate").as_deref(),
                Some("Bearer realm=\"hubify\""),
                "{what}"
            );
            let page = r.text();
            assert!(
                page.contains("https://hubify.test/login?return_to=https%3A%2F%2Falice.hubify.test%2Fterminal%2F\""),
                "{what}: the page links to the login: {page}"
            );
            let r = e
                .get(alpn, &Req::get(&alice(), "/dashboard/x?y=1").accept_json())
                .await;
            assert_eq!(r.status, 401, "{what}");
            let v = r.json();
            assert_eq!(v["status"], 401, "{what}");
            assert!(
                v["login_url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("%2Fdashboard%2Fx%3Fy%3D1")),
                "{what}: {v}"
            );
            // The gateway stays public.
            let r = e.get(alpn, &Req::get(&alice(), "/")).await;
            assert_eq!(r.echo().service, "gateway", "{what}");
        }
        assert!(
            e.stack.terminal.requests().is_empty(),
            "fast={fast}: nothing reached the terminal"
        );
        assert!(
            e.stack.dashboard.requests().is_empty(),
            "fast={fast}: nothing reached the dashboard"
        );
    }
}

/// The session cookie's `name=value` pair from a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .expect("a pair")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_visit_redirects_with_a_session_and_nothing_of_it_reaches_the_workspace() {
    for fast in ENGINES {
        let e = env(fast).await;
        for (proto, alpn) in protocols() {
            let what = format!("fast={fast} {proto}");
            let token = e.issuer.token(&alice(), "user-7", "terminal", 300);
            let r = e
                .get(
                    alpn,
                    &Req::get(
                        &alice(),
                        &format!("/terminal/?a=1&hubify_token={token}&b=2"),
                    ),
                )
                .await;
            assert_eq!(r.status, 303, "{what}: {}", r.summary());
            assert_eq!(
                r.header("location").as_deref(),
                Some("/terminal/?a=1&b=2"),
                "{what}"
            );
            let set = r.header("set-cookie").expect("a session cookie");
            assert!(set.starts_with(&format!("{COOKIE}=v1.")), "{what}: {set}");
            assert!(
                set.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=43200"),
                "{what}: {set}"
            );
            let session = cookie_pair(&set);

            // Followed: the cookie authorizes; the workspace sees the other cookies only, the
            // user and scopes from the router, never the client's forged ones.
            let req = Req::get(&alice(), "/terminal/?a=1&b=2")
                .header("cookie", "theme=dark")
                .header("cookie", &session)
                .header("x-hubify-user", "forged")
                .header("x-hubify-scopes", "everything");
            let r = e.get(alpn, &req).await;
            let echo = r.echo();
            assert_eq!(echo.service, "terminal", "{what}");
            assert_eq!(echo.path, "/?a=1&b=2", "{what}");
            assert_eq!(echo.header("cookie"), Some("theme=dark"), "{what}");
            assert_eq!(echo.header("x-hubify-user"), Some("user-7"), "{what}");
            assert_eq!(echo.header("x-hubify-scopes"), Some("terminal"), "{what}");
            assert_eq!(echo.header("authorization"), None, "{what}");

            // Only the session cookie: no Cookie header at all upstream.
            let r = e
                .get(
                    alpn,
                    &Req::get(&alice(), "/terminal/").header("cookie", &session),
                )
                .await;
            assert_eq!(r.echo().header("cookie"), None, "{what}");

            // The session does not hold the dashboard's scope.
            let r = e
                .get(
                    alpn,
                    &Req::get(&alice(), "/dashboard").header("cookie", &session),
                )
                .await;
            assert_eq!(r.status, 403, "{what}");

            // The public gateway never sees the session cookie or forged user headers either.
            let r = e
                .get(
                    alpn,
                    &Req::get(&alice(), &format!("/app?hubify_token={token}&q=2"))
                        .header("cookie", &format!("{session}; lang=en"))
                        .header("x-hubify-user", "forged"),
                )
                .await;
            let echo = r.echo();
            assert_eq!(echo.service, "gateway", "{what}");
            assert_eq!(
                echo.path, "/app?q=2",
                "{what}: the token parameter is removed"
            );
            assert_eq!(echo.header("cookie"), Some("lang=en"), "{what}");
            assert_eq!(echo.header("x-hubify-user"), None, "{what}");
        }
        let seen = e.stack.terminal.requests();
        assert!(!seen.is_empty(), "fast={fast}");
        for s in seen.iter().chain(e.stack.gateway.requests().iter()) {
            assert!(!s.path.contains("hubify_token"), "fast={fast}: {s:?}");
            for (name, value) in &s.headers {
                assert!(
                    !value.contains(COOKIE) && !value.contains("v1."),
                    "fast={fast}: {name}: {value}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_every_refusal_and_the_workspace_s_own_authorization() {
    for fast in ENGINES {
        let e = env(fast).await;
        let now = hubify_edge::auth::now();
        for (proto, alpn) in protocols() {
            let what = format!("fast={fast} {proto}");
            let bearer = |t: &str| {
                Req::get(&alice(), "/dashboard/api").header("authorization", &format!("Bearer {t}"))
            };
            let ok = e.issuer.token(&alice(), "cli", "dashboard terminal", 60);
            let r = e.get(alpn, &bearer(&ok)).await;
            let echo = r.echo();
            assert_eq!(echo.service, "dashboard", "{what}");
            assert_eq!(
                echo.header("authorization"),
                None,
                "{what}: the router's token is not forwarded"
            );
            assert_eq!(echo.header("x-hubify-user"), Some("cli"), "{what}");

            let cases = [
                ("expired", e.issuer.sign(&serde_json::json!({"aud": alice(), "sub": "u", "scope": "dashboard", "iat": now - 600, "exp": now - 300})), 401),
                ("another workspace", e.issuer.token(&host("bob"), "u", "dashboard", 60), 403),
                ("without the scope", e.issuer.token(&alice(), "u", "terminal", 60), 403),
                ("too long a lifetime", e.issuer.token(&alice(), "u", "dashboard", 3600), 401),
                ("another key, our kid", Issuer::ed25519("api-1").token(&alice(), "u", "dashboard", 60), 401),
                ("malformed", "a.b.c".to_string(), 401),
            ];
            for (case, token, status) in cases {
                let r = e.get(alpn, &bearer(&token)).await;
                assert_eq!(r.status, status, "{what}: {case}: {}", r.summary());
                assert_eq!(
                    r.header("www-authenticate").is_some(),
                    status == 401,
                    "{what}: {case}"
                );
            }
            // The gateway's own bearer token passes to the gateway untouched.
            let r = e
                .get(
                    alpn,
                    &Req::get(&alice(), "/").header("authorization", "Bearer gateway-own"),
                )
                .await;
            assert_eq!(
                r.echo().header("authorization"),
                Some("Bearer gateway-own"),
                "{what}"
            );
        }
        assert!(
            e.stack
                .dashboard
                .requests()
                .iter()
                .all(|s| s.header("authorization").is_none()),
            "fast={fast}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_jwks_is_picked_up_without_a_restart() {
    for fast in ENGINES {
        let e = env(fast).await;
        let old = e.issuer.token(&alice(), "u", "dashboard", 300);
        let next = Issuer::ed25519("api-2");
        let new = next.token(&alice(), "u", "dashboard", 300);
        let with = |t: &str| {
            Req::get(&alice(), "/dashboard").header("authorization", &format!("Bearer {t}"))
        };
        assert_eq!(e.get(ALPN_H1, &with(&old)).await.status, 200, "fast={fast}");
        assert_eq!(
            e.get(ALPN_H1, &with(&new)).await.status,
            401,
            "fast={fast}: unknown kid"
        );
        // A broken file keeps the old keys.
        std::fs::write(&e.jwks_path, b"{ broken").expect("write");
        e.stack
            .router
            .wait_for_log("previous keys stay in use", Duration::from_secs(10))
            .await;
        assert_eq!(e.get(ALPN_H1, &with(&old)).await.status, 200, "fast={fast}");
        // The rotated file: the new kid accepted, the removed one refused.
        std::fs::write(&e.jwks_path, jwks(&[&next])).expect("write");
        let start = Instant::now();
        while e.get(ALPN_H1, &with(&new)).await.status != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "fast={fast}: the new key was never loaded"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            e.get(ALPN_H1, &with(&old)).await.status,
            401,
            "fast={fast}: the removed kid"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshakes_need_a_credential_and_the_workspace_origin() {
    for fast in ENGINES {
        let e = env(fast).await;
        let alice = alice();
        let port = e.stack.https_port();
        let token = e.issuer.token(&alice, "user-7", "terminal", 300);
        let r = e
            .get(
                ALPN_H1,
                &Req::get(&alice, &format!("/terminal/?hubify_token={token}")),
            )
            .await;
        let session = cookie_pair(&r.header("set-cookie").expect("a session"));
        // The handshake's Host is `alice` without a port: its origin is the same.
        let origin = format!("https://{alice}");

        let (mut ws, resp) = ws_connect_tls_with(
            port,
            &alice,
            &alice,
            "/terminal/ws",
            &[("origin", &origin), ("cookie", &session)],
        )
        .await
        .unwrap_or_else(|err| panic!("fast={fast}: the terminal WebSocket opens: {err}"));
        assert_eq!(resp.status(), 101, "fast={fast}");
        let back = ws_roundtrip(&mut ws, Message::text("ls"), Duration::from_secs(10))
            .await
            .expect("echo");
        assert_eq!(back, Message::text("ls"), "fast={fast}");

        // A token in the handshake's query authorizes it too (and never reaches ttyd).
        let path = format!("/terminal/ws?x=1&hubify_token={token}");
        let (_ws, resp) = ws_connect_tls_with(port, &alice, &alice, &path, &[("origin", &origin)])
            .await
            .expect("opens");
        assert_eq!(resp.status(), 101, "fast={fast}");

        for (case, headers, status) in [
            (
                "another site",
                vec![
                    ("origin", "https://evil.test"),
                    ("cookie", session.as_str()),
                ],
                "403",
            ),
            ("no credential", vec![("origin", origin.as_str())], "401"),
        ] {
            let err = ws_connect_tls_with(port, &alice, &alice, "/terminal/ws", &headers)
                .await
                .err()
                .unwrap_or_else(|| panic!("fast={fast}: {case}: the handshake must fail"));
            assert!(
                err.to_string().contains(status),
                "fast={fast}: {case}: {err}"
            );
        }
        let seen = e.stack.terminal.requests();
        assert_eq!(
            seen.iter().filter(|s| s.websocket).count(),
            2,
            "fast={fast}: {seen:?}"
        );
        for s in &seen {
            assert!(
                s.header("cookie").is_none() && !s.path.contains("hubify_token"),
                "fast={fast}: {s:?}"
            );
        }
        assert!(
            seen.iter().any(|s| s.path == "/ws?x=1"),
            "fast={fast}: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_one_replica_works_on_another_with_the_same_key() {
    let issuer = Issuer::ed25519("api-1");
    let dir = tempfile::tempdir().expect("a temp dir");
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&issuer])).expect("write");
    let p = jwks_path.clone();
    let a = Stack::start_with(|c| protected(c, &p, true)).await;
    let p = jwks_path.clone();
    let b = Stack::start_with(|c| protected(c, &p, false)).await;
    let p = jwks_path.clone();
    let other_key = Stack::start_with(|c| {
        let mut c = protected(c, &p, true);
        c.env = vec![(
            "HUBIFY_EDGE_SESSION_KEY".into(),
            "another-key-0123456789abcdef0123456789".into(),
        )];
        c
    })
    .await;
    let alice = alice();
    let token = issuer.token(&alice, "user-7", "terminal", 300);
    let first = Req::get(&alice, &format!("/terminal/?hubify_token={token}"));
    let r = https_alpn(a.https_port(), &alice, ALPN_H1, &first).await.0;
    let session = cookie_pair(&r.header("set-cookie").expect("a session"));
    let again = Req::get(&alice, "/terminal/").header("cookie", &session);
    let r = https_alpn(b.https_port(), &alice, ALPN_H2, &again).await.0;
    assert_eq!(r.echo().header("x-hubify-user"), Some("user-7"));
    let r = https_alpn(other_key.https_port(), &alice, ALPN_H1, &again)
        .await
        .0;
    assert_eq!(
        r.status, 401,
        "a replica with another key refuses the session"
    );
}

/// On a `replay` listener a protected path is checked before the `fly-replay` answer, and with
/// `[replay] state_key_env` every replay carries `state=<value>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_listener_checks_before_replaying_and_adds_the_state() {
    use hubify_edge_tests::client::http;
    const STATE: &str = "replay-state-0123456789abcdef";
    for fast in ENGINES {
        let issuer = Issuer::ed25519("api-1");
        let dir = tempfile::tempdir().expect("a temp dir");
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks(&[&issuer])).expect("write");
        let cfg = protected(
            EdgeConfig::new()
                .path(PathRule::new("/terminal", 8080))
                .path(PathRule::new("/dashboard", 3001))
                .path(PathRule::new("/", 3000)),
            &jwks_path,
            fast,
        )
        .env("HUBIFY_EDGE_REPLAY_STATE", STATE);
        let toml = cfg
            .to_toml()
            .replacen(
                "dispatch = \"forward\"\nbehind_fly",
                "dispatch = \"replay\"\nbehind_fly",
                1,
            )
            .replacen(
                "label = \"alice\"\naddress = \"127.0.0.1\"",
                "label = \"alice\"\napp = \"hubify-ws-alice\"\nmachine_id = \"m1\"",
                1,
            )
            .replacen(
                "[log]",
                "[replay]\nstate_key_env = \"HUBIFY_EDGE_REPLAY_STATE\"\n\n[log]",
                1,
            );
        assert!(
            toml.contains("dispatch = \"replay\"") && toml.contains("machine_id"),
            "{toml}"
        );
        let mut router =
            hubify_edge_tests::Router::spawn_env(&toml, &cfg.listener_ports(), &cfg.env);
        router.wait_ready().await;
        let port = cfg.http_port();
        let alice = alice();

        let r = http(port, &Req::get(&alice, "/terminal/")).await;
        assert_eq!(r.status, 401, "fast={fast}: {}", r.summary());
        assert_eq!(r.header("fly-replay"), None, "fast={fast}");
        let token = issuer.token(&alice, "u", "terminal", 60);
        let authorized =
            Req::get(&alice, "/terminal/").header("authorization", &format!("Bearer {token}"));
        let r = http(port, &authorized).await;
        assert_eq!(r.status, 307, "fast={fast}: {}", r.summary());
        assert_eq!(
            r.header("fly-replay").as_deref(),
            Some(format!("app=hubify-ws-alice;instance=m1;state={STATE}").as_str()),
            "fast={fast}"
        );
        // A first visit gets its session before any replay.
        let r = http(
            port,
            &Req::get(&alice, &format!("/terminal/?hubify_token={token}")),
        )
        .await;
        assert_eq!(r.status, 303, "fast={fast}");
        // Public paths replay without a token.
        let r = http(port, &Req::get(&alice, "/")).await;
        assert_eq!(r.status, 307, "fast={fast}");
        // Fly replays the request as it came: a client's X-Hubify-User would reach the workspace.
        let r = http(
            port,
            &Req::get(&alice, "/").header("x-hubify-user", "forged"),
        )
        .await;
        assert_eq!(r.status, 400, "fast={fast}");
    }
}

/// A path that a lenient server reads as `/terminal` is checked as `/terminal`, and a token of
/// the API's keys never reaches a public path either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_variants_of_a_protected_prefix_are_checked_and_public_paths_get_no_token() {
    for fast in ENGINES {
        let e = env(fast).await;
        for (proto, alpn) in protocols() {
            let what = format!("fast={fast} {proto}");
            for path in [
                "//terminal/",
                "/%74erminal/",
                "/TERMINAL/",
                "/x/../terminal/",
                "/terminal;a/",
            ] {
                let r = e.get(alpn, &Req::get(&alice(), path)).await;
                assert!(
                    r.status == 401 || r.status == 400,
                    "{what}: {path} must not pass without a credential: {}",
                    r.summary()
                );
            }
            let token = e.issuer.token(&alice(), "cli", "terminal", 60);
            let r = e
                .get(
                    alpn,
                    &Req::get(&alice(), "/api").header("authorization", &format!("Bearer {token}")),
                )
                .await;
            assert_eq!(r.echo().service, "gateway", "{what}");
            assert_eq!(
                r.echo().header("authorization"),
                None,
                "{what}: the API's token stays out"
            );
        }
        assert!(
            e.stack
                .gateway
                .requests()
                .iter()
                .all(|s| !s.path.to_ascii_lowercase().contains("terminal")),
            "fast={fast}: {:?}",
            e.stack.gateway.requests()
        );
    }
}

/// A reload that changes `[auth]` keeps the session keys — even the random ones of a process
/// started without `HUBIFY_EDGE_SESSION_KEY` — so sessions issued before it stay valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_auth_section_keeps_the_sessions_issued_before() {
    use hubify_edge_tests::ops::{rewrite_config, sighup};
    let issuer = Issuer::ed25519("api-1");
    let dir = tempfile::tempdir().expect("a temp dir");
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&issuer])).expect("write the JWKS");
    let p = jwks_path.clone();
    let stack = Stack::start_with(move |c| {
        let mut c = protected(c, &p, true);
        // Random session keys, held by this process only.
        c.env.retain(|(name, _)| name != "HUBIFY_EDGE_SESSION_KEY");
        c
    })
    .await;
    let get = |req: Req| {
        let port = stack.https_port();
        async move { https_alpn(port, &alice(), ALPN_H1, &req).await.0 }
    };
    let token = issuer.token(&alice(), "user-7", "terminal", 300);
    let r = get(Req::get(
        &alice(),
        &format!("/terminal/?hubify_token={token}"),
    ))
    .await;
    assert_eq!(r.status, 303, "{}", r.summary());
    let session = cookie_pair(&r.header("set-cookie").expect("a session cookie"));
    let with_session = || Req::get(&alice(), "/terminal/").header("cookie", &session);
    assert_eq!(get(with_session()).await.status, 200);

    // [auth] changes (a login URL): the access check is rebuilt on reload.
    let mut cfg = stack.cfg.clone();
    cfg.auth = Some(format!(
        "jwks = {:?}\nlogin_url = \"https://hubify.test/sign-in\"",
        jwks_path.display().to_string()
    ));
    rewrite_config(&stack.router, &cfg.to_toml());
    sighup(&stack.router);
    stack
        .router
        .wait_for_log("configuration reloaded", Duration::from_secs(10))
        .await;
    // The new [auth] is in force (its login URL on the refusal page)...
    let r = get(Req::get(&alice(), "/terminal/").header("accept", "text/html")).await;
    assert_eq!(r.status, 401);
    assert!(
        String::from_utf8_lossy(&r.body).contains("https://hubify.test/sign-in"),
        "{}",
        r.summary()
    );
    // ...and the session issued before it still opens the terminal.
    let r = get(with_session()).await;
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.echo().service, "terminal");
}
