//! The dispatcher: every accepted connection of a listener comes here and goes to one HTTP
//! engine by ALPN — HTTP/2 to the stream loop (`http2.rs`), everything else to the HTTP/1 loop
//! (`h1.rs`). Both loops read and judge every request themselves and give what their own code
//! does not serve (with `server.fast_path = false`, everything) to Pingora's proxy (`proxy.rs`)
//! one request or stream at a time. Nothing else imports an engine.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;

use crate::front::{Front, FrontSlot};
use crate::proxy::EdgeProxy;

/// How long one write to the client may block (nginx's `send_timeout`).
pub(crate) const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A listener's application: the router's own HTTP/1 and HTTP/2 loops, with Pingora's proxy
/// for what they hand over.
pub struct EdgeApp {
    front: Arc<FrontSlot>,
    pingora: Arc<HttpProxy<EdgeProxy>>,
    fast: bool,
}

impl EdgeApp {
    /// `fast`: whether HTTP/1.1 requests and HTTP/2 streams are served by the router's own code
    /// when they can be (`server.fast_path`).
    pub fn new(front: Arc<FrontSlot>, pingora: HttpProxy<EdgeProxy>, fast: bool) -> EdgeApp {
        EdgeApp {
            front,
            pingora: Arc::new(pingora),
            fast,
        }
    }

    /// The listener's current [`Front`] (a reload may replace it between requests).
    pub(crate) fn front(&self) -> Arc<Front> {
        self.front.load_full()
    }

    /// Pingora's proxy, for what the router's own paths do not take.
    pub(crate) fn pingora(&self) -> &Arc<HttpProxy<EdgeProxy>> {
        &self.pingora
    }

    /// Whether the router's own code serves what it can (`server.fast_path`).
    pub(crate) fn fast(&self) -> bool {
        self.fast
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            crate::http2::serve(self, stream, shutdown).await;
        } else {
            crate::h1::serve(&self.front, &self.pingora, self.fast, stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.pingora).await
    }
}
