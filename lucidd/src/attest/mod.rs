//! The TPM as a source of evidence (DESIGN.md section 7): who this host is (EK, AK),
//! what it booted (the firmware's event log, replayed against quoted PCRs), what lucidd
//! launched (the application PCR), and how far the ledger has got (an NV counter no
//! one can turn back).
//!
//! [`Attestor`] owns the TPM for the daemon. It knows no ledger: callers record what it
//! returns ([`crate::passport`], [`anchor`], `daemon::state`). Its calls block on the
//! TPM; call them from blocking threads. Without a TPM (none present, `tpm: off`, or
//! one that fails) every call returns [`TpmError`] and [`Attestor::status`] says why,
//! so passports are issued unanchored and say so.

pub mod anchor;
pub mod eventlog;
#[cfg(feature = "tpm")]
pub mod nv_certify;
#[cfg(feature = "tpm")]
pub mod tpm;
#[cfg(not(feature = "tpm"))]
#[path = "tpm_absent.rs"]
pub mod tpm;

use std::sync::Mutex;

use lucid_common::api::AttestStatus;

use crate::config::model::TpmMode;
use crate::config::Attestation;
pub use tpm::{Tpm, TpmError};

/// The endorsement and attestation keys as a verifier sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The EK's TPM name (hex).
    pub ek_name: String,
    /// The EK's marshalled public area.
    pub ek_public: Vec<u8>,
    /// The EK certificate from NV (DER), where the manufacturer (or swtpm_setup) put one.
    pub ek_certificate: Option<Vec<u8>>,
    /// The AK's TPM name (hex).
    pub ak_name: String,
    /// The AK's marshalled `TPMT_PUBLIC`.
    pub ak_public: Vec<u8>,
}

/// A signed TPM attestation: the marshalled `TPMS_ATTEST` and `TPMT_SIGNATURE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// What the TPM attested.
    pub attest: Vec<u8>,
    /// The AK's signature over it.
    pub signature: Vec<u8>,
}

/// A quote and the PCR values it covers (SHA-256 bank).
#[derive(Clone, Debug)]
pub struct Quote {
    /// The signed quote.
    pub signed: Signed,
    /// (PCR index, value) for each quoted PCR, ascending.
    pub pcrs: Vec<(u32, [u8; 32])>,
}

