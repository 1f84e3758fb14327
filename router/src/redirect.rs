//! The redirect listener: every request gets `308` to the same host and path over https.

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::host::normalize_host;

pub struct RedirectApp {
    /// The port put into the Location (443: none).
    pub https_port: u16,
}

/// The https URL for a request, or `None` when its host is missing or malformed.
pub fn location(host: Option<&str>, path_and_query: &str, https_port: u16) -> Option<String> {
    let host = normalize_host(host?)?;
    Some(if https_port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{https_port}{path_and_query}")
    })
}

#[async_trait]
impl ServeHttp for RedirectApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let host = req.uri.authority().map(|a| a.as_str()).or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        });
        let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let builder = Response::builder().header(http::header::CONTENT_LENGTH, "0");
        let resp = match location(host, pq, self.https_port) {
            Some(loc) => builder
                .status(308)
                .header(http::header::LOCATION, loc)
                .body(Vec::new()),
            None => builder.status(400).body(Vec::new()),
        };
        resp.unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::location;

    #[test]
    fn locations() {
        assert_eq!(
            location(Some("Alice.hubify.com:80"), "/x?y=1", 443).as_deref(),
            Some("https://alice.hubify.com/x?y=1")
        );
        assert_eq!(
            location(Some("alice.hubify.com"), "/", 8443).as_deref(),
            Some("https://alice.hubify.com:8443/")
        );
        assert_eq!(location(None, "/", 443), None);
        assert_eq!(location(Some("bad host"), "/", 443), None);
    }
}
