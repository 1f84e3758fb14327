//! Counters the router's `/metrics` reads (the exposition itself lives in the router). Process
//! wide: one ACME manager per process.

use std::sync::atomic::{AtomicU64, Ordering};

/// ACME renewal figures of this process.
#[derive(Debug, Default)]
pub struct Renewals {
    /// Issuance attempts that ended with a usable certificate (issued here, or found fresh
    /// under the lock).
    pub succeeded: AtomicU64,
    /// Issuance attempts that failed (the serving certificate stayed).
    pub failed: AtomicU64,
    /// Failures since the last success (0 when healthy).
    pub consecutive_failures: AtomicU64,
    /// ACME orders this process created.
    pub orders: AtomicU64,
    /// Renewal checks run.
    pub checks: AtomicU64,
    /// Unix seconds of the next planned renewal (0: unknown).
    pub next_renewal: AtomicU64,
    /// Unix seconds of the serving ACME certificate's notAfter (0: none).
    pub cert_not_after: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenewalSnapshot {
    pub succeeded: u64,
    pub failed: u64,
    pub consecutive_failures: u64,
    pub orders: u64,
    pub checks: u64,
    pub next_renewal: u64,
    pub cert_not_after: u64,
}

impl Renewals {
    pub const fn new() -> Renewals {
        Renewals {
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            orders: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            next_renewal: AtomicU64::new(0),
            cert_not_after: AtomicU64::new(0),
        }
    }

    pub fn snapshot(&self) -> RenewalSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RenewalSnapshot {
            succeeded: l(&self.succeeded),
            failed: l(&self.failed),
            consecutive_failures: l(&self.consecutive_failures),
            orders: l(&self.orders),
            checks: l(&self.checks),
            next_renewal: l(&self.next_renewal),
            cert_not_after: l(&self.cert_not_after),
        }
    }
}

/// This process's renewal counters.
pub static RENEWALS: Renewals = Renewals::new();

static OBSERVER: std::sync::OnceLock<fn(bool)> = std::sync::OnceLock::new();

/// Registers the router's hook called after each ACME order of this process: `true` when it
/// ended with a stored certificate, `false` when it failed. The first registration wins.
pub fn on_renewal(hook: fn(bool)) {
    let _ = OBSERVER.set(hook);
}

pub(crate) fn renewal_done(ok: bool) {
    if let Some(hook) = OBSERVER.get() {
        hook(ok);
    }
}
