//! AI passports: what a host states about a period (its identity, what it booted and
//! launched, its models, its controls and its ledger), signed by the host key and, where
//! the host has a TPM, quoted by the TPM's attestation key and anchored in its NV
//! counter; and their offline verification, which needs nothing but the files.
//!
//! A passport is a DSSE envelope of an in-toto Statement v1 whose predicate type is
//! [`PREDICATE_TYPE`]. The TPM quote's qualifying data is
//! `SHA-256("lucid/passport/v1\n" || canonical JSON of the statement without
//! predicate.tpm)`, so the TPM vouches for every claim; the host key signs the whole.
//!
//! The verifier's answer follows the RATS vocabulary: the passport is Evidence, and
//! [`Appraisal`] is the Attestation Result, one [`Claim`] per thing checked, each
//! `affirming`, `warning` or `contraindicated` (EAR).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, VerifierKey};
use crate::dsse::Envelope;
use crate::tpm::eventlog::{EventLog, SecureBoot};
use crate::tpm::wire::{AkPublic, Attest, Attested, ClockInfo};
use crate::tpm::{extend_all, pcr_composite, sha256};

/// The in-toto predicate type of a Lucid passport.
pub const PREDICATE_TYPE: &str = "https://lucid.dev/passport/v1";
/// The in-toto Statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Domain tag of the quote's qualifying data.
pub const QUOTE_DOMAIN: &[u8] = b"lucid/passport/v1\n";
/// Domain tag of an anchor's qualifying data (the NV certification).
pub const ANCHOR_DOMAIN: &[u8] = b"lucid/anchor/v1\n";

/// The in-toto Statement a passport envelope carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// What the statement is about: the ledger checkpoint and each approved model.
    pub subject: Vec<Subject>,
    /// [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The passport.
    pub predicate: Passport,
}

/// An in-toto subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// `ledger-checkpoint` or `model:<id>`.
    pub name: String,
    /// `{"sha256": hex}`.
    pub digest: BTreeMap<String, String>,
}

/// The predicate: one period of one host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Passport {
    /// Position in this host's chain, from 1.
    pub number: u64,
    /// The period it covers.
    pub period: Period,
    /// SHA-256 (hex) of the previous passport's payload; `None` for the first.
    pub previous: Option<String>,
    /// Who the host is.
    pub host: Host,
    /// What it booted.
    pub boot: Boot,
    /// What lucidd launched with.
    pub launch: Launch,
    /// The approved models and their integrity.
    pub models: Vec<ModelClaim>,
    /// The controls over the period.
    pub controls: Controls,
    /// Stretches of the period without evidence, and why.
    pub gaps: Vec<Gap>,
    /// The ledger the period is in.
    pub ledger: LedgerClaim,
    /// GPUs (NVML identity), where NVML is present.
    #[serde(default)]
    pub gpus: Vec<serde_json::Value>,
    /// Why `gpus` is empty, where it is.
    #[serde(default)]
    pub gpus_note: Option<String>,
    /// The TPM's quote; `None` when the passport is unanchored.
    pub tpm: Option<TpmClaim>,
    /// Why there is no TPM evidence.
    #[serde(default)]
    pub unanchored: Option<String>,
}

/// A period, ns since the epoch, `[from, to)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// Start.
    pub from_ns: u64,
    /// End.
    pub to_ns: u64,
}

/// The host's identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// Hostname.
    pub hostname: String,
    /// /etc/machine-id.
    pub machine_id: Option<String>,
    /// The host key as a signed-note verifier key (signs checkpoints and passports).
    pub ledger_key: String,
    /// The EK's TPM name (hex).
    pub ek_name: Option<String>,
    /// The EK certificate (DER, base64), where the TPM holds one.
    pub ek_certificate: Option<String>,
    /// The EK's marshalled TPMT_PUBLIC (base64), so a verifier can match the certificate.
    #[serde(default)]
    pub ek_public: Option<String>,
    /// The AK's marshalled TPMT_PUBLIC (base64).
    pub ak_public: Option<String>,
}

/// Measured boot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Boot {
    /// The firmware's event log (base64), as read from securityfs.
    pub event_log: Option<String>,
    /// Why there is none.
    pub event_log_error: Option<String>,
}

/// One extension of the application PCR, as recorded in the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurement {
    /// The ledger record.
    pub seq: u64,
    /// `lucidd`, `config`, `model:<id>`.
    pub what: String,
    /// The digest extended (hex).
    pub digest: String,
    /// The PCR before (hex).
    pub before: String,
    /// The PCR after (hex).
    pub after: String,
}

/// Measured launch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// The application PCR.
    pub pcr: u32,
    /// SHA-256 of the running lucidd binary (hex).
    pub lucidd: Option<String>,
    /// Digest of the configuration in force.
    pub config_digest: String,
    /// Every extension since the PCR was last reset (boot), oldest first.
    pub measurements: Vec<Measurement>,
}

