//! The ACME pieces against real knotd + pebble: RFC 2136 updates signed with TSIG (append, delete,
//! wrong secret refused), then a full issuance with `renew_now` (no Redis: state dir only).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::SystemTime;

use hubify_edge_acme::dns::rfc2136::Rfc2136;
use hubify_edge_acme::dns::wire::{TsigAlgorithm, TsigKey};
use hubify_edge_acme::dns::DnsProvider;
use hubify_edge_acme::testenv::{AcmeEnv, Knot};
use hubify_edge_config::Config;
use rustls::client::danger::ServerCertVerifier;

fn key(knot: &Knot, secret_b64: &str) -> TsigKey {
    use base64::Engine;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret_b64)
        .unwrap();
    TsigKey::new(&knot.key_name, TsigAlgorithm::HmacSha256, &secret)
}

#[tokio::test]
async fn rfc2136_appends_deletes_and_refuses_a_wrong_secret() {
    let knot = Knot::start("hubify.test");
    let p = Rfc2136::new(knot.addr, "hubify.test.", key(&knot, &knot.secret));
    let name = "_acme-challenge.hubify.test";
    p.add_txt(name, "value-one").await.unwrap();
    p.add_txt(name, "value-two").await.unwrap();
    let mut seen = hubify_edge_acme::dns::query_txt(knot.addr, name)
        .await
        .unwrap();
    seen.sort();
    assert_eq!(
        seen,
        vec!["value-one", "value-two"],
        "both values kept (append, not replace)"
    );
    p.remove_txt(name, "value-one").await.unwrap();
    assert_eq!(knot.txt(name), vec!["value-two"]);
    p.remove_txt(name, "value-two").await.unwrap();
    assert!(knot.txt(name).is_empty());

    // The ACL allows TXT at _acme-challenge only.
    let e = p.add_txt("www.hubify.test", "nope").await.unwrap_err();
    assert!(
        e.to_string().contains("REFUSED") || e.to_string().contains("NOTAUTH"),
        "{e}"
    );

    // hmac-sha512 works too.
    use base64::Engine;
    let (name512, secret512) = &knot.sha512_key;
    let k512 = TsigKey::new(
        name512,
        TsigAlgorithm::HmacSha512,
        &base64::engine::general_purpose::STANDARD
            .decode(secret512)
            .unwrap(),
    );
    let p512 = Rfc2136::new(knot.addr, "hubify.test.", k512);
    p512.add_txt(name, "sha512").await.unwrap();
    assert_eq!(knot.txt(name), vec!["sha512"]);
    p512.remove_txt(name, "sha512").await.unwrap();
    assert!(knot.txt(name).is_empty());

    // A wrong secret: refused, and the error says what to check.
    let wrong = Rfc2136::new(
        knot.addr,
        "hubify.test.",
        key(&knot, "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA=="),
    );
    let e = wrong.add_txt(name, "bad").await.unwrap_err().to_string();
    assert!(
        e.contains("BADSIG") && e.contains("HUBIFY_EDGE_TSIG_SECRET"),
        "{e}"
    );
    assert!(knot.txt(name).is_empty());
}

