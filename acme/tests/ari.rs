//! ACME Renewal Information (RFC 9773). Debian's pebble 2.4 does not advertise `renewalInfo`, so
//! this test puts a small HTTPS proxy in front of the real pebble that adds it: the directory
//! gains a `renewalInfo` URL, `GET /renewal-info/<cert-id>` answers a window in the past for the
//! first certificate (the CA asks for early renewal) and a window a day ahead for any other;
//! everything else is forwarded to pebble unchanged. With a one-hour validity, only ARI can make
//! the manager renew within the test: it must renew once, with `replaces` naming the first
//! certificate, and then stop.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hubify_edge_acme::testenv::AcmeEnv;
use hubify_edge_acme::CertResolver;
use hubify_edge_config::Config;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Default)]
struct Seen {
    /// Certificate ids asked about, in order.
    renewal_info: Vec<String>,
    /// The `replaces` field of each new-order request (`None`: absent).
    orders: Vec<Option<String>>,
}

/// RFC 3339 UTC from a SystemTime (civil-from-days, Howard Hinnant's algorithm).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn payload_json(body: &[u8]) -> Option<serde_json::Value> {
    use base64::Engine;
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let p = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws.get("payload")?.as_str()?)
        .ok()?;
    serde_json::from_slice(&p).ok()
}

async fn handle(
    req: hyper::Request<Incoming>,
    upstream: SocketAddr,
    client: Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    seen: Arc<Mutex<Seen>>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = req.uri().path().to_string();
    if let Some(id) = path.strip_prefix("/renewal-info/") {
        let id = id.to_string();
        let mut s = seen.lock().unwrap();
        s.renewal_info.push(id.clone());
        let first = s.renewal_info[0].clone();
        let now = SystemTime::now();
        let (start, end) = if id == first {
            (
                now - Duration::from_secs(120),
                now - Duration::from_secs(60),
            )
        } else {
            (
                now + Duration::from_secs(86_400),
                now + Duration::from_secs(90_000),
            )
        };
        let body = serde_json::json!({
            "suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}
        });
        return Ok(hyper::Response::builder()
            .header("content-type", "application/json")
            .header("retry-after", "1")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap());
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let mut replaces = None;
    if path.contains("order-plz") {
        replaces = payload_json(&body).and_then(|p| {
            p.get("replaces")
                .and_then(|r| r.as_str())
                .map(str::to_string)
        });
        seen.lock().unwrap().orders.push(replaces.clone());
    }
    let uri = format!(
        "https://{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut fwd = hyper::Request::builder().method(parts.method).uri(uri);
    for (k, v) in &parts.headers {
        fwd = fwd.header(k, v);
    }
    let rsp = client
        .request(fwd.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (rparts, rbody) = rsp.into_parts();
    let mut rbody = rbody.collect().await.unwrap().to_bytes();
    if path == "/dir" {
        let mut dir: serde_json::Value = serde_json::from_slice(&rbody).unwrap();
        dir["renewalInfo"] = serde_json::json!(format!("https://{host}/renewal-info"));
        rbody = Bytes::from(dir.to_string());
    }
    if let Some(r) = replaces {
        // An ARI-capable CA reflects `replaces` in the new order (RFC 9773 §5).
        let mut order: serde_json::Value = serde_json::from_slice(&rbody).unwrap();
        order["replaces"] = serde_json::json!(r);
        rbody = Bytes::from(order.to_string());
    }
    let mut out = hyper::Response::builder().status(rparts.status);
    for (k, v) in &rparts.headers {
        if k != http::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    Ok(out.body(Full::new(rbody)).unwrap())
}

#[test]
fn ari_window_in_the_past_renews_early_with_replaces() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("hubify_edge_acme=debug")
        .with_test_writer()
        .try_init();
    let env = AcmeEnv::start("hubify.test", 3600);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    // The proxy's own TLS: a CA (given to the router as acme.ca_bundle) and a 127.0.0.1 leaf.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
    let bundle = dir.path().join("proxy-ca.pem");
    std::fs::write(&bundle, ca.pem()).unwrap();
    let server_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from(leaf.der().to_vec())],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));

    let upstream: SocketAddr = env
        .pebble
        .directory
        .trim_start_matches("https://")
        .trim_end_matches("/dir")
        .parse()
        .unwrap();
    let client_tls = hubify_edge_acme::http::tls_config(Some(&env.pebble.api_ca_pem)).unwrap();
    // HTTP/1.1 to pebble, so the client's Host header reaches it (pebble builds its URLs from
    // it: they must name the proxy). Over HTTP/2 the URI's authority would win.
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let proxy = listener.local_addr().unwrap();
    let seen2 = seen.clone();
    rt.spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, client, seen) = (acceptor.clone(), client.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(sock).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    handle(req, upstream, client.clone(), seen.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });

    let probe = hubify_edge_acme::testenv::https_get(proxy, "/dir", ca.der());
    assert!(matches!(probe, Ok((200, _))), "proxy /dir: {probe:?}");
    let acme = env
        .acme_toml(&dir.path().join("state"), "check_interval = \"1s\"")
        .replace(&env.pebble.directory, &format!("https://{proxy}/dir"))
        .replace(
            &env.pebble.api_ca_pem.display().to_string(),
            &bundle.display().to_string(),
        );
    let toml = format!(
        "paths = \"standard\"\ndomain = \"hubify.test\"\n[listeners.https]\naddress = \"127.0.0.1:0\"\n[routes]\nstore = \"static\"\n[tls]\nsource = \"acme\"\n{acme}"
    );
    let config = Config::from_toml(&toml, "ari.toml").unwrap();
    std::env::set_var("HUBIFY_EDGE_TSIG_SECRET", &env.knot.secret);
    let resolver = Arc::new(CertResolver::new());
    hubify_edge_acme::start(&config, resolver.clone()).unwrap();

    // First issuance, then an ARI-driven renewal, then ARI asked about the new certificate.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut serials: Vec<String> = Vec::new();
    loop {
        if let Some(info) = resolver.infos().first() {
            if serials.last() != Some(&info.serial) {
                serials.push(info.serial.clone());
            }
        }
        let asked_twice = {
            let s = seen.lock().unwrap();
            s.renewal_info.iter().any(|id| *id != s.renewal_info[0])
        };
        if serials.len() >= 2 && asked_twice {
            break;
        }
        if Instant::now() > deadline {
            let s = seen.lock().unwrap();
            panic!(
                "no ARI renewal: serials {serials:?}, renewal-info {:?}, orders {:?}",
                s.renewal_info, s.orders
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = seen.lock().unwrap();
    assert_eq!(serials.len(), 2, "{serials:?}");
    assert_eq!(
        s.orders.len(),
        2,
        "one first order, one ARI renewal: {:?}",
        s.orders
    );
    assert_eq!(s.orders[0], None, "the first order replaces nothing");
    assert_eq!(
        s.orders[1].as_deref(),
        Some(s.renewal_info[0].as_str()),
        "the renewal names the certificate it replaces"
    );
    let snap = hubify_edge_acme::metrics::RENEWALS.snapshot();
    assert_eq!(snap.orders, 2);
    assert!(snap.next_renewal > 0 && snap.cert_not_after > 0);
}
