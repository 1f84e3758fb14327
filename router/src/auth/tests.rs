use std::io::Write as _;

use super::testkit::{jwks, Issuer};
use super::*;

const HOST: &str = "alice.hubify.test";

fn conf(jwks_path: &Path) -> hubify_edge_config::Auth {
    hubify_edge_config::Auth {
        jwks: jwks_path.to_owned(),
        max_token_lifetime: Duration::from_secs(600),
        session_ttl: Duration::from_secs(3600),
        login_url: Some("https://hubify.test/login".into()),
        leeway: Duration::from_secs(30),
    }
}

fn session_keys(list: &str) -> SessionKeys {
    SessionKeys::from_list(list).expect("valid keys")
}

const KEY_A: &str = "0123456789abcdef0123456789abcdef-a";
const KEY_B: &str = "0123456789abcdef0123456789abcdef-b";

struct Fixture {
    auth: Auth,
    issuer: Issuer,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let issuer = Issuer::ed25519("k1");
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&issuer])).expect("write jwks");
    let auth = Auth::new(conf(&path), session_keys(KEY_A)).expect("auth");
    Fixture {
        auth,
        issuer,
        _dir: dir,
    }
}

fn request<'a>(path: &'a str, creds: Credentials<'a>, scope: &'a str) -> Request<'a> {
    Request {
        host: HOST,
        authority: HOST,
        scheme: "https",
        path_and_query: path,
        credentials: creds,
        upgrade: false,
        unsafe_method: false,
        scope,
        epoch: 0,
    }
}

/// The session cookie's `name=value` pair that a first visit to `/<scope>?hubify_token=<token>`
/// sets.
fn sign_in(f: &Fixture, token: &str, scope: &str) -> String {
    let path = format!("/{scope}?hubify_token={token}");
    let Verdict::SetSession { cookie, .. } = f
        .auth
        .check(&request(&path, Credentials::default(), scope), now())
    else {
        panic!("a first visit with a valid token sets a session");
    };
    cookie.split(';').next().expect("pair").to_string()
}

fn claims(exp_in: i64, aud: &str, scope: &str) -> serde_json::Value {
    let now = now() as i64;
    serde_json::json!({"aud": aud, "sub": "user-1", "scope": scope, "iat": now, "exp": now + exp_in})
}

#[test]
fn a_valid_token_is_granted_and_every_flaw_refused_with_its_reason() {
    let f = fixture();
    let t = f.issuer.token(HOST, "user-1", "terminal dashboard", 300);
    let g = f.auth.verify_token(&t, HOST, now()).expect("valid");
    assert_eq!(g.user, "user-1");
    assert_eq!(g.scopes, "terminal dashboard");

    let err = |token: &str| f.auth.verify_token(token, HOST, now()).unwrap_err();
    assert_eq!(
        err(&f.issuer.sign(&claims(-120, HOST, "terminal"))),
        AuthResult::Expired
    );
    assert_eq!(
        err(&f.issuer.sign(&claims(300, "bob.hubify.test", "terminal"))),
        AuthResult::Forbidden
    );
    // Lifetime over max_token_lifetime (10m + leeway).
    assert_eq!(
        err(&f.issuer.sign(&claims(3600, HOST, "terminal"))),
        AuthResult::Invalid
    );
    // Issued in the future.
    let now = now();
    let future = serde_json::json!({"aud": HOST, "sub": "u", "iat": now + 600, "exp": now + 700});
    assert_eq!(err(&f.issuer.sign(&future)), AuthResult::Invalid);
    // No exp, no sub, no kid, unknown kid, another key under our kid, garbage.
    let no_exp = serde_json::json!({"aud": HOST, "sub": "u", "iat": now});
    assert_eq!(err(&f.issuer.sign(&no_exp)), AuthResult::Invalid);
    let no_sub = serde_json::json!({"aud": HOST, "iat": now, "exp": now + 60});
    assert_eq!(err(&f.issuer.sign(&no_sub)), AuthResult::Invalid);
    let c = claims(300, HOST, "terminal");
    assert_eq!(err(&f.issuer.sign_with_kid(&c, None)), AuthResult::Invalid);
    assert_eq!(
        err(&f.issuer.sign_with_kid(&c, Some("k9"))),
        AuthResult::Invalid
    );
    let impostor = Issuer::ed25519("k1");
    assert_eq!(err(&impostor.sign(&c)), AuthResult::Invalid);
    for junk in [
        "",
        "a.b.c",
        "....",
        "eyJhbGciOiJub25lIn0.e30.",
        &"A".repeat(5000),
    ] {
        assert_eq!(err(junk), AuthResult::Invalid, "{junk:?}");
    }
    // A control character in `sub` would reach a header: refused.
    let ctl = serde_json::json!({"aud": HOST, "sub": "a\r\nx: y", "iat": now, "exp": now + 60});
    assert_eq!(err(&f.issuer.sign(&ctl)), AuthResult::Invalid);
}

