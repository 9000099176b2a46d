//! `TPM2_NV_Certify` of the anchor counter, which tss-esapi 7.7 does not wrap: the
//! AK signs the counter's value together with qualifying data naming the ledger
//! checkpoint, so an offline verifier sees the TPM vouch for both at once.
//!
//! This is the only raw ESAPI call in Lucid. It runs on its own connection, opened and
//! closed here, while no `tss_esapi::Context` is open (swtpm serves one connection at
//! a time); every pointer the TSS returns is freed on every path.

use std::ffi::CString;
use std::ptr::null_mut;

use tss_esapi::traits::Marshall;
use tss_esapi::tss2_esys as sys;

use super::tpm::{TpmError, AK_HANDLE, ANCHOR_NV_INDEX};
use super::Signed;

/// Closes the connection on every path out.
struct Connection {
    tcti: *mut sys::TSS2_TCTI_CONTEXT,
    esys: *mut sys::ESYS_CONTEXT,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: both were initialised by the TSS (or are null, which the finalisers accept).
        unsafe {
            if !self.esys.is_null() {
                sys::Esys_Finalize(&mut self.esys);
            }
            if !self.tcti.is_null() {
                sys::Tss2_TctiLdr_Finalize(&mut self.tcti);
            }
        }
    }
}

fn check(rc: sys::TSS2_RC, what: &'static str) -> Result<(), TpmError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(TpmError::Command { what, source: tss_esapi::Error::Tss2Error(tss_esapi::constants::response_code::Tss2ResponseCode::from(rc)) })
    }
}

/// Certifies the anchor counter's 8 bytes with the AK over `qualifying` (at most 64
/// bytes). Returns the marshalled `TPMS_ATTEST` and `TPMT_SIGNATURE`.
pub fn certify_counter(tcti: &str, qualifying: &[u8]) -> Result<Signed, TpmError> {
    let conf = CString::new(tcti).map_err(|_| TpmError::Unexpected("TCTI contains a NUL byte".into()))?;
    let mut data = sys::TPM2B_DATA { size: 0, buffer: [0; 64] };
    if qualifying.len() > data.buffer.len() {
        return Err(TpmError::Unexpected("qualifying data longer than 64 bytes".into()));
    }
    data.buffer[..qualifying.len()].copy_from_slice(qualifying);
    data.size = qualifying.len() as u16;
    let mut conn = Connection { tcti: null_mut(), esys: null_mut() };
    // SAFETY: FFI calls with pointers to live locals; outputs are checked before use.
    unsafe {
        check(sys::Tss2_TctiLdr_Initialize(conf.as_ptr(), &mut conn.tcti), "open the TCTI")?;
        check(sys::Esys_Initialize(&mut conn.esys, conn.tcti, null_mut()), "initialise ESAPI")?;
        let none = sys::ESYS_TR_NONE;
        let mut ak: sys::ESYS_TR = none;
        check(sys::Esys_TR_FromTPMPublic(conn.esys, AK_HANDLE, none, none, none, &mut ak), "open the attestation key")?;
        let mut nv: sys::ESYS_TR = none;
        check(sys::Esys_TR_FromTPMPublic(conn.esys, ANCHOR_NV_INDEX, none, none, none, &mut nv), "open the anchor counter")?;
        let mut scheme: sys::TPMT_SIG_SCHEME = std::mem::zeroed();
        scheme.scheme = 0x0010; // TPM2_ALG_NULL: the AK's own scheme
        let mut info: *mut sys::TPM2B_ATTEST = null_mut();
        let mut sig: *mut sys::TPMT_SIGNATURE = null_mut();
        let pw = sys::ESYS_TR_PASSWORD;
        let rc = sys::Esys_NV_Certify(conn.esys, ak, nv, nv, pw, pw, none, &data, &scheme, 8, 0, &mut info, &mut sig);
        let result = check(rc, "NV certify").and_then(|()| {
            if info.is_null() || sig.is_null() {
                return Err(TpmError::Unexpected("NV certify returned nothing".into()));
            }
            let attest = &*info;
            let len = (attest.size as usize).min(attest.attestationData.len());
            let signature = tss_esapi::structures::Signature::try_from(*sig)
                .and_then(|s| s.marshall())
                .map_err(|source| TpmError::Command { what: "NV certify signature", source })?;
            Ok(Signed { attest: attest.attestationData[..len].to_vec(), signature })
        });
        if !info.is_null() {
            sys::Esys_Free(info.cast());
        }
        if !sig.is_null() {
            sys::Esys_Free(sig.cast());
        }
        result
    }
}