/// One approved model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelClaim {
    /// Short id.
    pub id: String,
    /// Path.
    pub path: String,
    /// Manifest digest (hex).
    pub digest: String,
    /// Latest verification: `verified`, `modified`, ...
    pub state: String,
    /// Integrity records in the period.
    pub changes_in_period: u64,
}

/// The controls over the period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Controls {
    /// The control inventory at the end of the period (what operates, by what).
    pub inventory: Vec<crate::api::ControlStatus>,
    /// Per SOC 2 control: what the ledger holds for it in the period.
    pub per_control: BTreeMap<String, ControlPeriod>,
    /// Configuration digests in force during the period, with the record that applied each.
    pub configs: Vec<ConfigInForce>,
    /// Seconds lucidd ran in the period.
    pub operating_s: u64,
    /// `operating_s` over the period's length, in percent.
    pub coverage_pct: f64,
}

/// One control over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlPeriod {
    /// Records evidencing it.
    pub records: u64,
    /// Decisions by outcome (`proceed`, `warn`, `redact`, `deny`, ...).
    pub decisions: BTreeMap<String, u64>,
    /// Sequence numbers of records at warning severity or above (at most 1,000 listed).
    pub exceptions: Vec<u64>,
    /// Exceptions in all, listed or not.
    pub exception_count: u64,
}

/// A configuration in force during a period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigInForce {
    /// Its digest.
    pub digest: String,
    /// The record that loaded or applied it (none: in force since before the period).
    pub record_seq: Option<u64>,
    /// When it took effect.
    pub since_ns: u64,
}

/// A stretch without evidence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Start.
    pub from_ns: u64,
    /// End.
    pub to_ns: u64,
    /// `daemon stopped`, `daemon crashed`, `tpm failing`, ...
    pub cause: String,
}

/// The ledger at the end of the period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerClaim {
    /// The signed checkpoint note covering the period.
    pub checkpoint: String,
    /// The previous passport's checkpoint note.
    pub previous_checkpoint: Option<String>,
    /// Consistency proof from the previous checkpoint to this one (hex hashes).
    pub consistency: Vec<String>,
    /// The NV anchor binding the checkpoint, where there is a TPM.
    pub anchor: Option<AnchorClaim>,
}

/// The TPM's NV certification of the anchor counter, bound to the checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorClaim {
    /// Counter value.
    pub counter: u64,
    /// `TPMS_ATTEST` (base64).
    pub attest: String,
    /// AK signature (base64 `TPMT_SIGNATURE`).
    pub signature: String,
}

/// The TPM quote over the statement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmClaim {
    /// `TPMS_ATTEST` (base64).
    pub quote: String,
    /// AK signature (base64 `TPMT_SIGNATURE`).
    pub signature: String,
    /// The quoted PCR values (SHA-256 bank), by index, hex.
    pub pcrs: BTreeMap<u32, String>,
    /// The TPM clock from the quote (reset and restart counts make reboots explicit).
    pub clock: Option<ClockInfo>,
}

/// JSON with object keys sorted at every level and no insignificant whitespace: what
/// the quote's qualifying data hashes, independent of how a file was written.
pub fn canonical(value: &serde_json::Value) -> Vec<u8> {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (k, child)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    // Writing to a Vec cannot fail; a string always serialises.
                    let _ = serde_json::to_writer(&mut *out, k);
                    out.push(b':');
                    write(child, out);
                }
                out.push(b'}');
            }
            serde_json::Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            leaf => {
                let _ = serde_json::to_writer(&mut *out, leaf);
            }
        }
    }
    let mut out = Vec::with_capacity(4096);
    write(value, &mut out);
    out
}

impl Statement {
    /// The qualifying data of the TPM quote: binds every claim except the quote itself.
    /// The issuer computes it before quoting; a verifier computes it from the payload as
    /// signed ([`binding_of`]), so fields a later version adds never change it.
    pub fn quote_binding(&self) -> [u8; 32] {
        binding_of(&serde_json::to_value(self).unwrap_or(serde_json::Value::Null))
    }
}

/// The quote binding of a statement as JSON: `predicate.tpm` set to null, then the
/// canonical form, hashed with [`QUOTE_DOMAIN`].
pub fn binding_of(statement: &serde_json::Value) -> [u8; 32] {
    bind(&mut statement.clone())
}

/// [`binding_of`] without a copy: `predicate.tpm` is set aside while the statement is
/// hashed, then put back as it was.
fn bind(statement: &mut serde_json::Value) -> [u8; 32] {
    fn predicate(v: &mut serde_json::Value) -> Option<&mut serde_json::Map<String, serde_json::Value>> {
        v.get_mut("predicate").and_then(|p| p.as_object_mut())
    }
    let set_aside = predicate(statement).map(|p| p.insert("tpm".into(), serde_json::Value::Null));
    let binding = sha256(&[QUOTE_DOMAIN, &canonical(statement)]);
    if let (Some(p), Some(was)) = (predicate(statement), set_aside) {
        match was {
            Some(tpm) => p.insert("tpm".into(), tpm),
            None => p.remove("tpm"),
        };
    }
    binding
}

