//! The framework floor for `benches/load/run.sh bare`: a Pingora proxy with no logic at all —
//! every request forwarded as is to one upstream over pooled keep-alive connections, one worker
//! thread, the router's allocator. The router's plain-HTTP throughput cannot beat this; the gap
//! between the two is what the router's own phases cost.
//!
//!   cargo run --release -p hubify-edge-benches --example bare_pingora -- 127.0.0.1:8080 127.0.0.1:3000

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{http_proxy_service, ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_pingora LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse::<SocketAddr>() else {
        eprintln!("bare_pingora: {upstream:?} is not an address");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: 1,
        work_stealing: false, // as the router (router/src/app.rs)
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(&server.configuration, Bare { upstream });
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
