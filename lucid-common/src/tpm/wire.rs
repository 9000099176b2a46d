//! TPM 2.0 structures as they travel (big-endian, TPM2B = u16 size + bytes): the
//! attestation structure a quote or an NV certification signs (`TPMS_ATTEST`), the
//! attestation key's public area (`TPMT_PUBLIC`, ECC P-256) and its ECDSA signatures
//! (`TPMT_SIGNATURE`). Only what Lucid's evidence uses is decoded; anything else is a
//! named error, never a guess.


use super::sha256;

/// `TPM_GENERATED_VALUE`: every TPMS_ATTEST the TPM signs starts with it, so a signed
/// structure can never be passed off as something the TPM attested.
pub const TPM_GENERATED: u32 = 0xFF54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ST_ATTEST_NV`.
pub const ST_ATTEST_NV: u16 = 0x8014;
const ALG_ECC: u16 = 0x0023;
const ALG_ECDSA: u16 = 0x0018;
const ALG_NULL: u16 = 0x0010;
const CURVE_NIST_P256: u16 = 0x0003;

/// Why TPM bytes were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The input ended inside a field.
    #[error("truncated TPM structure: {0}")]
    Truncated(&'static str),
    /// A field has a value Lucid does not accept.
    #[error("unexpected TPM structure: {0}")]
    Unexpected(String),
    /// Bytes left over after the structure.
    #[error("{0} trailing bytes after the TPM structure")]
    Trailing(usize),
}

/// A big-endian cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn tpm2b(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    fn end(&self) -> Result<(), WireError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.bytes.len()))
        }
    }
}

/// `TPMS_CLOCK_INFO`: the TPM's clock and how often it was reset (rebooted) and
/// restarted; evidence carries it so that reboots inside a period are explicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered, over its life.
    pub clock: u64,
    /// TPM resets (reboots) over its life.
    pub reset_count: u32,
    /// TPM restarts (resume from hibernation) since the last reset.
    pub restart_count: u32,
    /// Whether the clock can have gone back since it was last reported.
    pub safe: bool,
}

/// What a `TPMS_ATTEST` attests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attested {
    /// A quote: the selected PCRs (SHA-256 bank) and the digest of their values.
    Quote {
        /// PCR indices selected, ascending.
        pcrs: Vec<u32>,
        /// SHA-256 over the selected PCR values in order.
        pcr_digest: Vec<u8>,
    },
    /// An NV certification: which index, from where, and the bytes read.
    Nv {
        /// The NV index's name.
        index_name: Vec<u8>,
        /// Offset of the certified bytes.
        offset: u16,
        /// The bytes (for a counter, its value as a big-endian u64).
        contents: Vec<u8>,
    },
}

/// A parsed `TPMS_ATTEST`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attest {
    /// Name of the key that signed it.
    pub signer: Vec<u8>,
    /// The caller's qualifying data (Lucid: a domain-separated digest of the statement).
    pub extra_data: Vec<u8>,
    /// The TPM's clock when it signed.
    pub clock: ClockInfo,
    /// Vendor firmware version.
    pub firmware_version: u64,
    /// The attested content.
    pub attested: Attested,
}

impl Attest {
    /// Parses a marshalled `TPMS_ATTEST` (the bytes the signature covers).
    pub fn parse(bytes: &[u8]) -> Result<Attest, WireError> {
        let mut r = Reader { bytes };
        if r.u32("magic")? != TPM_GENERATED {
            return Err(WireError::Unexpected("not TPM-generated (magic is not TPM_GENERATED_VALUE)".into()));
        }
        let kind = r.u16("type")?;
        let signer = r.tpm2b("qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b("extraData")?.to_vec();
        let clock = ClockInfo {
            clock: r.u64("clock")?,
            reset_count: r.u32("resetCount")?,
            restart_count: r.u32("restartCount")?,
            safe: r.u8("safe")? != 0,
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let attested = match kind {
            ST_ATTEST_QUOTE => {
                let count = r.u32("pcrSelect count")?;
                if count > 16 {
                    return Err(WireError::Unexpected(format!("{count} PCR selections")));
                }
                let mut pcrs = Vec::new();
                for _ in 0..count {
                    let hash = r.u16("pcrSelect hash")?;
                    let size = r.u8("sizeofSelect")? as usize;
                    let bitmap = r.take(size, "pcrSelect")?;
                    let selected: Vec<u32> = (0..size * 8).filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0).map(|i| i as u32).collect();
                    if selected.is_empty() {
                        continue;
                    }
                    if hash != super::ALG_SHA256 {
                        return Err(WireError::Unexpected(format!("PCRs quoted from bank 0x{hash:04x}; Lucid quotes SHA-256")));
                    }
                    if !pcrs.is_empty() {
                        return Err(WireError::Unexpected("more than one SHA-256 selection".into()));
                    }
                    pcrs = selected;
                }
                Attested::Quote { pcrs, pcr_digest: r.tpm2b("pcrDigest")?.to_vec() }
            }
            ST_ATTEST_NV => Attested::Nv {
                index_name: r.tpm2b("indexName")?.to_vec(),
                offset: r.u16("offset")?,
                contents: r.tpm2b("nvContents")?.to_vec(),
            },
            other => return Err(WireError::Unexpected(format!("attestation type 0x{other:04x}"))),
        };
        r.end()?;
        Ok(Attest { signer, extra_data, clock, firmware_version, attested })
    }
}

/// An ECDSA signature as the TPM returns it (`TPMT_SIGNATURE`, SHA-256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcdsaSignature {
    /// r, big-endian.
    pub r: Vec<u8>,
    /// s, big-endian.
    pub s: Vec<u8>,
}

impl EcdsaSignature {
    /// Parses a marshalled `TPMT_SIGNATURE`; only ECDSA with SHA-256 is accepted.
    pub fn parse(bytes: &[u8]) -> Result<EcdsaSignature, WireError> {
        let mut r = Reader { bytes };
        let alg = r.u16("sigAlg")?;
        if alg != ALG_ECDSA {
            return Err(WireError::Unexpected(format!("signature algorithm 0x{alg:04x}; the attestation key signs with ECDSA")));
        }
        let hash = r.u16("hash")?;
        if hash != super::ALG_SHA256 {
            return Err(WireError::Unexpected(format!("signature hash 0x{hash:04x}; expected SHA-256")));
        }
        let sig = EcdsaSignature { r: r.tpm2b("signatureR")?.to_vec(), s: r.tpm2b("signatureS")?.to_vec() };
        r.end()?;
        Ok(sig)
    }
}

/// Object attributes that make a key an attestation key the TPM vouches for.
pub mod attributes {
    /// The key cannot be duplicated off this TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// The key cannot be moved to another parent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// The TPM made the private part itself.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// It signs only what the TPM produced (quotes, certifications), never outside data
    /// that starts with TPM_GENERATED_VALUE.
    pub const RESTRICTED: u32 = 1 << 16;
    /// A decryption key.
    pub const DECRYPT: u32 = 1 << 17;
    /// A signing key.
    pub const SIGN: u32 = 1 << 18;
}

/// The attestation key's public area: an ECC P-256 restricted signing key.
#[derive(Clone, Debug)]
pub struct AkPublic {
    /// The marshalled `TPMT_PUBLIC`.
    pub bytes: Vec<u8>,
    /// `TPMA_OBJECT` bits.
    pub attributes: u32,
    /// The TPM name: nameAlg || SHA-256(TPMT_PUBLIC).
    pub name: Vec<u8>,
    key: p256::ecdsa::VerifyingKey,
}

impl AkPublic {
    /// Parses a marshalled `TPMT_PUBLIC` of an ECC P-256 key with a SHA-256 name.
    pub fn parse(bytes: &[u8]) -> Result<AkPublic, WireError> {
        let mut r = Reader { bytes };
        let kind = r.u16("type")?;
        if kind != ALG_ECC {
            return Err(WireError::Unexpected(format!("key type 0x{kind:04x}; the attestation key is ECC")));
        }
        let name_alg = r.u16("nameAlg")?;
        if name_alg != super::ALG_SHA256 {
            return Err(WireError::Unexpected(format!("name algorithm 0x{name_alg:04x}")));
        }
        let attributes = r.u32("objectAttributes")?;
        r.tpm2b("authPolicy")?;
        if r.u16("symmetric")? != ALG_NULL {
            r.u16("symmetric keyBits")?;
            r.u16("symmetric mode")?;
        }
        if r.u16("scheme")? != ALG_NULL {
            r.u16("scheme hash")?;
        }
        let curve = r.u16("curveID")?;
        if curve != CURVE_NIST_P256 {
            return Err(WireError::Unexpected(format!("curve 0x{curve:04x}; expected NIST P-256")));
        }
        if r.u16("kdf")? != ALG_NULL {
            r.u16("kdf hash")?;
        }
        let x = r.tpm2b("unique.x")?;
        let y = r.tpm2b("unique.y")?;
        r.end()?;
        let (x, y) = (left_pad::<32>(x, "unique.x")?, left_pad::<32>(y, "unique.y")?);
        let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
        let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
            .map_err(|_| WireError::Unexpected("the public point is not on P-256".into()))?;
        let mut name = name_alg.to_be_bytes().to_vec();
        name.extend_from_slice(&sha256(&[bytes]));
        Ok(AkPublic { bytes: bytes.to_vec(), attributes, name, key })
    }

    /// Whether the attributes make it an attestation key: restricted, signing only,
    /// fixed to this TPM and its parent, generated inside the TPM. An empty list: yes.
    pub fn attestation_key_problems(&self) -> Vec<&'static str> {
        use attributes::*;
        let a = self.attributes;
        let mut problems = Vec::new();
        for (bit, what) in [
            (RESTRICTED, "not restricted"),
            (SIGN, "not a signing key"),
            (FIXED_TPM, "not fixedTPM"),
            (FIXED_PARENT, "not fixedParent"),
            (SENSITIVE_DATA_ORIGIN, "not generated in the TPM"),
        ] {
            if a & bit == 0 {
                problems.push(what);
            }
        }
        if a & DECRYPT != 0 {
            problems.push("also a decryption key");
        }
        problems
    }

    /// The key as PEM (SubjectPublicKeyInfo), for tools such as `tpm2_checkquote -u`.
    pub fn to_pem(&self) -> Option<String> {
        use p256::pkcs8::EncodePublicKey as _;
        self.key.to_public_key_pem(p256::pkcs8::LineEnding::LF).ok()
    }

    /// Whether `signature` (a marshalled `TPMT_SIGNATURE`) by this key covers `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), WireError> {
        let sig = EcdsaSignature::parse(signature)?;
        let (r, s) = (left_pad::<32>(&sig.r, "signatureR")?, left_pad::<32>(&sig.s, "signatureS")?);
        let mut fixed = [0u8; 64];
        fixed[..32].copy_from_slice(&r);
        fixed[32..].copy_from_slice(&s);
        let point = self.key.to_encoded_point(false);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point.as_bytes())
            .verify(message, &fixed)
            .map_err(|_| WireError::Unexpected("the signature does not verify with the attestation key".into()))
    }
}

