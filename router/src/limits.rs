//! Per-workspace limits, per replica: requests per second with a burst (a GCRA token bucket from
//! the `governor` crate), concurrent requests, open WebSockets. The defaults come from
//! `[limits]`, a route record's own values win (`hubify-edge routes set --requests-per-second
//! …`). The access step of the policy ([`crate::front`]) asks [`Limiter::admit`] before a
//! request is forwarded; what it holds ([`Held`]) is given back when the request (or the
//! WebSocket) ends, whichever engine carried it.
//!
//! Each replica counts alone: with N replicas behind a balancer a workspace gets up to N times
//! each limit. A workspace without limits costs nothing here (no entry, no lock).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use governor::clock::{Clock, MonotonicClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use hubify_edge_config::Limits;
use parking_lot::RwLock;

use crate::metrics::LimitKind;

/// Workspaces with an entry at most (those with nothing in flight are dropped first when it is
/// reached: their bucket starts full again).
const MAX_WORKSPACES: usize = 65_536;

type Bucket = RateLimiter<NotKeyed, InMemoryState, MonotonicClock>;

/// A token bucket and the (rate, burst) it was built for.
struct Rated {
    rate: u32,
    burst: u32,
    bucket: Bucket,
}

/// One workspace's state on this replica.
#[derive(Default)]
struct Workspace {
    rated: ArcSwapOption<Rated>,
    concurrent: AtomicU32,
    websockets: AtomicU32,
}

/// The limits of every workspace on this replica.
#[derive(Default)]
pub struct Limiter {
    workspaces: RwLock<foldhash::HashMap<Box<str>, Arc<Workspace>>>,
    clock: MonotonicClock,
}

/// A refusal: which limit, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub kind: LimitKind,
    /// Whole seconds (at least 1) until the request would be admitted.
    pub retry_after: u32,
}

