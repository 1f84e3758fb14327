//! Differential test of the two HTTP/1 engines: every raw request of `tests/corpus/http1/`
//! (valid, odd and hostile; `tests/corpus/gen_http1.py` made them) is sent, byte for byte, on a
//! fresh plain connection to a router with `server.fast_path = true` (the router's own HTTP/1.1
//! code, `router/src/h1.rs`) and to one with `false` (every request handed to Pingora's proxy,
//! `router/src/proxy.rs`), each in front of its own recording raw upstream. Both must give the
//! same answers (docs/http.md: one request policy). Per case it compares:
//!
//! - the status of the first response (or that none came: closed, reset, nothing within
//!   [`CASE_BOUND`]), interim 1xx statuses, and the body (the router's own pages with the
//!   32-hex request id masked; the upstream's is a constant);
//! - whether the connection is closed after it, and any further responses on it (pipelined or
//!   smuggled requests);
//! - what the upstream received: each request line exactly; the header fields as a
//!   case-insensitive multiset (names lower-cased, values without surrounding whitespace,
//!   generated `x-request-id` values masked; order compared only among fields of the same name);
//!   anything odd in the forwarded head (bare LF, folded lines, lines without a colon); the
//!   decoded body and the chunked trailers.
//!
//! Every difference is collected; the test fails once at the end with the whole list.
//! `DIFFERENTIAL_VERBOSE=1` prints every case's observation on both engines.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hubify_edge_tests::raw::{End, RawConn, RawSeen, RawStack, RawUpstream, Reply};
use hubify_edge_tests::EdgeConfig;

/// How long a case waits for the first response (a hang is a difference, not a hung suite).
const CASE_BOUND: Duration = Duration::from_secs(3);
/// How long after the first response the test watches the connection: for a close, and for
/// further responses.
const AFTER: Duration = Duration::from_millis(300);
/// How long the test waits for the close a response announced (`connection: close`).
const CLOSE_BOUND: Duration = Duration::from_secs(2);
/// The upstream's answer body (a constant, so comparing bodies compares the router's own pages).
const UPSTREAM_BODY: &[u8] = b"upstream-ok";

const ENGINES: [(&str, bool); 2] = [("fast", true), ("pingora", false)];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/http1")
}

