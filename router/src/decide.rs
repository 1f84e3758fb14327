//! The routing decision: a pure function of (route, request facts, listener mode).
//!
//! No I/O and no clock: everything it needs is handed in, so it is unit-tested, fuzzed and
//! benchmarked without sockets. Pingora's phases carry the decision out.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hubify_edge_config::{Dispatch, Fallback, PathRule, Replay, Route};

/// Where the request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerMode {
    /// The public TLS listener: the router terminates TLS and can only forward.
    Tls,
    /// The plain-HTTP listener, with its dispatch mode.
    Plain(Dispatch),
}

/// Fly replays request bodies up to 1 MiB: a body of this many bytes or more is never replayed.
pub const REPLAY_BODY_LIMIT: u64 = 1 << 20;

/// What is known about the request body before reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: no `Content-Length`, no `Transfer-Encoding`, and a method that carries none.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// A body of unknown length: chunked, or POST/PUT/PATCH without `Content-Length`.
    Unknown,
}

impl Body {
    /// Classifies a request body from its method and framing headers. `content_length` is the raw
    /// header value; `chunked` is true when the request has a `Transfer-Encoding`.
    pub fn classify(method: &str, content_length: Option<&[u8]>, chunked: bool) -> Body {
        if chunked {
            return Body::Unknown;
        }
        if let Some(v) = content_length {
            return std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map_or(Body::Unknown, Body::Length);
        }
        if method.eq_ignore_ascii_case("POST")
            || method.eq_ignore_ascii_case("PUT")
            || method.eq_ignore_ascii_case("PATCH")
        {
            Body::Unknown
        } else {
            Body::None
        }
    }

    /// True when Fly can replay a request with this body.
    pub fn replayable(self) -> bool {
        match self {
            Body::None => true,
            Body::Length(n) => n < REPLAY_BODY_LIMIT,
            Body::Unknown => false,
        }
    }
}

/// What the decision needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Path and query as received (`/terminal/ws?x=1`).
    pub path_and_query: &'a str,
    /// A protocol upgrade (WebSocket handshake).
    pub upgrade: bool,
    /// The request body, as its framing announces it.
    pub body: Body,
    /// The request carries `fly-replay-src`: Fly already replayed it once.
    pub replay_src: bool,
    /// The value of `fly-replay-failed`: Fly's fallback request after a failed replay.
    pub replay_failed: Option<&'a str>,
}

impl<'a> RequestFacts<'a> {
    /// Facts of a bodiless request without Fly replay headers.
    pub fn new(path_and_query: &'a str, upgrade: bool) -> RequestFacts<'a> {
        RequestFacts {
            path_and_query,
            upgrade,
            body: Body::None,
            replay_src: false,
            replay_failed: None,
        }
    }
}

/// How to reach the workspace machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The route names an address.
    Address(IpAddr),
    /// Look up `<machine_id>.vm.<app>.internal` on Fly's 6PN DNS.
    Machine,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'c> {
    Forward(Forward<'c>),
    /// Answer `307` with `fly-replay` naming this machine.
    Replay(ReplayTo),
    /// Answer with an error page of this status (no path rule matches: 404).
    Respond(u16),
    /// The request cannot be replayed and this listener does not forward it.
    Refuse(Refusal),
    /// Fly's fallback request after a failed replay (`fly-replay-failed`): answer
    /// "workspace unavailable" (503 + `Retry-After`).
    ReplayFailed(ReplayFailure),
}

/// The machine a replay names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayTo {
    pub app: Arc<str>,
    pub instance: Arc<str>,
}

