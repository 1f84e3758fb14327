//! One ACME issuance through DNS-01: the order, both challenges published at the shared
//! `_acme-challenge` name (appended, never replacing), propagation checked on the authoritative
//! servers, challenges answered, finalized with a fresh key (rcgen, ECDSA P-256), the chain
//! downloaded, the TXT values removed again (also when the issuance fails).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hubify_edge_config::Acme;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use crate::dns::{wait_propagation, DnsProvider};
use crate::store::{unix, Bundle, StoredAccount};
use crate::AcmeError;

fn acme_err(what: &str, e: instant_acme::Error) -> AcmeError {
    AcmeError::Acme(format!("{what}: {e}"))
}

/// Talks to the ACME directory.
pub struct Issuer {
    pub config: Acme,
    tls: rustls::ClientConfig,
    pub provider: Arc<dyn DnsProvider>,
}

impl Issuer {
    pub fn new(config: Acme, tls: rustls::ClientConfig, provider: Arc<dyn DnsProvider>) -> Issuer {
        Issuer {
            config,
            tls,
            provider,
        }
    }

    fn builder(&self) -> instant_acme::AccountBuilder {
        Account::builder_with_http(Box::new(crate::http::acme_client(self.tls.clone())))
    }

    /// Restores an account from stored credentials (when they belong to this directory).
    pub async fn restore(&self, stored: &StoredAccount) -> Result<Option<Account>, AcmeError> {
        if stored.directory != self.config.directory {
            return Ok(None);
        }
        let creds: AccountCredentials = serde_json::from_value(stored.credentials.clone())
            .map_err(|e| AcmeError::Store(format!("stored ACME account unreadable: {e}")))?;
        let account = self
            .builder()
            .from_credentials(creds)
            .await
            .map_err(|e| acme_err(&format!("directory {}", self.config.directory), e))?;
        Ok(Some(account))
    }

    /// Registers a new account (terms of service agreed) and returns it with what to store.
    pub async fn create_account(&self) -> Result<(Account, StoredAccount), AcmeError> {
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let (account, creds) = self
            .builder()
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await
            .map_err(|e| {
                acme_err(
                    &format!("account registration at {}", self.config.directory),
                    e,
                )
            })?;
        let credentials =
            serde_json::to_value(&creds).map_err(|e| AcmeError::Store(e.to_string()))?;
        tracing::info!(directory = %self.config.directory, account = %account.id(), "ACME account registered");
        Ok((
            account,
            StoredAccount {
                directory: self.config.directory.clone(),
                credentials,
            },
        ))
    }

    /// Orders, validates and downloads a certificate for `acme.names`.
    pub async fn issue(
        &self,
        account: &Account,
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<Bundle, AcmeError> {
        let identifiers: Vec<Identifier> = self
            .config
            .names
            .iter()
            .map(|n| Identifier::Dns(n.clone()))
            .collect();
        let mut order = match &replaces {
            Some(r) => match account
                .new_order(&NewOrder::new(&identifiers).replaces(r.clone()))
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    tracing::info!(error = %e, "ACME order with `replaces` (ARI) refused; ordering without it");
                    account
                        .new_order(&NewOrder::new(&identifiers))
                        .await
                        .map_err(|e| acme_err("new order", e))?
                }
            },
            None => account
                .new_order(&NewOrder::new(&identifiers))
                .await
                .map_err(|e| acme_err("new order", e))?,
        };
        tracing::info!(order = %order.url(), names = ?self.config.names, "ACME order created");

