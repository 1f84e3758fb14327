//! Question: what does the access check of a protected path cost — on every request with the
//! session cookie (the common case: HMAC-SHA256 over ~150 bytes, base64 and a small JSON), and on
//! a first visit or an API client's request with a token (an Ed25519 or ES256 signature check)?
//! The bound for the session check is 2 µs.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hubify_edge::auth::testkit::{jwks, Issuer};
use hubify_edge::auth::{now, Auth, Credentials, Keys, Request, Session, SessionKeys, Verdict};

const HOST: &str = "alice.hubify.com";

fn auth(issuers: &[&Issuer]) -> Auth {
    let keys = Keys::parse(Path::new("bench"), jwks(issuers).as_bytes()).expect("keys");
    let config = hubify_edge_config::Auth {
        jwks: "bench".into(),
        max_token_lifetime: Duration::from_secs(600),
        session_ttl: Duration::from_secs(43200),
        login_url: None,
        leeway: Duration::from_secs(30),
    };
    let sessions =
        SessionKeys::from_list("bench-session-key-0123456789abcdef0123456789").expect("a key");
    Auth::with_keys(config, keys, sessions)
}

fn check(a: &Auth, creds: Credentials<'_>) -> bool {
    let r = Request {
        host: HOST,
        authority: HOST,
        scheme: "https",
        path_and_query: "/terminal/",
        credentials: creds,
        upgrade: false,
        unsafe_method: false,
        scope: "terminal",
        epoch: 0,
    };
    matches!(a.check(black_box(&r), now()), Verdict::Granted(_))
}

fn bench(c: &mut Criterion) {
    let ed = Issuer::ed25519("ed");
    let ec = Issuer::es256("ec");
    let a = auth(&[&ed, &ec]);
    let session = a.seal(&Session {
        host: HOST.into(),
        user: "user-00000042".into(),
        scopes: "terminal dashboard".into(),
        expires: now() + 43200,
        epoch: 0,
    });
    // A browser's usual cookie header: a few of the app's cookies around the session.
    let cookie = format!("theme=dark; lang=en; __Host-hubify_session={session}; _ga=GA1.2.3.4");
    let creds = Credentials {
        cookie: Some(cookie.as_bytes()),
        ..Credentials::default()
    };
    assert!(check(&a, creds), "the session authorizes");
    c.bench_function("auth/session_cookie", |b| b.iter(|| check(&a, creds)));

    for (name, issuer) in [("auth/bearer_eddsa", &ed), ("auth/bearer_es256", &ec)] {
        let header = format!(
            "Bearer {}",
            issuer.token(HOST, "user-00000042", "terminal", 300)
        );
        let creds = Credentials {
            authorization: Some(header.as_bytes()),
            ..Credentials::default()
        };
        assert!(check(&a, creds), "{name}: the token authorizes");
        c.bench_function(name, |b| b.iter(|| check(&a, creds)));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
