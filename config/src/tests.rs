use super::*;

const MIN: &str = r#"
domain = "hubify.test"
[listeners.http]
address = "127.0.0.1:8080"
"#;

fn err(toml: &str) -> ConfigError {
    match Config::from_toml(toml, "t.toml") {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

/// `MIN` and `extra`, with the standard path rules and an empty static route store unless
/// `extra` says otherwise (both must be written: `missing_routes_and_paths_are_errors`).
fn with(extra: &str) -> String {
    let paths = if extra.contains("[[paths]]") {
        ""
    } else {
        "paths = \"standard\"\n"
    };
    let routes = if extra.contains("[routes]") || extra.contains("[[routes.") {
        ""
    } else {
        "\n[routes]\nstore = \"static\"\n"
    };
    format!("{paths}{MIN}{routes}\n{extra}")
}

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded_default().unwrap();
    assert_eq!(c.domain, "hubify.localhost");
    assert!(c.listeners.https.is_some());
    assert!(matches!(c.tls.source, TlsSource::SelfSigned));
    assert!(matches!(&c.routes.store, RouteStore::Static(r) if r[0].0 == "alice"));
    // Longest prefix first.
    assert_eq!(c.paths[0].prefix, "/dashboard");
    assert_eq!(c.paths.last().map(|p| p.prefix.as_str()), Some("/"));
    assert_eq!(c.paths[1].name, "terminal");
}

#[test]
fn minimal_has_defaults() {
    let c = Config::from_toml(&with(""), "t.toml").unwrap();
    assert_eq!(c.paths.len(), 3);
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.fly.internal_dns.to_string(), "[fdaa::3]:53");
    assert_eq!(
        c.listeners.http.as_ref().map(|h| h.dispatch),
        Some(Dispatch::Forward)
    );
}

#[test]
fn fast_path_defaults_on_and_keeps_its_old_name() {
    assert!(
        Config::from_toml(&with(""), "t.toml")
            .unwrap()
            .server
            .fast_path
    );
    for key in ["fast_path", "http1_fast_path"] {
        let c = Config::from_toml(&with(&format!("[server]\n{key} = false")), "t.toml").unwrap();
        assert!(!c.server.fast_path, "{key} = false");
    }
    let e = err(&with("[server]\nfast_path = \"yes\""));
    assert!(e.to_string().contains("server.fast_path"), "{e}");
}

#[test]
fn unknown_keys_name_their_path() {
    let e = err(&with("colour = 1"));
    assert!(e.message.contains("unknown field"), "{e}");
    let e = err(&with("[tls]\nsource = \"self-signed\"\ncerts = \"x\""));
    assert_eq!(e.key, "tls.certs");
    assert!(e.message.contains("certs"), "{e}");
    let e = err(&with("[[paths]]\nprefix = \"/\"\nport = 1\nstrip = true"));
    assert!(e.key.starts_with("paths"), "{e}");
    assert!(e.to_string().starts_with("t.toml: "), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&str, &str)] = &[
        ("[upstream]\nconnect_timeout = \"5 parsecs\"", "upstream.connect_timeout"),
        ("[upstream]\nconnect_timeout = 5", "upstream.connect_timeout"),
        ("[listeners.https]\naddress = \"127.0.0.1:1\"\ndispatch = \"replay\"", "listeners.https.dispatch"),
        ("[listeners.https]\naddress = \"127.0.0.1:1\"\ndispatch = \"teleport\"", "listeners.https.dispatch"),
        ("[listeners.https]\naddress = \"localhost\"", "listeners.https.address"),
        ("[listeners.https]\naddress = \"127.0.0.1:8080\"", "listeners.http.address"),
        ("[[routes.static]]\nlabel = \"alice\"\naddress = \"not-an-ip\"", "routes.static[0].address"),
        ("[[routes.static]]\nlabel = \"-bad\"\naddress = \"127.0.0.1\"", "routes.static[0].label"),
        ("[[routes.static]]\nlabel = \"a.b\"\naddress = \"127.0.0.1\"", "routes.static[0].label"),
        ("[[routes.static]]\nlabel = \"a\"\naddress = \"127.0.0.1\"\n[[routes.static]]\nlabel = \"a\"\naddress = \"127.0.0.2\"", "routes.static[1].label"),
        ("[[routes.static]]\nlabel = \"a\"", "routes.static[0].app"),
        ("[[routes.static]]\nlabel = \"a\"\napp = \"x;y\"\nmachine_id = \"m\"", "routes.static[0].app"),
        ("[[paths]]\nprefix = \"terminal\"\nport = 8080", "paths[0].prefix"),
        ("[[paths]]\nprefix = \"/\"\nport = 0", "paths[0].port"),
        ("[[paths]]\nprefix = \"/\"\nport = 70000", "paths[0].port"),
        ("[[paths]]\nprefix = \"/a\"\nport = 1\n[[paths]]\nprefix = \"/a/\"\nport = 2", "paths[1].prefix"),
        ("[tls]\nsource = \"files\"\nkey = \"k.pem\"", "tls.cert"),
        ("[tls]\nsource = \"files\"\ncert = \"c.pem\"", "tls.key"),
        ("[tls]\nsource = \"acme\"", "acme"),
        ("[routes]\nstore = \"redis\"", "routes.store"),
        ("[redis]\nurl = \"http://x\"", "redis.url"),
        ("[replay]\ncache_ttl = \"5s\"", "replay.cache_ttl"),
        ("[server]\nthreads = 0", "server.threads"),
        ("[reserved.www]\nredirect = \"https://hubify.com\"\nupstream = \"127.0.0.1:1\"", "reserved.www"),
    ];
    for (extra, key) in cases {
        let e = err(&with(extra));
        assert_eq!(&e.key, key, "for {extra:?}: {e}");
        assert!(e.to_string().contains("t.toml"), "{e}");
    }
}