/// What the verifier concluded about one claim (EAR's trustworthiness tiers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Checked and good.
    Affirming,
    /// Not contradicted, but not proven either (no TPM, no event log, AK not pinned).
    Warning,
    /// Checked and wrong.
    Contraindicated,
}

/// One claim and its appraisal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// What was checked: `signature`, `ak`, `quote`, `boot`, `secure_boot`, `launch`,
    /// `ledger`, `anchor`, `chain`.
    pub claim: String,
    /// The verdict.
    pub status: Status,
    /// Why, in words.
    pub detail: String,
}

/// The appraisal of one passport.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Appraisal {
    /// Which file.
    pub file: String,
    /// Its number in the chain (0 if it could not be read).
    pub number: u64,
    /// Its period.
    pub period: Period,
    /// SHA-256 of its payload (hex).
    pub digest: String,
    /// Each claim.
    pub claims: Vec<Claim>,
}

impl Appraisal {
    /// The worst status of its claims.
    pub fn status(&self) -> Status {
        self.claims.iter().map(|c| c.status).max().unwrap_or(Status::Contraindicated)
    }

    fn push(&mut self, claim: &str, status: Status, detail: impl Into<String>) {
        self.claims.push(Claim { claim: claim.into(), status, detail: detail.into() });
    }
}

/// What the verifier trusts, given on its command line.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// The AK names (hex) the verifier pinned (from an enrolment it ran).
    pub pinned_aks: Vec<String>,
    /// The host key, where the verifier pinned it.
    pub host_key: Option<VerifierKey>,
    /// CA certificates EK certificates must chain to (`--ek-ca`).
    pub ek_anchors: Option<Vec<x509_cert::Certificate>>,
}

/// A passport read from a file, before appraisal.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The file name.
    pub file: String,
    /// The envelope.
    pub envelope: Envelope,
    /// SHA-256 of the payload.
    pub digest: [u8; 32],
    /// The statement.
    pub statement: Statement,
    /// The quote binding of the payload as signed.
    pub binding: [u8; 32],
}

/// Reads an envelope's statement without checking anything yet.
pub fn load(file: &str, bytes: &[u8]) -> Result<Loaded, String> {
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    if envelope.payload_type != crate::dsse::IN_TOTO {
        return Err(format!("payload type {:?} is not an in-toto statement", envelope.payload_type));
    }
    let payload = envelope.payload_unverified().map_err(|e| e.to_string())?;
    let mut value: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| format!("not JSON: {e}"))?;
    let binding = bind(&mut value);
    let statement: Statement = serde_json::from_value(value).map_err(|e| format!("not a Lucid passport statement: {e}"))?;
    if statement.predicate_type != PREDICATE_TYPE {
        return Err(format!("predicate type {:?} is not {PREDICATE_TYPE}", statement.predicate_type));
    }
    Ok(Loaded { file: file.to_string(), digest: sha256(&[&payload]), envelope, statement, binding })
}

/// Runs `f` over `items` on every core (at most 16), keeping their order; each worker
/// takes one contiguous run of items, in order. `None` if a worker panicked. Verifying a
/// year of hourly passports (8,760) is work for every core.
pub fn par_chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> Vec<R> + Sync) -> Option<Vec<R>> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 16);
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items.chunks(chunk).map(|part| s.spawn(move || f(part))).collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            out.extend(h.join().ok()?);
        }
        Some(out)
    })
}

/// Appraises a chain of passports (any order; sorted by number here). Every passport
/// gets its own appraisal; the chain claims (no gap, no fork, consistent ledger,
/// advancing anchor) are checked between neighbours.
pub fn verify_chain(mut passports: Vec<Loaded>, trust: &Trust) -> Vec<Appraisal> {
    passports.sort_by_key(|p| (p.statement.predicate.number, p.statement.predicate.period.from_ns));
    // Each passport on its own, on every core. A passport's previous checkpoint is
    // usually its predecessor's checkpoint, just verified: that one is not verified twice.
    let appraised = par_chunks(&passports, |part| {
        let mut previous: Option<(&str, &str, Checkpoint)> = None;
        part.iter()
            .map(|p| {
                let (a, checkpoint) = appraise(p, trust, previous.as_ref().map(|(n, k, c)| (*n, *k, c)));
                let pp = &p.statement.predicate;
                previous = checkpoint.map(|c| (pp.ledger.checkpoint.as_str(), pp.host.ledger_key.as_str(), c));
                a
            })
            .collect()
    });
    let Some(mut out) = appraised.filter(|o| o.len() == passports.len()) else {
        // A verifier thread panicked: say so rather than drop passports silently.
        return passports
            .iter()
            .map(|p| Appraisal {
                file: p.file.clone(),
                number: p.statement.predicate.number,
                period: p.statement.predicate.period,
                digest: crate::hex::encode(&p.digest),
                claims: vec![Claim { claim: "verifier".into(), status: Status::Contraindicated, detail: "the verifier failed on this chain".into() }],
            })
            .collect();
    };
    // Then the links between neighbours.
    let first_key = passports.first().map(|p| p.statement.predicate.host.ledger_key.clone());
    for (i, p) in passports.iter().enumerate() {
        if first_key.as_deref().is_some_and(|k| k != p.statement.predicate.host.ledger_key) {
            out[i].push("chain", Status::Contraindicated, "signed by a different host key than the first passport of the chain");
        }
        if i > 0 {
            chain_link(&passports[i - 1], p, &mut out[i]);
        }
    }
    out
}

