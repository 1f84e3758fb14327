//! WebSockets through `/terminal`: upgrade, frames both ways, the stripped path at the ttyd
//! stand-in, and the per-path idle timeout (both directions: held past the framework default,
//! and cut when configured short).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::StatusCode;
use hubify_edge_tests::client::{ws_connect_plain, ws_connect_tls, ws_roundtrip};
use hubify_edge_tests::{host, EdgeConfig, PathRule, Router, Upstream};
use tokio_tungstenite::tungstenite::Message;

const ECHO_BOUND: Duration = Duration::from_secs(10);

async fn ws_stack(idle: &str, read_timeout: &str) -> (Upstream, Upstream, EdgeConfig, Router) {
    let gateway = Upstream::echo("gateway").await;
    let terminal = Upstream::echo("terminal").await;
    let cfg = EdgeConfig::new()
        .read_timeout(read_timeout)
        .path(
            PathRule::new("/terminal", terminal.port)
                .strip()
                .idle_timeout(idle),
        )
        .path(PathRule::new("/", gateway.port));
    let router = Router::start(&cfg).await;
    (gateway, terminal, cfg, router)
}

async fn echo_both_kinds<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, tag: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let text = format!("hello from the client ({tag})");
    let back = ws_roundtrip(ws, Message::text(text.clone()), ECHO_BOUND)
        .await
        .unwrap_or_else(|e| panic!("{tag}: text echo: {e}"));
    assert_eq!(back, Message::text(text), "{tag}: text frame");

    let bin: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let back = ws_roundtrip(ws, Message::binary(bin.clone()), ECHO_BOUND)
        .await
        .unwrap_or_else(|e| panic!("{tag}: binary echo: {e}"));
    assert_eq!(back, Message::binary(bin), "{tag}: binary frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_terminal_over_tls() {
    let (gateway, terminal, cfg, _router) = ws_stack("1h", "10s").await;
    let alice = host("alice");
    let (mut ws, resp) = ws_connect_tls(cfg.https_port(), &alice, &alice, "/terminal/ws?x=1")
        .await
        .expect("WebSocket handshake through the TLS listener");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(
        resp.headers().contains_key("x-request-id"),
        "the 101 answer carries no x-request-id: {:?}",
        resp.headers()
    );
    echo_both_kinds(&mut ws, "tls").await;
    // Several frames in a row, both directions.
    for i in 0..20 {
        let back = ws_roundtrip(&mut ws, Message::text(format!("line {i}")), ECHO_BOUND)
            .await
            .unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!(back, Message::text(format!("line {i}")));
    }
    assert_eq!(
        terminal.ws_paths(),
        vec!["/ws?x=1".to_owned()],
        "the ttyd stand-in must see the stripped path"
    );
    let seen = &terminal.requests()[0];
    assert_eq!(seen.header("host"), Some("alice.hubify.test"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert!(
        gateway.requests().is_empty(),
        "WebSocket went to the gateway"
    );
    let _ = ws.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_terminal_on_the_plain_listener() {
    let (_gateway, terminal, cfg, _router) = ws_stack("1h", "10s").await;
    let alice = host("alice");
    let (mut ws, resp) = ws_connect_plain(cfg.http_port(), &alice, "/terminal")
        .await
        .expect("WebSocket handshake through the plain listener");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    echo_both_kinds(&mut ws, "plain").await;
    assert_eq!(terminal.ws_paths(), vec!["/".to_owned()]);
    assert_eq!(
        terminal.requests()[0].header("x-forwarded-proto"),
        Some("http")
    );
    let _ = ws.close(None).await;
}

/// Slow on purpose (75 s): an idle WebSocket must outlive the proxy framework's 60 s default and
/// the (shorter) upstream read_timeout when the path rule says `idle_timeout = "120s"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_stays_open_for_the_configured_idle_timeout() {
    let (_gateway, _terminal, cfg, _router) = ws_stack("120s", "30s").await;
    let alice = host("alice");
    let (mut ws, _) = ws_connect_tls(cfg.https_port(), &alice, &alice, "/terminal/ws")
        .await
        .expect("WebSocket handshake");
    echo_both_kinds(&mut ws, "before idling").await;

    // No traffic at all for 75 s (no pings either: neither side sends any).
    let idle_until = Instant::now() + Duration::from_secs(75);
    match tokio::time::timeout_at(idle_until.into(), ws.next()).await {
        Err(_) => {} // nothing arrived: still open as far as we can tell
        Ok(other) => panic!("the idle WebSocket got {other:?} before 75 s of idling"),
    }
    echo_both_kinds(&mut ws, "after 75 s idle").await;
    let _ = ws.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_is_closed_after_a_short_idle_timeout() {
    // read_timeout is long: only the path rule's 2 s can close the socket within the bound.
    let (_gateway, _terminal, cfg, _router) = ws_stack("2s", "60s").await;
    let alice = host("alice");
    let (mut ws, _) = ws_connect_tls(cfg.https_port(), &alice, &alice, "/terminal/ws")
        .await
        .expect("WebSocket handshake");
    echo_both_kinds(&mut ws, "before idling").await;

    let idle_from = Instant::now();
    let bound = Duration::from_secs(10);
    let outcome = tokio::time::timeout(bound, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return format!("close frame {frame:?}"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => panic!("unexpected frame while idling: {m:?}"),
                Some(Err(e)) => return format!("error {e}"),
                None => return "end of stream".to_owned(),
            }
        }
    })
    .await;
    let elapsed = idle_from.elapsed();
    let how = outcome.unwrap_or_else(|_| {
        panic!("idle WebSocket still open {bound:?} after its 2 s idle_timeout")
    });
    assert!(
        elapsed >= Duration::from_secs(1),
        "idle WebSocket closed after only {elapsed:?} ({how}); idle_timeout is 2 s"
    );
}
