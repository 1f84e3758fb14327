//! Configuration reload: on SIGHUP the process re-reads its configuration file and, when the file
//! is valid and changes only what a running process can take, puts it in force for every request
//! that starts afterwards.
//!
//! - **What reloads:** path rules, reserved labels, static routes, `[replay]`, `[auth]` (a new
//!   JWKS path or lifetimes; the JWKS file itself is re-read on change anyway), upstream timeouts,
//!   `[log] level` and `access`.
//! - **What needs a restart:** everything [`Config::restart_keys`] names (listeners, ops, TLS
//!   source, `[server]`, Redis, ACME, Fly, the log format, the route cache settings). A file that
//!   changes one of them is refused as a whole, with one log line naming the keys, so the process
//!   never runs a mix of two files.
//! - **A bad file** (syntax, validation, or what `check` also refuses: unreadable certificate
//!   files, an unwritable ACME state dir, a bad JWKS) keeps the running configuration; the log line
//!   carries the same message `check` prints.
//! - **Nothing open is touched.** Each listener's [`Front`] is swapped; a request loads the
//!   current one when it starts and finishes under it; connections and WebSockets stay open.
//!
//! `hubify_config_reloads_total{result}` counts reloads; a successful one sets
//! `hubify_config_last_reload_success_timestamp_seconds`.

use std::path::PathBuf;
use std::sync::Arc;

use hubify_edge_config::{Config, RouteStore as StoreConfig};
use parking_lot::Mutex;

use crate::decide::ListenerMode;
use crate::front::{Front, FrontSlot, Shared};
use crate::metrics::{self, ReloadResult};
use crate::routes::RouteStore;

/// What a reload needs: where the configuration came from, what is in force, and each
/// listener's slot.
pub struct Reloader {
    path: Option<PathBuf>,
    current: Mutex<Arc<Shared>>,
    slots: Vec<(ListenerMode, Arc<FrontSlot>)>,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        current: Arc<Shared>,
        slots: Vec<(ListenerMode, Arc<FrontSlot>)>,
    ) -> Reloader {
        Reloader {
            path,
            current: Mutex::new(current),
            slots,
        }
    }

    fn source(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<embedded default config>".into())
    }

    fn load(&self) -> Result<Config, String> {
        let config = match &self.path {
            Some(p) => Config::from_file(p),
            None => Config::embedded_default(),
        }
        .map_err(|e| e.to_string())?;
        crate::app::preflight(&config)?;
        Ok(config)
    }

    /// Re-reads the configuration and puts it in force when it may be; logs and counts the
    /// result.
    pub fn reload(&self) -> ReloadResult {
        let result = self.try_reload();
        metrics::config_reload(result);
        result
    }

    fn try_reload(&self) -> ReloadResult {
        let source = self.source();
        let new = match self.load() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "configuration not reloaded: invalid configuration: {source}: {e}; \
                     the running configuration stays"
                );
                return ReloadResult::Error;
            }
        };
        let mut current = self.current.lock();
        let keys = current.config.restart_keys(&new);
        if !keys.is_empty() {
            tracing::error!(
                "configuration not reloaded: {source} changes {} which need a restart; the \
                 running configuration stays",
                keys.join(", ")
            );
            return ReloadResult::Refused;
        }
        let routes = match &new.routes.store {
            StoreConfig::Static(routes) => Arc::new(RouteStore::from_static(routes)),
            StoreConfig::Redis => current.routes.clone(),
        };
        let auth = if new.auth == current.config.auth {
            current.auth.clone()
        } else {
            // The session keys stay (random ones too): sessions issued before stay valid.
            let sessions = current.auth.as_ref().map(|a| a.sessions().clone());
            match crate::app::start_auth(&new, sessions) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(
                        "configuration not reloaded: {source}: {e}; the running configuration \
                         stays"
                    );
                    return ReloadResult::Error;
                }
            }
        };
        let shared = Arc::new(Shared {
            config: new,
            routes,
            fly: current.fly.clone(),
            auth,
            limits: current.limits.clone(),
        });
        for (mode, slot) in &self.slots {
            slot.store(Arc::new(Front::new(*mode, shared.clone())));
        }
        crate::logging::set_level(&shared.config.log.level);
        tracing::info!(
            paths = shared.config.paths.len(),
            reserved = shared.config.reserved.len(),
            "configuration reloaded from {source}"
        );
        *current = shared;
        ReloadResult::Ok
    }
}

/// Installs the SIGHUP handler (before returning, so a SIGHUP never ends the process) and
/// reloads on each signal, on a thread of its own.
pub fn on_sighup(reloader: Arc<Reloader>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut hup = runtime.block_on(async { signal(SignalKind::hangup()) })?;
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            runtime.block_on(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    reloader.reload();
                }
            })
        })?;
    Ok(())
}
