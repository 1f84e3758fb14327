//! The router's own answers: small HTML pages, or JSON when the client prefers it.

use bytes::Bytes;

/// The short text of a status the router answers itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "Starting your workspace",
        400 => "Bad request",
        401 => "Sign-in needed",
        403 => "Not allowed",
        404 => "No such workspace",
        413 => "Request body too large to replay",
        421 => "Misdirected request: the TLS server name and the Host differ",
        500 => "Internal error",
        502 => "The workspace could not be reached",
        503 => "The workspace is unavailable right now",
        504 => "The workspace took too long to answer",
        508 => "Loop detected: this request was already replayed",
        _ => "Error",
    }
}

/// True when the `Accept` header ranks `application/json` above HTML.
pub fn prefers_json(accept: Option<&[u8]>) -> bool {
    let Some(accept) = accept.and_then(|a| std::str::from_utf8(a).ok()) else {
        return false;
    };
    let (mut json, mut html) = (0.0f32, 0.0f32);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in parts {
            if let Some(v) = p.trim().strip_prefix("q=") {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        match media.as_str() {
            "application/json" | "application/problem+json" => json = json.max(q),
            "text/html" | "text/*" | "*/*" => html = html.max(q),
            _ => {}
        }
    }
    json > 0.0 && json > html
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders an error page: (content type, body). `login`: a link to sign in (a 401 of the access
/// check), shown on the HTML page and given as `login_url` in JSON.
pub fn render(
    status: u16,
    detail: &str,
    request_id: &str,
    json: bool,
    login: Option<&str>,
) -> (&'static str, Bytes) {
    if json {
        let mut body = serde_json::json!({
            "status": status,
            "error": reason(status),
            "detail": detail,
            "request_id": request_id,
        });
        if let Some(l) = login {
            body["login_url"] = l.into();
        }
        ("application/json", Bytes::from(body.to_string()))
    } else {
        let title = html_escape(reason(status));
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {title}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
             code{{color:#666}}</style></head>\n<body><h1>{status} &middot; {title}</h1><p>{detail}</p>{login}\
             <p><code>request id {rid}</code></p></body></html>\n",
            detail = html_escape(detail),
            login = login
                .map(|l| format!("<p><a href=\"{}\">Sign in</a></p>", html_escape(l)))
                .unwrap_or_default(),
            rid = html_escape(request_id),
        );
        ("text/html; charset=utf-8", Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        assert!(!prefers_json(None));
        assert!(!prefers_json(Some(b"*/*")));
        assert!(!prefers_json(Some(b"text/html,application/json;q=0.9")));
        assert!(prefers_json(Some(b"application/json")));
        assert!(prefers_json(Some(b"application/json, */*;q=0.5")));
        assert!(!prefers_json(Some(b"application/json;q=0")));
    }

    #[test]
    fn pages_escape_and_carry_the_id() {
        let (ct, body) = render(404, "<script>", "abc", false, None);
        assert!(ct.starts_with("text/html"));
        let s = std::str::from_utf8(&body).unwrap();
        assert!(s.contains("&lt;script&gt;") && s.contains("abc") && s.contains("404"));
        let (ct, body) = render(502, "x", "abc", true, None);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], 502);
        assert_eq!(v["request_id"], "abc");
    }
}
