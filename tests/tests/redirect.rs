//! The redirect listener: any request → 308 to https, with the configured port.

use http::{Method, StatusCode};
use hubify_edge_tests::client::http;
use hubify_edge_tests::{host, EdgeConfig, Req, Router, Stack, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_listener_answers_308_with_the_configured_https_port() {
    let stack = Stack::start_with(|c| c.with_redirect(8443)).await;
    let port = stack
        .cfg
        .redirect
        .expect("config has a redirect listener")
        .port;

    let req = Req::get(&format!("alice.hubify.test:{port}"), "/a/b?c=d&e=f");
    let resp = http(port, &req).await;
    assert_eq!(
        resp.status,
        StatusCode::PERMANENT_REDIRECT,
        "{}",
        resp.summary()
    );
    assert_eq!(
        resp.header("location").as_deref(),
        Some("https://alice.hubify.test:8443/a/b?c=d&e=f"),
        "{}",
        resp.summary()
    );

    // Host without a port, another method, the bare root.
    let req = Req::get(&host("bob"), "/").method(Method::POST).body("x=1");
    let resp = http(port, &req).await;
    assert_eq!(
        resp.status,
        StatusCode::PERMANENT_REDIRECT,
        "{}",
        resp.summary()
    );
    assert_eq!(
        resp.header("location").as_deref(),
        Some("https://bob.hubify.test:8443/"),
        "{}",
        resp.summary()
    );

    assert!(
        stack.gateway.requests().is_empty(),
        "the redirect listener forwarded a request: {:?}",
        stack.gateway.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_to_port_443_puts_no_port_in_the_location() {
    let gateway = Upstream::echo("gateway").await;
    let cfg = EdgeConfig::new()
        .with_redirect(443)
        .path(hubify_edge_tests::PathRule::new("/", gateway.port));
    let _router = Router::start(&cfg).await;
    let port = cfg.redirect.expect("redirect listener").port;

    let req = Req::get(&format!("alice.hubify.test:{port}"), "/terminal/ws?x=1");
    let resp = http(port, &req).await;
    assert_eq!(
        resp.status,
        StatusCode::PERMANENT_REDIRECT,
        "{}",
        resp.summary()
    );
    assert_eq!(
        resp.header("location").as_deref(),
        Some("https://alice.hubify.test/terminal/ws?x=1"),
        "{}",
        resp.summary()
    );
}
