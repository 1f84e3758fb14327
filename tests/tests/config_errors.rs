//! `hubify-edge check --config FILE`: exit 0 for good configs (the generated base and every file in
//! examples/), non-zero for each kind of mistake with an error on stderr naming the file and the
//! offending key.

use std::path::{Path, PathBuf};

use hubify_edge_tests::router::{check_path, check_toml, CheckOutput};
use hubify_edge_tests::{EdgeConfig, PathRule};

/// The valid config every mistake starts from: both listeners, self-signed TLS, routes alice and
/// bob, the three standard path rules (`/terminal` [0], `/dashboard` [1], `/` [2]).
fn base() -> EdgeConfig {
    EdgeConfig::new()
        .path(PathRule::new("/terminal", 8080).strip().idle_timeout("1h"))
        .path(PathRule::new("/dashboard", 3001))
        .path(PathRule::new("/", 3000))
}

/// Replace the single occurrence of `from` in `text` with `to`.
fn mutate(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "test bug: {from:?} must occur exactly once in the base config:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// `check` must fail and its stderr must name the file and contain every one of `needles`.
fn assert_rejected(toml: &str, needles: &[&str]) -> CheckOutput {
    let (out, _dir) = check_toml(toml);
    assert_rejected_output(&out, needles, toml);
    out
}

fn assert_rejected_output(out: &CheckOutput, needles: &[&str], toml: &str) {
    assert!(
        !out.status.success(),
        "check accepted a bad config\n{}\n--- config ---\n{toml}",
        out.describe()
    );
    let path = out.path.display().to_string();
    assert!(
        out.stderr.contains(&path),
        "stderr does not name the config file {path}\n{}",
        out.describe()
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "stderr does not name {needle:?}\n{}\n--- config ---\n{toml}",
            out.describe()
        );
    }
}

#[test]
fn base_config_passes_check() {
    let toml = base().to_toml();
    let (out, _dir) = check_toml(&toml);
    assert!(
        out.status.success(),
        "check rejected the base config\n{}\n--- config ---\n{toml}",
        out.describe()
    );
}

