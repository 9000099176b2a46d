//! A lucidd built without the `tpm` feature (the static musl build of the VM tests, for
//! which Debian has no static tpm2-tss): the same interface, every call failing with a
//! reason that says so, so status, the inventory and passports state it plainly.

use super::{Identity, Quote, Signed};

/// Why a TPM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// This build has no TPM support, or the TPM answered something unexpected.
    #[error("TPM {0}")]
    Unexpected(String),
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
