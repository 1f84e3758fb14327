//! HTTP/2 clients through the router to an HTTP/1.1 upstream: every response framing the upstream
//! can use arrives intact as DATA frames (Content-Length past the flow-control window, chunked
//! with odd chunks, close-delimited, none for HEAD/204/304), the request the upstream sees
//! (`Host` from `:authority`, one joined Cookie field, hop-by-hop and Fly routing headers gone,
//! the forwarded headers), upstream connections reused across streams, many streams at once on
//! one connection, 103 dropped before the final response, a body cut short ending the stream
//! with an error, an upstream that is down, and request bodies.
//!
//! Streams without a request body are served by the router's own loop (`router/src/http2.rs`),
//! the rest by Pingora's proxy; `fast_path = false` sends every stream to Pingora. Every test
//! runs both ways: the two engines must agree.

use http::{Method, StatusCode};
use hubify_edge_tests::client::H2Conn;
use hubify_edge_tests::raw::{chunk_encode, pseudo_random, Head, RawStack, RawUpstream, Reply};
use hubify_edge_tests::Req;

const ALICE: &str = "alice.hubify.test";

/// Both engines: the router's own HTTP/2 stream path, and Pingora's.
const ENGINES: [bool; 2] = [true, false];

/// `fast=…` and which engine that is, for assertion messages.
fn engine(fast: bool) -> &'static str {
    if fast {
        "fast=true (the router's h2 path)"
    } else {
        "fast=false (Pingora)"
    }
}

async fn stack(up: RawUpstream, fast: bool) -> RawStack {
    RawStack::start_with(up, |c| c.fast_path(fast)).await
}

async fn h2(s: &RawStack) -> H2Conn {
    H2Conn::open(s.cfg.https_port(), ALICE)
        .await
        .unwrap_or_else(|e| panic!("HTTP/2 connection to the router: {e}"))
}

async fn get(c: &H2Conn, path: &str) -> hubify_edge_tests::Resp {
    c.request(&Req::get(ALICE, path))
        .await
        .unwrap_or_else(|e| panic!("GET {path} over h2: {e}"))
}

/// 1 MiB: well past HTTP/2's initial 64 KiB flow-control window.
const BIG: usize = 1 << 20;

/// The upstream's reply for each test path.
fn framings(seen: &hubify_edge_tests::raw::RawSeen) -> Reply {
    let target = seen.target();
    match target.as_str() {
        "/length" => Reply::ok(&pseudo_random(BIG, 1)),
        "/chunked" => {
            let body = pseudo_random(100_000, 2);
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(&chunk_encode(&body, &[1, 7, 4096, 65_536, 3], Some("x=y")));
            // Split the reply so chunk lines straddle reads.
            let (a, b) = r.split_at(r.len() / 3);
            Reply::pieces([a, b])
        }
        "/close" => {
            let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
            r.extend_from_slice(&pseudo_random(70_000, 3));
            Reply::bytes(r).then_close()
        }
        "/no-content" => Reply::bytes("HTTP/1.1 204 No Content\r\n\r\n"),
        "/head" => Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n"),
        "/empty" => Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        "/early-hints" => Reply::bytes(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nfinal",
        ),
        other => Reply::ok(other.as_bytes()),
    }
}

