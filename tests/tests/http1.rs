//! HTTP/1.1 as a reverse proxy, byte level: keep-alive and pipelining on the client side, upstream
//! connection reuse, every response framing relayed intact (Content-Length, chunked with odd
//! chunks, close-delimited, no-body statuses, HEAD, interim 1xx), large bodies, request bodies,
//! hop-by-hop headers, `Connection: close` and HTTP/1.0, malformed requests, duplicate response
//! headers, byte-exact request targets, per-request forwarded headers on a kept connection, and
//! the router's own answers on a kept connection.
//!
//! These pin down what the router does today (Pingora's HTTP/1 engine) so a replacement engine can
//! be checked against them. Client side: raw bytes over TCP or TLS ([`RawConn`]); upstream side:
//! a scripted raw server ([`RawUpstream`]) where the exact bytes matter, the echo upstream
//! elsewhere.

use std::time::Duration;

use hubify_edge_tests::raw::{
    chunk_encode, pseudo_random, End, Framing, H1Resp, RawConn, RawSeen, RawUpstream, Reply,
    RAW_BOUND,
};
use hubify_edge_tests::{host, is_generated_request_id, EdgeConfig, PathRule, Router, Stack};
use sha2::{Digest, Sha256};

const ALICE: &str = "alice.hubify.test";

#[derive(Clone, Copy, Debug)]
enum T {
    Plain,
    Tls,
}

const BOTH: [T; 2] = [T::Plain, T::Tls];

/// A router whose every path goes to one raw upstream: `/terminal` (stripped) and `/`.
struct RawStack {
    up: RawUpstream,
    _router: Router,
    cfg: EdgeConfig,
}

impl RawStack {
    async fn start(up: RawUpstream) -> RawStack {
        let cfg = EdgeConfig::new()
            .path(PathRule::new("/terminal", up.port).strip())
            .path(PathRule::new("/", up.port));
        let router = Router::start(&cfg).await;
        RawStack {
            up,
            _router: router,
            cfg,
        }
    }

    async fn conn(&self, t: T) -> RawConn {
        connect(t, self.cfg.http_port(), self.cfg.https_port()).await
    }
}

