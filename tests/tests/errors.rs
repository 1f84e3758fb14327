//! The router's own answers: 404 / 421 / 400 / 502 / 504, as HTML or JSON, always with an
//! x-request-id.
//!
//! Every test runs on both engines: `server.fast_path = true` (the router's own HTTP/1.1 and
//! HTTP/2 code) and `false` (Pingora's proxy), over HTTP/1.1 and HTTP/2 where the answer concerns
//! both; the answers must be the same.

use std::time::{Duration, Instant};

use http::StatusCode;
use hubify_edge_tests::client::{http, https_alpn, https_h1, raw_http, raw_https, ALPN_H2};
use hubify_edge_tests::{
    free_port, host, is_generated_request_id, EdgeConfig, PathRule, Req, Resp, Stack, Upstream,
};

/// Both engines: the router's own HTTP code, and Pingora's proxy.
const ENGINES: [bool; 2] = [true, false];

/// The standard stack on one engine.
async fn stack(fast: bool) -> Stack {
    stack_with(fast, |c| c).await
}

/// The standard stack on one engine, the config adjusted.
async fn stack_with(fast: bool, adjust: impl FnOnce(EdgeConfig) -> EdgeConfig) -> Stack {
    Stack::start_with(|c| adjust(c.fast_path(fast))).await
}

/// A request over TLS offering h2 only; the router must pick it.
async fn https_h2(port: u16, sni: &str, req: &Req) -> Resp {
    let (resp, alpn) = https_alpn(port, sni, ALPN_H2, req).await;
    assert_eq!(alpn.as_deref(), Some("h2"), "negotiated ALPN");
    resp
}

/// An HTML error page with a generated request id.
fn assert_html_error(resp: &Resp, status: StatusCode, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.summary());
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/html"),
        "{what}: expected an HTML page, content-type {ct:?}: {}",
        resp.summary()
    );
    assert!(
        resp.text().to_ascii_lowercase().contains("<html")
            || resp.text().to_ascii_lowercase().contains("<!doctype html"),
        "{what}: body is not an HTML page: {}",
        resp.summary()
    );
    let id = resp.request_id();
    assert!(
        is_generated_request_id(&id),
        "{what}: x-request-id should be generated (32 lowercase hex), got {id:?}"
    );
    assert!(
        resp.header("x-upstream").is_none(),
        "{what}: the answer came from an upstream, not the router: {}",
        resp.summary()
    );
}

