//! HTTP/1.1 as a reverse proxy, byte level: keep-alive and pipelining on the client side, upstream
//! connection reuse, every response framing relayed intact (Content-Length, chunked with odd
//! chunks, close-delimited, no-body statuses, HEAD, interim 1xx), large bodies, request bodies,
//! hop-by-hop headers, `Connection: close` and HTTP/1.0, malformed requests, duplicate response
//! headers, byte-exact request targets, per-request forwarded headers on a kept connection, and
//! the router's own answers on a kept connection.
//!
//! These were written against Pingora's HTTP/1 engine and now hold for the router's HTTP/1.1 fast
//! path (`router/src/h1.rs`) too, which serves simple requests and hands the rest (request
//! bodies, `Expect`, HTTP/1.0, upgrades, malformed heads) to Pingora at a request boundary; the
//! last tests cover the hand-over, idle connections and the engine switch. Client side: raw bytes over TCP or TLS ([`RawConn`]); upstream side:
//! a scripted raw server ([`RawUpstream`]) where the exact bytes matter, the echo upstream
//! elsewhere.

use std::time::Duration;

use hubify_edge_tests::raw::{
    chunk_encode, pseudo_random, End, Framing, H1Resp, Head, RawConn, RawSeen, RawStack,
    RawUpstream, Reply, RAW_BOUND,
};
use hubify_edge_tests::{host, is_generated_request_id, Stack};
use sha2::{Digest, Sha256};

const ALICE: &str = "alice.hubify.test";

#[derive(Clone, Copy, Debug)]
enum T {
    Plain,
    Tls,
}

const BOTH: [T; 2] = [T::Plain, T::Tls];

/// Both engines: the router's own HTTP/1.1 code (`server.fast_path = true`) and Pingora's proxy
/// (`false`). Every test runs on both and must get the same answers.
const ENGINES: [bool; 2] = [true, false];

/// A router on one engine whose every path goes to `up`.
async fn raw_stack(fast: bool, up: RawUpstream) -> RawStack {
    RawStack::start_with(up, |c| c.fast_path(fast)).await
}

/// The standard stack (echo upstreams) on one engine.
async fn stack(fast: bool) -> Stack {
    Stack::start_with(|c| c.fast_path(fast)).await
}

/// A fast-path client connection to the stack's router.
trait Conn {
    async fn conn(&self, t: T) -> RawConn;
}

