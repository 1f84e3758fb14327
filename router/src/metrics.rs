//! Prometheus metrics (bounded labels only: listener, outcome, path rule, status class).

/// The text exposition of every registered metric.
pub fn render() -> String {
    String::new()
}
