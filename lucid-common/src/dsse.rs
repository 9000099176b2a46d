//! DSSE (Dead Simple Signing Envelope, v1.0) with Ed25519: how model manifests (and,
//! later, passports) are signed by the host key, and checked offline by `lucidctl`.
//!
//! The signature covers the pre-authentication encoding `PAE(type, payload)`, never the
//! JSON around it, so any re-serialisation of the envelope keeps it valid. `keyid` is a
//! hint only and never decides anything here.

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The payload type of an in-toto Statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// DSSE's pre-authentication encoding: `DSSEv1 SP len(type) SP type SP len(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// One signature of an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Base64 signature over the PAE.
    pub sig: String,
    /// A hint naming the key (unauthenticated).
    #[serde(default)]
    pub keyid: String,
}

/// A DSSE envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the payload bytes.
    pub payload: String,
    /// What the payload is (`application/vnd.in-toto+json`).
    pub payload_type: String,
    /// Signatures over `PAE(payload_type, payload)`.
    pub signatures: Vec<EnvelopeSignature>,
}

/// Why an envelope did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DsseError {
    /// The payload or a signature is not base64.
    #[error("not base64: {0}")]
    Base64(&'static str),
    /// No signature is by the given key.
    #[error("no signature by this key verifies the payload")]
    BadSignature,
}

/// Decodes standard or URL-safe base64, padded or not (DSSE verifiers must accept both).
pub fn b64(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).or_else(|_| URL_SAFE.decode(text)).or_else(|_| URL_SAFE_NO_PAD.decode(text)).ok()
}

impl Envelope {
    /// Signs `payload` of type `payload_type` with `key`; `keyid` is recorded as a hint.
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey, keyid: &str) -> Envelope {
        let sig = key.sign(&pae(payload_type, payload));
        Envelope {
            payload: STANDARD.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![EnvelopeSignature { sig: STANDARD.encode(sig.to_bytes()), keyid: keyid.to_string() }],
        }
    }

    /// The payload bytes, if some signature by `key` verifies over them.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Vec<u8>, DsseError> {
        let payload = b64(&self.payload).ok_or(DsseError::Base64("payload"))?;
        let message = pae(&self.payload_type, &payload);
        for s in &self.signatures {
            let Some(bytes) = b64(&s.sig) else { continue };
            let Ok(sig) = Signature::from_slice(&bytes) else { continue };
            if key.verify(&message, &sig).is_ok() {
                return Ok(payload);
            }
        }
        Err(DsseError::BadSignature)
    }

    /// The payload bytes, unverified (for import of envelopes signed by keys we do not
    /// hold, whose content is then checked against the files themselves).
    pub fn payload_unverified(&self) -> Result<Vec<u8>, DsseError> {
        b64(&self.payload).ok_or(DsseError::Base64("payload"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_specification_vector() {
        assert_eq!(pae("http://example.com/HelloWorld", b"hello world"), b"DSSEv1 29 http://example.com/HelloWorld 11 hello world");
        assert!(pae(IN_TOTO, b"{}").starts_with(b"DSSEv1 28 application/vnd.in-toto+json 2 "));
    }

    #[test]
    fn envelopes_verify_with_their_key_only_and_not_after_tampering() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let env = Envelope::sign(IN_TOTO, b"{\"a\":1}", &key, "host");
        assert_eq!(env.verify(&key.verifying_key()).unwrap(), b"{\"a\":1}");
        assert_eq!(env.verify(&other.verifying_key()), Err(DsseError::BadSignature));
        // The JSON round trip keeps it valid; a changed payload or type does not.
        let back: Envelope = serde_json::from_str(&serde_json::to_string(&env).unwrap()).unwrap();
        assert!(back.verify(&key.verifying_key()).is_ok());
        let mut changed = env.clone();
        changed.payload = STANDARD.encode(b"{\"a\":2}");
        assert_eq!(changed.verify(&key.verifying_key()), Err(DsseError::BadSignature));
        let mut retyped = env.clone();
        retyped.payload_type = "text/plain".into();
        assert_eq!(retyped.verify(&key.verifying_key()), Err(DsseError::BadSignature));
        // URL-safe base64 is accepted too.
        let mut url = env;
        url.signatures[0].sig = URL_SAFE_NO_PAD.encode(STANDARD.decode(&url.signatures[0].sig).unwrap());
        assert!(url.verify(&key.verifying_key()).is_ok());
    }
}