/// The corpus: (case name without `.http`, exact bytes), in name order.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir();
    let mut cases: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read corpus dir {}: {e}", dir.display()))
        .map(|e| e.expect("corpus dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "http"))
        .map(|p| {
            let name = p
                .file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (name, bytes)
        })
        .collect();
    cases.sort();
    cases
}

/// Every maximal run of exactly 32 lower-case hex characters (a generated request id) → `<rid>`.
fn mask(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if hex(b[i]) && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let mut j = i;
            while j < b.len() && hex(b[j]) {
                j += 1;
            }
            if j - i == 32 && (j == b.len() || !b[j].is_ascii_alphanumeric()) {
                out.push_str("<rid>");
                i = j;
                continue;
            }
        }
        // Copy one (possibly multi-byte) character.
        let ch_len = s[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&s[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Bytes as readable text: printable ASCII as is, the rest escaped; long ones cut.
fn show(b: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &c in b.iter().take(max) {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    if b.len() > max {
        let _ = write!(s, "…(+{} bytes)", b.len() - max);
    }
    s
}

/// One request as the upstream received it, normalised for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
struct UpReq {
    line: String,
    /// Lower-cased name → values in order (generated request ids masked).
    fields: BTreeMap<String, Vec<String>>,
    /// Lines of the head that are not plain `name: value` CRLF lines.
    oddities: Vec<String>,
    body: Vec<u8>,
    trailers: Vec<String>,
}

impl UpReq {
    fn of(seen: &RawSeen) -> UpReq {
        let head = &seen.head;
        let mut lines: Vec<&[u8]> = head.split(|&c| c == b'\n').collect();
        // The head ends with an empty line: drop what follows the last LF (nothing).
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let mut oddities = Vec::new();
        let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut line = String::new();
        for (i, l) in lines.iter().enumerate() {
            let (l, crlf) = match l.strip_suffix(b"\r") {
                Some(l) => (l, true),
                None => (*l, false),
            };
            if !crlf {
                oddities.push(format!("bare LF after {:?}", show(l, 80)));
            }
            if i == 0 {
                line = show(l, 200);
                continue;
            }
            if l.is_empty() {
                continue;
            }
            if l.starts_with(b" ") || l.starts_with(b"\t") {
                oddities.push(format!("folded line {:?}", show(l, 80)));
                continue;
            }
            let Some(colon) = l.iter().position(|&c| c == b':') else {
                oddities.push(format!("line without a colon {:?}", show(l, 80)));
                continue;
            };
            let name = String::from_utf8_lossy(&l[..colon]).to_ascii_lowercase();
            if name.is_empty() || name.bytes().any(|c| c == b' ' || c == b'\t') {
                oddities.push(format!("odd field name {:?}", show(&l[..colon], 80)));
            }
            let value = show(l[colon + 1..].trim_ascii(), 200);
            let value = if name == "x-request-id" {
                mask(&value)
            } else {
                value
            };
            fields.entry(name).or_default().push(value);
        }
        UpReq {
            line,
            fields,
            oddities,
            body: seen.body.clone(),
            trailers: seen
                .chunked
                .as_ref()
                .map(|c| c.trailers.clone())
                .unwrap_or_default(),
        }
    }

    fn summary(&self) -> String {
        let mut s = self.line.clone();
        for (n, vs) in &self.fields {
            for v in vs {
                let _ = write!(s, " | {n}: {v}");
            }
        }
        if !self.body.is_empty() {
            let _ = write!(s, " | body {} bytes", self.body.len());
        }
        s
    }
}

/// What one engine did with one case.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    /// The first response's status, or what happened instead.
    response: String,
    /// Its interim (1xx) statuses.
    interim: Vec<String>,
    /// Its body, as text, request ids masked.
    body: String,
    /// The connection after it: `closed` or `open`.
    after: String,
    /// Further responses (status and masked body) or bytes on the connection.
    more: Vec<String>,
    upstream: Vec<UpReq>,
}

impl Observed {
    fn status(&self) -> Option<u16> {
        self.response.parse().ok()
    }

    fn line(&self) -> String {
        format!(
            "{} {}{} up={}{}",
            self.response,
            self.after,
            if self.more.is_empty() {
                String::new()
            } else {
                format!(" more={:?}", self.more)
            },
            self.upstream.len(),
            if self.interim.is_empty() {
                String::new()
            } else {
                format!(" interim={:?}", self.interim)
            }
        )
    }
}

/// Further responses in `bytes` (already read off the connection after the first).
fn split_responses(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            out.push(format!("incomplete: {}", mask(&show(bytes, 120))));
            break;
        };
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let status = head
            .split("\r\n")
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("?")
            .to_owned();
        if !head.starts_with("HTTP/1.") {
            out.push(format!("not a response: {}", mask(&show(bytes, 120))));
            break;
        }
        let mut rest = &bytes[end + 4..];
        let field = |name: &str| {
            head.split("\r\n").skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let no_body = matches!(status.as_str(), "204" | "304") || status.starts_with('1');
        let body: Vec<u8> = if no_body {
            Vec::new()
        } else if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            // Decoded just far enough to find the end.
            let mut body = Vec::new();
            loop {
                let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
                    rest = &[];
                    break;
                };
                let size_text = String::from_utf8_lossy(&rest[..nl]).into_owned();
                let size_text = size_text.split(';').next().unwrap_or("").trim().to_owned();
                let Ok(size) = usize::from_str_radix(&size_text, 16) else {
                    rest = &[];
                    break;
                };
                rest = &rest[nl + 2..];
                if size == 0 {
                    let end = rest
                        .windows(2)
                        .position(|w| w == b"\r\n")
                        .map_or(rest.len(), |p| p + 2);
                    rest = &rest[end..];
                    break;
                }
                let take = size.min(rest.len());
                body.extend_from_slice(&rest[..take]);
                rest = &rest[(take + 2).min(rest.len())..];
            }
            body
        } else if let Some(n) = field("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let take = n.min(rest.len());
            let b = rest[..take].to_vec();
            rest = &rest[take..];
            b
        } else {
            let b = rest.to_vec();
            rest = &[];
            b
        };
        out.push(format!("{status} {}", mask(&show(&body, 300))));
        bytes = rest;
    }
    out
}