#[test]
fn example_configs_pass_check() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap_or_else(|e| panic!("read {}: {e}", examples.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no examples/*.toml found in {}",
        examples.display()
    );
    for file in files {
        let out = check_path(&file);
        assert!(
            out.status.success(),
            "check rejected {}\n{}",
            file.display(),
            out.describe()
        );
    }
}

#[test]
fn unknown_top_level_key() {
    let toml = mutate(
        &base().to_toml(),
        "domain = \"hubify.test\"\n",
        "domain = \"hubify.test\"\ncolour = \"blue\"\n",
    );
    assert_rejected(&toml, &["colour"]);
}

#[test]
fn unknown_nested_key() {
    let toml = mutate(&base().to_toml(), "[server]\n", "[server]\nthreadz = 2\n");
    assert_rejected(&toml, &["server.threadz"]);

    let toml = mutate(
        &base().to_toml(),
        "[listeners.https]\n",
        "[listeners.https]\nadress = \"127.0.0.1:1\"\n",
    );
    assert_rejected(&toml, &["listeners.https.adress"]);
}

#[test]
fn unknown_key_in_an_array_table() {
    let toml = mutate(
        &base().to_toml(),
        "label = \"bob\"\n",
        "label = \"bob\"\nlable = \"bobby\"\n",
    );
    assert_rejected(&toml, &["routes.static[1].lable"]);
}

#[test]
fn bad_duration() {
    let toml = mutate(
        &base().to_toml(),
        "grace_period = \"1s\"",
        "grace_period = \"5 parsecs\"",
    );
    assert_rejected(&toml, &["server.grace_period"]);

    let toml = mutate(
        &base().to_toml(),
        "idle_timeout = \"1h\"",
        "idle_timeout = \"5 parsecs\"",
    );
    assert_rejected(&toml, &["paths[0].idle_timeout"]);
}

#[test]
fn bad_dispatch_value() {
    let toml = base().to_toml();
    let http_section = "[listeners.http]\naddress";
    assert_eq!(toml.matches(http_section).count(), 1);
    // The plain listener's dispatch line follows its address line.
    let start = toml.find(http_section).expect("http listener section");
    let dispatch_at = start
        + toml[start..]
            .find("dispatch = \"forward\"")
            .expect("dispatch");
    let bad = format!(
        "{}dispatch = \"teleport\"{}",
        &toml[..dispatch_at],
        &toml[dispatch_at + "dispatch = \"forward\"".len()..]
    );
    assert_rejected(&bad, &["listeners.http.dispatch"]);
}

#[test]
fn https_listener_cannot_replay() {
    let toml = mutate(
        &base().to_toml(),
        "proxy_protocol = false\ndispatch = \"forward\"",
        "proxy_protocol = false\ndispatch = \"replay\"",
    );
    assert_rejected(&toml, &["listeners.https.dispatch"]);
}

#[test]
fn bad_listen_address() {
    let cfg = base();
    let http = format!("address = \"127.0.0.1:{}\"", cfg.http_port());
    let toml = mutate(&cfg.to_toml(), &http, "address = \"nowhere\"");
    assert_rejected(&toml, &["listeners.http.address"]);
}

#[test]
fn bad_route_address() {
    let mut cfg = base();
    cfg.routes = vec![("alice".to_owned(), "not-an-ip".to_owned())];
    assert_rejected(&cfg.to_toml(), &["routes.static[0].address"]);
}

#[test]
fn duplicate_label() {
    let mut cfg = base();
    cfg.routes
        .push(("alice".to_owned(), "127.0.0.2".to_owned()));
    // alice [0], bob [1], alice again [2]: the duplicate is the third entry.
    assert_rejected(&cfg.to_toml(), &["routes.static[2].label", "alice"]);
}

#[test]
fn invalid_labels() {
    for bad in ["-bad", "a.b"] {
        let mut cfg = base();
        cfg.routes = vec![
            ("alice".to_owned(), "127.0.0.1".to_owned()),
            (bad.to_owned(), "127.0.0.1".to_owned()),
        ];
        assert_rejected(&cfg.to_toml(), &["routes.static[1].label"]);
    }
}

#[test]
fn path_prefix_must_start_with_a_slash() {
    let toml = mutate(
        &base().to_toml(),
        "prefix = \"/dashboard\"",
        "prefix = \"dashboard\"",
    );
    assert_rejected(&toml, &["paths[1].prefix"]);
}

#[test]
fn path_port_zero() {
    let toml = mutate(&base().to_toml(), "port = 8080", "port = 0");
    assert_rejected(&toml, &["paths[0].port"]);
}

#[test]
fn tls_files_without_cert() {
    let toml = mutate(
        &base().to_toml(),
        "[tls]\nsource = \"self-signed\"\n",
        "[tls]\nsource = \"files\"\nkey = \"/nonexistent/key.pem\"\n",
    );
    assert_rejected(&toml, &["tls.cert"]);
}

#[test]
fn redis_store_without_redis_section() {
    let mut cfg = base();
    cfg.routes.clear();
    let toml = mutate(&cfg.to_toml(), "store = \"static\"", "store = \"redis\"");
    assert!(!toml.contains("[redis]"));
    assert_rejected(&toml, &["redis"]);
}

#[test]
fn missing_domain() {
    let toml = mutate(&base().to_toml(), "domain = \"hubify.test\"\n", "");
    assert_rejected(&toml, &["domain"]);
}

#[test]
fn no_serving_listener() {
    let cfg = base().without_http().without_https().with_ops();
    assert_rejected(&cfg.to_toml(), &["listeners"]);
}

#[test]
fn toml_syntax_error() {
    let toml = mutate(&base().to_toml(), "[server]\n", "[server\n");
    assert_rejected(&toml, &[]);
}

#[test]
fn nonexistent_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-config.toml");
    let out = check_path(&path);
    assert_rejected_output(&out, &[], "(no file)");
}

/// `base()` with `/terminal` protected.
fn protected() -> EdgeConfig {
    let mut c = base();
    c.paths[0] = c.paths[0].clone().token("terminal");
    c
}

#[test]
fn token_auth_needs_a_jwks() {
    assert_rejected(&protected().to_toml(), &["`auth.jwks`", "auth = \"token\""]);
    assert_rejected(
        &protected()
            .auth("login_url = \"https://hubify.test/login\"")
            .to_toml(),
        &["`auth.jwks`", "missing"],
    );
}

#[test]
fn an_unreadable_or_malformed_jwks_is_refused_naming_the_key() {
    let missing = protected()
        .auth("jwks = \"/nonexistent/jwks.json\"")
        .to_toml();
    assert_rejected(
        &missing,
        &["auth.jwks", "/nonexistent/jwks.json", "cannot read"],
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let bad = dir.path().join("jwks.json");
    std::fs::write(
        &bad,
        "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\", \"kid\": \"s\"}]}",
    )
    .expect("write");
    let toml = protected()
        .auth(&format!("jwks = {:?}", bad.display().to_string()))
        .to_toml();
    assert_rejected(&toml, &["auth.jwks", "key 0", "not an Ed25519"]);
    // The examples' placeholder JWKS passes.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jwks.json");
    let toml = protected()
        .auth(&format!("jwks = {:?}", example.display().to_string()))
        .to_toml();
    let (out, _dir) = check_toml(&toml);
    assert!(out.status.success(), "{}", out.describe());
}

#[test]
fn path_auth_values_are_checked() {
    let base = protected().to_toml();
    let toml = mutate(&base, "auth = \"token\"", "auth = \"tokn\"");
    assert_rejected(&toml, &["`paths[0].auth`", "\"tokn\""]);
    let toml = mutate(&base, "scope = \"terminal\"", "scope = \"a b\"");
    assert_rejected(&toml, &["`paths[0].scope`"]);
    let toml = mutate(
        &base,
        "auth = \"token\"\nscope = \"terminal\"",
        "scope = \"terminal\"",
    );
    assert_rejected(&toml, &["`paths[0].scope`", "only with auth"]);
    let toml = mutate(
        &base,
        "auth = \"token\"\nscope = \"terminal\"",
        "auth = \"token\"",
    );
    assert_rejected(&toml, &["`paths[0].scope`", "needs the scope"]);
}

#[test]
fn ops_and_listeners_may_not_share_a_socket() {
    let mut c = base();
    c.ops = c.https;
    assert_rejected(
        &c.to_toml(),
        &["`ops.address`", "overlaps `listeners.https.address`"],
    );
    // 0.0.0.0 takes every IPv4 address of the port, 127.0.0.1 among them.
    let c = base().with_ops();
    let port = c.ops.expect("ops");
    let toml = c.to_toml().replace(
        &format!("[ops]\naddress = \"127.0.0.1:{port}\""),
        &format!("[ops]\naddress = \"0.0.0.0:{}\"", c.http_port()),
    );
    assert_rejected(&toml, &["`ops.address`", "listeners.http.address"]);
}

#[test]
fn a_log_level_that_is_not_a_level_is_refused() {
    let base = base().to_toml();
    for bad in ["verbose", "info,hubify=loud", "=info"] {
        let toml = mutate(&base, "level = \"info\"", &format!("level = {bad:?}"));
        assert_rejected(&toml, &["`log.level`"]);
    }
    let toml = mutate(&base, "level = \"info\"", "level = \"warn,access=info\"");
    let (out, _dir) = check_toml(&toml);
    assert!(out.status.success(), "{}", out.describe());
}

#[test]
fn check_opens_the_certificate_files() {
    let toml = mutate(
        &base().to_toml(),
        "[tls]\nsource = \"self-signed\"\n",
        "[tls]\nsource = \"files\"\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
    );
    assert_rejected(&toml, &["`tls.cert`", "/nonexistent/cert.pem"]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, "not a certificate").expect("write");
    std::fs::write(&key, "not a key").expect("write");
    let toml = mutate(
        &base().to_toml(),
        "[tls]\nsource = \"self-signed\"\n",
        &format!(
            "[tls]\nsource = \"files\"\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    );
    assert_rejected(&toml, &["`tls.cert`", "cert.pem"]);
}

/// Without `[routes]` every request would be a silent 404, and without `[[paths]]` the defaults
/// applied silently: both must be written (`store = "static"` with no routes, or
/// `paths = "standard"`, are fine when written).
#[test]
fn missing_routes_or_paths_are_refused() {
    let toml = base().to_toml();
    let start = toml.find("[routes]\n").expect("a [routes] table");
    let end = toml[start..]
        .find("\n\n")
        .map(|i| start + i)
        .expect("the end of [routes]");
    let without_routes = format!("{}{}", &toml[..start], &toml[end..]);
    // The static entries say "static" by themselves; drop them too.
    let without_routes: String = without_routes
        .split("\n\n")
        .filter(|block| !block.trim_start().starts_with("[[routes.static]]"))
        .collect::<Vec<_>>()
        .join("\n\n");
    assert_rejected(&without_routes, &["routes", "store = \"static\""]);

    let mut cfg = EdgeConfig::new();
    cfg.paths.clear();
    let with_standard = cfg.to_toml();
    assert!(with_standard.contains("paths = \"standard\""));
    let (out, _dir) = check_toml(&with_standard);
    assert!(out.status.success(), "{}", out.describe());
    let without_paths = mutate(&with_standard, "paths = \"standard\"\n", "");
    assert_rejected(&without_paths, &["paths", "paths = \"standard\""]);
}