#[test]
fn es256_keys_verify_and_an_alg_that_does_not_match_the_key_is_refused() {
    let ed = Issuer::ed25519("ed");
    let ec = Issuer::es256("ec");
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&ed, &ec])).expect("write");
    let auth = Auth::new(conf(&path), session_keys(KEY_A)).expect("auth");
    let t = ec.token(HOST, "u", "terminal", 60);
    assert!(auth.verify_token(&t, HOST, now()).is_ok());
    // Signed by the EC key but naming the Ed25519 key's kid.
    let swapped = ec.sign_with_kid(&claims(60, HOST, "terminal"), Some("ed"));
    assert_eq!(
        auth.verify_token(&swapped, HOST, now()),
        Err(AuthResult::Invalid)
    );
}

#[test]
fn jwks_errors_name_the_key_and_a_bad_reload_keeps_the_old_keys() {
    let p = Path::new("/x/jwks.json");
    let e = Keys::parse(p, b"{").err().expect("not JSON");
    assert!(
        e.to_string()
            .starts_with("auth.jwks: /x/jwks.json is not a JWKS"),
        "{e}"
    );
    let no_kid = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    let e = Keys::parse(p, no_kid).err().expect("no kid");
    assert!(e.to_string().contains("key 0: no `kid`"), "{e}");
    let rsa = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}"#;
    assert!(
        Keys::parse(p, rsa).is_err(),
        "a shared secret is not a public key"
    );
    assert!(Keys::parse(p, br#"{"keys":[]}"#).is_err());
    assert!(matches!(
        Keys::load(Path::new("/nonexistent/jwks.json")),
        Err(JwksError::Read { .. })
    ));

    let f = fixture();
    let path = f.auth.config().jwks.clone();
    let old = f.issuer.token(HOST, "u", "terminal", 60);
    // A broken file: the old key still verifies.
    std::fs::write(&path, b"{ not json").expect("write");
    assert!(!f.auth.reload_if_changed());
    assert!(f.auth.verify_token(&old, HOST, now()).is_ok());
    // A rotated file: the new kid verifies, the removed one does not.
    let next = Issuer::ed25519("k2");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(jwks(&[&next]).as_bytes()).expect("write");
    drop(file);
    assert!(f.auth.reload_if_changed());
    assert!(f
        .auth
        .verify_token(&next.token(HOST, "u", "t", 60), HOST, now())
        .is_ok());
    assert_eq!(
        f.auth.verify_token(&old, HOST, now()),
        Err(AuthResult::Invalid)
    );
}

#[test]
fn a_first_visit_sets_a_session_that_then_authorizes() {
    let f = fixture();
    let t = f.issuer.token(HOST, "user-1", "terminal", 300);
    let path = format!("/terminal/?a=1&hubify_token={t}&b=2");
    let v = f
        .auth
        .check(&request(&path, Credentials::default(), "terminal"), now());
    let Verdict::SetSession {
        location,
        cookie,
        grant,
    } = v
    else {
        panic!("expected a session: {v:?}");
    };
    assert_eq!(location, "/terminal/?a=1&b=2");
    assert!(cookie.starts_with("__Host-hubify_session=v1."), "{cookie}");
    assert!(
        cookie.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600"),
        "{cookie}"
    );
    assert_eq!(grant.user, "user-1");

    let pair = cookie.split(';').next().expect("a pair").to_string();
    let with = |epoch: u64, scope: &'static str, host: &'static str| {
        let creds = Credentials {
            cookie: Some(pair.as_bytes()),
            ..Credentials::default()
        };
        let r = Request {
            epoch,
            host,
            ..request("/terminal/", creds, scope)
        };
        f.auth.check(&r, now())
    };
    assert!(matches!(
        with(0, "terminal", HOST),
        Verdict::Granted(Grant {
            via: Via::Session,
            ..
        })
    ));
    assert_eq!(
        with(0, "dashboard", HOST),
        Verdict::Refused(AuthResult::Forbidden)
    );
    assert_eq!(
        with(0, "terminal", "bob.hubify.test"),
        Verdict::Refused(AuthResult::Forbidden)
    );
    assert_eq!(
        with(1, "terminal", HOST),
        Verdict::Refused(AuthResult::Invalid),
        "revoked"
    );
    // Past the session's expiry.
    let later = now() + 3601;
    let creds = Credentials {
        cookie: Some(pair.as_bytes()),
        ..Credentials::default()
    };
    assert_eq!(
        f.auth.check(&request("/t", creds, "terminal"), later),
        Verdict::Refused(AuthResult::Expired)
    );
    // No credentials at all.
    assert_eq!(
        f.auth
            .check(&request("/t", Credentials::default(), "terminal"), now()),
        Verdict::Refused(AuthResult::Missing)
    );
}

#[test]
fn a_new_token_for_the_same_user_keeps_the_session_s_other_scopes() {
    let f = fixture();
    let first = f.issuer.token(HOST, "user-1", "terminal", 300);
    let pair = sign_in(&f, &first, "terminal");
    let second = f.issuer.token(HOST, "user-1", "dashboard", 300);
    let path = format!("/dashboard?hubify_token={second}");
    let creds = Credentials {
        cookie: Some(pair.as_bytes()),
        ..Credentials::default()
    };
    let Verdict::SetSession { grant, .. } =
        f.auth.check(&request(&path, creds, "dashboard"), now())
    else {
        panic!("a session");
    };
    assert_eq!(grant.scopes, "dashboard terminal");
}

#[test]
fn bearer_tokens_and_websocket_origins() {
    let f = fixture();
    let t = f.issuer.token(HOST, "cli", "terminal", 60);
    let header = format!("Bearer {t}");
    let creds = Credentials {
        authorization: Some(header.as_bytes()),
        ..Credentials::default()
    };
    let v = f
        .auth
        .check(&request("/terminal", creds, "terminal"), now());
    assert!(
        matches!(
            v,
            Verdict::Granted(Grant {
                via: Via::Bearer,
                ..
            })
        ),
        "{v:?}"
    );
    assert_eq!(
        f.auth
            .check(&request("/dashboard", creds, "dashboard"), now()),
        Verdict::Refused(AuthResult::Forbidden)
    );
    // A bearer token of the workspace's own scheme (no kid of ours) is not the router's: the
    // request needs a session.
    let creds = Credentials {
        authorization: Some(b"Bearer gateway-secret"),
        ..Credentials::default()
    };
    assert_eq!(
        f.auth
            .check(&request("/terminal", creds, "terminal"), now()),
        Verdict::Refused(AuthResult::Missing)
    );
    // WebSocket: the origin must be the workspace's own.
    let ws = |origin: &'static [u8]| Request {
        upgrade: true,
        credentials: Credentials {
            authorization: Some(header.as_bytes()),
            origin: Some(origin),
            ..Credentials::default()
        },
        ..request("/terminal/ws", Credentials::default(), "terminal")
    };
    assert!(matches!(
        f.auth.check(&ws(b"https://alice.hubify.test"), now()),
        Verdict::Granted(_)
    ));
    assert!(matches!(
        f.auth.check(&ws(b"HTTPS://Alice.Hubify.Test"), now()),
        Verdict::Granted(_)
    ));
    for bad in [
        &b"https://evil.test"[..],
        b"http://alice.hubify.test",
        b"https://alice.hubify.test.evil.test",
        b"null",
    ] {
        assert_eq!(
            f.auth.check(&ws(bad), now()),
            Verdict::Refused(AuthResult::Origin)
        );
    }
    // A token in the query of a handshake authorizes that request (a browser cannot follow a
    // redirect there).
    let path = format!("/terminal/ws?hubify_token={t}");
    let r = Request {
        upgrade: true,
        ..request(&path, Credentials::default(), "terminal")
    };
    assert!(matches!(
        f.auth.check(&r, now()),
        Verdict::Granted(Grant {
            via: Via::Query,
            ..
        })
    ));
}

