//! The certificate manager of `tls.source = "acme"`: keeps the resolver's `acme` certificate
//! current, on its own thread and runtime (never on the request path).
//!
//! - At start: the state-dir copy is served at once (a replica starts while Redis is down), then
//!   the Redis copy when it is newer.
//! - Every `acme.check_interval`, at the renewal time, and on each `<prefix>:tls-events` message,
//!   the stored certificate is reloaded and swapped in when newer.
//! - When renewal is due (no certificate, a third of the lifetime left — or `acme.renew_before`
//!   — or the CA's ARI window says so), exactly one replica issues: the one that wins
//!   `SET <prefix>:acme:lock <token> NX PX <ttl>`. It re-checks the stored certificate under the
//!   lock (another replica may just have renewed), issues, stores to Redis and the state dir,
//!   publishes, swaps in, and releases the lock. The others load the result.
//! - A failed issuance never touches the serving certificate; it is retried after
//!   `acme.retry_initial`, doubling up to `acme.retry_max`.
//! - With Redis configured but unreachable, nobody issues (the lock cannot be taken); the served
//!   certificate stays and issuance is retried with backoff. When Redis comes back without the
//!   certificate (or with an older one), the served one is put back (atomically, only if newer).
//! - ARI (RFC 9773): when the CA offers `renewalInfo`, the suggested window (a random point in
//!   it) can bring renewal forward, never push it past our own renewal time; the renewal order
//!   then carries `replaces`. One issuance is bounded by `acme.lock_ttl`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use hubify_edge_config::{Acme, Config};
use instant_acme::Account;
use tokio::sync::mpsc;

use crate::dns;
use crate::issue::{cert_identifier, Issuer};
use crate::metrics::RENEWALS;
use crate::store::{unix, Bundle, Disk, Keys, Shared};
use crate::{AcmeError, CertResolver, LoadedCert};

/// Without Redis, how often the state dir is re-read (a `hubify-edge cert renew` writes there).
const STATE_DIR_POLL: Duration = Duration::from_secs(10);

/// Handle of a running manager.
#[derive(Clone)]
pub struct AcmeHandle {
    force: mpsc::Sender<()>,
}

impl AcmeHandle {
    /// Asks for an issuance now (under the lock), whatever the renewal time says.
    pub fn force_renewal(&self) {
        let _ = self.force.try_send(());
    }
}

/// When a certificate should be renewed: when a third of its lifetime remains, or `renew_before`
/// before it expires when that is configured.
pub fn renewal_time(cert: &LoadedCert, renew_before: Option<Duration>) -> SystemTime {
    let nb = cert.info.not_before;
    let na = cert.info.not_after;
    match renew_before {
        Some(before) => na.checked_sub(before).unwrap_or(SystemTime::UNIX_EPOCH),
        None => {
            let lifetime = na.duration_since(nb).unwrap_or(Duration::ZERO);
            nb + lifetime * 2 / 3
        }
    }
}

/// The wait after `failures` consecutive failures: `initial`, doubled per failure, capped at `max`.
pub fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    initial.saturating_mul(1u32 << exp).min(max)
}

/// What an attempt to issue did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// We issued (and stored) a new certificate.
    Issued,
    /// Another replica holds the lock: wait for its result.
    OtherHolds,
    /// Under the lock, the stored certificate turned out fresh already: loaded it.
    AlreadyFresh,
}

pub(crate) struct Manager {
    acme: Acme,
    resolver: Arc<CertResolver>,
    issuer: Issuer,
    disk: Disk,
    shared: Option<Shared>,
    account: Option<Account>,
    current: Option<LoadedCert>,
    /// The PEMs of `current`, to put back into Redis when Redis lost or lags behind it.
    current_bundle: Option<Bundle>,
    /// ARI: (fingerprint of the cert it is about, suggested renewal time if the CA gave one,
    /// when to ask again).
    ari: Option<(String, Option<SystemTime>, Instant)>,
    /// The CA answered a renewalInfo request.
    ari_supported: bool,
    failures: u32,
    next_attempt: Option<Instant>,
    redis_warned: bool,
}

