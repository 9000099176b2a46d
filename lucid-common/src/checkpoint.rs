//! Signed checkpoints in the C2SP `tlog-checkpoint` / `signed-note` format.
//!
//! ```text
//! <origin>
//! <tree size>
//! <base64 root hash>
//! time_ns <ledger time of the last record>
//!
//! — <key name> <base64(key id || Ed25519 signature)>
//! ```
//! The signature covers the note text up to and including the blank line's preceding
//! newline. A [`VerifierKey`] (`name+keyid+base64(0x01||pubkey)`, the format Go's
//! `golang.org/x/mod/sumdb/note` uses) is all an auditor needs to check one offline.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// Why a checkpoint or key could not be parsed or verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// The note text does not have the signed-note shape.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature line by the expected key.
    #[error("no signature by key {0}")]
    NoSignature(String),
    /// A signature by the expected key that does not verify.
    #[error("bad signature by key {0}")]
    BadSignature(String),
    /// The verifier key text is malformed.
    #[error("malformed verifier key: {0}")]
    BadKey(&'static str),
}

/// The signed statement: this log had `size` leaves with this `root` at `time_ns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (also the signing key's name).
    pub origin: String,
    /// Number of records covered.
    pub size: u64,
    /// Merkle tree hash of those records.
    pub root: Hash,
    /// Ledger time of the last covered record (0 for an empty tree).
    pub time_ns: u64,
}

impl Checkpoint {
    /// The note body that is signed.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\ntime_ns {}\n", self.origin, self.size, B64.encode(self.root), self.time_ns)
    }

    /// Signs the checkpoint and returns the full note text.
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = self.body();
        let vkey = VerifierKey::new(&self.origin, key.verifying_key());
        let sig = key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&vkey.key_id);
        blob.extend_from_slice(&sig.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.origin, B64.encode(blob))
    }

    /// Parses a note and checks its signature by `key`.
    pub fn verify(note: &str, key: &VerifierKey) -> Result<Checkpoint, CheckpointError> {
        let (body, sigs) = note.split_once("\n\n").ok_or(CheckpointError::Malformed("no blank line before signatures"))?;
        let body = format!("{body}\n");
        let mut found = false;
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(CheckpointError::Malformed("signature line must start with an em dash"));
            };
            let (name, blob) = rest.split_once(' ').ok_or(CheckpointError::Malformed("signature line"))?;
            let blob = B64.decode(blob).map_err(|_| CheckpointError::Malformed("signature base64"))?;
            if name != key.name || blob.len() != 68 || blob[..4] != key.key_id {
                continue;
            }
            found = true;
            let sig = Signature::from_slice(&blob[4..]).map_err(|_| CheckpointError::BadSignature(key.name.clone()))?;
            key.key
                .verify(body.as_bytes(), &sig)
                .map_err(|_| CheckpointError::BadSignature(key.name.clone()))?;
        }
        if !found {
            return Err(CheckpointError::NoSignature(key.name.clone()));
        }
        Self::parse_body(&body)
    }

    fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
        let mut lines = body.lines();
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or(CheckpointError::Malformed("origin"))?;
        let size = lines
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(CheckpointError::Malformed("tree size"))?;
        let root: Hash = lines
            .next()
            .and_then(|r| B64.decode(r).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or(CheckpointError::Malformed("root hash"))?;
        let mut time_ns = 0;
        for ext in lines {
            if let Some(t) = ext.strip_prefix("time_ns ") {
                time_ns = t.parse().map_err(|_| CheckpointError::Malformed("time_ns"))?;
            }
        }
        Ok(Checkpoint { origin: origin.to_string(), size, root, time_ns })
    }
}

/// A named Ed25519 public key, as signed notes use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    /// The key name (the ledger origin).
    pub name: String,
    /// First four bytes of SHA-256(name || "\n" || 0x01 || public key).
    pub key_id: [u8; 4],
    /// The public key.
    pub key: VerifyingKey,
}

