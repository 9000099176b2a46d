//! API keys for the gateway (`ACCESS_CONTROL_ENABLED`, CC6.1, CC6.2, CC6.3).
//!
//! A key is shown once, when it is created; lucidd keeps only its SHA-256. Keys are
//! scoped to agents and rate-limited per minute; revocation takes effect on the next
//! request. The store is a small JSON file in the state directory, written atomically
//! (temp file, fsync, rename); every create and revoke is also a ledger record.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A key as stored and listed (never the secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public id, also the key's prefix.
    pub id: String,
    /// Who or what it is for.
    pub name: String,
    /// Agents it may use; empty means all.
    pub agents: Vec<String>,
    /// Requests per minute; 0 means unlimited.
    pub rate_per_minute: u32,
    /// SHA-256 of the full key (hex).
    pub hash: String,
    /// When it was created (ns).
    pub created_ns: u64,
    /// When it was revoked (ns), if it was.
    pub revoked_ns: Option<u64>,
}

/// Why a request's key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No key, or not one of ours (401).
    Unknown,
    /// Revoked (401).
    Revoked(String),
    /// Not scoped to this agent (403).
    OutOfScope(String),
    /// Over its rate (429).
    RateLimited(String),
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on the keys file.
    #[error("keys file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The keys file is not valid JSON.
    #[error("keys file {path}: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// The parse error.
        message: String,
    },
    /// No key with that id.
    #[error("no key {0}")]
    NotFound(String),
}

struct Bucket {
    window_start: Instant,
    used: u32,
}

/// The key store.
pub struct KeyStore {
    path: PathBuf,
    keys: RwLock<HashMap<String, ApiKey>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

fn sha256_hex(s: &str) -> String {
    lucid_common::hex::encode(&Sha256::digest(s.as_bytes()))
}

impl KeyStore {
    /// Opens the store at `path` (an absent file is an empty store).
    pub fn open(path: PathBuf) -> Result<KeyStore, StoreError> {
        let shown = path.display().to_string();
        let keys: Vec<ApiKey> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StoreError::Corrupt { path: shown, message: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(StoreError::Io { path: shown, source }),
        };
        Ok(KeyStore {
            path,
            keys: RwLock::new(keys.into_iter().map(|k| (k.id.clone(), k)).collect()),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn save(&self, keys: &HashMap<String, ApiKey>) -> Result<(), StoreError> {
        let io = |source| StoreError::Io { path: self.path.display().to_string(), source };
        let mut list: Vec<&ApiKey> = keys.values().collect();
        list.sort_by(|a, b| a.created_ns.cmp(&b.created_ns).then(a.id.cmp(&b.id)));
        let text = serde_json::to_vec_pretty(&list).unwrap_or_default();
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }

    /// Creates a key; returns its record and the secret (shown once).
    pub fn create(&self, name: &str, agents: Vec<String>, rate_per_minute: u32, now_ns: u64) -> Result<(ApiKey, String), StoreError> {
        let mut id_bytes = [0u8; 4];
        let mut secret_bytes = [0u8; 24];
        let _ = getrandom::getrandom(&mut id_bytes);
        let _ = getrandom::getrandom(&mut secret_bytes);
        let id = format!("lk{}", lucid_common::hex::encode(&id_bytes));
        let secret = format!("{id}_{}", lucid_common::hex::encode(&secret_bytes));
        let key = ApiKey {
            id: id.clone(),
            name: name.to_string(),
            agents,
            rate_per_minute,
            hash: sha256_hex(&secret),
            created_ns: now_ns,
            revoked_ns: None,
        };
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.insert(id, key.clone());
        if let Err(e) = self.save(&keys) {
            keys.remove(&key.id);
            return Err(e);
        }
        Ok((key, secret))
    }

    /// Revokes a key (idempotent); returns it.
    pub fn revoke(&self, id: &str, now_ns: u64) -> Result<ApiKey, StoreError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let key = keys.get_mut(id).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let before = key.revoked_ns;
        key.revoked_ns.get_or_insert(now_ns);
        let out = key.clone();
        if let Err(e) = self.save(&keys) {
            if let Some(k) = keys.get_mut(id) {
                k.revoked_ns = before;
            }
            return Err(e);
        }
        Ok(out)
    }

    /// All keys, oldest first.
    pub fn list(&self) -> Vec<ApiKey> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<ApiKey> = keys.values().cloned().collect();
        list.sort_by(|a, b| a.created_ns.cmp(&b.created_ns).then(a.id.cmp(&b.id)));
        list
    }

    /// Checks a presented key for an agent and counts it against the rate.
    pub fn authorize(&self, presented: Option<&str>, agent: &str) -> Result<ApiKey, Refusal> {
        let key = self.identify(presented)?;
        if !key.may_use(agent) {
            return Err(Refusal::OutOfScope(key.id));
        }
        self.count(key)
    }

    /// Checks a presented key for a request that concerns no one agent (the model list)
    /// and counts it against the rate.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<ApiKey, Refusal> {
        let key = self.identify(presented)?;
        self.count(key)
    }

    /// The key presented, if it is one of ours and not revoked.
    fn identify(&self, presented: Option<&str>) -> Result<ApiKey, Refusal> {
        let presented = presented.ok_or(Refusal::Unknown)?;
        let id = presented.split('_').next().unwrap_or_default();
        let key = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            keys.get(id).cloned().ok_or(Refusal::Unknown)?
        };
        if !constant_time_eq(sha256_hex(presented).as_bytes(), key.hash.as_bytes()) {
            return Err(Refusal::Unknown);
        }
        if key.revoked_ns.is_some() {
            return Err(Refusal::Revoked(key.id));
        }
        Ok(key)
    }

    /// Counts a request against the key's rate.
    fn count(&self, key: ApiKey) -> Result<ApiKey, Refusal> {
        if key.rate_per_minute > 0 {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            let b = buckets.entry(key.id.clone()).or_insert(Bucket { window_start: Instant::now(), used: 0 });
            if b.window_start.elapsed().as_secs() >= 60 {
                *b = Bucket { window_start: Instant::now(), used: 0 };
            }
            if b.used >= key.rate_per_minute {
                return Err(Refusal::RateLimited(key.id));
            }
            b.used += 1;
        }
        Ok(key)
    }
}

impl ApiKey {
    /// Whether the key is scoped to `agent` (a key with no agents may use all).
    pub fn may_use(&self, agent: &str) -> bool {
        self.agents.is_empty() || self.agents.iter().any(|a| a == agent)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_scoped_limited_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("keys.json")).unwrap();
        let (key, secret) = store.create("ci", vec!["a".into()], 2, 1).unwrap();
        let file = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
        assert!(!file.contains(&secret) && file.contains(&key.hash));
        assert_eq!(store.authorize(Some(&secret), "a").map(|k| k.id), Ok(key.id.clone()));
        assert_eq!(store.authorize(Some(&secret), "b"), Err(Refusal::OutOfScope(key.id.clone())));
        assert_eq!(store.authorize(Some(&secret), "a").map(|k| k.id), Ok(key.id.clone()));
        assert_eq!(store.authorize(Some(&secret), "a"), Err(Refusal::RateLimited(key.id.clone())));
        assert_eq!(store.authorize(Some("lkdeadbeef_00"), "a"), Err(Refusal::Unknown));
        assert_eq!(store.authorize(None, "a"), Err(Refusal::Unknown));
        store.revoke(&key.id, 2).unwrap();
        let reopened = KeyStore::open(dir.path().join("keys.json")).unwrap();
        assert_eq!(reopened.authorize(Some(&secret), "a"), Err(Refusal::Revoked(key.id)));
    }
}