fn chain_link(prev: &Loaded, p: &Loaded, a: &mut Appraisal) {
    let (pp, cp) = (&prev.statement.predicate, &p.statement.predicate);
    if cp.number == pp.number {
        a.push("chain", Status::Contraindicated, format!("fork: two passports numbered {}", cp.number));
        return;
    }
    let mut problems = Vec::new();
    if cp.number != pp.number + 1 {
        problems.push(format!("gap: passport {} follows {} (missing {}..{})", cp.number, pp.number, pp.number + 1, cp.number - 1));
    }
    if cp.previous.as_deref() != Some(crate::hex::encode(&prev.digest).as_str()) {
        problems.push(format!("does not link to passport {} (its previous digest is {:?})", pp.number, cp.previous));
    }
    if cp.period.from_ns != pp.period.to_ns {
        problems.push(format!("period starts at {} but passport {} ended at {}", cp.period.from_ns, pp.number, pp.period.to_ns));
    }
    if cp.ledger.previous_checkpoint.as_deref() != Some(pp.ledger.checkpoint.as_str()) {
        problems.push(format!("its previous checkpoint is not passport {}'s checkpoint", pp.number));
    }
    if let (Some(x), Some(y)) = (&pp.ledger.anchor, &cp.ledger.anchor) {
        if y.counter <= x.counter {
            problems.push(format!("anchor counter {} does not advance past {}", y.counter, x.counter));
        }
    }
    if problems.is_empty() {
        a.push("chain", Status::Affirming, format!("follows passport {} with no gap", pp.number));
    } else {
        a.push("chain", Status::Contraindicated, problems.join("; "));
    }
}

/// Appraises one passport on its own.
pub fn verify_one(p: &Loaded, trust: &Trust) -> Appraisal {
    appraise(p, trust, None).0
}

/// [`verify_one`], given a checkpoint note already verified under a host key (note, key,
/// what it says) so that a previous checkpoint equal to it is not verified again; also
/// returns this passport's checkpoint where its signature verified.
fn appraise(p: &Loaded, trust: &Trust, known: Option<(&str, &str, &Checkpoint)>) -> (Appraisal, Option<Checkpoint>) {
    let pp = &p.statement.predicate;
    let mut a = Appraisal { file: p.file.clone(), number: pp.number, period: pp.period, digest: crate::hex::encode(&p.digest), claims: Vec::new() };
    let mut verified = None;
    appraise_into(p, trust, known, &mut a, &mut verified);
    (a, verified)
}