#[test]
fn sessions_verify_under_either_rotation_key_and_never_when_tampered() {
    let s = Session {
        host: HOST.into(),
        user: "u".into(),
        scopes: "terminal".into(),
        expires: 99,
        epoch: 3,
    };
    let old = session_keys(KEY_A).seal(&s);
    let both = session_keys(&format!("{KEY_B},{KEY_A}"));
    assert_eq!(both.open(old.as_bytes()), Some(s.clone()));
    assert_eq!(session_keys(KEY_B).open(old.as_bytes()), None);
    let mut tampered = old.clone().into_bytes();
    tampered[5] ^= 1;
    assert_eq!(both.open(&tampered), None);
    for junk in [
        &b""[..],
        b"v1.",
        b"v1..",
        b"v2.e30.AAAA",
        b"v1.e30.",
        &[0xff; 64],
    ] {
        assert_eq!(both.open(junk), None);
    }
    assert!(SessionKeys::from_list("short").is_err());
    assert!(SessionKeys::from_list(&format!("{KEY_A},")).is_err());
}

#[test]
fn credential_parsing() {
    assert_eq!(query_token("/t"), None);
    assert_eq!(query_token("/t?x=1"), None);
    assert_eq!(query_token("/t?hubify_tokens=1"), None);
    assert_eq!(
        query_token("/t?hubify_token=abc"),
        Some(("abc", "/t".to_string()))
    );
    assert_eq!(query_token("/t?hubify_token"), Some(("", "/t".to_string())));
    assert_eq!(
        query_token("/t?z=9&hubify_token=a&y=8&hubify_token=b"),
        Some(("a", "/t?z=9&y=8".to_string()))
    );
    assert_eq!(bearer(b"Bearer abc.def-_"), Some("abc.def-_"));
    assert_eq!(bearer(b"bearer   x"), Some("x"));
    assert_eq!(bearer(b"Basic abc"), None);
    assert_eq!(bearer(b"Bearer"), None);
    assert_eq!(bearer(b"Bearer a b"), None);
    assert_eq!(bearer(b"Bearerx abc"), None);
    let c = b"a=1; __Host-hubify_session=v1.x.y; b=2";
    assert_eq!(session_cookie(c), Some(&b"v1.x.y"[..]));
    assert_eq!(without_session_cookie(c), Some(b"a=1; b=2".to_vec()));
    assert_eq!(without_session_cookie(b"a=1;b=2"), None);
    assert_eq!(
        without_session_cookie(b"__Host-hubify_session=z"),
        Some(Vec::new())
    );
    assert_eq!(
        session_cookie(b"__Host-hubify_sessionx=1; x__Host-hubify_session=2"),
        None
    );
    // Found by the fuzz target: bytes before the name hide it from the exact match, not from
    // the stripping.
    assert_eq!(
        without_session_cookie(b"a=1; \0\0 __Host-hubify_session=v1.x; b=2"),
        Some(b"a=1; b=2".to_vec())
    );
    assert_eq!(
        percent_encode("https://a.b/c?d=e f"),
        "https%3A%2F%2Fa.b%2Fc%3Fd%3De%20f"
    );
}

