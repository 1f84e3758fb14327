//! Clients: TLS connect with SNI and ALPN, HTTP/1.1 and HTTP/2 requests (hyper client
//! connections), plain HTTP, raw bytes, WebSockets.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;

use crate::ANSWER_BOUND;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// An error with its chain of sources, `outer: inner: innermost`.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The ALPN lists the tests offer.
pub const ALPN_H2_H1: &[&str] = &["h2", "http/1.1"];
pub const ALPN_H1: &[&str] = &["http/1.1"];
pub const ALPN_H2: &[&str] = &["h2"];

// ---------------------------------------------------------------------------------------------
// TLS

/// The chain a server presented, as captured by [`Trust::Capture`].
#[derive(Debug, Default)]
pub struct CapturedChain(Mutex<Option<Vec<CertificateDer<'static>>>>);

impl CapturedChain {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// End entity first, then intermediates, as presented (None before a handshake).
    pub fn chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How the client checks the server's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Full WebPKI verification (chain and name) against these CA certificates.
    Ca(Vec<CertificateDer<'static>>),
    /// Accept whatever chain is presented and record it; the handshake signature is still
    /// verified against the presented key.
    Capture(Arc<CapturedChain>),
}

impl Trust {
    /// Accept any certificate (capturing it somewhere nobody looks).
    pub fn any() -> Trust {
        Trust::Capture(CapturedChain::new())
    }

    /// Trust the CA certificates in a PEM text.
    pub fn ca_pem(pem: &str) -> Trust {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("CA PEM parses");
        assert!(!certs.is_empty(), "CA PEM holds no certificate");
        Trust::Ca(certs)
    }
}

#[derive(Debug)]
struct CaptureVerifier {
    captured: Arc<CapturedChain>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CaptureVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.captured.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(chain);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The ring provider, explicitly (never the process default).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client config for `trust` offering `alpn`.
pub fn client_config(trust: &Trust, alpn: &[&str]) -> ClientConfig {
    client_config_with(provider(), rustls::DEFAULT_VERSIONS, trust, alpn)
}

/// [`client_config`] with its own crypto provider (the cipher suites it offers, in order) and
/// protocol versions.
pub fn client_config_with(
    provider: Arc<CryptoProvider>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    trust: &Trust,
    alpn: &[&str],
) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("the provider supports the protocol versions");
    let mut cfg = match trust {
        Trust::Ca(cas) => {
            let mut roots = RootCertStore::empty();
            for ca in cas {
                roots.add(ca.clone()).expect("CA certificate is acceptable");
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Capture(captured) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CaptureVerifier {
                captured: captured.clone(),
                provider,
            }))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    cfg
}

/// TCP connect to 127.0.0.1:`port`, then a TLS handshake with SNI `sni` offering `alpn`.
pub async fn tls_connect(
    port: u16,
    sni: &str,
    alpn: &[&str],
    trust: &Trust,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let connector = TlsConnector::from(Arc::new(client_config(trust, alpn)));
    let name = ServerName::try_from(sni.to_owned())?;
    let fut = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let tls = connector.connect(name, tcp).await?;
        Ok::<_, BoxError>(tls)
    };
    match tokio::time::timeout(ANSWER_BOUND, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("TLS handshake with 127.0.0.1:{port} (SNI {sni}) timed out").into()),
    }
}

/// The ALPN protocol the server chose, if any.
pub fn negotiated_alpn(stream: &TlsStream<TcpStream>) -> Option<String> {
    stream
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// The end-entity certificate the server presented.
pub fn peer_leaf(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
}

// ---------------------------------------------------------------------------------------------
// HTTP requests

/// A request to send. `host` goes into the Host header (HTTP/1.1) or `:authority` (HTTP/2).
#[derive(Clone, Debug)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Req {
    pub fn get(host: &str, path: &str) -> Req {
        Req {
            method: Method::GET,
            path: path.to_owned(),
            host: Some(host.to_owned()),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn method(mut self, m: Method) -> Req {
        self.method = m;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn accept_json(self) -> Req {
        self.header("accept", "application/json")
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Req {
        self.body = body.into();
        self
    }
}

/// A response, body fully read.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The JSON body of an echo upstream.
#[derive(Clone, Debug)]
pub struct Echo {
    pub service: String,
    pub method: String,
    /// Path and query as the upstream received them.
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub duplicate_headers: Vec<String>,
    pub version: String,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the response when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.summary()))
    }

    /// The `x-request-id` header (panics when missing).
    pub fn request_id(&self) -> String {
        self.header("x-request-id")
            .unwrap_or_else(|| panic!("response has no x-request-id: {}", self.summary()))
    }

    /// The body of an echo upstream (panics when the response is not one).
    pub fn echo(&self) -> Echo {
        let fail = |why: &str| -> ! {
            panic!("expected an upstream echo ({why}), got: {}", self.summary())
        };
        if self.status != StatusCode::OK {
            fail("status is not 200");
        }
        let v: serde_json::Value =
            serde_json::from_slice(&self.body).unwrap_or_else(|_| fail("not JSON"));
        let s = |k: &str| -> String {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| fail(&format!("no string field {k:?}")))
        };
        let headers = v
            .get("headers")
            .and_then(|h| h.as_object())
            .unwrap_or_else(|| fail("no headers object"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let duplicate_headers = v
            .get("duplicate_headers")
            .and_then(|d| d.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Echo {
            service: s("service"),
            method: s("method"),
            path: s("path"),
            headers,
            duplicate_headers,
            version: s("version"),
        }
    }

    /// Status, headers and (the start of) the body, for assertion messages.
    pub fn summary(&self) -> String {
        let mut out = format!("{:?} {}\n", self.version, self.status);
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        let body = self.text();
        let cut: String = body.chars().take(2000).collect();
        out.push('\n');
        out.push_str(&cut);
        out
    }
}

fn build_request(req: &Req, absolute: Option<&str>) -> Result<Request<Full<Bytes>>, BoxError> {
    let uri = match absolute {
        Some(authority) => format!("https://{authority}{}", req.path),
        None => req.path.clone(),
    };
    let mut b = Request::builder().method(req.method.clone()).uri(uri);
    if absolute.is_none() {
        if let Some(h) = &req.host {
            b = b.header("host", h.as_str());
        }
    }
    for (n, v) in &req.headers {
        b = b.header(n.as_str(), v.as_str());
    }
    Ok(b.body(Full::new(req.body.clone()))?)
}

async fn read_response(resp: http::Response<hyper::body::Incoming>) -> Result<Resp, BoxError> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Resp {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

/// One HTTP/1.1 request over `io` (origin-form target, Host header from `req.host`).
pub async fn h1_request<S>(io: S, req: &Req) -> Result<Resp, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(build_request(req, None)?).await?;
    read_response(resp).await
}

/// One HTTP/2 request over `io` (`:authority` from `req.host`).
pub async fn h2_request<S>(io: S, req: &Req) -> Result<Resp, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let authority = req
        .host
        .clone()
        .ok_or("an HTTP/2 request needs a host for :authority")?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(build_request(req, Some(&authority))?)
        .await?;
    read_response(resp).await
}

/// An HTTP/2 connection over TLS (ALPN `h2` only, any certificate) for several requests, in
/// turn or at once (the sender is cloned per request).
#[derive(Clone)]
pub struct H2Conn {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: String,
}

impl H2Conn {
    /// Connects to 127.0.0.1:`port` with SNI and `:authority` `host`.
    pub async fn open(port: u16, host: &str) -> Result<H2Conn, BoxError> {
        let tls = tls_connect(port, host, ALPN_H2, &Trust::any()).await?;
        if negotiated_alpn(&tls).as_deref() != Some("h2") {
            return Err("the server did not choose h2".into());
        }
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Conn {
            sender,
            authority: host.to_owned(),
        })
    }

    /// One request on this connection (its `host` ignored: `:authority` is the connection's),
    /// body read in full, within the answer bound.
    pub async fn request(&self, req: &Req) -> Result<Resp, BoxError> {
        let mut sender = self.sender.clone();
        let fut = async {
            sender.ready().await?;
            let resp = sender
                .send_request(build_request(req, Some(&self.authority))?)
                .await?;
            read_response(resp).await
        };
        match tokio::time::timeout(ANSWER_BOUND, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer to {} {} within {ANSWER_BOUND:?}",
                req.method, req.path
            )
            .into()),
        }
    }
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = Result<T, BoxError>>) -> T {
    match tokio::time::timeout(ANSWER_BOUND, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {}", error_chain(e.as_ref())),
        Err(_) => panic!("{what}: no answer within {ANSWER_BOUND:?}"),
    }
}

