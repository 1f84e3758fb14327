//! Where issued certificates and the ACME account live: Redis (shared by every replica) and the
//! state directory (a local copy, so a replica starts while Redis is down; the only store without
//! a `[redis]` section).
//!
//! Redis keys (`<prefix>` is `redis.key_prefix`):
//! - `<prefix>:tls:<domain>` — hash: `chain` (PEM), `key` (PEM), `not_after`, `issued_at`
//!   (unix seconds), `serial`, `fingerprint`;
//! - `<prefix>:tls-events` — pub/sub channel: the new fingerprint after each store;
//! - `<prefix>:acme:account` — the account credentials (JSON, with the directory URL);
//! - `<prefix>:acme:lock` — the issuance lock (random token, `SET NX PX`);
//! - `<prefix>:acme:orders` — a counter of ACME orders created (all replicas).
//!
//! State directory: `fullchain.pem`, `privkey.pem` (0600), `account.json` (0600).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::{load_pem_pair, AcmeError, LoadedCert};

/// A certificate chain and its key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    pub chain_pem: String,
    pub key_pem: String,
    pub issued_at: u64,
}

impl Bundle {
    /// Parses and checks the pair (the key must fit the leaf).
    pub fn load(&self, origin: &str) -> Result<LoadedCert, AcmeError> {
        load_pem_pair(
            self.chain_pem.as_bytes(),
            self.key_pem.as_bytes(),
            Path::new(origin),
            Path::new(origin),
            "acme",
        )
        .map_err(|e| AcmeError::Store(format!("stored certificate unusable: {e}")))
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Account credentials with the directory they belong to.
#[derive(Serialize, Deserialize)]
pub struct StoredAccount {
    pub directory: String,
    pub credentials: serde_json::Value,
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct Disk {
    pub dir: PathBuf,
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

impl Disk {
    pub fn new(dir: &Path) -> Disk {
        Disk {
            dir: dir.to_path_buf(),
        }
    }

    fn ensure(&self) -> Result<(), AcmeError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            AcmeError::Store(format!(
                "acme.state_dir {}: cannot create: {e}",
                self.dir.display()
            ))
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(())
    }

    pub fn chain_path(&self) -> PathBuf {
        self.dir.join("fullchain.pem")
    }
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("privkey.pem")
    }

    /// The stored pair, `None` when there is none yet.
    pub fn read_bundle(&self) -> Result<Option<Bundle>, AcmeError> {
        let read = |p: PathBuf| match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AcmeError::Store(format!("{}: {e}", p.display()))),
        };
        let (Some(chain_pem), Some(key_pem)) = (read(self.chain_path())?, read(self.key_path())?)
        else {
            return Ok(None);
        };
        let issued_at = std::fs::metadata(self.chain_path())
            .and_then(|m| m.modified())
            .map(unix)
            .unwrap_or(0);
        Ok(Some(Bundle {
            chain_pem,
            key_pem,
            issued_at,
        }))
    }

    /// Writes the pair: key first (0600), then the chain, each atomically.
    pub fn write_bundle(&self, b: &Bundle) -> Result<(), AcmeError> {
        self.ensure()?;
        let err = |p: PathBuf, e: std::io::Error| AcmeError::Store(format!("{}: {e}", p.display()));
        write_atomic(&self.key_path(), b.key_pem.as_bytes(), 0o600)
            .map_err(|e| err(self.key_path(), e))?;
        write_atomic(&self.chain_path(), b.chain_pem.as_bytes(), 0o644)
            .map_err(|e| err(self.chain_path(), e))?;
        Ok(())
    }

    pub fn read_account(&self) -> Result<Option<StoredAccount>, AcmeError> {
        let p = self.dir.join("account.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| AcmeError::Store(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AcmeError::Store(format!("{}: {e}", p.display()))),
        }
    }

    pub fn write_account(&self, a: &StoredAccount) -> Result<(), AcmeError> {
        self.ensure()?;
        let p = self.dir.join("account.json");
        let data = serde_json::to_vec_pretty(a).map_err(|e| AcmeError::Store(e.to_string()))?;
        write_atomic(&p, &data, 0o600)
            .map_err(|e| AcmeError::Store(format!("{}: {e}", p.display())))
    }
}

/// Redis key names.
#[derive(Clone, Debug)]
pub struct Keys {
    pub tls: String,
    pub events: String,
    pub account: String,
    pub lock: String,
    pub orders: String,
}

