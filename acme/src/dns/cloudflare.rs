//! The Cloudflare API (v4): list, create and delete TXT records of one zone with an API token.
//! Endpoints used: `GET /zones/{id}` (name servers), `GET|POST /zones/{id}/dns_records`,
//! `DELETE /zones/{id}/dns_records/{record}`.

use std::net::SocketAddr;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{DnsError, DnsProvider};
use crate::http::JsonClient;

pub const DEFAULT_API_BASE: &str = "https://api.cloudflare.com/client/v4";

pub struct Cloudflare {
    client: JsonClient,
    base: String,
    zone_id: String,
    token: String,
    check_server: Option<SocketAddr>,
}

/// Cloudflare shows TXT content with or without surrounding quotes depending on the API version.
fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

impl Cloudflare {
    pub fn new(
        client: JsonClient,
        base: &str,
        zone_id: &str,
        token: &str,
        check_server: Option<SocketAddr>,
    ) -> Cloudflare {
        Cloudflare {
            client,
            base: base.trim_end_matches('/').to_string(),
            zone_id: zone_id.to_string(),
            token: token.to_string(),
            check_server,
        }
    }

    fn err(&self, message: impl Into<String>) -> DnsError {
        DnsError {
            provider: "cloudflare",
            message: message.into(),
        }
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DnsError> {
        let url = format!("{}/zones/{}{path}", self.base, self.zone_id);
        let rsp = self
            .client
            .send(method.clone(), &url, &self.token, body)
            .await
            .map_err(|e| self.err(e))?;
        let v: Value = serde_json::from_slice(&rsp.body).map_err(|e| {
            self.err(format!(
                "{method} {url}: HTTP {} with a body that is not JSON: {e}",
                rsp.status
            ))
        })?;
        let success = v.get("success").and_then(Value::as_bool).unwrap_or(false);
        if !(200..300).contains(&rsp.status) || !success {
            let errors = v
                .get("errors")
                .map(|e| e.to_string())
                .unwrap_or_else(|| "[]".into());
            let hint = if rsp.status == 401 || rsp.status == 403 {
                " (check CLOUDFLARE_API_TOKEN: it needs Zone.DNS edit on this zone)"
            } else {
                ""
            };
            return Err(self.err(format!(
                "{method} {url}: HTTP {}: {errors}{hint}",
                rsp.status
            )));
        }
        Ok(v)
    }

    /// (id, content) of the TXT records at `fqdn`.
    pub async fn list_txt(&self, fqdn: &str) -> Result<Vec<(String, String)>, DnsError> {
        let v = self
            .call(
                http::Method::GET,
                &format!("/dns_records?type=TXT&name={fqdn}&per_page=100"),
                None,
            )
            .await?;
        let list = v
            .get("result")
            .and_then(Value::as_array)
            .ok_or_else(|| self.err("dns_records: the answer has no result list"))?;
        Ok(list
            .iter()
            .filter_map(|r| {
                let id = r.get("id")?.as_str()?;
                let content = r.get("content")?.as_str()?;
                Some((id.to_string(), unquote(content).to_string()))
            })
            .collect())
    }
}

#[async_trait]
impl DnsProvider for Cloudflare {
    fn name(&self) -> &'static str {
        "cloudflare"
    }

    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        if self.list_txt(fqdn).await?.iter().any(|(_, c)| c == value) {
            return Ok(());
        }
        self.call(
            http::Method::POST,
            "/dns_records",
            Some(json!({"type": "TXT", "name": fqdn, "content": value, "ttl": 60})),
        )
        .await?;
        Ok(())
    }

    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        for (id, content) in self.list_txt(fqdn).await? {
            if content == value {
                self.call(http::Method::DELETE, &format!("/dns_records/{id}"), None)
                    .await?;
            }
        }
        Ok(())
    }

    async fn authoritative_servers(&self) -> Result<Vec<SocketAddr>, DnsError> {
        if let Some(s) = self.check_server {
            return Ok(vec![s]);
        }
        let v = self.call(http::Method::GET, "", None).await?;
        let names: Vec<String> = v
            .pointer("/result/name_servers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for ns in &names {
            if let Ok(addrs) = tokio::net::lookup_host((ns.as_str(), 53)).await {
                out.extend(addrs);
            }
        }
        if out.is_empty() {
            return Err(self.err(format!(
                "cannot find the zone's name servers ({names:?}); set acme.dns.propagation_server"
            )));
        }
        Ok(out)
    }
}