/// Why a `replay` listener refuses a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Content-Length` of 1 MiB or more (413).
    BodyTooLarge,
    /// A body of unknown length: chunked, or POST/PUT/PATCH without `Content-Length` (413).
    BodyLengthUnknown,
    /// The request carries `fly-replay-src`: replaying it again would loop (508).
    Loop,
    /// The route names an address but no Fly app and machine to replay to (502).
    NoMachine,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BodyTooLarge | Refusal::BodyLengthUnknown => 413,
            Refusal::Loop => 508,
            Refusal::NoMachine => 502,
        }
    }

    /// A short metrics/log label.
    pub fn outcome(self) -> crate::metrics::Outcome {
        use crate::metrics::Outcome;
        match self {
            Refusal::BodyTooLarge | Refusal::BodyLengthUnknown => Outcome::TooLarge,
            Refusal::Loop => Outcome::Loop,
            Refusal::NoMachine => Outcome::BadRoute,
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            Refusal::BodyTooLarge => {
                "This router hands requests to workspaces with Fly's fly-replay, which carries \
                 request bodies only up to 1 MiB. Send a smaller body, or use the workspace's \
                 direct (TLS) address for uploads."
            }
            Refusal::BodyLengthUnknown => {
                "This router hands requests to workspaces with Fly's fly-replay, which needs the \
                 body's size in advance (Content-Length, under 1 MiB); this request has a chunked \
                 or unannounced body. Send Content-Length, or use the workspace's direct (TLS) \
                 address."
            }
            Refusal::Loop => {
                "This request was already replayed by Fly (it carries fly-replay-src) and came \
                 back to the router; replaying it again would loop."
            }
            Refusal::NoMachine => {
                "The workspace's route names no Fly app and machine, so it cannot be replayed."
            }
        }
    }
}

/// The `reason` of a `fly-replay-failed` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFailure {
    Timeout,
    RetriesExhausted,
    NoCandidate,
    /// Missing or not one Fly documents.
    Unknown,
}

impl ReplayFailure {
    /// Parses `instance=<id>;app=<app>;...;reason=<r>;elapsed_ms=<n>`: fields split by `;`, then
    /// at the first `=`. Never fails: an unreadable value is `Unknown`.
    pub fn parse(value: &str) -> ReplayFailure {
        for field in value.split(';') {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            if k.trim().eq_ignore_ascii_case("reason") {
                return match v.trim().trim_matches('"') {
                    "timeout" => ReplayFailure::Timeout,
                    "retries_exhausted" => ReplayFailure::RetriesExhausted,
                    "no_candidate" => ReplayFailure::NoCandidate,
                    _ => ReplayFailure::Unknown,
                };
            }
        }
        ReplayFailure::Unknown
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReplayFailure::Timeout => "timeout",
            ReplayFailure::RetriesExhausted => "retries_exhausted",
            ReplayFailure::NoCandidate => "no_candidate",
            ReplayFailure::Unknown => "unknown",
        }
    }

    /// The page text for the "workspace unavailable" answer.
    pub fn detail(self) -> &'static str {
        match self {
            ReplayFailure::Timeout => {
                "The workspace did not answer in time; it may still be starting. Try again in a \
                 few seconds."
            }
            ReplayFailure::RetriesExhausted => {
                "The workspace could not be reached after several attempts. Try again in a few \
                 seconds."
            }
            ReplayFailure::NoCandidate => {
                "The workspace's machine is not running and could not be started (or no longer \
                 exists). Try again shortly."
            }
            ReplayFailure::Unknown => "The workspace could not be reached. Try again shortly.",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward<'c> {
    /// Index into the configured (sorted) path rules, and the rule itself.
    pub rule_index: usize,
    pub rule: &'c PathRule,
    /// The upstream path when it differs from the client's (`strip_prefix`).
    pub rewritten: Option<String>,
    pub target: Target,
    pub port: u16,
}

/// The rule whose prefix is the longest one matching `path` on a segment boundary. Rules are
/// sorted longest first (the config guarantees it), so the first match wins.
pub fn match_rule<'c>(rules: &'c [PathRule], path: &str) -> Option<(usize, &'c PathRule)> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| prefix_matches(&r.prefix, path))
}

/// Whether `path` is under `prefix` on a segment boundary (`/terminalx` is not under
/// `/terminal`).
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `strip_prefix`: `/terminal/ws?x` → `/ws?x`, `/terminal` → `/`, `/terminal?x` → `/?x`.
pub fn strip(prefix: &str, path_and_query: &str) -> String {
    let rest = &path_and_query[prefix.len().min(path_and_query.len())..];
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        let mut s = String::with_capacity(rest.len() + 1);
        s.push('/');
        s.push_str(rest);
        s
    }
}