/// A JSON error `{"status":..,"error":"..","request_id":".."}` matching the header.
fn assert_json_error(resp: &Resp, status: StatusCode, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.summary());
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: expected JSON, content-type {ct:?}: {}",
        resp.summary()
    );
    let v = resp.json();
    assert_eq!(
        v.get("status").and_then(|s| s.as_u64()),
        Some(u64::from(status.as_u16())),
        "{what}: JSON status: {v}"
    );
    let error = v.get("error").and_then(|e| e.as_str()).unwrap_or_default();
    assert!(!error.is_empty(), "{what}: JSON error text is empty: {v}");
    assert_eq!(
        v.get("request_id").and_then(|r| r.as_str()),
        Some(resp.request_id().as_str()),
        "{what}: JSON request_id differs from the x-request-id header: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_label_is_404_html_or_json() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let nobody = host("nobody");

        let resp = https_h1(stack.https_port(), &nobody, &Req::get(&nobody, "/")).await;
        assert_html_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} unknown label over TLS"),
        );

        let resp = https_h1(
            stack.https_port(),
            &nobody,
            &Req::get(&nobody, "/x").accept_json(),
        )
        .await;
        assert_json_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} unknown label over TLS, JSON"),
        );

        let resp = https_h2(stack.https_port(), &nobody, &Req::get(&nobody, "/")).await;
        assert_html_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} unknown label over h2"),
        );

        let resp = https_h2(
            stack.https_port(),
            &nobody,
            &Req::get(&nobody, "/x").accept_json(),
        )
        .await;
        assert_json_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} unknown label over h2, JSON"),
        );

        let resp = http(stack.http_port(), &Req::get(&nobody, "/")).await;
        assert_html_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} unknown label on the plain listener"),
        );

        let resp = http(stack.http_port(), &Req::get(&nobody, "/").accept_json()).await;
        assert_json_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} unknown label on the plain listener, JSON"),
        );

        // A client-sent well-formed id is the one on the error page.
        let resp = http(
            stack.http_port(),
            &Req::get(&nobody, "/")
                .accept_json()
                .header("x-request-id", "err-id-42"),
        )
        .await;
        assert_eq!(
            resp.status,
            StatusCode::NOT_FOUND,
            "fast={fast}: {}",
            resp.summary()
        );
        assert_eq!(resp.request_id(), "err-id-42", "fast={fast}");
        assert_eq!(
            resp.json().get("request_id").and_then(|r| r.as_str()),
            Some("err-id-42"),
            "fast={fast}"
        );

        assert!(
            stack.gateway.requests().is_empty(),
            "fast={fast}: an unknown label reached the upstream: {:?}",
            stack.gateway.requests()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_domain_or_deeper_are_404() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        for name in [
            "evil.com",
            "alice.hubify.test.evil.com",
            "a.b.hubify.test",
            "alice.bob.hubify.test",
        ] {
            let resp = http(stack.http_port(), &Req::get(name, "/")).await;
            assert_html_error(
                &resp,
                StatusCode::NOT_FOUND,
                &format!("fast={fast} Host {name}"),
            );
            let resp = http(stack.http_port(), &Req::get(name, "/").accept_json()).await;
            assert_json_error(
                &resp,
                StatusCode::NOT_FOUND,
                &format!("fast={fast} Host {name}, JSON"),
            );
        }
        assert!(
            stack.gateway.requests().is_empty(),
            "fast={fast}: a foreign name reached the upstream: {:?}",
            stack.gateway.requests()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_disagreeing_with_sni_is_421() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let resp = https_h1(
            stack.https_port(),
            &host("alice"),
            &Req::get(&host("bob"), "/"),
        )
        .await;
        assert_html_error(
            &resp,
            StatusCode::MISDIRECTED_REQUEST,
            &format!("fast={fast} SNI alice, Host bob"),
        );

        let resp = https_h1(
            stack.https_port(),
            &host("alice"),
            &Req::get(&host("bob"), "/").accept_json(),
        )
        .await;
        assert_json_error(
            &resp,
            StatusCode::MISDIRECTED_REQUEST,
            &format!("fast={fast} SNI alice, Host bob, JSON"),
        );

        // HTTP/2: the :authority disagrees with the SNI.
        let resp = https_h2(
            stack.https_port(),
            &host("alice"),
            &Req::get(&host("bob"), "/"),
        )
        .await;
        assert_html_error(
            &resp,
            StatusCode::MISDIRECTED_REQUEST,
            &format!("fast={fast} h2 SNI alice, :authority bob"),
        );
        let resp = https_h2(
            stack.https_port(),
            &host("alice"),
            &Req::get(&host("bob"), "/").accept_json(),
        )
        .await;
        assert_json_error(
            &resp,
            StatusCode::MISDIRECTED_REQUEST,
            &format!("fast={fast} h2 SNI alice, :authority bob, JSON"),
        );

        assert!(
            stack.gateway.requests().is_empty(),
            "fast={fast}: a misdirected request reached the upstream: {:?}",
            stack.gateway.requests()
        );

        // Control: the same connection setup with agreeing names is forwarded.
        let resp = https_h1(
            stack.https_port(),
            &host("bob"),
            &Req::get(&host("bob"), "/"),
        )
        .await;
        assert_eq!(resp.echo().service, "gateway", "fast={fast}");
        let resp = https_h2(
            stack.https_port(),
            &host("bob"),
            &Req::get(&host("bob"), "/"),
        )
        .await;
        assert_eq!(resp.echo().service, "gateway", "fast={fast} h2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_host_is_400() {
    for fast in ENGINES {
        let stack = stack(fast).await;

        let raw = raw_http(stack.http_port(), b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("fast={fast}: no answer to a request without Host: {e}"));
        assert_eq!(
            raw.status,
            400,
            "fast={fast} missing Host:\n{}{}",
            raw.head,
            raw.text()
        );
        let id = raw.header("x-request-id").unwrap_or_default();
        assert!(
            is_generated_request_id(id),
            "fast={fast} missing Host: x-request-id {id:?}\n{}",
            raw.head
        );

        let raw = raw_http(
            stack.http_port(),
            b"GET / HTTP/1.1\r\nHost: bad host!\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap_or_else(|e| {
            panic!("fast={fast}: no answer to a request with a malformed Host: {e}")
        });
        assert_eq!(
            raw.status,
            400,
            "fast={fast} malformed Host:\n{}{}",
            raw.head,
            raw.text()
        );
        assert!(
            raw.header("x-request-id").is_some(),
            "fast={fast} malformed Host:\n{}",
            raw.head
        );

        let raw = raw_http(
            stack.http_port(),
            b"GET / HTTP/1.1\r\nHost: bad host!\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap_or_else(|e| {
            panic!("fast={fast}: no answer to a request with a malformed Host (JSON): {e}")
        });
        assert_eq!(
            raw.status,
            400,
            "fast={fast} malformed Host, JSON:\n{}{}",
            raw.head,
            raw.text()
        );
        let v: serde_json::Value = serde_json::from_slice(&raw.body).unwrap_or_else(|e| {
            panic!(
                "fast={fast} malformed Host, JSON: body not JSON ({e}):\n{}{}",
                raw.head,
                raw.text()
            )
        });
        assert_eq!(
            v.get("status").and_then(|s| s.as_u64()),
            Some(400),
            "fast={fast}: {v}"
        );
        assert_eq!(
            v.get("request_id").and_then(|r| r.as_str()),
            raw.header("x-request-id"),
            "fast={fast}: {v}"
        );

        let raw = raw_https(
            stack.https_port(),
            &host("alice"),
            b"GET / HTTP/1.1\r\nHost: bad host!\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap_or_else(|e| {
            panic!("fast={fast}: no answer over TLS to a request with a malformed Host: {e}")
        });
        assert_eq!(
            raw.status,
            400,
            "fast={fast} malformed Host over TLS:\n{}{}",
            raw.head,
            raw.text()
        );
        assert!(
            raw.header("x-request-id").is_some(),
            "fast={fast}: {}",
            raw.head
        );

        assert!(
            stack.gateway.requests().is_empty(),
            "fast={fast}: a request without a valid Host reached the upstream: {:?}",
            stack.gateway.requests()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_header_preference_picks_json_or_html() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let nobody = host("nobody");
        let prefers_json =
            Req::get(&nobody, "/").header("accept", "application/json, text/html;q=0.5");
        let prefers_html =
            Req::get(&nobody, "/").header("accept", "text/html, application/json;q=0.5");
        let browser = Req::get(&nobody, "/").header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        );

        let resp = http(stack.http_port(), &prefers_json).await;
        assert_json_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} Accept prefers JSON"),
        );
        let resp = http(stack.http_port(), &prefers_html).await;
        assert_html_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} Accept prefers HTML"),
        );
        let resp = http(stack.http_port(), &browser).await;
        assert_html_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} browser Accept"),
        );

        // The same over HTTP/2.
        let resp = https_h2(stack.https_port(), &nobody, &prefers_json).await;
        assert_json_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} h2 Accept prefers JSON"),
        );
        let resp = https_h2(stack.https_port(), &nobody, &prefers_html).await;
        assert_html_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} h2 Accept prefers HTML"),
        );
        let resp = https_h2(stack.https_port(), &nobody, &browser).await;
        assert_html_error(
            &resp,
            StatusCode::NOT_FOUND,
            &format!("fast={fast} h2 browser Accept"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_is_502() {
    for fast in ENGINES {
        let dead_port = free_port();
        let stack = stack_with(fast, |c| {
            c.connect_timeout("2s")
                .path(PathRule::new("/refused", dead_port))
        })
        .await;
        let alice = host("alice");

        let started = Instant::now();
        let resp = https_h1(stack.https_port(), &alice, &Req::get(&alice, "/refused/x")).await;
        assert_html_error(
            &resp,
            StatusCode::BAD_GATEWAY,
            &format!("fast={fast} refused upstream"),
        );
        // "within the connect timeout": generous bound, the point is it answers rather than hangs.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "fast={fast}: 502 took {:?}",
            started.elapsed()
        );

        let resp = http(
            stack.http_port(),
            &Req::get(&alice, "/refused").accept_json(),
        )
        .await;
        assert_json_error(
            &resp,
            StatusCode::BAD_GATEWAY,
            &format!("fast={fast} refused upstream, JSON"),
        );

        let resp = https_h2(stack.https_port(), &alice, &Req::get(&alice, "/refused/h2")).await;
        assert_html_error(
            &resp,
            StatusCode::BAD_GATEWAY,
            &format!("fast={fast} h2 refused upstream"),
        );
        let resp = https_h2(
            stack.https_port(),
            &alice,
            &Req::get(&alice, "/refused").accept_json(),
        )
        .await;
        assert_json_error(
            &resp,
            StatusCode::BAD_GATEWAY,
            &format!("fast={fast} h2 refused upstream, JSON"),
        );

        // The other rules still work.
        let resp = https_h1(stack.https_port(), &alice, &Req::get(&alice, "/fine")).await;
        assert_eq!(resp.echo().service, "gateway", "fast={fast}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504_after_read_timeout() {
    for fast in ENGINES {
        let hole = Upstream::black_hole("black-hole").await;
        let hole_port = hole.port;
        let stack = stack_with(fast, |c| {
            c.read_timeout("1s").path(PathRule::new("/hole", hole_port))
        })
        .await;
        let alice = host("alice");

        let started = Instant::now();
        let resp = https_h1(stack.https_port(), &alice, &Req::get(&alice, "/hole")).await;
        let elapsed = started.elapsed();
        assert_html_error(
            &resp,
            StatusCode::GATEWAY_TIMEOUT,
            &format!("fast={fast} silent upstream"),
        );
        assert!(
            hole.connections() >= 1,
            "fast={fast}: the router never connected to the black hole"
        );
        // The router waited for the upstream (read_timeout = 1s) rather than failing at once.
        assert!(
            elapsed >= Duration::from_millis(900),
            "fast={fast}: 504 came after {elapsed:?}, before read_timeout (1s) elapsed"
        );

        let resp = http(
            stack.http_port(),
            &Req::get(&alice, "/hole/y").accept_json(),
        )
        .await;
        assert_json_error(
            &resp,
            StatusCode::GATEWAY_TIMEOUT,
            &format!("fast={fast} silent upstream, JSON"),
        );

        let started = Instant::now();
        let resp = https_h2(stack.https_port(), &alice, &Req::get(&alice, "/hole/h2")).await;
        let elapsed = started.elapsed();
        assert_html_error(
            &resp,
            StatusCode::GATEWAY_TIMEOUT,
            &format!("fast={fast} h2 silent upstream"),
        );
        assert!(
            elapsed >= Duration::from_millis(900),
            "fast={fast} h2: 504 came after {elapsed:?}, before read_timeout (1s) elapsed"
        );
    }
}
