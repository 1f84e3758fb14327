//! Shared set-up of the hot-path benchmarks (`benches/`): a Redis-backed route store whose cache
//! is warm, without a Redis (its source is never asked), and a way to run the store's `async`
//! lookup the way the proxy does when it hits the cache (one poll, no waiting).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use hubify_edge::metrics::RouteCacheMetrics;
use hubify_edge::routes::cache::{Cached, RouteCache, Ttls};
use hubify_edge::routes::cached::{CachedStore, FetchError, Fetched, Source};
use hubify_edge::routes::RouteStore;
use hubify_edge_config::Route;

/// A source that is never reached on a cache hit; it fails if it is.
struct NoRedis;

#[async_trait]
impl Source for NoRedis {
    async fn fetch(&self, _label: &str) -> Result<Fetched, FetchError> {
        Err(FetchError::Down)
    }
    fn is_connected(&self) -> bool {
        false
    }
}

/// The label of workspace `i`.
pub fn label(i: usize) -> String {
    format!("ws-{i:06}")
}

/// A Redis-kind route store with `n` cached routes (labels [`label`]`(0..n)`), capacity `n`, a
/// 1 h TTL. `runtime` spawns the (never needed) store reads.
pub fn warm_store(n: usize, runtime: &tokio::runtime::Runtime) -> RouteStore {
    let metrics = RouteCacheMetrics::leak();
    let cache = RouteCache::new(
        n,
        Ttls {
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(5),
            max_stale: Duration::from_secs(3600),
        },
        metrics,
    );
    let store = Arc::new(CachedStore::new(
        cache,
        Arc::new(NoRedis),
        runtime.handle().clone(),
        Duration::from_millis(50),
        metrics,
    ));
    let now = std::time::Instant::now();
    for i in 0..n {
        let route = Route::new(
            Some("hubify-workspace"),
            Some("90801679a10038"),
            Some("iad"),
            Some("127.0.0.1"),
        )
        .expect("a valid route");
        let epoch = store.cache().epoch();
        store
            .cache()
            .insert(&label(i), Cached::Found(Arc::new(route)), now, epoch);
    }
    RouteStore::cached(store)
}

/// Polls `f` once: `Some` when it completed without waiting (a cache hit always does).
pub fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}
