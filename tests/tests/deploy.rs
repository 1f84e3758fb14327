//! The deployment files agree with the router: fly.toml's services reach the listeners of the
//! configuration its process runs, no service check targets a listener that cannot answer it, the
//! readiness check and the scrape target are the ops listener, and the Dockerfile passes the
//! commit, checks health and ships a stripped binary.

use std::path::PathBuf;

use hubify_edge_config::Config;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fly() -> toml::Table {
    read("fly.toml").parse().expect("fly.toml is TOML")
}

/// The configuration fly.toml's `app` process runs (`--config /etc/hubify-edge/<file>`).
fn process_config(fly: &toml::Table) -> Config {
    let app = fly["processes"]["app"].as_str().expect("processes.app");
    let file = app
        .split_whitespace()
        .find_map(|w| w.strip_prefix("/etc/hubify-edge/"))
        .unwrap_or_else(|| panic!("processes.app names no config under /etc/hubify-edge: {app}"));
    Config::from_file(&repo(&format!("examples/{file}"))).expect("the process's config is valid")
}

fn port_of(s: &toml::Value) -> u16 {
    s["internal_port"]
        .as_integer()
        .and_then(|p| u16::try_from(p).ok())
        .expect("internal_port")
}

#[test]
fn fly_services_reach_the_listeners_of_the_config_they_run() {
    let fly = fly();
    let config = process_config(&fly);
    let l = &config.listeners;
    let https = l.https.as_ref().expect("topology 1 has a TLS listener");
    let services = fly["services"].as_array().expect("[[services]]");
    for s in services {
        let port = port_of(s);
        let public: Vec<i64> = s["ports"]
            .as_array()
            .expect("services.ports")
            .iter()
            .filter_map(|p| p["port"].as_integer())
            .collect();
        let handlers: Vec<&str> = s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["handlers"].as_array().into_iter().flatten())
            .filter_map(|h| h.as_str())
            .collect();
        if port == https.address.port() {
            assert_eq!(public, [443]);
            // PROXY v2 from Fly exactly when the listener expects it.
            assert_eq!(handlers.contains(&"proxy_proto"), https.proxy_protocol);
        } else if l
            .redirect
            .as_ref()
            .is_some_and(|r| r.address.port() == port)
        {
            // Topology 1: port 80 is the redirect to https (finding: it used to reach nothing
            // that redirects).
            assert_eq!(public, [80]);
            assert_eq!(handlers, ["http"]);
        } else {
            let http = l.http.as_ref().unwrap_or_else(|| {
                panic!("fly.toml's service on internal port {port} reaches no listener")
            });
            assert_eq!(http.address.port(), port, "internal port {port}");
        }
        // An HTTP service check on a workspace listener gets 404 (no workspace has the check's
        // Host) or a 308: Fly would take the service out. TCP checks only.
        assert!(
            s.get("http_checks").is_none(),
            "an http check on internal port {port}"
        );
    }
    let served: Vec<u16> = services.iter().map(port_of).collect();
    assert!(served.contains(&https.address.port()), "443 is served");
    if let Some(r) = &l.redirect {
        assert!(served.contains(&r.address.port()), "80 is served");
    }
}

#[test]
fn readiness_and_metrics_are_the_ops_listener() {
    let fly = fly();
    let config = process_config(&fly);
    let ops = config.ops.expect("the config has an ops listener").port();
    let ready = &fly["checks"]["ready"];
    assert_eq!(ready["type"].as_str(), Some("http"));
    assert_eq!(ready["port"].as_integer(), Some(i64::from(ops)));
    assert_eq!(ready["path"].as_str(), Some("/readyz"));
    assert_eq!(fly["metrics"]["port"].as_integer(), Some(i64::from(ops)));
    assert_eq!(fly["metrics"]["path"].as_str(), Some("/metrics"));
}

#[test]
fn topology_one_sends_hsts_only_when_the_operator_chooses_it() {
    // The example leaves HSTS commented (a max-age is a promise to browsers); it parses when
    // uncommented.
    let text = read("examples/fly-forward.toml");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("# hsts = "))
        .expect("fly-forward.toml shows the hsts key");
    let uncommented = text.replace(line, line.trim_start().trim_start_matches("# "));
    let config = Config::from_toml(&uncommented, "fly-forward.toml").expect("valid with hsts");
    assert!(config.tls.hsts.is_some_and(|v| v.starts_with("max-age=")));
}

#[test]
fn dockerfile_passes_the_commit_checks_health_and_strips() {
    let docker = read("Dockerfile");
    assert!(
        docker.contains("ARG GIT_COMMIT"),
        "no build ARG for the commit"
    );
    assert!(
        docker.contains("HUBIFY_EDGE_GIT_COMMIT=\"$GIT_COMMIT\""),
        "the commit does not reach the build"
    );
    let health = docker
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        health.contains("hubify-edge") && health.contains("health"),
        "{health}"
    );
    assert!(docker.contains("strip"), "the binary is not stripped");
    // .dockerignore drops .git: the ARG is the only way the commit gets in.
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == ".git"), "{ignore}");
}
