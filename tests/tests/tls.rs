//! The TLS listener: SNI, the self-signed wildcard certificate and its logged fingerprint, ALPN
//! (h2 and http/1.1), and hot reload of file certificates.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use hubify_edge_tests::certs::{self, Ca};
use hubify_edge_tests::client::{
    https_alpn, negotiated_alpn, peer_leaf, tls_connect, CapturedChain, ALPN_H1, ALPN_H2,
    ALPN_H2_H1,
};
use hubify_edge_tests::{host, EdgeConfig, PathRule, Req, Router, Stack, Trust, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_wildcard_cert_is_presented_and_its_fingerprint_is_logged() {
    let stack = Stack::start().await;
    let port = stack.https_port();

    let captured = CapturedChain::new();
    let tls = tls_connect(
        port,
        &host("alice"),
        ALPN_H2_H1,
        &Trust::Capture(captured.clone()),
    )
    .await
    .expect("TLS handshake with SNI alice.hubify.test");
    let chain = captured
        .chain()
        .expect("the server presented a certificate chain");
    let leaf = chain[0].clone();
    assert_eq!(
        peer_leaf(&tls).as_ref(),
        Some(&leaf),
        "captured leaf is the session's peer certificate"
    );
    let names = certs::dns_names(&leaf);
    for name in ["alice.hubify.test", "bob.hubify.test", "hubify.test"] {
        assert!(
            certs::valid_for_name(&leaf, name),
            "self-signed certificate is not valid for {name}; its DNS names: {names:?}"
        );
    }
    assert!(
        !certs::valid_for_name(&leaf, "evil.com"),
        "self-signed certificate claims evil.com; its DNS names: {names:?}"
    );
    assert!(
        certs::valid_now(&leaf),
        "self-signed certificate is outside its validity period"
    );

    // The fingerprint logged at start is the SHA-256 of the DER certificate, uppercase hex pairs
    // separated by ':'.
    let fp = certs::fingerprint(&leaf);
    let line = stack
        .router
        .wait_for_log("fingerprint=", Duration::from_secs(10))
        .await;
    assert!(
        line.contains(&format!("fingerprint={fp}")),
        "logged fingerprint does not match the presented certificate\n  presented: {fp}\n  log line:  {line}"
    );

    // The same certificate answers for the apex and for any other label.
    for sni in ["hubify.test", "bob.hubify.test", "nobody.hubify.test"] {
        let captured = CapturedChain::new();
        tls_connect(port, sni, ALPN_H2_H1, &Trust::Capture(captured.clone()))
            .await
            .unwrap_or_else(|e| panic!("TLS handshake with SNI {sni}: {e}"));
        let other = captured.chain().expect("chain presented");
        assert_eq!(
            certs::fingerprint(&other[0]),
            fp,
            "SNI {sni} got a different certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_negotiated_by_alpn_and_served() {
    let stack = Stack::start().await;
    let (resp, alpn) = https_alpn(
        stack.https_port(),
        &host("alice"),
        ALPN_H2_H1,
        &Req::get(&host("alice"), "/hello?x=1"),
    )
    .await;
    assert_eq!(
        alpn.as_deref(),
        Some("h2"),
        "server should pick h2 when offered"
    );
    assert_eq!(resp.version, Version::HTTP_2);
    let echo = resp.echo();
    assert_eq!(echo.service, "gateway");
    assert_eq!(echo.path, "/hello?x=1");
    assert_eq!(echo.header("host"), Some("alice.hubify.test"));

    // h2 alone is accepted too.
    let (resp, alpn) = https_alpn(
        stack.https_port(),
        &host("alice"),
        ALPN_H2,
        &Req::get(&host("alice"), "/only-h2"),
    )
    .await;
    assert_eq!(alpn.as_deref(), Some("h2"));
    assert_eq!(resp.echo().path, "/only-h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_is_negotiated_by_alpn_and_served() {
    let stack = Stack::start().await;
    let (resp, alpn) = https_alpn(
        stack.https_port(),
        &host("alice"),
        ALPN_H1,
        &Req::get(&host("alice"), "/hello"),
    )
    .await;
    assert_eq!(alpn.as_deref(), Some("http/1.1"));
    assert_eq!(resp.version, Version::HTTP_11);
    let echo = resp.echo();
    assert_eq!(echo.service, "gateway");
    assert_eq!(echo.path, "/hello");

    // A client that offers no ALPN at all gets HTTP/1.1.
    let (resp, alpn) = https_alpn(
        stack.https_port(),
        &host("alice"),
        &[],
        &Req::get(&host("alice"), "/no-alpn"),
    )
    .await;
    assert_eq!(alpn, None, "no ALPN offered, none may be selected");
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.summary());
    assert_eq!(resp.echo().path, "/no-alpn");
}

#[derive(Default)]
struct ProbeLog {
    /// Serial numbers of the leaf certificates, in handshake order.
    serials: Vec<Vec<u8>>,
    failures: Vec<String>,
}

/// Handshakes in a loop (each verified against the CA, SNI alice.hubify.test) until stopped.
fn spawn_prober(
    port: u16,
    trust: Trust,
    log: Arc<Mutex<ProbeLog>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let result = tls_connect(port, &host("alice"), ALPN_H1, &trust).await;
            {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(tls) => {
                        let leaf = peer_leaf(&tls).expect("verified handshake has a peer cert");
                        log.serials.push(certs::serial_bytes(&leaf));
                        assert_eq!(negotiated_alpn(&tls).as_deref(), Some("http/1.1"));
                    }
                    Err(e) => log
                        .failures
                        .push(hubify_edge_tests::client::error_chain(e.as_ref())),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

fn snapshot(log: &Arc<Mutex<ProbeLog>>) -> (Vec<Vec<u8>>, Vec<String>) {
    let g = log.lock().unwrap_or_else(|e| e.into_inner());
    (g.serials.clone(), g.failures.clone())
}

/// Wait (bounded) until a handshake after index `from` presents `serial`.
async fn wait_for_serial(
    log: &Arc<Mutex<ProbeLog>>,
    from: usize,
    serial: &[u8],
    bound: Duration,
) -> usize {
    let deadline = Instant::now() + bound;
    loop {
        let (serials, failures) = snapshot(log);
        assert!(
            failures.is_empty(),
            "handshakes failed during the certificate swap: {failures:?}"
        );
        if let Some(i) = serials.iter().skip(from).position(|s| s == serial) {
            return from + i;
        }
        assert!(
            Instant::now() < deadline,
            "serial {serial:02X?} not presented within {bound:?} after replacing the files \
             ({} handshakes; last serial {:02X?})",
            serials.len(),
            serials.last(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_certificates_reload_without_restart_or_failed_handshakes() {
    let names = ["*.hubify.test", "hubify.test"];
    let ca = Ca::new();
    let first = ca.leaf(&names, 0x1001);
    let second = ca.leaf(&names, 0x2002);
    let third = ca.leaf(&names, 0x3003);

    let dir = tempfile::tempdir().expect("tempdir for certificates");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &first.cert_pem).expect("write cert");
    std::fs::write(&key_path, &first.key_pem).expect("write key");

    let gateway = Upstream::echo("gateway").await;
    let cfg = EdgeConfig::new()
        .without_http()
        .tls_files(&cert_path, &key_path)
        .path(PathRule::new("/", gateway.port));
    let mut router = Router::start(&cfg).await;
    let port = cfg.https_port();
    let trust = Trust::Ca(vec![ca.der()]);

    // The first certificate serves, verified against the CA, and requests go through.
    let tls = tls_connect(port, &host("alice"), ALPN_H1, &trust)
        .await
        .expect("handshake verified against the test CA");
    let leaf = peer_leaf(&tls).expect("peer certificate");
    assert_eq!(certs::serial_bytes(&leaf), certs::serial_of(first.serial));
    let resp = hubify_edge_tests::client::h1_request(tls, &Req::get(&host("alice"), "/"))
        .await
        .expect("request over the file certificate");
    assert_eq!(resp.echo().service, "gateway");

    let log = Arc::new(Mutex::new(ProbeLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let prober = spawn_prober(port, trust.clone(), log.clone(), stop.clone());

    // Replace the pair (key first, then cert, each by rename): the router must pick up the new
    // leaf without a failed handshake, even though it may briefly see a mismatched pair.
    let before = snapshot(&log).0.len();
    certs::replace_file(&key_path, second.key_pem.as_bytes());
    certs::replace_file(&cert_path, second.cert_pem.as_bytes());
    let seen_at = wait_for_serial(
        &log,
        before,
        &certs::serial_of(second.serial),
        Duration::from_secs(20),
    )
    .await;
    let (serials, _) = snapshot(&log);
    assert!(
        serials[seen_at..]
            .iter()
            .all(|s| *s == certs::serial_of(second.serial)),
        "the old certificate came back after the new one was served: {serials:02X?}"
    );

    // Garbage in the key file: logged, and the last good certificate keeps serving.
    let key_mentions_before = router
        .logs()
        .lines()
        .filter(|l| l.contains(&key_path.display().to_string()))
        .count();
    certs::replace_file(&key_path, b"this is not a PEM private key\n");
    let garbage_from = snapshot(&log).0.len();
    let hold_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < hold_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (serials, failures) = snapshot(&log);
    assert!(
        failures.is_empty(),
        "handshakes failed after a garbage key file was written: {failures:?}"
    );
    assert!(
        serials.len() > garbage_from + 5,
        "too few handshakes completed while the key file was garbage ({} of {})",
        serials.len() - garbage_from,
        serials.len()
    );
    assert!(
        serials[garbage_from..]
            .iter()
            .all(|s| *s == certs::serial_of(second.serial)),
        "after a garbage key, the last good certificate must keep serving: {:02X?}",
        &serials[garbage_from..]
    );
    assert!(
        router.try_exit().is_none(),
        "router exited after a garbage key file"
    );
    let key_name = key_path.display().to_string();
    let mentions = router
        .logs()
        .lines()
        .filter(|l| l.contains(&key_name))
        .count();
    assert!(
        mentions > key_mentions_before,
        "the rejected key file {key_name} is not named in any new log line"
    );

    // A good pair again: the watcher still works.
    let before = snapshot(&log).0.len();
    certs::replace_file(&cert_path, third.cert_pem.as_bytes());
    certs::replace_file(&key_path, third.key_pem.as_bytes());
    wait_for_serial(
        &log,
        before,
        &certs::serial_of(third.serial),
        Duration::from_secs(20),
    )
    .await;

    stop.store(true, Ordering::SeqCst);
    prober.await.expect("prober task");
    let (serials, failures) = snapshot(&log);
    assert!(
        failures.is_empty(),
        "failed handshakes during reloads: {failures:?}"
    );
    assert!(!serials.is_empty());
}

/// The server's suite order wins: a client listing AES-256-GCM-SHA384 first (as OpenSSL does)
/// gets AES-128-GCM-SHA256 when it offers it too, in TLS 1.3 and in TLS 1.2; a client offering
/// only AES-256 still gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_prefers_sha256_suites_over_the_client_order() {
    use rustls::crypto::ring::cipher_suite as cs;
    use rustls::SupportedCipherSuite;
    let stack = Stack::start().await;
    let cases: [(
        &[SupportedCipherSuite],
        &rustls::SupportedProtocolVersion,
        SupportedCipherSuite,
    ); 3] = [
        (
            &[cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_AES_128_GCM_SHA256],
            &rustls::version::TLS13,
            cs::TLS13_AES_128_GCM_SHA256,
        ),
        (
            &[
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            &rustls::version::TLS12,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            &[cs::TLS13_AES_256_GCM_SHA384],
            &rustls::version::TLS13,
            cs::TLS13_AES_256_GCM_SHA384,
        ),
    ];
    for (offered, version, want) in cases {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: offered.to_vec(),
            ..rustls::crypto::ring::default_provider()
        };
        let cfg = hubify_edge_tests::client::client_config_with(
            Arc::new(provider),
            &[version],
            &Trust::any(),
            ALPN_H1,
        );
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.https_port()))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from(host("alice")).unwrap();
        let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .expect("handshake within 10 s")
            .unwrap_or_else(|e| panic!("handshake offering {offered:?}: {e}"));
        let got = tls.get_ref().1.negotiated_cipher_suite();
        assert_eq!(
            got.map(|s| s.suite()),
            Some(want.suite()),
            "offered {offered:?} in this order"
        );
    }
}