impl Manager {
    pub(crate) fn new(config: &Config, resolver: Arc<CertResolver>) -> Result<Manager, AcmeError> {
        let acme = config.acme.clone().ok_or_else(|| {
            AcmeError::Config("tls.source = \"acme\" needs an [acme] section".into())
        })?;
        let tls = crate::http::tls_config(acme.ca_bundle.as_deref())?;
        let provider = dns::from_config(&acme, tls.clone())?;
        let shared = match &config.redis {
            Some(r) => Some(Shared::new(
                &r.url,
                Keys::new(&r.key_prefix, &config.domain),
                r.connect_timeout,
                r.command_timeout,
            )?),
            None => None,
        };
        Ok(Manager {
            disk: Disk::new(&acme.state_dir),
            issuer: Issuer::new(acme.clone(), tls, provider),
            acme,
            resolver,
            shared,
            account: None,
            current: None,
            current_bundle: None,
            ari: None,
            ari_supported: false,
            failures: 0,
            next_attempt: None,
            redis_warned: false,
        })
    }

    /// Swaps `bundle` in when it is valid, not expired and newer than what is served.
    fn maybe_install(&mut self, bundle: &Bundle, origin: &str) -> Result<bool, AcmeError> {
        let loaded = bundle.load(origin)?;
        if let Some(cur) = &self.current {
            if cur.info.fingerprint == loaded.info.fingerprint
                || loaded.info.not_after < cur.info.not_after
            {
                return Ok(false);
            }
        }
        if loaded.info.not_after <= SystemTime::now() {
            return Err(AcmeError::Store(format!(
                "{origin}: the stored certificate (serial {}) has expired",
                loaded.info.serial
            )));
        }
        let names: Vec<String> = self
            .acme
            .names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        if !names.iter().all(|n| loaded.info.names.contains(n)) {
            return Err(AcmeError::Store(format!(
                "{origin}: the stored certificate names {:?}, not {:?} (acme.names changed?)",
                loaded.info.names, names
            )));
        }
        tracing::info!(
            origin,
            serial = %loaded.info.serial,
            not_after = unix(loaded.info.not_after),
            names = ?loaded.info.names,
            "ACME certificate installed"
        );
        self.resolver.replace_source("acme", loaded.clone());
        RENEWALS
            .cert_not_after
            .store(unix(loaded.info.not_after), Ordering::Relaxed);
        self.current = Some(loaded);
        self.current_bundle = Some(bundle.clone());
        Ok(true)
    }

    fn install_from_disk(&mut self) {
        match self.disk.read_bundle() {
            Ok(Some(b)) => {
                let origin = self.disk.chain_path().display().to_string();
                if let Err(e) = self.maybe_install(&b, &origin) {
                    tracing::warn!(error = %e, "state-dir certificate not used");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "state-dir certificate unreadable"),
        }
    }

    /// Loads the newest stored certificate (Redis, then the state dir). When Redis has none, or
    /// an older one than we serve (it was flushed, or a store after an issuance failed), ours is
    /// put back so every replica converges on the newest.
    async fn refresh(&mut self) {
        // What Redis holds: `None` unknown (error), `Some(None)` nothing, `Some(Some(t))` notAfter.
        let mut in_redis: Option<Option<SystemTime>> = None;
        if let Some(shared) = &mut self.shared {
            match shared.get_bundle().await {
                Ok(Some(b)) => {
                    self.redis_warned = false;
                    let origin = format!("redis {}", shared.keys.tls);
                    in_redis = Some(b.load(&origin).ok().map(|c| c.info.not_after));
                    match self.maybe_install(&b, &origin) {
                        Ok(true) => {
                            if let Err(e) = self.disk.write_bundle(&b) {
                                tracing::warn!(error = %e, "could not keep the state-dir copy");
                            }
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "Redis certificate not used"),
                    }
                }
                Ok(None) => {
                    self.redis_warned = false;
                    in_redis = Some(None);
                }
                Err(e) => {
                    if !self.redis_warned {
                        tracing::warn!(error = %e, "cannot read the certificate from Redis; serving the local copy");
                        self.redis_warned = true;
                    }
                }
            }
        }
        self.install_from_disk();
        let (Some(in_redis), Some(cur), Some(bundle), Some(shared)) = (
            in_redis,
            &self.current,
            &self.current_bundle,
            &mut self.shared,
        ) else {
            return;
        };
        if in_redis.is_none_or(|t| t < cur.info.not_after) {
            match shared.put_bundle_if_newer(bundle, cur).await {
                Ok(false) => {}
                Ok(true) => tracing::info!(
                    serial = %cur.info.serial,
                    key = %shared.keys.tls,
                    "Redis had no or an older certificate; stored the one served here"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "could not put the served certificate back into Redis")
                }
            }
        }
    }

