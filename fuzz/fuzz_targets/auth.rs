//! The access check over hostile credentials: the request target (`hubify_token`),
//! `Authorization`, `Cookie` and `Origin` bytes, plus the session-cookie opener and the JWKS
//! parser on their own. Nothing here can hold a valid signature, so every verdict must be a
//! refusal; the rewritten target and cookie must never keep the router's credentials.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use hubify_edge::auth::testkit::{jwks, Issuer};
use hubify_edge::auth::{
    bearer, query_token, session_cookie, without_session_cookie, Auth, Credentials, Keys,
    Request, SessionKeys, Verdict, SESSION_COOKIE,
};
use libfuzzer_sys::fuzz_target;

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let issuer = Issuer::ed25519("k1");
        let keys = Keys::parse(Path::new("fuzz"), jwks(&[&issuer]).as_bytes()).expect("keys");
        let config = hubify_edge_config::Auth {
            jwks: "fuzz".into(),
            max_token_lifetime: Duration::from_secs(600),
            session_ttl: Duration::from_secs(3600),
            login_url: Some("https://hubify.test/login".into()),
            leeway: Duration::from_secs(30),
        };
        let sessions = SessionKeys::from_list("fuzz-session-key-0123456789abcdef0123").expect("key");
        Auth::with_keys(config, keys, sessions)
    })
}

fuzz_target!(|data: &[u8]| {
    // Four fields separated by 0xff (never in UTF-8 text).
    let mut parts = data.split(|&b| b == 0xff);
    let target = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let authorization = parts.next();
    let cookie = parts.next();
    let origin = parts.next();

    if let Some((_, rest)) = query_token(&target) {
        if let Some((_, q)) = rest.split_once('?') {
            assert!(q.split('&').all(|p| p.split('=').next() != Some("hubify_token")), "{rest}");
        }
    }
    if let Some(a) = authorization {
        let _ = bearer(a);
    }
    if let Some(c) = cookie {
        let _ = session_cookie(c);
        if let Some(rest) = without_session_cookie(c) {
            assert!(session_cookie(&rest).is_none());
            assert!(!rest.windows(SESSION_COOKIE.len() + 1).any(|w| w.starts_with(SESSION_COOKIE.as_bytes()) && w[SESSION_COOKIE.len()] == b'='));
        }
    }
    let _ = Keys::parse(Path::new("fuzz"), data);

    let a = auth();
    for upgrade in [false, true] {
        let r = Request {
            host: "alice.hubify.test",
            authority: "alice.hubify.test",
            scheme: "https",
            path_and_query: &target,
            credentials: Credentials {
                authorization,
                cookie,
                origin,
            },
            upgrade,
            unsafe_method: upgrade,
            scope: "terminal",
            epoch: 0,
        };
        let v = a.check(&r, hubify_edge::auth::now());
        assert!(matches!(v, Verdict::Refused(_)), "forged credentials accepted: {v:?}");
        let _ = a.login_link("https", "alice.hubify.test", &target);
    }
});
