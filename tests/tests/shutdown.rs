//! Graceful shutdown on SIGTERM: in-flight requests finish, then the process exits 0.

use std::time::Duration;

use http::StatusCode;
use hubify_edge_tests::client::{
    error_chain, https_h1, try_http, try_https_alpn, ALPN_H1, ALPN_H2,
};
use hubify_edge_tests::{host, EdgeConfig, PathRule, Req, Router, Upstream};

/// grace_period + shutdown_timeout + slack.
const EXIT_BOUND: Duration = Duration::from_secs(1 + 10 + 20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let slow = Upstream::slow("slow", Duration::from_secs(2)).await;
    let cfg = EdgeConfig::new()
        .grace_period("1s")
        .shutdown_timeout("10s")
        .read_timeout("30s")
        .path(PathRule::new("/", slow.port));
    let mut router = Router::start(&cfg).await;

    let https_port = cfg.https_port();
    let http_port = cfg.http_port();
    let over_tls = tokio::spawn(async move {
        let alice = host("alice");
        try_https_alpn(https_port, &alice, ALPN_H1, &Req::get(&alice, "/slow-tls")).await
    });
    let over_plain =
        tokio::spawn(
            async move { try_http(http_port, &Req::get(&host("alice"), "/slow-plain")).await },
        );
    // An HTTP/2 stream: its connection gets GOAWAY, the stream still completes.
    let over_h2 = tokio::spawn(async move {
        let alice = host("alice");
        try_https_alpn(https_port, &alice, ALPN_H2, &Req::get(&alice, "/slow-h2")).await
    });

    // All three requests are at the upstream (which answers 2 s later): now SIGTERM.
    slow.wait_for_requests(3, Duration::from_secs(20)).await;
    router.sigterm();

    let (resp, alpn) = over_h2.await.expect("h2 request task").unwrap_or_else(|e| {
        panic!(
            "in-flight HTTP/2 stream failed during shutdown: {}",
            error_chain(e.as_ref())
        )
    });
    assert_eq!(alpn.as_deref(), Some("h2"));
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "in-flight h2 stream: {}",
        resp.summary()
    );
    assert_eq!(resp.echo().path, "/slow-h2");

    let tls_result = over_tls.await.expect("TLS request task");
    let plain_result = over_plain.await.expect("plain request task");
    let (resp, _) = tls_result.unwrap_or_else(|e| {
        panic!(
            "in-flight TLS request failed during shutdown: {}\n(plain request: {})",
            error_chain(e.as_ref()),
            match &plain_result {
                Ok(r) => format!("{}", r.status),
                Err(e) => error_chain(e.as_ref()),
            }
        )
    });
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "in-flight TLS request: {}",
        resp.summary()
    );
    let echo = resp.echo();
    assert_eq!(echo.service, "slow");
    assert_eq!(echo.path, "/slow-tls");

    let resp = plain_result.unwrap_or_else(|e| {
        panic!(
            "in-flight plain request failed during shutdown: {}",
            error_chain(e.as_ref())
        )
    });
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "in-flight plain request: {}",
        resp.summary()
    );
    assert_eq!(resp.echo().path, "/slow-plain");

    let status = router
        .wait_exit(EXIT_BOUND)
        .await
        .unwrap_or_else(|| panic!("router still running {EXIT_BOUND:?} after SIGTERM"));
    assert!(
        status.success(),
        "router exited with {status} after SIGTERM, expected 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_an_idle_router_exits_zero() {
    let gateway = Upstream::echo("gateway").await;
    let cfg = EdgeConfig::new()
        .grace_period("1s")
        .shutdown_timeout("5s")
        .path(PathRule::new("/", gateway.port));
    let mut router = Router::start(&cfg).await;
    // It serves before the signal.
    let alice = host("alice");
    let resp = https_h1(cfg.https_port(), &alice, &Req::get(&alice, "/")).await;
    assert_eq!(resp.echo().service, "gateway");

    router.sigterm();
    let bound = Duration::from_secs(1 + 5 + 20);
    let status = router
        .wait_exit(bound)
        .await
        .unwrap_or_else(|| panic!("idle router still running {bound:?} after SIGTERM"));
    assert!(
        status.success(),
        "router exited with {status} after SIGTERM, expected 0"
    );
}
