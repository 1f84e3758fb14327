//! hubify-edge configuration: TOML in, a validated, typed [`Config`] out.
//!
//! The file surface ([`surface`]) mirrors the TOML with unknown keys refused; [`Config::from_toml`]
//! checks every cross-field rule and converts into types that cannot hold a bad listener, route or
//! path rule. Every error names the file and the key (`paths[1].prefix`). This crate does no I/O
//! beyond reading the file it is handed ([`Config::from_file`]), never touches the network and
//! never panics on input.

mod duration;
mod route;
pub mod surface;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::{parse_duration, ConfDuration};
pub use route::{is_valid_label, Limits, Route, RouteError};
pub use surface::{Dispatch, DnsProvider, Fallback, LogFormat};

/// The configuration the router runs on when no `--config` is given: local development, one
/// static route, a self-signed certificate, loopback listeners.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../examples/local.toml");

/// A configuration error: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Lower-case, no trailing dot: `hubify.com`.
    pub domain: String,
    pub server: Server,
    pub listeners: Listeners,
    pub ops: Option<SocketAddr>,
    pub tls: Tls,
    pub upstream: Upstream,
    pub redis: Option<Redis>,
    pub routes: Routes,
    /// Sorted longest prefix first, so the first match is the longest.
    pub paths: Vec<PathRule>,
    /// `"@"` is the apex; other keys are reserved labels.
    pub reserved: BTreeMap<String, Reserved>,
    pub fly: Fly,
    pub replay: Replay,
    pub acme: Option<Acme>,
    /// `[auth]`: present when any path rule has `auth = "token"` (and only then required).
    pub auth: Option<Auth>,
    pub log: Log,
    /// `[limits]`: the default per-workspace limits (a route record's own values win).
    pub limits: Limits,
}

/// Who may use a path rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PathAuth {
    /// Anyone (the workspace does its own checks).
    #[default]
    Public,
    /// A Hubify token or the router's session holding this scope.
    Token { scope: std::sync::Arc<str> },
}

