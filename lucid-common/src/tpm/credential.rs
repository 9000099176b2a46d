//! Enrolment: how a verifier comes to trust a host's attestation key through the TPM's
//! endorsement key. The EK certificate (from the TPM's NV, signed by its manufacturer,
//! or by swtpm's local CA in tests) is checked against the verifier's CA directory; then
//! the verifier encrypts a secret to the EK, bound to the AK's name (TPM2_MakeCredential,
//! done here in software), and only a TPM that holds both that EK and that AK can
//! recover it (TPM2_ActivateCredential). The verifier pins the AK when the host answers
//! with the secret.

use cfb_mode::cipher::{AsyncStreamCipher as _, KeyIvInit as _};
use hmac::{Hmac, Mac as _};
use rsa::{BigUint, Oaep, RsaPublicKey};
use sha2::Sha256;
use x509_cert::der::{Decode as _, DecodePem as _, Encode as _};
use x509_cert::Certificate;

use super::wire::WireError;

const ALG_RSA: u16 = 0x0001;
const ALG_AES: u16 = 0x0006;
const ALG_CFB: u16 = 0x0043;
const ALG_NULL: u16 = 0x0010;

/// The endorsement key's public area (RSA-2048, the TCG default EK template).
#[derive(Clone, Debug)]
pub struct EkPublic {
    /// The TPM name: nameAlg || SHA-256(TPMT_PUBLIC).
    pub name: Vec<u8>,
    /// The RSA modulus, big-endian.
    pub modulus: Vec<u8>,
    exponent: u32,
}

fn be16(b: &[u8], at: &mut usize, what: &'static str) -> Result<u16, WireError> {
    let v = b.get(*at..*at + 2).ok_or(WireError::Truncated(what))?;
    *at += 2;
    Ok(u16::from_be_bytes([v[0], v[1]]))
}

fn be32(b: &[u8], at: &mut usize, what: &'static str) -> Result<u32, WireError> {
    let v = b.get(*at..*at + 4).ok_or(WireError::Truncated(what))?;
    *at += 4;
    Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

fn tpm2b<'a>(b: &'a [u8], at: &mut usize, what: &'static str) -> Result<&'a [u8], WireError> {
    let n = be16(b, at, what)? as usize;
    let v = b.get(*at..*at + n).ok_or(WireError::Truncated(what))?;
    *at += n;
    Ok(v)
}

impl EkPublic {
    /// Parses a marshalled `TPMT_PUBLIC` of an RSA storage key with AES-128-CFB (the EK).
    pub fn parse(bytes: &[u8]) -> Result<EkPublic, WireError> {
        let mut at = 0;
        let kind = be16(bytes, &mut at, "type")?;
        if kind != ALG_RSA {
            return Err(WireError::Unexpected(format!("EK type 0x{kind:04x}; Lucid enrols RSA EKs")));
        }
        let name_alg = be16(bytes, &mut at, "nameAlg")?;
        if name_alg != super::ALG_SHA256 {
            return Err(WireError::Unexpected(format!("EK name algorithm 0x{name_alg:04x}")));
        }
        be32(bytes, &mut at, "objectAttributes")?;
        tpm2b(bytes, &mut at, "authPolicy")?;
        let (sym, bits, mode) = (be16(bytes, &mut at, "symmetric")?, be16(bytes, &mut at, "keyBits")?, be16(bytes, &mut at, "mode")?);
        if (sym, bits, mode) != (ALG_AES, 128, ALG_CFB) {
            return Err(WireError::Unexpected(format!("EK symmetric scheme 0x{sym:04x}/{bits}/0x{mode:04x}; expected AES-128-CFB")));
        }
        if be16(bytes, &mut at, "scheme")? != ALG_NULL {
            be16(bytes, &mut at, "scheme hash")?;
        }
        be16(bytes, &mut at, "keyBits")?;
        let exponent = match be32(bytes, &mut at, "exponent")? {
            0 => 65537,
            e => e,
        };
        let modulus = tpm2b(bytes, &mut at, "unique")?.to_vec();
        if at != bytes.len() {
            return Err(WireError::Trailing(bytes.len() - at));
        }
        let mut name = name_alg.to_be_bytes().to_vec();
        name.extend_from_slice(&super::sha256(&[bytes]));
        Ok(EkPublic { name, modulus, exponent })
    }

    fn key(&self) -> Result<RsaPublicKey, WireError> {
        RsaPublicKey::new(BigUint::from_bytes_be(&self.modulus), BigUint::from(self.exponent)).map_err(|e| WireError::Unexpected(format!("EK: {e}")))
    }
}

/// KDFa (TPM 2.0 Part 1, 11.4.10.2) with HMAC-SHA-256.
pub fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = (bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(bytes + 32);
    let mut counter = 1u32;
    while out.len() < bytes {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return Vec::new() };
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// What TPM2_MakeCredential returns: the `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET`
/// contents (without their size prefixes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The credential blob (integrity HMAC and encrypted identity).
    pub blob: Vec<u8>,
    /// The seed, encrypted to the EK (RSA-OAEP, label "IDENTITY").
    pub secret: Vec<u8>,
}

/// TPM2_MakeCredential in software: `secret` (at most 32 bytes) encrypted so that only
/// the TPM holding `ek` and a loaded object named `ak_name` can recover it.
pub fn make_credential(ek: &EkPublic, ak_name: &[u8], secret: &[u8]) -> Result<Credential, WireError> {
    if secret.len() > 32 {
        return Err(WireError::Unexpected("a credential is at most 32 bytes".into()));
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| WireError::Unexpected(format!("no randomness: {e}")))?;
    let mut rng = rsa::rand_core::OsRng;
    let encrypted = ek
        .key()?
        .encrypt(&mut rng, Oaep::new_with_label::<Sha256, _>("IDENTITY\0"), &seed)
        .map_err(|e| WireError::Unexpected(format!("RSA-OAEP: {e}")))?;
    let sym = kdfa(&seed, "STORAGE", ak_name, &[], 128);
    let mut identity = (secret.len() as u16).to_be_bytes().to_vec();
    identity.extend_from_slice(secret);
    let cipher = cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym, &[0u8; 16]).map_err(|e| WireError::Unexpected(e.to_string()))?;
    cipher.encrypt(&mut identity);
    let hmac_key = kdfa(&seed, "INTEGRITY", &[], &[], 256);
    let mut mac = Hmac::<Sha256>::new_from_slice(&hmac_key).map_err(|e| WireError::Unexpected(e.to_string()))?;
    mac.update(&identity);
    mac.update(ak_name);
    let integrity = mac.finalize().into_bytes();
    let mut blob = 32u16.to_be_bytes().to_vec();
    blob.extend_from_slice(&integrity);
    blob.extend_from_slice(&identity);
    Ok(Credential { blob, secret: encrypted })
}