fn appraise_into(p: &Loaded, trust: &Trust, known: Option<(&str, &str, &Checkpoint)>, a: &mut Appraisal, verified: &mut Option<Checkpoint>) {
    let s = &p.statement;
    let pp = &s.predicate;

    // The host key: the envelope, the checkpoints.
    let key = match VerifierKey::parse(&pp.host.ledger_key) {
        Ok(k) => k,
        Err(e) => {
            a.push("signature", Status::Contraindicated, format!("host key: {e}"));
            return;
        }
    };
    match p.envelope.verify(&key.key) {
        Ok(_) => match &trust.host_key {
            Some(pinned) if pinned.key != key.key => a.push("signature", Status::Contraindicated, "signed by a host key other than the pinned one"),
            Some(_) => a.push("signature", Status::Affirming, "signed by the pinned host key"),
            None => a.push("signature", Status::Affirming, "signed by the host key it names (the TPM quote binds that key to the host)"),
        },
        Err(e) => {
            a.push("signature", Status::Contraindicated, format!("envelope: {e}"));
            return;
        }
    }

    // The ledger checkpoint and its consistency with the previous one.
    let checkpoint = Checkpoint::verify(&pp.ledger.checkpoint, &key);
    *verified = checkpoint.as_ref().ok().cloned();
    match (&checkpoint, &pp.ledger.previous_checkpoint) {
        (Err(e), _) => a.push("ledger", Status::Contraindicated, format!("checkpoint: {e}")),
        (Ok(cp), None) => a.push("ledger", Status::Affirming, format!("checkpoint of {} records signed by the host key", cp.size)),
        (Ok(cp), Some(prev_note)) => match known
            .filter(|(note, key, _)| note == prev_note && *key == pp.host.ledger_key)
            .map(|(_, _, c)| Ok(c.clone()))
            .unwrap_or_else(|| Checkpoint::verify(prev_note, &key))
        {
            Err(e) => a.push("ledger", Status::Contraindicated, format!("previous checkpoint: {e}")),
            Ok(prev) => {
                let proof: Option<Vec<[u8; 32]>> = pp.ledger.consistency.iter().map(|h| crate::hex::decode32(h)).collect();
                let ok = proof.is_some_and(|proof| {
                    prev.size == cp.size && prev.root == cp.root && proof.is_empty()
                        || crate::merkle::verify_consistency(prev.size, cp.size, &prev.root, &cp.root, &proof)
                });
                if ok {
                    a.push("ledger", Status::Affirming, format!("records {}..{} extend the previous passport's ledger (consistency proof)", prev.size, cp.size));
                } else {
                    a.push("ledger", Status::Contraindicated, format!("the ledger of size {} is not an extension of the previous passport's ledger of size {} (rewritten history)", cp.size, prev.size));
                }
            }
        },
    }
    let subject_ok = s.subject.iter().any(|sub| {
        sub.name == "ledger-checkpoint" && sub.digest.get("sha256").map(String::as_str) == Some(crate::hex::encode(&sha256(&[pp.ledger.checkpoint.as_bytes()])).as_str())
    });
    if !subject_ok {
        a.push("ledger", Status::Contraindicated, "the statement's ledger-checkpoint subject does not match the checkpoint");
    }

    // The TPM: AK, quote, boot, launch, anchor.
    let Some(tpm) = &pp.tpm else {
        // A verifier that pinned an AK expects that TPM's evidence: without it the
        // passport rests on the host key alone, which a root attacker holds.
        let status = if trust.pinned_aks.is_empty() { Status::Warning } else { Status::Contraindicated };
        a.push("quote", status, format!("unanchored: no TPM evidence ({})", pp.unanchored.as_deref().unwrap_or("no reason given")));
        return;
    };
    let ak = match pp.host.ak_public.as_deref().and_then(|b| B64.decode(b).ok()).map(|b| AkPublic::parse(&b)) {
        Some(Ok(ak)) => ak,
        Some(Err(e)) => {
            a.push("ak", Status::Contraindicated, format!("attestation key: {e}"));
            return;
        }
        None => {
            a.push("ak", Status::Contraindicated, "a quote without the attestation key's public area");
            return;
        }
    };
    if let Some(anchors) = &trust.ek_anchors {
        appraise_ek(&pp.host, anchors, a);
    }
    let problems = ak.attestation_key_problems();
    let ak_name = crate::hex::encode(&ak.name);
    if !problems.is_empty() {
        a.push("ak", Status::Contraindicated, format!("the key that quoted is not an attestation key: {}", problems.join(", ")));
    } else if trust.pinned_aks.iter().any(|n| n.eq_ignore_ascii_case(&ak_name)) {
        a.push("ak", Status::Affirming, format!("AK {ak_name} is pinned (enrolled by this verifier)"));
    } else {
        a.push("ak", Status::Warning, format!("AK {ak_name} is a restricted TPM signing key, but not pinned: enrol it (lucidctl attest enroll) and pass --ak"));
    }
    let quote = match (B64.decode(&tpm.quote), B64.decode(&tpm.signature)) {
        (Ok(q), Ok(sig)) => match ak.verify(&q, &sig).and_then(|()| Attest::parse(&q)) {
            Ok(att) => Some(att),
            Err(e) => {
                a.push("quote", Status::Contraindicated, format!("quote: {e}"));
                None
            }
        },
        _ => {
            a.push("quote", Status::Contraindicated, "quote or signature is not base64");
            None
        }
    };
    let Some(quote) = quote else { return };
    let Attested::Quote { pcrs, pcr_digest } = &quote.attested else {
        a.push("quote", Status::Contraindicated, "the TPM structure is not a quote");
        return;
    };
    let mut values = BTreeMap::new();
    let mut all = true;
    for i in pcrs {
        match tpm.pcrs.get(i).and_then(|h| crate::hex::decode32(h)) {
            Some(v) => {
                values.insert(*i, v);
            }
            None => all = false,
        }
    }
    let composite: Vec<[u8; 32]> = values.values().copied().collect();
    if quote.extra_data != p.binding {
        a.push("quote", Status::Contraindicated, "the quote's qualifying data does not match this statement (changed after quoting, or a replayed quote)");
    } else if !all || pcr_composite(&composite).as_slice() != pcr_digest.as_slice() || tpm.pcrs.len() != pcrs.len() {
        a.push("quote", Status::Contraindicated, "the PCR values given are not the ones the TPM quoted");
    } else if tpm.clock != Some(quote.clock) {
        a.push("quote", Status::Contraindicated, "the clock given is not the quote's");
    } else {
        a.push(
            "quote",
            Status::Affirming,
            format!(
                "the TPM quoted PCRs {:?} over this statement (boot {}, restart {}{})",
                pcrs,
                quote.clock.reset_count,
                quote.clock.restart_count,
                if quote.clock.safe { "" } else { ", clock not safe" }
            ),
        );
    }
    appraise_boot(&pp.boot, &values, a);
    appraise_launch(&pp.launch, &values, a);
    appraise_anchor(pp, &ak, a);
}