/// `bytes` as a fixed-size big-endian integer (TPMs may drop leading zeros).
fn left_pad<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N], WireError> {
    let bytes = match bytes.iter().position(|b| *b != 0) {
        Some(first) => &bytes[first..],
        None => &[],
    };
    if bytes.len() > N {
        return Err(WireError::Unexpected(format!("{what} is longer than {N} bytes")));
    }
    let mut out = [0u8; N];
    out[N - bytes.len()..].copy_from_slice(bytes);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;

    /// A software "TPM" for tests: an ECC key in TPMT_PUBLIC form and the structures it
    /// would sign.
    pub(crate) struct FakeAk {
        pub(crate) key: p256::ecdsa::SigningKey,
        pub(crate) public: Vec<u8>,
    }

    impl FakeAk {
        pub(crate) fn new(seed: u8, attributes: u32) -> FakeAk {
            let key = p256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).unwrap();
            let point = key.verifying_key().to_encoded_point(false);
            let mut p = Vec::new();
            p.extend_from_slice(&ALG_ECC.to_be_bytes());
            p.extend_from_slice(&0x000Bu16.to_be_bytes());
            p.extend_from_slice(&attributes.to_be_bytes());
            p.extend_from_slice(&0u16.to_be_bytes());
            p.extend_from_slice(&ALG_NULL.to_be_bytes());
            p.extend_from_slice(&ALG_ECDSA.to_be_bytes());
            p.extend_from_slice(&0x000Bu16.to_be_bytes());
            p.extend_from_slice(&CURVE_NIST_P256.to_be_bytes());
            p.extend_from_slice(&ALG_NULL.to_be_bytes());
            for c in [point.x().unwrap(), point.y().unwrap()] {
                p.extend_from_slice(&32u16.to_be_bytes());
                p.extend_from_slice(c);
            }
            FakeAk { key, public: p }
        }

        pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
            let sig: p256::ecdsa::Signature = self.key.sign_prehash(&sha256(&[message])).unwrap();
            let (r, s) = (sig.r().to_bytes(), sig.s().to_bytes());
            let mut out = Vec::new();
            out.extend_from_slice(&ALG_ECDSA.to_be_bytes());
            out.extend_from_slice(&0x000Bu16.to_be_bytes());
            for c in [r.as_slice(), s.as_slice()] {
                out.extend_from_slice(&(c.len() as u16).to_be_bytes());
                out.extend_from_slice(c);
            }
            out
        }
    }

    pub(crate) fn quote_bytes(extra: &[u8], pcrs: &[u32], digest: &[u8], clock: ClockInfo) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&TPM_GENERATED.to_be_bytes());
        a.extend_from_slice(&ST_ATTEST_QUOTE.to_be_bytes());
        a.extend_from_slice(&0u16.to_be_bytes());
        a.extend_from_slice(&(extra.len() as u16).to_be_bytes());
        a.extend_from_slice(extra);
        a.extend_from_slice(&clock.clock.to_be_bytes());
        a.extend_from_slice(&clock.reset_count.to_be_bytes());
        a.extend_from_slice(&clock.restart_count.to_be_bytes());
        a.push(clock.safe as u8);
        a.extend_from_slice(&0u64.to_be_bytes());
        a.extend_from_slice(&1u32.to_be_bytes());
        a.extend_from_slice(&0x000Bu16.to_be_bytes());
        a.push(3);
        let mut bitmap = [0u8; 3];
        for p in pcrs {
            bitmap[*p as usize / 8] |= 1 << (p % 8);
        }
        a.extend_from_slice(&bitmap);
        a.extend_from_slice(&(digest.len() as u16).to_be_bytes());
        a.extend_from_slice(digest);
        a
    }

    const AK_ATTRS: u32 = attributes::FIXED_TPM | attributes::FIXED_PARENT | attributes::SENSITIVE_DATA_ORIGIN | attributes::RESTRICTED | attributes::SIGN;

    #[test]
    fn a_quote_parses_and_verifies_with_its_key_only() {
        let ak = FakeAk::new(3, AK_ATTRS);
        let public = AkPublic::parse(&ak.public).unwrap();
        assert!(public.attestation_key_problems().is_empty());
        assert_eq!(public.name.len(), 34);
        let clock = ClockInfo { clock: 99, reset_count: 2, restart_count: 0, safe: true };
        let quote = quote_bytes(b"nonce", &[0, 7, 23], &[5; 32], clock);
        let parsed = Attest::parse(&quote).unwrap();
        assert_eq!(parsed.extra_data, b"nonce");
        assert_eq!(parsed.clock, clock);
        assert_eq!(parsed.attested, Attested::Quote { pcrs: vec![0, 7, 23], pcr_digest: vec![5; 32] });
        let sig = ak.sign(&quote);
        public.verify(&quote, &sig).unwrap();
        let mut changed = quote.clone();
        changed[20] ^= 1;
        assert!(public.verify(&changed, &sig).is_err());
        let other = AkPublic::parse(&FakeAk::new(4, AK_ATTRS).public).unwrap();
        assert!(other.verify(&quote, &sig).is_err());
        // An unrestricted key is not an attestation key.
        let loose = AkPublic::parse(&FakeAk::new(5, attributes::SIGN).public).unwrap();
        assert!(loose.attestation_key_problems().contains(&"not restricted"));
    }

    #[test]
    fn no_input_panics_the_parsers() {
        let ak = FakeAk::new(3, AK_ATTRS);
        let quote = quote_bytes(b"n", &[1], &[1; 32], ClockInfo { clock: 1, reset_count: 1, restart_count: 1, safe: false });
        let sig = ak.sign(&quote);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for input in [&quote, &ak.public, &sig] {
            for cut in 0..input.len() {
                let _ = Attest::parse(&input[..cut]);
                let _ = AkPublic::parse(&input[..cut]);
                let _ = EcdsaSignature::parse(&input[..cut]);
            }
            for _ in 0..3000 {
                let mut m = input.clone();
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % m.len();
                m[at] = (state >> 32) as u8;
                let _ = Attest::parse(&m);
                if let Ok(k) = AkPublic::parse(&m) {
                    let _ = k.verify(&quote, &sig);
                }
                let _ = EcdsaSignature::parse(&m);
            }
        }
    }
}