/// Reads every certificate (PEM or DER) in a directory: the verifier's trust anchors
/// for EK certificates (a TPM vendor's roots and intermediates; swtpm's local CA).
pub fn load_ca_dir(dir: &std::path::Path) -> Result<Vec<Certificate>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else { continue };
        if let Ok(c) = Certificate::from_der(&bytes) {
            out.push(c);
        } else if let Ok(text) = std::str::from_utf8(&bytes) {
            // One or more PEM blocks.
            for block in text.split("-----END CERTIFICATE-----") {
                if let Some(start) = block.find("-----BEGIN CERTIFICATE-----") {
                    let pem = format!("{}-----END CERTIFICATE-----\n", &block[start..]);
                    if let Ok(c) = Certificate::from_pem(pem.as_bytes()) {
                        out.push(c);
                    }
                }
            }
        }
    }
    if out.is_empty() {
        return Err(format!("no certificates in {}", dir.display()));
    }
    Ok(out)
}

/// Checks an EK certificate: signed by a certificate in `anchors` (following issuers
/// through the anchors up to 4 deep), and certifying exactly this EK's public key.
/// Returns the chain's subjects, leaf first.
pub fn check_ek_certificate(der: &[u8], anchors: &[Certificate], ek: &EkPublic) -> Result<Vec<String>, String> {
    let leaf = Certificate::from_der(der).map_err(|e| format!("EK certificate: {e}"))?;
    let spki = &leaf.tbs_certificate.subject_public_key_info;
    let cert_key = rsa::pkcs1::DecodeRsaPublicKey::from_pkcs1_der(spki.subject_public_key.raw_bytes())
        .map_err(|e: rsa::pkcs1::Error| format!("EK certificate key: {e}"))
        .map(|k: RsaPublicKey| k)?;
    let ek_key = ek.key().map_err(|e| e.to_string())?;
    if cert_key != ek_key {
        return Err("the EK certificate certifies another key than this TPM's EK".into());
    }
    let mut chain = vec![leaf.tbs_certificate.subject.to_string()];
    let mut current = leaf;
    for _ in 0..4 {
        let issuer = anchors
            .iter()
            .find(|a| a.tbs_certificate.subject == current.tbs_certificate.issuer && verify_signed_by(&current, a).is_ok())
            .ok_or_else(|| format!("no certificate in the CA directory issued {:?} (issuer {})", chain.last().cloned().unwrap_or_default(), current.tbs_certificate.issuer))?;
        chain.push(issuer.tbs_certificate.subject.to_string());
        if issuer.tbs_certificate.subject == issuer.tbs_certificate.issuer {
            return Ok(chain);
        }
        current = issuer.clone();
    }
    // Signed by an anchor that is not self-signed: the directory trusts it as given.
    Ok(chain)
}

fn verify_signed_by(cert: &Certificate, issuer: &Certificate) -> Result<(), String> {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier as _;
    const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
    let alg = cert.signature_algorithm.oid.to_string();
    if alg != SHA256_WITH_RSA {
        return Err(format!("signature algorithm {alg} is not supported (sha256WithRSAEncryption is)"));
    }
    let tbs = cert.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let key: RsaPublicKey = rsa::pkcs1::DecodeRsaPublicKey::from_pkcs1_der(issuer.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes())
        .map_err(|e: rsa::pkcs1::Error| e.to_string())?;
    let sig = Signature::try_from(cert.signature.raw_bytes()).map_err(|e| e.to_string())?;
    VerifyingKey::<Sha256>::new(key).verify(&tbs, &sig).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_matches_an_independent_computation() {
        // One block: HMAC(key, 00000001 || "STORAGE" || 00 || u || v || 00000080).
        let key = [0x11u8; 32];
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(&[0, 0, 0, 1]);
        mac.update(b"STORAGE\0");
        mac.update(b"name");
        mac.update(&[0, 0, 0, 128]);
        assert_eq!(kdfa(&key, "STORAGE", b"name", &[], 128), mac.finalize().into_bytes()[..16].to_vec());
        assert_eq!(kdfa(&key, "INTEGRITY", &[], &[], 512).len(), 64);
    }

    #[test]
    fn ek_parsing_rejects_what_is_not_an_rsa_ek_and_never_panics() {
        assert!(EkPublic::parse(&[]).is_err());
        assert!(EkPublic::parse(&[0, 0x23, 0, 0x0b]).is_err());
        let mut state = 7u64;
        for len in 0..400 {
            let mut b = vec![0u8; len];
            for x in b.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *x = state as u8;
            }
            if len > 2 {
                b[0] = 0;
                b[1] = 1;
            }
            let _ = EkPublic::parse(&b);
        }
    }
}