fn appraise_ek(host: &Host, anchors: &[x509_cert::Certificate], a: &mut Appraisal) {
    use crate::tpm::credential::{check_ek_certificate, EkPublic};
    let ek = match host.ek_public.as_deref().and_then(|b| B64.decode(b).ok()).map(|b| EkPublic::parse(&b)) {
        Some(Ok(ek)) => ek,
        Some(Err(e)) => return a.push("ek", Status::Contraindicated, format!("EK public area: {e}")),
        None => return a.push("ek", Status::Warning, "no EK public area in the passport"),
    };
    if host.ek_name.as_deref() != Some(crate::hex::encode(&ek.name).as_str()) {
        return a.push("ek", Status::Contraindicated, "the EK public area does not have the stated EK name");
    }
    let Some(cert) = host.ek_certificate.as_deref().and_then(|b| B64.decode(b).ok()) else {
        return a.push("ek", Status::Warning, "the TPM holds no EK certificate");
    };
    match check_ek_certificate(&cert, anchors, &ek) {
        Ok(chain) => a.push("ek", Status::Affirming, format!("EK certificate chains to the given CA: {}", chain.join(" <- "))),
        Err(e) => a.push("ek", Status::Contraindicated, e),
    }
}

fn appraise_boot(boot: &Boot, quoted: &BTreeMap<u32, [u8; 32]>, a: &mut Appraisal) {
    let Some(log) = boot.event_log.as_deref() else {
        a.push("boot", Status::Warning, format!("no event log: {}", boot.event_log_error.as_deref().unwrap_or("none given")));
        return;
    };
    let log = match B64.decode(log).map_err(|e| e.to_string()).and_then(|b| EventLog::parse(&b).map_err(|e| e.to_string())) {
        Ok(l) => l,
        Err(e) => {
            a.push("boot", Status::Contraindicated, format!("event log: {e}"));
            return;
        }
    };
    let replayed = match log.replay_sha256() {
        Ok(r) => r,
        Err(e) => {
            a.push("boot", Status::Contraindicated, format!("event log replay: {e}"));
            return;
        }
    };
    let mismatched: Vec<u32> = BOOT_PCRS
        .iter()
        .filter(|i| quoted.get(i).is_some_and(|q| replayed.get(**i as usize) != Some(q)))
        .copied()
        .collect();
    if !mismatched.is_empty() {
        a.push("boot", Status::Contraindicated, format!("the event log does not replay to the quoted PCRs {mismatched:?}"));
    } else if BOOT_PCRS.iter().any(|i| !quoted.contains_key(i)) {
        a.push("boot", Status::Warning, "not every boot PCR was quoted");
    } else {
        let problems = log.problems();
        if problems.is_empty() {
            a.push("boot", Status::Affirming, format!("{} events replay to the quoted PCRs 0-7", log.events.len()));
        } else {
            a.push("boot", Status::Warning, format!("the log replays, but: {}", problems.join("; ")));
        }
    }
    match log.secure_boot() {
        SecureBoot::Enabled => a.push("secure_boot", Status::Affirming, "Secure Boot enabled (PCR 7)"),
        SecureBoot::Disabled => a.push("secure_boot", Status::Warning, "Secure Boot disabled (PCR 7)"),
        SecureBoot::Unverifiable { reason } => a.push("secure_boot", Status::Warning, format!("Secure Boot state unverifiable: {reason}")),
    }
}

