//! Assembles the Pingora server from a validated [`Config`]: listeners, certificate sources,
//! the route store and the ops endpoint. All start-up failures are returned, not panicked.

use std::sync::Arc;
use std::time::Duration;

use hubify_edge_acme::{self_signed, CertResolver, FileWatcher};
use hubify_edge_config::{Config, TlsSource};
use pingora_core::apps::http_app::HttpServer;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use pingora_proxy::http_proxy;

use crate::conn::EdgeApp;
use crate::decide::ListenerMode;
use crate::front::{Front, FrontSlot, Shared};
use crate::listen::EdgeListener;
use crate::ops::OpsApp;
use crate::proxy::EdgeProxy;
use crate::redirect::RedirectApp;
use crate::routes::RouteStore;

/// A start-up failure, said plainly.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("certificate: {0}")]
    Cert(#[from] hubify_edge_acme::CertError),
    #[error("ACME: {0}")]
    Acme(#[from] hubify_edge_acme::AcmeError),
    #[error("listener setup: {0}")]
    Listener(String),
    #[error("route store: {0}")]
    Routes(#[from] crate::routes::redis::RedisStoreError),
    #[error("{0}")]
    Auth(String),
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Pingora's server settings from ours. Its defaults (one thread, a 300 s grace period) are never
/// left implicit.
pub fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.server.threads,
        // Pingora's grace period is how long requests in flight may run after the listeners
        // close; `shutdown::Signals` ends the process earlier once nothing is in flight.
        grace_period_seconds: Some(whole_seconds(config.server.shutdown_timeout)),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: config.upstream.keepalive_pool,
        // Each worker thread runs its own single-threaded runtime and keeps the connections it
        // accepted (as nginx's workers do). Measured here (benches/load/cpu.sh, one worker,
        // plain forward): ~15 % less CPU per request than tokio's work-stealing runtime, whose
        // cross-thread wake-ups cost on every upstream/downstream hand-over (docs/performance.md).
        work_stealing: false,
        upgrade_sock: config.server.upgrade_socket.display().to_string(),
        ..ServerConf::default()
    }
}

/// Loads the first certificate of the configured source into a new resolver, and starts the
/// watcher that keeps it current.
pub fn certificates(config: &Config) -> Result<Arc<CertResolver>, StartError> {
    let resolver = Arc::new(CertResolver::new());
    match &config.tls.source {
        TlsSource::SelfSigned => {
            let (cert, _pem) = self_signed(&config.domain)?;
            tracing::info!(
                domain = %config.domain,
                "self-signed certificate generated fingerprint={} (clients must trust it explicitly)",
                cert.info.fingerprint
            );
            resolver.set(vec![cert]);
        }
        TlsSource::Files {
            cert,
            key,
            reload_interval,
        } => {
            let mut watcher = FileWatcher::new(cert.clone(), key.clone(), resolver.clone());
            watcher.poll()?;
            let interval = *reload_interval;
            std::thread::Builder::new()
                .name("cert-files".into())
                .spawn(move || watcher.run(interval))
                .map_err(|e| {
                    StartError::Listener(format!("cannot start the certificate watcher: {e}"))
                })?;
        }
        TlsSource::Acme => {
            // Serves the stored certificate (state dir) at once when there is one; otherwise the
            // listener fails handshakes and /readyz says "certificate" until the first issuance.
            hubify_edge_acme::metrics::on_renewal(|ok| {
                crate::metrics::renewal(if ok {
                    crate::metrics::RenewalResult::Ok
                } else {
                    crate::metrics::RenewalResult::Error
                })
            });
            hubify_edge_acme::start(config, resolver.clone())?;
        }
    }
    Ok(resolver)
}

/// One listener's application: the HTTP/1.1 fast path in front of Pingora's proxy, both routing
/// through the same [`Front`].
fn edge_app(
    conf: &Arc<ServerConf>,
    mode: ListenerMode,
    shared: &Arc<Shared>,
    slots: &mut Vec<(ListenerMode, Arc<FrontSlot>)>,
) -> EdgeApp {
    let front = Arc::new(FrontSlot::from_pointee(Front::new(mode, shared.clone())));
    slots.push((mode, front.clone()));
    let pingora = http_proxy(conf, EdgeProxy::new(front.clone()));
    EdgeApp::new(front, pingora, shared.config.server.fast_path)
}

/// What `run` would refuse at start besides the configuration itself, checked without binding a
/// socket or changing anything: the certificate files, the ACME state directory, the JWKS, the
/// session keys. `check` runs it; so does `run`, before anything starts. The error names the key.
pub fn preflight(config: &Config) -> Result<(), String> {
    match &config.tls.source {
        TlsSource::Files { cert, key, .. } => {
            FileWatcher::new(cert.clone(), key.clone(), Arc::new(CertResolver::new()))
                .poll()
                .map_err(|e| format!("`tls.cert`/`tls.key`: {e}"))?;
        }
        TlsSource::SelfSigned | TlsSource::Acme => {}
    }
    if let (TlsSource::Acme, Some(acme)) = (&config.tls.source, &config.acme) {
        writable_dir(&acme.state_dir)
            .map_err(|e| format!("`acme.state_dir`: {}: {e}", acme.state_dir.display()))?;
    }
    if let Some(auth) = &config.auth {
        crate::auth::Keys::load(&auth.jwks).map_err(|e| e.to_string())?;
        if std::env::var_os(crate::auth::SESSION_KEY_ENV).is_some() {
            crate::auth::SessionKeys::from_env().map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// A directory the process can write to, or could create (its nearest existing ancestor is
/// writable). Probes with a file it removes at once; creates nothing else.
fn writable_dir(dir: &std::path::Path) -> Result<(), String> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = std::path::Path::new(".");
                break;
            }
        }
    }
    if !at.is_dir() {
        return Err(format!("{} is not a directory", at.display()));
    }
    let probe = at.join(format!(".hubify-edge-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("cannot write in {}: {e}", at.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The access checker of `[auth]`: the JWKS file loaded and watched, the session keys read.
/// `sessions`: the session keys to keep (a reload), else they come from the environment.
pub fn start_auth(
    config: &Config,
    sessions: Option<crate::auth::SessionKeys>,
) -> Result<Option<Arc<crate::auth::Auth>>, StartError> {
    use crate::auth::{Auth, SessionKeys, SESSION_KEY_ENV};
    let Some(conf) = &config.auth else {
        return Ok(None);
    };
    let reused = sessions.is_some();
    let keys = match sessions {
        Some(keys) => keys,
        None => SessionKeys::from_env().map_err(|e| StartError::Auth(e.to_string()))?,
    };
    if keys.ephemeral && !reused {
        tracing::warn!(
            "{SESSION_KEY_ENV} is not set: sessions are signed with a random key and hold only \
             on this process (set the same key on every replica)"
        );
    }
    let auth =
        Arc::new(Auth::new(conf.clone(), keys).map_err(|e| StartError::Auth(e.to_string()))?);
    auth.watch(std::time::Duration::from_secs(1))
        .map_err(|e| StartError::Auth(format!("cannot start the JWKS watcher: {e}")))?;
    Ok(Some(auth))
}

/// Builds the whole server; `run_forever` on the result serves until SIGTERM. `path` is where
/// the configuration came from (`None`: the embedded default): SIGHUP re-reads it.
/// `upgrade`: take the listening sockets from the running instance (`run --upgrade`) when the
/// caller bootstraps the returned server (`Server::bootstrap`), which it does last, after asking
/// the running instance to hand them over.
pub fn build(
    config: Config,
    path: Option<std::path::PathBuf>,
    upgrade: bool,
) -> Result<Server, StartError> {
    crate::metrics::init();
    let opt = pingora_core::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    // Not bootstrapped here: with `upgrade`, bootstrapping takes the running process's sockets,
    // which must happen only once everything that can fail has been built (the caller does it).
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(&config));
    let conf = server.configuration.clone();

    let certs = match &config.listeners.https {
        Some(_) => Some(certificates(&config)?),
        None => None,
    };
    let routes = RouteStore::from_config(&config)?;
    let listeners = config.listeners.clone();
    let ops_addr = config.ops;
    let fly = crate::fly::FlyNet::new(&config.fly, config.upstream.connect_timeout)
        .map_err(StartError::Listener)?;
    let auth = start_auth(&config, None)?;
    if matches!(
        config.routes.store,
        hubify_edge_config::RouteStore::Static(_)
    ) {
        // A static store is always "connected": the route store alert never fires for it.
        crate::metrics::ROUTE_CACHE.static_store();
    }
    let shared = Arc::new(Shared {
        config,
        routes: Arc::new(routes),
        fly: Arc::new(fly),
        auth,
        limits: Default::default(),
    });
    let mut slots = Vec::new();

    if let (Some(https), Some(certs)) = (&listeners.https, &certs) {
        let acceptor = crate::tls::acceptor(certs.clone())
            .map_err(|e| StartError::Listener(format!("TLS settings: {e}")))?;
        let tls = crate::listen::Tls {
            acceptor,
            proxy_protocol: https.proxy_protocol,
        };
        let app = edge_app(&conf, ListenerMode::Tls, &shared, &mut slots);
        let svc = EdgeListener::new("https", https.address, app, Some(tls));
        tracing::info!(address = %https.address, proxy_protocol = https.proxy_protocol, "https listener");
        server.add_service(svc);
    }
    if let Some(http) = &listeners.http {
        // Its own accept loop (see listen.rs): small per-connection state for idle keep-alive.
        let app = edge_app(
            &conf,
            ListenerMode::Plain(http.dispatch),
            &shared,
            &mut slots,
        );
        let svc = EdgeListener::new("http", http.address, app, None);
        tracing::info!(address = %http.address, dispatch = ?http.dispatch, behind_fly = http.behind_fly, "http listener");
        server.add_service(svc);
    }
    if let Some(redirect) = &listeners.redirect {
        let app = RedirectApp::new(redirect.https_port);
        let mut svc = Service::new("redirect".to_string(), HttpServer::new_app(app));
        svc.add_tcp(&redirect.address.to_string());
        tracing::info!(address = %redirect.address, "redirect listener");
        server.add_service(svc);
    }
    if let Some(addr) = ops_addr {
        let mut serving = Vec::new();
        if let Some(l) = &listeners.https {
            serving.push(("listener_https", l.address));
        }
        if let Some(l) = &listeners.http {
            serving.push(("listener_http", l.address));
        }
        if let Some(l) = &listeners.redirect {
            serving.push(("listener_redirect", l.address));
        }
        let current = slots.first().map(|(_, slot)| slot.clone());
        let app = OpsApp::new(shared.clone(), current, certs.clone(), serving);
        let mut svc = Service::new("ops".to_string(), HttpServer::new_app(app));
        svc.add_tcp(&addr.to_string());
        tracing::info!(address = %addr, "ops listener");
        server.add_service(svc);
    }
    let reloader = crate::reload::Reloader::new(path, shared, slots);
    crate::reload::on_sighup(Arc::new(reloader))
        .map_err(|e| StartError::Listener(format!("cannot install the SIGHUP handler: {e}")))?;
    Ok(server)
}
