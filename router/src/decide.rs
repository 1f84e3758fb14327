//! The routing decision: a pure function of (route, request facts, listener mode).
//!
//! No I/O and no clock: everything it needs is handed in, so it is unit-tested, fuzzed and
//! benchmarked without sockets. Pingora's phases carry the decision out.

use std::net::IpAddr;

use hubify_edge_config::{Dispatch, PathRule, Route};

/// Where the request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerMode {
    /// The public TLS listener: the router terminates TLS and can only forward.
    Tls,
    /// The plain-HTTP listener, with its dispatch mode.
    Plain(Dispatch),
}

/// What the decision needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Path and query as received (`/terminal/ws?x=1`).
    pub path_and_query: &'a str,
    /// A protocol upgrade (WebSocket handshake).
    pub upgrade: bool,
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
    /// Answer with an error page of this status.
    Respond(u16),
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

fn prefix_matches(prefix: &str, path: &str) -> bool {
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
pub fn decide<'c>(
    route: &Route,
    facts: &RequestFacts<'_>,
    rules: &'c [PathRule],
    _mode: ListenerMode,
) -> Decision<'c> {
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
        let facts = RequestFacts {
            path_and_query: path,
            upgrade: false,
        };
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
        let facts = RequestFacts {
            path_and_query: "/other",
            upgrade: false,
        };
        assert_eq!(
            decide(&route(), &facts, &rules, ListenerMode::Tls),
            Decision::Respond(404)
        );
    }

    #[test]
    fn machine_routes_need_a_lookup() {
        let rules = rules();
        let r = Route::new(Some("app"), Some("m1"), None, None).unwrap();
        let facts = RequestFacts {
            path_and_query: "/",
            upgrade: false,
        };
        match decide(&r, &facts, &rules, ListenerMode::Tls) {
            Decision::Forward(f) => assert_eq!(f.target, Target::Machine),
            other => panic!("{other:?}"),
        }
    }
}
