//! Measured launch: what lucidd runs with (its own binary, the configuration in force,
//! each approved model's manifest) is extended into the application PCR at start and on
//! every change, and each extension is a ledger record with the PCR's value before and
//! after, so a verifier can replay the PCR from the ledger and compare it with a quote.

use lucid_common::record::{Entry, Kind, Severity};
use serde_json::json;

use super::state::AppState;

/// Subject of a measurement record.
pub const MEASURE: &str = "launch.measure";

impl AppState {
    /// Measures the binary, the configuration and every approved model.
    pub async fn measure_launch(&self) {
        match tokio::task::spawn_blocking(|| file_sha256("/proc/self/exe")).await {
            Ok(Ok(digest)) => self.measure("lucidd", digest).await,
            Ok(Err(e)) => tracing::error!(error = %e, "could not read lucidd's own binary to measure it"),
            Err(e) => tracing::error!(error = %e, "measuring lucidd's own binary failed"),
        }
        self.measure_config().await;
        for model in self.models.all() {
            self.measure(&format!("model:{}", model.id), model.manifest.subject_digest()).await;
        }
    }

    /// Measures the configuration in force (at start and after each apply).
    pub async fn measure_config(&self) {
        let digest = self.config().digest.clone();
        match lucid_common::hex::decode32(&digest) {
            Some(d) => self.measure("config", d).await,
            None => tracing::error!(digest, "the configuration digest is not SHA-256"),
        }
    }

    /// Extends the application PCR with `digest` and records it; without a TPM the
    /// record says the measurement was not extended, so the ledger still shows it.
    pub async fn measure(&self, what: &str, digest: [u8; 32]) {
        let attest = self.attest.clone();
        let extended = tokio::task::spawn_blocking(move || attest.measure(digest)).await;
        let pcr = self.attest.settings().application_pcr;
        let hex = lucid_common::hex::encode;
        let body = match extended {
            Ok(Ok((before, after))) => json!({ "what": what, "digest": hex(&digest), "pcr": pcr, "before": hex(&before), "after": hex(&after) }),
            Ok(Err(e)) => json!({ "what": what, "digest": hex(&digest), "pcr": pcr, "extended": false, "reason": e.to_string() }),
            Err(e) => json!({ "what": what, "digest": hex(&digest), "pcr": pcr, "extended": false, "reason": e.to_string() }),
        };
        let entry = Entry { kind: Kind::Attestation, source: "lucidd".into(), controls: vec!["CC8.1".into()], severity: Severity::Info, subject: MEASURE.into(), body };
        if let Err(e) = self.ledger.append(entry).await {
            tracing::error!(error = %e, what, "could not record a launch measurement");
        }
    }
}

/// SHA-256 of a file, read in 1 MiB blocks.
fn file_sha256(path: &str) -> std::io::Result<[u8; 32]> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}