impl Conn for RawStack {
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

/// The response carries exactly one `Connection` header, with this value.
fn assert_connection(resp: &H1Resp, want: &str, fast: bool, t: T) {
    assert_eq!(
        resp.header_all("connection"),
        [want],
        "fast={fast} {t:?}: {}",
        resp.head_text()
    );
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
    for fast in ENGINES {
        let stack = stack(fast).await;
        for t in BOTH {
            let before = stack.gateway.connections();
            let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
            for i in 0..3 {
                let resp = conn.roundtrip(get(&format!("/ka/{i}?t={t:?}"))).await;
                assert_eq!(
                    echo_path(&resp),
                    format!("/ka/{i}?t={t:?}"),
                    "fast={fast} {t:?} request {i}"
                );
                assert!(
                    !resp.connection_has("close"),
                    "fast={fast} {t:?} request {i}: keep-alive response says close: {}",
                    resp.summary()
                );
            }
            let opened = stack.gateway.connections() - before;
            assert!(
                opened < 3,
                "fast={fast} {t:?}: 3 requests on one client connection opened {opened} upstream connections \
                 (the pool should reuse them)"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Pipelining

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_or_not_processed() {
    for fast in ENGINES {
        // Three requests in one write. Main (Pingora) answers the first with `Connection: keep-alive`
        // and then closes the connection without reading the other two (see the report); what must
        // hold for any engine: the responses that come are the right ones in order, the first one
        // comes, and a request the upstream processed is never left unanswered.
        let s = raw_stack(
            fast,
            RawUpstream::start(|_, seen| {
                let mut body = seen.target().into_bytes();
                body.extend_from_slice(b" ");
                body.extend_from_slice(&seen.body);
                Reply::ok(&body)
            })
            .await,
        )
        .await;
        for t in BOTH {
            let before = s.up.seen().len();
            let mut conn = s.conn(t).await;
            let mut batch = String::new();
            batch.push_str(&get("/pipe/1"));
            batch.push_str(&format!(
                "POST /pipe/2 HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 5\r\n\r\nhello"
            ));
            batch.push_str(&get("/pipe/3?x=3"));
            conn.send(batch.as_bytes()).await;
            let want: [&[u8]; 3] = [b"/pipe/1 ", b"/pipe/2 hello", b"/pipe/3?x=3 "];
            let mut answered = 0;
            for w in want {
                match conn.try_read(false).await {
                    Ok(r) => {
                        assert_eq!(r.status, 200, "fast={fast} {t:?}: {}", r.summary());
                        assert_eq!(
                            r.text(),
                            String::from_utf8_lossy(w),
                            "fast={fast} {t:?}: out of order"
                        );
                        answered += 1;
                    }
                    Err(e) => {
                        // A close (FIN, reset, or TLS without close_notify) ends the exchange; a
                        // connection left open without an answer does not.
                        assert!(
                            !e.to_string().contains("no complete response within"),
                            "fast={fast} {t:?}: after {answered} answer(s) the connection neither answered nor \
                             closed: {e}"
                        );
                        break;
                    }
                }
            }
            // docs/http.md: pipelined requests are answered in order on every engine, across
            // the hand-over of the POST.
            assert_eq!(
                answered, 3,
                "fast={fast} {t:?}: {answered} of 3 pipelined requests answered"
            );
            let processed = s.up.seen().len() - before;
            assert_eq!(
                processed, answered,
                "fast={fast} {t:?}: the upstream processed {processed} pipelined request(s), the client got \
                 {answered} answer(s)"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Response framings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_body_is_relayed_with_its_length() {
    for fast in ENGINES {
        let s = raw_stack(
            fast,
            RawUpstream::always(Reply::bytes(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
            ))
            .await,
        )
        .await;
        for t in BOTH {
            let mut conn = s.conn(t).await;
            let resp = conn.roundtrip(get("/cl")).await;
            assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.summary());
            assert_eq!(
                resp.framing,
                Framing::ContentLength(11),
                "fast={fast} {t:?}: {}",
                resp.summary()
            );
            assert_eq!(resp.body, b"hello world", "fast={fast} {t:?}");
            assert!(
                resp.header("transfer-encoding").is_none(),
                "fast={fast} {t:?}: {}",
                resp.summary()
            );
            assert_eq!(
                resp.header("content-type").as_deref(),
                Some("text/plain"),
                "fast={fast} {t:?}"
            );
            still_usable(
                &mut conn,
                &format!("fast={fast} {t:?}: after a Content-Length body"),
            )
            .await;
        }
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
    for fast in ENGINES {
        let s = raw_stack(
            fast,
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
                assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.head_text());
                assert_eq!(
                    resp.framing,
                    Framing::Chunked,
                    "fast={fast} {t:?}: chunked upstream body relayed as chunked: {}",
                    resp.head_text()
                );
                assert!(
                    resp.header("content-length").is_none(),
                    "fast={fast} {t:?}: {}",
                    resp.head_text()
                );
                assert_eq!(
                    sha(&resp.body),
                    sha(&expected),
                    "fast={fast} {t:?} round {round}: body differs (got {} bytes, want {})",
                    resp.body.len(),
                    expected.len()
                );
            }
            still_usable(
                &mut conn,
                &format!("fast={fast} {t:?}: after chunked bodies"),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_with_trailers_keeps_the_body_and_the_connection() {
    for fast in ENGINES {
        let s = raw_stack(
            fast,
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
            assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.head_text());
            assert_eq!(resp.framing, Framing::Chunked, "fast={fast} {t:?}");
            assert_eq!(resp.body, b"hello world", "fast={fast} {t:?}");
            // docs/http.md: the router's paths relay the trailer fields to an HTTP/1.1 client,
            // Pingora's engine drops them (a difference kept on purpose).
            let c = resp.chunked.clone().unwrap_or_default();
            let want: &[&str] = if fast { &["X-Checksum: abc123"] } else { &[] };
            assert_eq!(c.trailers, want, "fast={fast} {t:?}");
            still_usable(
                &mut conn,
                &format!("fast={fast} {t:?}: after a body with trailers"),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_upstream_body_is_relayed_whole() {
    for fast in ENGINES {
        let body = pseudo_random(100_000, 11);
        let b2 = body.clone();
        let s = raw_stack(
            fast,
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
            assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.head_text());
            assert_eq!(
                sha(&resp.body),
                sha(&body),
                "fast={fast} {t:?}: body differs ({} bytes)",
                resp.body.len()
            );
            // Main re-frames a close-delimited upstream body as chunked and keeps the client
            // connection.
            assert_eq!(
                resp.framing,
                Framing::Chunked,
                "fast={fast} {t:?}: {}",
                resp.head_text()
            );
            assert!(
                resp.connection_has("keep-alive"),
                "fast={fast} {t:?}: {}",
                resp.head_text()
            );
            still_usable(
                &mut conn,
                &format!("fast={fast} {t:?}: after a close-delimited body"),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_body_statuses_204_and_304_keep_the_connection() {
    for fast in ENGINES {
        let s = raw_stack(
            fast,
            RawUpstream::start(|_, seen| match seen.target().as_str() {
                "/204" => Reply::bytes("HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n"),
                "/204-cl0" => Reply::bytes("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"),
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
                assert_eq!(
                    resp.status,
                    want,
                    "fast={fast} {t:?} {path}: {}",
                    resp.summary()
                );
                // The upstream's length header, if any, is relayed as is; none is added.
                let want_cl = if path == "/204-cl0" { Some("0") } else { None };
                assert_eq!(
                    resp.header("content-length").as_deref(),
                    want_cl,
                    "fast={fast} {t:?} {path}: {}",
                    resp.head_text()
                );
                assert!(
                    resp.header("transfer-encoding").is_none(),
                    "fast={fast} {t:?} {path}: a no-body status got Transfer-Encoding: {}",
                    resp.head_text()
                );
                let next = conn.roundtrip(get("/after")).await;
                assert_eq!(
                    (next.status, next.body.as_slice()),
                    (200, b"after".as_slice()),
                    "fast={fast} {t:?}: the request after {path}: {}",
                    next.summary()
                );
            }
            let r = conn.roundtrip(get("/304")).await;
            assert_eq!(
                r.header("etag").as_deref(),
                Some("\"v1\""),
                "fast={fast} {t:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_keeps_the_upstream_content_length_and_sends_no_body() {
    for fast in ENGINES {
        let s = raw_stack(
            fast,
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
            assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.head_text());
            assert_eq!(
                resp.header("content-length").as_deref(),
                Some("5000"),
                "fast={fast} {t:?}: HEAD must keep the upstream Content-Length: {}",
                resp.head_text()
            );
            // No body bytes: the next response on the connection parses from its first byte.
            let next = conn.roundtrip(get("/after")).await;
            assert_eq!(
                (next.status, next.body.as_slice()),
                (200, b"after".as_slice()),
                "fast={fast} {t:?}: after HEAD: {}",
                next.summary()
            );
            let resp = conn
                .roundtrip(format!("HEAD /chunked HTTP/1.1\r\nHost: {ALICE}\r\n\r\n"))
                .await;
            assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.head_text());
            assert_eq!(
                resp.header("transfer-encoding").as_deref(),
                Some("chunked"),
                "fast={fast} {t:?}: HEAD keeps the upstream's framing header: {}",
                resp.head_text()
            );
            let next = conn.roundtrip(get("/after")).await;
            assert_eq!(
                next.body, b"after",
                "fast={fast} {t:?}: after HEAD (chunked)"
            );
            assert!(
                s.up.seen()
                    .iter()
                    .any(|r| r.request_line().starts_with("HEAD /file ")),
                "fast={fast} {t:?}: the upstream saw a HEAD"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_before_the_final_response() {
    for fast in ENGINES {
        let s = raw_stack(
            fast,
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
            assert_eq!(
                (resp.status, resp.body.as_slice()),
                (200, b"final".as_slice()),
                "fast={fast} {t:?}"
            );
            // The 103 is relayed as its own interim response, with the router's request id.
            assert_eq!(
                resp.interim.len(),
                1,
                "fast={fast} {t:?}: {:?}",
                resp.interim
            );
            let hint = resp.interim[0].to_ascii_lowercase();
            assert!(
                hint.starts_with("http/1.1 103 "),
                "fast={fast} {t:?}: {hint:?}"
            );
            assert!(
                hint.contains("\r\nlink: </style.css>; rel=preload; as=style\r\n"),
                "fast={fast} {t:?}: {hint:?}"
            );
            assert_eq!(
                resp.header("link").as_deref(),
                Some("</style.css>; rel=preload; as=style"),
                "fast={fast} {t:?}"
            );
            still_usable(&mut conn, &format!("fast={fast} {t:?}: after 103 + 200")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_head_in_small_writes_is_reassembled() {
    for fast in ENGINES {
        let s = raw_stack(
            fast,
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
            assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.summary());
            assert_eq!(resp.body, b"abc", "fast={fast} {t:?}");
            assert_eq!(
                resp.header("x-split").as_deref(),
                Some("yes"),
                "fast={fast} {t:?}"
            );
            still_usable(
                &mut conn,
                &format!("fast={fast} {t:?}: after a head in pieces"),
            )
            .await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Large bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_arrive_byte_identical() {
    for fast in ENGINES {
        const SIZE: usize = 8 * 1024 * 1024;
        let body = pseudo_random(SIZE, 42);
        let chunked = chunk_encode(&body, &[65_531, 1, 16_384, 100_003], None);
        let (b1, b2) = (body.clone(), chunked.clone());
        let s = raw_stack(
            fast,
            RawUpstream::start(move |_, seen| match seen.target().as_str() {
                "/big-cl" => {
                    let mut r =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").into_bytes();
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
            assert_eq!(resp.status, 200, "fast={fast} {t:?}");
            assert_eq!(
                resp.framing,
                Framing::ContentLength(SIZE),
                "fast={fast} {t:?}: {}",
                resp.head_text()
            );
            assert_eq!(
                sha(&resp.body),
                want,
                "fast={fast} {t:?}: 8 MiB Content-Length body differs"
            );
            let resp = conn.roundtrip(get("/big-chunked")).await;
            assert_eq!(resp.status, 200, "fast={fast} {t:?}");
            assert_eq!(
                resp.framing,
                Framing::Chunked,
                "fast={fast} {t:?}: {}",
                resp.head_text()
            );
            assert_eq!(
                (resp.body.len(), sha(&resp.body)),
                (SIZE, want.clone()),
                "fast={fast} {t:?}: 8 MiB chunked body differs"
            );
            still_usable(&mut conn, &format!("fast={fast} {t:?}: after 16 MiB")).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Request bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_upstream_exactly() {
    for fast in ENGINES {
        let s = raw_stack(fast, RawUpstream::always(Reply::ok(b"got it")).await).await;
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
            assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.summary());
            // Chunked, odd chunks with extensions.
            let mut req = format!(
                "POST /upload-chunked HTTP/1.1\r\nHost: {ALICE}\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .into_bytes();
            req.extend_from_slice(&chunk_encode(&small, &[1, 7, 4096, 333], Some("e=1")));
            let resp = conn.roundtrip(&req).await;
            assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.summary());
            // An empty chunked body.
            let resp = conn
                .roundtrip(format!(
                    "POST /empty HTTP/1.1\r\nHost: {ALICE}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                ))
                .await;
            assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.summary());

            let seen = s.up.seen();
            let seen = &seen[before..];
            assert_eq!(seen.len(), 3, "fast={fast} {t:?}");
            assert_eq!(
                sha(&seen[0].body),
                sha(&big),
                "fast={fast} {t:?}: 1 MiB Content-Length body"
            );
            assert_eq!(
                seen[0].header("content-length").as_deref(),
                Some("1048576"),
                "fast={fast} {t:?}"
            );
            assert_eq!(
                sha(&seen[1].body),
                sha(&small),
                "fast={fast} {t:?}: chunked body"
            );
            assert_eq!(seen[2].body, b"", "fast={fast} {t:?}: empty chunked body");
            // A chunked request body is forwarded chunked (main re-chunks: extensions dropped).
            assert_eq!(
                seen[1].header("transfer-encoding").as_deref(),
                Some("chunked"),
                "fast={fast} {t:?}"
            );
            assert_eq!(seen[1].header("content-length"), None, "fast={fast} {t:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_100_then_the_answer() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        for t in BOTH {
            let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
            conn.send(format!(
                "POST /expect HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
            ))
            .await;
            let first = conn.try_read_head(RAW_BOUND).await.unwrap_or_else(|e| {
                panic!("fast={fast} {t:?}: no 100 Continue before the body was sent: {e}")
            });
            assert!(
                first.starts_with("HTTP/1.1 100 "),
                "fast={fast} {t:?}: first head after Expect: {first:?}"
            );
            conn.send("0123456789").await;
            let resp = conn.read(false).await;
            let echo = echo_json(&resp);
            assert_eq!(
                echo.get("body_len").and_then(|b| b.as_u64()),
                Some(10),
                "fast={fast} {t:?}"
            );
            assert_eq!(
                echo_header(&resp, "expect").as_deref(),
                Some("100-continue"),
                "fast={fast} {t:?}: the upstream sees the Expect header"
            );
            // Main answers `Connection: close` after a 100-continue exchange and closes (see the
            // report); an engine that keeps the connection must say so and serve the next request.
            if resp.connection_has("close") {
                let end = conn.end(RAW_BOUND).await;
                assert!(
                    matches!(end, End::Eof | End::Error(_)),
                    "fast={fast} {t:?}: said close, then {end:?}"
                );
            } else {
                let next = conn.roundtrip(get("/after-expect")).await;
                assert_eq!(echo_path(&next), "/after-expect", "fast={fast} {t:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_to_an_upstream_that_never_sends_100() {
    for fast in ENGINES {
        // The raw upstream reads the whole body before answering and never writes a 100.
        let s = raw_stack(fast, RawUpstream::always(Reply::ok(b"stored")).await).await;
        for t in BOTH {
            let mut conn = s.conn(t).await;
            conn.send(format!(
                "PUT /put HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 6\r\nExpect: 100-continue\r\n\r\n"
            ))
            .await;
            // Main relays the upstream's 100 and does not make one up, so here none comes. Like
            // curl, the client sends the body anyway after waiting a while (2 s): no deadlock.
            let first = conn.try_read_head(Duration::from_secs(2)).await;
            if let Ok(head) = &first {
                assert!(
                    head.starts_with("HTTP/1.1 100 "),
                    "fast={fast} {t:?}: {head:?}"
                );
            }
            conn.send("abcdef").await;
            let resp = conn.read(false).await;
            assert_eq!(
                (resp.status, resp.text().as_str()),
                (200, "stored"),
                "fast={fast} {t:?}"
            );
            let seen = s.up.seen().pop().expect("the upstream saw the PUT");
            assert_eq!(seen.body, b"abcdef", "fast={fast} {t:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Upstream closes a kept connection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_after_each_response_does_not_fail_the_next_request() {
    for fast in ENGINES {
        // Every response says nothing about closing (HTTP/1.1 default keep-alive), then the
        // upstream closes the connection.
        let s = raw_stack(
            fast,
            RawUpstream::start(|i, _| Reply::ok(format!("n{i}").as_bytes()).then_close()).await,
        )
        .await;
        for t in BOTH {
            let mut conn = s.conn(t).await;
            for i in 0..5 {
                let resp = conn.roundtrip(get(&format!("/drop/{i}"))).await;
                assert_eq!(
                    resp.status,
                    200,
                    "fast={fast} {t:?} request {i}: {}",
                    resp.summary()
                );
            }
        }
        // Each request went out once, each on a fresh connection: the closed ones were never reused
        // (or a failed reuse was retried without the upstream seeing the request twice).
        assert_eq!(
            s.up.seen().len(),
            10,
            "fast={fast}: requests the upstream read"
        );
        assert_eq!(
            s.up.connections(),
            10,
            "fast={fast}: upstream connections accepted"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Hop-by-hop headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    for fast in ENGINES {
        let s = raw_stack(fast, RawUpstream::always(Reply::ok(b"ok")).await).await;
        for t in BOTH {
            let mut conn = s.conn(t).await;
            let resp = conn
                .roundtrip(format!(
                    "GET /hop HTTP/1.1\r\nHost: {ALICE}\r\nConnection: keep-alive, X-Foo\r\nX-Foo: bar\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Normal: 1\r\nX-Normal: 2\r\n\r\n"
                ))
                .await;
            assert_eq!(resp.status, 200, "fast={fast} {t:?}");
            let seen = s.up.seen().pop().expect("the upstream saw the request");
            let head = seen.head_text();
            assert_eq!(
                seen.request_line(),
                "GET /hop HTTP/1.1",
                "fast={fast} {t:?}"
            );
            let names: Vec<String> = seen
                .headers()
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase())
                .collect();
            // Exactly these, in this order: Host, the client's end-to-end headers, then the
            // router's (docs/http.md, "Fields sent to the workspace").
            let want = [
                "host",
                "x-normal",
                "x-normal",
                "x-forwarded-host",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-request-id",
            ];
            assert_eq!(names, want, "fast={fast} {t:?}: upstream head:\n{head}");
            assert_eq!(seen.header_all("x-normal"), ["1", "2"], "fast={fast} {t:?}");
            assert_eq!(
                seen.header("host").as_deref(),
                Some(ALICE),
                "fast={fast} {t:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connection_headers_do_not_break_the_client_connection() {
    for fast in ENGINES {
        let s = raw_stack(
            fast,
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
            assert_eq!(resp.body, b"ka", "fast={fast} {t:?}");
            // One Connection header, the router's own: keep-alive. (Main relays the upstream's
            // `Keep-Alive` and the `X-Bar` it nominated; see the report.)
            assert_connection(&resp, "keep-alive", fast, t);
            still_usable(
                &mut conn,
                &format!("fast={fast} {t:?}: after an upstream Keep-Alive header"),
            )
            .await;

            // The upstream closing its connection is not the client's business.
            let resp = conn.roundtrip(get("/close")).await;
            assert_eq!(resp.body, b"cl", "fast={fast} {t:?}");
            assert_connection(&resp, "keep-alive", fast, t);
            still_usable(
                &mut conn,
                &format!("fast={fast} {t:?}: after an upstream Connection: close"),
            )
            .await;
        }
        let seen = s.up.seen();
        for (i, r) in seen.iter().enumerate() {
            if r.target() == "/close" {
                let next = seen.get(i + 1).expect("a request after /close");
                assert_ne!(
                    next.conn, r.conn,
                    "fast={fast}: the request after the upstream's close went on the closed connection"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Connection: close and HTTP/1.0

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_close_and_http10_close_after_the_response() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        for t in BOTH {
            let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
            let resp = conn
                .roundtrip(format!(
                    "GET /bye HTTP/1.1\r\nHost: {ALICE}\r\nConnection: close\r\n\r\n"
                ))
                .await;
            assert_eq!(echo_path(&resp), "/bye", "fast={fast} {t:?}");
            assert_connection(&resp, "close", fast, t);
            assert_eq!(
                conn.end(RAW_BOUND).await,
                End::Eof,
                "fast={fast} {t:?}: closed after Connection: close"
            );

            // HTTP/1.0 without keep-alive: answered as HTTP/1.1 with a length, then closed.
            let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
            let resp = conn
                .roundtrip(format!("GET /ten HTTP/1.0\r\nHost: {ALICE}\r\n\r\n"))
                .await;
            assert_eq!(echo_path(&resp), "/ten", "fast={fast} {t:?}");
            assert_eq!(resp.status_line, "HTTP/1.1 200 OK", "fast={fast} {t:?}");
            assert!(
                matches!(resp.framing, Framing::ContentLength(_)),
                "fast={fast} {t:?}: {}",
                resp.head_text()
            );
            assert_connection(&resp, "close", fast, t);
            assert_eq!(
                conn.end(RAW_BOUND).await,
                End::Eof,
                "fast={fast} {t:?}: HTTP/1.0 closed"
            );

            // HTTP/1.0 with Connection: keep-alive: kept.
            let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
            for path in ["/ten-ka/1", "/ten-ka/2"] {
                let resp = conn
                    .roundtrip(format!(
                        "GET {path} HTTP/1.0\r\nHost: {ALICE}\r\nConnection: keep-alive\r\n\r\n"
                    ))
                    .await;
                assert_eq!(echo_path(&resp), path, "fast={fast} {t:?}");
                assert!(
                    matches!(resp.framing, Framing::ContentLength(_)),
                    "fast={fast} {t:?}"
                );
                assert_connection(&resp, "keep-alive", fast, t);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Malformed requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_a_close() {
    for fast in ENGINES {
        let s = raw_stack(fast, RawUpstream::always(Reply::ok(b"upstream")).await).await;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("no colon", b"GET / HTTP/1.1\r\nHost alice.hubify.test\r\n\r\n".to_vec()),
            ("NUL in value", format!("GET / HTTP/1.1\r\nHost: {ALICE}\r\nX-A: a\0b\r\n\r\n").into_bytes()),
            ("space before colon", format!("GET / HTTP/1.1\r\nHost : {ALICE}\r\n\r\n").into_bytes()),
            ("obs-fold", format!("GET / HTTP/1.1\r\nHost: {ALICE}\r\nX-A: a\r\n b\r\n\r\n").into_bytes()),
            ("bad version", format!("GET / HTTP/9.9\r\nHost: {ALICE}\r\n\r\n").into_bytes()),
            ("TLS on the plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec()),
            ("two Content-Lengths", format!("POST / HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!").into_bytes()),
        ];
        // Heads too large for the router: 431, the router's page, a close (docs/http.md).
        let too_large: Vec<(&str, Vec<u8>)> = vec![
            (
                "header block over 1 MiB",
                format!(
                    "GET / HTTP/1.1\r\nHost: {ALICE}\r\nX-Big: {}\r\n\r\n",
                    "b".repeat(1100 * 1024)
                )
                .into_bytes(),
            ),
            (
                "70 KiB header field",
                format!(
                    "GET /big HTTP/1.1\r\nHost: {ALICE}\r\nX-Big: {}\r\n\r\n",
                    "a".repeat(70 * 1024)
                )
                .into_bytes(),
            ),
            (
                "300 header fields",
                format!(
                    "GET / HTTP/1.1\r\nHost: {ALICE}\r\n{}\r\n",
                    (0..300)
                        .map(|i| format!("X-H{i}: v\r\n"))
                        .collect::<String>()
                )
                .into_bytes(),
            ),
        ];
        let cases: Vec<(&str, Vec<u8>, &str)> = cases
            .into_iter()
            .map(|(n, b)| (n, b, "HTTP/1.1 400 Bad Request"))
            .chain(
                too_large
                    .into_iter()
                    .map(|(n, b)| (n, b, "HTTP/1.1 431 Request Header Fields Too Large")),
            )
            .collect();
        for t in BOTH {
            for (name, bytes, want) in &cases {
                let before = s.up.seen().len();
                let mut conn = s.conn(t).await;
                // The router may close while a large request is still being written.
                let _ = conn.try_send(bytes).await;
                let (got, end) = conn.drain(RAW_BOUND).await;
                let text = String::from_utf8_lossy(&got);
                let first = text.split("\r\n").next().unwrap_or_default();
                assert_eq!(
                    first,
                    *want,
                    "fast={fast} {t:?} {name}: got {:?}",
                    text.chars().take(300).collect::<String>()
                );
                // Main's 400 here is Pingora's own (`Server: Pingora`, empty body, no request id).
                assert!(
                    text.to_ascii_lowercase()
                        .contains("\r\nconnection: close\r\n"),
                    "fast={fast} {t:?} {name}: {text:?}"
                );
                assert!(
                    matches!(end, End::Eof | End::Error(_)),
                    "fast={fast} {t:?} {name}: not closed after the 400: {end:?}"
                );
                assert_eq!(
                    s.up.seen().len(),
                    before,
                    "fast={fast} {t:?} {name}: reached the upstream"
                );
            }
        }
        // Other connections are still served.
        for t in BOTH {
            let mut conn = s.conn(t).await;
            let resp = conn.roundtrip(get("/fine")).await;
            assert_eq!(resp.body, b"upstream", "fast={fast} {t:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_size_in_a_request_body() {
    for fast in ENGINES {
        let s = raw_stack(fast, RawUpstream::always(Reply::ok(b"upstream")).await).await;
        for t in BOTH {
            let before = s.up.seen().len();
            let mut conn = s.conn(t).await;
            conn.send(format!("POST /bad-chunk HTTP/1.1\r\nHost: {ALICE}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")).await;
            let (got, end) = conn.drain(RAW_BOUND).await;
            let text = String::from_utf8_lossy(&got);
            // The router's own 400 page, then a close. (Main's head says `Connection: keep-alive`
            // and the page title names the Host; see the report. Neither is asserted.)
            assert!(
                text.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "fast={fast} {t:?}: {:?}",
                text.chars().take(300).collect::<String>()
            );
            assert!(
                text.to_ascii_lowercase().contains("\r\nx-request-id: "),
                "fast={fast} {t:?}: {text:?}"
            );
            assert!(
                matches!(end, End::Eof | End::Error(_)),
                "fast={fast} {t:?}: not closed after a broken request body: {end:?}"
            );
            assert_eq!(
                s.up.seen().len(),
                before,
                "fast={fast} {t:?}: the upstream got a complete request"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lenient_parsing_cases_answer_rather_than_hang() {
    for fast in ENGINES {
        // What main accepts although a stricter parser could refuse it. Asserted precisely where the
        // behaviour is right (RFC 9112 allows a bare LF as a line terminator); only "answers, never
        // hangs, and the router keeps serving" where main is questionable (see the report).
        let s = raw_stack(fast, RawUpstream::always(Reply::ok(b"upstream")).await).await;

        // Bare LF line endings: accepted, forwarded with CRLF, connection kept.
        for (name, req, want) in [
            (
                "bare LF",
                format!("GET /lf HTTP/1.1\nHost: {ALICE}\n\n"),
                "GET /lf HTTP/1.1\r\nhost: alice.hubify.test\r\nx-forwarded-host",
            ),
            (
                "mixed LF",
                format!("GET /lf2 HTTP/1.1\r\nHost: {ALICE}\nX-A: b\r\n\r\n"),
                "GET /lf2 HTTP/1.1\r\nhost: alice.hubify.test\r\nX-A: b\r\nx-forwarded-host",
            ),
        ] {
            let mut conn = RawConn::plain(s.cfg.http_port()).await;
            let resp = conn.roundtrip(req).await;
            assert_eq!(resp.body, b"upstream", "fast={fast} {name}");
            let seen = s.up.seen().pop().expect("forwarded");
            assert!(
                seen.head_text().starts_with(want),
                "fast={fast} {name}: {:?}",
                seen.head_text()
            );
            still_usable(&mut conn, &format!("fast={fast} {name}")).await;
        }

        // Both Content-Length and Transfer-Encoding, or a double space in the request line: refused
        // with 400 and a close, as nginx and HAProxy do (docs/http.md), never forwarded.
        for (name, bytes) in [
            (
                "Content-Length and Transfer-Encoding",
                format!("POST /smuggle HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            ),
            (
                "double space in the request line",
                format!("GET  /x HTTP/1.1\r\nHost: {ALICE}\r\n\r\n"),
            ),
        ] {
            let before = s.up.seen().len();
            let mut conn = RawConn::plain(s.cfg.http_port()).await;
            let resp = conn.roundtrip(bytes).await;
            assert_eq!(resp.status, 400, "fast={fast}: {name}");
            assert!(
                matches!(conn.end(RAW_BOUND).await, End::Eof | End::Error(_)),
                "fast={fast}: {name}: closed after the 400"
            );
            assert_eq!(s.up.seen().len(), before, "fast={fast}: {name}: reached the upstream");
        }
        let mut conn = RawConn::plain(s.cfg.http_port()).await;
        let resp = conn.roundtrip(get("/fine")).await;
        assert_eq!(resp.body, b"upstream", "fast={fast}");
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Duplicate response headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_response_headers_reach_the_client_in_order() {
    for fast in ENGINES {
        let s = raw_stack(
            fast,
            RawUpstream::always(Reply::bytes(
                "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nX-Multi: one\r\nset-cookie: b=2; HttpOnly\r\nX-Multi: two\r\nSET-COOKIE: c=3\r\nContent-Length: 0\r\n\r\n",
            ))
            .await,
        )
        .await;
        for t in BOTH {
            let mut conn = s.conn(t).await;
            let resp = conn.roundtrip(get("/cookies")).await;
            assert_eq!(resp.status, 200, "fast={fast} {t:?}");
            assert_eq!(
                resp.header_all("set-cookie"),
                vec!["a=1; Path=/", "b=2; HttpOnly", "c=3"],
                "fast={fast} {t:?}: {}",
                resp.head_text()
            );
            assert_eq!(
                resp.header_all("x-multi"),
                vec!["one", "two"],
                "fast={fast} {t:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 11. Request targets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_reach_the_upstream_byte_exact() {
    for fast in ENGINES {
        let s = raw_stack(fast, RawUpstream::always(Reply::ok(b"ok")).await).await;
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
                assert_eq!(
                    resp.status,
                    200,
                    "fast={fast} {t:?} {sent}: {}",
                    resp.summary()
                );
                let seen = s.up.seen().pop().expect("a request upstream");
                assert_eq!(target(&seen), *want, "fast={fast} {t:?}: target {sent:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Per-request forwarded headers on a kept connection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_request_on_a_connection_gets_its_own_forwarded_headers() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        for t in BOTH {
            let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
            let r1 = conn
                .roundtrip(format!(
                    "GET /one HTTP/1.1\r\nHost: {ALICE}\r\nX-Request-Id: first-id\r\nX-Forwarded-For: 198.51.100.1\r\nX-Custom: only-first\r\n\r\n"
                ))
                .await;
            assert_eq!(
                echo_header(&r1, "x-request-id").as_deref(),
                Some("first-id"),
                "fast={fast} {t:?}"
            );
            assert_eq!(
                r1.header("x-request-id").as_deref(),
                Some("first-id"),
                "fast={fast} {t:?}"
            );
            assert_eq!(
                echo_header(&r1, "x-forwarded-for").as_deref(),
                Some("198.51.100.1, 127.0.0.1"),
                "fast={fast} {t:?}"
            );
            let r2 = conn.roundtrip(get("/two")).await;
            let id2 = echo_header(&r2, "x-request-id").unwrap_or_default();
            assert!(
                is_generated_request_id(&id2),
                "fast={fast} {t:?}: second id {id2:?}"
            );
            assert_eq!(
                r2.header("x-request-id"),
                Some(id2.clone()),
                "fast={fast} {t:?}"
            );
            assert_eq!(
                echo_header(&r2, "x-forwarded-for").as_deref(),
                Some("127.0.0.1"),
                "fast={fast} {t:?}"
            );
            assert_eq!(
                echo_header(&r2, "x-custom"),
                None,
                "fast={fast} {t:?}: header leaked"
            );
            let r3 = conn
                .roundtrip(format!(
                    "GET /three HTTP/1.1\r\nHost: {ALICE}\r\nX-Request-Id: third-id\r\n\r\n"
                ))
                .await;
            assert_eq!(
                echo_header(&r3, "x-request-id").as_deref(),
                Some("third-id"),
                "fast={fast} {t:?}"
            );
            let r4 = conn.roundtrip(get("/four")).await;
            let id4 = echo_header(&r4, "x-request-id").unwrap_or_default();
            assert!(
                is_generated_request_id(&id4) && id4 != id2,
                "fast={fast} {t:?}: fourth id {id4:?}"
            );
            let proto = match t {
                T::Plain => "http",
                T::Tls => "https",
            };
            assert_eq!(
                echo_header(&r4, "x-forwarded-proto").as_deref(),
                Some(proto),
                "fast={fast} {t:?}"
            );
            assert_eq!(
                echo_header(&r4, "x-forwarded-host").as_deref(),
                Some(ALICE),
                "fast={fast} {t:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 13. The router's own answers on a kept connection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_answers_keep_the_connection() {
    for fast in ENGINES {
        let stack = stack(fast).await;
        let nobody = host("nobody");
        for t in BOTH {
            let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
            // Plain: an unknown label is 404. TLS (SNI alice): Host bob is 421.
            let req = if matches!(t, T::Tls) {
                format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", host("bob"))
            } else {
                format!("GET / HTTP/1.1\r\nHost: {nobody}\r\n\r\n")
            };
            let resp = conn.roundtrip(req).await;
            let want = if matches!(t, T::Tls) { 421 } else { 404 };
            assert_eq!(resp.status, want, "fast={fast} {t:?}: {}", resp.summary());
            assert!(
                matches!(resp.framing, Framing::ContentLength(_)),
                "fast={fast} {t:?}"
            );
            assert_connection(&resp, "keep-alive", fast, t);
            let next = conn.roundtrip(get("/after-router-answer")).await;
            assert_eq!(
                echo_path(&next),
                "/after-router-answer",
                "fast={fast} {t:?}"
            );

            // No Host: 400, and a 400 page closes the connection on both engines (docs/http.md,
            // "missing, repeated or non-text Host | 400, close"); the next connection is served.
            let resp = conn.roundtrip("GET / HTTP/1.1\r\n\r\n").await;
            assert_eq!(resp.status, 400, "fast={fast} {t:?}: {}", resp.summary());
            assert!(
                resp.header("x-request-id").is_some(),
                "fast={fast} {t:?}: not the router's page: {}",
                resp.summary()
            );
            assert_connection(&resp, "close", fast, t);
            let end = conn.end(RAW_BOUND).await;
            assert!(
                matches!(end, End::Eof | End::Error(_)),
                "fast={fast} {t:?}: said close after the 400, then {end:?}"
            );
            let mut conn = connect(t, stack.http_port(), stack.https_port()).await;
            let next = conn.roundtrip(get("/after-400")).await;
            assert_eq!(echo_path(&next), "/after-400", "fast={fast} {t:?}");
        }
        let paths: Vec<String> = stack
            .gateway
            .requests()
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(
            paths,
            [
                "/after-router-answer",
                "/after-400",
                "/after-router-answer",
                "/after-400"
            ],
            "fast={fast}: only the forwarded requests reach the upstream"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The fast path and its hand-over to Pingora.

/// An upstream that answers with the target and the request body.
async fn target_echo() -> RawUpstream {
    RawUpstream::start(|_, seen| {
        let mut body = seen.target().into_bytes();
        body.extend_from_slice(b" ");
        body.extend_from_slice(&seen.body);
        Reply::ok(&body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_simple_requests_are_all_answered_in_order() {
    for fast in ENGINES {
        let s = raw_stack(fast, target_echo().await).await;
        for t in BOTH {
            let mut conn = s.conn(t).await;
            let batch = format!("{}{}{}", get("/p/1"), get("/p/2?q"), get("/p/3"));
            conn.send(batch.as_bytes()).await;
            for want in ["/p/1 ", "/p/2?q ", "/p/3 "] {
                let r = conn.read(false).await;
                assert_eq!(r.status, 200, "fast={fast} {t:?}: {}", r.summary());
                assert_eq!(r.text(), want, "fast={fast} {t:?}: out of order");
            }
            still_usable(
                &mut conn,
                &format!("fast={fast} {t:?}: after three pipelined requests"),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_and_handed_over_requests_share_a_connection() {
    for fast in ENGINES {
        // GET (fast path), POST with a body (handed to Pingora with the bytes already read), GET
        // (Pingora keeps the connection): one connection, three answers, bodies intact.
        let s = raw_stack(fast, target_echo().await).await;
        for t in BOTH {
            let mut conn = s.conn(t).await;
            let r = conn.roundtrip(get("/one")).await;
            assert_eq!(
                (r.status, r.text()),
                (200, "/one ".to_string()),
                "fast={fast} {t:?}"
            );
            let post =
                format!("POST /two HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 5\r\n\r\nhello");
            let r = conn.roundtrip(post).await;
            assert_eq!(
                (r.status, r.text()),
                (200, "/two hello".to_string()),
                "fast={fast} {t:?}"
            );
            let r = conn.roundtrip(get("/three")).await;
            assert_eq!(
                (r.status, r.text()),
                (200, "/three ".to_string()),
                "fast={fast} {t:?}"
            );
            let chunked = format!(
                "PUT /four HTTP/1.1\r\nHost: {ALICE}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            );
            let r = conn.roundtrip(chunked).await;
            assert_eq!(
                (r.status, r.text()),
                (200, "/four abc".to_string()),
                "fast={fast} {t:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_serves_after_a_pause() {
    for fast in ENGINES {
        // The fast path gives an idle connection's read buffer back after 1 s and waits with a
        // 1-byte peek (plain) or a fresh buffer (TLS): the next request must read whole.
        let s = raw_stack(fast, target_echo().await).await;
        for t in BOTH {
            let mut conn = s.conn(t).await;
            let r = conn.roundtrip(get("/before")).await;
            assert_eq!(r.text(), "/before ", "fast={fast} {t:?}");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            // The head arrives in two writes around the pause's end: the peeked byte is kept.
            let req = get("/after?x=1");
            conn.send(&req.as_bytes()[..1]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            conn.send(&req.as_bytes()[1..]).await;
            let r = conn.read(false).await;
            assert_eq!(
                (r.status, r.text()),
                (200, "/after?x=1 ".to_string()),
                "fast={fast} {t:?}"
            );
            let r = conn.roundtrip(get("/again")).await;
            assert_eq!(r.text(), "/again ", "fast={fast} {t:?}");
        }
    }
}

// Fast path off only: the subject is the switch itself (every other test here runs both engines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingora_engine_serves_everything_when_the_fast_path_is_off() {
    let s = RawStack::start_with(target_echo().await, |c| c.fast_path(false)).await;
    for t in BOTH {
        let mut conn = s.conn(t).await;
        let r = conn.roundtrip(get("/a?b")).await;
        assert_eq!((r.status, r.text()), (200, "/a?b ".to_string()), "{t:?}");
        assert!(r.connection_has("keep-alive"), "{t:?}: {}", r.head_text());
        let post = format!("POST /p HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 2\r\n\r\nhi");
        let r = conn.roundtrip(post).await;
        assert_eq!((r.status, r.text()), (200, "/p hi".to_string()), "{t:?}");
        let r = conn
            .roundtrip(format!(
                "GET / HTTP/1.1\r\nHost: {}\r\n\r\n",
                host("nobody")
            ))
            .await;
        // Plain: unknown workspace; TLS (SNI alice): another host on this connection.
        let want = if matches!(t, T::Tls) { 421 } else { 404 };
        assert_eq!(r.status, want, "{t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_body_cut_short_closes_the_client_connection() {
    for fast in ENGINES {
        // A body cut short after the head went out (Content-Length 100, 10 bytes, close): the client
        // sees the connection end rather than waiting. A chunked body broken before anything was
        // sent: a 502 page. The router keeps serving either way.
        let s = raw_stack(
            fast,
            RawUpstream::start(|_, seen| match seen.target().as_str() {
                "/short" => {
                    Reply::bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-ten!!")
                        .then_close()
                }
                "/badchunk" => Reply::bytes(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
                ),
                _ => Reply::ok(b"fine"),
            })
            .await,
        )
        .await;
        for t in BOTH {
            let mut conn = s.conn(t).await;
            conn.send(get("/short").as_bytes()).await;
            let (got, end) = conn.drain(Duration::from_secs(10)).await;
            let text = String::from_utf8_lossy(&got).into_owned();
            assert!(
                text.starts_with("HTTP/1.1 200"),
                "fast={fast} {t:?}: {text}"
            );
            assert_ne!(
                end,
                End::Open,
                "fast={fast} {t:?}: the client connection stayed open: {text}"
            );

            let mut conn = s.conn(t).await;
            if fast {
                let r = conn.roundtrip(get("/badchunk")).await;
                assert_eq!(r.status, 502, "fast={fast} {t:?}: {}", r.summary());
                assert_eq!(
                    r.head_text().lines().next(),
                    Some("HTTP/1.1 502 Bad Gateway"),
                    "fast={fast} {t:?}"
                );
                still_usable(&mut conn, &format!("fast={fast} {t:?}: after a 502")).await;
            } else {
                // ENGINE DIFFERENCE: the upstream's one write `200, chunked, 3\r\nabc\r\nzz\r\n`
                // gets the 502 page (connection kept) on the fast path; fast_path = false relays
                // `HTTP/1.1 200 OK`, chunked, `3\r\nabc\r\n` and closes the connection (no
                // last chunk). The 502 is asserted on the fast path only until fixed; here, at
                // least, the broken body never arrives as complete and the connection ends.
                conn.send(get("/badchunk").as_bytes()).await;
                let (got, end) = conn.drain(Duration::from_secs(10)).await;
                let text = String::from_utf8_lossy(&got).into_owned();
                assert!(
                    !text.ends_with("0\r\n\r\n"),
                    "fast={fast} {t:?}: a broken chunked body arrived complete: {text:?}"
                );
                assert_ne!(
                    end,
                    End::Open,
                    "fast={fast} {t:?}: the client connection stayed open: {text:?}"
                );
            }
            let mut conn = s.conn(t).await;
            let r = conn.roundtrip(get("/ok")).await;
            assert_eq!(r.text(), "fine", "fast={fast} {t:?}");
        }
    }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced_without_an_error() {
    for fast in ENGINES {
        // Every reply ends with the upstream closing the connection without saying so: the router
        // pools a connection that is already closed, and the next request goes out again on a new
        // one (fast-path requests have no body, so that is safe).
        let s = raw_stack(
            fast,
            RawUpstream::start(|_, seen| Reply::ok(seen.target().as_bytes()).then_close()).await,
        )
        .await;
        for t in BOTH {
            let before = (s.up.seen().len(), s.up.connections());
            let mut conn = s.conn(t).await;
            for i in 0..3 {
                let path = format!("/again/{i}");
                let resp = conn.roundtrip(get(&path)).await;
                assert_eq!(resp.status, 200, "fast={fast} {t:?}: {}", resp.summary());
                assert_eq!(resp.text(), path, "fast={fast} {t:?}");
            }
            assert_eq!(
                s.up.seen().len() - before.0,
                3,
                "fast={fast} {t:?}: each request reached the upstream once"
            );
            assert_eq!(
                s.up.connections() - before.1,
                3,
                "fast={fast} {t:?}: one new connection per request"
            );
        }
    }
}