/// A request over TLS (SNI `sni`, ALPN `alpn`, any certificate accepted): HTTP/2 if the server
/// chose `h2`, else HTTP/1.1. Returns the response and the negotiated ALPN.
pub async fn try_https_alpn(
    port: u16,
    sni: &str,
    alpn: &[&str],
    req: &Req,
) -> Result<(Resp, Option<String>), BoxError> {
    let fut = async {
        let tls = tls_connect(port, sni, alpn, &Trust::any()).await?;
        let proto = negotiated_alpn(&tls);
        let resp = if proto.as_deref() == Some("h2") {
            h2_request(tls, req).await?
        } else {
            h1_request(tls, req).await?
        };
        Ok::<_, BoxError>((resp, proto))
    };
    match tokio::time::timeout(ANSWER_BOUND, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {ANSWER_BOUND:?}").into()),
    }
}

/// [`try_https_alpn`], panicking on failure.
pub async fn https_alpn(port: u16, sni: &str, alpn: &[&str], req: &Req) -> (Resp, Option<String>) {
    bounded(
        &format!(
            "{} https://{sni}:{port}{} (ALPN {alpn:?})",
            req.method, req.path
        ),
        try_https_alpn(port, sni, alpn, req),
    )
    .await
}

/// A request over TLS offering HTTP/1.1 only.
pub async fn https_h1(port: u16, sni: &str, req: &Req) -> Resp {
    https_alpn(port, sni, ALPN_H1, req).await.0
}

