//! Forwarding: path rules (longest prefix on segment boundaries, strip_prefix, query kept) and the
//! headers the upstream sees (Host, x-forwarded-*, x-request-id).
//!
//! Every test runs on both engines: `server.fast_path = true` (the router's own HTTP/1.1 and
//! HTTP/2 code) and `false` (Pingora's proxy); the answers must be the same.

use http::{Method, Version};
use hubify_edge_tests::client::{http, https_alpn, https_h1, ALPN_H1, ALPN_H2};
use hubify_edge_tests::{host, is_generated_request_id, Req, Resp, Stack};

/// Both engines: the router's own HTTP code, and Pingora's proxy.
const ENGINES: [bool; 2] = [true, false];

/// HTTP/1.1 and HTTP/2 over TLS.
const PROTOCOLS: [(&str, &[&str]); 2] = [("h1", ALPN_H1), ("h2", ALPN_H2)];

/// A request over TLS with exactly this ALPN offer; the router must pick it.
async fn https_over(port: u16, sni: &str, alpn: &[&str], req: &Req) -> Resp {
    let (resp, got) = https_alpn(port, sni, alpn, req).await;
    assert_eq!(got.as_deref(), alpn.first().copied(), "negotiated ALPN");
    resp
}

/// The standard stack on one engine.
async fn stack(fast: bool) -> Stack {
    Stack::start_with(|c| c.fast_path(fast)).await
}

/// (request path, upstream that must answer, path+query the upstream must see)
const SPLIT: &[(&str, &str, &str)] = &[
    ("/", "gateway", "/"),
    (
        "/api/v1/things?limit=5&q=a%20b",
        "gateway",
        "/api/v1/things?limit=5&q=a%20b",
    ),
    ("/dashboard", "dashboard", "/dashboard"),
    ("/dashboard/", "dashboard", "/dashboard/"),
    (
        "/dashboard/settings?tab=2",
        "dashboard",
        "/dashboard/settings?tab=2",
    ),
    ("/terminal", "terminal", "/"),
    ("/terminal/", "terminal", "/"),
    ("/terminal/ws?x=1", "terminal", "/ws?x=1"),
    ("/terminal/a/b/c", "terminal", "/a/b/c"),
    ("/terminal?x=1", "terminal", "/?x=1"),
    // Segment boundaries: these are not under /terminal or /dashboard.
    ("/terminalx", "gateway", "/terminalx"),
    ("/terminalx/ws", "gateway", "/terminalx/ws"),
    ("/dashboard-old", "gateway", "/dashboard-old"),
    ("/dashboard-old/x?y=1", "gateway", "/dashboard-old/x?y=1"),
];