/// `[auth]`: how the router verifies the Hubify API's tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// The JWKS file with the API's public keys (re-read when it changes).
    pub jwks: PathBuf,
    /// Tokens valid for longer than this (`exp - iat`) are refused.
    pub max_token_lifetime: Duration,
    /// Lifetime of the router's session cookie.
    pub session_ttl: Duration,
    /// Where a refused browser is sent to get a token (`?return_to=<url>` is appended).
    pub login_url: Option<String>,
    /// Allowed clock skew on `exp`, `nbf` and `iat` (at most 60 s).
    pub leeway: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub threads: usize,
    /// HTTP/1.1 requests and HTTP/2 streams without a request body or upgrade are served by the
    /// router's own code (`h1.rs`, `http2.rs`); `false` sends everything through Pingora's
    /// proxy engine.
    pub fast_path: bool,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    /// A request head must be complete this long after its first byte, or the client gets 408
    /// and the connection closes (nginx's `client_header_timeout`).
    pub header_timeout: Duration,
    /// The Unix socket through which a new process (`run --upgrade`) takes the listening
    /// sockets over from this one. Default: one per instance, named after its ports, in /tmp.
    pub upgrade_socket: PathBuf,
    /// At shutdown, open WebSockets get a `1001 Going Away` close frame on both sides and are
    /// closed once both close handshakes complete, or after this long.
    pub websocket_drain: Duration,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Listeners {
    pub https: Option<HttpsListener>,
    pub http: Option<HttpListener>,
    pub redirect: Option<RedirectListener>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpsListener {
    pub address: SocketAddr,
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpListener {
    pub address: SocketAddr,
    pub dispatch: Dispatch,
    /// Trust Fly's edge headers for the client IP and scheme.
    pub behind_fly: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedirectListener {
    pub address: SocketAddr,
    pub https_port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TlsSource {
    SelfSigned,
    Files {
        cert: PathBuf,
        key: PathBuf,
        reload_interval: Duration,
    },
    Acme,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub source: TlsSource,
    /// `Strict-Transport-Security` sent on every response of the TLS listener (RFC 6797), e.g.
    /// `max-age=31536000; includeSubDomains`. Never sent over plain HTTP.
    pub hsts: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub keepalive_pool: usize,
    pub keepalive_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redis {
    pub url: String,
    pub key_prefix: String,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteStore {
    /// Label → route, from the file.
    Static(Vec<(String, Route)>),
    Redis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Routes {
    pub store: RouteStore,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    pub max_stale: Duration,
    pub cache_capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// Starts with `/`; no trailing `/` except for the root rule itself.
    pub prefix: String,
    pub port: u16,
    pub strip_prefix: bool,
    /// For long-lived connections (WebSockets): the idle timeout on both sides.
    pub idle_timeout: Option<Duration>,
    /// Bounded name for metrics and logs (`terminal`, `dashboard`, `gateway`).
    pub name: String,
    pub auth: PathAuth,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reserved {
    Redirect(String),
    Upstream { addr: SocketAddr, auth: PathAuth },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fly {
    pub internal_dns: SocketAddr,
    pub machines_api: String,
    pub wake_timeout: Duration,
    /// At most this many requests wait for one machine's wake; beyond, 503 at once.
    pub wake_max_pending: usize,
    /// A browser navigation to a stopped workspace gets a "Starting your workspace…" page at
    /// once (it refreshes itself) while the wake runs.
    pub wake_page: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub timeout: Option<Duration>,
    pub fallback: Option<Fallback>,
    /// Zero: no replay cache headers.
    pub cache_ttl: Duration,
    /// `state=<value>` on every replay (from the environment variable `state_key_env` names).
    pub state: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Acme {
    pub directory: String,
    pub contact: Vec<String>,
    pub names: Vec<String>,
    pub state_dir: PathBuf,
    pub ca_bundle: Option<PathBuf>,
    pub check_interval: Duration,
    pub lock_ttl: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Renew when this much validity remains; `None`: when a third of the lifetime remains.
    pub renew_before: Option<Duration>,
    pub dns: AcmeDns,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeDns {
    pub provider: DnsProvider,
    pub server: Option<SocketAddr>,
    pub zone: Option<String>,
    pub tsig_key_name: Option<String>,
    pub tsig_algorithm: String,
    pub zone_id: Option<String>,
    pub api_base: Option<String>,
    pub propagation_server: Option<SocketAddr>,
    pub propagation_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
    pub access: bool,
    /// The access log carries the request path (never the query).
    pub paths: bool,
}

/// `/tmp/hubify-edge-upgrade-<ports>.sock`: the same for every process started on the same
/// listeners (so the next one finds it), apart for instances on other ports.
fn default_upgrade_socket(l: &Listeners, ops: Option<SocketAddr>) -> PathBuf {
    let ports: Vec<String> = [
        l.https.as_ref().map(|x| x.address),
        l.http.as_ref().map(|x| x.address),
        l.redirect.as_ref().map(|x| x.address),
        ops,
    ]
    .iter()
    .map(|a| a.map_or("0".to_string(), |a| a.port().to_string()))
    .collect();
    PathBuf::from(format!("/tmp/hubify-edge-upgrade-{}.sock", ports.join("-")))
}

/// Whether two listening addresses need the same socket: the same port (not 0, which picks a
/// free one) and the same address, or one of them the unspecified address of its family (or
/// `[::]`, which also takes IPv4 on a dual-stack host).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let wide = |x: &SocketAddr, y: &SocketAddr| {
        x.ip().is_unspecified() && (x.is_ipv6() || x.is_ipv4() == y.is_ipv4())
    };
    a.ip() == b.ip() || wide(&a, &b) || wide(&b, &a)
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// `[log] level`: a level, or comma-separated directives `target=level` (the `HUBIFY_EDGE_LOG`
/// syntax). A bare word that is not a level would be read as a target and silence every line.
fn check_log_level(level: &str) -> Result<(), String> {
    let is_level = |l: &str| LEVELS.iter().any(|v| v.eq_ignore_ascii_case(l.trim()));
    for d in level.split(',').map(str::trim) {
        let ok = match d.rsplit_once('=') {
            Some((target, l)) => !target.trim().is_empty() && is_level(l),
            None => is_level(d),
        };
        if !ok {
            return Err(format!(
                "{d:?} is not a level ({}) or a `target=level` directive",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

fn d(v: Option<ConfDuration>, default: Duration) -> Duration {
    v.map(|c| c.0).unwrap_or(default)
}

/// Default name of a path rule for metrics: the first segment, `gateway` for the root.
fn default_rule_name(prefix: &str) -> String {
    let first = prefix
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    if first.is_empty() {
        "gateway".to_string()
    } else {
        first.to_string()
    }
}

/// Checks a `Strict-Transport-Security` value (RFC 6797 §6.1): `max-age=<seconds>` exactly once,
/// optionally `includeSubDomains` and `preload`, separated by `;`.
fn hsts(value: &str) -> Result<(), String> {
    // A header field value as sent: visible ASCII and spaces only.
    if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(format!(
            "{value:?}: only visible ASCII characters and spaces"
        ));
    }
    let mut max_age = false;
    for directive in value.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => {
                let a = a.trim();
                // A quoted value is quoted on both sides.
                let a = match a.strip_prefix('"') {
                    Some(inner) => inner.strip_suffix('"').unwrap_or("\""),
                    None => a,
                };
                (n.trim(), Some(a))
            }
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("max-age") {
            let ok = arg.is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()));
            if !ok || max_age {
                return Err(format!(
                    "\"{value}\": max-age takes a number of seconds, once (max-age=31536000)"
                ));
            }
            max_age = true;
        } else if !(name.eq_ignore_ascii_case("includeSubDomains")
            || name.eq_ignore_ascii_case("preload"))
            || arg.is_some()
        {
            return Err(format!(
                "\"{value}\": unknown directive \"{directive}\" (max-age=<seconds>, \
                 includeSubDomains, preload)"
            ));
        }
    }
    if max_age {
        Ok(())
    } else {
        Err(format!("\"{value}\": needs max-age=<seconds>"))
    }
}

impl Config {
    /// The keys that differ between two configurations and that a running process cannot take
    /// without new sockets or a new process (a reload refuses them; they need a restart). Path
    /// rules, reserved labels, static routes, replay and auth settings, upstream timeouts, `tls.hsts`,
    /// the log level and `log.access` are not among them.
    pub fn restart_keys(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut differ = |key: &'static str, changed: bool| {
            if changed {
                keys.push(key);
            }
        };
        differ("domain", self.domain != new.domain);
        differ("server", self.server != new.server);
        differ("listeners", self.listeners != new.listeners);
        differ("ops", self.ops != new.ops);
        let same_source =
            std::mem::discriminant(&self.tls.source) == std::mem::discriminant(&new.tls.source);
        differ("tls.source", !same_source);
        // The file watcher is started on the paths it was given.
        differ(
            "tls.cert/tls.key/tls.reload_interval",
            same_source && self.tls.source != new.tls.source,
        );
        differ("redis", self.redis != new.redis);
        differ("acme", self.acme != new.acme);
        differ("fly", self.fly != new.fly);
        differ("log.format", self.log.format != new.log.format);
        differ(
            "upstream.keepalive_pool",
            self.upstream.keepalive_pool != new.upstream.keepalive_pool,
        );
        let (a, b) = (&self.routes, &new.routes);
        differ(
            "routes.store",
            matches!(a.store, RouteStore::Redis) != matches!(b.store, RouteStore::Redis),
        );
        differ(
            "routes (cache settings)",
            (a.cache_ttl, a.negative_ttl, a.max_stale, a.cache_capacity)
                != (b.cache_ttl, b.negative_ttl, b.max_stale, b.cache_capacity),
        );
        keys
    }

    /// Reads and validates a file. Errors name the file and the key.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        })?;
        let mut config = Config::from_toml(&text, &file)?;
        // A relative `auth.jwks` names a file beside the config file (as deployed:
        // /etc/hubify-edge/jwks.json next to the TOML).
        if let (Some(auth), Some(dir)) = (config.auth.as_mut(), path.parent()) {
            if auth.jwks.is_relative() {
                auth.jwks = dir.join(&auth.jwks);
            }
        }
        Ok(config)
    }

    /// The embedded local-development configuration.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::from_toml(EMBEDDED_DEFAULT, "<embedded default config>")
    }

    /// Parses and validates TOML text; `file` is only used in error messages.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let raw: surface::File = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            ConfigError {
                file: file.to_string(),
                key: if key == "." { String::new() } else { key },
                message: inner.to_string().trim().to_string(),
            }
        })?;
        Validator { file }.validate(raw)
    }
}

struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    /// `[limits]`: each a whole number from 1 to [`Limits::MAX`].
    fn limits(&self, raw: &surface::Limits) -> Result<Limits, ConfigError> {
        let one = |key: &str, v: Option<i64>| -> Result<Option<u32>, ConfigError> {
            match v {
                None => Ok(None),
                Some(n) if (1..=i64::from(Limits::MAX)).contains(&n) => Ok(Some(n as u32)),
                Some(_) => Err(self.err(
                    format!("limits.{key}"),
                    format!("must be a whole number from 1 to {}", Limits::MAX),
                )),
            }
        };
        let limits = Limits {
            requests_per_second: one("requests_per_second", raw.requests_per_second)?,
            burst: one("burst", raw.burst)?,
            concurrent_requests: one("concurrent_requests", raw.concurrent_requests)?,
            websockets: one("websockets", raw.websockets)?,
        };
        limits
            .check()
            .map_err(|e| self.err(format!("limits.{}", e.field), e.message))?;
        Ok(limits)
    }

    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn validate(&self, raw: surface::File) -> Result<Config, ConfigError> {
        let domain = raw.domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty()
            || domain.len() > 253
            || !domain.contains('.')
            || !domain.split('.').all(is_valid_label)
        {
            return Err(self.err(
                "domain",
                format!(
                    "{:?} is not a DNS name with at least two labels",
                    raw.domain
                ),
            ));
        }

        let threads = raw.server.threads.unwrap_or(2);
        if threads == 0 || threads > 1024 {
            return Err(self.err("server.threads", "must be between 1 and 1024"));
        }
        let mut server = Server {
            threads,
            fast_path: raw.server.fast_path.unwrap_or(true),
            grace_period: d(raw.server.grace_period, Duration::from_secs(5)),
            shutdown_timeout: d(raw.server.shutdown_timeout, Duration::from_secs(30)),
            header_timeout: d(raw.server.header_timeout, Duration::from_secs(60)),
            upgrade_socket: PathBuf::new(),
            websocket_drain: d(raw.server.websocket_drain, Duration::from_secs(5)),
        };
        if raw.server.websocket_drain.is_none() {
            // The default never outlasts a short shutdown bound.
            server.websocket_drain = server.websocket_drain.min(server.shutdown_timeout);
        } else if server.websocket_drain > server.shutdown_timeout {
            return Err(self.err(
                "server.websocket_drain",
                "must not be longer than server.shutdown_timeout (the process ends then)",
            ));
        }
        if server.header_timeout.is_zero() {
            return Err(self.err("server.header_timeout", "must be longer than zero"));
        }

        let ops = raw.ops.map(|o| o.address);
        let listeners = self.listeners(raw.listeners, ops)?;
        server.upgrade_socket = match raw.server.upgrade_socket {
            Some(p) if p.as_os_str().is_empty() || p.is_relative() => {
                return Err(self.err(
                    "server.upgrade_socket",
                    "must be an absolute path (a Unix socket the next process connects to)",
                ))
            }
            // sockaddr_un's path holds 108 bytes with its terminating NUL.
            Some(p) if p.as_os_str().len() > 107 => {
                return Err(self.err(
                    "server.upgrade_socket",
                    "at most 107 bytes (the limit of a Unix socket path)",
                ))
            }
            Some(p) => p,
            None => default_upgrade_socket(&listeners, ops),
        };
        let tls = self.tls(raw.tls)?;

        let upstream = Upstream {
            connect_timeout: d(raw.upstream.connect_timeout, Duration::from_secs(2)),
            read_timeout: d(raw.upstream.read_timeout, Duration::from_secs(60)),
            write_timeout: d(raw.upstream.write_timeout, Duration::from_secs(60)),
            keepalive_pool: raw.upstream.keepalive_pool.unwrap_or(128),
            keepalive_timeout: d(raw.upstream.keepalive_timeout, Duration::from_secs(60)),
        };
        for (key, v) in [
            ("upstream.connect_timeout", upstream.connect_timeout),
            ("upstream.read_timeout", upstream.read_timeout),
            ("upstream.write_timeout", upstream.write_timeout),
        ] {
            if v.is_zero() {
                return Err(self.err(key, "must be greater than zero"));
            }
        }

        let redis = match raw.redis {
            None => None,
            Some(r) => {
                if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://")) {
                    return Err(self.err(
                        "redis.url",
                        format!("{:?} must start with redis:// or rediss://", r.url),
                    ));
                }
                let key_prefix = r.key_prefix.unwrap_or_else(|| "hubify".into());
                if key_prefix.is_empty()
                    || !key_prefix
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
                {
                    return Err(self.err(
                        "redis.key_prefix",
                        "must be non-empty ASCII letters, digits, '-', '_' or '.'",
                    ));
                }
                Some(Redis {
                    url: r.url,
                    key_prefix,
                    command_timeout: d(r.command_timeout, Duration::from_millis(50)),
                    connect_timeout: d(r.connect_timeout, Duration::from_millis(500)),
                })
            }
        };

        let routes = self.routes(raw.routes, redis.is_some())?;
        let paths = self.paths(raw.paths)?;
        let reserved = self.reserved(raw.reserved)?;

        let fly = Fly {
            internal_dns: raw.fly.internal_dns.unwrap_or_else(|| {
                SocketAddr::new(IpAddr::from([0xfdaa, 0, 0, 0, 0, 0, 0, 3]), 53)
            }),
            machines_api: raw
                .fly
                .machines_api
                .unwrap_or_else(|| "http://_api.internal:4280".into()),
            wake_timeout: d(raw.fly.wake_timeout, Duration::from_secs(20)),
            wake_max_pending: match raw.fly.wake_max_pending {
                None => 100,
                Some(n) if (1..=100_000).contains(&n) => n as usize,
                Some(_) => {
                    return Err(self.err(
                        "fly.wake_max_pending",
                        "must be a whole number from 1 to 100000",
                    ))
                }
            },
            wake_page: raw.fly.wake_page.unwrap_or(false),
        };
        if !(fly.machines_api.starts_with("http://") || fly.machines_api.starts_with("https://")) {
            return Err(self.err("fly.machines_api", "must be an http:// or https:// URL"));
        }

        let replay = Replay {
            timeout: raw.replay.timeout.map(|c| c.0),
            fallback: raw.replay.fallback,
            cache_ttl: d(raw.replay.cache_ttl, Duration::ZERO),
            state: match raw.replay.state_key_env {
                None => None,
                Some(var) => Some(self.replay_state(&var)?),
            },
        };
        if replay.state.is_some() && !replay.cache_ttl.is_zero() {
            return Err(self.err(
                "replay.state_key_env",
                "Fly does not accept `state` together with the replay cache (replay.cache_ttl)",
            ));
        }
        if !replay.cache_ttl.is_zero() && replay.cache_ttl < Duration::from_secs(10) {
            return Err(self.err(
                "replay.cache_ttl",
                "Fly requires a replay cache TTL of at least 10s (or 0s to disable)",
            ));
        }
        if let Some(t) = replay.timeout {
            if t.is_zero() {
                return Err(self.err("replay.timeout", "must be greater than zero"));
            }
        }

        let acme = match raw.acme {
            None => None,
            Some(a) => Some(self.acme(a, &domain)?),
        };
        if matches!(tls.source, TlsSource::Acme) && acme.is_none() {
            return Err(self.err("acme", "tls.source = \"acme\" needs an [acme] section"));
        }

        let auth = self.auth(raw.auth, &paths, &reserved)?;

        let level = raw.log.level.unwrap_or_else(|| "info".into());
        if let Err(why) = check_log_level(&level) {
            return Err(self.err("log.level", why));
        }
        let limits = self.limits(&raw.limits)?;
        let log = Log {
            format: raw.log.format.unwrap_or_default(),
            level,
            access: raw.log.access.unwrap_or(true),
            paths: raw.log.paths.unwrap_or(true),
        };

        Ok(Config {
            domain,
            server,
            listeners,
            ops,
            tls,
            upstream,
            redis,
            routes,
            paths,
            reserved,
            fly,
            replay,
            acme,
            auth,
            log,
            limits,
        })
    }

    fn replay_state(&self, var: &str) -> Result<String, ConfigError> {
        let key = "replay.state_key_env";
        let value = std::env::var(var)
            .map_err(|_| self.err(key, format!("the environment variable {var:?} is not set")))?;
        if value.len() < 16
            || value.len() > 128
            || !value
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(self.err(
                key,
                format!("the value of {var:?} must be 16-128 of a-z, A-Z, 0-9, '-', '_'"),
            ));
        }
        Ok(value)
    }

    fn auth(
        &self,
        raw: Option<surface::Auth>,
        paths: &[PathRule],
        reserved: &BTreeMap<String, Reserved>,
    ) -> Result<Option<Auth>, ConfigError> {
        let token = |a: &PathAuth| matches!(a, PathAuth::Token { .. });
        let protected = paths.iter().position(|p| token(&p.auth)).or_else(|| {
            reserved
                .values()
                .position(|r| matches!(r, Reserved::Upstream { auth, .. } if token(auth)))
        });
        let Some(raw) = raw else {
            return match protected {
                Some(_) => Err(self.err(
                    "auth.jwks",
                    "a path rule has auth = \"token\": [auth] jwks must name the JWKS file",
                )),
                None => Ok(None),
            };
        };
        let Some(jwks) = raw.jwks else {
            return Err(self.err(
                "auth.jwks",
                "missing: the JWKS file with the API's public keys",
            ));
        };
        let auth = Auth {
            jwks,
            max_token_lifetime: d(raw.max_token_lifetime, Duration::from_secs(600)),
            session_ttl: d(raw.session_ttl, Duration::from_secs(12 * 3600)),
            login_url: raw.login_url,
            leeway: d(raw.leeway, Duration::from_secs(30)),
        };
        if auth.max_token_lifetime.is_zero() || auth.max_token_lifetime > Duration::from_secs(86400)
        {
            return Err(self.err("auth.max_token_lifetime", "must be between 1s and 1d"));
        }
        if auth.session_ttl.is_zero() || auth.session_ttl > Duration::from_secs(30 * 86400) {
            return Err(self.err("auth.session_ttl", "must be between 1s and 30d"));
        }
        if auth.leeway > Duration::from_secs(60) {
            return Err(self.err("auth.leeway", "must be at most 60s"));
        }
        if let Some(u) = &auth.login_url {
            if !(u.starts_with("https://") || u.starts_with("http://"))
                || u.bytes()
                    .any(|c| c <= b' ' || c == 0x7f || c == b'"' || c == b'<' || c == b'>')
            {
                return Err(self.err("auth.login_url", "must be an http(s):// URL"));
            }
        }
        Ok(Some(auth))
    }

    fn listeners(
        &self,
        raw: surface::Listeners,
        ops: Option<SocketAddr>,
    ) -> Result<Listeners, ConfigError> {
        let https = match raw.https {
            None => None,
            Some(h) => {
                if let Some(dispatch) = h.dispatch {
                    if dispatch != Dispatch::Forward {
                        return Err(self.err(
                            "listeners.https.dispatch",
                            "the TLS listener can only forward: fly-replay is honoured only \
                             behind Fly's http handler (use it on listeners.http)",
                        ));
                    }
                }
                Some(HttpsListener {
                    address: h.address,
                    proxy_protocol: h.proxy_protocol,
                })
            }
        };
        let http = raw.http.map(|h| {
            let dispatch = h.dispatch.unwrap_or(Dispatch::Forward);
            HttpListener {
                address: h.address,
                dispatch,
                // Replay only makes sense behind Fly's http handler, so trust its headers there.
                behind_fly: h.behind_fly.unwrap_or(dispatch != Dispatch::Forward),
            }
        });
        let redirect = raw.redirect.map(|r| RedirectListener {
            address: r.address,
            https_port: r.https_port.unwrap_or(443),
        });
        if https.is_none() && http.is_none() {
            return Err(self.err(
                "listeners",
                "at least one of [listeners.https] and [listeners.http] is needed",
            ));
        }
        if let Some(r) = &redirect {
            if r.https_port == 0 {
                return Err(self.err("listeners.redirect.https_port", "must not be 0"));
            }
        }
        let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
        for (addr, key) in [
            (https.as_ref().map(|l| l.address), "listeners.https.address"),
            (http.as_ref().map(|l| l.address), "listeners.http.address"),
            (
                redirect.as_ref().map(|l| l.address),
                "listeners.redirect.address",
            ),
            (ops, "ops.address"),
        ] {
            let Some(addr) = addr else { continue };
            if let Some((other_addr, other)) = seen.iter().find(|(a, _)| overlaps(*a, addr)) {
                return Err(self.err(
                    key,
                    format!(
                        "{addr} overlaps `{other}` ({other_addr}): one socket cannot serve both"
                    ),
                ));
            }
            seen.push((addr, key));
        }
        Ok(Listeners {
            https,
            http,
            redirect,
        })
    }

    fn tls(&self, raw: surface::Tls) -> Result<Tls, ConfigError> {
        let source = raw.source.unwrap_or(surface::TlsSource::SelfSigned);
        let source = match source {
            surface::TlsSource::SelfSigned => {
                self.no_files(&raw.cert, &raw.key, "self-signed")?;
                TlsSource::SelfSigned
            }
            surface::TlsSource::Acme => {
                self.no_files(&raw.cert, &raw.key, "acme")?;
                TlsSource::Acme
            }
            surface::TlsSource::Files => {
                let cert = raw.cert.filter(|c| !c.is_empty()).ok_or_else(|| {
                    self.err(
                        "tls.cert",
                        "missing: tls.source = \"files\" needs the PEM chain path",
                    )
                })?;
                let key = raw.key.filter(|k| !k.is_empty()).ok_or_else(|| {
                    self.err(
                        "tls.key",
                        "missing: tls.source = \"files\" needs the PEM key path",
                    )
                })?;
                let reload_interval = d(raw.reload_interval, Duration::from_secs(1));
                if reload_interval.is_zero() {
                    return Err(self.err("tls.reload_interval", "must be greater than zero"));
                }
                TlsSource::Files {
                    cert: cert.into(),
                    key: key.into(),
                    reload_interval,
                }
            }
        };
        let hsts = raw.hsts.map(|v| hsts(&v).map(|()| v));
        let hsts = hsts.transpose().map_err(|why| self.err("tls.hsts", why))?;
        Ok(Tls { source, hsts })
    }

    fn no_files(
        &self,
        cert: &Option<String>,
        key: &Option<String>,
        source: &str,
    ) -> Result<(), ConfigError> {
        if cert.is_some() {
            return Err(self.err(
                "tls.cert",
                format!("only used with tls.source = \"files\" (source is \"{source}\")"),
            ));
        }
        if key.is_some() {
            return Err(self.err(
                "tls.key",
                format!("only used with tls.source = \"files\" (source is \"{source}\")"),
            ));
        }
        Ok(())
    }

    fn routes(&self, raw: Option<surface::Routes>, has_redis: bool) -> Result<Routes, ConfigError> {
        const WHERE: &str = "say where routes come from: [routes] store = \"redis\", or \
                             store = \"static\" with [[routes.static]] entries (an empty static \
                             store is fine when written)";
        let raw = raw.ok_or_else(|| self.err("routes", format!("missing: {WHERE}")))?;
        let store = match raw.store {
            Some(store) => store,
            // Static entries say it by themselves.
            None if !raw.static_routes.is_empty() => surface::Store::Static,
            None => return Err(self.err("routes.store", format!("missing: {WHERE}"))),
        };
        let store = match store {
            surface::Store::Redis => {
                if !has_redis {
                    return Err(self.err(
                        "routes.store",
                        "\"redis\" needs a [redis] section with its url",
                    ));
                }
                if !raw.static_routes.is_empty() {
                    return Err(self.err(
                        "routes.static",
                        "static routes are only used with routes.store = \"static\"",
                    ));
                }
                RouteStore::Redis
            }
            surface::Store::Static => {
                let mut seen = HashSet::new();
                let mut out = Vec::with_capacity(raw.static_routes.len());
                for (i, r) in raw.static_routes.into_iter().enumerate() {
                    if !is_valid_label(&r.label) {
                        return Err(self.err(
                            format!("routes.static[{i}].label"),
                            format!(
                                "{:?} is not one lower-case DNS label (a-z, 0-9, '-', at most 63)",
                                r.label
                            ),
                        ));
                    }
                    if !seen.insert(r.label.clone()) {
                        return Err(self.err(
                            format!("routes.static[{i}].label"),
                            format!("duplicate label {:?}", r.label),
                        ));
                    }
                    let route = Route::new(
                        r.app.as_deref(),
                        r.machine_id.as_deref(),
                        r.region.as_deref(),
                        r.address.as_deref(),
                    )
                    .map_err(|e| self.err(format!("routes.static[{i}].{}", e.field), e.message))?;
                    out.push((r.label, route));
                }
                RouteStore::Static(out)
            }
        };
        let routes = Routes {
            store,
            cache_ttl: d(raw.cache_ttl, Duration::from_secs(30)),
            negative_ttl: d(raw.negative_ttl, Duration::from_secs(5)),
            max_stale: d(raw.max_stale, Duration::from_secs(3600)),
            cache_capacity: raw.cache_capacity.unwrap_or(100_000),
        };
        if routes.cache_capacity == 0 {
            return Err(self.err("routes.cache_capacity", "must be at least 1"));
        }
        if routes.cache_ttl.is_zero() {
            return Err(self.err("routes.cache_ttl", "must be greater than zero"));
        }
        Ok(routes)
    }

    fn paths(&self, raw: Option<surface::Paths>) -> Result<Vec<PathRule>, ConfigError> {
        let raw = match raw {
            Some(surface::Paths::Rules(rules)) => Some(rules),
            Some(surface::Paths::Standard) => None,
            None => return Err(self.err(
                "paths",
                "missing: no [[paths]] rules; write them, or paths = \"standard\" (a top-level \
                     key) for /terminal → 8080 (prefix stripped), /dashboard → 3001, / → 3000",
            )),
        };
        let raw = raw.unwrap_or_else(|| {
            vec![
                surface::Path {
                    prefix: "/terminal".into(),
                    port: 8080,
                    strip_prefix: true,
                    idle_timeout: Some(ConfDuration(Duration::from_secs(3600))),
                    name: None,
                    auth: None,
                    scope: None,
                },
                surface::Path {
                    prefix: "/dashboard".into(),
                    port: 3001,
                    strip_prefix: false,
                    idle_timeout: None,
                    name: None,
                    auth: None,
                    scope: None,
                },
                surface::Path {
                    prefix: "/".into(),
                    port: 3000,
                    strip_prefix: false,
                    idle_timeout: None,
                    name: None,
                    auth: None,
                    scope: None,
                },
            ]
        });
        let mut rules: Vec<PathRule> = Vec::with_capacity(raw.len());
        for (i, p) in raw.into_iter().enumerate() {
            let key = |f: &str| format!("paths[{i}].{f}");
            if !p.prefix.starts_with('/') {
                return Err(self.err(key("prefix"), format!("{:?} must start with '/'", p.prefix)));
            }
            if p.prefix
                .bytes()
                .any(|c| c <= b' ' || c == 0x7f || c == b'?' || c == b'#')
            {
                return Err(self.err(
                    key("prefix"),
                    format!(
                        "{:?} may not contain spaces, control characters, '?' or '#'",
                        p.prefix
                    ),
                ));
            }
            let prefix = if p.prefix.len() > 1 {
                p.prefix.trim_end_matches('/').to_string()
            } else {
                p.prefix.clone()
            };
            if prefix.is_empty() {
                return Err(self.err(key("prefix"), "must not be only slashes; use \"/\""));
            }
            if p.port == 0 {
                return Err(self.err(key("port"), "must be between 1 and 65535"));
            }
            if let Some(t) = p.idle_timeout {
                if t.0.is_zero() {
                    return Err(self.err(key("idle_timeout"), "must be greater than zero"));
                }
            }
            let name = match p.name {
                Some(n) => {
                    if n.is_empty()
                        || n.len() > 32
                        || !n
                            .bytes()
                            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                    {
                        return Err(self.err(key("name"), "must be 1-32 of a-z, 0-9, '_', '-'"));
                    }
                    n
                }
                None => default_rule_name(&prefix),
            };
            let auth = self.path_auth(&key(""), p.auth, p.scope)?;
            if let Some(j) = rules.iter().position(|r| r.prefix == prefix) {
                return Err(self.err(
                    key("prefix"),
                    format!("{prefix:?} is already the prefix of paths[{j}]"),
                ));
            }
            rules.push(PathRule {
                prefix,
                port: p.port,
                strip_prefix: p.strip_prefix,
                idle_timeout: p.idle_timeout.map(|c| c.0),
                name,
                auth,
            });
        }
        if rules.is_empty() {
            return Err(self.err("paths", "at least one path rule is needed (prefix \"/\")"));
        }
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(rules)
    }

    /// `auth` and `scope` of a path rule or a reserved upstream; `key("auth")` names the keys.
    fn path_auth(
        &self,
        prefix: &str,
        auth: Option<String>,
        scope: Option<String>,
    ) -> Result<PathAuth, ConfigError> {
        let key = |f: &str| format!("{prefix}{f}");
        Ok(match (auth.as_deref(), scope) {
            (None | Some("public"), None) => PathAuth::Public,
            (None | Some("public"), Some(_)) => {
                return Err(self.err(key("scope"), "applies only with auth = \"token\""))
            }
            (Some("token"), None) => {
                return Err(self.err(
                    key("scope"),
                    "auth = \"token\" needs the scope a token must hold (\"terminal\")",
                ))
            }
            (Some("token"), Some(scope)) => {
                if scope.is_empty()
                    || scope.len() > 64
                    || !scope
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"_-.:".contains(&c))
                {
                    return Err(self.err(
                        key("scope"),
                        "must be 1-64 of a-z, A-Z, 0-9, '_', '-', '.', ':' (one scope name)",
                    ));
                }
                PathAuth::Token {
                    scope: scope.into(),
                }
            }
            (Some(other), _) => {
                return Err(self.err(
                    key("auth"),
                    format!("{other:?} is not \"public\" or \"token\""),
                ))
            }
        })
    }

    fn reserved(
        &self,
        raw: BTreeMap<String, surface::Reserved>,
    ) -> Result<BTreeMap<String, Reserved>, ConfigError> {
        let mut out = BTreeMap::new();
        for (label, r) in raw {
            let key = format!("reserved.{label}");
            if label != "@" && !is_valid_label(&label) {
                return Err(self.err(&key, "must be \"@\" (the apex) or one lower-case DNS label"));
            }
            let has_auth = r.auth.is_some() || r.scope.is_some();
            let v = match (r.redirect, r.upstream) {
                (Some(url), None) => {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(
                            self.err(format!("{key}.redirect"), "must be an http(s):// URL")
                        );
                    }
                    Reserved::Redirect(url.trim_end_matches('/').to_string())
                }
                (None, Some(addr)) => Reserved::Upstream {
                    addr,
                    auth: self.path_auth(&format!("{key}."), r.auth, r.scope)?,
                },
                _ => return Err(self.err(&key, "needs exactly one of `redirect` and `upstream`")),
            };
            if matches!(v, Reserved::Redirect(_)) && has_auth {
                return Err(self.err(format!("{key}.auth"), "applies only to an `upstream`"));
            }
            out.insert(label, v);
        }
        Ok(out)
    }

    fn acme(&self, a: surface::Acme, domain: &str) -> Result<Acme, ConfigError> {
        if !a.directory.starts_with("https://") && !a.directory.starts_with("http://") {
            return Err(self.err("acme.directory", "must be an https:// URL"));
        }
        let names = a
            .names
            .unwrap_or_else(|| vec![format!("*.{domain}"), domain.to_string()]);
        if names.is_empty() {
            return Err(self.err("acme.names", "must name at least one DNS name"));
        }
        for (i, n) in names.iter().enumerate() {
            let bare = n.strip_prefix("*.").unwrap_or(n);
            if !bare.split('.').all(is_valid_label) {
                return Err(self.err(
                    format!("acme.names[{i}]"),
                    format!("{n:?} is not a DNS name"),
                ));
            }
        }
        let dns = a.dns;
        match dns.provider {
            DnsProvider::Rfc2136 => {
                if dns.server.is_none() {
                    return Err(self.err(
                        "acme.dns.server",
                        "missing: the rfc2136 provider needs the DNS server address",
                    ));
                }
                if dns.zone.is_none() {
                    return Err(self.err(
                        "acme.dns.zone",
                        "missing: the rfc2136 provider needs the zone",
                    ));
                }
                if dns.tsig_key_name.is_none() {
                    return Err(self.err(
                        "acme.dns.tsig_key_name",
                        "missing: the rfc2136 provider needs a TSIG key name",
                    ));
                }
            }
            DnsProvider::Cloudflare => {
                if dns.zone_id.is_none() {
                    return Err(self.err(
                        "acme.dns.zone_id",
                        "missing: the cloudflare provider needs the zone id",
                    ));
                }
            }
        }
        let tsig_algorithm = dns.tsig_algorithm.unwrap_or_else(|| "hmac-sha256".into());
        if !matches!(tsig_algorithm.as_str(), "hmac-sha256" | "hmac-sha512") {
            return Err(self.err(
                "acme.dns.tsig_algorithm",
                "must be \"hmac-sha256\" or \"hmac-sha512\"",
            ));
        }
        let check_interval = d(a.check_interval, Duration::from_secs(3600));
        let lock_ttl = d(a.lock_ttl, Duration::from_secs(600));
        let retry_initial = d(a.retry_initial, Duration::from_secs(60));
        let retry_max = d(a.retry_max, Duration::from_secs(3600));
        let propagation_timeout = d(dns.propagation_timeout, Duration::from_secs(120));
        for (key, v) in [
            ("acme.check_interval", check_interval),
            ("acme.retry_initial", retry_initial),
            ("acme.dns.propagation_timeout", propagation_timeout),
        ] {
            if v.is_zero() {
                return Err(self.err(key, "must be greater than zero"));
            }
        }
        if lock_ttl < Duration::from_secs(5) {
            return Err(self.err(
                "acme.lock_ttl",
                "must be at least 5s (it is extended while an issuance runs)",
            ));
        }
        if retry_max < retry_initial {
            return Err(self.err(
                "acme.retry_max",
                "must not be shorter than acme.retry_initial",
            ));
        }
        if let Some(api) = &dns.api_base {
            if !api.starts_with("https://") && !api.starts_with("http://") {
                return Err(self.err("acme.dns.api_base", "must be an https:// URL"));
            }
        }
        if a.state_dir.is_empty() {
            return Err(self.err("acme.state_dir", "must not be empty"));
        }
        Ok(Acme {
            directory: a.directory,
            contact: a.contact,
            names,
            state_dir: a.state_dir.into(),
            ca_bundle: a.ca_bundle.map(Into::into),
            check_interval,
            lock_ttl,
            retry_initial,
            retry_max,
            renew_before: a.renew_before.map(|c| c.0),
            dns: AcmeDns {
                provider: dns.provider,
                server: dns.server,
                zone: dns.zone,
                tsig_key_name: dns.tsig_key_name,
                tsig_algorithm,
                zone_id: dns.zone_id,
                api_base: dns.api_base,
                propagation_server: dns.propagation_server,
                propagation_timeout,
            },
        })
    }
}

#[cfg(test)]
mod tests;
