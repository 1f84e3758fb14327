//! The file as written: serde structs that mirror the TOML, every table `deny_unknown_fields`.
//! Nothing here is trusted; [`crate::Config::from_toml`] turns it into the validated model.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::duration::ConfDuration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub domain: String,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub listeners: Listeners,
    pub ops: Option<Ops>,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub upstream: Upstream,
    pub redis: Option<Redis>,
    pub routes: Option<Routes>,
    pub paths: Option<Paths>,
    #[serde(default)]
    pub reserved: BTreeMap<String, Reserved>,
    #[serde(default)]
    pub fly: Fly,
    #[serde(default)]
    pub replay: Replay,
    pub acme: Option<Acme>,
    pub auth: Option<Auth>,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub limits: Limits,
}

/// `[limits]`: the default per-workspace limits (per replica); off unless set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub requests_per_second: Option<i64>,
    pub burst: Option<i64>,
    pub concurrent_requests: Option<i64>,
    pub websockets: Option<i64>,
}

/// `[auth]`: verifying the Hubify API's tokens for protected path rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub jwks: Option<PathBuf>,
    pub max_token_lifetime: Option<ConfDuration>,
    pub session_ttl: Option<ConfDuration>,
    pub login_url: Option<String>,
    pub leeway: Option<ConfDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub threads: Option<usize>,
    /// `http1_fast_path` was its name before it covered HTTP/2 streams too; still accepted.
    #[serde(alias = "http1_fast_path")]
    pub fast_path: Option<bool>,
    pub grace_period: Option<ConfDuration>,
    pub shutdown_timeout: Option<ConfDuration>,
    pub header_timeout: Option<ConfDuration>,
    pub upgrade_socket: Option<std::path::PathBuf>,
    pub websocket_drain: Option<ConfDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    pub https: Option<HttpsListener>,
    pub http: Option<HttpListener>,
    pub redirect: Option<RedirectListener>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    Forward,
    Replay,
    Auto,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsListener {
    pub address: SocketAddr,
    #[serde(default)]
    pub proxy_protocol: bool,
    pub dispatch: Option<Dispatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpListener {
    pub address: SocketAddr,
    pub dispatch: Option<Dispatch>,
    /// Trust Fly's edge headers (`Fly-Client-IP`, `X-Forwarded-Proto`) on this listener.
    pub behind_fly: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectListener {
    pub address: SocketAddr,
    pub https_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ops {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsSource {
    SelfSigned,
    Files,
    Acme,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub source: Option<TlsSource>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub reload_interval: Option<ConfDuration>,
    pub hsts: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub connect_timeout: Option<ConfDuration>,
    pub read_timeout: Option<ConfDuration>,
    pub write_timeout: Option<ConfDuration>,
    pub keepalive_pool: Option<usize>,
    pub keepalive_timeout: Option<ConfDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub url: String,
    pub key_prefix: Option<String>,
    pub command_timeout: Option<ConfDuration>,
    pub connect_timeout: Option<ConfDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    Static,
    Redis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    pub store: Option<Store>,
    pub cache_ttl: Option<ConfDuration>,
    pub negative_ttl: Option<ConfDuration>,
    pub max_stale: Option<ConfDuration>,
    pub cache_capacity: Option<usize>,
    #[serde(default, rename = "static")]
    pub static_routes: Vec<StaticRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    pub label: String,
    pub address: Option<String>,
    pub app: Option<String>,
    pub machine_id: Option<String>,
    pub region: Option<String>,
}

/// `[[paths]]` tables, or `paths = "standard"` for the standard rules.
#[derive(Debug)]
pub enum Paths {
    Standard,
    Rules(Vec<Path>),
}

impl<'de> Deserialize<'de> for Paths {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Paths, D::Error> {
        use serde::de::{self, SeqAccess, Unexpected, Visitor};
        struct Expect;
        impl<'de> Visitor<'de> for Expect {
            type Value = Paths;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("[[paths]] tables, or \"standard\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Paths, E> {
                match v {
                    "standard" => Ok(Paths::Standard),
                    _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Paths, A::Error> {
                Vec::<Path>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(Paths::Rules)
            }
        }
        d.deserialize_any(Expect)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Path {
    pub prefix: String,
    pub port: u16,
    #[serde(default)]
    pub strip_prefix: bool,
    pub idle_timeout: Option<ConfDuration>,
    pub name: Option<String>,
    /// `"public"` (the default) or `"token"`.
    pub auth: Option<String>,
    /// The scope a token or session must hold (`auth = "token"` only).
    pub scope: Option<String>,
}

/// The apex (`@`) or a reserved label (`www`, `api`): not a workspace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reserved {
    /// 308 to this URL prefix (path and query appended).
    pub redirect: Option<String>,
    /// Or forward to this fixed upstream (`ip:port`).
    pub upstream: Option<SocketAddr>,
    /// For an upstream: `"public"` (the default) or `"token"`, as for a path rule.
    pub auth: Option<String>,
    pub scope: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fly {
    pub internal_dns: Option<SocketAddr>,
    pub machines_api: Option<String>,
    pub wake_timeout: Option<ConfDuration>,
    pub wake_max_pending: Option<i64>,
    pub wake_page: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    ForceSelf,
    PreferSelf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    pub timeout: Option<ConfDuration>,
    pub fallback: Option<Fallback>,
    pub cache_ttl: Option<ConfDuration>,
    /// The environment variable holding the `state` value added to every replay.
    pub state_key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    pub directory: String,
    #[serde(default)]
    pub contact: Vec<String>,
    pub names: Option<Vec<String>>,
    pub state_dir: String,
    pub ca_bundle: Option<String>,
    /// How often the stored certificate is checked for renewal (default 1h).
    pub check_interval: Option<ConfDuration>,
    /// TTL of the issuance lock in Redis; extended while issuing (default 10m).
    pub lock_ttl: Option<ConfDuration>,
    /// First retry delay after a failed issuance, doubled per failure (default 1m).
    pub retry_initial: Option<ConfDuration>,
    /// Cap of the retry delay (default 1h).
    pub retry_max: Option<ConfDuration>,
    /// Renew when this much validity remains (default: a third of the lifetime).
    pub renew_before: Option<ConfDuration>,
    pub dns: AcmeDns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsProvider {
    Rfc2136,
    Cloudflare,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeDns {
    pub provider: DnsProvider,
    pub server: Option<SocketAddr>,
    pub zone: Option<String>,
    pub tsig_key_name: Option<String>,
    pub tsig_algorithm: Option<String>,
    pub zone_id: Option<String>,
    pub api_base: Option<String>,
    /// Authoritative server to check TXT propagation on (default: rfc2136 `server`; cloudflare:
    /// the zone's name servers).
    pub propagation_server: Option<SocketAddr>,
    /// How long to wait for the TXT values to be visible (default 2m).
    pub propagation_timeout: Option<ConfDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
    /// One access-log line per request (default on).
    pub access: Option<bool>,
    /// The access log carries the request path (default on; never the query).
    pub paths: Option<bool>,
}
