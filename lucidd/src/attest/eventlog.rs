//! Reading the firmware's measured-boot event log from securityfs. What it means is
//! decided by the verifier ([`lucid_common::tpm::eventlog`]); here it is only read,
//! with the reason when it cannot be.

/// The raw log, or why there is none (no TPM, securityfs not mounted, a VM without
/// firmware measurements).
pub fn read(path: &str) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.is_empty() => Err(format!("{path} is empty")),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(format!("{path}: {e}")),
    }
}