async fn connect(t: T, http_port: u16, https_port: u16) -> RawConn {
    match t {
        T::Plain => RawConn::plain(http_port).await,
        T::Tls => RawConn::tls(https_port, ALICE).await,
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {ALICE}\r\n\r\n")
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The path of the request the raw upstream saw (request target).
fn target(seen: &RawSeen) -> String {
    seen.target()
}

/// The body of an echo upstream response as JSON.
fn echo_json(resp: &H1Resp) -> serde_json::Value {
    assert_eq!(resp.status, 200, "expected an echo: {}", resp.summary());
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("echo body is not JSON ({e}): {}", resp.summary()))
}

fn echo_path(resp: &H1Resp) -> String {
    echo_json(resp)
        .get("path")
        .and_then(|p| p.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn echo_header(resp: &H1Resp, name: &str) -> Option<String> {
    echo_json(resp)
        .get("headers")
        .and_then(|h| h.get(name))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// A final "still usable" check: one more request on `conn` answered by the raw upstream.
async fn still_usable(conn: &mut RawConn, what: &str) {
    let resp = try_roundtrip(conn, get("/still-usable"))
        .await
        .unwrap_or_else(|e| panic!("{what}: the connection is not usable afterwards: {e}"));
    assert_eq!(resp.status, 200, "{what}: {}", resp.summary());
}

/// Send `req` and read one response, errors as text.
async fn try_roundtrip(conn: &mut RawConn, req: String) -> Result<H1Resp, String> {
    conn.try_send(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    conn.try_read(false).await.map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// 1. Keep-alive and upstream reuse

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_answers_sequential_requests_and_reuses_upstream_connections() {
    let stack = Stack::start().await;
    for t in BOTH {
        let before = stack.gateway.connections();
        let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
        for i in 0..3 {
            let resp = conn.roundtrip(get(&format!("/ka/{i}?t={t:?}"))).await;
            assert_eq!(
                echo_path(&resp),
                format!("/ka/{i}?t={t:?}"),
                "{t:?} request {i}"
            );
            assert!(
                !resp.connection_has("close"),
                "{t:?} request {i}: keep-alive response says close: {}",
                resp.summary()
            );
        }
        let opened = stack.gateway.connections() - before;
        assert!(
            opened < 3,
            "{t:?}: 3 requests on one client connection opened {opened} upstream connections \
             (the pool should reuse them)"
        );
        eprintln!("OBSERVED {t:?}: 3 keep-alive requests opened {opened} upstream connection(s)");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Pipelining

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let stack = Stack::start().await;
    for t in BOTH {
        let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
        let mut batch = String::new();
        batch.push_str(&get("/pipe/1"));
        batch.push_str(&format!(
            "POST /pipe/2 HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 5\r\n\r\nhello"
        ));
        batch.push_str(&get("/pipe/3?x=3"));
        conn.send(batch.as_bytes()).await;
        let r1 = conn.read(false).await;
        let r2 = conn.read(false).await;
        let r3 = conn.read(false).await;
        assert_eq!(echo_path(&r1), "/pipe/1", "{t:?}");
        assert_eq!(echo_path(&r2), "/pipe/2", "{t:?}");
        assert_eq!(
            echo_json(&r2).get("body_len").and_then(|b| b.as_u64()),
            Some(5),
            "{t:?}: the pipelined POST body"
        );
        assert_eq!(echo_path(&r3), "/pipe/3?x=3", "{t:?}");
        // And the connection goes on.
        let r4 = conn.roundtrip(get("/pipe/4")).await;
        assert_eq!(echo_path(&r4), "/pipe/4", "{t:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Response framings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_body_is_relayed_with_its_length() {
    let s = RawStack::start(
        RawUpstream::always(Reply::bytes(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
        ))
        .await,
    )
    .await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        let resp = conn.roundtrip(get("/cl")).await;
        assert_eq!(resp.status, 200, "{t:?}: {}", resp.summary());
        assert_eq!(resp.framing, Framing::ContentLength(11), "{t:?}: {}", resp.summary());
        assert_eq!(resp.body, b"hello world");
        assert!(resp.header("transfer-encoding").is_none(), "{}", resp.summary());
        assert_eq!(resp.header("content-type").as_deref(), Some("text/plain"));
        still_usable(&mut conn, "after a Content-Length body").await;
    }
}

/// A chunked response in many chunks: 1-byte chunks, a chunk whose data is split over two writes,
/// a chunk-size line split over two writes, upper-case hex, chunk extensions.
fn odd_chunked_reply() -> (Reply, Vec<u8>) {
    let mut pieces: Vec<Vec<u8>> = vec![
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        b"1\r\na\r\n".to_vec(),
        b"1;name=value\r\nb\r\n".to_vec(),
        b"A\r\n01234".to_vec(),
        b"56789\r\n".to_vec(),
        b"1".to_vec(),
        b"0\r\n".to_vec(),
    ];
    let mut body = b"ab0123456789".to_vec();
    let sixteen = pseudo_random(16, 3);
    let mut p = sixteen.clone();
    p.extend_from_slice(b"\r\n");
    pieces.push(p);
    body.extend_from_slice(&sixteen);
    // 200 more chunks of assorted sizes in one write, with extensions on some.
    let rest = pseudo_random(20_000, 7);
    let encoded = chunk_encode(&rest, &[1, 2, 3, 5, 8, 13, 255, 256, 257], Some("x=\"q\""));
    // chunk_encode ends with the last chunk: keep it.
    pieces.push(encoded);
    body.extend_from_slice(&rest);
    (Reply::pieces(pieces), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_with_odd_chunks_arrives_intact_and_the_connection_stays_usable() {
    let s = RawStack::start(
        RawUpstream::start(|_, seen| {
            if seen.target() == "/still-usable" {
                Reply::ok(b"fine")
            } else {
                odd_chunked_reply().0
            }
        })
        .await,
    )
    .await;
    let (_, expected) = odd_chunked_reply();
    for t in BOTH {
        let mut conn = s.conn(t).await;
        for round in 0..2 {
            let resp = conn.roundtrip(get("/chunked")).await;
            assert_eq!(resp.status, 200, "{t:?}: {}", resp.head_text());
            assert_eq!(
                resp.framing,
                Framing::Chunked,
                "{t:?}: chunked upstream body relayed as chunked: {}",
                resp.head_text()
            );
            assert!(resp.header("content-length").is_none(), "{}", resp.head_text());
            assert_eq!(
                sha(&resp.body),
                sha(&expected),
                "{t:?} round {round}: body differs (got {} bytes, want {})",
                resp.body.len(),
                expected.len()
            );
            let c = resp.chunked.clone().unwrap_or_default();
            eprintln!(
                "OBSERVED {t:?}: client got {} chunks, extensions {:?}, first sizes {:?}",
                c.sizes.len(),
                c.extensions.iter().take(3).collect::<Vec<_>>(),
                c.sizes.iter().take(8).collect::<Vec<_>>()
            );
        }
        still_usable(&mut conn, "after chunked bodies").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_with_trailers() {
    let s = RawStack::start(
        RawUpstream::start(|_, seen| {
            if seen.target() == "/still-usable" {
                Reply::ok(b"fine")
            } else {
                Reply::pieces([
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n",
                    "5\r\nhello\r\n6\r\n world\r\n",
                    "0\r\nX-Checksum: abc123\r\n\r\n",
                ])
            }
        })
        .await,
    )
    .await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        let resp = conn.roundtrip(get("/trailers")).await;
        assert_eq!(resp.status, 200, "{t:?}: {}", resp.head_text());
        assert_eq!(resp.body, b"hello world", "{t:?}");
        let c = resp.chunked.clone().unwrap_or_default();
        eprintln!(
            "OBSERVED {t:?}: trailers relayed: {:?}; head: {:?}",
            c.trailers,
            resp.head_text()
        );
        still_usable(&mut conn, "after a body with trailers").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_upstream_body_is_relayed_whole() {
    let body = pseudo_random(100_000, 11);
    let b2 = body.clone();
    let s = RawStack::start(
        RawUpstream::start(move |_, seen| {
            if seen.target() == "/still-usable" {
                return Reply::ok(b"fine");
            }
            let (a, b) = b2.split_at(40_000);
            Reply::pieces([
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec(),
                a.to_vec(),
                b.to_vec(),
            ])
            .then_close()
        })
        .await,
    )
    .await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        let resp = conn.roundtrip(get("/close-delimited")).await;
        assert_eq!(resp.status, 200, "{t:?}: {}", resp.head_text());
        assert_eq!(sha(&resp.body), sha(&body), "{t:?}: body differs ({} bytes)", resp.body.len());
        eprintln!(
            "OBSERVED {t:?}: close-delimited upstream body relayed as {:?}; head {:?}",
            resp.framing,
            resp.head_text()
        );
        if resp.framing == Framing::Close {
            let end = conn.end(RAW_BOUND).await;
            eprintln!("OBSERVED {t:?}: end after close-delimited: {end:?}");
        } else {
            still_usable(&mut conn, "after a close-delimited body").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_body_statuses_204_and_304_keep_the_connection() {
    let s = RawStack::start(
        RawUpstream::start(|_, seen| match seen.target().as_str() {
            "/204" => Reply::bytes("HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n"),
            "/204-cl0" => {
                Reply::bytes("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            }
            "/304" => Reply::bytes(
                "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\n\r\n",
            ),
            _ => Reply::ok(b"after"),
        })
        .await,
    )
    .await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        for path in ["/204", "/204-cl0", "/304"] {
            let resp = conn.roundtrip(get(path)).await;
            let want = if path == "/304" { 304 } else { 204 };
            assert_eq!(resp.status, want, "{t:?} {path}: {}", resp.summary());
            eprintln!("OBSERVED {t:?} {path}: {:?}", resp.head_text());
            assert!(
                resp.header("transfer-encoding").is_none(),
                "{t:?} {path}: a no-body status got Transfer-Encoding: {}",
                resp.head_text()
            );
            let next = conn.roundtrip(get("/after")).await;
            assert_eq!(
                (next.status, next.body.as_slice()),
                (200, b"after".as_slice()),
                "{t:?}: the request after {path}: {}",
                next.summary()
            );
        }
        let r = conn.roundtrip(get("/304")).await;
        assert_eq!(r.header("etag").as_deref(), Some("\"v1\""), "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_keeps_the_upstream_content_length_and_sends_no_body() {
    let s = RawStack::start(
        RawUpstream::start(|_, seen| {
            let line = seen.request_line();
            if line.starts_with("HEAD /chunked") {
                Reply::bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            } else if line.starts_with("HEAD ") {
                Reply::bytes(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n",
                )
            } else {
                Reply::ok(b"after")
            }
        })
        .await,
    )
    .await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        let resp = conn
            .roundtrip(format!("HEAD /file HTTP/1.1\r\nHost: {ALICE}\r\n\r\n"))
            .await;
        assert_eq!(resp.status, 200, "{t:?}: {}", resp.head_text());
        assert_eq!(
            resp.header("content-length").as_deref(),
            Some("5000"),
            "{t:?}: HEAD must keep the upstream Content-Length: {}",
            resp.head_text()
        );
        // No body bytes: the next response on the connection parses from its first byte.
        let next = conn.roundtrip(get("/after")).await;
        assert_eq!(
            (next.status, next.body.as_slice()),
            (200, b"after".as_slice()),
            "{t:?}: after HEAD: {}",
            next.summary()
        );
        let resp = conn
            .roundtrip(format!("HEAD /chunked HTTP/1.1\r\nHost: {ALICE}\r\n\r\n"))
            .await;
        assert_eq!(resp.status, 200, "{t:?}: {}", resp.head_text());
        eprintln!("OBSERVED {t:?}: HEAD with chunked upstream: {:?}", resp.head_text());
        let next = conn.roundtrip(get("/after")).await;
        assert_eq!(next.body, b"after", "{t:?}: after HEAD (chunked)");
        assert!(
            s.up.seen().iter().any(|r| r.request_line().starts_with("HEAD /file ")),
            "the upstream saw a HEAD"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_before_the_final_response() {
    let s = RawStack::start(
        RawUpstream::start(|_, seen| {
            if seen.target() == "/still-usable" {
                return Reply::ok(b"fine");
            }
            Reply::pieces([
                "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLink: </style.css>; rel=preload; as=style\r\n\r\nfinal",
            ])
        })
        .await,
    )
    .await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        let resp = conn.roundtrip(get("/hints")).await;
        assert_eq!((resp.status, resp.body.as_slice()), (200, b"final".as_slice()), "{t:?}");
        eprintln!("OBSERVED {t:?}: interim responses relayed: {:?}", resp.interim);
        still_usable(&mut conn, "after 103 + 200").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_head_in_small_writes_is_reassembled() {
    let s = RawStack::start(
        RawUpstream::start(|_, seen| {
            if seen.target() == "/still-usable" {
                return Reply::ok(b"fine");
            }
            Reply::pieces([
                "HTTP/1.1 2",
                "00 OK\r\nCont",
                "ent-Length: 3\r\nX-Sp",
                "lit: yes\r",
                "\n\r",
                "\na",
                "bc",
            ])
        })
        .await,
    )
    .await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        let resp = conn.roundtrip(get("/split")).await;
        assert_eq!(resp.status, 200, "{t:?}: {}", resp.summary());
        assert_eq!(resp.body, b"abc", "{t:?}");
        assert_eq!(resp.header("x-split").as_deref(), Some("yes"), "{t:?}");
        still_usable(&mut conn, "after a head in pieces").await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Large bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_arrive_byte_identical() {
    const SIZE: usize = 8 * 1024 * 1024;
    let body = pseudo_random(SIZE, 42);
    let chunked = chunk_encode(&body, &[65_531, 1, 16_384, 100_003], None);
    let (b1, b2) = (body.clone(), chunked.clone());
    let s = RawStack::start(
        RawUpstream::start(move |_, seen| match seen.target().as_str() {
            "/big-cl" => {
                let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").into_bytes();
                r.extend_from_slice(&b1);
                Reply::bytes(r)
            }
            "/big-chunked" => Reply::pieces([
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                b2.clone(),
            ]),
            _ => Reply::ok(b"fine"),
        })
        .await,
    )
    .await;
    let want = sha(&body);
    for t in BOTH {
        let mut conn = s.conn(t).await;
        conn.bound = Duration::from_secs(60);
        let resp = conn.roundtrip(get("/big-cl")).await;
        assert_eq!(resp.status, 200, "{t:?}");
        assert_eq!(resp.framing, Framing::ContentLength(SIZE), "{t:?}: {}", resp.head_text());
        assert_eq!(sha(&resp.body), want, "{t:?}: 8 MiB Content-Length body differs");
        let resp = conn.roundtrip(get("/big-chunked")).await;
        assert_eq!(resp.status, 200, "{t:?}");
        assert_eq!(resp.framing, Framing::Chunked, "{t:?}: {}", resp.head_text());
        assert_eq!(
            (resp.body.len(), sha(&resp.body)),
            (SIZE, want.clone()),
            "{t:?}: 8 MiB chunked body differs"
        );
        still_usable(&mut conn, "after 16 MiB").await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Request bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_upstream_exactly() {
    let s = RawStack::start(RawUpstream::always(Reply::ok(b"got it")).await).await;
    let big = pseudo_random(1024 * 1024, 5);
    let small = pseudo_random(30_000, 9);
    for t in BOTH {
        let before = s.up.seen().len();
        let mut conn = s.conn(t).await;
        // Content-Length, 1 MiB.
        let mut req = format!(
            "POST /upload HTTP/1.1\r\nHost: {ALICE}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .into_bytes();
        req.extend_from_slice(&big);
        let resp = conn.roundtrip(&req).await;
        assert_eq!(resp.status, 200, "{t:?}: {}", resp.summary());
        // Chunked, odd chunks with extensions.
        let mut req = format!(
            "POST /upload-chunked HTTP/1.1\r\nHost: {ALICE}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&chunk_encode(&small, &[1, 7, 4096, 333], Some("e=1")));
        let resp = conn.roundtrip(&req).await;
        assert_eq!(resp.status, 200, "{t:?}: {}", resp.summary());
        // An empty chunked body.
        let resp = conn
            .roundtrip(format!(
                "POST /empty HTTP/1.1\r\nHost: {ALICE}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ))
            .await;
        assert_eq!(resp.status, 200, "{t:?}: {}", resp.summary());

        let seen = s.up.seen();
        let seen = &seen[before..];
        assert_eq!(seen.len(), 3, "{t:?}");
        assert_eq!(sha(&seen[0].body), sha(&big), "{t:?}: 1 MiB Content-Length body");
        assert_eq!(seen[0].header("content-length").as_deref(), Some("1048576"));
        assert_eq!(sha(&seen[1].body), sha(&small), "{t:?}: chunked body");
        assert_eq!(seen[2].body, b"", "{t:?}: empty chunked body");
        eprintln!(
            "OBSERVED {t:?}: chunked request upstream: TE {:?} CL {:?}, {} chunks upstream, ext {:?}",
            seen[1].header("transfer-encoding"),
            seen[1].header("content-length"),
            seen[1].chunked.as_ref().map(|c| c.sizes.len()).unwrap_or(0),
            seen[1].chunked.as_ref().map(|c| c.extensions.iter().take(2).cloned().collect::<Vec<_>>())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_works() {
    let stack = Stack::start().await;
    for t in BOTH {
        let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
        conn.send(format!(
            "POST /expect HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
        ))
        .await;
        let first = conn.try_read_head(Duration::from_secs(5)).await;
        eprintln!("OBSERVED {t:?}: first head after Expect: {first:?}");
        conn.send("0123456789").await;
        let resp = conn.read(false).await;
        assert_eq!(
            echo_json(&resp).get("body_len").and_then(|b| b.as_u64()),
            Some(10),
            "{t:?}"
        );
        let next = conn.roundtrip(get("/after-expect")).await;
        assert_eq!(echo_path(&next), "/after-expect");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Upstream closes a kept connection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_after_each_response_does_not_fail_the_next_request() {
    // Every response says nothing about closing (HTTP/1.1 default keep-alive), then the
    // upstream closes the connection.
    let s = RawStack::start(
        RawUpstream::start(|i, _| Reply::ok(format!("n{i}").as_bytes()).then_close()).await,
    )
    .await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        for i in 0..5 {
            let resp = conn.roundtrip(get(&format!("/drop/{i}"))).await;
            assert_eq!(resp.status, 200, "{t:?} request {i}: {}", resp.summary());
        }
    }
    eprintln!(
        "OBSERVED: 10 requests, upstream saw {} request(s) on {} connection(s)",
        s.up.seen().len(),
        s.up.connections()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Hop-by-hop headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers() {
    let s = RawStack::start(RawUpstream::always(Reply::ok(b"ok")).await).await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        let resp = conn
            .roundtrip(format!(
                "GET /hop HTTP/1.1\r\nHost: {ALICE}\r\nConnection: keep-alive, X-Foo\r\nX-Foo: bar\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Normal: 1\r\n\r\n"
            ))
            .await;
        assert_eq!(resp.status, 200, "{t:?}");
        let seen = s.up.seen().pop().expect("the upstream saw the request");
        eprintln!("OBSERVED {t:?}: upstream head for hop-by-hop request:\n{}", seen.head_text());
        assert_eq!(seen.header("x-normal").as_deref(), Some("1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_do_not_break_the_client_connection() {
    let s = RawStack::start(
        RawUpstream::start(|_, seen| match seen.target().as_str() {
            "/ka" => Reply::bytes(
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Bar\r\nX-Bar: 1\r\nKeep-Alive: timeout=1, max=1\r\nContent-Length: 2\r\n\r\nka",
            ),
            "/close" => Reply::bytes(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\ncl",
            )
            .then_close(),
            _ => Reply::ok(b"fine"),
        })
        .await,
    )
    .await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        let resp = conn.roundtrip(get("/ka")).await;
        assert_eq!(resp.body, b"ka", "{t:?}");
        eprintln!("OBSERVED {t:?}: response head for upstream Connection/Keep-Alive:\n{}", resp.head_text());
        still_usable(&mut conn, "after an upstream Keep-Alive header").await;
        let resp = conn.roundtrip(get("/close")).await;
        assert_eq!(resp.body, b"cl", "{t:?}");
        eprintln!("OBSERVED {t:?}: response head for upstream Connection: close:\n{}", resp.head_text());
        if resp.connection_has("close") {
            eprintln!("OBSERVED {t:?}: client told close, end {:?}", conn.end(RAW_BOUND).await);
        } else {
            still_usable(&mut conn, "after an upstream Connection: close").await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Connection: close and HTTP/1.0

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_close_and_http10() {
    let stack = Stack::start().await;
    for t in BOTH {
        let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
        let resp = conn
            .roundtrip(format!("GET /bye HTTP/1.1\r\nHost: {ALICE}\r\nConnection: close\r\n\r\n"))
            .await;
        assert_eq!(echo_path(&resp), "/bye", "{t:?}");
        eprintln!("OBSERVED {t:?} Connection: close -> {:?}", resp.head_text());
        let end = conn.end(RAW_BOUND).await;
        eprintln!("OBSERVED {t:?} Connection: close end -> {end:?}");

        let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
        let resp = conn
            .roundtrip(format!("GET /ten HTTP/1.0\r\nHost: {ALICE}\r\n\r\n"))
            .await;
        eprintln!("OBSERVED {t:?} HTTP/1.0 -> {:?} framing {:?}", resp.head_text(), resp.framing);
        let end = conn.end(RAW_BOUND).await;
        eprintln!("OBSERVED {t:?} HTTP/1.0 end -> {end:?}");

        let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
        let resp = conn
            .roundtrip(format!("GET /ten-ka HTTP/1.0\r\nHost: {ALICE}\r\nConnection: keep-alive\r\n\r\n"))
            .await;
        eprintln!("OBSERVED {t:?} HTTP/1.0 keep-alive -> {:?} framing {:?}", resp.head_text(), resp.framing);
        let end = conn.end(Duration::from_secs(2)).await;
        eprintln!("OBSERVED {t:?} HTTP/1.0 keep-alive end -> {end:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Malformed requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_an_answer_or_a_close() {
    let s = RawStack::start(RawUpstream::always(Reply::ok(b"upstream")).await).await;
    let big = "a".repeat(70 * 1024);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no colon", b"GET / HTTP/1.1\r\nHost alice.hubify.test\r\n\r\n".to_vec()),
        ("bare LF", format!("GET /lf HTTP/1.1\nHost: {ALICE}\n\n").into_bytes()),
        ("mixed LF", format!("GET /lf2 HTTP/1.1\r\nHost: {ALICE}\nX-A: b\r\n\r\n").into_bytes()),
        ("NUL in value", format!("GET / HTTP/1.1\r\nHost: {ALICE}\r\nX-A: a\0b\r\n\r\n").into_bytes()),
        ("space before colon", format!("GET / HTTP/1.1\r\nHost : {ALICE}\r\n\r\n").into_bytes()),
        ("obs-fold", format!("GET / HTTP/1.1\r\nHost: {ALICE}\r\nX-A: a\r\n b\r\n\r\n").into_bytes()),
        ("bad version", format!("GET / HTTP/9.9\r\nHost: {ALICE}\r\n\r\n").into_bytes()),
        ("garbage line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec()),
        ("double space", format!("GET  / HTTP/1.1\r\nHost: {ALICE}\r\n\r\n").into_bytes()),
        ("CL and TE", format!("POST / HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes()),
        ("two CLs", format!("POST / HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!").into_bytes()),
        ("bad chunk size", format!("POST / HTTP/1.1\r\nHost: {ALICE}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").into_bytes()),
        ("header over 64 KiB", format!("GET / HTTP/1.1\r\nHost: {ALICE}\r\nX-Big: {big}\r\n\r\n").into_bytes()),
    ];
    for (name, bytes) in &cases {
        let before = s.up.seen().len();
        let mut conn = RawConn::plain(s.cfg.http_port()).await;
        let sent = conn.try_send(bytes).await;
        let (got, end) = conn.drain(RAW_BOUND).await;
        let text = String::from_utf8_lossy(&got);
        let first = text.split("\r\n").next().unwrap_or_default().to_owned();
        let reached = s.up.seen().len() - before;
        eprintln!("OBSERVED malformed {name:?}: send {:?}, first line {first:?}, end {end:?}, reached upstream {reached}", sent.as_ref().map_err(|e| e.to_string()));
        assert_ne!(end, End::Open, "{name}: the router neither answered and closed nor closed: got {text:?}");
    }
    // Other connections are still served.
    let mut conn = RawConn::plain(s.cfg.http_port()).await;
    let resp = conn.roundtrip(get("/fine")).await;
    assert_eq!(resp.body, b"upstream");
}

// ---------------------------------------------------------------------------------------------
// 10. Duplicate response headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_response_headers_reach_the_client_in_order() {
    let s = RawStack::start(
        RawUpstream::always(Reply::bytes(
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nX-Multi: one\r\nset-cookie: b=2; HttpOnly\r\nX-Multi: two\r\nSET-COOKIE: c=3\r\nContent-Length: 0\r\n\r\n",
        ))
        .await,
    )
    .await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        let resp = conn.roundtrip(get("/cookies")).await;
        assert_eq!(resp.status, 200, "{t:?}");
        assert_eq!(
            resp.header_all("set-cookie"),
            vec!["a=1; Path=/", "b=2; HttpOnly", "c=3"],
            "{t:?}: {}",
            resp.head_text()
        );
        assert_eq!(resp.header_all("x-multi"), vec!["one", "two"], "{t:?}");
        eprintln!("OBSERVED {t:?}: {:?}", resp.head_text());
    }
}

// ---------------------------------------------------------------------------------------------
// 11. Request targets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_reach_the_upstream_byte_exact() {
    let s = RawStack::start(RawUpstream::always(Reply::ok(b"ok")).await).await;
    let cases: &[(&str, &str)] = &[
        ("/a%20b?x=1&y=%2F", "/a%20b?x=1&y=%2F"),
        ("//double", "//double"),
        ("//double//slash/", "//double//slash/"),
        ("/a/./b/../c", "/a/./b/../c"),
        ("/%7Euser/%2e%2e/x", "/%7Euser/%2e%2e/x"),
        ("/?", "/?"),
        ("/a?b?c=d&&e", "/a?b?c=d&&e"),
        ("/a;p=1,2?q=[x]", "/a;p=1,2?q=[x]"),
        ("/q?x=%zz&plus=a+b", "/q?x=%zz&plus=a+b"),
        ("/terminal?x", "/?x"),
        ("/terminal", "/"),
        ("/terminal/a%2Fb?q=%20", "/a%2Fb?q=%20"),
        ("/terminal/x%20y/", "/x%20y/"),
        ("/terminal//x", "//x"),
    ];
    for t in BOTH {
        let mut conn = s.conn(t).await;
        for (sent, want) in cases {
            let resp = conn.roundtrip(get(sent)).await;
            assert_eq!(resp.status, 200, "{t:?} {sent}: {}", resp.summary());
            let seen = s.up.seen().pop().expect("a request upstream");
            eprintln!("OBSERVED {t:?}: {sent:?} -> {:?}", target(&seen));
            assert_eq!(target(&seen), *want, "{t:?}: target {sent:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Per-request forwarded headers on a kept connection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_request_on_a_connection_gets_its_own_forwarded_headers() {
    let stack = Stack::start().await;
    for t in BOTH {
        let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
        let r1 = conn
            .roundtrip(format!(
                "GET /one HTTP/1.1\r\nHost: {ALICE}\r\nX-Request-Id: first-id\r\nX-Forwarded-For: 198.51.100.1\r\nX-Custom: only-first\r\n\r\n"
            ))
            .await;
        assert_eq!(echo_header(&r1, "x-request-id").as_deref(), Some("first-id"));
        assert_eq!(r1.header("x-request-id").as_deref(), Some("first-id"));
        assert_eq!(
            echo_header(&r1, "x-forwarded-for").as_deref(),
            Some("198.51.100.1, 127.0.0.1")
        );
        let r2 = conn.roundtrip(get("/two")).await;
        let id2 = echo_header(&r2, "x-request-id").unwrap_or_default();
        assert!(is_generated_request_id(&id2), "{t:?}: second id {id2:?}");
        assert_eq!(r2.header("x-request-id"), Some(id2.clone()));
        assert_eq!(echo_header(&r2, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(echo_header(&r2, "x-custom"), None, "{t:?}: header leaked");
        let r3 = conn
            .roundtrip(format!("GET /three HTTP/1.1\r\nHost: {ALICE}\r\nX-Request-Id: third-id\r\n\r\n"))
            .await;
        assert_eq!(echo_header(&r3, "x-request-id").as_deref(), Some("third-id"));
        let r4 = conn.roundtrip(get("/four")).await;
        let id4 = echo_header(&r4, "x-request-id").unwrap_or_default();
        assert!(is_generated_request_id(&id4) && id4 != id2, "{t:?}: fourth id {id4:?}");
        let proto = match t {
            T::Plain => "http",
            T::Tls => "https",
        };
        assert_eq!(echo_header(&r4, "x-forwarded-proto").as_deref(), Some(proto));
        assert_eq!(echo_header(&r4, "x-forwarded-host").as_deref(), Some(ALICE));
    }
}

// ---------------------------------------------------------------------------------------------
// 13. The router's own answers on a kept connection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_answers_on_a_kept_connection() {
    let stack = Stack::start().await;
    let nobody = host("nobody");
    let mut conn = RawConn::plain(stack.http_port()).await;
    let resp = conn
        .roundtrip(format!("GET / HTTP/1.1\r\nHost: {nobody}\r\n\r\n"))
        .await;
    assert_eq!(resp.status, 404);
    eprintln!("OBSERVED 404 head: {:?}", resp.head_text());
    let next = try_roundtrip(&mut conn, get("/after-404")).await;
    eprintln!("OBSERVED after 404: {:?}", next.as_ref().map(|r| r.status));

    let mut conn = RawConn::plain(stack.http_port()).await;
    let resp = conn.roundtrip("GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(resp.status, 400);
    eprintln!("OBSERVED 400 head: {:?}", resp.head_text());
    let next = try_roundtrip(&mut conn, get("/after-400")).await;
    eprintln!("OBSERVED after 400: {:?}", next.as_ref().map(|r| r.status));
}