impl VerifierKey {
    /// Names a public key.
    pub fn new(name: &str, key: VerifyingKey) -> VerifierKey {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update(b"\n\x01");
        h.update(key.as_bytes());
        let digest = h.finalize();
        VerifierKey { name: name.to_string(), key_id: [digest[0], digest[1], digest[2], digest[3]], key }
    }

    /// Parses `name+keyid+base64(0x01||pubkey)`.
    pub fn parse(text: &str) -> Result<VerifierKey, CheckpointError> {
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(CheckpointError::BadKey("expected name+keyid+key"));
        };
        let raw = B64.decode(key).map_err(|_| CheckpointError::BadKey("key base64"))?;
        let (Some(&1), Ok(pk)) = (raw.first(), <[u8; 32]>::try_from(&raw[1.min(raw.len())..])) else {
            return Err(CheckpointError::BadKey("expected an Ed25519 key"));
        };
        let pk = VerifyingKey::from_bytes(&pk).map_err(|_| CheckpointError::BadKey("not an Ed25519 point"))?;
        let vkey = VerifierKey::new(name, pk);
        if crate::hex::encode(&vkey.key_id) != id {
            return Err(CheckpointError::BadKey("key id does not match the key"));
        }
        Ok(vkey)
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![1u8];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, crate::hex::encode(&self.key_id), B64.encode(raw))
    }
}

/// Signs arbitrary evidence statements (prune records) with a domain prefix, so a
/// signature can never be replayed as a checkpoint signature.
pub fn sign_statement(key: &SigningKey, domain: &str, statement: &str) -> String {
    B64.encode(key.sign(format!("{domain}\n{statement}").as_bytes()).to_bytes())
}

/// Checks a [`sign_statement`] signature.
pub fn verify_statement(key: &VerifyingKey, domain: &str, statement: &str, signature_b64: &str) -> bool {
    let Ok(raw) = B64.decode(signature_b64) else { return false };
    let Ok(sig) = Signature::from_slice(&raw) else { return false };
    key.verify(format!("{domain}\n{statement}").as_bytes(), &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint { origin: "host.example/lucid".into(), size: 12, root: [9u8; 32], time_ns: 5 }
    }

    #[test]
    fn signed_note_round_trips() {
        let note = checkpoint().sign(&key());
        let vkey = VerifierKey::new("host.example/lucid", key().verifying_key());
        assert_eq!(Checkpoint::verify(&note, &vkey), Ok(checkpoint()));
        let parsed = VerifierKey::parse(&vkey.to_string());
        assert_eq!(parsed, Ok(vkey));
        // Keys whose base64 contains '+' still parse.
        for seed in 0..64u8 {
            let k = VerifierKey::new("h/lucid", SigningKey::from_bytes(&[seed; 32]).verifying_key());
            assert_eq!(VerifierKey::parse(&k.to_string()).as_ref(), Ok(&k));
        }
    }

    #[test]
    fn altered_notes_fail() {
        let vkey = VerifierKey::new("host.example/lucid", key().verifying_key());
        let note = checkpoint().sign(&key());
        let altered = note.replacen("\n12\n", "\n13\n", 1);
        assert_eq!(Checkpoint::verify(&altered, &vkey), Err(CheckpointError::BadSignature(vkey.name.clone())));
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let foreign = checkpoint().sign(&other);
        assert_eq!(Checkpoint::verify(&foreign, &vkey), Err(CheckpointError::NoSignature(vkey.name.clone())));
        assert!(Checkpoint::verify("garbage", &vkey).is_err());
    }

    #[test]
    fn statements_are_domain_separated() {
        let sig = sign_statement(&key(), "lucid/prune/v1", "0 10");
        assert!(verify_statement(&key().verifying_key(), "lucid/prune/v1", "0 10", &sig));
        assert!(!verify_statement(&key().verifying_key(), "lucid/other", "0 10", &sig));
        assert!(!verify_statement(&key().verifying_key(), "lucid/prune/v1", "0 11", &sig));
    }
}
