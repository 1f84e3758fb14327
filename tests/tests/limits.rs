//! Per-workspace limits (`[limits]`, README): requests per second with a burst, concurrent
//! requests, open WebSockets — per workspace, per replica. Beyond a limit: 429 with
//! `Retry-After` (the router's page, JSON for API clients), counted in
//! `hubify_limited_total{kind}`; the neighbour workspace is unaffected. Every case on both
//! engines (`server.fast_path = true` and `false`) and, for plain requests, over HTTP/1.1 and
//! HTTP/2.

use std::time::Duration;

use hubify_edge_tests::client::{https_alpn, ALPN_H1, ALPN_H2};
use hubify_edge_tests::ops::scrape;
use hubify_edge_tests::{host, EdgeConfig, PathRule, Req, Stack, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ENGINES: [bool; 2] = [true, false];

fn protocols() -> [(&'static str, &'static [&'static str]); 2] {
    [("h1", ALPN_H1), ("h2", ALPN_H2)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_admits_the_burst_then_429_with_retry_after_and_the_neighbour_passes() {
    for fast in ENGINES {
        for (proto, alpn) in protocols() {
            let tag = format!("fast_path={fast} {proto}");
            let s = Stack::start_with(|c: EdgeConfig| {
                c.fast_path(fast)
                    .with_ops()
                    .limits("requests_per_second = 1\nburst = 3")
            })
            .await;
            let port = s.cfg.https_port();
            let (alice, bob) = (host("alice"), host("bob"));
            for i in 0..3 {
                let (r, _) = https_alpn(port, &alice, alpn, &Req::get(&alice, "/")).await;
                assert_eq!(r.status, 200, "{tag}: request {i} of the burst");
            }
            let req = Req::get(&alice, "/api").header("accept", "application/json");
            let (r, _) = https_alpn(port, &alice, alpn, &req).await;
            assert_eq!(r.status, 429, "{tag}: beyond the burst");
            let retry: u32 = r
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{tag}: no Retry-After in {:?}", r.headers));
            assert!((1..=2).contains(&retry), "{tag}: Retry-After {retry}");
            let body: serde_json::Value = serde_json::from_slice(&r.body)
                .unwrap_or_else(|e| panic!("{tag}: the 429 is not JSON ({e}): {:?}", r.body));
            assert_eq!(body["status"], 429, "{tag}: {body}");
            // The neighbour has its own bucket.
            let (r, _) = https_alpn(port, &bob, alpn, &Req::get(&bob, "/")).await;
            assert_eq!(r.status, 200, "{tag}: bob");
            let m = scrape(s.cfg.ops.expect("ops")).await;
            assert_eq!(
                m.get(r#"hubify_limited_total{kind="rate"}"#),
                Some(1.0),
                "{tag}"
            );
            assert_eq!(
                s.gateway.requests().len(),
                4,
                "{tag}: the refused request reached the workspace"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_beyond_the_limit_get_429_until_one_ends() {
    let slow = Upstream::slow("slow", Duration::from_millis(1500)).await;
    for fast in ENGINES {
        for (proto, alpn) in protocols() {
            let tag = format!("fast_path={fast} {proto}");
            let slow_port = slow.port;
            let s = Stack::start_with(move |c: EdgeConfig| {
                let mut c = c.fast_path(fast).limits("concurrent_requests = 1");
                c.paths.insert(0, PathRule::new("/slow", slow_port));
                c
            })
            .await;
            let port = s.cfg.https_port();
            let (alice, bob) = (host("alice"), host("bob"));
            let before = slow.requests().len();
            let a = alice.clone();
            let first = tokio::spawn(async move {
                https_alpn(port, &a, alpn, &Req::get(&a, "/slow/1")).await.0
            });
            slow.wait_for_requests(before + 1, Duration::from_secs(5))
                .await;
            let (r, _) = https_alpn(port, &alice, alpn, &Req::get(&alice, "/")).await;
            assert_eq!(r.status, 429, "{tag}: a second request in flight");
            assert!(r.header("retry-after").is_some(), "{tag}: {:?}", r.headers);
            let (r, _) = https_alpn(port, &bob, alpn, &Req::get(&bob, "/")).await;
            assert_eq!(r.status, 200, "{tag}: bob is not limited by alice");
            assert_eq!(first.await.expect("first").status, 200, "{tag}: the first");
            let (r, _) = https_alpn(port, &alice, alpn, &Req::get(&alice, "/")).await;
            assert_eq!(r.status, 200, "{tag}: after the first ended");
        }
    }
}

/// A WebSocket handshake on a raw socket: the status of the answer, and the socket (open when
/// it was 101).
async fn handshake(port: u16, host: &str) -> (u16, tokio::net::TcpStream) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let req = format!(
        "GET /terminal/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("an answer in time")
            .expect("read");
        assert_eq!(n, 1, "closed before the head ended: {head:?}");
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {text}"));
    (status, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_websockets_beyond_the_limit_get_429_and_requests_still_pass() {
    for fast in ENGINES {
        let tag = format!("fast_path={fast}");
        let s = Stack::start_with(|c: EdgeConfig| {
            c.fast_path(fast)
                .limits("websockets = 1\nconcurrent_requests = 1")
        })
        .await;
        let port = s.cfg.http_port();
        let (alice, bob) = (host("alice"), host("bob"));
        let (status, open) = handshake(port, &alice).await;
        assert_eq!(status, 101, "{tag}: the first WebSocket");
        let (status, _) = handshake(port, &alice).await;
        assert_eq!(status, 429, "{tag}: a second WebSocket");
        // An open terminal is not a request in flight: requests still pass.
        let (r, _) = https_alpn(s.cfg.https_port(), &alice, ALPN_H1, &Req::get(&alice, "/")).await;
        assert_eq!(r.status, 200, "{tag}: a request beside the WebSocket");
        let (status, _bob_ws) = handshake(port, &bob).await;
        assert_eq!(status, 101, "{tag}: bob's WebSocket");
        drop(open);
        // The slot comes back once the router sees the socket close.
        let mut again = 0;
        for _ in 0..50 {
            again = handshake(port, &alice).await.0;
            if again == 101 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(again, 101, "{tag}: after the first WebSocket closed");
    }
}