#[tokio::test]
async fn issues_a_wildcard_certificate_through_dns01() {
    let env = AcmeEnv::start("hubify.test", 3600);
    let state = tempfile::tempdir().unwrap();
    let toml = format!(
        "paths = \"standard\"\ndomain = \"hubify.test\"\n[listeners.https]\naddress = \"127.0.0.1:0\"\n[routes]\nstore = \"static\"\n[tls]\nsource = \"acme\"\n{}",
        env.acme_toml(state.path(), "")
    );
    let config = Config::from_toml(&toml, "test.toml").unwrap();
    std::env::set_var("HUBIFY_EDGE_TSIG_SECRET", &env.knot.secret);

    let cert = hubify_edge_acme::renew_now(&config).await.unwrap();
    assert_eq!(cert.info.source, "acme");
    let mut names = cert.info.names.clone();
    names.sort();
    assert_eq!(names, vec!["*.hubify.test", "hubify.test"]);
    assert!(cert.info.not_after > SystemTime::now());

    // Chained to pebble's issuing root.
    let root_pem = env.pebble.issuing_root_pem();
    let root = rustls_pemfile::certs(&mut root_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let chain = &cert.key.cert;
    for host in ["alice.hubify.test", "hubify.test"] {
        verifier
            .verify_server_cert(
                &chain[0],
                &chain[1..],
                &rustls::pki_types::ServerName::try_from(host).unwrap(),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    assert!(verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &rustls::pki_types::ServerName::try_from("a.b.hubify.test").unwrap(),
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .is_err());

    // The ARI identifier (RFC 9773): base64url(AKI) "." base64url(serial DER).
    let id = hubify_edge_acme::issue::cert_identifier(chain[0].as_ref())
        .unwrap()
        .to_string();
    let (_, serial) = id.split_once('.').unwrap();
    use base64::Engine;
    let serial = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(serial)
        .unwrap();
    let hex: String = serial.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(hex, cert.info.serial);

    // TXT values cleaned up; key and account stored 0600.
    assert!(env.knot.txt("_acme-challenge.hubify.test").is_empty());
    use std::os::unix::fs::PermissionsExt;
    for f in ["privkey.pem", "account.json"] {
        let mode = std::fs::metadata(state.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let status = hubify_edge_acme::status(&config).await.unwrap();
    assert_eq!(status.cert.unwrap().info.serial, cert.info.serial);
    assert!(status.origin.starts_with("state dir"));
}

#[tokio::test]
async fn the_lock_is_extended_and_released_only_by_its_owner() {
    use hubify_edge_acme::store::{Keys, Shared};
    use std::time::Duration;
    let redis = hubify_edge_acme::testenv::Redis::start();
    let keys = Keys::new("t", "hubify.test");
    let mut a = Shared::new(
        &redis.url(),
        keys.clone(),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap();
    let mut b = Shared::new(
        &redis.url(),
        keys,
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap();
    let ttl = Duration::from_secs(30);
    assert!(a.try_lock("token-a", ttl).await.unwrap());
    assert!(!b.try_lock("token-b", ttl).await.unwrap(), "NX: one owner");
    assert!(b.lock_exists().await.unwrap());
    assert!(
        !b.extend_lock("token-b", ttl).await.unwrap(),
        "only the owner extends"
    );
    assert!(
        !b.release_lock("token-b").await.unwrap(),
        "only the owner releases"
    );
    assert!(a
        .extend_lock("token-a", Duration::from_secs(60))
        .await
        .unwrap());
    let pttl: i64 = hubify_edge_acme::testenv::redis_cmd(redis.port, "PTTL t:acme:lock")
        .unwrap()
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 30_000 && pttl <= 60_000, "extended: {pttl}");
    assert!(a.release_lock("token-a").await.unwrap());
    assert!(!a.lock_exists().await.unwrap());
    assert!(b.try_lock("token-b", ttl).await.unwrap(), "free again");
    // The TTL bounds a crashed owner.
    assert!(b.release_lock("token-b").await.unwrap());
    assert!(a
        .try_lock("short", Duration::from_millis(200))
        .await
        .unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.lock_exists().await.unwrap() {
        assert!(std::time::Instant::now() < deadline, "lock never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.try_lock("token-b", ttl).await.unwrap());
}

fn bundle(days: u64) -> hubify_edge_acme::store::Bundle {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["*.hubify.test".into(), "hubify.test".into()]).unwrap();
    let now = SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(days * 86_400)).into();
    let cert = params.self_signed(&key).unwrap();
    hubify_edge_acme::store::Bundle {
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issued_at: 1,
    }
}

#[tokio::test]
async fn put_back_only_replaces_an_older_certificate() {
    use hubify_edge_acme::store::{Keys, Shared};
    use std::time::Duration;
    let redis = hubify_edge_acme::testenv::Redis::start();
    let mut s = Shared::new(
        &redis.url(),
        Keys::new("t", "hubify.test"),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .unwrap();
    let (b10, b20) = (bundle(10), bundle(20));
    let (c10, c20) = (b10.load("b10").unwrap(), b20.load("b20").unwrap());
    assert!(
        s.put_bundle_if_newer(&b10, &c10).await.unwrap(),
        "empty: stored"
    );
    assert!(
        s.put_bundle_if_newer(&b20, &c20).await.unwrap(),
        "newer: stored"
    );
    assert!(
        !s.put_bundle_if_newer(&b10, &c10).await.unwrap(),
        "older: refused"
    );
    assert!(
        !s.put_bundle_if_newer(&b20, &c20).await.unwrap(),
        "same: nothing to do"
    );
    assert_eq!(
        s.get_bundle().await.unwrap().unwrap().chain_pem,
        b20.chain_pem
    );
}