    /// When the serving certificate should be renewed (`None`: no certificate: now).
    fn renew_at(&self) -> Option<SystemTime> {
        let cur = self.current.as_ref()?;
        let mut at = renewal_time(cur, self.acme.renew_before);
        // ARI only brings renewal forward (e.g. a CA incident), never past our own policy.
        if let Some((fp, Some(ari_at), _)) = &self.ari {
            if *fp == cur.info.fingerprint && *ari_at < at {
                at = *ari_at;
            }
        }
        Some(at)
    }

    fn due(&self) -> bool {
        match self.renew_at() {
            None => true,
            Some(at) => SystemTime::now() >= at,
        }
    }

    async fn account(&mut self) -> Result<Account, AcmeError> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let mut stored = None;
        if let Some(shared) = &mut self.shared {
            stored = shared.get_account().await?;
        }
        if stored.is_none() {
            stored = self.disk.read_account()?;
        }
        if let Some(s) = &stored {
            if let Some(a) = self.issuer.restore(s).await? {
                if let Err(e) = self.disk.write_account(s) {
                    tracing::warn!(error = %e, "could not keep the account in the state dir");
                }
                self.account = Some(a.clone());
                return Ok(a);
            }
        }
        let (a, s) = self.issuer.create_account().await?;
        if let Some(shared) = &mut self.shared {
            shared.put_account(&s).await?;
        }
        self.disk.write_account(&s)?;
        self.account = Some(a.clone());
        Ok(a)
    }

    /// Issues under the lock (when Redis is configured). `force` issues even when the stored
    /// certificate is fresh.
    pub(crate) async fn issue_under_lock(&mut self, force: bool) -> Result<Outcome, AcmeError> {
        let Some(shared) = &mut self.shared else {
            self.issue_and_store().await?;
            return Ok(Outcome::Issued);
        };
        let token = format!("{:032x}", rand::random::<u128>());
        let ttl = self.acme.lock_ttl;
        if !shared.try_lock(&token, ttl).await? {
            return Ok(Outcome::OtherHolds);
        }
        tracing::info!(lock = %shared.keys.lock, "issuance lock taken");
        let keeper = LockKeeper::start(
            shared.client.clone(),
            shared.keys.clone(),
            token.clone(),
            ttl,
        );
        let result = self.issue_locked(force).await;
        keeper.stop().await;
        if let Some(shared) = &mut self.shared {
            match shared.release_lock(&token).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    "the issuance lock had expired before we released it (raise acme.lock_ttl?)"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the issuance lock; it expires by itself")
                }
            }
        }
        result
    }

    async fn issue_locked(&mut self, force: bool) -> Result<Outcome, AcmeError> {
        if !force {
            // Another replica may have renewed while we waited for the lock.
            self.refresh().await;
            if !self.due() {
                return Ok(Outcome::AlreadyFresh);
            }
        }
        self.issue_and_store().await?;
        Ok(Outcome::Issued)
    }

    async fn issue_and_store(&mut self) -> Result<(), AcmeError> {
        // The lock TTL is the bound on one issuance: a hung CA or DNS API must not hold the lock
        // (extended while we run) forever.
        let limit = self.acme.lock_ttl;
        let result = match tokio::time::timeout(limit, self.issue_and_store_inner()).await {
            Ok(r) => r,
            Err(_) => Err(AcmeError::Acme(format!(
                "issuance did not finish within acme.lock_ttl ({limit:?}); abandoned"
            ))),
        };
        crate::metrics::renewal_done(result.is_ok());
        result
    }

    async fn issue_and_store_inner(&mut self) -> Result<(), AcmeError> {
        let account = self.account().await?;
        // `replaces` (RFC 9773) only where the CA answered ARI for the serving certificate.
        let replaces = self
            .current
            .as_ref()
            .filter(|_| self.ari_supported)
            .and_then(|c| c.key.cert.first())
            .and_then(|leaf| cert_identifier(leaf.as_ref()));
        if let Some(shared) = &mut self.shared {
            if let Err(e) = shared.count_order().await {
                tracing::debug!(error = %e, "order counter not updated");
            }
        }
        RENEWALS.orders.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let bundle = self.issuer.issue(&account, replaces).await?;
        let loaded = bundle.load("new ACME certificate")?;
        tracing::info!(
            serial = %loaded.info.serial,
            not_after = unix(loaded.info.not_after),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ACME certificate issued"
        );
        // Disk first: if Redis fails now, this replica still restarts with the new certificate.
        if let Err(e) = self.disk.write_bundle(&bundle) {
            tracing::warn!(error = %e, "could not write the state-dir copy");
        }
        if let Some(shared) = &mut self.shared {
            if let Err(e) = shared.put_bundle(&bundle, &loaded).await {
                tracing::error!(error = %e, "could not store the new certificate in Redis; other replicas will not see it until the next renewal");
            }
        }
        self.maybe_install(&bundle, "new issuance")?;
        Ok(())
    }

    /// Asks the CA's ARI for the suggested renewal time of the serving certificate, when due.
    async fn refresh_ari(&mut self) {
        let Some(cur) = self.current.clone() else {
            return;
        };
        if let Some((fp, _, next)) = &self.ari {
            if *fp == cur.info.fingerprint && Instant::now() < *next {
                return;
            }
        }
        // Only with an account already stored: ARI alone never registers one.
        if self.account.is_none() {
            let stored = match &mut self.shared {
                Some(s) => s.get_account().await.ok().flatten(),
                None => None,
            };
            let stored = stored.or_else(|| self.disk.read_account().ok().flatten());
            let Some(stored) = stored else { return };
            match self.issuer.restore(&stored).await {
                Ok(Some(a)) => self.account = Some(a),
                _ => return,
            }
        }
        let Some(account) = self.account.clone() else {
            return;
        };
        let Some(leaf) = cur.key.cert.first() else {
            return;
        };
        match self.issuer.renewal_info(&account, leaf.as_ref()).await {
            Ok(Some((at, retry))) => {
                let retry = retry.clamp(Duration::from_secs(1), Duration::from_secs(6 * 3600));
                tracing::debug!(renew_at = unix(at), "ARI renewal window");
                self.ari_supported = true;
                self.ari = Some((
                    cur.info.fingerprint.clone(),
                    Some(at),
                    Instant::now() + retry,
                ));
            }
            Ok(None) => {
                self.ari_supported = false;
                // No ARI at this CA: do not ask again for this certificate.
                self.ari = Some((
                    cur.info.fingerprint.clone(),
                    None,
                    Instant::now() + Duration::from_secs(86_400),
                ));
            }
            Err(e) => {
                tracing::debug!(error = %e, "ARI unavailable; renewing by the certificate's lifetime");
                self.ari = Some((
                    cur.info.fingerprint.clone(),
                    None,
                    Instant::now() + self.acme.check_interval,
                ));
            }
        }
    }

    fn backoff(&self) -> Duration {
        backoff(self.acme.retry_initial, self.acme.retry_max, self.failures)
    }

    /// One round: reload, maybe renew. Returns how long to sleep.
    async fn tick(&mut self, force: bool) -> Duration {
        RENEWALS.checks.fetch_add(1, Ordering::Relaxed);
        self.refresh().await;
        self.refresh_ari().await;
        let mut wait = self.acme.check_interval;
        let backing_off = self.next_attempt.is_some_and(|t| Instant::now() < t);
        if force || (self.due() && !backing_off) {
            match self.issue_under_lock(force).await {
                Ok(Outcome::Issued) | Ok(Outcome::AlreadyFresh) => {
                    if self.failures > 0 {
                        tracing::info!(failures = self.failures, "issuance recovered");
                    }
                    self.failures = 0;
                    self.next_attempt = None;
                    RENEWALS.succeeded.fetch_add(1, Ordering::Relaxed);
                    RENEWALS.consecutive_failures.store(0, Ordering::Relaxed);
                }
                Ok(Outcome::OtherHolds) => {
                    tracing::debug!("another replica is issuing; waiting for its certificate");
                    wait = wait.min(Duration::from_secs(1));
                }
                Err(e) => {
                    self.failures += 1;
                    let retry_in = self.backoff();
                    self.next_attempt = Some(Instant::now() + retry_in);
                    RENEWALS.failed.fetch_add(1, Ordering::Relaxed);
                    RENEWALS
                        .consecutive_failures
                        .store(u64::from(self.failures), Ordering::Relaxed);
                    tracing::error!(
                        error = %e,
                        failures = self.failures,
                        retry_in_ms = retry_in.as_millis() as u64,
                        serving = self.current.as_ref().map(|c| c.info.serial.clone()).unwrap_or_else(|| "nothing".into()),
                        "ACME issuance failed; the current certificate keeps serving"
                    );
                }
            }
        }
        let now_i = Instant::now();
        if let Some(t) = self.next_attempt {
            if t > now_i {
                wait = wait.min(t - now_i);
            } else {
                self.next_attempt = None;
            }
        }
        if let Some(at) = self.renew_at() {
            let until = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            RENEWALS.next_renewal.store(unix(at), Ordering::Relaxed);
            if !(self.due() && self.next_attempt.is_some()) {
                wait = wait.min(until.max(Duration::from_millis(50)));
            }
        }
        if let Some((_, _, next)) = &self.ari {
            if *next > now_i {
                wait = wait.min(*next - now_i);
            }
        }
        if self.shared.is_none() {
            // No pub/sub without Redis: notice a `cert renew` written to the state dir soon.
            wait = wait.min(STATE_DIR_POLL);
        }
        wait.max(Duration::from_millis(50))
    }

    async fn run(mut self, mut force_rx: mpsc::Receiver<()>) {
        self.install_from_disk();
        let (ev_tx, mut ev_rx) = mpsc::channel::<()>(8);
        if let Some(shared) = &self.shared {
            tokio::spawn(subscribe(
                shared.client.clone(),
                shared.keys.events.clone(),
                ev_tx,
            ));
        }
        let mut force = false;
        loop {
            let wait = self.tick(force).await;
            force = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Some(()) = ev_rx.recv() => {
                    tracing::debug!("certificate event");
                }
                Some(()) = force_rx.recv() => force = true,
            }
        }
    }
}