/// The PCRs every passport quotes besides the application PCR: the firmware's
/// (0-7: code, configuration, option ROMs, boot manager, Secure Boot policy).
pub const BOOT_PCRS: [u32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// Domain tag of the qualifying data of an anchor's NV certification.
pub const ANCHOR_DOMAIN: &[u8] = b"lucid/anchor/v1\n";

/// The daemon's TPM, or the reason there is none.
pub struct Attestor {
    settings: Attestation,
    tpm: Option<Tpm>,
    state: Mutex<State>,
    /// One TPM operation at a time (swtpm serves one connection; NV writes are serial).
    busy: Mutex<()>,
}

#[derive(Clone, Debug, Default)]
struct State {
    identity: Option<Identity>,
    unavailable: Option<String>,
    failing: Option<(String, u64)>,
    failures: u64,
    counter: Option<u64>,
}

impl Attestor {
    /// Connects to the configured TPM and provisions the EK and AK. With `tpm: auto`
    /// a missing or failing TPM is not an error: the attestor runs without one and
    /// says why; with `required` it is.
    pub fn start(settings: &Attestation) -> Result<Attestor, TpmError> {
        let mut state = State::default();
        let tpm = match settings.tpm {
            TpmMode::Off => {
                state.unavailable = Some("off in the configuration (spec.attestation.tpm: off)".into());
                None
            }
            _ => {
                let tpm = Tpm::new(&settings.tcti);
                match tpm.provision() {
                    Ok(id) => {
                        state.identity = Some(id);
                        state.counter = tpm.counter().unwrap_or(None);
                        Some(tpm)
                    }
                    Err(e) if settings.tpm == TpmMode::Required => return Err(e),
                    Err(e) => {
                        tracing::warn!(tcti = %settings.tcti, error = %e, "no TPM: passports will be issued unanchored");
                        state.unavailable = Some(format!("no TPM at {}: {e}", settings.tcti));
                        None
                    }
                }
            }
        };
        Ok(Attestor { settings: settings.clone(), tpm, state: Mutex::new(state), busy: Mutex::new(()) })
    }

    /// The settings it was started with.
    pub fn settings(&self) -> &Attestation {
        &self.settings
    }

    /// The EK and AK, when there is a TPM.
    pub fn identity(&self) -> Option<Identity> {
        self.lock().identity.clone()
    }

    /// Runs one TPM operation, keeping track of failures (a TPM that fails is reported
    /// in status and tried again next time, never a crash).
    fn with_tpm<T>(&self, what: &str, op: impl FnOnce(&Tpm) -> Result<T, TpmError>) -> Result<T, TpmError> {
        let Some(tpm) = &self.tpm else {
            return Err(TpmError::Unexpected(self.lock().unavailable.clone().unwrap_or_else(|| "not available".into())));
        };
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let result = op(tpm);
        let mut state = self.lock();
        match &result {
            Ok(_) => state.failing = None,
            Err(e) => {
                state.failures += 1;
                if state.failing.is_none() {
                    state.failing = Some((format!("{what}: {e}"), crate::ledger::now_ns()));
                }
            }
        }
        result
    }

    /// Whether the TPM is failing now (the first error and since when).
    pub fn failing(&self) -> Option<(String, u64)> {
        self.lock().failing.clone()
    }

    /// Quotes the boot PCRs and the application PCR over `qualifying`.
    pub fn quote(&self, qualifying: &[u8]) -> Result<Quote, TpmError> {
        let mut pcrs = BOOT_PCRS.to_vec();
        pcrs.push(self.settings.application_pcr);
        self.with_tpm("quote", |t| t.quote(&pcrs, qualifying))
    }

    /// Extends the application PCR; returns the values before and after.
    pub fn measure(&self, digest: [u8; 32]) -> Result<([u8; 32], [u8; 32]), TpmError> {
        self.with_tpm("extend the application PCR", |t| t.extend(self.settings.application_pcr, digest))
    }

    /// The application PCR's value now.
    pub fn application_pcr(&self) -> Result<[u8; 32], TpmError> {
        let pcr = self.settings.application_pcr;
        self.with_tpm("read the application PCR", |t| {
            t.read_pcrs(&[pcr])?.first().map(|(_, v)| *v).ok_or_else(|| TpmError::Unexpected(format!("did not return PCR {pcr}")))
        })
    }

    /// Answers a verifier's enrolment challenge (credential activation).
    pub fn activate(&self, blob: &[u8], secret: &[u8]) -> Result<Vec<u8>, TpmError> {
        self.with_tpm("activate a credential", |t| t.activate(blob, secret))
    }

    /// The anchor counter's value (`None`: never advanced on this TPM).
    pub fn counter(&self) -> Result<Option<u64>, TpmError> {
        let value = self.with_tpm("read the anchor counter", |t| t.counter())?;
        self.lock().counter = value;
        Ok(value)
    }

    /// Advances the anchor counter and has the AK certify its new value together with
    /// `note` (a signed checkpoint). Returns the value and the certification.
    pub fn anchor(&self, note: &str) -> Result<(u64, Signed), TpmError> {
        let qualifying = lucid_common::tpm::sha256(&[ANCHOR_DOMAIN, note.as_bytes()]);
        let out = self.with_tpm("anchor", |t| {
            let value = t.advance_counter()?;
            let signed = t.certify_counter(&qualifying)?;
            Ok((value, signed))
        })?;
        self.lock().counter = Some(out.0);
        Ok(out)
    }

    /// What `status` and the control inventory show.
    pub fn status(&self) -> AttestStatus {
        let s = self.lock().clone();
        AttestStatus {
            mode: format!("{:?}", self.settings.tpm).to_lowercase(),
            tcti: self.settings.tcti.clone(),
            available: s.identity.is_some(),
            unavailable: s.unavailable,
            ek_name: s.identity.as_ref().map(|i| i.ek_name.clone()),
            ek_certificate: s.identity.as_ref().map(|i| i.ek_certificate.is_some()).unwrap_or(false),
            ak_name: s.identity.as_ref().map(|i| i.ak_name.clone()),
            application_pcr: self.settings.application_pcr,
            anchor_counter: s.counter,
            failing: s.failing.as_ref().map(|f| f.0.clone()),
            failing_since_ns: s.failing.as_ref().map(|f| f.1),
            failures: s.failures,
            passport_interval_minutes: self.settings.passport_interval_minutes,
            anchor_every_checkpoints: self.settings.anchor_every_checkpoints,
            latest_passport: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
