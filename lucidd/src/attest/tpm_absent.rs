//! A lucidd built without the `tpm` feature (the static musl build of the VM tests, for
//! which Debian has no static tpm2-tss): the same interface, every call failing with a
//! reason that says so, so status, the inventory and passports state it plainly.

/// Why a TPM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// This build has no TPM support, or the TPM answered something unexpected.
    #[error("TPM {0}")]
    Unexpected(String),
}

/// The endorsement and attestation keys as a verifier sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The EK's TPM name (hex).
    pub ek_name: String,
    /// The EK's marshalled public area.
    pub ek_public: Vec<u8>,
    /// The EK certificate (DER).
    pub ek_certificate: Option<Vec<u8>>,
    /// The AK's TPM name (hex).
    pub ak_name: String,
    /// The AK's marshalled `TPMT_PUBLIC`.
    pub ak_public: Vec<u8>,
}

/// A signed TPM attestation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// What the TPM attested.
    pub attest: Vec<u8>,
    /// The AK's signature over it.
    pub signature: Vec<u8>,
}

/// A quote and the PCR values it covers.
#[derive(Clone, Debug)]
pub struct Quote {
    /// The signed quote.
    pub signed: Signed,
    /// (PCR index, value) for each quoted PCR.
    pub pcrs: Vec<(u32, [u8; 32])>,
}

/// No TPM in this build.
#[derive(Clone, Debug)]
pub struct Tpm {
    tcti: String,
}

fn absent<T>() -> Result<T, TpmError> {
    Err(TpmError::Unexpected("support is not in this build of lucidd (built without the `tpm` cargo feature)".into()))
}

impl Tpm {
    /// A TPM at `tcti` (never reachable in this build).
    pub fn new(tcti: &str) -> Tpm {
        Tpm { tcti: tcti.to_string() }
    }
    /// The configured TCTI.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }
    /// Fails: no TPM support.
    pub fn provision(&self) -> Result<Identity, TpmError> {
        absent()
    }
    /// Fails: no TPM support.
    pub fn quote(&self, _pcrs: &[u32], _qualifying: &[u8]) -> Result<Quote, TpmError> {
        absent()
    }
    /// Fails: no TPM support.
    pub fn read_pcrs(&self, _pcrs: &[u32]) -> Result<Vec<(u32, [u8; 32])>, TpmError> {
        absent()
    }
    /// Fails: no TPM support.
    pub fn extend(&self, _pcr: u32, _digest: [u8; 32]) -> Result<([u8; 32], [u8; 32]), TpmError> {
        absent()
    }
    /// Fails: no TPM support.
    pub fn activate(&self, _blob: &[u8], _secret: &[u8]) -> Result<Vec<u8>, TpmError> {
        absent()
    }
    /// Fails: no TPM support.
    pub fn counter(&self) -> Result<Option<u64>, TpmError> {
        absent()
    }
    /// Fails: no TPM support.
    pub fn advance_counter(&self) -> Result<u64, TpmError> {
        absent()
    }
    /// Fails: no TPM support.
    pub fn certify_counter(&self, _qualifying: &[u8]) -> Result<Signed, TpmError> {
        absent()
    }
}