/// A request over TLS offering h2 and HTTP/1.1 (the server picks).
pub async fn https(port: u16, sni: &str, req: &Req) -> Resp {
    https_alpn(port, sni, ALPN_H2_H1, req).await.0
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port`.
pub async fn try_http(port: u16, req: &Req) -> Result<Resp, BoxError> {
    let fut = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        h1_request(tcp, req).await
    };
    match tokio::time::timeout(ANSWER_BOUND, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {ANSWER_BOUND:?}").into()),
    }
}

/// [`try_http`], panicking on failure.
pub async fn http(port: u16, req: &Req) -> Resp {
    bounded(
        &format!(
            "{} http://127.0.0.1:{port}{} (Host {:?})",
            req.method, req.path, req.host
        ),
        try_http(port, req),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Raw requests

/// A response read from raw bytes.
#[derive(Clone, Debug)]
pub struct RawResp {
    pub status: u16,
    /// Status line and headers as text.
    pub head: String,
    /// Lower-cased header names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn raw_exchange<S>(mut io: S, bytes: &[u8]) -> Result<RawResp, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(bytes).await?;
    io.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(format!(
                "connection closed before a complete response head; got {:?}",
                String::from_utf8_lossy(&buf)
            )
            .into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let content_length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    loop {
        let done = match content_length {
            Some(len) => body.len() >= len,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(RawResp {
        status,
        head,
        headers,
        body,
    })
}

/// Send `bytes` as they are over plain TCP and read one response.
pub async fn raw_http(port: u16, bytes: &[u8]) -> Result<RawResp, BoxError> {
    let fut = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        raw_exchange(tcp, bytes).await
    };
    match tokio::time::timeout(ANSWER_BOUND, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {ANSWER_BOUND:?}").into()),
    }
}

/// Send `bytes` as they are over TLS (SNI `sni`, ALPN http/1.1) and read one response.
pub async fn raw_https(port: u16, sni: &str, bytes: &[u8]) -> Result<RawResp, BoxError> {
    let fut = async {
        let tls = tls_connect(port, sni, ALPN_H1, &Trust::any()).await?;
        raw_exchange(tls, bytes).await
    };
    match tokio::time::timeout(ANSWER_BOUND, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {ANSWER_BOUND:?}").into()),
    }
}

// ---------------------------------------------------------------------------------------------
// WebSockets

pub type WsTls = WebSocketStream<TlsStream<TcpStream>>;
pub type WsPlain = WebSocketStream<TcpStream>;

fn ws_request(scheme: &str, host: &str, path: &str) -> Result<http::Request<()>, BoxError> {
    let mut req = format!("{scheme}://{host}{path}").into_client_request()?;
    // Keep the Host header exactly `host` (the URI form may have normalised it).
    req.headers_mut().insert("host", host.parse()?);
    Ok(req)
}

/// A WebSocket over TLS (SNI `sni`, ALPN http/1.1) to `host` `path`.
pub async fn ws_connect_tls(
    port: u16,
    sni: &str,
    host: &str,
    path: &str,
) -> Result<(WsTls, http::Response<Option<Vec<u8>>>), BoxError> {
    ws_connect_tls_with(port, sni, host, path, &[]).await
}

/// [`ws_connect_tls`] with extra handshake headers (`Origin`, `Cookie`, `Authorization`).
pub async fn ws_connect_tls_with(
    port: u16,
    sni: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(WsTls, http::Response<Option<Vec<u8>>>), BoxError> {
    let fut = async {
        let tls = tls_connect(port, sni, ALPN_H1, &Trust::any()).await?;
        let mut req = ws_request("wss", host, path)?;
        for (name, value) in headers {
            req.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes())?,
                http::HeaderValue::from_str(value)?,
            );
        }
        let (ws, resp) = tokio_tungstenite::client_async(req, tls).await?;
        Ok::<_, BoxError>((ws, resp))
    };
    match tokio::time::timeout(ANSWER_BOUND, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("WebSocket handshake: no answer within {ANSWER_BOUND:?}").into()),
    }
}

/// A WebSocket over plain TCP to `host` `path`.
pub async fn ws_connect_plain(
    port: u16,
    host: &str,
    path: &str,
) -> Result<(WsPlain, http::Response<Option<Vec<u8>>>), BoxError> {
    let fut = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let (ws, resp) =
            tokio_tungstenite::client_async(ws_request("ws", host, path)?, tcp).await?;
        Ok::<_, BoxError>((ws, resp))
    };
    match tokio::time::timeout(ANSWER_BOUND, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("WebSocket handshake: no answer within {ANSWER_BOUND:?}").into()),
    }
}

/// Send `msg` and wait (bounded) for the next text/binary frame back.
pub async fn ws_roundtrip<S>(
    ws: &mut WebSocketStream<S>,
    msg: tokio_tungstenite::tungstenite::Message,
    bound: Duration,
) -> Result<tokio_tungstenite::tungstenite::Message, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(msg).await?;
    let fut = async {
        loop {
            match ws.next().await {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("closed by the peer: {frame:?}").into())
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Err("stream ended".into()),
            }
        }
    };
    match tokio::time::timeout(bound, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no echo within {bound:?}").into()),
    }
}

/// The next message other than ping/pong, bounded (panics with `tag` when none comes in
/// `bound`); `Err` when the stream fails or ends first.
pub async fn ws_next_message<S>(
    ws: &mut WebSocketStream<S>,
    bound: Duration,
    tag: &str,
) -> Result<tokio_tungstenite::tungstenite::Message, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let fut = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => return Ok(m),
                Some(Err(e)) => return Err(format!("error: {e}")),
                None => return Err("end of stream".to_owned()),
            }
        }
    };
    tokio::time::timeout(bound, fut)
        .await
        .unwrap_or_else(|_| panic!("{tag}: no message within {bound:?}"))
}

/// Reads (so that tungstenite sends any close reply it owes) until the stream ends, bounded;
/// panics on data after the close handshake.
pub async fn ws_read_until_closed<S>(ws: &mut WebSocketStream<S>, bound: Duration, tag: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let fut = async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Text(_) | Message::Binary(_)) {
                panic!("{tag}: data after the close handshake: {m:?}");
            }
        }
    };
    tokio::time::timeout(bound, fut)
        .await
        .unwrap_or_else(|_| panic!("{tag}: the WebSocket was not closed within {bound:?}"));
}
