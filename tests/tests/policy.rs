//! The one request policy (docs/http.md), asserted on both engines — `server.fast_path = true`
//! (the router's own HTTP/1.1 and HTTP/2 code) and `false` (Pingora's proxy) — and over
//! HTTP/1.1 and HTTP/2 where the rule concerns both. Each test here failed before the policy
//! was one: the hostile-input findings of the issue "One request policy for every HTTP engine".

use std::time::Duration;

use hubify_edge_tests::client::{H2Conn, Req};
use hubify_edge_tests::raw::{End, Head, RawConn, RawStack, RawUpstream, Reply};
use hubify_edge_tests::{host, EdgeConfig};

const ALICE: &str = "alice.hubify.test";
const ENGINES: [bool; 2] = [true, false];
const BOUND: Duration = Duration::from_secs(10);

async fn stack(fast: bool, up: RawUpstream) -> RawStack {
    RawStack::start_with(up, |c: EdgeConfig| c.fast_path(fast)).await
}

async fn stack_with(
    fast: bool,
    up: RawUpstream,
    adjust: impl FnOnce(EdgeConfig) -> EdgeConfig,
) -> RawStack {
    RawStack::start_with(up, |c: EdgeConfig| adjust(c.fast_path(fast))).await
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {ALICE}\r\n\r\n")
}

/// An upstream that echoes the target; its first reply is followed, `late` after, by a second
/// unsolicited response on the same connection.
async fn late_bytes_upstream(late: &'static [u8]) -> RawUpstream {
    RawUpstream::start(move |i, seen| {
        let body = seen.target();
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if i == 0 {
            Reply::pieces([ok.as_bytes(), late]).with_pause(Duration::from_millis(150))
        } else {
            Reply::ok(body.as_bytes())
        }
    })
    .await
}