/// The boot PCRs every passport quotes.
pub const BOOT_PCRS: [u32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

fn appraise_launch(launch: &Launch, quoted: &BTreeMap<u32, [u8; 32]>, a: &mut Appraisal) {
    let Some(pcr_value) = quoted.get(&launch.pcr) else {
        a.push("launch", Status::Contraindicated, format!("the application PCR {} was not quoted", launch.pcr));
        return;
    };
    let mut digests = Vec::new();
    let mut expected_before = [0u8; 32];
    for (i, m) in launch.measurements.iter().enumerate() {
        let (Some(d), Some(before), Some(after)) = (crate::hex::decode32(&m.digest), crate::hex::decode32(&m.before), crate::hex::decode32(&m.after)) else {
            a.push("launch", Status::Contraindicated, format!("measurement {} (record {}) is malformed", i, m.seq));
            return;
        };
        if before != expected_before || after != sha256(&[&before, &d]) {
            a.push("launch", Status::Contraindicated, format!("measurement of {} (record {}) does not follow from the previous one: PCR {} was extended outside lucidd", m.what, m.seq, launch.pcr));
            return;
        }
        expected_before = after;
        digests.push(d);
    }
    if extend_all([0; 32], &digests) != *pcr_value {
        a.push("launch", Status::Contraindicated, format!("replaying {} measurements from the ledger does not give the quoted PCR {}", digests.len(), launch.pcr));
        return;
    }
    let config_measured = launch.measurements.iter().rev().find(|m| m.what == "config").map(|m| m.digest == launch.config_digest);
    match config_measured {
        Some(true) => a.push("launch", Status::Affirming, format!("PCR {} replays from {} ledger measurements; the configuration in force is the one last measured", launch.pcr, digests.len())),
        Some(false) => a.push("launch", Status::Contraindicated, "the configuration in force is not the one last measured"),
        None => a.push("launch", Status::Warning, format!("PCR {} replays, but no configuration was measured", launch.pcr)),
    }
}

fn appraise_anchor(pp: &Passport, ak: &AkPublic, a: &mut Appraisal) {
    let Some(anchor) = &pp.ledger.anchor else {
        a.push("anchor", Status::Warning, "the checkpoint is not anchored in the TPM's NV counter");
        return;
    };
    let (Ok(att), Ok(sig)) = (B64.decode(&anchor.attest), B64.decode(&anchor.signature)) else {
        a.push("anchor", Status::Contraindicated, "anchor is not base64");
        return;
    };
    let parsed = match ak.verify(&att, &sig).and_then(|()| Attest::parse(&att)) {
        Ok(p) => p,
        Err(e) => {
            a.push("anchor", Status::Contraindicated, format!("NV certification: {e}"));
            return;
        }
    };
    let Attested::Nv { contents, offset: 0, .. } = &parsed.attested else {
        a.push("anchor", Status::Contraindicated, "the anchor is not an NV certification of the counter");
        return;
    };
    let value = <[u8; 8]>::try_from(contents.as_slice()).ok().map(u64::from_be_bytes);
    if parsed.extra_data != sha256(&[ANCHOR_DOMAIN, pp.ledger.checkpoint.as_bytes()]) {
        a.push("anchor", Status::Contraindicated, "the NV certification is bound to another checkpoint");
    } else if value != Some(anchor.counter) {
        a.push("anchor", Status::Contraindicated, format!("the certified counter is {value:?}, not {}", anchor.counter));
    } else {
        a.push("anchor", Status::Affirming, format!("the TPM certified anchor counter {} bound to this checkpoint", anchor.counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::wire::tests::{quote_bytes, FakeAk};
    use crate::tpm::wire::attributes::*;

    /// A passport as a host with a (software) TPM would issue it.
    fn issue(ak: &FakeAk, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
        let vkey = VerifierKey::new("host/lucid", key.verifying_key());
        let note = Checkpoint { origin: "host/lucid".into(), size: 3, root: [1; 32], time_ns: 9 }.sign(key);
        let mut s = Statement {
            statement_type: STATEMENT_TYPE.into(),
            subject: vec![Subject { name: "ledger-checkpoint".into(), digest: [("sha256".to_string(), crate::hex::encode(&sha256(&[note.as_bytes()])))].into() }],
            predicate_type: PREDICATE_TYPE.into(),
            predicate: Passport {
                number: 1,
                period: Period { from_ns: 1, to_ns: 2 },
                host: Host { hostname: "h".into(), ledger_key: vkey.to_string(), ak_public: Some(B64.encode(&ak.public)), ..Default::default() },
                launch: Launch { pcr: 23, config_digest: "c".into(), ..Default::default() },
                ledger: LedgerClaim { checkpoint: note, ..Default::default() },
                ..Default::default()
            },
        };
        let pcrs: Vec<u32> = vec![0, 1, 2, 3, 4, 5, 6, 7, 23];
        let clock = ClockInfo { clock: 5, reset_count: 1, restart_count: 0, safe: true };
        let quote = quote_bytes(&s.quote_binding(), &pcrs, &pcr_composite(&[[0u8; 32]; 9]), clock);
        s.predicate.tpm = Some(TpmClaim {
            quote: B64.encode(&quote),
            signature: B64.encode(ak.sign(&quote)),
            pcrs: pcrs.iter().map(|p| (*p, crate::hex::encode(&[0u8; 32]))).collect(),
            clock: Some(clock),
        });
        serde_json::to_vec(&Envelope::sign(crate::dsse::IN_TOTO, &serde_json::to_vec(&s).unwrap(), key, "k")).unwrap()
    }

    fn statuses(a: &Appraisal) -> BTreeMap<String, Status> {
        a.claims.iter().map(|c| (c.claim.clone(), c.status)).collect()
    }

    #[test]
    fn a_well_formed_passport_affirms_and_its_binding_survives_unknown_fields() {
        let ak = FakeAk::new(3, FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | SIGN);
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let bytes = issue(&ak, &key);
        let loaded = load("p", &bytes).unwrap();
        let a = verify_one(&loaded, &Trust::default());
        let s = statuses(&a);
        assert_eq!(s["quote"], Status::Affirming, "{a:?}");
        // PCR 23 at zero replays from no measurements, but nothing says what ran.
        assert_eq!(s["launch"], Status::Warning, "{a:?}");
        assert_eq!(s["ak"], Status::Warning);
        // A field this verifier does not know (a later version's), signed and bound by the
        // issuer: the binding is over the payload as signed, so it still verifies.
        let env: Envelope = serde_json::from_slice(&bytes).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&env.payload_unverified().unwrap()).unwrap();
        v["predicate"]["future_field"] = serde_json::json!({ "x": 1 });
        let binding = binding_of(&v);
        let quote = quote_bytes(&binding, &[0, 1, 2, 3, 4, 5, 6, 7, 23], &pcr_composite(&[[0u8; 32]; 9]), ClockInfo { clock: 5, reset_count: 1, restart_count: 0, safe: true });
        v["predicate"]["tpm"]["quote"] = serde_json::Value::String(B64.encode(&quote));
        v["predicate"]["tpm"]["signature"] = serde_json::Value::String(B64.encode(ak.sign(&quote)));
        let later = serde_json::to_vec(&Envelope::sign(crate::dsse::IN_TOTO, &serde_json::to_vec(&v).unwrap(), &key, "k")).unwrap();
        let a = verify_one(&load("later", &later).unwrap(), &Trust::default());
        assert_eq!(statuses(&a)["quote"], Status::Affirming, "{a:?}");
    }

    /// The verifier reads files from anywhere: no input may panic it. Mutates the
    /// envelope's bytes, and the signed payload's bytes (re-signed, so the mutation
    /// reaches the claim checks).
    #[test]
    fn no_mutation_of_a_passport_panics_the_verifier() {
        let ak = FakeAk::new(3, FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | SIGN);
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let bytes = issue(&ak, &key);
        let env: Envelope = serde_json::from_slice(&bytes).unwrap();
        let payload = env.payload_unverified().unwrap();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let trust = Trust { pinned_aks: vec!["00".into()], ..Default::default() };
        for i in 0..3000 {
            let (mut target, resign) = if i % 2 == 0 { (bytes.clone(), false) } else { (payload.clone(), true) };
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % target.len();
                match next() % 3 {
                    0 => target[at] = next() as u8,
                    1 => target.truncate(at),
                    _ => target.insert(at, b"0123456789\"{}[],:-e"[(next() % 19) as usize]),
                }
                if target.is_empty() {
                    break;
                }
            }
            let file = if resign { serde_json::to_vec(&Envelope::sign(crate::dsse::IN_TOTO, &target, &key, "k")).unwrap() } else { target };
            if let Ok(l) = load("m", &file) {
                let _ = verify_chain(vec![l.clone(), l], &trust);
            }
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// Any JSON value as the statement of a validly signed envelope: the loader and the
        /// verifier answer, never panic.
        #[test]
        fn arbitrary_statements_never_panic_the_verifier(value in arb_json()) {
            let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
            let env = Envelope::sign(crate::dsse::IN_TOTO, &serde_json::to_vec(&value).unwrap_or_default(), &key, "k");
            let bytes = serde_json::to_vec(&env).unwrap_or_default();
            if let Ok(l) = load("p", &bytes) {
                let _ = verify_chain(vec![l.clone(), l], &Trust::default());
            }
        }
    }

    /// JSON shaped like a passport more often than not: the statement's keys, with
    /// arbitrary values under them.
    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<u64>().prop_map(|n| serde_json::json!(n)),
            "[a-zA-Z0-9+/=]{0,40}".prop_map(serde_json::Value::String),
        ];
        let keys = prop_oneof![
            Just("_type".to_string()), Just("subject".to_string()), Just("predicateType".to_string()), Just("predicate".to_string()),
            Just("number".to_string()), Just("period".to_string()), Just("host".to_string()), Just("tpm".to_string()),
            Just("ledger".to_string()), Just("launch".to_string()), Just("boot".to_string()), Just("pcrs".to_string()),
            Just("quote".to_string()), Just("checkpoint".to_string()), Just("measurements".to_string()), "[a-z_]{1,8}",
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(keys.clone(), inner, 0..8).prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