fn check_split(transport: &str, path: &str, service: &str, seen: &str, resp: &Resp) {
    let echo = resp.echo();
    assert_eq!(
        (echo.service.as_str(), echo.path.as_str()),
        (service, seen),
        "{transport} GET {path}: wrong upstream or path"
    );
    assert_eq!(echo.method, "GET", "{transport} GET {path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rules_split_strip_and_keep_query_over_h1_h2_and_plain() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let alice = host("alice");
        for &(path, service, seen) in SPLIT {
            let req = Req::get(&alice, path);
            let resp = https_h1(stack.https_port(), &alice, &req).await;
            check_split(&format!("fast={fast} https h1"), path, service, seen, &resp);

            let (resp, alpn) = https_alpn(stack.https_port(), &alice, ALPN_H2, &req).await;
            assert_eq!(alpn.as_deref(), Some("h2"), "fast={fast}");
            check_split(&format!("fast={fast} https h2"), path, service, seen, &resp);

            let resp = http(stack.http_port(), &req).await;
            check_split(
                &format!("fast={fast} plain http"),
                path,
                service,
                seen,
                &resp,
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_when_the_client_sends_none() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let alice = host("alice");
        for (proto, alpn) in PROTOCOLS {
            let resp = https_over(
                stack.https_port(),
                &alice,
                alpn,
                &Req::get(&alice, "/whoami"),
            )
            .await;
            let echo = resp.echo();
            assert_eq!(
                echo.header("host"),
                Some("alice.hubify.test"),
                "fast={fast} {proto}"
            );
            assert_eq!(
                echo.header("x-forwarded-for"),
                Some("127.0.0.1"),
                "fast={fast} {proto}"
            );
            assert_eq!(
                echo.header("x-forwarded-proto"),
                Some("https"),
                "fast={fast} {proto}"
            );
            assert_eq!(
                echo.header("x-forwarded-host"),
                Some("alice.hubify.test"),
                "fast={fast} {proto}"
            );
            let upstream_id = echo
                .header("x-request-id")
                .unwrap_or_else(|| panic!("fast={fast} {proto}: upstream received no x-request-id"))
                .to_owned();
            assert!(
                is_generated_request_id(&upstream_id),
                "fast={fast} {proto}: generated request id must be 32 lowercase hex chars, got {upstream_id:?}"
            );
            assert_eq!(
                resp.request_id(),
                upstream_id,
                "fast={fast} {proto}: client must get the request id the upstream saw"
            );
            for name in [
                "host",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-request-id",
            ] {
                assert!(
                    !echo.duplicate_headers.iter().any(|d| d == name),
                    "fast={fast} {proto}: upstream received {name} more than once: {:?}",
                    echo.headers
                );
            }

            // Every request gets its own id.
            let again = https_over(
                stack.https_port(),
                &alice,
                alpn,
                &Req::get(&alice, "/whoami"),
            )
            .await;
            let again_id = again.request_id();
            assert!(
                is_generated_request_id(&again_id),
                "fast={fast} {proto}: {again_id:?}"
            );
            assert_ne!(
                again_id, upstream_id,
                "fast={fast} {proto}: two requests got the same generated id"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_when_the_client_sends_its_own() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let alice = host("alice");
        for (proto, alpn) in PROTOCOLS {
            let req = Req::get(&alice, "/whoami")
                .header("x-forwarded-for", "203.0.113.7")
                .header("x-request-id", "req-123_abc.DEF:9");
            let resp = https_over(stack.https_port(), &alice, alpn, &req).await;
            let echo = resp.echo();
            assert_eq!(
                echo.header("x-forwarded-for"),
                Some("203.0.113.7, 127.0.0.1"),
                "fast={fast} {proto}"
            );
            assert_eq!(
                echo.header("x-forwarded-proto"),
                Some("https"),
                "fast={fast} {proto}"
            );
            assert_eq!(
                echo.header("x-forwarded-host"),
                Some("alice.hubify.test"),
                "fast={fast} {proto}"
            );
            assert_eq!(
                echo.header("x-request-id"),
                Some("req-123_abc.DEF:9"),
                "fast={fast} {proto}"
            );
            assert_eq!(
                resp.request_id(),
                "req-123_abc.DEF:9",
                "fast={fast} {proto}"
            );
            assert!(
                !echo
                    .duplicate_headers
                    .iter()
                    .any(|d| d == "x-forwarded-for" || d == "x-request-id"),
                "fast={fast} {proto}: duplicated headers upstream: {:?}",
                echo.duplicate_headers
            );

            // A chain of two proxies before us.
            let req = Req::get(&alice, "/").header("x-forwarded-for", "198.51.100.1, 10.0.0.2");
            let echo = https_over(stack.https_port(), &alice, alpn, &req)
                .await
                .echo();
            assert_eq!(
                echo.header("x-forwarded-for"),
                Some("198.51.100.1, 10.0.0.2, 127.0.0.1"),
                "fast={fast} {proto}"
            );

            // The longest well-formed id (128 characters) is kept as is.
            let longest = "a".repeat(128);
            let req = Req::get(&alice, "/").header("x-request-id", &longest);
            let resp = https_over(stack.https_port(), &alice, alpn, &req).await;
            assert_eq!(
                resp.echo().header("x-request-id"),
                Some(longest.as_str()),
                "fast={fast} {proto}"
            );
            assert_eq!(resp.request_id(), longest, "fast={fast} {proto}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_ids_are_replaced() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let alice = host("alice");
        for (proto, alpn) in PROTOCOLS {
            let too_long = "b".repeat(129);
            for bad in [
                "has space",
                "semi;colon",
                "slash/y",
                "quote\"d",
                "",
                too_long.as_str(),
            ] {
                let req = Req::get(&alice, "/").header("x-request-id", bad);
                let resp = https_over(stack.https_port(), &alice, alpn, &req).await;
                let echo = resp.echo();
                let seen = echo
                    .header("x-request-id")
                    .unwrap_or_else(|| {
                        panic!(
                            "fast={fast} {proto}: no x-request-id upstream for client id {bad:?}"
                        )
                    })
                    .to_owned();
                assert!(
                    is_generated_request_id(&seen),
                    "fast={fast} {proto}: client id {bad:?} should be replaced by a generated one, upstream \
                     saw {seen:?}"
                );
                assert_eq!(
                    resp.request_id(),
                    seen,
                    "fast={fast} {proto}: client id {bad:?}: response id differs"
                );
                assert!(
                    !echo.duplicate_headers.iter().any(|d| d == "x-request-id"),
                    "fast={fast} {proto}: client id {bad:?}: x-request-id sent twice upstream: {:?}",
                    echo.headers
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listener_forwards_with_proto_http_and_keeps_the_host_port() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let host_with_port = format!("alice.hubify.test:{}", stack.http_port());
        let resp = http(
            stack.http_port(),
            &Req::get(&host_with_port, "/p?q=1").header("x-forwarded-for", "192.0.2.55"),
        )
        .await;
        let echo = resp.echo();
        assert_eq!(echo.service, "gateway", "fast={fast}");
        assert_eq!(echo.path, "/p?q=1", "fast={fast}");
        assert_eq!(
            echo.header("host"),
            Some(host_with_port.as_str()),
            "fast={fast}"
        );
        assert_eq!(
            echo.header("x-forwarded-host"),
            Some(host_with_port.as_str()),
            "fast={fast}"
        );
        assert_eq!(
            echo.header("x-forwarded-proto"),
            Some("http"),
            "fast={fast}"
        );
        assert_eq!(
            echo.header("x-forwarded-for"),
            Some("192.0.2.55, 127.0.0.1"),
            "fast={fast}"
        );
        let id = resp.request_id();
        assert!(is_generated_request_id(&id), "fast={fast}: {id:?}");
        assert_eq!(
            echo.header("x-request-id"),
            Some(id.as_str()),
            "fast={fast}"
        );

        // Upper case and a trailing dot still name alice; the Host is passed on as sent.
        let resp = http(stack.http_port(), &Req::get("ALICE.hubify.test.", "/case")).await;
        let echo = resp.echo();
        assert_eq!(echo.path, "/case", "fast={fast}");
        assert_eq!(
            echo.header("host"),
            Some("ALICE.hubify.test."),
            "fast={fast}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_carry_the_authority_as_host_upstream() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let alice = host("alice");
        let req = Req::get(&alice, "/h2?x=y").header("x-request-id", "h2-id-1");
        let (resp, alpn) = https_alpn(stack.https_port(), &alice, ALPN_H2, &req).await;
        assert_eq!(alpn.as_deref(), Some("h2"), "fast={fast}");
        assert_eq!(resp.version, Version::HTTP_2, "fast={fast}");
        let echo = resp.echo();
        assert_eq!(echo.path, "/h2?x=y", "fast={fast}");
        assert_eq!(
            echo.header("host"),
            Some("alice.hubify.test"),
            "fast={fast}"
        );
        assert_eq!(
            echo.header("x-forwarded-host"),
            Some("alice.hubify.test"),
            "fast={fast}"
        );
        assert_eq!(
            echo.header("x-forwarded-proto"),
            Some("https"),
            "fast={fast}"
        );
        assert_eq!(
            echo.header("x-forwarded-for"),
            Some("127.0.0.1"),
            "fast={fast}"
        );
        assert_eq!(echo.header("x-request-id"), Some("h2-id-1"), "fast={fast}");
        assert_eq!(resp.request_id(), "h2-id-1", "fast={fast}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_and_methods_are_forwarded() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let alice = host("alice");
        let body = vec![b'z'; 10_000];
        for alpn in [ALPN_H1, ALPN_H2] {
            let req = Req::get(&alice, "/dashboard/upload")
                .method(Method::POST)
                .header("content-type", "application/octet-stream")
                .body(body.clone());
            let (resp, _) = https_alpn(stack.https_port(), &alice, alpn, &req).await;
            let echo = resp.echo();
            assert_eq!(echo.service, "dashboard", "fast={fast} ALPN {alpn:?}");
            assert_eq!(echo.method, "POST", "fast={fast} ALPN {alpn:?}");
            let v = resp.json();
            assert_eq!(
                v.get("body_len").and_then(|b| b.as_u64()),
                Some(10_000),
                "fast={fast} ALPN {alpn:?}: upstream got a different body length: {v}"
            );
        }
    }
}