#[tokio::test]
async fn every_response_framing_arrives_intact() {
    for fast in ENGINES {
        let s = stack(RawUpstream::start(|_, seen| framings(seen)).await, fast).await;
        let c = h2(&s).await;
        let engine = engine(fast);

        let r = get(&c, "/length").await;
        assert_eq!(r.status, StatusCode::OK, "{engine}");
        assert_eq!(r.body.len(), BIG, "{engine}: Content-Length body length");
        assert!(
            r.body == pseudo_random(BIG, 1),
            "{engine}: Content-Length body bytes"
        );
        assert_eq!(
            r.header("content-length").as_deref(),
            Some("1048576"),
            "{engine}"
        );
        assert!(r.header("x-request-id").is_some(), "{engine}");

        let r = get(&c, "/chunked").await;
        assert_eq!(r.status, StatusCode::OK, "{engine}");
        assert!(
            r.body == pseudo_random(100_000, 2),
            "{engine}: chunked body decoded"
        );
        assert_eq!(r.header("transfer-encoding"), None, "{engine}");

        let r = get(&c, "/close").await;
        assert_eq!(r.status, StatusCode::OK, "{engine}");
        assert!(
            r.body == pseudo_random(70_000, 3),
            "{engine}: close-delimited body"
        );
        assert_eq!(r.header("connection"), None, "{engine}");

        let r = get(&c, "/no-content").await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{engine}");
        assert!(r.body.is_empty(), "{engine}");

        let r = get(&c, "/empty").await;
        assert_eq!(r.status, StatusCode::OK, "{engine}");
        assert!(r.body.is_empty(), "{engine}");

        let head = c
            .request(&Req::get(ALICE, "/head").method(Method::HEAD))
            .await
            .unwrap_or_else(|e| panic!("{engine}: HEAD over h2: {e}"));
        assert_eq!(head.status, StatusCode::OK, "{engine}");
        assert!(head.body.is_empty(), "{engine}: HEAD has no body");
        assert_eq!(
            head.header("content-length").as_deref(),
            Some("12345"),
            "{engine}"
        );

        // The interim 103 is not relayed (one response head per stream); the final one is, with
        // both of its Set-Cookie fields.
        let r = get(&c, "/early-hints").await;
        assert_eq!(r.status, StatusCode::OK, "{engine}");
        assert_eq!(r.text(), "final", "{engine}");
        let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"], "{engine}");

        // The connection is still good after all of that.
        assert_eq!(get(&c, "/again").await.text(), "/again", "{engine}");
    }
}

#[tokio::test]
async fn the_upstream_gets_an_http1_request_rewritten_from_h2() {
    for fast in ENGINES {
        let s = stack(RawUpstream::always(Reply::ok(b"ok")).await, fast).await;
        let c = h2(&s).await;
        let engine = engine(fast);
        let req = Req::get(ALICE, "/p/a%20b?q=1&r")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("te", "trailers")
            .header("fly-force-instance-id", "m1")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-request-id", "h2-rewrite-1")
            .header("x-custom", "kept");
        let r = c
            .request(&req)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(r.status, StatusCode::OK, "{engine}");
        assert_eq!(r.request_id(), "h2-rewrite-1", "{engine}");
        let seen = s.up.seen();
        let seen = seen.last().expect("the upstream saw the request");
        assert_eq!(
            seen.request_line(),
            "GET /p/a%20b?q=1&r HTTP/1.1",
            "{engine}"
        );
        assert_eq!(seen.header_all("host"), [ALICE], "{engine}");
        assert_eq!(
            seen.header("x-forwarded-host").as_deref(),
            Some(ALICE),
            "{engine}"
        );
        // RFC 9113 §8.2.3: one Cookie field for HTTP/1.1.
        assert_eq!(seen.header_all("cookie"), ["a=1; b=2"], "{engine}");
        assert_eq!(seen.header("te"), None, "{engine}: te is hop-by-hop");
        assert_eq!(seen.header("fly-force-instance-id"), None, "{engine}");
        assert_eq!(seen.header("x-custom").as_deref(), Some("kept"), "{engine}");
        assert_eq!(
            seen.header("x-forwarded-proto").as_deref(),
            Some("https"),
            "{engine}"
        );
        assert_eq!(
            seen.header("x-forwarded-for").as_deref(),
            Some("203.0.113.9, 127.0.0.1"),
            "{engine}"
        );
        assert_eq!(
            seen.header_all("x-request-id"),
            ["h2-rewrite-1"],
            "{engine}"
        );
    }
}

#[tokio::test]
async fn streams_reuse_upstream_connections() {
    for fast in ENGINES {
        let s = stack(RawUpstream::always(Reply::ok(b"ok")).await, fast).await;
        let engine = engine(fast);
        let c = h2(&s).await;
        for i in 0..20 {
            assert_eq!(get(&c, &format!("/r{i}")).await.text(), "ok", "{engine}");
        }
        assert_eq!(
            s.up.connections(),
            1,
            "{engine}: 20 requests one after another should share one upstream connection"
        );
    }
}