/// Decides what to do with a request for a known workspace.
///
/// On the plain listener with `replay` or `auto` dispatch, in this order:
/// 1. `fly-replay-failed` (Fly's fallback request) → "workspace unavailable", never replayed.
/// 2. `fly-replay-src` (already replayed once) → never replayed again: `auto` forwards, `replay`
///    refuses (508 Loop Detected).
/// 3. A route without app and machine, or a body Fly cannot replay (≥ 1 MiB, chunked, or
///    POST/PUT/PATCH without `Content-Length`) → `auto` forwards, `replay` refuses (502 / 413).
/// 4. Otherwise replay — WebSocket handshakes included (the router never answers 101 here).
///
/// Replay routes by port, not path: path rules only apply when the router forwards.
pub fn decide<'c>(
    route: &Route,
    facts: &RequestFacts<'_>,
    rules: &'c [PathRule],
    mode: ListenerMode,
) -> Decision<'c> {
    if let ListenerMode::Plain(dispatch @ (Dispatch::Replay | Dispatch::Auto)) = mode {
        let refusal = if let Some(failed) = facts.replay_failed {
            return Decision::ReplayFailed(ReplayFailure::parse(failed));
        } else if facts.replay_src {
            Some(Refusal::Loop)
        } else if route.app.is_none() || route.machine_id.is_none() {
            Some(Refusal::NoMachine)
        } else {
            match facts.body {
                Body::Length(n) if n >= REPLAY_BODY_LIMIT => Some(Refusal::BodyTooLarge),
                Body::Unknown => Some(Refusal::BodyLengthUnknown),
                Body::None | Body::Length(_) => None,
            }
        };
        match (refusal, dispatch) {
            (Some(r), Dispatch::Replay) => return Decision::Refuse(r),
            (Some(_), _) => {}
            (None, _) => {
                if let (Some(app), Some(instance)) = (&route.app, &route.machine_id) {
                    return Decision::Replay(ReplayTo {
                        app: app.clone(),
                        instance: instance.clone(),
                    });
                }
            }
        }
    }
    forward(route, facts, rules)
}

fn forward<'c>(route: &Route, facts: &RequestFacts<'_>, rules: &'c [PathRule]) -> Decision<'c> {
    let Some((rule_index, rule)) = match_rule(rules, facts.path_and_query) else {
        return Decision::Respond(404);
    };
    let rewritten = (rule.strip_prefix && rule.prefix != "/")
        .then(|| strip(&rule.prefix, facts.path_and_query));
    let target = match route.address {
        Some(ip) => Target::Address(ip),
        None => Target::Machine,
    };
    Decision::Forward(Forward {
        rule_index,
        rule,
        rewritten,
        target,
        port: rule.port,
    })
}

/// A value that cannot go into a `fly-replay` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fly-replay: `{field}` {value:?} is not a Fly name (1-63 of a-z, 0-9, -)")]
pub struct ReplayHeaderError {
    pub field: &'static str,
    pub value: String,
}

/// Checks a value for the `fly-replay` header: 1–63 bytes of `a-z`, `0-9`, `-`. Route records
/// are already validated this way; this is the second line, so no record can ever inject `;`,
/// `=`, quotes, spaces or control characters into the header.
fn header_token(field: &'static str, value: &str) -> Result<(), ReplayHeaderError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReplayHeaderError {
            field,
            value: value.chars().take(80).collect(),
        })
    }
}

/// The `fly-replay` header value:
/// `app=<app>;instance=<id>[;timeout=<t>][;fallback=force_self|prefer_self]`.
///
/// With the replay cache on (`cache_ttl` > 0) only `app` and `instance` are sent: Fly refuses
/// `timeout`, `fallback` and `state` together with `fly-replay-cache` (see
/// [`replay_cache_ttl_secs`]). Allocates only the returned string.
pub fn fly_replay_header(
    app: &str,
    instance: &str,
    replay: &Replay,
) -> Result<String, ReplayHeaderError> {
    header_token("app", app)?;
    header_token("instance", instance)?;
    let cached = !replay.cache_ttl.is_zero();
    // "app=" + ";instance=" + ";timeout=" (up to 20 digits + "ms") + ";fallback=prefer_self"
    let mut out = String::with_capacity(4 + app.len() + 10 + instance.len() + 31 + 21);
    out.push_str("app=");
    out.push_str(app);
    out.push_str(";instance=");
    out.push_str(instance);
    if !cached {
        if let Some(t) = replay.timeout {
            out.push_str(";timeout=");
            push_duration(&mut out, t);
        }
        if let Some(f) = replay.fallback {
            out.push_str(";fallback=");
            out.push_str(match f {
                Fallback::ForceSelf => "force_self",
                Fallback::PreferSelf => "prefer_self",
            });
        }
        // The workspace checks `fly-replay-src: ...;state=<value>` to refuse traffic that did
        // not come through the router (the config validated the value's characters).
        if let Some(state) = &replay.state {
            out.push_str(";state=");
            out.push_str(state);
        }
    }
    Ok(out)
}