#[test]
fn bad_domain_and_missing_listeners() {
    assert_eq!(
        err("domain = \"localhost\"\n[listeners.http]\naddress = \"127.0.0.1:1\"").key,
        "domain"
    );
    assert_eq!(err("domain = \"hubify.test\"").key, "listeners");
    let e = err("domain = ");
    assert!(e.message.contains("line 1"), "{e}");
}

#[test]
fn path_rules_sorted_and_named() {
    let c = Config::from_toml(
        &with("[[paths]]\nprefix = \"/\"\nport = 3000\n[[paths]]\nprefix = \"/terminal/\"\nport = 8080\nstrip_prefix = true\nidle_timeout = \"2s\""),
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.paths[0].prefix, "/terminal");
    assert_eq!(c.paths[0].idle_timeout, Some(Duration::from_secs(2)));
    assert_eq!(c.paths[1].name, "gateway");
}

#[test]
fn missing_file_names_it() {
    let e = Config::from_file(Path::new("/nonexistent/hubify.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/hubify.toml"), "{e}");
}

#[test]
fn shared_example_config_is_valid() {
    // The reference shape in the team docs, when present next to the repository.
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/production.toml");
    if p.exists() {
        Config::from_file(&p).unwrap();
    }
}

const ACME: &str = r#"
[tls]
source = "acme"
[acme]
directory = "https://127.0.0.1:14000/dir"
state_dir = "/tmp/acme"
"#;

const RFC2136: &str = r#"
[acme.dns]
provider = "rfc2136"
server = "127.0.0.1:53"
zone = "hubify.test."
tsig_key_name = "k"
"#;