        // Pass 1: the TXT value of each pending authorization.
        let mut records: BTreeMap<String, Vec<String>> = BTreeMap::new();
        {
            let mut authzs = order.authorizations();
            while let Some(a) = authzs.next().await {
                let mut a = a.map_err(|e| acme_err("authorization", e))?;
                match a.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(AcmeError::Acme(format!(
                            "authorization for {} is {other:?}",
                            a.identifier()
                        )))
                    }
                }
                let ident = a.identifier().to_string();
                let ch = a.challenge(ChallengeType::Dns01).ok_or_else(|| {
                    AcmeError::Acme(format!("the CA offers no dns-01 challenge for {ident}"))
                })?;
                let base = match ch.identifier().identifier {
                    Identifier::Dns(d) => d.trim_end_matches('.').to_ascii_lowercase(),
                    other => {
                        return Err(AcmeError::Acme(format!("unexpected identifier {other:?}")))
                    }
                };
                records
                    .entry(format!("_acme-challenge.{base}"))
                    .or_default()
                    .push(ch.key_authorization().dns_value());
            }
        }

        let published = Published::new(self.provider.clone());
        let result = self
            .validate_and_finalize(&mut order, &records, &published)
            .await;
        published.cleanup().await;
        result
    }

    async fn validate_and_finalize(
        &self,
        order: &mut instant_acme::Order,
        records: &BTreeMap<String, Vec<String>>,
        published: &Published,
    ) -> Result<Bundle, AcmeError> {
        for (fqdn, values) in records {
            for v in values {
                published.add(fqdn, v).await?;
            }
        }
        for (fqdn, values) in records {
            wait_propagation(
                self.provider.as_ref(),
                fqdn,
                values,
                self.config.dns.propagation_timeout,
            )
            .await?;
        }
        tracing::debug!(
            records = records.len(),
            "challenge TXT values visible on the authoritative servers"
        );

        // Pass 2: answer every pending challenge (states are cached: no extra requests).
        {
            let mut authzs = order.authorizations();
            while let Some(a) = authzs.next().await {
                let mut a = a.map_err(|e| acme_err("authorization", e))?;
                if a.status != AuthorizationStatus::Pending {
                    continue;
                }
                let ident = a.identifier().to_string();
                let mut ch = a.challenge(ChallengeType::Dns01).ok_or_else(|| {
                    AcmeError::Acme(format!("the CA offers no dns-01 challenge for {ident}"))
                })?;
                ch.set_ready()
                    .await
                    .map_err(|e| acme_err(&format!("challenge for {ident}"), e))?;
            }
        }

        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(100))
            .backoff(1.5)
            .timeout(
                self.config
                    .dns
                    .propagation_timeout
                    .max(Duration::from_secs(60)),
            );
        let status = order
            .poll_ready(&policy)
            .await
            .map_err(|e| acme_err("waiting for validation", e))?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Acme(format!(
                "order {status:?} after validation: {}",
                self.challenge_errors(order).await
            )));
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| acme_err("finalize", e))?;
        let chain_pem = order
            .poll_certificate(&policy)
            .await
            .map_err(|e| acme_err("certificate download", e))?;
        let bundle = Bundle {
            chain_pem,
            key_pem,
            issued_at: unix(SystemTime::now()),
        };
        let loaded = bundle.load("ACME certificate")?;
        for n in &self.config.names {
            if !loaded.info.names.iter().any(|c| c.eq_ignore_ascii_case(n)) {
                return Err(AcmeError::Acme(format!(
                    "the issued certificate does not name {n} (it names {:?})",
                    loaded.info.names
                )));
            }
        }
        Ok(bundle)
    }

    async fn challenge_errors(&self, order: &mut instant_acme::Order) -> String {
        let mut out = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let Ok(mut a) = a else { continue };
            let _ = a.refresh().await;
            for c in &a.challenges {
                if let Some(p) = &c.error {
                    out.push(format!("{}: {p}", a.identifier()));
                }
            }
        }
        if out.is_empty() {
            "no challenge error reported".into()
        } else {
            out.join("; ")
        }
    }

    /// The renewal window the CA suggests (ARI), as a point in it chosen at random, with how long
    /// until asking again. `Ok(None)` when the CA does not offer ARI.
    pub async fn renewal_info(
        &self,
        account: &Account,
        leaf_der: &[u8],
    ) -> Result<Option<(SystemTime, Duration)>, AcmeError> {
        let Some(id) = cert_identifier(leaf_der) else {
            return Ok(None);
        };
        match account.renewal_info(&id).await {
            Ok((info, retry)) => {
                let start = info.suggested_window.start.unix_timestamp();
                let end = info.suggested_window.end.unix_timestamp().max(start);
                let pick = if end > start {
                    start + (rand::random::<u64>() % ((end - start) as u64)) as i64
                } else {
                    start
                };
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(pick.max(0) as u64);
                Ok(Some((at, retry)))
            }
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(acme_err("renewal information (ARI)", e)),
        }
    }
}

/// The ARI certificate identifier: authority key identifier + serial (RFC 9773 §4.1).
pub fn cert_identifier(leaf_der: &[u8]) -> Option<CertificateIdentifier<'static>> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(leaf_der).ok()?;
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })?;
    let serial = cert.tbs_certificate.raw_serial().to_vec();
    Some(
        CertificateIdentifier::new(
            rustls::pki_types::Der::from_slice(&aki),
            rustls::pki_types::Der::from_slice(&serial),
        )
        .into_owned(),
    )
}

/// TXT values published so far, removed by [`Published::cleanup`].
struct Published {
    provider: Arc<dyn DnsProvider>,
    added: tokio::sync::Mutex<Vec<(String, String)>>,
}

impl Published {
    fn new(provider: Arc<dyn DnsProvider>) -> Published {
        Published {
            provider,
            added: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    async fn add(&self, fqdn: &str, value: &str) -> Result<(), AcmeError> {
        self.provider.add_txt(fqdn, value).await?;
        self.added
            .lock()
            .await
            .push((fqdn.to_string(), value.to_string()));
        Ok(())
    }

    async fn cleanup(&self) {
        let added = std::mem::take(&mut *self.added.lock().await);
        remove_all(self.provider.clone(), added).await;
    }
}

async fn remove_all(provider: Arc<dyn DnsProvider>, added: Vec<(String, String)>) {
    for (fqdn, value) in added {
        if let Err(e) = provider.remove_txt(&fqdn, &value).await {
            tracing::warn!(error = %e, %fqdn, "could not remove a challenge TXT value");
        }
    }
}

impl Drop for Published {
    /// An issuance abandoned mid-way (timeout): remove what it published in the background.
    fn drop(&mut self) {
        let added = std::mem::take(self.added.get_mut());
        if added.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(remove_all(self.provider.clone(), added));
        }
    }
}