/// `5s` for whole seconds, else milliseconds (`800ms`, at least `1ms`).
fn push_duration(out: &mut String, d: Duration) {
    if d.subsec_nanos() == 0 {
        let _ = write!(out, "{}s", d.as_secs());
    } else {
        let _ = write!(out, "{}ms", d.as_millis().max(1));
    }
}

/// The `fly-replay-cache-ttl-secs` value when the replay cache is on (then also send
/// `fly-replay-cache: /*`); `None` when it is off. The config guarantees ≥ 10 s.
pub fn replay_cache_ttl_secs(replay: &Replay) -> Option<u64> {
    (!replay.cache_ttl.is_zero()).then(|| replay.cache_ttl.as_secs().max(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubify_edge_config::Config;

    fn rules() -> Vec<PathRule> {
        Config::embedded_default().unwrap().paths
    }

    fn route() -> Route {
        Route::new(None, None, None, Some("127.0.0.1")).unwrap()
    }

    fn fwd(path: &str) -> (u16, Option<String>) {
        let rules = rules();
        let facts = RequestFacts::new(path, false);
        match decide(&route(), &facts, &rules, ListenerMode::Tls) {
            Decision::Forward(f) => (f.port, f.rewritten),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn three_way_split() {
        assert_eq!(fwd("/"), (3000, None));
        assert_eq!(fwd("/api/x?y=1"), (3000, None));
        assert_eq!(fwd("/dashboard"), (3001, None));
        assert_eq!(fwd("/dashboard/settings?tab=2"), (3001, None));
        assert_eq!(fwd("/terminal"), (8080, Some("/".into())));
        assert_eq!(fwd("/terminal/"), (8080, Some("/".into())));
        assert_eq!(fwd("/terminal/ws"), (8080, Some("/ws".into())));
        assert_eq!(fwd("/terminal/ws?arg=1"), (8080, Some("/ws?arg=1".into())));
        assert_eq!(fwd("/terminal?arg=1"), (8080, Some("/?arg=1".into())));
    }

    #[test]
    fn segment_boundaries() {
        assert_eq!(fwd("/terminalx"), (3000, None));
        assert_eq!(fwd("/dashboard-old"), (3000, None));
        assert_eq!(fwd("/terminal-x/ws"), (3000, None));
        assert_eq!(fwd("/x/terminal"), (3000, None));
    }

    #[test]
    fn no_root_rule_means_404() {
        let rules: Vec<PathRule> = rules().into_iter().filter(|r| r.prefix != "/").collect();
        let facts = RequestFacts::new("/other", false);
        assert_eq!(
            decide(&route(), &facts, &rules, ListenerMode::Tls),
            Decision::Respond(404)
        );
    }

    #[test]
    fn machine_routes_need_a_lookup() {
        let rules = rules();
        let r = Route::new(Some("app"), Some("m1"), None, None).unwrap();
        let facts = RequestFacts::new("/", false);
        match decide(&r, &facts, &rules, ListenerMode::Tls) {
            Decision::Forward(f) => assert_eq!(f.target, Target::Machine),
            other => panic!("{other:?}"),
        }
    }

    fn machine() -> Route {
        Route::new(
            Some("hubify-workspace-alice"),
            Some("90801679a10038"),
            Some("iad"),
            None,
        )
        .unwrap()
    }

    fn replay_to() -> Decision<'static> {
        Decision::Replay(ReplayTo {
            app: "hubify-workspace-alice".into(),
            instance: "90801679a10038".into(),
        })
    }

    fn facts(method: &str, cl: Option<&str>, chunked: bool) -> RequestFacts<'static> {
        RequestFacts {
            body: Body::classify(method, cl.map(str::as_bytes), chunked),
            ..RequestFacts::new("/terminal/ws", false)
        }
    }

    const REPLAY: ListenerMode = ListenerMode::Plain(Dispatch::Replay);
    const AUTO: ListenerMode = ListenerMode::Plain(Dispatch::Auto);
    const FORWARD: ListenerMode = ListenerMode::Plain(Dispatch::Forward);

    fn is_forward(d: &Decision<'_>) -> bool {
        matches!(d, Decision::Forward(f) if f.target == Target::Machine && f.port == 8080)
    }

    #[test]
    fn body_classification() {
        assert_eq!(Body::classify("GET", None, false), Body::None);
        assert_eq!(Body::classify("DELETE", None, false), Body::None);
        assert_eq!(Body::classify("POST", None, false), Body::Unknown);
        assert_eq!(Body::classify("put", None, false), Body::Unknown);
        assert_eq!(Body::classify("PATCH", None, false), Body::Unknown);
        assert_eq!(Body::classify("POST", Some(b"12"), false), Body::Length(12));
        assert_eq!(Body::classify("GET", None, true), Body::Unknown);
        assert_eq!(Body::classify("POST", Some(b"x"), false), Body::Unknown);
        assert!(Body::Length(REPLAY_BODY_LIMIT - 1).replayable());
        assert!(!Body::Length(REPLAY_BODY_LIMIT).replayable());
    }

    #[test]
    fn replay_and_auto_replay_ordinary_requests() {
        let rules = rules();
        for mode in [REPLAY, AUTO] {
            assert_eq!(
                decide(&machine(), &facts("GET", None, false), &rules, mode),
                replay_to()
            );
            let small = facts("POST", Some("1048575"), false);
            assert_eq!(decide(&machine(), &small, &rules, mode), replay_to());
            // Replay ignores path rules: even a path without a rule is replayed.
            let norule: Vec<PathRule> = rules.iter().filter(|r| r.prefix != "/").cloned().collect();
            let f = RequestFacts::new("/other", false);
            assert_eq!(decide(&machine(), &f, &norule, mode), replay_to());
        }
        // The forward listener and the TLS listener never replay.
        for mode in [FORWARD, ListenerMode::Tls] {
            assert!(is_forward(&decide(
                &machine(),
                &facts("GET", None, false),
                &rules,
                mode
            )));
        }
    }

    #[test]
    fn websocket_handshake_is_replayed_like_a_get() {
        let rules = rules();
        let ws = RequestFacts::new("/terminal/ws", true);
        assert_eq!(decide(&machine(), &ws, &rules, REPLAY), replay_to());
        assert_eq!(decide(&machine(), &ws, &rules, AUTO), replay_to());
    }

    #[test]
    fn large_and_unknown_bodies() {
        let rules = rules();
        let large = facts("PUT", Some("1048576"), false);
        let chunked = facts("POST", None, true);
        let unannounced = facts("POST", None, false);
        assert_eq!(
            decide(&machine(), &large, &rules, REPLAY),
            Decision::Refuse(Refusal::BodyTooLarge)
        );
        for f in [chunked, unannounced] {
            assert_eq!(
                decide(&machine(), &f, &rules, REPLAY),
                Decision::Refuse(Refusal::BodyLengthUnknown)
            );
        }
        for f in [large, chunked, unannounced] {
            assert!(is_forward(&decide(&machine(), &f, &rules, AUTO)));
        }
        assert_eq!(Refusal::BodyTooLarge.status(), 413);
        assert!(Refusal::BodyLengthUnknown
            .detail()
            .contains("Content-Length"));
    }

    #[test]
    fn loops_are_never_replayed() {
        let rules = rules();
        let f = RequestFacts {
            replay_src: true,
            ..RequestFacts::new("/terminal/ws", false)
        };
        assert_eq!(
            decide(&machine(), &f, &rules, REPLAY),
            Decision::Refuse(Refusal::Loop)
        );
        assert_eq!(Refusal::Loop.status(), 508);
        assert!(is_forward(&decide(&machine(), &f, &rules, AUTO)));
    }

    #[test]
    fn fallback_requests_are_answered_not_replayed() {
        let rules = rules();
        let v = "instance=90801679a10038;app=hubify-workspace-alice;region=iad;\
                 replay_source=abc;reason=no_candidate;elapsed_ms=7";
        for mode in [REPLAY, AUTO] {
            let f = RequestFacts {
                replay_failed: Some(v),
                replay_src: true,
                ..RequestFacts::new("/", false)
            };
            assert_eq!(
                decide(&machine(), &f, &rules, mode),
                Decision::ReplayFailed(ReplayFailure::NoCandidate)
            );
        }
        assert_eq!(
            ReplayFailure::parse("reason=timeout"),
            ReplayFailure::Timeout
        );
        assert_eq!(
            ReplayFailure::parse("a=b; reason=retries_exhausted"),
            ReplayFailure::RetriesExhausted
        );
        assert_eq!(
            ReplayFailure::parse("reason=<script>"),
            ReplayFailure::Unknown
        );
        assert_eq!(ReplayFailure::parse(""), ReplayFailure::Unknown);
        assert_eq!(ReplayFailure::parse(";;=;reason"), ReplayFailure::Unknown);
    }

    #[test]
    fn address_routes_cannot_be_replayed() {
        let rules = rules();
        let f = RequestFacts::new("/", false);
        assert_eq!(
            decide(&route(), &f, &rules, REPLAY),
            Decision::Refuse(Refusal::NoMachine)
        );
        assert!(matches!(
            decide(&route(), &f, &rules, AUTO),
            Decision::Forward(Forward {
                target: Target::Address(_),
                ..
            })
        ));
    }

    fn replay_conf(timeout: Option<&str>, fallback: Option<Fallback>, cache: &str) -> Replay {
        Replay {
            timeout: timeout.map(|t| hubify_edge_config::parse_duration(t).unwrap()),
            fallback,
            cache_ttl: hubify_edge_config::parse_duration(cache).unwrap(),
            state: None,
        }
    }

    #[test]
    fn replay_header_exact_strings() {
        let h = |r: &Replay| fly_replay_header("hubify-workspace-alice", "90801679a10038", r);
        assert_eq!(
            h(&replay_conf(None, None, "0s")).unwrap(),
            "app=hubify-workspace-alice;instance=90801679a10038"
        );
        assert_eq!(
            h(&replay_conf(Some("5s"), Some(Fallback::ForceSelf), "0s")).unwrap(),
            "app=hubify-workspace-alice;instance=90801679a10038;timeout=5s;fallback=force_self"
        );
        assert_eq!(
            h(&replay_conf(Some("800ms"), None, "0s")).unwrap(),
            "app=hubify-workspace-alice;instance=90801679a10038;timeout=800ms"
        );
        assert_eq!(
            h(&replay_conf(Some("1500ms"), Some(Fallback::PreferSelf), "0s")).unwrap(),
            "app=hubify-workspace-alice;instance=90801679a10038;timeout=1500ms;fallback=prefer_self"
        );
        assert_eq!(
            h(&replay_conf(None, Some(Fallback::PreferSelf), "0s")).unwrap(),
            "app=hubify-workspace-alice;instance=90801679a10038;fallback=prefer_self"
        );
        assert_eq!(
            replay_cache_ttl_secs(&replay_conf(Some("5s"), None, "0s")),
            None
        );
    }

    #[test]
    fn replay_state_is_appended() {
        let r = Replay {
            state: Some("k3y-0123456789abcdef".into()),
            ..replay_conf(Some("5s"), None, "0s")
        };
        assert_eq!(
            fly_replay_header("app1", "m1", &r).unwrap(),
            "app=app1;instance=m1;timeout=5s;state=k3y-0123456789abcdef"
        );
    }

    #[test]
    fn replay_cache_variant_drops_timeout_and_fallback() {
        let r = replay_conf(Some("5s"), Some(Fallback::ForceSelf), "30s");
        assert_eq!(
            fly_replay_header("app1", "m1", &r).unwrap(),
            "app=app1;instance=m1"
        );
        assert_eq!(replay_cache_ttl_secs(&r), Some(30));
    }

    #[test]
    fn replay_header_refuses_injection() {
        let r = replay_conf(Some("5s"), None, "0s");
        for bad in [
            "",
            "a;b",
            "a=b",
            "a\"b",
            "a'b",
            "a b",
            "a\r\nx: y",
            "a\0",
            "A",
            "a.b",
            "a,b",
            "é",
            &"a".repeat(64),
        ] {
            let e = fly_replay_header(bad, "m1", &r).unwrap_err();
            assert_eq!(e.field, "app", "{bad:?}");
            let e = fly_replay_header("app", bad, &r).unwrap_err();
            assert_eq!(e.field, "instance", "{bad:?}");
        }
        let long = fly_replay_header(&"a".repeat(63), &"0".repeat(63), &r).unwrap();
        assert_eq!(
            long.len(),
            "app=".len() + 63 + ";instance=".len() + 63 + ";timeout=5s".len()
        );
    }
}