#[test]
fn the_login_link_returns_to_the_url_without_the_token() {
    let f = fixture();
    assert_eq!(
        f.auth.login_link("https", HOST, "/terminal/?x=1&hubify_token=abc").as_deref(),
        Some("https://hubify.test/login?return_to=https%3A%2F%2Falice.hubify.test%2Fterminal%2F%3Fx%3D1")
    );
}

#[test]
fn redirects_stay_on_the_host() {
    assert_eq!(
        same_site_location("/terminal/?a=1".into()),
        "/terminal/?a=1"
    );
    assert_eq!(
        same_site_location("//evil.test/x?a".into()),
        "/evil.test/x?a"
    );
    assert_eq!(same_site_location("/\\evil.test".into()), "/evil.test");
    assert_eq!(same_site_location("///".into()), "/");
}

#[test]
fn a_state_changing_request_with_the_session_must_come_from_the_workspace() {
    let f = fixture();
    let t = f.issuer.token(HOST, "u", "terminal dashboard", 300);
    let pair = sign_in(&f, &t, "dashboard");
    let post = |origin: Option<&'static [u8]>, bearer: Option<&[u8]>| {
        let creds = Credentials {
            cookie: Some(pair.as_bytes()),
            origin,
            authorization: bearer,
        };
        let r = Request {
            unsafe_method: true,
            ..request("/dashboard/api", creds, "dashboard")
        };
        f.auth.check(&r, now())
    };
    // bob's workspace is same-site: SameSite=Lax sends the cookie; the origin check refuses.
    assert_eq!(
        post(Some(b"https://bob.hubify.test"), None),
        Verdict::Refused(AuthResult::Origin)
    );
    assert!(matches!(
        post(Some(b"https://alice.hubify.test"), None),
        Verdict::Granted(_)
    ));
    assert!(matches!(post(None, None), Verdict::Granted(_)));
    // A bearer token is not an ambient credential: another origin may use it (CORS decides).
    let header = format!("Bearer {t}");
    assert!(matches!(
        post(Some(b"https://hubify.test"), Some(header.as_bytes())),
        Verdict::Granted(Grant {
            via: Via::Bearer,
            ..
        })
    ));
}