#[tokio::test]
async fn many_streams_at_once_each_get_their_own_response() {
    for fast in ENGINES {
        let s = stack(
            RawUpstream::start(|_, seen| Reply::ok(seen.target().as_bytes())).await,
            fast,
        )
        .await;
        let engine = engine(fast);
        let c = h2(&s).await;
        let mut tasks = Vec::new();
        for i in 0..100 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let path = format!("/stream/{i}");
                let r = c.request(&Req::get(ALICE, &path)).await;
                (path, r)
            }));
        }
        for t in tasks {
            let (path, r) = t.await.expect("request task");
            let r = r.unwrap_or_else(|e| panic!("{engine} {path}: {e}"));
            assert_eq!(r.status, StatusCode::OK, "{engine} {path}");
            assert_eq!(
                r.text(),
                path,
                "{engine}: each stream gets its own response"
            );
        }
        assert!(
            s.up.connections() <= 100,
            "{engine}: upstream connections: {}",
            s.up.connections()
        );
    }
}

#[tokio::test]
async fn a_body_cut_short_upstream_fails_the_stream_not_the_connection() {
    for fast in ENGINES {
        let s = stack(
            RawUpstream::start(|_, seen| {
                if seen.target() == "/cut" {
                    Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this")
                        .then_close()
                } else {
                    Reply::ok(b"fine")
                }
            })
            .await,
            fast,
        )
        .await;
        let engine = engine(fast);
        let c = h2(&s).await;
        let r = c.request(&Req::get(ALICE, "/cut")).await;
        assert!(
            r.is_err(),
            "{engine}: a 1000-byte response cut after 9 bytes must not arrive as complete: {:?}",
            r.map(|r| r.summary())
        );
        assert_eq!(get(&c, "/after").await.text(), "fine", "{engine}");
    }
}

#[tokio::test]
async fn an_upstream_that_is_down_gets_a_502_page() {
    for fast in ENGINES {
        // A port with nothing listening: bind, note the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let up = RawUpstream::always(Reply::ok(b"unused")).await;
        let s = RawStack::start_with(up, |c| {
            c.path(hubify_edge_tests::PathRule::new("/down", port))
                .fast_path(fast)
        })
        .await;
        let engine = engine(fast);
        let c = h2(&s).await;
        let r = c
            .request(&Req::get(ALICE, "/down").accept_json())
            .await
            .unwrap_or_else(|e| panic!("{engine}: GET /down: {e}"));
        assert_eq!(
            r.status,
            StatusCode::BAD_GATEWAY,
            "{engine}: {}",
            r.summary()
        );
        assert_eq!(r.json()["status"], 502, "{engine}: {}", r.summary());
        {
            let r = c
                .request(&Req::get(ALICE, "/down").method(Method::HEAD))
                .await
                .unwrap_or_else(|e| panic!("{engine}: HEAD /down: {e}"));
            assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{engine}");
            assert!(r.body.is_empty(), "{engine}: HEAD: no body");
        }
    }
}

#[tokio::test]
async fn request_bodies_go_through_and_arrive_whole() {
    for fast in ENGINES {
        let s = stack(
            RawUpstream::start(|_, seen| Reply::ok(format!("{}", seen.body.len()).as_bytes()))
                .await,
            fast,
        )
        .await;
        let engine = engine(fast);
        let c = h2(&s).await;
        let body = pseudo_random(300_000, 4);
        let r = c
            .request(
                &Req::get(ALICE, "/upload")
                    .method(Method::POST)
                    .body(body.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("{engine}: POST /upload: {e}"));
        assert_eq!(r.status, StatusCode::OK, "{engine}: {}", r.summary());
        assert_eq!(r.text(), "300000", "{engine}");
        let seen = s.up.seen();
        assert!(
            seen.last().unwrap().body == body,
            "{engine}: the upstream got the body intact"
        );
        // A bodiless stream on the same connection afterwards.
        assert_eq!(get(&c, "/x").await.text(), "0", "{engine}");
    }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced_without_an_error() {
    // Every reply ends with the upstream closing the connection without saying so, so the
    // router pools a connection that is already closed; the next request must go out again on
    // a new one.
    for fast in ENGINES {
        let s = stack(
            RawUpstream::start(|_, seen| Reply::ok(seen.target().as_bytes()).then_close()).await,
            fast,
        )
        .await;
        let engine = engine(fast);
        let c = h2(&s).await;
        for i in 0..3 {
            let path = format!("/again/{i}");
            assert_eq!(get(&c, &path).await.text(), path, "{engine}");
        }
        assert_eq!(
            s.up.seen().len(),
            3,
            "{engine}: each request reached the upstream once"
        );
        assert_eq!(
            s.up.connections(),
            3,
            "{engine}: one new connection per request"
        );
    }
}
