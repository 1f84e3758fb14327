//! Log output: `tracing` to stdout as text or JSON, filtered by `[log] level` (or
//! `HUBIFY_EDGE_LOG`, which wins). The filter sits behind a reload handle so a configuration
//! reload (SIGHUP) can change the level of a running process; the format needs a restart.

use std::sync::OnceLock;

use hubify_edge_config::{Config, LogFormat};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The environment variable whose filter overrides `[log] level` (and then reloads keep it).
pub const LOG_ENV: &str = "HUBIFY_EDGE_LOG";

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::try_from_env(LOG_ENV)
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the process's log output. A second call changes nothing.
pub fn init(config: &Config) {
    let (filter, handle) = reload::Layer::new(filter_for(&config.log.level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let fmt = match config.log.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    match tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
    {
        Ok(()) => {
            let _ = FILTER.set(handle);
        }
        Err(e) => eprintln!("hubify-edge: logging not initialised: {e}"),
    }
}

/// Applies a reloaded `[log] level` (unless `HUBIFY_EDGE_LOG` is set, which keeps its filter).
pub fn set_level(level: &str) {
    if std::env::var_os(LOG_ENV).is_some() {
        return;
    }
    if let Some(handle) = FILTER.get() {
        if let Err(e) = handle.reload(filter_for(level)) {
            tracing::error!(error = %e, "log level not changed");
        }
    }
}