#[test]
fn canonical_paths_read_like_a_lenient_server() {
    for (raw, canon) in [
        ("/terminal/", "/terminal"),
        ("//terminal/", "/terminal"),
        ("/%74erminal/x", "/terminal/x"),
        ("/TERMINAL", "/terminal"),
        ("/x/../terminal/?a=1", "/terminal"),
        ("/terminal;a/b", "/terminal/b"),
        ("/.\\terminal", "/terminal"),
        ("/%2e%2e/terminal", "/terminal"),
        ("/%zz/..", "/"),
        ("/%", "/%"),
        ("", "/"),
    ] {
        assert_eq!(canonical_path(raw), canon, "{raw:?}");
    }
    assert!(!needs_canonical("/terminal/ws?A=%20"));
    for odd in ["//t", "/%74", "/T", "/a/./b", "/a;b", "/a\\b"] {
        assert!(needs_canonical(odd), "{odd}");
    }
}

#[test]
fn jwks_keys_must_be_signing_keys_of_the_right_size() {
    let p = Path::new("/x/jwks.json");
    let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    let key = |extra: &str, x: &str| {
        format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"k"{extra}}}]}}"#)
    };
    assert!(Keys::parse(p, key("", x).as_bytes()).is_ok());
    assert!(Keys::parse(p, key(r#","use":"sig","alg":"EdDSA""#, x).as_bytes()).is_ok());
    for (extra, x, why) in [
        (r#","use":"enc""#, x, "`use`"),
        (r#","alg":"ES256""#, x, "`alg`"),
        ("", "AAAA", "32-byte"),
    ] {
        let e = Keys::parse(p, key(extra, x).as_bytes())
            .err()
            .expect("refused");
        assert!(e.to_string().contains(why), "{e}");
    }
}

#[test]
fn the_lifetime_bound_is_exact_and_sub_must_be_a_clean_name() {
    let f = fixture();
    let now = now();
    let token = |iat: u64, exp: u64, sub: &str| {
        f.issuer
            .sign(&serde_json::json!({"aud": HOST, "sub": sub, "iat": iat, "exp": exp}))
    };
    assert!(f
        .auth
        .verify_token(&token(now, now + 600, "u"), HOST, now)
        .is_ok());
    assert_eq!(
        f.auth.verify_token(&token(now, now + 601, "u"), HOST, now),
        Err(AuthResult::Invalid)
    );
    for sub in ["", " alice", "alice ", "a\tb"] {
        assert_eq!(
            f.auth.verify_token(&token(now, now + 60, sub), HOST, now),
            Err(AuthResult::Invalid),
            "{sub:?}"
        );
    }
}