#[test]
fn acme_defaults_and_renewal_keys() {
    let c = Config::from_toml(&with(&format!("{ACME}{RFC2136}")), "t.toml").unwrap();
    let a = c.acme.unwrap();
    assert_eq!(a.names, vec!["*.hubify.test", "hubify.test"]);
    assert_eq!(a.check_interval, Duration::from_secs(3600));
    assert_eq!(a.lock_ttl, Duration::from_secs(600));
    assert_eq!(a.retry_initial, Duration::from_secs(60));
    assert_eq!(a.retry_max, Duration::from_secs(3600));
    assert_eq!(a.renew_before, None);
    assert_eq!(a.dns.propagation_timeout, Duration::from_secs(120));
    assert_eq!(a.dns.propagation_server, None);

    let acme = ACME.replace(
        "state_dir",
        "check_interval = \"1s\"\nlock_ttl = \"30s\"\nretry_initial = \"2s\"\nretry_max = \"1m\"\nrenew_before = \"30d\"\nstate_dir",
    );
    let dns = format!(
        "{RFC2136}propagation_server = \"127.0.0.1:5353\"\npropagation_timeout = \"10s\"\n"
    );
    let a = Config::from_toml(&with(&format!("{acme}{dns}")), "t.toml")
        .unwrap()
        .acme
        .unwrap();
    assert_eq!(a.check_interval, Duration::from_secs(1));
    assert_eq!(a.lock_ttl, Duration::from_secs(30));
    assert_eq!(a.renew_before, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(a.dns.propagation_server.map(|s| s.port()), Some(5353));
}

#[test]
fn bad_acme_values_name_their_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "state_dir",
            "check_interval = \"0s\"\nstate_dir",
            "acme.check_interval",
        ),
        ("state_dir", "lock_ttl = \"1s\"\nstate_dir", "acme.lock_ttl"),
        (
            "state_dir",
            "retry_initial = \"0s\"\nstate_dir",
            "acme.retry_initial",
        ),
        (
            "state_dir",
            "retry_initial = \"2h\"\nstate_dir",
            "acme.retry_max",
        ),
        (
            "state_dir",
            "renew_before = \"soon\"\nstate_dir",
            "acme.renew_before",
        ),
        (
            "tsig_key_name",
            "propagation_timeout = \"0s\"\ntsig_key_name",
            "acme.dns.propagation_timeout",
        ),
        (
            "tsig_key_name",
            "propagation_server = \"nope\"\ntsig_key_name",
            "acme.dns.propagation_server",
        ),
        (
            "tsig_key_name = \"k\"",
            "tsig_key_name = \"k\"\ntsig_algorithm = \"hmac-md5\"",
            "acme.dns.tsig_algorithm",
        ),
        ("server = \"127.0.0.1:53\"\n", "", "acme.dns.server"),
    ];
    for (from, to, key) in cases {
        let toml = with(&format!("{ACME}{RFC2136}").replacen(from, to, 1));
        let e = err(&toml);
        assert_eq!(e.key, *key, "{toml}\n{e}");
    }
    let cf = "[acme.dns]\nprovider = \"cloudflare\"\n";
    assert_eq!(err(&with(&format!("{ACME}{cf}"))).key, "acme.dns.zone_id");
    let cf = "[acme.dns]\nprovider = \"cloudflare\"\nzone_id = \"z\"\napi_base = \"ftp://x\"\n";
    assert_eq!(err(&with(&format!("{ACME}{cf}"))).key, "acme.dns.api_base");
}

#[test]
fn listening_addresses_overlap_by_port_and_wildcard() {
    let a = |s: &str| s.parse::<std::net::SocketAddr>().expect("an address");
    assert!(crate::overlaps(a("127.0.0.1:80"), a("127.0.0.1:80")));
    assert!(crate::overlaps(a("0.0.0.0:80"), a("127.0.0.1:80")));
    assert!(
        crate::overlaps(a("127.0.0.1:80"), a("[::]:80")),
        "[::] is dual-stack"
    );
    assert!(!crate::overlaps(a("0.0.0.0:80"), a("[::1]:80")));
    assert!(!crate::overlaps(a("127.0.0.1:80"), a("127.0.0.2:80")));
    assert!(!crate::overlaps(a("127.0.0.1:80"), a("127.0.0.1:81")));
    assert!(
        !crate::overlaps(a("127.0.0.1:0"), a("127.0.0.1:0")),
        "port 0 picks a free one"
    );
}

