//! End-to-end test harness for hubify-edge.
//!
//! The router runs as a real child process (`hubify-edge run --config FILE`) on ephemeral loopback
//! ports; the upstreams it forwards to are small in-process servers (tokio tasks) on other
//! ephemeral ports; the tests talk to it as clients would: TLS with SNI and ALPN, HTTP/1.1, HTTP/2,
//! WebSockets, and raw bytes for malformed requests.
//!
//! Running: `cargo build --bins && cargo test -p hubify-edge-tests`. The router binary is
//! `$HUBIFY_EDGE_BIN` when set, else `<target dir>/debug/hubify-edge`; a missing binary is a test
//! failure, never a skip. `websocket::idle_websocket_stays_open_for_the_configured_idle_timeout`
//! takes 75 s on purpose.
//!
//! Modules:
//! - [`router`]: the config builder ([`EdgeConfig`]), the process guard ([`Router`]) and `check`;
//! - [`upstream`]: echo / slow / black-hole / WebSocket upstream servers;
//! - [`client`]: TLS connect (trusting a CA, or capturing whatever chain is presented), h1/h2/plain
//!   request helpers, raw requests, WebSocket clients;
//! - [`certs`]: a CA and leaf certificates made with rcgen, fingerprints, serial numbers.

pub mod certs;
pub mod client;
pub mod raw;
pub mod router;
pub mod upstream;

use std::net::TcpListener;
use std::time::Duration;

pub use client::{Req, Resp, Trust};
pub use router::{CheckOutput, EdgeConfig, PathRule, Router, TlsSource};
pub use upstream::Upstream;

/// The domain every test config uses.
pub const DOMAIN: &str = "hubify.test";

/// Upper bound for "answers rather than hangs": any single request or handshake the tests make.
pub const ANSWER_BOUND: Duration = Duration::from_secs(30);

/// A free TCP port on 127.0.0.1: bind port 0, read the port, drop the listener.
///
/// There is a small window in which another process could take the port; on a test machine that
/// is acceptable (the router would then fail to start, and the test says so with its logs).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for a free port");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// `alice.hubify.test` and friends.
pub fn host(label: &str) -> String {
    format!("{label}.{DOMAIN}")
}

/// A request id the router generated: 32 lowercase hex characters.
pub fn is_generated_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The usual setup: three echo upstreams (`gateway`, `dashboard`, `terminal` — the last one is the
/// ttyd stand-in and also speaks WebSocket) behind the standard path rules, and a router with an
/// https (self-signed) and an http listener.
pub struct Stack {
    pub gateway: Upstream,
    pub dashboard: Upstream,
    pub terminal: Upstream,
    pub cfg: EdgeConfig,
    pub router: Router,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(|c| c).await
    }

    /// Like [`Stack::start`], letting the test adjust the config (standard paths already set).
    pub async fn start_with(adjust: impl FnOnce(EdgeConfig) -> EdgeConfig) -> Stack {
        let gateway = Upstream::echo("gateway").await;
        let dashboard = Upstream::echo("dashboard").await;
        let terminal = Upstream::echo("terminal").await;
        let cfg =
            adjust(EdgeConfig::new().standard_paths(gateway.port, dashboard.port, terminal.port));
        let router = Router::start(&cfg).await;
        Stack {
            gateway,
            dashboard,
            terminal,
            cfg,
            router,
        }
    }

    pub fn https_port(&self) -> u16 {
        self.cfg.https_port()
    }

    pub fn http_port(&self) -> u16 {
        self.cfg.http_port()
    }
}
