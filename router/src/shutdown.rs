//! Graceful shutdown. On SIGTERM the router keeps accepting for `server.grace_period` (so a load
//! balancer can stop sending), then stops accepting and lets the requests in flight finish, for at
//! most `server.shutdown_timeout`, exiting as soon as none is left. SIGINT exits at once; SIGQUIT
//! hands the listening sockets to a new process started with `run --upgrade` (Pingora's graceful
//! upgrade; see [`crate::upgrade`]) and then drains the same way — or, with no new process
//! waiting, is ignored with an error line. SIGHUP reloads the configuration
//! ([`crate::reload`]).
//!
//! Open WebSockets are not waited for: when the listeners close, each gets a `1001 Going Away`
//! close frame on both sides and is closed once both answer, or after `server.websocket_drain`
//! ([`crate::tunnel`]); from the signal on, new upgrade requests get 503.
//!
//! Pingora's own shutdown always sleeps its whole grace period and then drops whatever is still
//! running; the in-flight count kept here lets the process leave as soon as it is idle.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static DRAINING: AtomicBool = AtomicBool::new(false);
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Held by every request from its first phase to its last; dropping it ends the request. It
/// also counts the request in `hubify_requests_in_flight` for its listener.
#[derive(Debug)]
pub struct InFlight(#[allow(dead_code)] crate::metrics::InFlightOn);

impl InFlight {
    pub fn enter(listener: crate::metrics::Listener) -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight(crate::metrics::InFlightOn::enter(listener))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests (including open WebSockets) now in flight.
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// True once SIGTERM's grace period is over and the router is draining.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// True from SIGTERM (or the hand-over of the sockets to a new process) on: new upgrade
/// requests are refused with 503, since open WebSockets are drained when the grace period ends.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// The signal watch handed to Pingora's `Server::run`.
pub struct Signals {
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    /// `server.upgrade_socket`: where a new process waits for the sockets.
    pub upgrade_socket: std::path::PathBuf,
}

/// After handing the sockets over, Pingora keeps accepting for this long before it stops the
/// listeners (its `CLOSE_TIMEOUT`).
const UPGRADE_OVERLAP: Duration = Duration::from_secs(5);

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {
                    STOPPING.store(true, Ordering::Relaxed);
                    tracing::info!(grace_period = ?self.grace_period, "SIGTERM: still accepting during the grace period");
                    tokio::select! {
                        _ = tokio::time::sleep(self.grace_period) => {}
                        _ = int.recv() => return ShutdownSignal::FastShutdown,
                    }
                    tracing::info!(in_flight = in_flight(), bound = ?self.shutdown_timeout, "no longer accepting; draining requests in flight");
                    DRAINING.store(true, Ordering::Relaxed);
                    let bound = self.shutdown_timeout;
                    let _ = std::thread::Builder::new()
                        .name("drain".into())
                        .spawn(move || exit_when_idle(bound));
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = quit.recv() => {
                    let socket = &self.upgrade_socket;
                    if !crate::upgrade::wait_for_receiver(socket, crate::upgrade::RECEIVER_WAIT).await {
                        tracing::error!(
                            socket = %socket.display(),
                            "SIGQUIT: no new process is waiting for the listening sockets (start one \
                             with `hubify-edge run --upgrade`); still serving"
                        );
                        continue;
                    }
                    tracing::info!(socket = %socket.display(), "SIGQUIT: handing the listening sockets to the new process");
                    STOPPING.store(true, Ordering::Relaxed);
                    let bound = self.shutdown_timeout;
                    let _ = std::thread::Builder::new().name("drain".into()).spawn(move || {
                        // Both processes accept until Pingora stops this one's listeners.
                        std::thread::sleep(UPGRADE_OVERLAP + Duration::from_millis(200));
                        DRAINING.store(true, Ordering::Relaxed);
                        exit_when_idle(bound);
                    });
                    return ShutdownSignal::GracefulUpgrade;
                }
            }
        }
    }
}

/// Exits the process as soon as no request is in flight and no client connection is open (seen
/// twice, 50 ms apart). Idle keep-alive connections close when the shutdown is signalled; a
/// connection accepted just before the listeners closed is still open until its first request
/// is answered (or [`FIRST_REQUEST_GRACE`](crate::h1) passes without one), so it is not cut. When
/// the bound passes first, Pingora's own shutdown ends the process.
fn exit_when_idle(bound: Duration) {
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    let mut idle_seen = false;
    while start.elapsed() < bound {
        if in_flight() == 0 && crate::metrics::connections_open() == 0 {
            if idle_seen {
                tracing::info!(after = ?start.elapsed(), "drained; exiting");
                std::process::exit(0);
            }
            idle_seen = true;
        } else {
            idle_seen = false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::warn!(
        in_flight = in_flight(),
        connections = crate::metrics::connections_open(),
        "shutdown bound reached; closing what is left"
    );
}
