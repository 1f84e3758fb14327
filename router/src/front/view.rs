//! The one host/authority rule, and a Pingora request as the policy sees it.

use http::header::HOST;
use http::HeaderName;
use pingora_http::RequestHeader;

use super::{BadHost, RequestView};

/// A Pingora request as [`Front::route`] sees it.
pub(crate) struct PingoraRequest<'a> {
    pub req: &'a RequestHeader,
    pub upgrade: bool,
}

impl RequestView for PingoraRequest<'_> {
    fn method(&self) -> &str {
        self.req.method.as_str()
    }
    fn path_and_query(&self) -> &str {
        self.req
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    }
    fn host(&self) -> std::result::Result<Option<&str>, BadHost> {
        request_host(self.req).map_err(|()| BadHost)
    }
    fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        self.req.headers.get(name).map(|v| v.as_bytes())
    }
    fn is_upgrade(&self) -> bool {
        self.upgrade
    }
    fn cookie(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        super::cookie_field(
            self.req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .map(|v| v.as_bytes()),
        )
    }
    fn splits_cookies(&self) -> bool {
        self.req.version == http::Version::HTTP_2
    }
    fn protocol(&self) -> &'static str {
        match self.req.version {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_09 => "HTTP/0.9",
            _ => "HTTP/1.1",
        }
    }
}

/// The host the request names: the URI authority (HTTP/2 `:authority`, HTTP/1 absolute form)
/// first, else the single Host header. `Err` when there are several Host headers or it is not
/// text.
pub(crate) fn request_host(req: &RequestHeader) -> std::result::Result<Option<&str>, ()> {
    if let Some(a) = req.uri.authority() {
        return Ok(Some(a.as_str()));
    }
    let mut hosts = req.headers.get_all(HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(());
    }
    match first {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_the_single_host_or_the_authority() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
        assert_eq!(request_host(&req), Ok(None));
        req.insert_header(HOST, "a.example.com").expect("a header");
        assert_eq!(request_host(&req), Ok(Some("a.example.com")));
        req.append_header(HOST, "b.example.com").expect("a header");
        assert_eq!(request_host(&req), Err(()), "two Host headers");
        let mut abs = RequestHeader::build("GET", b"/x", None).expect("a request");
        abs.set_uri(http::Uri::from_static("http://c.example.com:8080/x"));
        abs.insert_header(HOST, "ignored.example.com")
            .expect("a header");
        assert_eq!(request_host(&abs), Ok(Some("c.example.com:8080")));
    }
}
