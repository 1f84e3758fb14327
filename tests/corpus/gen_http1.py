#!/usr/bin/env python3
"""Writes tests/corpus/http1/NNN-name.http: raw HTTP/1.1 requests (valid, odd and hostile) for
tests/tests/differential.rs, which sends each file, byte for byte, on a fresh plain connection to
a router with `server.fast_path = true` and one with `false`, and compares what happened.

The generated files are committed; this script only documents how they were made and lets the
corpus be regenerated (`python3 tests/corpus/gen_http1.py`; it deletes and rewrites every
`*.http` file in the directory). Every request names `alice.hubify.test` (a workspace that
exists) unless the case is about Host. The router under test serves `/terminal` (prefix
stripped) and `/` from one upstream; `bob` exists too, `nobody` does not.
"""

import os
import glob

HOST = "alice.hubify.test"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "http1")

cases = []


def b(x):
    return x if isinstance(x, bytes) else x.encode("latin-1")


def add(name, data):
    cases.append((name, b(data)))


def req(method="GET", target="/", headers=None, body=b"", version="HTTP/1.1", host=HOST,
        eol="\r\n", length=None):
    """A request; `host=None` sends no Host; `length=True` adds Content-Length of the body."""
    lines = [f"{method} {target} {version}" if version is not None else f"{method} {target}"]
    hs = []
    if host is not None:
        hs.append(("Host", host))
    hs.extend(headers or [])
    if length is True:
        hs.append(("Content-Length", str(len(b(body)))))
    out = b(lines[0]) + b(eol)
    for n, v in hs:
        out += b(n) + b": " + b(v) + b(eol)
    out += b(eol)
    return out + b(body)


def raw(*parts):
    return b"".join(b(p) for p in parts)


def chunked(*chunks, trailers=b"", ext=None):
    out = b""
    for i, c in enumerate(chunks):
        c = b(c)
        line = f"{len(c):x}"
        if ext and i % 2 == 0:
            line += ext
        out += b(line) + b"\r\n" + c + b"\r\n"
    return out + b"0\r\n" + b(trailers) + b"\r\n"


H = f"Host: {HOST}\r\n"

# --- ordinary requests -------------------------------------------------------------------------
add("get-root", req())
add("get-path", req(target="/index.html"))
add("get-query", req(target="/search?q=hello&lang=en"))
add("get-nested-path", req(target="/a/b/c/d.txt"))
add("head-root", req("HEAD"))
add("head-path", req("HEAD", "/file.bin"))
add("head-query", req("HEAD", "/file.bin?v=2"))
add("post-form-cl", req("POST", "/submit", [("Content-Type", "application/x-www-form-urlencoded")],
                        "name=alice&age=30", length=True))
add("post-json-cl", req("POST", "/api/items", [("Content-Type", "application/json")],
                        '{"id":1,"tags":["a","b"]}', length=True))
add("post-cl-zero", req("POST", "/empty", [("Content-Length", "0")]))
add("post-no-length", req("POST", "/nolength"))
add("post-cl-zero-with-type", req("POST", "/e", [("Content-Type", "text/plain"), ("Content-Length", "0")]))
add("put-cl", req("PUT", "/doc/1", [("Content-Type", "text/plain")], "replace me", length=True))
add("put-chunked", req("PUT", "/doc/2", [("Transfer-Encoding", "chunked")],
                       chunked("hello ", "world")))
add("delete-plain", req("DELETE", "/doc/1"))
add("delete-with-body", req("DELETE", "/doc/1", [("Content-Type", "application/json")],
                            '{"force":true}', length=True))
add("options-path", req("OPTIONS", "/api"))
add("options-asterisk", req("OPTIONS", "*"))
add("options-asterisk-cl-zero", req("OPTIONS", "*", [("Content-Length", "0")]))
add("patch-cl", req("PATCH", "/doc/1", [("Content-Type", "application/json")], '{"a":1}', length=True))
add("get-with-body-cl", req("GET", "/search", [("Content-Type", "text/plain")], "query body", length=True))
add("get-cl-zero", req("GET", "/", [("Content-Length", "0")]))
add("get-chunked-empty", req("GET", "/", [("Transfer-Encoding", "chunked")], "0\r\n\r\n"))
add("post-chunked-one", req("POST", "/up", [("Transfer-Encoding", "chunked")], chunked("abcdef")))
add("post-chunked-many", req("POST", "/up", [("Transfer-Encoding", "chunked")],
                             chunked("a", "bb", "ccc", "dddd", "e" * 300)))
add("post-chunked-ext", req("POST", "/up", [("Transfer-Encoding", "chunked")],
                            chunked("hello", "world", ext=";foo=bar")))
add("post-chunked-ext-quoted", req("POST", "/up", [("Transfer-Encoding", "chunked")],
                                   chunked("hello", "world", ext=';name="quoted; value"')))
add("post-chunked-ext-bare", req("POST", "/up", [("Transfer-Encoding", "chunked")],
                                 chunked("hello", ext=";flag")))
add("post-chunked-trailer", req("POST", "/up", [("Transfer-Encoding", "chunked")],
                                chunked("hello", trailers="X-Checksum: abc123\r\n")))
add("post-chunked-trailer-declared", req("POST", "/up", [("Trailer", "X-Checksum"),
                                                        ("Transfer-Encoding", "chunked")],
                                         chunked("hello", trailers="X-Checksum: abc123\r\n")))
add("post-chunked-two-trailers", req("POST", "/up", [("Transfer-Encoding", "chunked")],
                                     chunked("hi", trailers="X-A: 1\r\nX-B: 2\r\n")))
add("post-chunked-upper-hex", req("POST", "/up", [("Transfer-Encoding", "chunked")],
                                  raw("A\r\n0123456789\r\n0\r\n\r\n")))
add("post-chunked-leading-zeros", req("POST", "/up", [("Transfer-Encoding", "chunked")],
                                      raw("0005\r\nhello\r\n000\r\n\r\n")))