/// What an admitted request holds until it ends (a concurrent-request or WebSocket slot).
pub struct Held {
    workspace: Arc<Workspace>,
    concurrent: bool,
    websocket: bool,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("concurrent", &self.concurrent)
            .field("websocket", &self.websocket)
            .finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.concurrent {
            self.workspace.concurrent.fetch_sub(1, Ordering::Relaxed);
        }
        if self.websocket {
            self.workspace.websockets.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Takes one of `max` slots of `count`; `false` when all are taken.
fn take(count: &AtomicU32, max: u32) -> bool {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

impl Limiter {
    /// Admits a request of `label` under `limits` (the record's, defaults applied), or says
    /// which limit refuses it. An upgrade (WebSocket handshake) takes a WebSocket slot instead
    /// of a concurrent-request slot (a terminal open for hours is not a request in flight).
    /// `Ok(None)`: the workspace has no limits.
    pub fn admit(
        &self,
        label: &str,
        limits: &Limits,
        upgrade: bool,
    ) -> Result<Option<Held>, Limited> {
        if !limits.any() {
            return Ok(None);
        }
        let workspace = self.workspace(label);
        let mut held = Held {
            workspace,
            concurrent: false,
            websocket: false,
        };
        let ws = &held.workspace;
        let slot = if upgrade {
            limits
                .websockets
                .map(|m| (&ws.websockets, m, LimitKind::Websockets))
        } else {
            limits
                .concurrent_requests
                .map(|m| (&ws.concurrent, m, LimitKind::Concurrency))
        };
        if let Some((count, max, kind)) = slot {
            if !take(count, max) {
                return Err(Limited {
                    kind,
                    retry_after: 1,
                });
            }
            held.concurrent = !upgrade;
            held.websocket = upgrade;
        }
        if let Some(rate) = limits.requests_per_second {
            let burst = limits.burst.unwrap_or(rate);
            let rated = self.rated(&held.workspace, rate, burst);
            if let Err(not_until) = rated.bucket.check() {
                // `held` gives its slot back on the way out.
                let wait = not_until.wait_time_from(self.clock.now());
                return Err(Limited {
                    kind: LimitKind::Rate,
                    retry_after: whole_seconds(wait),
                });
            }
        }
        Ok(Some(held))
    }

    /// The entry of `label`, made on first use.
    fn workspace(&self, label: &str) -> Arc<Workspace> {
        if let Some(w) = self.workspaces.read().get(label) {
            return w.clone();
        }
        let mut map = self.workspaces.write();
        if map.len() >= MAX_WORKSPACES && !map.contains_key(label) {
            // Only entries nothing holds: their counts are zero.
            map.retain(|_, w| Arc::strong_count(w) > 1);
        }
        map.entry(label.into()).or_default().clone()
    }

    /// The workspace's bucket for `rate` and `burst` (a new, full one when the limits changed).
    fn rated(&self, workspace: &Workspace, rate: u32, burst: u32) -> Arc<Rated> {
        if let Some(r) = workspace.rated.load_full() {
            if r.rate == rate && r.burst == burst {
                return r;
            }
        }
        let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let r = Arc::new(Rated {
            rate,
            burst,
            bucket: RateLimiter::direct_with_clock(quota, self.clock.clone()),
        });
        workspace.rated.store(Some(r.clone()));
        r
    }

    /// Workspaces with an entry now.
    pub fn len(&self) -> usize {
        self.workspaces.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `d` rounded up to whole seconds, at least 1.
fn whole_seconds(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rps: Option<u32>, burst: Option<u32>, conc: Option<u32>, ws: Option<u32>) -> Limits {
        Limits {
            requests_per_second: rps,
            burst,
            concurrent_requests: conc,
            websockets: ws,
        }
    }

    #[test]
    fn no_limits_no_entry() {
        let l = Limiter::default();
        assert!(l
            .admit("alice", &Limits::default(), false)
            .unwrap()
            .is_none());
        assert!(l.is_empty());
    }

    #[test]
    fn the_bucket_holds_its_burst_then_refuses_with_a_wait() {
        let l = Limiter::default();
        let lim = limits(Some(1), Some(3), None, None);
        for i in 0..3 {
            assert!(l.admit("alice", &lim, false).is_ok(), "request {i}");
        }
        let refused = l.admit("alice", &lim, false).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Rate);
        assert_eq!(refused.retry_after, 1);
        // Another workspace is unaffected.
        assert!(l.admit("bob", &lim, false).is_ok());
        // New limits: a new (full) bucket.
        let more = limits(Some(1), Some(5), None, None);
        assert!(l.admit("alice", &more, false).is_ok());
    }

    #[test]
    fn concurrency_and_websockets_are_slots_given_back_on_drop() {
        let l = Limiter::default();
        let lim = limits(None, None, Some(2), Some(1));
        let a = l.admit("alice", &lim, false).unwrap();
        let b = l.admit("alice", &lim, false).unwrap();
        let refused = l.admit("alice", &lim, false).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Concurrency);
        // A WebSocket takes its own slot, not a request's.
        let ws = l.admit("alice", &lim, true).unwrap();
        assert_eq!(
            l.admit("alice", &lim, true).unwrap_err().kind,
            LimitKind::Websockets
        );
        drop(a);
        assert!(l.admit("alice", &lim, false).is_ok());
        drop(ws);
        assert!(l.admit("alice", &lim, true).is_ok());
        drop(b);
    }

    #[test]
    fn a_rate_refusal_gives_the_slot_back() {
        let l = Limiter::default();
        let lim = limits(Some(1), Some(1), Some(1), None);
        let first = l.admit("alice", &lim, false).unwrap();
        drop(first);
        // The bucket is empty: refused by rate, and the concurrency slot is free again.
        assert_eq!(
            l.admit("alice", &lim, false).unwrap_err().kind,
            LimitKind::Rate
        );
        let ws = l.workspace("alice");
        assert_eq!(ws.concurrent.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn whole_seconds_round_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
    }
}