impl Keys {
    pub fn new(prefix: &str, domain: &str) -> Keys {
        Keys {
            tls: format!("{prefix}:tls:{domain}"),
            events: format!("{prefix}:tls-events"),
            account: format!("{prefix}:acme:account"),
            lock: format!("{prefix}:acme:lock"),
            orders: format!("{prefix}:acme:orders"),
        }
    }
}

/// HSET the bundle and PUBLISH, only when the stored `not_after` is missing or older.
const PUT_IF_NEWER: &str = r"
local cur = redis.call('hget', KEYS[1], 'not_after')
if cur and tonumber(cur) and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('hset', KEYS[1], 'chain', ARGV[2], 'key', ARGV[3], 'issued_at', ARGV[4], 'not_after', ARGV[1], 'serial', ARGV[5], 'fingerprint', ARGV[6])
redis.call('publish', KEYS[2], ARGV[6])
return 1";

const EXTEND: &str = r"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str = r"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// The shared store in Redis. Connects lazily and reconnects; every command has a timeout.
pub struct Shared {
    pub client: redis::Client,
    conn: Option<ConnectionManager>,
    pub keys: Keys,
    timeout: Duration,
    connect_timeout: Duration,
}

fn rerr(e: impl std::fmt::Display) -> AcmeError {
    AcmeError::Redis(e.to_string())
}