add("post-cl-64k", req("POST", "/big", [("Content-Type", "application/octet-stream")],
                       bytes((i * 7 + 3) % 256 for i in range(65536)), length=True))
add("post-chunked-48k", req("POST", "/big", [("Transfer-Encoding", "chunked")],
                            chunked(*[bytes([65 + i]) * 4096 for i in range(12)])))
add("post-binary-body", req("POST", "/bin", [], bytes(range(256)), length=True))
add("get-terminal", req(target="/terminal"))
add("get-terminal-slash", req(target="/terminal/"))
add("get-terminal-sub", req(target="/terminal/ws?token=abc"))
add("get-terminal-query", req(target="/terminal?x=1"))
add("get-terminalx", req(target="/terminalx"))
add("get-terminal-double-slash", req(target="/terminal//x"))
add("post-terminal-cl", req("POST", "/terminal/input", [], "ls -la", length=True))
add("head-terminal", req("HEAD", "/terminal/"))
add("get-keepalive", req(headers=[("Connection", "keep-alive")]))
add("get-conn-close", req(headers=[("Connection", "close")]))
add("get-browser", req(target="/dashboard", headers=[
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Referer", "https://alice.hubify.test/"),
    ("Cookie", "session=abc; theme=dark"),
    ("Upgrade-Insecure-Requests", "1"),
    ("Sec-Fetch-Dest", "document"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Site", "same-origin"),
    ("Sec-Fetch-User", "?1"),
    ("Priority", "u=0, i"),
    ("Pragma", "no-cache"),
    ("Cache-Control", "no-cache"),
]))
add("get-auth-cookie", req(headers=[("Authorization", "Bearer abc.def.ghi"), ("Cookie", "a=1")]))
add("get-two-cookie-headers", req(headers=[("Cookie", "a=1"), ("Cookie", "b=2")]))
add("get-request-id-client", req(headers=[("X-Request-Id", "client-id-123")]))
add("get-request-id-malformed", req(headers=[("X-Request-Id", "bad id with spaces")]))
add("get-request-id-twice", req(headers=[("X-Request-Id", "first-id"), ("X-Request-Id", "second-id")]))
add("get-request-id-empty", req(headers=[("X-Request-Id", "")]))
add("get-accept-json", req(headers=[("Accept", "application/json")]))
add("get-range", req(headers=[("Range", "bytes=0-99"), ("If-None-Match", '"abc"')]))
add("get-max-forwards", req(headers=[("Max-Forwards", "0")]))
add("get-via-forwarded", req(headers=[("Via", "1.1 proxy"), ("Forwarded", "for=1.2.3.4;proto=https")]))
add("get-content-type-no-body", req(headers=[("Content-Type", "application/json")]))
add("pipelined-two-gets", req(target="/one") + req(target="/two"))
add("pipelined-three-gets", req(target="/p1") + req(target="/p2") + req(target="/p3"))
add("pipelined-get-post", req(target="/one") + req("POST", "/two", [], "body2", length=True))
add("pipelined-post-get", req("POST", "/one", [], "body1", length=True) + req(target="/two"))
add("pipelined-chunked-get", req("POST", "/one", [("Transfer-Encoding", "chunked")], chunked("abc"))
    + req(target="/two"))
add("pipelined-get-close-get", req(target="/one", headers=[("Connection", "close")]) + req(target="/two"))
add("pipelined-head-get", req("HEAD", "/one") + req(target="/two"))
add("pipelined-get-nobody", req(target="/one") + req(target="/two", host="nobody.hubify.test"))

# --- absolute form -----------------------------------------------------------------------------
add("abs-root", req(target=f"http://{HOST}/"))
add("abs-path-query", req(target=f"http://{HOST}/path/x?q=1"))
add("abs-no-path", req(target=f"http://{HOST}"))
add("abs-query-no-path", req(target=f"http://{HOST}?x=1"))
add("abs-port-80", req(target=f"http://{HOST}:80/p"))
add("abs-port-8080", req(target=f"http://{HOST}:8080/p"))
add("abs-https-scheme", req(target=f"https://{HOST}/secure"))
add("abs-uppercase-scheme-host", req(target="HTTP://ALICE.HUBIFY.TEST/Up"))
add("abs-host-header-bob", req(target=f"http://{HOST}/x", host="bob.hubify.test"))
add("abs-bob-host-alice", req(target="http://bob.hubify.test/x"))
add("abs-other-domain", req(target="http://example.com/x"))
add("abs-nobody", req(target="http://nobody.hubify.test/x"))
add("abs-userinfo", req(target=f"http://user:pw@{HOST}/x"))
add("abs-empty-authority", req(target="http:///x"))
add("abs-ftp-scheme", req(target=f"ftp://{HOST}/x"))
add("abs-http10", req(target=f"http://{HOST}/x", version="HTTP/1.0"))
add("abs-no-host-header", req(target=f"http://{HOST}/x", host=None))
add("abs-post-cl", req("POST", f"http://{HOST}/form", [], "a=1", length=True))
add("abs-terminal", req(target=f"http://{HOST}/terminal/x"))
add("abs-head", req("HEAD", f"http://{HOST}/h"))
add("abs-percent-path", req(target=f"http://{HOST}/%41b%2F"))
add("abs-two-host-headers", req(target=f"http://{HOST}/x", headers=[("Host", "bob.hubify.test")]))
add("abs-ipv6-authority", req(target="http://[::1]/x"))
add("abs-authority-trailing-dot", req(target="http://alice.hubify.test./x"))
add("abs-backslash-authority", req(target="http://alice.hubify.test\\x/y"))
add("abs-ws-scheme", req(target=f"ws://{HOST}/x"))
add("abs-http-no-slashes", req(target=f"http:{HOST}/x"))
add("abs-host-mismatch-post", req("POST", f"http://{HOST}/x", [], "abc", length=True, host="bob.hubify.test"))
add("abs-fragment", req(target=f"http://{HOST}/x#frag"))

# --- odd but valid targets ---------------------------------------------------------------------
add("target-percent-escapes", req(target="/%41%42%43/%7euser"))
add("target-encoded-slash", req(target="/a%2Fb%2fc"))
add("target-encoded-dots", req(target="/%2e%2e/%2E%2E/etc"))
add("target-dot-segments", req(target="/a/../../etc/passwd"))
add("target-single-dots", req(target="/./a/./b"))
add("target-double-slash", req(target="//double//slash"))
add("target-question-only", req(target="/?"))
add("target-path-question", req(target="/path?"))
add("target-repeated-params", req(target="/?a=1&a=2&a=3"))
add("target-long-query", req(target="/q?" + "&".join(f"k{i}=v{i:04d}" for i in range(400))))
add("target-fragment", req(target="/page#section"))
add("target-tilde", req(target="/~user/home"))
add("target-semicolon-params", req(target="/a;b=c;d/e"))
add("target-brackets", req(target="/a[0]=1"))
add("target-quote", req(target='/a"b'))
add("target-pipe", req(target="/a|b"))
add("target-braces", req(target="/a{b}"))
add("target-backslash", req(target="/a\\b"))
add("target-caret-backtick", req(target="/a^b`c"))
add("target-lt-gt", req(target="/<script>"))
add("target-encoded-nul", req(target="/a%00b"))
add("target-bad-percent", req(target="/a%zz"))
add("target-trailing-percent", req(target="/a%"))
add("target-utf8-encoded", req(target="/%E2%9C%93/caf%C3%A9"))
add("target-raw-utf8", req(target="/caf\xc3\xa9"))
add("target-raw-latin1", req(target="/caf\xe9"))
add("target-terminal-dotdot", req(target="/terminal/%2e%2e/admin"))
add("target-terminal-encoded-slash", req(target="/terminal%2Fx"))
add("target-star-get", req(target="*"))
add("target-star-slash", req(target="/*"))
add("target-at-colon", req(target="/user@host:80/x"))
add("target-8000", req(target="/" + "a" * 7999))
add("target-8192", req(target="/" + "b" * 8191))
add("target-8193", req(target="/" + "c" * 8192))
add("target-9000", req(target="/" + "d" * 8999))
add("target-query-space-encoded", req(target="/s?q=a+b%20c"))
add("target-dollar-amp", req(target="/$&'()*+,;=:@"))
add("head-16k-boundary", req(headers=[("X-Pad", "p" * (16 * 1024 - 60))]))
add("head-17k", req(headers=[("X-Pad", "p" * (17 * 1024))]))

# --- header oddities ---------------------------------------------------------------------------
add("hdr-duplicate-custom", req(headers=[("X-Dup", "a"), ("X-Dup", "b")]))
add("hdr-duplicate-mixed-case", req(headers=[("x-dup", "a"), ("X-DUP", "b"), ("X-Dup", "c")]))
add("hdr-duplicate-interleaved", req(headers=[("X-A", "1"), ("X-B", "1"), ("X-A", "2"), ("X-B", "2")]))
add("hdr-duplicate-accept", req(headers=[("Accept", "text/html"), ("Accept", "application/json")]))
add("hdr-duplicate-same-value", req(headers=[("X-Same", "v"), ("X-Same", "v")]))
add("hdr-host-lowercase-name", raw("GET / HTTP/1.1\r\nhost: ", HOST, "\r\n\r\n"))
add("hdr-host-mixed-case-name", raw("GET / HTTP/1.1\r\nhOsT: ", HOST, "\r\n\r\n"))
add("hdr-names-uppercase", raw("GET / HTTP/1.1\r\nHOST: ", HOST, "\r\nX-UPPER: V\r\nACCEPT: */*\r\n\r\n"))
add("hdr-empty-value", raw("GET / HTTP/1.1\r\n", H, "X-Empty:\r\n\r\n"))
add("hdr-empty-value-space", raw("GET / HTTP/1.1\r\n", H, "X-Empty: \r\n\r\n"))
add("hdr-empty-value-tab", raw("GET / HTTP/1.1\r\n", H, "X-Empty:\t\r\n\r\n"))
add("hdr-tab-around-value", raw("GET / HTTP/1.1\r\n", H, "X-Tab:\tvalue\t\r\n\r\n"))
add("hdr-tab-inside-value", raw("GET / HTTP/1.1\r\n", H, "X-Tab: a\tb\r\n\r\n"))
add("hdr-no-space-after-colon", raw("GET / HTTP/1.1\r\nHost:", HOST, "\r\nX-Tight:v\r\n\r\n"))
add("hdr-many-spaces-value", raw("GET / HTTP/1.1\r\n", H, "X-Sp:    a   b    \r\n\r\n"))
add("hdr-bare-lf-all", req(eol="\n", headers=[("X-A", "1")]))
add("hdr-bare-lf-mixed", raw("GET / HTTP/1.1\r\n", "Host: ", HOST, "\nX-A: 1\r\n\r\n"))
add("hdr-bare-lf-end", raw("GET / HTTP/1.1\r\n", H, "X-A: 1\r\n\n"))
add("hdr-bare-lf-request-line", raw("GET / HTTP/1.1\n", H, "\r\n"))
add("hdr-bare-cr-in-value", raw("GET / HTTP/1.1\r\n", H, "X-Cr: a\rb\r\n\r\n"))
add("hdr-bare-cr-line-end", raw("GET / HTTP/1.1\r", H, "\r\n"))
add("hdr-obs-fold", raw("GET / HTTP/1.1\r\n", H, "X-Fold: a\r\n b\r\n\r\n"))
add("hdr-obs-fold-tab", raw("GET / HTTP/1.1\r\n", H, "X-Fold: a\r\n\tb\r\n\r\n"))
add("hdr-obs-fold-host", raw("GET / HTTP/1.1\r\nHost:\r\n ", HOST, "\r\n\r\n"))
add("hdr-obs-fold-first", raw("GET / HTTP/1.1\r\n X-Lead: a\r\n", H, "\r\n"))
add("hdr-space-before-colon", raw("GET / HTTP/1.1\r\n", H, "X-Foo : bar\r\n\r\n"))
add("hdr-space-before-colon-host", raw("GET / HTTP/1.1\r\nHost : ", HOST, "\r\n\r\n"))
add("hdr-tab-before-colon", raw("GET / HTTP/1.1\r\n", H, "X-Foo\t: bar\r\n\r\n"))
add("hdr-no-colon", raw("GET / HTTP/1.1\r\n", H, "X-NoColon\r\n\r\n"))
add("hdr-empty-name", raw("GET / HTTP/1.1\r\n", H, ": value\r\n\r\n"))
add("hdr-name-tchars", raw("GET / HTTP/1.1\r\n", H, "X-!#$%&'*+.^`|~: t\r\n\r\n"))
add("hdr-name-paren", raw("GET / HTTP/1.1\r\n", H, "X(Y): z\r\n\r\n"))
add("hdr-name-at", raw("GET / HTTP/1.1\r\n", H, "X@Y: z\r\n\r\n"))
add("hdr-name-slash", raw("GET / HTTP/1.1\r\n", H, "X/Y: z\r\n\r\n"))
add("hdr-name-utf8", raw("GET / HTTP/1.1\r\n", H, "X-\xc3\xa9: z\r\n\r\n"))
add("hdr-underscore-custom", req(headers=[("X_Custom", "1"), ("X-Custom", "2")]))
add("hdr-underscore-xff", req(headers=[("X_Forwarded_For", "6.6.6.6")]))
add("hdr-underscore-content-length", req(headers=[("Content_Length", "5")]))
add("hdr-underscore-fly-replay-src", req(headers=[("Fly_Replay_Src", "instance=x")]))
add("hdr-underscore-leading", req(headers=[("_x", "1")]))
add("hdr-value-utf8", req(headers=[("X-Name", "Zo\xc3\xab \xe2\x9c\x93")]))
add("hdr-value-latin1", req(headers=[("X-Name", "caf\xe9")]))
add("hdr-value-nul", raw("GET / HTTP/1.1\r\n", H, "X-Nul: a\x00b\r\n\r\n"))
add("hdr-value-del", raw("GET / HTTP/1.1\r\n", H, "X-Del: a\x7fb\r\n\r\n"))
add("hdr-value-ctl", raw("GET / HTTP/1.1\r\n", H, "X-Ctl: a\x01b\r\n\r\n"))
add("hdr-value-8k", req(headers=[("X-Long", "v" * 8192)]))
add("hdr-fly-client-ip", req(headers=[("Fly-Client-IP", "6.6.6.6")]))
add("hdr-fly-forwarded-port", req(headers=[("Fly-Forwarded-Port", "443"), ("Fly-Region", "ams")]))
add("hdr-fly-replay-src", req(headers=[("Fly-Replay-Src", "instance=abc;region=ams;t=1")]))
add("hdr-fly-replay-failed", req(headers=[("Fly-Replay-Failed", "timeout")]))
add("hdr-fly-force-instance", req(headers=[("fly-force-instance-id", "1234")]))
add("hdr-fly-uppercase", req(headers=[("FLY-REQUEST-ID", "x")]))
add("hdr-flyer-kept", req(headers=[("Flyer", "kept"), ("Fly", "kept-too")]))
add("hdr-xff-spoof", req(headers=[("X-Forwarded-For", "1.2.3.4")]))
add("hdr-xff-chain", req(headers=[("X-Forwarded-For", "1.2.3.4, 5.6.7.8")]))
add("hdr-xff-empty", req(headers=[("X-Forwarded-For", "")]))
add("hdr-xff-twice", req(headers=[("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")]))
add("hdr-xff-garbage", req(headers=[("X-Forwarded-For", "not an ip <>")]))
add("hdr-xfh-spoof", req(headers=[("X-Forwarded-Host", "evil.example")]))
add("hdr-xfp-spoof", req(headers=[("X-Forwarded-Proto", "https")]))
add("hdr-xf-all-spoofed", req(headers=[("X-Forwarded-For", "9.9.9.9"), ("X-Forwarded-Host", "evil"),
                                       ("X-Forwarded-Proto", "https"), ("X-Forwarded-Port", "443"),
                                       ("X-Real-IP", "9.9.9.9")]))
add("hdr-xff-mixed-case-name", req(headers=[("x-FORWARDED-for", "3.3.3.3")]))
add("conn-nominates-custom", req(headers=[("Connection", "X-Secret"), ("X-Secret", "s"), ("X-Other", "o")]))
add("conn-nominates-after-field", req(headers=[("X-Secret", "s"), ("Connection", "x-secret")]))
add("conn-nominates-quoted", req(headers=[("Connection", '"x-secret"'), ("X-Secret", "s")]))
add("conn-close-and-names", req(headers=[("Connection", "close, X-A, X-B"), ("X-A", "a"), ("X-B", "b"),
                                         ("X-C", "c")]))
add("conn-eight-names", req(headers=[("Connection", ", ".join(f"X-N{i}" for i in range(8)))]
                            + [(f"X-N{i}", str(i)) for i in range(8)]))
add("conn-nine-names", req(headers=[("Connection", ", ".join(f"X-N{i}" for i in range(9)))]))
add("conn-forty-names", req(headers=[("Connection", ", ".join(f"X-M{i}" for i in range(40)))]))
add("conn-two-headers", req(headers=[("Connection", "X-A"), ("Connection", "X-B"), ("X-A", "a"),
                                     ("X-B", "b")]))
add("conn-nominates-host", req(headers=[("Connection", "Host")]))
add("conn-nominates-content-length", req(headers=[("Connection", "close, Content-Length")]))
add("conn-nominates-te-header", req(headers=[("Connection", "Transfer-Encoding")]))
add("conn-nominates-xff", req(headers=[("Connection", "X-Forwarded-For"), ("X-Forwarded-For", "1.2.3.4")]))
add("conn-nominates-cookie", req(headers=[("Connection", "Cookie"), ("Cookie", "a=1")]))
add("conn-nominates-authorization", req(headers=[("Connection", "Authorization"),
                                                 ("Authorization", "Basic YTpi")]))
add("conn-nominates-request-id", req(headers=[("Connection", "X-Request-Id"), ("X-Request-Id", "rid-1")]))
add("conn-nominates-accept", req(headers=[("Connection", "Accept"), ("Accept", "application/json")]))
add("conn-nominates-te", req(headers=[("Connection", "TE"), ("TE", "trailers")]))
add("conn-nominates-fly", req(headers=[("Connection", "Fly-Client-IP")]))
add("conn-nominates-upgrade", req(headers=[("Connection", "keep-alive, Upgrade")]))
add("conn-nominates-xfh", req(headers=[("Connection", "X-Forwarded-Host"), ("X-Forwarded-Host", "evil")]))
add("conn-nominates-xfp", req(headers=[("Connection", "x-forwarded-proto"), ("X-Forwarded-Proto", "https")]))
add("conn-nominates-xff-uppercase", req(headers=[("Connection", "X-FORWARDED-FOR")]))
add("conn-nominates-xff-post", req("POST", "/p", [("Connection", "X-Forwarded-For")], "abc", length=True))
add("conn-nominates-pseudo", req(headers=[("Connection", ":authority")]))
add("conn-close-eight-names", req(headers=[("Connection", "close, " + ", ".join(f"X-N{i}" for i in range(8)))]))
add("conn-ten-tokens", req(headers=[("Connection", "close, keep-alive, " + ", ".join(f"X-N{i}" for i in range(8)))]))
add("conn-ten-tokens-two-fields", req(headers=[("Connection", "close, keep-alive"),
                                               ("Connection", ", ".join(f"X-N{i}" for i in range(8)))]))
add("conn-repeated-name", req(headers=[("Connection", ", ".join(["X-Same"] * 9)), ("X-Same", "s")]))
add("conn-close-repeated", req(headers=[("Connection", ", ".join(["close"] * 12))]))
add("conn-keepalive-repeated", req(headers=[("Connection", ", ".join(["keep-alive"] * 12))]))
add("conn-close-twice", req(headers=[("Connection", "close"), ("Connection", "close")]))
add("conn-close-uppercase", req(headers=[("Connection", "CLOSE")]))
add("conn-keepalive-and-close", req(headers=[("Connection", "keep-alive, close")]))
add("conn-empty", req(headers=[("Connection", "")]))
add("conn-commas", req(headers=[("Connection", " ,,, ")]))
add("conn-semicolon", req(headers=[("Connection", "close;q=1")]))
add("conn-space-in-token", req(headers=[("Connection", "x a")]))
add("conn-nominates-unknown-absent", req(headers=[("Connection", "X-Absent")]))
add("conn-close-post-body", req("POST", "/p", [("Connection", "close")], "abc", length=True))
add("hdr-keep-alive-field", req(headers=[("Keep-Alive", "timeout=5, max=100")]))
add("hdr-proxy-connection", req(headers=[("Proxy-Connection", "keep-alive")]))
add("hdr-proxy-authorization", req(headers=[("Proxy-Authorization", "Basic dXNlcjpwYXNz")]))
add("hdr-proxy-authenticate-req", req(headers=[("Proxy-Authenticate", "Basic")]))
add("hdr-te-trailers", req(headers=[("TE", "trailers")]))
add("hdr-te-gzip", req(headers=[("TE", "gzip, trailers;q=0.5")]))
add("hdr-trailer-on-get", req(headers=[("Trailer", "X-Foo")]))
add("hdr-http2-settings", req(headers=[("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]))
add("upgrade-without-connection", req(headers=[("Upgrade", "websocket")]))
add("upgrade-h2c", req(headers=[("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                                ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]))
add("upgrade-websocket", req(target="/terminal/ws", headers=[
    ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]))
add("upgrade-connection-only", req(headers=[("Connection", "Upgrade")]))
add("upgrade-empty", req(headers=[("Connection", "Upgrade"), ("Upgrade", "")]))
add("upgrade-http10", req(version="HTTP/1.0", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket")]))
add("upgrade-post-body", req("POST", "/u", [("Connection", "Upgrade"), ("Upgrade", "foo")], "abc",
                             length=True))
add("expect-100-with-body", req("POST", "/e", [("Expect", "100-continue")], "expected body", length=True))
add("expect-100-no-body", req("GET", "/e", [("Expect", "100-continue")]))
add("expect-100-chunked", req("POST", "/e", [("Expect", "100-continue"), ("Transfer-Encoding", "chunked")],
                              chunked("abc")))
add("expect-other", req("POST", "/e", [("Expect", "something-else")], "x", length=True))
add("expect-uppercase", req("POST", "/e", [("Expect", "100-CONTINUE")], "abc", length=True))
add("expect-100-http10", req("POST", "/e", [("Expect", "100-continue")], "abc", length=True,
                             version="HTTP/1.0"))
add("hdr-count-40", req(headers=[(f"X-H{i}", str(i)) for i in range(39)]))
add("hdr-count-41", req(headers=[(f"X-H{i}", str(i)) for i in range(40)]))
add("hdr-count-128", req(headers=[(f"X-H{i}", str(i)) for i in range(127)]))
add("hdr-count-129", req(headers=[(f"X-H{i}", str(i)) for i in range(128)]))
add("hdr-count-150", req(headers=[(f"X-H{i}", str(i)) for i in range(149)]))
add("hdr-count-60-post", req("POST", "/many", [(f"X-H{i}", str(i)) for i in range(59)], "body",
                             length=True))
add("hdr-32k-boundary", req(headers=[("X-Pad", "p" * (32 * 1024 - 70))]))
add("hdr-33k", req(headers=[("X-Pad", "p" * (33 * 1024))]))
add("hdr-70k", req(headers=[(f"X-Pad{i}", "p" * 7000) for i in range(10)]))
add("hdr-70k-single", req(headers=[("X-Pad", "q" * (70 * 1024))]))

# --- framing attacks ---------------------------------------------------------------------------
add("cl-te-both", req("POST", "/f", [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
                      chunked("hello")))
add("te-cl-both", req("POST", "/f", [("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
                      chunked("hello")))
add("cl-te-smuggle-classic", req("POST", "/f", [("Content-Length", "6"), ("Transfer-Encoding", "chunked")],
                                 "0\r\n\r\nG"))
add("te-chunked-identity", req("POST", "/f", [("Transfer-Encoding", "chunked, identity")], chunked("hello")))
add("te-identity-chunked", req("POST", "/f", [("Transfer-Encoding", "identity, chunked")], chunked("hello")))
add("te-leading-comma", req("POST", "/f", [("Transfer-Encoding", ",chunked")], chunked("hello")))
add("te-trailing-comma", req("POST", "/f", [("Transfer-Encoding", "chunked,")], chunked("hello")))
add("te-identity", req("POST", "/f", [("Transfer-Encoding", "identity")], "hello"))
add("te-identity-with-cl", req("POST", "/f", [("Transfer-Encoding", "identity"), ("Content-Length", "5")],
                               "hello"))
add("te-gzip-chunked", req("POST", "/f", [("Transfer-Encoding", "gzip, chunked")], chunked("hello")))
add("te-gzip", req("POST", "/f", [("Transfer-Encoding", "gzip")], "hello"))
add("te-chunked-uppercase", req("POST", "/f", [("Transfer-Encoding", "CHUNKED")], chunked("hello")))
add("te-chunked-spaces", raw("POST /f HTTP/1.1\r\n", H, "Transfer-Encoding:   chunked   \r\n\r\n",
                             chunked("hello")))
add("te-chunked-tab", raw("POST /f HTTP/1.1\r\n", H, "Transfer-Encoding:\tchunked\r\n\r\n", chunked("hello")))
add("te-duplicate", req("POST", "/f", [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
                        chunked("hello")))
add("te-duplicate-identity", req("POST", "/f", [("Transfer-Encoding", "identity"),
                                                ("Transfer-Encoding", "chunked")], chunked("hello")))
add("te-xchunked", req("POST", "/f", [("Transfer-Encoding", "xchunked")], chunked("hello")))
add("te-chunked-quoted", req("POST", "/f", [("Transfer-Encoding", '"chunked"')], chunked("hello")))
add("te-chunked-param", req("POST", "/f", [("Transfer-Encoding", "chunked;q=1")], chunked("hello")))
add("te-empty", req("POST", "/f", [("Transfer-Encoding", "")], "hello"))
add("te-space-before-colon", raw("POST /f HTTP/1.1\r\n", H, "Transfer-Encoding : chunked\r\n\r\n",
                                 chunked("hello")))
add("te-obs-fold", raw("POST /f HTTP/1.1\r\n", H, "Transfer-Encoding:\r\n chunked\r\n\r\n", chunked("hello")))
add("te-http10", req("POST", "/f", [("Transfer-Encoding", "chunked")], chunked("hello"), version="HTTP/1.0"))
add("te-on-get", req("GET", "/f", [("Transfer-Encoding", "chunked")], chunked("hello")))
add("te-underscore-name", req("POST", "/f", [("Transfer_Encoding", "chunked"), ("Content-Length", "5")],
                              "hello"))
add("cl-list-same", req("POST", "/f", [("Content-Length", "5, 5")], "hello"))
add("cl-list-different", req("POST", "/f", [("Content-Length", "5, 6")], "hello!"))
add("cl-list-zero", req("GET", "/f", [("Content-Length", "0, 0")]))
add("cl-twice-same", req("POST", "/f", [("Content-Length", "5"), ("Content-Length", "5")], "hello"))
add("cl-twice-different", req("POST", "/f", [("Content-Length", "5"), ("Content-Length", "6")], "hello!"))
add("cl-negative", req("POST", "/f", [("Content-Length", "-5")], "hello"))
add("cl-plus", req("POST", "/f", [("Content-Length", "+5")], "hello"))
add("cl-hex", req("POST", "/f", [("Content-Length", "0x5")], "hello"))
add("cl-decimal-point", req("POST", "/f", [("Content-Length", "5.0")], "hello"))
add("cl-exponent", req("POST", "/f", [("Content-Length", "5e0")], "hello"))
add("cl-leading-zeros", req("POST", "/f", [("Content-Length", "005")], "hello"))
add("cl-double-zero", req("GET", "/f", [("Content-Length", "00")]))
add("cl-spaces", raw("POST /f HTTP/1.1\r\n", H, "Content-Length:   5   \r\n\r\nhello"))
add("cl-inner-space", req("POST", "/f", [("Content-Length", "1 2")], "hello world!"))
add("cl-empty", req("POST", "/f", [("Content-Length", "")], "hello"))
add("cl-huge-overflow", req("POST", "/f", [("Content-Length", "99999999999999999999999")], "hello"))
add("cl-u64-max", req("POST", "/f", [("Content-Length", "18446744073709551615")], "hello"))
add("cl-19-digits", req("POST", "/f", [("Content-Length", "1000000000000000000")], "hello"))
add("cl-huge-18-digits", req("POST", "/f", [("Content-Length", "999999999999999999")], "hello"))
add("cl-body-longer", req("POST", "/f", [("Content-Length", "3")], "helloGET"))
add("cl-body-shorter", req("POST", "/f", [("Content-Length", "20")], "hello"))
add("cl-smuggled-request", req("POST", "/f", [("Content-Length", "5")],
                               "hello" + req(target="/smuggled").decode("latin-1")))
add("cl-space-before-colon", raw("POST /f HTTP/1.1\r\n", H, "Content-Length : 5\r\n\r\nhello"))
add("cl-obs-fold", raw("POST /f HTTP/1.1\r\n", H, "Content-Length:\r\n 5\r\n\r\nhello"))
add("cl-get-nonzero", req("GET", "/f", [("Content-Length", "5")], "hello"))
add("cl-head-nonzero", req("HEAD", "/f", [("Content-Length", "5")], "hello"))
add("cl-http10-post", req("POST", "/f", [("Content-Length", "5")], "hello", version="HTTP/1.0"))
add("cl-unicode-digit", req("POST", "/f", [("Content-Length", "\xd9\xa5")], "hello"))
add("chunk-size-bad", req("POST", "/f", [("Transfer-Encoding", "chunked")], "zz\r\nhello\r\n0\r\n\r\n"))
add("chunk-size-space-after", req("POST", "/f", [("Transfer-Encoding", "chunked")], "5 \r\nhello\r\n0\r\n\r\n"))
add("chunk-size-space-before", req("POST", "/f", [("Transfer-Encoding", "chunked")], " 5\r\nhello\r\n0\r\n\r\n"))
add("chunk-size-tab-ext", req("POST", "/f", [("Transfer-Encoding", "chunked")], "5\t;x=1\r\nhello\r\n0\r\n\r\n"))
add("chunk-size-negative", req("POST", "/f", [("Transfer-Encoding", "chunked")], "-5\r\nhello\r\n0\r\n\r\n"))
add("chunk-size-plus", req("POST", "/f", [("Transfer-Encoding", "chunked")], "+5\r\nhello\r\n0\r\n\r\n"))
add("chunk-size-0x", req("POST", "/f", [("Transfer-Encoding", "chunked")], "0x5\r\nhello\r\n0\r\n\r\n"))
add("chunk-size-huge", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                           "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"))
add("chunk-size-u64-max", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                              "ffffffffffffffff\r\nhello\r\n0\r\n\r\n"))
add("chunk-size-empty", req("POST", "/f", [("Transfer-Encoding", "chunked")], "\r\nhello\r\n0\r\n\r\n"))
add("chunk-data-longer", req("POST", "/f", [("Transfer-Encoding", "chunked")], "3\r\nhello\r\n0\r\n\r\n"))
add("chunk-data-shorter", req("POST", "/f", [("Transfer-Encoding", "chunked")], "8\r\nhello\r\n0\r\n\r\n"))
add("chunk-missing-crlf-after-data", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                                         "5\r\nhello0\r\n\r\n"))
add("chunk-data-lf-only", req("POST", "/f", [("Transfer-Encoding", "chunked")], "5\r\nhello\n0\r\n\r\n"))
add("chunk-ext-bare-lf", req("POST", "/f", [("Transfer-Encoding", "chunked")], "5;ext\nhello\r\n0\r\n\r\n"))
add("chunk-ext-bare-cr", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                             "5;a\rb\r\nhello\r\n0\r\n\r\n"))
add("chunk-size-bare-lf", req("POST", "/f", [("Transfer-Encoding", "chunked")], "5\nhello\n0\n\n"))
add("chunk-last-bare-lf", req("POST", "/f", [("Transfer-Encoding", "chunked")], "5\r\nhello\r\n0\n\n"))
add("chunk-missing-final-crlf", req("POST", "/f", [("Transfer-Encoding", "chunked")], "5\r\nhello\r\n0\r\n"))
add("chunk-missing-last-chunk", req("POST", "/f", [("Transfer-Encoding", "chunked")], "5\r\nhello\r\n"))
add("chunk-trailer-no-end", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                                "5\r\nhello\r\n0\r\nX-T: 1\r\n"))
add("chunk-trailer-obs-fold", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                                  "5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"))
add("chunk-trailer-content-length", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                                        "5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n"))
add("chunk-trailer-bad-line", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                                  "5\r\nhello\r\n0\r\nnot a field\r\n\r\n"))
add("chunk-ext-long", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                          "5;" + "e" * 5000 + "\r\nhello\r\n0\r\n\r\n"))
add("chunk-many-tiny", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                           chunked(*["x"] * 500)))
add("chunk-smuggled-request", req("POST", "/f", [("Transfer-Encoding", "chunked")],
                                  chunked("hello") + req(target="/smuggled")))
add("chunk-zero-with-ext", req("POST", "/f", [("Transfer-Encoding", "chunked")], "5\r\nhello\r\n0;last=1\r\n\r\n"))

# --- bad request lines -------------------------------------------------------------------------
add("line-nul-in-target", raw("GET /a\x00b HTTP/1.1\r\n", H, "\r\n"))
add("line-cr-in-target", raw("GET /a\rb HTTP/1.1\r\n", H, "\r\n"))
add("line-space-in-target", raw("GET /a b HTTP/1.1\r\n", H, "\r\n"))
add("line-tab-in-target", raw("GET /a\tb HTTP/1.1\r\n", H, "\r\n"))
add("line-del-in-target", raw("GET /a\x7fb HTTP/1.1\r\n", H, "\r\n"))
add("line-double-space", raw("GET  / HTTP/1.1\r\n", H, "\r\n"))
add("line-tab-separator", raw("GET\t/\tHTTP/1.1\r\n", H, "\r\n"))
add("line-trailing-space", raw("GET / HTTP/1.1 \r\n", H, "\r\n"))
add("line-no-leading-slash", req(target="a/b"))
add("line-empty-target", raw("GET  HTTP/1.1\r\n", H, "\r\n"))
add("line-authority-form-get", req(target=f"{HOST}:80"))
add("line-connect", req("CONNECT", f"{HOST}:443"))
add("line-connect-origin", req("CONNECT", "/"))
add("line-http10", req(version="HTTP/1.0"))
add("line-http10-no-host", req(version="HTTP/1.0", host=None))
add("line-http10-keepalive", req(version="HTTP/1.0", headers=[("Connection", "keep-alive")]))
add("line-http10-head", req("HEAD", version="HTTP/1.0"))
add("line-http09", raw("GET /\r\n"))
add("line-http09-with-headers", raw("GET /\r\n", H, "\r\n"))
add("line-version-0.9", req(version="HTTP/0.9"))
add("line-version-2.0", req(version="HTTP/2.0"))
add("line-version-1.2", req(version="HTTP/1.2"))
add("line-version-3", req(version="HTTP/3"))
add("line-version-lowercase", req(version="http/1.1"))
add("line-version-garbage", req(version="HTTX/1.1"))
add("line-h2-preface", raw("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
add("line-method-lowercase", req("get"))
add("line-method-mixed-case", req("Get"))
add("line-method-unknown", req("FOO"))
add("line-method-propfind", req("PROPFIND", "/dav", [("Depth", "1")]))
add("line-method-trace", req("TRACE"))
add("line-method-long", req("X" * 100))
add("line-method-paren", req("GE(T"))
add("line-method-utf8", req("G\xc3\x89T"))
add("line-leading-crlf", raw("\r\n", req()))
add("line-leading-two-crlf", raw("\r\n\r\n", req()))
add("line-leading-space", raw(" ", req()))
add("line-only-crlfs", raw("\r\n\r\n"))
add("line-garbage-binary", raw("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "\x00" * 20, "\r\n\r\n"))
add("line-tls-clienthello", raw("\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03", "\x11" * 32,
                                "\x00\x00\x02\x13\x01\x01\x00"))
add("line-json", raw('{"hello": "world"}\r\n\r\n'))
add("line-missing-version", raw("GET / \r\n", H, "\r\n"))
add("line-head-only-no-end", raw("GET / HTTP/1.1\r\n", H))

# --- Host ------------------------------------------------------------------------------------
add("host-missing", req(host=None))
add("host-missing-with-headers", req(host=None, headers=[("Accept", "*/*")]))
add("host-two-same", req(headers=[("Host", HOST)]))
add("host-two-different", req(headers=[("Host", "bob.hubify.test")]))
add("host-port-80", req(host=f"{HOST}:80"))
add("host-port-8080", req(host=f"{HOST}:8080"))
add("host-port-empty", req(host=f"{HOST}:"))
add("host-port-letters", req(host=f"{HOST}:abc"))
add("host-port-huge", req(host=f"{HOST}:999999"))
add("host-port-65535", req(host=f"{HOST}:65535"))
add("host-uppercase", req(host="ALICE.HUBIFY.TEST"))
add("host-mixed-case", req(host="Alice.Hubify.Test"))
add("host-trailing-dot", req(host="alice.hubify.test."))
add("host-trailing-dot-port", req(host="alice.hubify.test.:80"))
add("host-two-trailing-dots", req(host="alice.hubify.test.."))
add("host-leading-dot", req(host=".alice.hubify.test"))
add("host-other-domain", req(host="example.com"))
add("host-suffix-attack", req(host="alice.hubify.test.evil.com"))
add("host-prefix-attack", req(host="evilhubify.test"))
add("host-apex", req(host="hubify.test"))
add("host-bob", req(host="bob.hubify.test"))
add("host-nobody", req(host="nobody.hubify.test"))
add("host-nobody-head", req("HEAD", host="nobody.hubify.test"))
add("host-nobody-json", req(host="nobody.hubify.test", headers=[("Accept", "application/json")]))
add("host-nobody-post-body", req("POST", "/p", [("Content-Length", "5")], "hello", host="nobody.hubify.test"))
add("host-nobody-chunked", req("POST", "/p", [("Transfer-Encoding", "chunked")], chunked("hello"),
                               host="nobody.hubify.test"))
add("host-nobody-keepalive-pipelined", req(host="nobody.hubify.test") + req(target="/after"))
add("host-sub-sub", req(host="a.alice.hubify.test"))
add("host-ipv6", req(host="[::1]"))
add("host-ipv6-port", req(host="[::1]:80"))
add("host-ipv6-bad", req(host="[::1"))
add("host-ipv6-garbage", req(host="[zz::1]"))
add("host-ipv4", req(host="127.0.0.1"))
add("host-ipv4-port", req(host="127.0.0.1:80"))
add("host-empty", req(host=""))
add("host-with-path", req(host="alice.hubify.test/x"))
add("host-userinfo", req(host="user@alice.hubify.test"))
add("host-space-inside", req(host="alice hubify.test"))
add("host-comma-list", req(host="alice.hubify.test, bob.hubify.test"))
add("host-underscore", req(host="al_ice.hubify.test"))
add("host-hyphen-edge", req(host="-alice.hubify.test"))
add("host-utf8", req(host="\xc3\xa4lice.hubify.test"))
add("host-punycode", req(host="xn--lice-qoa.hubify.test"))
add("host-percent", req(host="%61lice.hubify.test"))
add("host-only-label", req(host="alice"))
add("host-long-label", req(host="a" * 64 + ".hubify.test"))
add("host-very-long", req(host=("a" * 60 + ".") * 5 + "hubify.test"))
add("host-tab-trailing", raw("GET / HTTP/1.1\r\nHost: alice.hubify.test\t\r\n\r\n"))
add("host-nul", raw("GET / HTTP/1.1\r\nHost: alice\x00.hubify.test\r\n\r\n"))
add("host-http10-bob", req(version="HTTP/1.0", host="bob.hubify.test"))
add("host-absolute-and-missing-http10", req(target="http://bob.hubify.test/x", version="HTTP/1.0", host=None))
add("host-bob-terminal", req(target="/terminal/x", host="bob.hubify.test"))
add("host-two-same-post", req("POST", "/p", [("Host", HOST)], "hello", length=True))
add("host-two-same-http10", req(version="HTTP/1.0", headers=[("Host", HOST)]))
add("host-userinfo-post", req("POST", "/p", [], "hello", length=True, host="user@alice.hubify.test"))
add("host-at-only", req(host="@alice.hubify.test"))
add("host-two-one-empty", req(headers=[("Host", "")]))
add("host-backslash", req(host="alice.hubify.test\\x"))
add("host-double-dot", req(host="alice..hubify.test"))


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in glob.glob(os.path.join(OUT, "*.http")):
        os.remove(old)
    names = set()
    total = 0
    for i, (name, data) in enumerate(cases, start=1):
        assert name not in names, name
        names.add(name)
        path = os.path.join(OUT, f"{i:03d}-{name}.http")
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
    print(f"{len(cases)} cases, {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
