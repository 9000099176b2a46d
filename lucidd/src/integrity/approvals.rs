//! Approved models: each a model_signing manifest signed by the host key in a DSSE
//! envelope, kept in `<state dir>/models/<id>.json` with its path, note and the ledger
//! record of its approval, and the state of its latest verification.
//!
//! A stored approval whose signature does not verify with the host key is not loaded
//! (and said so in the log): an approval can only come from this daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use lucid_common::dsse::{Envelope, IN_TOTO};
use lucid_common::manifest::Manifest;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where a model stands against its approval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    /// `verified`, `modified` or `missing`.
    pub state: String,
    /// When, ns since the epoch.
    pub time_ns: u64,
    /// Resources whose digests changed.
    pub changed: Vec<String>,
    /// Resources gone.
    pub missing: Vec<String>,
    /// Files that were not approved.
    pub added: Vec<String>,
    /// Files whose mode or owner differ from the approval.
    pub attributes: Vec<String>,
}

/// A file's mode and owner as approved (the manifest covers contents only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The latest change a watch saw, and who made it (stored as the API shows it).
pub use lucid_common::api::ModelChange as LastChange;

/// One approved model.
#[derive(Clone, Debug)]
pub struct Approval {
    /// Short id (from the path).
    pub id: String,
    /// The model's directory or file (canonical).
    pub path: PathBuf,
    /// The operator's note.
    pub note: Option<String>,
    /// When, ns since the epoch.
    pub approved_ns: u64,
    /// The ledger record of the approval.
    pub record_seq: u64,
    /// The signed manifest.
    pub envelope: Envelope,
    /// The manifest it carries.
    pub manifest: Manifest,
    /// The latest verification.
    pub last: Verification,
    /// Each file's approved mode and owner, by relative name.
    pub attrs: BTreeMap<String, Attr>,
    /// The latest change a watch saw.
    pub last_change: Option<LastChange>,
}

impl Approval {
    /// Whether the model is a directory (a single-file model's one resource is `.`).
    pub fn is_dir(&self) -> bool {
        self.manifest.resources.first().is_none_or(|r| r.split().0 != ".")
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    path: PathBuf,
    note: Option<String>,
    approved_ns: u64,
    record_seq: u64,
    envelope: Envelope,
    #[serde(default)]
    attrs: BTreeMap<String, Attr>,
    #[serde(default)]
    last_change: Option<LastChange>,
}

/// The approvals of this host.
pub struct Approvals {
    dir: PathBuf,
    key: SigningKey,
    list: Mutex<Vec<Approval>>,
}

/// The id of a model path: the first 16 hex digits of its SHA-256.
pub fn id_of(path: &Path) -> String {
    lucid_common::hex::encode(&Sha256::digest(path.as_os_str().as_encoded_bytes())[..8])
}

impl Approvals {
    /// The approvals stored in `dir`, checked with `key`.
    pub fn load(dir: PathBuf, key: SigningKey) -> Approvals {
        let mut list = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let path = e.path();
                let loaded = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Stored>(&b).map_err(|e| e.to_string()))
                    .and_then(|s| {
                        let payload = s.envelope.verify(&key.verifying_key()).map_err(|e| e.to_string())?;
                        let manifest = Manifest::from_statement(&payload).map_err(|e| e.to_string())?;
                        let last = Verification { state: "verified".into(), time_ns: s.approved_ns, ..Default::default() };
                        Ok(Approval {
                            id: id_of(&s.path),
                            path: s.path,
                            note: s.note,
                            approved_ns: s.approved_ns,
                            record_seq: s.record_seq,
                            envelope: s.envelope,
                            manifest,
                            last,
                            attrs: s.attrs,
                            last_change: s.last_change,
                        })
                    });
                match loaded {
                    Ok(a) => list.push(a),
                    Err(e) => tracing::warn!(file = %path.display(), error = %e, "approval not loaded"),
                }
            }
        }
        list.sort_by(|a, b| a.path.cmp(&b.path));
        Approvals { dir, key, list: Mutex::new(list) }
    }

    /// Signs `manifest` for `path` (an envelope to record and store with `commit`).
    pub fn sign(&self, manifest: &Manifest) -> Envelope {
        let payload = serde_json::to_vec(&manifest.statement()).unwrap_or_default();
        Envelope::sign(IN_TOTO, &payload, &self.key, "lucid-host")
    }

    /// Stores an approval (replacing the path's previous one).
    pub fn commit(&self, approval: Approval) -> std::io::Result<()> {
        self.store(&approval)?;
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|a| a.id != approval.id);
        list.push(approval);
        list.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(())
    }

    fn store(&self, approval: &Approval) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let stored = Stored {
            path: approval.path.clone(),
            note: approval.note.clone(),
            approved_ns: approval.approved_ns,
            record_seq: approval.record_seq,
            envelope: approval.envelope.clone(),
            attrs: approval.attrs.clone(),
            last_change: approval.last_change.clone(),
        };
        let file = self.dir.join(format!("{}.json", approval.id));
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&stored).unwrap_or_default())?;
        std::fs::rename(&tmp, &file)
    }

    /// Records the latest change a watch saw on `id` (kept across restarts).
    pub fn set_last_change(&self, id: &str, change: LastChange) -> std::io::Result<()> {
        let updated = {
            let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
            list.iter_mut().find(|a| a.id == id).map(|a| {
                a.last_change = Some(change);
                a.clone()
            })
        };
        match updated {
            Some(a) => self.store(&a),
            None => Ok(()),
        }
    }

    /// Every approval.
    pub fn all(&self) -> Vec<Approval> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What the watch looks each event up in: every approval's id, path, and whether it
    /// is a directory (not one file), without copying manifests.
    pub fn roots(&self) -> Vec<(String, PathBuf, bool)> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|a| (a.id.clone(), a.path.clone(), a.is_dir())).collect()
    }

    /// The approval with `id`, if any.
    pub fn by_id(&self, id: &str) -> Option<Approval> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|a| a.id == id).cloned()
    }

    /// Marks `id` as having a change being judged (`verifying`).
    pub fn mark_verifying(&self, id: &str) {
        if let Some(a) = self.list.lock().unwrap_or_else(|p| p.into_inner()).iter_mut().find(|a| a.id == id) {
            a.last.state = "verifying".into();
        }
    }

    /// The approval of `path`, if any.
    pub fn get(&self, path: &Path) -> Option<Approval> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|a| a.path == path).cloned()
    }

    /// Records the latest verification of `id`.
    pub fn set_last(&self, id: &str, last: Verification) {
        if let Some(a) = self.list.lock().unwrap_or_else(|p| p.into_inner()).iter_mut().find(|a| a.id == id) {
            a.last = last;
        }
    }
}
