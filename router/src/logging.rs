//! Log output: `tracing` to stdout as text or JSON, filtered by `[log] level` (or
//! `HUBIFY_EDGE_LOG`, which wins). The filter sits behind a reload handle so a configuration
//! reload (SIGHUP) can change the level of a running process; the format needs a restart.
//!
//! In JSON, access lines (target `access`) are written by [`AccessJson`]: every field the line
//! declares is present, `null` when the request has no value for it (tracing's own JSON output
//! leaves such fields out).

use std::sync::OnceLock;

use hubify_edge_config::{Config, LogFormat};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The target of access-log lines.
pub const ACCESS: &str = "access";

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
    let (fmt, access) = match config.log.format {
        LogFormat::Json => (
            fmt.json()
                .flatten_event(true)
                .with_filter(filter_fn(|m| m.target() != ACCESS))
                .boxed(),
            Some(AccessJson),
        ),
        LogFormat::Text => (fmt.boxed(), None),
    };
    match tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(access)
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

/// Writes access lines as JSON objects with every declared field (`null` when not recorded),
/// laid out as tracing's flattened JSON lines are: `timestamp`, `level`, `target`, the fields.
pub struct AccessJson;

impl<S: tracing::Subscriber> Layer<S> for AccessJson {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != ACCESS {
            return;
        }
        let mut line = access_json(event);
        line.push(b'\n');
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), &line);
    }
}

/// The JSON object of one access event.
fn access_json(event: &tracing::Event<'_>) -> Vec<u8> {
    use serde_json::{Map, Value};
    let mut map = Map::new();
    map.insert(
        "timestamp".into(),
        Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    );
    map.insert(
        "level".into(),
        Value::String(event.metadata().level().as_str().into()),
    );
    map.insert("target".into(), Value::String(ACCESS.into()));
    for field in event.metadata().fields() {
        map.insert(field.name().into(), Value::Null);
    }
    event.record(&mut JsonFields(&mut map));
    serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Captures the JSON of access events.
    struct Capture(Arc<Mutex<Vec<serde_json::Value>>>);

    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            let v = serde_json::from_slice(&access_json(event)).expect("valid JSON");
            self.0.lock().expect("lock").push(v);
        }
    }

    #[test]
    fn missing_values_are_null_and_present_ones_typed() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let upstream: Option<std::net::SocketAddr> = None;
            tracing::info!(
                target: "access",
                status = 200u16,
                path = Some("/x"),
                label = None::<&str>,
                upstream = upstream.map(tracing::field::display),
                duration_ms = 1.5,
                "request"
            );
        });
        let seen = seen.lock().expect("lock");
        let line = &seen[0];
        assert_eq!(line["status"], 200);
        assert_eq!(line["path"], "/x");
        assert!(line["label"].is_null(), "{line}");
        assert!(line["upstream"].is_null(), "{line}");
        assert_eq!(line["duration_ms"], 1.5);
        assert_eq!(line["message"], "request");
        assert_eq!(line["target"], "access");
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
