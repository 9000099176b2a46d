//! What an offline verifier needs to check TPM evidence without a TPM or a TSS: the
//! TPM 2.0 wire structures a quote or an NV certification is made of ([`wire`]), the
//! attestation key's public area and its signatures ([`wire::AkPublic`]), and the
//! firmware's measured-boot event log ([`eventlog`]).
//!
//! Everything here parses untrusted bytes: every length is checked against what is
//! left before it is used, and nothing panics on any input.

pub mod credential;
pub mod eventlog;
pub mod wire;

/// TPM algorithm id of SHA-256 (TPM_ALG_SHA256).
pub const ALG_SHA256: u16 = 0x000B;

/// SHA-256 of `parts`, concatenated.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The value a PCR holds after `digests` were extended into `start` in order.
pub fn extend_all(start: [u8; 32], digests: &[[u8; 32]]) -> [u8; 32] {
    digests.iter().fold(start, |pcr, d| sha256(&[&pcr, d]))
}

/// The digest a quote carries of the PCR values it selected: SHA-256 over the values
/// concatenated in selection order (ascending PCR index).
pub fn pcr_composite(values: &[[u8; 32]]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for v in values {
        h.update(v);
    }
    h.finalize().into()
}