/// Listens on `<prefix>:tls-events`, reconnecting with backoff; each message (and each
/// (re)subscription, to catch up on what was missed) wakes the manager.
async fn subscribe(client: redis::Client, channel: String, tx: mpsc::Sender<()>) {
    let mut delay = Duration::from_millis(500);
    loop {
        let connected =
            tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub()).await;
        if let Ok(Ok(mut ps)) = connected {
            if ps.subscribe(&channel).await.is_ok() {
                delay = Duration::from_millis(500);
                let _ = tx.try_send(());
                let mut stream = ps.on_message();
                while stream.next().await.is_some() {
                    let _ = tx.try_send(());
                }
                tracing::debug!("certificate event subscription lost; reconnecting");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Extends the lock every third of its TTL while the issuance runs.
struct LockKeeper {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl LockKeeper {
    fn start(client: redis::Client, keys: Keys, token: String, ttl: Duration) -> LockKeeper {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut shared = Shared::from_client(client, keys);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(ttl / 3) => {
                        match shared.extend_lock(&token, ttl).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!("the issuance lock was lost while issuing");
                                return;
                            }
                            Err(e) => tracing::warn!(error = %e, "could not extend the issuance lock"),
                        }
                    }
                }
            }
        });
        LockKeeper { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts the manager on a thread of its own. The resolver gets the stored certificate (if any)
/// before this returns; issuance happens in the background.
pub fn start(config: &Config, resolver: Arc<CertResolver>) -> Result<AcmeHandle, AcmeError> {
    let mut manager = Manager::new(config, resolver)?;
    manager.install_from_disk();
    let (force, force_rx) = mpsc::channel(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AcmeError::Config(format!("cannot start the ACME runtime: {e}")))?;
    std::thread::Builder::new()
        .name("acme".into())
        .spawn(move || rt.block_on(manager.run(force_rx)))
        .map_err(|e| AcmeError::Config(format!("cannot start the ACME thread: {e}")))?;
    Ok(AcmeHandle { force })
}

/// `hubify-edge cert renew`: issue now under the lock (waiting for it up to `acme.lock_ttl`),
/// store and announce. Returns the new certificate.
pub async fn renew_now(config: &Config) -> Result<LoadedCert, AcmeError> {
    let resolver = Arc::new(CertResolver::new());
    let mut m = Manager::new(config, resolver)?;
    m.refresh().await;
    let deadline = Instant::now() + m.acme.lock_ttl + Duration::from_secs(5);
    loop {
        match m.issue_under_lock(true).await? {
            Outcome::Issued | Outcome::AlreadyFresh => break,
            Outcome::OtherHolds => {
                if Instant::now() > deadline {
                    return Err(AcmeError::Acme(
                        "another replica held the issuance lock for longer than acme.lock_ttl"
                            .into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    m.current
        .clone()
        .ok_or_else(|| AcmeError::Acme("no certificate after issuance".into()))
}

/// What `hubify-edge cert status` prints.
#[derive(Debug, Clone)]
pub struct CertStatus {
    pub origin: String,
    pub cert: Option<LoadedCert>,
    pub next_renewal: Option<SystemTime>,
    pub lock_held: Option<bool>,
    pub orders: Option<u64>,
    pub note: Option<String>,
}

/// Reads the stored certificate (Redis, else the state dir) and says when it renews.
pub async fn status(config: &Config) -> Result<CertStatus, AcmeError> {
    let acme = config
        .acme
        .clone()
        .ok_or_else(|| AcmeError::Config("no [acme] section in this configuration".into()))?;
    let disk = Disk::new(&acme.state_dir);
    let mut note = None;
    let mut lock_held = None;
    let mut orders = None;
    let mut found: Option<(Bundle, String)> = None;
    if let Some(r) = &config.redis {
        let mut shared = Shared::new(
            &r.url,
            Keys::new(&r.key_prefix, &config.domain),
            r.connect_timeout,
            r.command_timeout,
        )?;
        match shared.get_bundle().await {
            Ok(Some(b)) => found = Some((b, format!("redis {}", shared.keys.tls))),
            Ok(None) => note = Some(format!("no certificate in Redis ({})", shared.keys.tls)),
            Err(e) => {
                note = Some(format!(
                    "Redis unavailable ({e}); showing the state-dir copy"
                ))
            }
        }
        lock_held = shared.lock_exists().await.ok();
        orders = shared.orders().await.ok();
    }
    if found.is_none() {
        if let Some(b) = disk.read_bundle()? {
            found = Some((b, format!("state dir {}", disk.chain_path().display())));
        }
    }
    let (cert, origin) = match found {
        Some((b, origin)) => (Some(b.load(&origin)?), origin),
        None => (None, "none".to_string()),
    };
    let next_renewal = cert.as_ref().map(|c| renewal_time(c, acme.renew_before));
    Ok(CertStatus {
        origin,
        cert,
        next_renewal,
        lock_held,
        orders,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs;
        let seq: Vec<Duration> = (1..=8).map(|f| backoff(s(60), s(3600), f)).collect();
        assert_eq!(
            seq,
            vec![
                s(60),
                s(120),
                s(240),
                s(480),
                s(960),
                s(1920),
                s(3600),
                s(3600)
            ]
        );
        assert_eq!(backoff(s(60), s(3600), 1000), s(3600));
    }

    #[test]
    fn ari_only_brings_renewal_forward() {
        std::env::set_var("CLOUDFLARE_API_TOKEN", "unit-test");
        let toml = r#"
paths = "standard"
domain = "hubify.test"
[listeners.https]
address = "127.0.0.1:0"
[routes]
store = "static"
[tls]
source = "acme"
[acme]
directory = "https://127.0.0.1:9/dir"
state_dir = "/nonexistent/hubify-edge-unit"
[acme.dns]
provider = "cloudflare"
zone_id = "z"
"#;
        let config = Config::from_toml(toml, "unit.toml").unwrap();
        let mut m = Manager::new(&config, Arc::new(CertResolver::new())).unwrap();
        assert!(m.due(), "nothing served: due now");
        let (c, _) = crate::self_signed("hubify.test").unwrap();
        let own = renewal_time(&c, None);
        m.current = Some(c.clone());
        assert_eq!(m.renew_at(), Some(own));
        assert!(!m.due());
        let earlier = SystemTime::now() - Duration::from_secs(5);
        m.ari = Some((c.info.fingerprint.clone(), Some(earlier), Instant::now()));
        assert_eq!(m.renew_at(), Some(earlier));
        assert!(m.due(), "ARI window in the past: renew now");
        m.ari = Some((
            c.info.fingerprint.clone(),
            Some(own + Duration::from_secs(86_400)),
            Instant::now(),
        ));
        assert_eq!(
            m.renew_at(),
            Some(own),
            "a later ARI window does not delay renewal"
        );
        m.ari = Some(("another certificate".into(), Some(earlier), Instant::now()));
        assert_eq!(
            m.renew_at(),
            Some(own),
            "ARI about another certificate is ignored"
        );
    }

    #[test]
    fn renews_when_a_third_of_the_lifetime_remains() {
        let (mut c, _) = crate::self_signed("hubify.test").unwrap();
        c.info.not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        c.info.not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + 90 * 86_400);
        assert_eq!(
            renewal_time(&c, None),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + 60 * 86_400)
        );
        assert_eq!(
            renewal_time(&c, Some(Duration::from_secs(7 * 86_400))),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + 83 * 86_400)
        );
        // A renew_before longer than the lifetime: due at once, no underflow.
        assert!(renewal_time(&c, Some(Duration::from_secs(u64::MAX / 2))) <= SystemTime::now());
    }
}
