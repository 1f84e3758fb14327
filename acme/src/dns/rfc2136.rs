//! RFC 2136 dynamic UPDATE signed with TSIG: works with BIND, Knot, PowerDNS and most managed DNS.

use std::net::SocketAddr;
use std::time::SystemTime;

use async_trait::async_trait;

use super::wire::{self, Change, TsigKey};
use super::{exchange_udp, DnsError, DnsProvider};

/// TTL of the published challenge values: short, they live for one issuance.
const TXT_TTL: u32 = 60;

pub struct Rfc2136 {
    server: SocketAddr,
    zone: String,
    key: TsigKey,
    check_servers: Vec<SocketAddr>,
}

impl Rfc2136 {
    pub fn new(server: SocketAddr, zone: &str, key: TsigKey) -> Rfc2136 {
        Rfc2136 {
            server,
            zone: zone.trim_end_matches('.').to_ascii_lowercase(),
            key,
            check_servers: vec![server],
        }
    }

    /// Checks propagation on these servers instead of the update server.
    pub fn with_check_servers(mut self, servers: Vec<SocketAddr>) -> Rfc2136 {
        self.check_servers = servers;
        self
    }

    fn err(&self, message: impl Into<String>) -> DnsError {
        DnsError {
            provider: "rfc2136",
            message: message.into(),
        }
    }

    /// Sends one signed UPDATE and checks the answer (rcode and TSIG).
    pub async fn send(&self, changes: &[Change]) -> Result<(), DnsError> {
        let id: u16 = rand::random();
        let mut msg = wire::update(id, &self.zone, changes).map_err(|e| self.err(e.to_string()))?;
        let mac = self
            .key
            .sign(&mut msg, SystemTime::now())
            .map_err(|e| self.err(e.to_string()))?;
        let raw = exchange_udp(self.server, &msg)
            .await
            .map_err(|e| self.err(format!("UPDATE to {}: {e}", self.server)))?;
        let answer = wire::parse(&raw)
            .map_err(|e| self.err(format!("UPDATE answer from {}: {e}", self.server)))?;
        let tsig_problem = match &answer.tsig {
            Some(t) if t.error != 0 => Some(wire::tsig_error_name(t.error)),
            _ => None,
        };
        if answer.rcode() != 0 {
            let mut m = format!(
                "UPDATE of zone {} refused by {}: {}",
                self.zone,
                self.server,
                wire::rcode_name(answer.rcode())
            );
            if let Some(t) = tsig_problem {
                m.push_str(&format!(
                    " (TSIG key {:?}: {t}; check HUBIFY_EDGE_TSIG_SECRET, acme.dns.tsig_key_name and acme.dns.tsig_algorithm)",
                    self.key.name
                ));
            } else if answer.rcode() == 9 || answer.rcode() == 5 {
                m.push_str(&format!(
                    " (is TSIG key {:?} allowed to update TXT records at _acme-challenge in this zone?)",
                    self.key.name
                ));
            }
            return Err(self.err(m));
        }
        self.key
            .verify(&answer, &raw, &mac)
            .map_err(|e| self.err(format!("UPDATE answer from {}: {e}", self.server)))?;
        Ok(())
    }
}

#[async_trait]
impl DnsProvider for Rfc2136 {
    fn name(&self) -> &'static str {
        "rfc2136"
    }

    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.send(&[Change::AddTxt {
            name: fqdn.to_string(),
            value: value.to_string(),
            ttl: TXT_TTL,
        }])
        .await
    }

    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.send(&[Change::DeleteTxt {
            name: fqdn.to_string(),
            value: value.to_string(),
        }])
        .await
    }

    async fn authoritative_servers(&self) -> Result<Vec<SocketAddr>, DnsError> {
        Ok(self.check_servers.clone())
    }
}
