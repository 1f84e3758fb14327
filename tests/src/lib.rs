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
pub mod ops;
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

/// A free TCP port on 127.0.0.1 for a listener the test starts later (the router's, mostly).
///
/// The port comes from below Linux's ephemeral range (32768–60999): a port taken from that range
/// and released could be handed to another test's `bind(0)` listener or outgoing connection before
/// the router binds it, and the test would then talk to a stranger. Below the range only other
/// `free_port` callers compete: within a process a counter keeps them apart, and each process
/// starts at an offset of its own; the bind check skips ports some other process holds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = u16::try_from(LOW + n).expect("port below 32768");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{LOW}..{}", LOW + SPAN);
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
