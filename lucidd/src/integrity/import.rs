//! Importing a model_signing manifest produced elsewhere: a sigstore bundle (what
//! `model_signing sign key` writes) or a bare DSSE envelope, whose in-toto Statement is
//! checked for internal consistency (`Manifest::from_statement`), whose signature is
//! checked when the operator gives the signer's public key (ECDSA P-256 or P-384 over
//! the DSSE PAE, DER-encoded, as model_signing signs), and whose resources must then
//! equal a fresh hash of the files. Only then does the host key sign an approval.

use lucid_common::dsse::{pae, Envelope, IN_TOTO};
use lucid_common::manifest::Manifest;
use serde_json::Value;

/// Why an import is refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not a bundle or envelope we can read.
    #[error("not a model_signing signature: {0}")]
    Format(String),
    /// The payload is not a consistent model_signing v1.0 Statement.
    #[error("the signed manifest is not valid: {0}")]
    Manifest(String),
    /// The given key did not sign it.
    #[error("the signature does not verify with the given public key")]
    Signature,
    /// The key is not a PEM P-256 or P-384 public key.
    #[error("public key: {0}")]
    Key(String),
}

/// A parsed, checked manifest and what was established about its signature.
pub struct Imported {
    /// The manifest.
    pub manifest: Manifest,
    /// `verified (ECDSA P-256)`, or `not checked (no public key given)`.
    pub signature: String,
    /// The Statement's own subject digest (hex).
    pub subject: String,
}

fn verify_ecdsa(pem: &str, message: &[u8], der: &[u8]) -> Result<&'static str, ImportError> {
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
        let sig = p256::ecdsa::DerSignature::try_from(der).map_err(|_| ImportError::Signature)?;
        return key.verify(message, &sig).map(|_| "ECDSA P-256").map_err(|_| ImportError::Signature);
    }
    if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_pem(pem) {
        let sig = p384::ecdsa::DerSignature::try_from(der).map_err(|_| ImportError::Signature)?;
        return key.verify(message, &sig).map(|_| "ECDSA P-384").map_err(|_| ImportError::Signature);
    }
    Err(ImportError::Key("not a PEM-encoded P-256 or P-384 public key".into()))
}

/// Parses `text` (a sigstore bundle or a DSSE envelope) and checks it; with
/// `public_key` (PEM), its first signature must verify.
pub fn parse(text: &str, public_key: Option<&str>) -> Result<Imported, ImportError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ImportError::Format(e.to_string()))?;
    let envelope = match value.get("dsseEnvelope") {
        Some(env) => {
            let media = value["mediaType"].as_str().unwrap_or("");
            if !media.starts_with("application/vnd.dev.sigstore.bundle") {
                return Err(ImportError::Format(format!("unexpected mediaType {media:?}")));
            }
            env.clone()
        }
        None => value,
    };
    let envelope: Envelope = serde_json::from_value(envelope).map_err(|e| ImportError::Format(format!("DSSE envelope: {e}")))?;
    if envelope.payload_type != IN_TOTO {
        return Err(ImportError::Format(format!("payloadType {:?}, expected {IN_TOTO}", envelope.payload_type)));
    }
    let payload = envelope.payload_unverified().map_err(|e| ImportError::Format(e.to_string()))?;
    let manifest = Manifest::from_statement(&payload).map_err(|e| ImportError::Manifest(e.to_string()))?;
    let statement: Value = serde_json::from_slice(&payload).map_err(|e| ImportError::Manifest(e.to_string()))?;
    let subject = statement["subject"][0]["digest"]["sha256"].as_str().unwrap_or("").to_string();
    let signature = match public_key {
        None => "not checked (no public key given)".to_string(),
        Some(pem) => {
            let first = envelope.signatures.first().ok_or(ImportError::Signature)?;
            let der = lucid_common::dsse::b64(&first.sig).ok_or(ImportError::Signature)?;
            format!("verified ({})", verify_ecdsa(pem, &pae(&envelope.payload_type, &payload), &der)?)
        }
    };
    Ok(Imported { manifest, signature, subject })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucid_common::manifest::{Method, Resource};
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::EncodePublicKey;

    fn statement() -> Vec<u8> {
        let r = |name: &str, digest: &str| Resource { name: name.into(), algorithm: "sha256".into(), digest: digest.into() };
        let m = Manifest::new(
            "m",
            Method::Files,
            vec![],
            vec![r("signme-1", "bc9a717db6064a32cbe9eae6fc40651dd6d36ef1757183f590eff2b1765d7ebc"), r("signme-2", "32dcb1f8e1ae52d5963e56a6ba06ab58b424c15ed2a6b70d2feca1d089370028")],
        );
        serde_json::to_vec(&m.statement()).unwrap()
    }

    fn bundle(payload: &[u8], key: &p256::ecdsa::SigningKey) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let sig: p256::ecdsa::DerSignature = key.sign(&pae(IN_TOTO, payload));
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": { "publicKey": { "hint": "x" }, "tlogEntries": [] },
            "dsseEnvelope": { "payload": b64.encode(payload), "payloadType": IN_TOTO, "signatures": [{ "sig": b64.encode(sig.as_bytes()), "keyid": "" }] }
        })
        .to_string()
    }

    #[test]
    fn bundles_are_checked_with_and_without_a_key() {
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pem = key.verifying_key().to_public_key_pem(p256::pkcs8::LineEnding::LF).unwrap();
        let text = bundle(&statement(), &key);
        let i = parse(&text, Some(&pem)).unwrap();
        assert_eq!(i.signature, "verified (ECDSA P-256)");
        assert_eq!(i.subject, "92745110b1ab4368471cbe31664e10174e954b113a3df333db860317b2c6dec4");
        assert!(parse(&text, None).unwrap().signature.starts_with("not checked"));
        // Another key, a tampered payload, garbage: refused with a reason.
        let other = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        let other_pem = other.verifying_key().to_public_key_pem(p256::pkcs8::LineEnding::LF).unwrap();
        assert!(matches!(parse(&text, Some(&other_pem)), Err(ImportError::Signature)));
        let mut tampered: Value = serde_json::from_str(&text).unwrap();
        let forged = String::from_utf8(statement()).unwrap().replace("bc9a", "bc9b");
        use base64::Engine;
        tampered["dsseEnvelope"]["payload"] = base64::engine::general_purpose::STANDARD.encode(forged).into();
        assert!(matches!(parse(&tampered.to_string(), None), Err(ImportError::Manifest(_))));
        assert!(matches!(parse("{}", None), Err(ImportError::Format(_))));
        assert!(matches!(parse(&text, Some("not a key")), Err(ImportError::Key(_))));
    }
}
