use std::time::Duration;

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::frames::{going_away_to_server, GOING_AWAY_TO_CLIENT};
use super::*;

/// An unmasked frame (upstream to client).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, payload.len() as u8];
    f.extend_from_slice(payload);
    f
}

/// A masked frame (client to upstream).
fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [1, 2, 3, 4];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// The relay between two in-memory pipes: returns the test's client end, its upstream end, the
/// shutdown sender and the relay's task.
fn start(
    websocket: bool,
    bounds: Bounds,
    pending: (Vec<u8>, Vec<u8>),
) -> (
    DuplexStream,
    DuplexStream,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Relayed>,
) {
    let (client, mut router_client) = duplex(64 * 1024);
    let (upstream, mut router_upstream) = duplex(64 * 1024);
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        relay(
            &mut router_client,
            &mut router_upstream,
            pending,
            websocket,
            bounds,
            &rx,
        )
        .await
    });
    (client, upstream, tx, task)
}

fn long() -> Bounds {
    Bounds {
        idle: Duration::from_secs(60),
        drain: Duration::from_secs(60),
    }
}

async fn read_exactly(s: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
        .await
        .expect("bytes in time")
        .expect("read");
    b
}

/// How the relay ended (within a few seconds).
async fn ended(task: tokio::task::JoinHandle<Relayed>) -> Relayed {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the relay ends in time")
        .expect("the relay task")
}

/// Nothing more arrives within a short while.
async fn quiet(s: &mut DuplexStream) {
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await;
    assert!(r.is_err(), "unexpected bytes or end: {r:?}");
}

#[tokio::test]
async fn bytes_flow_both_ways_and_a_half_close_is_passed_on() {
    let early = b"early".to_vec();
    let (mut c, mut u, _tx, task) = start(false, long(), (early, b"hello".to_vec()));
    assert_eq!(read_exactly(&mut u, 5).await, b"early");
    assert_eq!(read_exactly(&mut c, 5).await, b"hello");
    c.write_all(b"to upstream").await.unwrap();
    assert_eq!(read_exactly(&mut u, 11).await, b"to upstream");
    // The client stops sending: the upstream sees the end, and can still answer.
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    u.write_all(b"still here").await.unwrap();
    assert_eq!(read_exactly(&mut c, 10).await, b"still here");
    u.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    u.shutdown().await.unwrap();
    let r = task.await.unwrap();
    assert_eq!(r.end, End::Closed);
    assert_eq!(r.from_client, 5 + 11);
    assert_eq!(r.to_client, 5 + 10);
}

#[tokio::test]
async fn an_idle_tunnel_ends_after_the_idle_bound() {
    let bounds = Bounds {
        idle: Duration::from_millis(200),
        drain: Duration::from_secs(5),
    };
    let (_c, _u, _tx, task) = start(true, bounds, (Vec::new(), Vec::new()));
    let r = ended(task).await;
    assert_eq!(r.end, End::Idle);
}

#[tokio::test]
async fn drain_closes_both_sides_at_frame_boundaries_with_1001() {
    let (mut c, mut u, tx, task) = start(true, long(), (Vec::new(), Vec::new()));
    // The upstream is in the middle of a frame when shutdown starts.
    let first = frame(0x2, b"0123456789");
    u.write_all(&first[..5]).await.unwrap();
    assert_eq!(read_exactly(&mut c, 5).await, &first[..5]);
    tx.send(true).unwrap();
    // The upstream gets its close frame at once (the client side is between frames).
    let close = read_exactly(&mut u, 8).await;
    assert_eq!(close[0..2], [0x88, 0x82], "a masked close frame");
    let key = [close[2], close[3], close[4], close[5]];
    assert_eq!(close, going_away_to_server(key));
    // The client gets nothing until the frame in flight is complete.
    quiet(&mut c).await;
    // The rest of the frame and another one: the rest goes, then the close frame, nothing else.
    let mut more = first[5..].to_vec();
    more.extend_from_slice(&frame(0x1, b"never sent"));
    u.write_all(&more).await.unwrap();
    assert_eq!(read_exactly(&mut c, first.len() - 5).await, &first[5..]);
    assert_eq!(read_exactly(&mut c, 4).await, GOING_AWAY_TO_CLIENT);
    quiet(&mut c).await;
    // Client data after the close frame to the upstream is not passed on.
    c.write_all(&masked(0x1, b"late")).await.unwrap();
    quiet(&mut u).await;
    // Both answer with their close frames: the tunnel ends, drained.
    c.write_all(&masked(0x8, &[0x03, 0xe9])).await.unwrap();
    u.write_all(&frame(0x8, &[0x03, 0xe9])).await.unwrap();
    let r = ended(task).await;
    assert_eq!(r.end, End::Drained);
    // The late client frame never reached the upstream: only the end follows.
    let mut rest = Vec::new();
    u.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "after the close frame: {rest:?}");
}

#[tokio::test]
async fn a_drain_nobody_answers_ends_at_its_bound() {
    let bounds = Bounds {
        idle: Duration::from_secs(60),
        drain: Duration::from_millis(300),
    };
    let (mut c, mut u, tx, task) = start(true, bounds, (Vec::new(), Vec::new()));
    tx.send(true).unwrap();
    assert_eq!(read_exactly(&mut c, 4).await, GOING_AWAY_TO_CLIENT);
    assert_eq!(read_exactly(&mut u, 8).await[..2], [0x88, 0x82]);
    let r = ended(task).await;
    assert_eq!(r.end, End::DrainTimeout);
}

#[tokio::test]
async fn a_close_handshake_under_way_is_not_doubled() {
    let (mut c, mut u, tx, task) = start(true, long(), (Vec::new(), Vec::new()));
    // The client started closing before the shutdown.
    let close = masked(0x8, &[0x03, 0xe8]);
    c.write_all(&close).await.unwrap();
    assert_eq!(read_exactly(&mut u, close.len()).await, close);
    tx.send(true).unwrap();
    // The upstream gets no second close frame; the client gets the router's.
    assert_eq!(read_exactly(&mut c, 4).await, GOING_AWAY_TO_CLIENT);
    quiet(&mut u).await;
    u.write_all(&frame(0x8, &[0x03, 0xe8])).await.unwrap();
    let r = ended(task).await;
    assert_eq!(r.end, End::Drained);
}

#[tokio::test]
async fn another_protocol_is_closed_at_once_at_shutdown() {
    let (_c, _u, tx, task) = start(false, long(), (Vec::new(), Vec::new()));
    tx.send(true).unwrap();
    let r = ended(task).await;
    assert_eq!(r.end, End::Drained);
}

#[tokio::test]
async fn a_slow_reader_holds_back_the_other_side() {
    // The client reads nothing: the relay stops reading the upstream once its one chunk and the
    // pipe are full, so the upstream's writes block.
    let (_c, mut u, _tx, _task) = start(true, long(), (Vec::new(), Vec::new()));
    let flood = vec![0u8; 1024 * 1024];
    let wrote = tokio::time::timeout(Duration::from_millis(500), u.write_all(&flood)).await;
    assert!(
        wrote.is_err(),
        "a 1 MiB flood went through a reader that reads nothing"
    );
}