#[test]
fn log_levels() {
    for ok in [
        "info",
        "WARN",
        "warn,access=info",
        "hubify_edge=debug, pingora=error",
        "off",
    ] {
        assert!(crate::check_log_level(ok).is_ok(), "{ok}");
    }
    for bad in ["verbose", "", "info,", "=info", "x=loud", "info warn"] {
        assert!(crate::check_log_level(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn hsts_values() {
    for ok in [
        "max-age=31536000",
        "max-age=0",
        "max-age=63072000; includeSubDomains; preload",
        "Max-Age=\"60\" ; includesubdomains;",
    ] {
        let c = Config::from_toml(&with(&format!("[tls]\nhsts = {ok:?}")), "t.toml")
            .unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        assert_eq!(c.tls.hsts.as_deref(), Some(ok));
    }
    for bad in [
        "",
        "includeSubDomains",
        "max-age=",
        "max-age=1y",
        "max-age=1; max-age=2",
        "max-age=1; includeSubDomains=yes",
        "max-age=1; always",
        "max-age=\"1",
        "max-age=1;\u{a0}preload",
    ] {
        let e = err(&with(&format!("[tls]\nhsts = '{bad}'")));
        assert_eq!(e.key, "tls.hsts", "{bad:?}: {e}");
    }
    assert_eq!(
        Config::from_toml(&with(""), "t.toml").unwrap().tls.hsts,
        None
    );
}

#[test]
fn missing_routes_and_paths_are_errors() {
    // Nothing said about routes: every request would be a silent 404.
    let e = err(&format!("paths = \"standard\"\n{MIN}"));
    assert_eq!(e.key, "routes", "{e}");
    assert!(e.message.contains("store = \"static\""), "{e}");
    let e = err(&format!(
        "paths = \"standard\"\n{MIN}\n[routes]\ncache_ttl = \"5s\""
    ));
    assert_eq!(e.key, "routes.store", "{e}");
    // No path rules: the defaults no longer apply silently.
    let e = err(&format!("{MIN}\n[routes]\nstore = \"static\""));
    assert_eq!(e.key, "paths", "{e}");
    assert!(e.message.contains("paths = \"standard\""), "{e}");
    let e = err(&format!(
        "paths = \"defaults\"\n{MIN}\n[routes]\nstore = \"static\""
    ));
    assert_eq!(e.key, "paths", "{e}");
    // Said explicitly: fine. An empty static store, static entries without `store`, the
    // standard rules.
    let c = Config::from_toml(&with(""), "t.toml").unwrap();
    assert!(matches!(&c.routes.store, RouteStore::Static(r) if r.is_empty()));
    assert_eq!(c.paths.len(), 3);
    let c = Config::from_toml(
        &with("[[routes.static]]\nlabel = \"a\"\naddress = \"127.0.0.1\""),
        "t.toml",
    )
    .unwrap();
    assert!(matches!(&c.routes.store, RouteStore::Static(r) if r.len() == 1));
}

#[test]
fn upgrade_socket_is_an_absolute_socket_path() {
    let long = format!("[server]\nupgrade_socket = \"/{}\"", "s".repeat(107));
    assert_eq!(err(&with(&long)).key, "server.upgrade_socket");
    assert_eq!(
        err(&with("[server]\nupgrade_socket = \"rel.sock\"")).key,
        "server.upgrade_socket"
    );
    let c = Config::from_toml(
        &with("[server]\nupgrade_socket = \"/run/e.sock\""),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.server.upgrade_socket,
        std::path::PathBuf::from("/run/e.sock")
    );
}

#[test]
fn websocket_drain_fits_the_shutdown_bound() {
    let c = Config::from_toml(&with(""), "t.toml").unwrap();
    assert_eq!(c.server.websocket_drain, Duration::from_secs(5));
    // The default shrinks to a shorter shutdown bound; an explicit longer value is an error.
    let c = Config::from_toml(&with("[server]\nshutdown_timeout = \"2s\""), "t.toml").unwrap();
    assert_eq!(c.server.websocket_drain, Duration::from_secs(2));
    let e = err(&with(
        "[server]\nshutdown_timeout = \"2s\"\nwebsocket_drain = \"3s\"",
    ));
    assert_eq!(e.key, "server.websocket_drain", "{e}");
}

#[test]
fn limits_are_whole_numbers_and_a_burst_needs_a_rate() {
    let c = Config::from_toml(&with(""), "t.toml").unwrap();
    assert!(!c.limits.any());
    let c = Config::from_toml(
        &with("[limits]\nrequests_per_second = 5\nburst = 10\nconcurrent_requests = 3\nwebsockets = 2"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.limits.requests_per_second, Some(5));
    assert_eq!(c.limits.burst, Some(10));
    assert_eq!(c.limits.concurrent_requests, Some(3));
    assert_eq!(c.limits.websockets, Some(2));
    for (bad, key) in [
        ("requests_per_second = 0", "limits.requests_per_second"),
        ("websockets = -1", "limits.websockets"),
        (
            "concurrent_requests = 2000000",
            "limits.concurrent_requests",
        ),
        ("burst = 4", "limits.burst"),
    ] {
        let e = err(&with(&format!("[limits]\n{bad}")));
        assert_eq!(e.key, key, "{bad}: {e}");
    }
}

#[test]
fn wake_settings_default_and_bounds() {
    let c = Config::from_toml(&with(""), "t.toml").unwrap();
    assert_eq!(c.fly.wake_max_pending, 100);
    assert!(!c.fly.wake_page);
    let c = Config::from_toml(
        &with("[fly]\nwake_max_pending = 3\nwake_page = true"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.fly.wake_max_pending, 3);
    assert!(c.fly.wake_page);
    let e = err(&with("[fly]\nwake_max_pending = 0"));
    assert_eq!(e.key, "fly.wake_max_pending", "{e}");
}