/// Sends one case on a fresh connection and observes what happens, the upstream included.
async fn observe(port: u16, up: &RawUpstream, bytes: &[u8]) -> Observed {
    let before = up.seen().len();
    let mut conn = RawConn::plain(port).await;
    conn.bound = CASE_BOUND;
    // A write error (the router closed early) is not itself compared: what the client then
    // reads is.
    let _ = conn.try_send(bytes).await;
    let head_request = bytes.starts_with(b"HEAD ");
    let mut obs = Observed {
        response: String::new(),
        interim: Vec::new(),
        body: String::new(),
        after: String::new(),
        more: Vec::new(),
        upstream: Vec::new(),
    };
    let mut watch = true;
    let mut wait = AFTER;
    match conn.try_read(head_request).await {
        Ok(r) => {
            if r.connection_has("close") {
                // A close is announced: give it time to arrive (a slow close is not an open
                // connection).
                wait = CLOSE_BOUND;
            }
            obs.response = r.status.to_string();
            obs.interim = r
                .interim
                .iter()
                .map(|h| h.split(' ').nth(1).unwrap_or("?").to_owned())
                .collect();
            obs.body = mask(&show(&r.body, 2000));
        }
        Err(e) => {
            let e = e.to_string();
            if e.starts_with("no complete response within") {
                if e.ends_with("buffered \"\"") {
                    obs.response = format!("no response within {CASE_BOUND:?}");
                } else {
                    obs.response = format!("incomplete response: {}", mask(&e));
                }
                obs.after = "open".to_owned();
                watch = false;
            } else if e == "stream ended while reading a response head; have \"\"" {
                obs.response = "closed without a response".to_owned();
            } else if e.contains("reset") {
                obs.response = "reset without a response".to_owned();
            } else {
                obs.response = format!("unreadable response: {}", mask(&e));
            }
        }
    }
    if watch {
        let (rest, end) = conn.drain(wait).await;
        obs.more = split_responses(&rest);
        obs.after = match end {
            End::Open => "open",
            End::Eof | End::Error(_) => "closed",
            End::Data(_) => "data",
        }
        .to_owned();
    }
    // Let any request still on its way to the upstream land before counting this case's.
    let mut n = up.seen().len();
    loop {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let m = up.seen().len();
        if m == n {
            break;
        }
        n = m;
    }
    drop(conn);
    obs.upstream = up.seen()[before..].iter().map(UpReq::of).collect();
    obs
}