impl Shared {
    pub fn new(
        url: &str,
        keys: Keys,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Shared, AcmeError> {
        let client =
            redis::Client::open(url).map_err(|e| AcmeError::Config(format!("redis.url: {e}")))?;
        Ok(Shared {
            client,
            conn: None,
            keys,
            // Certificates are a few KiB; the request-path timeout (tens of ms) is too tight here.
            timeout: timeout.max(Duration::from_secs(2)),
            connect_timeout: connect_timeout.max(Duration::from_secs(1)),
        })
    }

    /// A second handle on the same server (its own connection), e.g. to keep the lock alive.
    pub fn from_client(client: redis::Client, keys: Keys) -> Shared {
        Shared {
            client,
            conn: None,
            keys,
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
        }
    }

    /// True while some replica holds the issuance lock.
    pub async fn lock_exists(&mut self) -> Result<bool, AcmeError> {
        let key = self.keys.lock.clone();
        let n: i64 = self
            .run(|mut c| {
                let key = key.clone();
                async move { c.exists(&key).await }
            })
            .await?;
        Ok(n > 0)
    }

    /// The order counter.
    pub async fn orders(&mut self) -> Result<u64, AcmeError> {
        let key = self.keys.orders.clone();
        let n: Option<u64> = self
            .run(|mut c| {
                let key = key.clone();
                async move { c.get(&key).await }
            })
            .await?;
        Ok(n.unwrap_or(0))
    }

    async fn conn(&mut self) -> Result<ConnectionManager, AcmeError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let c = tokio::time::timeout(
            self.connect_timeout + self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await
        .map_err(|_| AcmeError::Redis("connect: timed out".into()))?
        .map_err(rerr)?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on a connection, retrying once (the first command after a drop fails).
    async fn run<T, F, Fut>(&mut self, f: F) -> Result<T, AcmeError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut last = None;
        for _ in 0..2 {
            let c = self.conn().await?;
            match tokio::time::timeout(self.timeout, f(c)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => last = Some(rerr(e)),
                Err(_) => last = Some(AcmeError::Redis("command timed out".into())),
            }
        }
        Err(last.unwrap_or_else(|| AcmeError::Redis("unknown error".into())))
    }

    pub async fn get_bundle(&mut self) -> Result<Option<Bundle>, AcmeError> {
        let key = self.keys.tls.clone();
        let (chain, k, issued): (Option<String>, Option<String>, Option<u64>) = self
            .run(|mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("HMGET")
                        .arg(&key)
                        .arg("chain")
                        .arg("key")
                        .arg("issued_at")
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(match (chain, k) {
            (Some(chain_pem), Some(key_pem)) => Some(Bundle {
                chain_pem,
                key_pem,
                issued_at: issued.unwrap_or(0),
            }),
            _ => None,
        })
    }

    /// Stores the bundle and announces it on the events channel.
    pub async fn put_bundle(&mut self, b: &Bundle, cert: &LoadedCert) -> Result<(), AcmeError> {
        let key = self.keys.tls.clone();
        let events = self.keys.events.clone();
        let fields: Vec<(&'static str, String)> = vec![
            ("chain", b.chain_pem.clone()),
            ("key", b.key_pem.clone()),
            ("issued_at", b.issued_at.to_string()),
            ("not_after", unix(cert.info.not_after).to_string()),
            ("serial", cert.info.serial.clone()),
            ("fingerprint", cert.info.fingerprint.clone()),
        ];
        let fp = cert.info.fingerprint.clone();
        self.run(|mut c| {
            let (key, events, fields, fp) =
                (key.clone(), events.clone(), fields.clone(), fp.clone());
            async move {
                redis::pipe()
                    .atomic()
                    .hset_multiple(&key, &fields)
                    .ignore()
                    .publish(&events, &fp)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await
    }

    /// Stores the bundle only if Redis holds nothing newer (atomic); true when stored.
    pub async fn put_bundle_if_newer(
        &mut self,
        b: &Bundle,
        cert: &LoadedCert,
    ) -> Result<bool, AcmeError> {
        let (key, events) = (self.keys.tls.clone(), self.keys.events.clone());
        let args = [
            unix(cert.info.not_after).to_string(),
            b.chain_pem.clone(),
            b.key_pem.clone(),
            b.issued_at.to_string(),
            cert.info.serial.clone(),
            cert.info.fingerprint.clone(),
        ];
        let stored: i64 = self
            .run(|mut c| {
                let (key, events, args) = (key.clone(), events.clone(), args.clone());
                async move {
                    let script = redis::Script::new(PUT_IF_NEWER);
                    let mut inv = script.key(&key);
                    inv.key(&events);
                    for a in &args {
                        inv.arg(a);
                    }
                    inv.invoke_async(&mut c).await
                }
            })
            .await?;
        Ok(stored == 1)
    }

    pub async fn get_account(&mut self) -> Result<Option<StoredAccount>, AcmeError> {
        let key = self.keys.account.clone();
        let v: Option<String> = self
            .run(|mut c| {
                let key = key.clone();
                async move { c.get(&key).await }
            })
            .await?;
        match v {
            None => Ok(None),
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| AcmeError::Store(format!("{key}: {e}"))),
        }
    }

    pub async fn put_account(&mut self, a: &StoredAccount) -> Result<(), AcmeError> {
        let key = self.keys.account.clone();
        let data = serde_json::to_string(a).map_err(|e| AcmeError::Store(e.to_string()))?;
        self.run(|mut c| {
            let (key, data) = (key.clone(), data.clone());
            async move { c.set::<_, _, ()>(&key, &data).await }
        })
        .await
    }

    /// `SET lock token NX PX ttl`: true when we own the lock now.
    pub async fn try_lock(&mut self, token: &str, ttl: Duration) -> Result<bool, AcmeError> {
        let key = self.keys.lock.clone();
        let ms = ttl.as_millis() as u64;
        let token = token.to_string();
        let r: Option<String> = self
            .run(|mut c| {
                let (key, token) = (key.clone(), token.clone());
                async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(ms)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(r.is_some())
    }

    /// Extends the lock if we still own it; false when it was lost.
    pub async fn extend_lock(&mut self, token: &str, ttl: Duration) -> Result<bool, AcmeError> {
        let key = self.keys.lock.clone();
        let ms = ttl.as_millis() as u64;
        let token = token.to_string();
        let r: i64 = self
            .run(|mut c| {
                let (key, token) = (key.clone(), token.clone());
                async move {
                    redis::Script::new(EXTEND)
                        .key(&key)
                        .arg(&token)
                        .arg(ms)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(r == 1)
    }

    /// Deletes the lock if we still own it.
    pub async fn release_lock(&mut self, token: &str) -> Result<bool, AcmeError> {
        let key = self.keys.lock.clone();
        let token = token.to_string();
        let r: i64 = self
            .run(|mut c| {
                let (key, token) = (key.clone(), token.clone());
                async move {
                    redis::Script::new(RELEASE)
                        .key(&key)
                        .arg(&token)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(r == 1)
    }

    /// Counts one ACME order (for operators and tests: one order per renewal).
    pub async fn count_order(&mut self) -> Result<u64, AcmeError> {
        let key = self.keys.orders.clone();
        self.run(|mut c| {
            let key = key.clone();
            async move { c.incr(&key, 1u64).await }
        })
        .await
    }
}