const INJECTED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nINJECTED\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_response_never_reach_another_request_http1() {
    for fast in ENGINES {
        let s = stack(fast, late_bytes_upstream(INJECTED).await).await;
        let mut first = RawConn::plain(s.cfg.http_port()).await;
        let r = first.roundtrip(get("/x")).await;
        assert_eq!(r.text(), "/x", "fast={fast}");
        // The late response arrives while the upstream connection sits in the pool.
        tokio::time::sleep(Duration::from_millis(400)).await;
        for i in 0..3 {
            let mut other = RawConn::plain(s.cfg.http_port()).await;
            let path = format!("/next/{i}");
            let r = other.roundtrip(get(&path)).await;
            assert_eq!(r.text(), path, "fast={fast}: {}", r.summary());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_head_response_never_reach_another_request_http2() {
    for fast in ENGINES {
        // A HEAD answered with a body: the body bytes are not part of the response.
        let up = RawUpstream::start(|_, seen| {
            let body = seen.target();
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if seen.request_line().starts_with("HEAD") {
                Reply::pieces([head.as_bytes(), INJECTED]).with_pause(Duration::from_millis(150))
            } else {
                Reply::bytes(format!("{head}{body}"))
            }
        })
        .await;
        let s = stack(fast, up).await;
        let h2 = H2Conn::open(s.cfg.https_port(), ALICE)
            .await
            .expect("h2 connection");
        let head = Req::get(ALICE, "/head").method(http::Method::HEAD);
        let r = h2.request(&head).await.expect("HEAD answered");
        assert_eq!(r.status, 200, "fast={fast}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        for i in 0..3 {
            let path = format!("/after/{i}");
            let r = h2.request(&Req::get(ALICE, &path)).await.expect("answered");
            assert_eq!(r.text(), path, "fast={fast}: {}", r.summary());
        }
    }
}

/// Header names a client sends that a workspace must never see (docs/http.md).
const FORGED: &[(&str, &str)] = &[
    ("Fly-Client-IP", "6.6.6.6"),
    ("Fly-Force-Instance", "x"),
    ("Fly-Force-Instance-Id", "x"),
    ("Fly-Region", "evil"),
    ("Fly_Replay_Src", "instance=evil"),
    ("X_Forwarded_For", "6.6.6.6"),
    ("Proxy-Authorization", "Basic c2VjcmV0"),
    ("X-Secret", "nominated"),
];

fn assert_clean(head: &str, what: &str) {
    for line in head.split("\r\n").skip(1) {
        let Some((name, _)) = line.split_once(':') else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        assert!(!lower.contains('_'), "{what}: forwarded {line:?}\n{head}");
        assert!(
            !lower.starts_with("fly-"),
            "{what}: forwarded {line:?}\n{head}"
        );
        assert!(
            lower != "proxy-authorization" && lower != "x-secret" && lower != "http2-settings",
            "{what}: forwarded {line:?}\n{head}"
        );
    }
    assert!(!head.contains("6.6.6.6"), "{what}: {head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_hop_by_hop_fields_never_reach_the_workspace() {
    for fast in ENGINES {
        let s = stack(fast, RawUpstream::always(Reply::ok(b"ok")).await).await;
        // HTTP/1.1, with the nominated field and HTTP2-Settings.
        let mut h1 = String::from("GET /forged HTTP/1.1\r\nHost: alice.hubify.test\r\n");
        h1.push_str("Connection: keep-alive, X-Secret\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n");
        for (n, v) in FORGED {
            h1.push_str(&format!("{n}: {v}\r\n"));
        }
        h1.push_str("X-Kept: yes\r\n\r\n");
        let mut conn = RawConn::plain(s.cfg.http_port()).await;
        let r = conn.roundtrip(&h1).await;
        assert_eq!(r.status, 200, "fast={fast}: {}", r.summary());
        let seen = s.up.seen().pop().expect("forwarded");
        assert_clean(&seen.head_text(), &format!("h1 fast={fast}"));
        assert_eq!(seen.header("x-kept").as_deref(), Some("yes"));
        assert_eq!(seen.header("host").as_deref(), Some(ALICE));
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));

        // HTTP/2 (no Connection-specific fields exist there).
        let h2 = H2Conn::open(s.cfg.https_port(), ALICE)
            .await
            .expect("h2 connection");
        let mut req = Req::get(ALICE, "/forged2").header("x-kept", "yes");
        for (n, v) in FORGED {
            if *n != "X-Secret" {
                req = req.header(&n.to_ascii_lowercase(), v);
            }
        }
        let r = h2.request(&req).await.expect("answered");
        assert_eq!(r.status, 200, "fast={fast}");
        let seen = s.up.seen().pop().expect("forwarded");
        assert_clean(&seen.head_text(), &format!("h2 fast={fast}"));
        assert_eq!(seen.header("x-kept").as_deref(), Some("yes"));
        assert_eq!(seen.header("host").as_deref(), Some(ALICE));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_fly_the_router_writes_fly_client_ip_itself() {
    for fast in ENGINES {
        let up = RawUpstream::always(Reply::ok(b"ok")).await;
        let s = stack_with(fast, up, |c| c.behind_fly()).await;
        let mut conn = RawConn::plain(s.cfg.http_port()).await;
        let r = conn
            .roundtrip(format!(
                "GET / HTTP/1.1\r\nHost: {ALICE}\r\nFly-Client-IP: 203.0.113.9\r\nFly-Force-Instance-Id: x\r\nFly-Client-IP: 6.6.6.6\r\n\r\n"
            ))
            .await;
        assert_eq!(r.status, 200, "fast={fast}: {}", r.summary());
        let seen = s.up.seen().pop().expect("forwarded");
        assert_eq!(
            seen.header_all("fly-client-ip"),
            ["203.0.113.9"],
            "fast={fast}: {}",
            seen.head_text()
        );
        assert_eq!(seen.header("fly-force-instance-id"), None);
        assert_eq!(
            seen.header("x-forwarded-for").as_deref(),
            Some("203.0.113.9")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_heads_get_the_routers_page_on_both_engines() {
    for fast in ENGINES {
        let s = stack(fast, RawUpstream::always(Reply::ok(b"upstream")).await).await;
        for (raw, status) in [
            ("GARBAGE\r\n\r\n".to_string(), 400),
            (format!("GET / HTTP/1.1\r\nHost: {ALICE}\r\nConnection: Host\r\n\r\n"), 400),
            (format!("GET / HTTP/1.1\r\nHost: {ALICE}\r\nConnection: close, \"x\"\r\n\r\n"), 400),
            (format!("GET /a b HTTP/1.1\r\nHost: {ALICE}\r\n\r\n"), 400),
            (format!("GET x HTTP/1.1\r\nHost: {ALICE}\r\n\r\n"), 400),
            (format!("GET {ALICE}:80 HTTP/1.1\r\nHost: {ALICE}\r\n\r\n"), 400),
            (format!("POST / HTTP/1.1\r\nHost: {ALICE}\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n"), 400),
            (format!("POST / HTTP/1.1\r\nHost: {ALICE}\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n"), 400),
            (format!("CONNECT {ALICE}:443 HTTP/1.1\r\nHost: {ALICE}\r\n\r\n"), 405),
            (format!("GET /{} HTTP/1.1\r\nHost: {ALICE}\r\n\r\n", "a".repeat(9000)), 414),
            (format!("GET / HTTP/1.1\r\nHost: {ALICE}\r\nX-Big: {}\r\n\r\n", "b".repeat(64 * 1024)), 431),
        ] {
            let before = s.up.seen().len();
            let mut conn = RawConn::plain(s.cfg.http_port()).await;
            let _ = conn.try_send(raw.as_bytes()).await;
            let r = conn.read(false).await;
            let what = format!("fast={fast} {:?}", &raw[..raw.len().min(60)]);
            assert_eq!(r.status, status, "{what}: {}", r.summary());
            assert!(r.header("x-request-id").is_some(), "{what}: {}", r.summary());
            assert_eq!(r.header("server"), None, "{what}: {}", r.summary());
            assert!(r.text().contains(&status.to_string()), "{what}: not the router's page");
            assert!(
                matches!(conn.end(BOUND).await, End::Eof | End::Error(_)),
                "{what}: not closed"
            );
            assert_eq!(s.up.seen().len(), before, "{what}: reached the upstream");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_routes_by_its_authority() {
    for fast in ENGINES {
        let s = stack(fast, RawUpstream::always(Reply::ok(b"ok")).await).await;
        let mut conn = RawConn::plain(s.cfg.http_port()).await;
        let r = conn
            .roundtrip(format!(
                "GET http://{ALICE}/abs?q=1 HTTP/1.1\r\nHost: {}\r\n\r\n",
                host("bob")
            ))
            .await;
        assert_eq!(r.status, 200, "fast={fast}: {}", r.summary());
        let seen = s.up.seen().pop().expect("forwarded");
        assert_eq!(seen.request_line(), "GET /abs?q=1 HTTP/1.1", "fast={fast}");
        assert_eq!(
            seen.header_all("host"),
            [ALICE],
            "fast={fast}: {}",
            seen.head_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_gets_408_on_both_engines() {
    for fast in ENGINES {
        let up = RawUpstream::always(Reply::ok(b"ok")).await;
        let s = stack_with(fast, up, |c| c.header_timeout("1s")).await;
        // A small head trickled, and one over 16 KiB (which the fast path does not serve).
        let small = get("/slow").into_bytes();
        let large = format!(
            "GET /slow HTTP/1.1\r\nHost: {ALICE}\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(20 * 1024)
        )
        .into_bytes();
        for head in [small, large] {
            let mut conn = RawConn::plain(s.cfg.http_port()).await;
            // All but the last 10 bytes now, then one byte every 300 ms for 1.5 s: past the
            // 1 s header timeout, never the whole head.
            let (now, rest) = head.split_at(head.len() - 10);
            conn.send(now).await;
            for b in &rest[..5] {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = conn.try_send([*b]).await;
            }
            let r = conn.read(false).await;
            assert_eq!(r.status, 408, "fast={fast}: {}", r.summary());
            assert!(r.header("x-request-id").is_some(), "fast={fast}");
            assert!(matches!(conn.end(BOUND).await, End::Eof | End::Error(_)));
        }
        assert!(
            s.up.seen().is_empty(),
            "fast={fast}: a slow head reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_both_engines() {
    for fast in ENGINES {
        let up = RawUpstream::start(|_, seen| {
            let mut body = seen.target().into_bytes();
            body.extend_from_slice(&seen.body);
            Reply::ok(&body)
        })
        .await;
        let s = stack(fast, up).await;
        let mut conn = RawConn::plain(s.cfg.http_port()).await;
        let mut all = String::new();
        for i in 0..10 {
            all.push_str(&get(&format!("/p/{i}")));
        }
        conn.send(all).await;
        for i in 0..10 {
            let r = conn.read(false).await;
            assert_eq!(r.text(), format!("/p/{i}"), "fast={fast}");
        }
        // Across a request the fast path hands over (a body).
        conn.send(format!(
            "{}POST /p/post HTTP/1.1\r\nHost: {ALICE}\r\nContent-Length: 4\r\n\r\nBODY{}",
            get("/p/a"),
            get("/p/b")
        ))
        .await;
        for want in ["/p/a", "/p/postBODY", "/p/b"] {
            let r = conn.read(false).await;
            assert_eq!(r.text(), want, "fast={fast}");
        }
        // Still usable.
        let r = conn.roundtrip(get("/p/last")).await;
        assert_eq!(r.text(), "/p/last", "fast={fast}");
    }
}

/// Logs never carry a query (it may hold a token), a cookie or a credential, on any engine and in
/// any line (Pingora's included). The access line names the path and host (docs/http.md#logs);
/// `[log] paths = false` keeps paths out of every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_carries_a_query_or_a_cookie_and_paths_only_when_allowed() {
    use hubify_edge_tests::{free_port, PathRule, Router};
    for (fast, paths) in [(true, true), (false, true), (true, false), (false, false)] {
        // Nothing listens on the upstream port: every engine fails and logs the failure.
        let cfg = EdgeConfig::new()
            .path(PathRule::new("/", free_port()))
            .fast_path(fast)
            .log_paths(paths);
        let router = Router::start(&cfg).await;
        for (path, body) in [("/secret-path-a", ""), ("/secret-path-b", "body")] {
            let mut conn = RawConn::plain(cfg.http_port()).await;
            let r = conn
                .roundtrip(format!(
                    "POST {path}?q=secret-query HTTP/1.1\r\nHost: {ALICE}\r\nCookie: s=secret-cookie\r\nAuthorization: Bearer secret-token\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ))
                .await;
            assert_eq!(r.status, 502, "fast={fast}: {}", r.summary());
        }
        let mut conn = RawConn::plain(cfg.http_port()).await;
        let r = conn
            .roundtrip("GET /secret-path-c HTTP/1.1\r\nHost: other-host.example\r\n\r\n")
            .await;
        assert_eq!(r.status, 404, "fast={fast}");
        // The access lines are there (the test would pass on an empty log otherwise).
        router
            .wait_for_log("status=404", Duration::from_secs(5))
            .await;
        let logs = router.logs();
        assert!(
            logs.contains("status=502"),
            "fast={fast}: no access line:\n{logs}"
        );
        for secret in ["secret-query", "secret-cookie", "secret-token"] {
            assert!(
                !logs.contains(secret),
                "fast={fast}: {secret} logged:\n{logs}"
            );
        }
        let access = |needle: &str| {
            logs.lines()
                .filter(|l| l.contains(needle))
                .all(|l| l.contains(" access:") || l.contains("access: request"))
        };
        if paths {
            assert!(
                logs.contains("path=\"/secret-path-a\"") || logs.contains("path=/secret-path-a"),
                "fast={fast}: no path:\n{logs}"
            );
            assert!(
                logs.contains("other-host.example"),
                "fast={fast}: no host:\n{logs}"
            );
            // Only the access lines name them.
            assert!(
                access("secret-path"),
                "fast={fast}: a path outside the access line:\n{logs}"
            );
        } else {
            assert!(
                !logs.contains("secret-path"),
                "fast={fast}: a path logged with paths = false:\n{logs}"
            );
        }
    }
}

/// An HTTP/2 frame: 9-byte header and payload (RFC 9113 §4.1).
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A pair of frames of the rapid-reset attack (CVE-2023-44487), written by hand (a client
/// library would not send a stream it resets at once): HEADERS(END_STREAM) for `GET /` on
/// stream `2i+1`, then RST_STREAM(CANCEL).
fn rapid_reset_pair(i: u32) -> Vec<u8> {
    // HPACK: :method GET, :scheme https, :path / (static table), :authority literal.
    let mut block = vec![0x82, 0x87, 0x84, 0x01, ALICE.len() as u8];
    block.extend_from_slice(ALICE.as_bytes());
    let id = 2 * i + 1;
    let mut out = frame(0x1, 0x5, id, &block);
    out.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_streams_do_not_reach_the_upstream() {
    use hubify_edge_tests::client::{tls_connect, Trust, ALPN_H2};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for fast in ENGINES {
        let s = stack(fast, RawUpstream::always(Reply::ok(b"ok")).await).await;
        let mut tls = tls_connect(s.cfg.https_port(), ALICE, ALPN_H2, &Trust::any())
            .await
            .expect("TLS");
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend(frame(0x4, 0, 0, &[]));
        let _ = tls.write_all(&preface).await;
        // One pair per write, a moment apart: each stream is accepted before its reset is read.
        for i in 0..177 {
            if tls.write_all(&rapid_reset_pair(i)).await.is_err() || tls.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Read the server's frames until it closes: a GOAWAY must come.
        let mut got = Vec::new();
        let _ = tokio::time::timeout(BOUND, tls.read_to_end(&mut got)).await;
        let mut goaway = false;
        let mut at = 0;
        while at + 9 <= got.len() {
            let len = (usize::from(got[at]) << 16)
                | (usize::from(got[at + 1]) << 8)
                | usize::from(got[at + 2]);
            goaway |= got[at + 3] == 0x7;
            at += 9 + len;
        }
        assert!(goaway, "fast={fast}: no GOAWAY after 177 rapid resets");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reached = s.up.seen().len();
        assert!(
            reached <= 10,
            "fast={fast}: {reached} of 177 reset streams reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_upstream_heads_get_the_same_answer_on_both_engines() {
    for fast in ENGINES {
        let up = RawUpstream::start(|_, seen| match seen.target().as_str() {
            // A 101 to a request that asked for no upgrade: never a tunnel.
            "/switch" => Reply::bytes(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
            ),
            // A space before the colon: read as Content-Length.
            _ => Reply::bytes("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"),
        })
        .await;
        let s = stack(fast, up).await;
        let mut conn = RawConn::plain(s.cfg.http_port()).await;
        let r = conn.roundtrip(get("/switch")).await;
        assert_eq!(r.status, 502, "fast={fast}: {}", r.summary());
        assert!(r.header("x-request-id").is_some(), "fast={fast}");
        let mut conn = RawConn::plain(s.cfg.http_port()).await;
        let r = conn.roundtrip(get("/spaced")).await;
        assert_eq!(r.status, 200, "fast={fast}: {}", r.summary());
        assert_eq!(r.body, b"hello", "fast={fast}");
    }
}

/// Reads HTTP/2 frames until `bound`: (type, flags, stream) of each.
async fn read_frames(
    tls: &mut (impl tokio::io::AsyncRead + Unpin),
    bound: Duration,
) -> Vec<(u8, u8, u32)> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 16384];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = (usize::from(got[at]) << 16)
            | (usize::from(got[at + 1]) << 8)
            | usize::from(got[at + 2]);
        let stream =
            u32::from_be_bytes([got[at + 5], got[at + 6], got[at + 7], got[at + 8]]) & 0x7fff_ffff;
        frames.push((got[at + 3], got[at + 4], stream));
        at += 9 + len;
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_http2_field_resets_its_stream_only() {
    use hubify_edge_tests::client::{tls_connect, Trust, ALPN_H2};
    use tokio::io::AsyncWriteExt;
    for fast in ENGINES {
        let s = stack(fast, RawUpstream::always(Reply::ok(b"ok")).await).await;
        // Malformed in HTTP/2 (RFC 9113 §8.2): a connection-specific field, `te` other than
        // `trailers`. (An upper-case name or a CR in a value is a connection error in the h2
        // crate the HTTP/2 layer uses: GOAWAY; docs/http.md says so.)
        for (name, value) in [(&b"connection"[..], &b"close"[..]), (b"te", b"gzip")] {
            let mut tls = tls_connect(s.cfg.https_port(), ALICE, ALPN_H2, &Trust::any())
                .await
                .expect("TLS");
            let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            out.extend(frame(0x4, 0, 0, &[]));
            let mut good = vec![0x82, 0x87, 0x84, 0x01, ALICE.len() as u8];
            good.extend_from_slice(ALICE.as_bytes());
            let mut bad = good.clone();
            bad.extend_from_slice(&[0x00, name.len() as u8]);
            bad.extend_from_slice(name);
            bad.extend_from_slice(&[value.len() as u8]);
            bad.extend_from_slice(value);
            let what = format!("fast={fast} {}", String::from_utf8_lossy(name));
            out.extend(frame(0x1, 0x5, 1, &bad));
            // Stream 3: a good request on the same connection.
            out.extend(frame(0x1, 0x5, 3, &good));
            tls.write_all(&out).await.expect("write");
            let frames = read_frames(&mut tls, Duration::from_secs(2)).await;
            assert!(
                frames.iter().any(|&(t, _, id)| t == 0x3 && id == 1),
                "{what}: stream 1 not reset: {frames:?}"
            );
            assert!(
                frames.iter().any(|&(t, _, id)| t == 0x1 && id == 3),
                "{what}: stream 3 not answered: {frames:?}"
            );
            assert!(
                !frames.iter().any(|&(t, _, _)| t == 0x7),
                "{what}: GOAWAY for one malformed stream: {frames:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_and_logged_on_both_engines() {
    for fast in ENGINES {
        let up = RawUpstream::always(Reply::ok(b"ok")).await;
        let s = stack_with(fast, up, |c| c.with_ops()).await;
        for raw in [
            "GARBAGE\r\n\r\n",
            "GET x HTTP/1.1\r\nHost: alice.hubify.test\r\n\r\n",
        ] {
            let mut conn = RawConn::plain(s.cfg.http_port()).await;
            let _ = conn.try_send(raw.as_bytes()).await;
            let r = conn.read(false).await;
            assert_eq!(r.status, 400, "fast={fast}");
        }
        // Counted after the page went out: scraped until it shows (bounded).
        let ops = s.cfg.ops.expect("ops listener");
        let series = r#"hubify_requests_total{listener="http",outcome="refused",rule="none",status_class="4xx"} 2"#;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let metrics = loop {
            let mut conn = RawConn::plain(ops).await;
            let m = conn
                .roundtrip("GET /metrics HTTP/1.1\r\nHost: ops\r\n\r\n")
                .await;
            let text = m.text();
            if text.lines().any(|l| l == series) || std::time::Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            metrics.lines().any(|l| l == series),
            "fast={fast}: no `{series}` in /metrics:\n{metrics}"
        );
        let line = s
            .router
            .wait_for_log("status=400", Duration::from_secs(5))
            .await;
        assert!(line.contains("refused"), "fast={fast}: {line}");
    }
}

/// `[tls] hsts`: every response on the TLS listener carries the configured
/// `Strict-Transport-Security` once — the workspace's own value replaced, the router's own pages
/// included — and no response on the plain listener carries one (RFC 6797 §7.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_on_every_tls_response_and_never_on_plain_http() {
    const HSTS: &str = "max-age=31536000; includeSubDomains";
    for fast in ENGINES {
        let up = RawUpstream::always(Reply::bytes(
            "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=0\r\nContent-Length: 2\r\n\r\nok",
        ))
        .await;
        let s = stack_with(fast, up, |c| c.hsts(HSTS)).await;
        let sts = |head: &str| -> Vec<String> {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(n, _)| n.eq_ignore_ascii_case("strict-transport-security"))
                .map(|(_, v)| v.trim().to_owned())
                .collect()
        };
        // HTTP/1.1 over TLS: a workspace response and the router's own 404.
        for (label, status) in [(ALICE, 200), ("nobody.hubify.test", 404)] {
            let mut c = RawConn::tls(s.cfg.https_port(), label).await;
            let r = c
                .roundtrip(format!("GET / HTTP/1.1\r\nHost: {label}\r\n\r\n"))
                .await;
            assert_eq!(r.status, status, "fast={fast}: {}", r.summary());
            let head = String::from_utf8_lossy(&r.head).into_owned();
            assert_eq!(sts(&head), [HSTS], "fast={fast} h1 {label}: {head}");
        }
        // HTTP/2.
        let h2 = H2Conn::open(s.cfg.https_port(), ALICE).await.expect("h2");
        for path in ["/", "/two"] {
            let r = h2.request(&Req::get(ALICE, path)).await.expect("h2 answer");
            let all: Vec<_> = r
                .headers
                .get_all("strict-transport-security")
                .iter()
                .map(|v| v.to_str().unwrap_or_default().to_owned())
                .collect();
            assert_eq!(all, [HSTS], "fast={fast} h2 {path}");
        }
        let h2 = H2Conn::open(s.cfg.https_port(), "nobody.hubify.test")
            .await
            .expect("h2");
        let r = h2
            .request(&Req::get("nobody.hubify.test", "/"))
            .await
            .expect("h2 answer");
        assert_eq!(r.status.as_u16(), 404, "fast={fast}");
        assert_eq!(
            r.headers
                .get("strict-transport-security")
                .map(|v| v.as_bytes()),
            Some(HSTS.as_bytes()),
            "fast={fast} h2 own page"
        );
        // Plain HTTP: never, not even the workspace's own field (RFC 6797 §7.2).
        let mut c = RawConn::plain(s.cfg.http_port()).await;
        let r = c.roundtrip(get("/")).await;
        assert_eq!(r.status, 200, "fast={fast}: {}", r.summary());
        let head = String::from_utf8_lossy(&r.head).into_owned();
        assert!(sts(&head).is_empty(), "fast={fast} plain: {head}");
        let mut c = RawConn::plain(s.cfg.http_port()).await;
        let r = c
            .roundtrip("GET / HTTP/1.1\r\nHost: nobody.hubify.test\r\n\r\n")
            .await;
        assert_eq!(r.status, 404);
        let head = String::from_utf8_lossy(&r.head).into_owned();
        assert!(sts(&head).is_empty(), "fast={fast} plain 404: {head}");
    }
}