/// The differences between the two engines' observations of one case.
fn differences(a: &Observed, b: &Observed) -> Vec<String> {
    let (na, nb) = (ENGINES[0].0, ENGINES[1].0);
    let mut d = Vec::new();
    let mut cmp = |what: &str, x: &str, y: &str| {
        if x != y {
            d.push(format!("{what}: {na}={x} | {nb}={y}"));
        }
    };
    cmp("response", &a.response, &b.response);
    cmp(
        "interim",
        &format!("{:?}", a.interim),
        &format!("{:?}", b.interim),
    );
    cmp("body", &a.body, &b.body);
    cmp("connection after", &a.after, &b.after);
    cmp(
        "further responses",
        &format!("{:?}", a.more),
        &format!("{:?}", b.more),
    );
    if a.upstream.len() != b.upstream.len() {
        let list = |o: &Observed| {
            o.upstream
                .iter()
                .map(|u| u.line.clone())
                .collect::<Vec<_>>()
        };
        cmp(
            "upstream requests",
            &format!("{} {:?}", a.upstream.len(), list(a)),
            &format!("{} {:?}", b.upstream.len(), list(b)),
        );
    }
    for (i, (x, y)) in a.upstream.iter().zip(&b.upstream).enumerate() {
        cmp(&format!("upstream[{i}] request line"), &x.line, &y.line);
        let names: BTreeSet<&String> = x.fields.keys().chain(y.fields.keys()).collect();
        for n in names {
            let fx = x.fields.get(n).cloned().unwrap_or_default();
            let fy = y.fields.get(n).cloned().unwrap_or_default();
            cmp(
                &format!("upstream[{i}] field {n}"),
                &format!("{fx:?}"),
                &format!("{fy:?}"),
            );
        }
        cmp(
            &format!("upstream[{i}] head oddities"),
            &format!("{:?}", x.oddities),
            &format!("{:?}", y.oddities),
        );
        cmp(
            &format!("upstream[{i}] body"),
            &format!("{} bytes {:?}", x.body.len(), show(&x.body, 80)),
            &format!("{} bytes {:?}", y.body.len(), show(&y.body, 80)),
        );
        cmp(
            &format!("upstream[{i}] trailers"),
            &format!("{:?}", x.trailers),
            &format!("{:?}", y.trailers),
        );
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_answer_every_corpus_request_alike() {
    let cases = corpus();
    assert!(
        cases.len() >= 300,
        "the corpus in {} has {} cases; expected a few hundred",
        corpus_dir().display(),
        cases.len()
    );
    let started = Instant::now();
    let mut stacks = Vec::new();
    for (_, fast) in ENGINES {
        // One request per upstream connection (`Connection: close`, then closed): body bytes
        // the upstream did not take as part of a request (a framing it reads otherwise) can
        // then never be read as the start of another case's request.
        let up = RawUpstream::start(|_, seen| {
            let mut reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                UPSTREAM_BODY.len()
            )
            .into_bytes();
            if !seen.request_line().starts_with("HEAD ") {
                reply.extend_from_slice(UPSTREAM_BODY);
            }
            Reply::bytes(reply).then_close()
        })
        .await;
        stacks.push(RawStack::start_with(up, |c: EdgeConfig| c.fast_path(fast)).await);
    }
    let verbose = std::env::var_os("DIFFERENTIAL_VERBOSE").is_some();

    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    let mut forwarded_ok = 0;
    let mut refused_4xx = 0;
    let mut dead: [Option<String>; 2] = [None, None];
    for (name, bytes) in &cases {
        let (a, b) = tokio::join!(
            observe(stacks[0].cfg.http_port(), &stacks[0].up, bytes),
            observe(stacks[1].cfg.http_port(), &stacks[1].up, bytes),
        );
        if verbose {
            println!("{name}");
            for ((engine, _), o) in ENGINES.iter().zip([&a, &b]) {
                println!("    {engine}: {}", o.line());
                for u in &o.upstream {
                    println!("        upstream: {}", u.summary());
                }
            }
        }
        let both_ok = |o: &Observed| o.status() == Some(200) && !o.upstream.is_empty();
        if both_ok(&a) && both_ok(&b) {
            forwarded_ok += 1;
        }
        let refused = |o: &Observed| {
            o.status().is_some_and(|s| (400..500).contains(&s)) && o.upstream.is_empty()
        };
        if refused(&a) && refused(&b) {
            refused_4xx += 1;
        }
        let d = differences(&a, &b);
        if !d.is_empty() {
            found.push((name.clone(), d));
        }
        // A router that died answers nothing more: say so once, and stop.
        for (i, s) in stacks.iter_mut().enumerate() {
            if dead[i].is_none() {
                if let Some(status) = s.router.try_exit() {
                    dead[i] = Some(format!(
                        "the {} router exited ({status}) during case {name}",
                        ENGINES[i].0
                    ));
                }
            }
        }
        if dead.iter().any(Option::is_some) {
            break;
        }
    }
    let elapsed = started.elapsed();

    let mut report = String::new();
    let _ = writeln!(
        report,
        "{} corpus cases in {:.1} s: {} forwarded with 200 on both engines, {} refused with 4xx \
         (nothing forwarded) on both, {} case(s) with differences",
        cases.len(),
        elapsed.as_secs_f64(),
        forwarded_ok,
        refused_4xx,
        found.len()
    );
    for why in dead.iter().flatten() {
        let _ = writeln!(report, "!! {why}");
    }
    for (name, diffs) in &found {
        let _ = writeln!(report, "\n{name}:");
        for d in diffs {
            let _ = writeln!(report, "  - {d}");
        }
    }
    println!("{report}");

    // A broken harness (no router answering, an upstream that never sees a request, a corpus of
    // garbage) would show as few forwards or few refusals.
    assert!(
        forwarded_ok >= 120,
        "only {forwarded_ok} cases were forwarded and answered 200 on both engines: is the \
         harness broken?\n{report}"
    );
    assert!(
        refused_4xx >= 60,
        "only {refused_4xx} cases were refused with 4xx on both engines: is the harness \
         broken?\n{report}"
    );
    assert!(dead.iter().all(Option::is_none), "{report}");
    assert!(
        found.is_empty(),
        "the engines differ on {} of {} corpus cases:\n{report}",
        found.len(),
        cases.len()
    );
}
