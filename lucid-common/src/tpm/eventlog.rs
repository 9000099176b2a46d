//! The firmware's measured-boot event log in the crypto-agile format of the TCG PC
//! Client Platform Firmware Profile (what Linux exposes at
//! `/sys/kernel/security/tpm0/binary_bios_measurements`): parsing, replay of the
//! SHA-256 PCR bank, and the Secure Boot state that PCR 7 records.
//!
//! An event's type and data are outside its digest: only the digests are bound to the
//! PCR values a quote signs (go-attestation's lesson). So this module trusts event data
//! only where it recomputes the digest from that data, and whatever it cannot check is
//! reported as unverifiable, never guessed.
//!
//! Events are numbered as `tpm2_eventlog` numbers them: the Spec ID header event is
//! event 0, so `events[i].index == i + 1`.
//!
//! The log is untrusted input: every length is checked against what is left before it
//! is used, allocations never exceed the input, and nothing panics on any input.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::hex;

pub use build::{uefi_variable_data, LogBuilder};

/// Most events a log may hold, so that a hostile log cannot exhaust memory.
pub const MAX_EVENTS: usize = 100_000;
/// Most digests one event may carry (and algorithms the Spec ID event may declare).
pub const MAX_DIGESTS: u32 = 8;
/// Largest event data accepted (16 MiB); real events are far smaller.
pub const MAX_EVENT_SIZE: u32 = 16 * 1024 * 1024;

/// `TPM_ALG_SHA1`, the legacy bank.
pub const ALG_SHA1: u16 = 0x0004;
/// `TPM_ALG_SHA256`, the bank this module replays.
pub const ALG_SHA256: u16 = 0x000B;
/// `TPM_ALG_SHA384`.
pub const ALG_SHA384: u16 = 0x000C;
/// `TPM_ALG_SHA512`.
pub const ALG_SHA512: u16 = 0x000D;
/// `TPM_ALG_SM3_256`.
pub const ALG_SM3_256: u16 = 0x0012;

/// `EV_S_CRTM_VERSION`: the firmware version string, measured into PCR 0.
pub const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
/// `EV_NO_ACTION`: informational, never extended into a PCR.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_SEPARATOR`: ends the pre-OS measurements of a PCR.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// `EV_EFI_VARIABLE_DRIVER_CONFIG`: a Secure Boot configuration variable (PCR 7).
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
/// `EV_EFI_BOOT_SERVICES_APPLICATION`: a UEFI application (boot loader) image.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_EFI_ACTION`: a firmware action string.
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
/// `EV_EFI_VARIABLE_AUTHORITY`: the database entry that authorized a loaded image.
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;

/// `EFI_GLOBAL_VARIABLE` (8be4df61-93ca-11d2-aa0d-00e098032b8c) in the EFI mixed-endian
/// byte layout: the vendor GUID of `SecureBoot`, `PK` and `KEK`.
pub const EFI_GLOBAL_VARIABLE: [u8; 16] = [
    0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
];
/// `EFI_IMAGE_SECURITY_DATABASE_GUID` (d719b2cb-3d3a-4596-a3bc-dad00e67656f) in the EFI
/// mixed-endian byte layout: the vendor GUID of `db` and `dbx`.
pub const EFI_IMAGE_SECURITY_DATABASE: [u8; 16] = [
    0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f,
];

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
const UEFI_DEBUG_MODE: &[u8] = b"UEFI Debug Mode";
/// Number of PCRs replayed (a PC Client TPM has 24).
const PCR_COUNT: usize = 24;

/// Why an event log was refused or could not be replayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventLogError {
    /// The input ended inside a field.
    #[error("event log truncated at byte {offset} (reading {what})")]
    Truncated {
        /// Byte offset of the field that did not fit.
        offset: usize,
        /// Which field was being read.
        what: &'static str,
    },
    /// The first event is not the crypto-agile Spec ID event (e.g. a SHA-1-only log).
    #[error("not a crypto-agile event log (no \"Spec ID Event03\" first event)")]
    NotCryptoAgile,
    /// The Spec ID event has the right signature but malformed contents.
    #[error("malformed Spec ID event: {0}")]
    BadSpecId(&'static str),
    /// The Spec ID event declares a digest size that cannot be right for the algorithm.
    #[error("the Spec ID event declares {size}-byte digests for algorithm 0x{alg:04x}")]
    BadDigestSize {
        /// The algorithm id.
        alg: u16,
        /// The declared digest size.
        size: u16,
    },
    /// An event carries a digest of an algorithm the Spec ID event did not declare.
    #[error("event at byte {offset} has a digest of undeclared algorithm 0x{alg:04x}")]
    UnknownAlgorithm {
        /// Byte offset of the event.
        offset: usize,
        /// The algorithm id.
        alg: u16,
    },
    /// An event carries two digests of the same algorithm.
    #[error("event at byte {offset} has two digests of algorithm 0x{alg:04x}")]
    DuplicateDigest {
        /// Byte offset of the event.
        offset: usize,
        /// The algorithm id.
        alg: u16,
    },
    /// The log holds more than [`MAX_EVENTS`] events.
    #[error("the event log holds more than 100000 events")]
    TooManyEvents,
    /// An event claims more than [`MAX_DIGESTS`] digests.
    #[error("event at byte {offset} claims {count} digests (at most 8 accepted)")]
    TooManyDigests {
        /// Byte offset of the event.
        offset: usize,
        /// The claimed digest count.
        count: u32,
    },
    /// An event claims more than [`MAX_EVENT_SIZE`] bytes of data.
    #[error("event at byte {offset} claims {size} bytes of data (at most 16 MiB accepted)")]
    EventTooLarge {
        /// Byte offset of the event.
        offset: usize,
        /// The claimed data size.
        size: u32,
    },
    /// The Spec ID event declares no SHA-256 bank, so there is nothing to replay.
    #[error("no SHA-256 bank")]
    NoSha256Bank,
    /// An extended event lacks the SHA-256 digest the Spec ID event promised.
    #[error("event {index} (PCR {pcr}) has no SHA-256 digest")]
    MissingSha256 {
        /// The event's index.
        index: usize,
        /// The PCR it extends.
        pcr: u32,
    },
    /// An extended event names a PCR outside 0..=23.
    #[error("event {index} extends PCR {pcr}, outside 0..=23")]
    PcrOutOfRange {
        /// The event's index.
        index: usize,
        /// The PCR it names.
        pcr: u32,
    },
    /// A `StartupLocality` event that cannot be applied.
    #[error("event {index}: {reason}")]
    BadStartupLocality {
        /// The event's index.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One `TCG_PCR_EVENT2` record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the log; the Spec ID header is event 0, so the first record is 1.
    pub index: usize,
    /// The PCR the event extends (or, for `EV_NO_ACTION`, names).
    pub pcr: u32,
    /// The event type (`EV_*`); not covered by the digest.
    pub event_type: u32,
    /// `(algorithm id, digest)` per bank, as logged.
    pub digests: Vec<(u16, Vec<u8>)>,
    /// The event data; covered by the digest only for some event types.
    pub data: Vec<u8>,
}

impl Event {
    /// The SHA-256 digest, which is what replay extends and what checks compare.
    pub fn sha256(&self) -> Option<&[u8]> {
        self.digests.iter().find(|(alg, _)| *alg == ALG_SHA256).map(|(_, d)| d.as_slice())
    }

    /// The `EV_*` name of the event type, for reports and error messages.
    pub fn type_name(&self) -> &'static str {
        event_type_name(self.event_type)
    }

    /// Whether the SHA-256 digest is the SHA-256 of the data, i.e. the data is what was measured.
    fn data_matches_digest(&self) -> bool {
        self.sha256().is_some_and(|d| d == sha256(&self.data).as_slice())
    }

    /// "event N (PCR P, TYPE)", how problems and reasons name an event.
    fn describe(&self) -> String {
        let name = self.type_name();
        if name == "EV_UNKNOWN" {
            format!("event {} (PCR {}, EV_UNKNOWN 0x{:08x})", self.index, self.pcr, self.event_type)
        } else {
            format!("event {} (PCR {}, {name})", self.index, self.pcr)
        }
    }
}

/// The `EV_*` name of an event type, for reports; `"EV_UNKNOWN"` for others.
pub fn event_type_name(event_type: u32) -> &'static str {
    match event_type {
        0x0000_0000 => "EV_PREBOOT_CERT",
        0x0000_0001 => "EV_POST_CODE",
        0x0000_0002 => "EV_UNUSED",
        0x0000_0003 => "EV_NO_ACTION",
        0x0000_0004 => "EV_SEPARATOR",
        0x0000_0005 => "EV_ACTION",
        0x0000_0006 => "EV_EVENT_TAG",
        0x0000_0007 => "EV_S_CRTM_CONTENTS",
        0x0000_0008 => "EV_S_CRTM_VERSION",
        0x0000_0009 => "EV_CPU_MICROCODE",
        0x0000_000A => "EV_PLATFORM_CONFIG_FLAGS",
        0x0000_000B => "EV_TABLE_OF_DEVICES",
        0x0000_000C => "EV_COMPACT_HASH",
        0x0000_000D => "EV_IPL",
        0x0000_000E => "EV_IPL_PARTITION_DATA",
        0x0000_000F => "EV_NONHOST_CODE",
        0x0000_0010 => "EV_NONHOST_CONFIG",
        0x0000_0011 => "EV_NONHOST_INFO",
        0x0000_0012 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0000 => "EV_EFI_EVENT_BASE",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
        0x8000_000D => "EV_EFI_GPT_EVENT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        _ => "EV_UNKNOWN",
    }
}

/// The Secure Boot state as PCR 7's verified events record it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SecureBoot {
    /// The measured `SecureBoot` variable is 1.
    Enabled,
    /// The measured `SecureBoot` variable is 0 or empty.
    Disabled,
    /// The log does not let the state be established; `reason` says why.
    Unverifiable {
        /// Why the state could not be established.
        reason: String,
    },
}

/// What PCR 7 says about Secure Boot, with the details a report shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureBootReport {
    /// The Secure Boot state.
    pub state: SecureBoot,
    /// Names of the other configuration variables measured before the separator
    /// (typically `PK`, `KEK`, `db`, `dbx`), in log order.
    pub variables: Vec<String>,
    /// How many `EV_EFI_VARIABLE_AUTHORITY` events (images authorized by a database
    /// entry) PCR 7 holds after the separator.
    pub authority_events: usize,
}

/// A parsed crypto-agile event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog {
    /// `(algorithm id, digest size)` as the Spec ID event declares them, in its order.
    pub algorithms: Vec<(u16, u16)>,
    /// The `TCG_PCR_EVENT2` records after the Spec ID event, in log order.
    pub events: Vec<Event>,
}

impl EventLog {
    /// Parses a crypto-agile log; refuses anything malformed, SHA-1-only logs included.
    pub fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
        let mut r = Reader::new(bytes, 0);
        let algorithms = parse_spec_id(&mut r)?;
        let mut events = Vec::new();
        while r.remaining() > 0 {
            if events.len() >= MAX_EVENTS {
                return Err(EventLogError::TooManyEvents);
            }
            let offset = r.offset();
            let pcr = r.u32("PCR index")?;
            let event_type = r.u32("event type")?;
            let count = r.u32("digest count")?;
            if count > MAX_DIGESTS {
                return Err(EventLogError::TooManyDigests { offset, count });
            }
            let mut digests: Vec<(u16, Vec<u8>)> = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let alg = r.u16("digest algorithm")?;
                let size = algorithms
                    .iter()
                    .find(|(a, _)| *a == alg)
                    .map(|(_, s)| *s)
                    .ok_or(EventLogError::UnknownAlgorithm { offset, alg })?;
                if digests.iter().any(|(a, _)| *a == alg) {
                    return Err(EventLogError::DuplicateDigest { offset, alg });
                }
                let digest = r.take(usize::from(size), "digest")?;
                digests.push((alg, digest.to_vec()));
            }
            let size = r.u32("event size")?;
            if size > MAX_EVENT_SIZE {
                return Err(EventLogError::EventTooLarge { offset, size });
            }
            let data = r.take(usize::try_from(size).unwrap_or(usize::MAX), "event data")?;
            let index = events.len().saturating_add(1);
            events.push(Event { index, pcr, event_type, digests, data: data.to_vec() });
        }
        Ok(EventLog { algorithms, events })
    }

    /// Replays the SHA-256 bank: the PCR 0..=23 values the log implies, to compare with a quote.
    pub fn replay_sha256(&self) -> Result<[[u8; 32]; 24], EventLogError> {
        if !self.algorithms.iter().any(|(alg, _)| *alg == ALG_SHA256) {
            return Err(EventLogError::NoSha256Bank);
        }
        let mut pcrs = [[0u8; 32]; PCR_COUNT];
        let mut extended = [false; PCR_COUNT];
        let mut locality_seen = false;
        for ev in &self.events {
            let index = ev.index;
            if ev.event_type == EV_NO_ACTION {
                if ev.pcr == 0 && ev.data.starts_with(STARTUP_LOCALITY_SIGNATURE) {
                    let bad =
                        |reason: &'static str| EventLogError::BadStartupLocality { index, reason };
                    let locality = *ev
                        .data
                        .get(STARTUP_LOCALITY_SIGNATURE.len())
                        .ok_or_else(|| bad("StartupLocality event has no locality byte"))?;
                    if extended.first().copied().unwrap_or(false) {
                        return Err(bad("StartupLocality event after PCR 0 was extended"));
                    }
                    if locality_seen {
                        return Err(bad("a second StartupLocality event"));
                    }
                    locality_seen = true;
                    let mut start = [0u8; 32];
                    if let Some(last) = start.last_mut() {
                        *last = locality;
                    }
                    if let Some(pcr0) = pcrs.first_mut() {
                        *pcr0 = start;
                    }
                }
                continue;
            }
            let slot = usize::try_from(ev.pcr)
                .map_err(|_| EventLogError::PcrOutOfRange { index, pcr: ev.pcr })?;
            let (Some(pcr), Some(done)) = (pcrs.get_mut(slot), extended.get_mut(slot)) else {
                return Err(EventLogError::PcrOutOfRange { index, pcr: ev.pcr });
            };
            let digest = ev.sha256().ok_or(EventLogError::MissingSha256 { index, pcr: ev.pcr })?;
            let mut h = Sha256::new();
            h.update(pcr.as_slice());
            h.update(digest);
            *pcr = h.finalize().into();
            *done = true;
        }
        Ok(pcrs)
    }

    /// The Secure Boot state, read only from PCR 7 events whose data is verified.
    pub fn secure_boot(&self) -> SecureBoot {
        self.secure_boot_report().state
    }

    /// The Secure Boot state with the variables and authority events PCR 7 records.
    pub fn secure_boot_report(&self) -> SecureBootReport {
        let mut variables = Vec::new();
        let mut authority_events = 0usize;
        let state = match self.read_pcr7(&mut variables, &mut authority_events) {
            Ok(true) => SecureBoot::Enabled,
            Ok(false) => SecureBoot::Disabled,
            Err(reason) => SecureBoot::Unverifiable { reason },
        };
        SecureBootReport { state, variables, authority_events }
    }

    /// Strictness problems that do not stop replay (malformed separators in PCRs 0-7),
    /// each naming the event index, PCR and type.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for ev in &self.events {
            if ev.event_type == EV_SEPARATOR && ev.pcr <= 7 {
                for problem in separator_problems(ev) {
                    out.push(format!("{}: {problem}", ev.describe()));
                }
            }
        }
        out
    }

    /// Walks PCR 7: `Ok(enabled)` when the state is established, `Err(reason)` otherwise.
    fn read_pcr7(&self, variables: &mut Vec<String>, authority: &mut usize) -> Result<bool, String> {
        let mut separator_seen = false;
        let mut secure_boot: Option<bool> = None;
        for ev in self.events.iter().filter(|e| e.pcr == 7) {
            let at = ev.describe();
            if ev.event_type == EV_SEPARATOR {
                if separator_seen {
                    return Err(format!("{at}: a second EV_SEPARATOR in PCR 7"));
                }
                if let Some(problem) = separator_problems(ev).into_iter().next() {
                    return Err(format!("{at}: {problem}"));
                }
                if ev.data != [0u8; 4] {
                    return Err(format!("{at}: the separator signals a firmware error"));
                }
                separator_seen = true;
                continue;
            }
            if separator_seen {
                match ev.event_type {
                    EV_EFI_VARIABLE_AUTHORITY => *authority = authority.saturating_add(1),
                    EV_NO_ACTION => {}
                    _ => return Err(format!("{at}: unexpected event type in PCR 7 after the separator")),
                }
                continue;
            }
            match ev.event_type {
                EV_NO_ACTION => {}
                EV_EFI_ACTION => {
                    if ev.data.starts_with(UEFI_DEBUG_MODE) {
                        return Err(format!("{at}: the firmware is in UEFI debug mode"));
                    }
                }
                EV_EFI_VARIABLE_DRIVER_CONFIG => {
                    if ev.sha256().is_none() {
                        return Err(format!("{at}: no SHA-256 digest"));
                    }
                    if !ev.data_matches_digest() {
                        return Err(format!("{at}: SHA-256 digest does not match the event data"));
                    }
                    let var = UefiVariable::parse(&ev.data)
                        .ok_or_else(|| format!("{at}: malformed UEFI_VARIABLE_DATA"))?;
                    if var.guid == EFI_GLOBAL_VARIABLE && var.name == "SecureBoot" {
                        if secure_boot.is_some() {
                            return Err(format!("{at}: the SecureBoot variable is measured twice"));
                        }
                        secure_boot = Some(match var.data {
                            [] | [0] => false,
                            [1] => true,
                            other => {
                                return Err(format!(
                                    "{at}: the SecureBoot variable has unexpected value {}",
                                    preview(other)
                                ))
                            }
                        });
                    } else {
                        variables.push(var.name);
                    }
                }
                _ => return Err(format!("{at}: unexpected event type in PCR 7 before the separator")),
            }
        }
        let Some(enabled) = secure_boot else {
            return Err("SecureBoot variable not measured".to_string());
        };
        if !separator_seen {
            return Err("no EV_SEPARATOR in PCR 7".to_string());
        }
        Ok(enabled)
    }
}

/// What is wrong with a separator event: its digest must be the SHA-256 of its data and
/// the data must be `00000000` (or `ffffffff`, which signals a firmware error).
fn separator_problems(ev: &Event) -> Vec<String> {
    let mut out = Vec::new();
    match ev.sha256() {
        None => out.push("no SHA-256 digest".to_string()),
        Some(_) if !ev.data_matches_digest() => {
            out.push("SHA-256 digest does not match the event data".to_string())
        }
        Some(_) => {}
    }
    if ev.data != [0u8; 4] && ev.data != [0xffu8; 4] {
        out.push(format!(
            "separator data is {} (expected 00000000 or ffffffff)",
            preview(&ev.data)
        ));
    }
    out
}

/// Hex of at most 16 bytes of `data`, with the length when it is longer.
fn preview(data: &[u8]) -> String {
    match data.get(..16) {
        _ if data.is_empty() => "empty".to_string(),
        Some(head) if data.len() > 16 => format!("{}... ({} bytes)", hex::encode(head), data.len()),
        _ => hex::encode(data),
    }
}

/// SHA-256 of `data`.
fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Parses the Spec ID event; returns the declared `(algorithm id, digest size)` list.
fn parse_spec_id(r: &mut Reader<'_>) -> Result<Vec<(u16, u16)>, EventLogError> {
    let _pcr = r.u32("first event's PCR index")?;
    if r.u32("first event's type")? != EV_NO_ACTION {
        return Err(EventLogError::NotCryptoAgile);
    }
    let _sha1_digest = r.take(20, "first event's digest")?;
    let size = r.u32("Spec ID event size")?;
    if size > MAX_EVENT_SIZE {
        return Err(EventLogError::EventTooLarge { offset: 0, size });
    }
    let data_offset = r.offset();
    let data = r.take(usize::try_from(size).unwrap_or(usize::MAX), "Spec ID event")?;
    if !data.starts_with(SPEC_ID_SIGNATURE) {
        return Err(EventLogError::NotCryptoAgile);
    }
    let mut s = Reader::new(data, data_offset);
    s.take(SPEC_ID_SIGNATURE.len(), "Spec ID signature")?;
    let _platform_class = s.u32("platformClass")?;
    let _spec_version_minor = s.u8("specVersionMinor")?;
    let _spec_version_major = s.u8("specVersionMajor")?;
    let _spec_errata = s.u8("specErrata")?;
    let _uintn_size = s.u8("uintnSize")?;
    let count = s.u32("numberOfAlgorithms")?;
    if count == 0 {
        return Err(EventLogError::BadSpecId("it declares no algorithms"));
    }
    if count > MAX_DIGESTS {
        return Err(EventLogError::BadSpecId("it declares more than 8 algorithms"));
    }
    let mut algorithms: Vec<(u16, u16)> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let alg = s.u16("algorithmId")?;
        let size = s.u16("digestSize")?;
        let plausible = match known_digest_size(alg) {
            Some(known) => known == size,
            None => (1..=64).contains(&size),
        };
        if !plausible {
            return Err(EventLogError::BadDigestSize { alg, size });
        }
        if algorithms.iter().any(|(a, _)| *a == alg) {
            return Err(EventLogError::BadSpecId("it declares an algorithm twice"));
        }
        algorithms.push((alg, size));
    }
    let vendor_info_size = s.u8("vendorInfoSize")?;
    s.take(usize::from(vendor_info_size), "vendorInfo")?;
    Ok(algorithms)
}

/// The digest size of the algorithms the PC Client profile names.
fn known_digest_size(alg: u16) -> Option<u16> {
    match alg {
        ALG_SHA1 => Some(20),
        ALG_SHA256 => Some(32),
        ALG_SHA384 => Some(48),
        ALG_SHA512 => Some(64),
        ALG_SM3_256 => Some(32),
        _ => None,
    }
}

/// A `UEFI_VARIABLE_DATA` structure (the data of a configuration-variable event).
struct UefiVariable<'a> {
    /// The vendor GUID, in EFI byte layout.
    guid: [u8; 16],
    /// The variable name (UTF-16LE decoded, trailing NULs dropped).
    name: String,
    /// The variable's value.
    data: &'a [u8],
}

impl<'a> UefiVariable<'a> {
    /// Parses `UEFI_VARIABLE_DATA`; `None` when malformed. Bytes after `VariableData`
    /// are ignored (they are covered by the digest the caller checked).
    fn parse(bytes: &'a [u8]) -> Option<UefiVariable<'a>> {
        let mut r = Reader::new(bytes, 0);
        let guid = r.array::<16>("VariableName").ok()?;
        let name_units = r.u64("UnicodeNameLength").ok()?;
        let data_len = r.u64("VariableDataLength").ok()?;
        let name_bytes = usize::try_from(name_units).ok()?.checked_mul(2)?;
        let name = r.take(name_bytes, "UnicodeName").ok()?;
        let data = r.take(usize::try_from(data_len).ok()?, "VariableData").ok()?;
        let units: Vec<u16> = name
            .chunks_exact(2)
            .map(|pair| match pair {
                [lo, hi] => u16::from_le_bytes([*lo, *hi]),
                _ => 0,
            })
            .collect();
        let name = String::from_utf16(&units).ok()?;
        Some(UefiVariable { guid, name: name.trim_end_matches('\0').to_string(), data })
    }
}

/// A little-endian cursor over untrusted bytes; offsets in errors are relative to the log.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of `bytes` in the whole log, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Reader { bytes, pos: 0, base }
    }

    fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let truncated = EventLogError::Truncated { offset: self.offset(), what };
        let Some(end) = self.pos.checked_add(n) else {
            return Err(truncated);
        };
        let Some(slice) = self.bytes.get(self.pos..end) else {
            return Err(truncated);
        };
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], EventLogError> {
        let offset = self.offset();
        let slice = self.take(N, what)?;
        <[u8; N]>::try_from(slice).map_err(|_| EventLogError::Truncated { offset, what })
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, EventLogError> {
        let [b] = self.array::<1>(what)?;
        Ok(b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        Ok(u16::from_le_bytes(self.array::<2>(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        Ok(u32::from_le_bytes(self.array::<4>(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, EventLogError> {
        Ok(u64::from_le_bytes(self.array::<8>(what)?))
    }
}

/// Writers of valid crypto-agile logs, for tests and synthetic evidence.
#[doc(hidden)]
pub mod build {
    use super::{sha256, ALG_SHA256, EV_NO_ACTION, SPEC_ID_SIGNATURE, STARTUP_LOCALITY_SIGNATURE};

    /// Builds a crypto-agile event log, so tests can make logs without a TPM.
    #[derive(Clone, Debug)]
    pub struct LogBuilder {
        out: Vec<u8>,
    }

    impl Default for LogBuilder {
        fn default() -> Self {
            Self::new()
        }
    }

    impl LogBuilder {
        /// A log whose Spec ID event declares the SHA-256 bank only.
        pub fn new() -> Self {
            Self::with_algorithms(&[(ALG_SHA256, 32)])
        }

        /// A log whose Spec ID event declares these `(algorithm id, digest size)` banks.
        pub fn with_algorithms(algorithms: &[(u16, u16)]) -> Self {
            let mut spec = Vec::new();
            spec.extend_from_slice(SPEC_ID_SIGNATURE);
            spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
            spec.push(0); // specVersionMinor
            spec.push(2); // specVersionMajor
            spec.push(0); // specErrata
            spec.push(2); // uintnSize: UINT64
            spec.extend_from_slice(&len32(algorithms.len()).to_le_bytes());
            for (alg, size) in algorithms {
                spec.extend_from_slice(&alg.to_le_bytes());
                spec.extend_from_slice(&size.to_le_bytes());
            }
            spec.push(0); // vendorInfoSize
            let mut out = Vec::new();
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
            out.extend_from_slice(&[0u8; 20]);
            out.extend_from_slice(&len32(spec.len()).to_le_bytes());
            out.extend_from_slice(&spec);
            LogBuilder { out }
        }

        /// Appends an event whose SHA-256 digest is that of `data`.
        pub fn event(&mut self, pcr: u32, event_type: u32, data: &[u8]) -> &mut Self {
            let digest = sha256(data);
            self.event_with_digest(pcr, event_type, digest, data)
        }

        /// Appends an event with the given SHA-256 digest (which need not match `data`).
        pub fn event_with_digest(
            &mut self,
            pcr: u32,
            event_type: u32,
            sha256: [u8; 32],
            data: &[u8],
        ) -> &mut Self {
            self.event_with_digests(pcr, event_type, &[(ALG_SHA256, &sha256[..])], data)
        }

        /// Appends an event with exactly these `(algorithm id, digest)` pairs.
        pub fn event_with_digests(
            &mut self,
            pcr: u32,
            event_type: u32,
            digests: &[(u16, &[u8])],
            data: &[u8],
        ) -> &mut Self {
            self.out.extend_from_slice(&pcr.to_le_bytes());
            self.out.extend_from_slice(&event_type.to_le_bytes());
            self.out.extend_from_slice(&len32(digests.len()).to_le_bytes());
            for (alg, digest) in digests {
                self.out.extend_from_slice(&alg.to_le_bytes());
                self.out.extend_from_slice(digest);
            }
            self.out.extend_from_slice(&len32(data.len()).to_le_bytes());
            self.out.extend_from_slice(data);
            self
        }

        /// The log bytes so far.
        pub fn bytes(&self) -> Vec<u8> {
            self.out.clone()
        }
    }

    /// `UEFI_VARIABLE_DATA` for a configuration-variable event (`EV_EFI_VARIABLE_*`).
    pub fn uefi_variable_data(guid: [u8; 16], name: &str, data: &[u8]) -> Vec<u8> {
        let units: Vec<u16> = name.encode_utf16().collect();
        let mut out = Vec::new();
        out.extend_from_slice(&guid);
        out.extend_from_slice(&(units.len() as u64).to_le_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        for unit in units {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    /// The data of an `EV_NO_ACTION` `StartupLocality` event (logged in PCR 0).
    pub fn startup_locality_data(locality: u8) -> Vec<u8> {
        let mut out = STARTUP_LOCALITY_SIGNATURE.to_vec();
        out.push(locality);
        out
    }

    /// A length as the u32 the log format stores (saturating; builders make small logs).
    fn len32(n: usize) -> u32 {
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::build::startup_locality_data;
    use super::*;
    use sha2::{Digest, Sha256};

    fn ext(pcr: [u8; 32], data: &[u8]) -> [u8; 32] {
        let digest: [u8; 32] = Sha256::digest(data).into();
        let mut h = Sha256::new();
        h.update(pcr);
        h.update(digest);
        h.finalize().into()
    }

    fn var(guid: [u8; 16], name: &str, data: &[u8]) -> Vec<u8> {
        uefi_variable_data(guid, name, data)
    }

    /// The events of a typical boot: (pcr, type, data).
    fn typical(secure_boot: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut events = vec![
            (0, EV_S_CRTM_VERSION, b"1.0\0".to_vec()),
            (7, EV_EFI_VARIABLE_DRIVER_CONFIG, var(EFI_GLOBAL_VARIABLE, "SecureBoot", secure_boot)),
            (7, EV_EFI_VARIABLE_DRIVER_CONFIG, var(EFI_GLOBAL_VARIABLE, "PK", b"pk")),
            (7, EV_EFI_VARIABLE_DRIVER_CONFIG, var(EFI_GLOBAL_VARIABLE, "KEK", b"kek")),
            (7, EV_EFI_VARIABLE_DRIVER_CONFIG, var(EFI_IMAGE_SECURITY_DATABASE, "db", b"db")),
            (7, EV_EFI_VARIABLE_DRIVER_CONFIG, var(EFI_IMAGE_SECURITY_DATABASE, "dbx", b"dbx")),
            (1, 0x8000_0002, b"boot order".to_vec()),
        ];
        for pcr in 0..8 {
            events.push((pcr, EV_SEPARATOR, vec![0; 4]));
        }
        events.push((7, EV_EFI_VARIABLE_AUTHORITY, b"db cert".to_vec()));
        events.push((4, EV_EFI_BOOT_SERVICES_APPLICATION, b"shim".to_vec()));
        events.push((4, EV_EFI_BOOT_SERVICES_APPLICATION, b"grub".to_vec()));
        events
    }

    fn log_bytes(events: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = LogBuilder::new();
        for (pcr, event_type, data) in events {
            b.event(*pcr, *event_type, data);
        }
        b.bytes()
    }

    fn exercise(log: &EventLog) {
        let _ = log.replay_sha256();
        let _ = log.secure_boot();
        let _ = log.secure_boot_report();
        let _ = log.problems();
        for ev in &log.events {
            let _ = ev.type_name();
            let _ = ev.sha256();
        }
    }

    #[test]
    fn builder_log_parses_and_replays() {
        let events = typical(&[1]);
        let log = EventLog::parse(&log_bytes(&events)).unwrap();
        assert_eq!(log.algorithms, vec![(ALG_SHA256, 32)]);
        assert_eq!(log.events.len(), events.len());
        for (i, (ev, (pcr, event_type, data))) in log.events.iter().zip(&events).enumerate() {
            assert_eq!(ev.index, i + 1);
            assert_eq!(ev.pcr, *pcr);
            assert_eq!(ev.event_type, *event_type);
            assert_eq!(&ev.data, data);
            assert_eq!(ev.sha256().unwrap(), Sha256::digest(data).as_slice());
        }
        let mut expected = [[0u8; 32]; 24];
        for (pcr, _, data) in &events {
            expected[*pcr as usize] = ext(expected[*pcr as usize], data);
        }
        let replayed = log.replay_sha256().unwrap();
        assert_eq!(replayed, expected);
        assert_ne!(replayed[0], [0u8; 32]);
        assert_eq!(replayed[8], [0u8; 32]);
        assert!(log.problems().is_empty(), "{:?}", log.problems());
        assert_eq!(log.events[0].type_name(), "EV_S_CRTM_VERSION");
        assert_eq!(event_type_name(0x1234_5678), "EV_UNKNOWN");
    }

    #[test]
    fn empty_log_after_header_replays_to_zeros() {
        let log = EventLog::parse(&LogBuilder::new().bytes()).unwrap();
        assert!(log.events.is_empty());
        assert_eq!(log.replay_sha256().unwrap(), [[0u8; 32]; 24]);
        assert_eq!(
            log.secure_boot(),
            SecureBoot::Unverifiable { reason: "SecureBoot variable not measured".into() }
        );
    }

    #[test]
    fn startup_locality_sets_pcr0_start() {
        let bytes = LogBuilder::new()
            .event(0, EV_NO_ACTION, &startup_locality_data(3))
            .event(0, EV_S_CRTM_VERSION, b"1.0\0")
            .bytes();
        let log = EventLog::parse(&bytes).unwrap();
        let mut start = [0u8; 32];
        start[31] = 3;
        assert_eq!(log.replay_sha256().unwrap()[0], ext(start, b"1.0\0"));

        let only = LogBuilder::new().event(0, EV_NO_ACTION, &startup_locality_data(3)).bytes();
        assert_eq!(EventLog::parse(&only).unwrap().replay_sha256().unwrap()[0], start);

        // In another PCR it is just an EV_NO_ACTION event.
        let elsewhere = LogBuilder::new().event(1, EV_NO_ACTION, &startup_locality_data(3)).bytes();
        assert_eq!(EventLog::parse(&elsewhere).unwrap().replay_sha256().unwrap()[0], [0u8; 32]);

        let late = LogBuilder::new()
            .event(0, EV_S_CRTM_VERSION, b"1.0\0")
            .event(0, EV_NO_ACTION, &startup_locality_data(3))
            .bytes();
        assert!(matches!(
            EventLog::parse(&late).unwrap().replay_sha256(),
            Err(EventLogError::BadStartupLocality { index: 2, .. })
        ));

        let short = LogBuilder::new().event(0, EV_NO_ACTION, b"StartupLocality\0").bytes();
        assert!(matches!(
            EventLog::parse(&short).unwrap().replay_sha256(),
            Err(EventLogError::BadStartupLocality { index: 1, .. })
        ));
    }

    #[test]
    fn secure_boot_enabled_and_disabled() {
        let enabled = EventLog::parse(&log_bytes(&typical(&[1]))).unwrap();
        assert_eq!(enabled.secure_boot(), SecureBoot::Enabled);
        let report = enabled.secure_boot_report();
        assert_eq!(report.variables, vec!["PK", "KEK", "db", "dbx"]);
        assert_eq!(report.authority_events, 1);

        let disabled = EventLog::parse(&log_bytes(&typical(&[0]))).unwrap();
        assert_eq!(disabled.secure_boot(), SecureBoot::Disabled);
        let empty = EventLog::parse(&log_bytes(&typical(&[]))).unwrap();
        assert_eq!(empty.secure_boot(), SecureBoot::Disabled);

        let odd = EventLog::parse(&log_bytes(&typical(&[2]))).unwrap();
        assert!(matches!(odd.secure_boot(), SecureBoot::Unverifiable { .. }));
    }

    #[test]
    fn changed_driver_config_data_is_unverifiable() {
        let measured = var(EFI_GLOBAL_VARIABLE, "SecureBoot", &[0]);
        let claimed = var(EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]);
        let digest: [u8; 32] = Sha256::digest(measured.as_slice()).into();
        let mut b = LogBuilder::new();
        b.event(0, EV_S_CRTM_VERSION, b"1.0\0")
            .event_with_digest(7, EV_EFI_VARIABLE_DRIVER_CONFIG, digest, &claimed)
            .event(7, EV_SEPARATOR, &[0; 4]);
        let log = EventLog::parse(&b.bytes()).unwrap();
        match log.secure_boot() {
            SecureBoot::Unverifiable { reason } => assert!(reason.contains("event 2"), "{reason}"),
            other => panic!("expected Unverifiable, got {other:?}"),
        }
        // Replay still works: it only uses digests.
        assert!(log.replay_sha256().is_ok());
    }

    #[test]
    fn unexpected_pcr7_event_before_separator_is_unverifiable() {
        let mut events = typical(&[1]);
        events.insert(2, (7, EV_EFI_BOOT_SERVICES_APPLICATION, b"sneaky".to_vec()));
        let log = EventLog::parse(&log_bytes(&events)).unwrap();
        match log.secure_boot() {
            SecureBoot::Unverifiable { reason } => assert!(reason.contains("event 3"), "{reason}"),
            other => panic!("expected Unverifiable, got {other:?}"),
        }

        // EV_EFI_ACTION and EV_NO_ACTION are allowed there.
        let mut events = typical(&[1]);
        events.insert(1, (7, EV_EFI_ACTION, b"some action".to_vec()));
        events.insert(1, (7, EV_NO_ACTION, b"informational".to_vec()));
        let log = EventLog::parse(&log_bytes(&events)).unwrap();
        assert_eq!(log.secure_boot(), SecureBoot::Enabled);

        // Debug mode voids Secure Boot.
        let mut events = typical(&[1]);
        events.insert(1, (7, EV_EFI_ACTION, b"UEFI Debug Mode".to_vec()));
        let log = EventLog::parse(&log_bytes(&events)).unwrap();
        assert!(matches!(log.secure_boot(), SecureBoot::Unverifiable { .. }));

        // Anything but authority events after the separator.
        let mut events = typical(&[1]);
        events.push((7, EV_EFI_BOOT_SERVICES_APPLICATION, b"late".to_vec()));
        let log = EventLog::parse(&log_bytes(&events)).unwrap();
        assert!(matches!(log.secure_boot(), SecureBoot::Unverifiable { .. }));
    }

    #[test]
    fn separators_in_pcr7_must_be_exactly_one() {
        let mut events = typical(&[1]);
        events.push((7, EV_SEPARATOR, vec![0; 4]));
        let log = EventLog::parse(&log_bytes(&events)).unwrap();
        assert!(matches!(log.secure_boot(), SecureBoot::Unverifiable { .. }));

        let events: Vec<_> =
            typical(&[1]).into_iter().filter(|(pcr, t, _)| !(*pcr == 7 && *t == EV_SEPARATOR)).collect();
        let log = EventLog::parse(&log_bytes(&events)).unwrap();
        match log.secure_boot() {
            SecureBoot::Unverifiable { reason } => assert!(reason.contains("EV_SEPARATOR") || reason.contains("before the separator"), "{reason}"),
            other => panic!("expected Unverifiable, got {other:?}"),
        }
    }

    #[test]
    fn secure_boot_variable_not_measured() {
        let events: Vec<_> = typical(&[1])
            .into_iter()
            .filter(|(_, _, data)| *data != var(EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]))
            .collect();
        let log = EventLog::parse(&log_bytes(&events)).unwrap();
        assert_eq!(
            log.secure_boot(),
            SecureBoot::Unverifiable { reason: "SecureBoot variable not measured".into() }
        );
        // A SecureBoot variable under another vendor GUID does not count.
        let mut events = events;
        events.insert(1, (7, EV_EFI_VARIABLE_DRIVER_CONFIG, var([0x11; 16], "SecureBoot", &[1])));
        let log = EventLog::parse(&log_bytes(&events)).unwrap();
        assert_eq!(
            log.secure_boot(),
            SecureBoot::Unverifiable { reason: "SecureBoot variable not measured".into() }
        );
    }

    #[test]
    fn separator_problems_are_reported() {
        let mut b = LogBuilder::new();
        b.event_with_digest(0, EV_SEPARATOR, [0x11; 32], &[0; 4])
            .event(1, EV_SEPARATOR, &[1, 2, 3, 4])
            .event(2, EV_SEPARATOR, &[0xff; 4])
            .event_with_digest(9, EV_SEPARATOR, [0x11; 32], &[7]);
        let log = EventLog::parse(&b.bytes()).unwrap();
        let problems = log.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("event 1 (PCR 0, EV_SEPARATOR)"), "{problems:?}");
        assert!(problems[1].starts_with("event 2 (PCR 1, EV_SEPARATOR)"), "{problems:?}");
    }

    #[test]
    fn legacy_sha1_logs_are_rejected() {
        let mut legacy = Vec::new();
        legacy.extend_from_slice(&0u32.to_le_bytes());
        legacy.extend_from_slice(&EV_S_CRTM_VERSION.to_le_bytes());
        legacy.extend_from_slice(&[0xaa; 20]);
        legacy.extend_from_slice(&4u32.to_le_bytes());
        legacy.extend_from_slice(b"1.0\0");
        assert_eq!(EventLog::parse(&legacy), Err(EventLogError::NotCryptoAgile));

        // TCG 1.2 style Spec ID event ("Spec ID Event00").
        let mut spec00 = Vec::new();
        spec00.extend_from_slice(&0u32.to_le_bytes());
        spec00.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        spec00.extend_from_slice(&[0; 20]);
        let mut data = b"Spec ID Event00\0".to_vec();
        data.extend_from_slice(&[0; 12]);
        spec00.extend_from_slice(&(data.len() as u32).to_le_bytes());
        spec00.extend_from_slice(&data);
        assert_eq!(EventLog::parse(&spec00), Err(EventLogError::NotCryptoAgile));
    }

    #[test]
    fn banks_and_algorithms() {
        let sha1_only = LogBuilder::with_algorithms(&[(ALG_SHA1, 20)])
            .event_with_digests(0, EV_S_CRTM_VERSION, &[(ALG_SHA1, &[0u8; 20][..])], b"x")
            .bytes();
        let log = EventLog::parse(&sha1_only).unwrap();
        assert_eq!(log.replay_sha256(), Err(EventLogError::NoSha256Bank));

        let both = LogBuilder::with_algorithms(&[(ALG_SHA1, 20), (ALG_SHA256, 32)])
            .event_with_digests(0, EV_S_CRTM_VERSION, &[(ALG_SHA1, &[0u8; 20][..])], b"x")
            .bytes();
        let log = EventLog::parse(&both).unwrap();
        assert_eq!(log.replay_sha256(), Err(EventLogError::MissingSha256 { index: 1, pcr: 0 }));

        let unknown = LogBuilder::new()
            .event_with_digests(0, EV_S_CRTM_VERSION, &[(ALG_SHA384, &[0u8; 48][..])], b"x")
            .bytes();
        assert_eq!(
            EventLog::parse(&unknown),
            Err(EventLogError::UnknownAlgorithm { offset: 65, alg: ALG_SHA384 })
        );

        let duplicate = LogBuilder::new()
            .event_with_digests(
                0,
                EV_S_CRTM_VERSION,
                &[(ALG_SHA256, &[0u8; 32][..]), (ALG_SHA256, &[0u8; 32][..])],
                b"x",
            )
            .bytes();
        assert_eq!(
            EventLog::parse(&duplicate),
            Err(EventLogError::DuplicateDigest { offset: 65, alg: ALG_SHA256 })
        );

        let wrong_size = LogBuilder::with_algorithms(&[(ALG_SHA256, 20)]).bytes();
        assert_eq!(
            EventLog::parse(&wrong_size),
            Err(EventLogError::BadDigestSize { alg: ALG_SHA256, size: 20 })
        );

        let out_of_range = LogBuilder::new().event(24, EV_S_CRTM_VERSION, b"x").bytes();
        assert_eq!(
            EventLog::parse(&out_of_range).unwrap().replay_sha256(),
            Err(EventLogError::PcrOutOfRange { index: 1, pcr: 24 })
        );
    }

    #[test]
    fn caps_are_enforced() {
        let header = LogBuilder::new().bytes();
        assert_eq!(header.len(), 65);

        let mut digests = header.clone();
        digests.extend_from_slice(&0u32.to_le_bytes());
        digests.extend_from_slice(&EV_S_CRTM_VERSION.to_le_bytes());
        digests.extend_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            EventLog::parse(&digests),
            Err(EventLogError::TooManyDigests { offset: 65, count: 9 })
        );

        let mut large = header.clone();
        large.extend_from_slice(&0u32.to_le_bytes());
        large.extend_from_slice(&EV_S_CRTM_VERSION.to_le_bytes());
        large.extend_from_slice(&0u32.to_le_bytes());
        large.extend_from_slice(&(MAX_EVENT_SIZE + 1).to_le_bytes());
        assert_eq!(
            EventLog::parse(&large),
            Err(EventLogError::EventTooLarge { offset: 65, size: MAX_EVENT_SIZE + 1 })
        );

        let mut claims = header.clone();
        claims.extend_from_slice(&0u32.to_le_bytes());
        claims.extend_from_slice(&EV_S_CRTM_VERSION.to_le_bytes());
        claims.extend_from_slice(&0u32.to_le_bytes());
        claims.extend_from_slice(&MAX_EVENT_SIZE.to_le_bytes());
        assert!(matches!(EventLog::parse(&claims), Err(EventLogError::Truncated { offset: 81, .. })));

        let mut many = header.clone();
        for _ in 0..=MAX_EVENTS {
            many.extend_from_slice(&0u32.to_le_bytes());
            many.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
            many.extend_from_slice(&0u32.to_le_bytes());
            many.extend_from_slice(&0u32.to_le_bytes());
        }
        assert_eq!(EventLog::parse(&many), Err(EventLogError::TooManyEvents));
    }

    #[test]
    fn truncation_at_every_cut_point_never_panics() {
        let bytes = log_bytes(&typical(&[1]));
        for cut in 0..=bytes.len() {
            match EventLog::parse(&bytes[..cut]) {
                Ok(log) => {
                    assert!(cut >= 65);
                    exercise(&log);
                }
                Err(_) => assert!(cut < bytes.len()),
            }
        }
        assert!(EventLog::parse(&[]).is_err());
    }

    #[test]
    fn secure_boot_serializes_with_state_tag() {
        assert_eq!(serde_json::to_string(&SecureBoot::Enabled).unwrap(), r#"{"state":"enabled"}"#);
        let unverifiable = SecureBoot::Unverifiable { reason: "x".into() };
        let json = serde_json::to_string(&unverifiable).unwrap();
        assert_eq!(json, r#"{"state":"unverifiable","reason":"x"}"#);
        assert_eq!(serde_json::from_str::<SecureBoot>(&json).unwrap(), unverifiable);
        assert_eq!(
            serde_json::from_str::<SecureBoot>(r#"{"state":"disabled"}"#).unwrap(),
            SecureBoot::Disabled
        );
    }

    struct XorShift(u64);

    impl XorShift {
        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n.max(1) as u64) as usize
        }
    }

    /// (offset, width) of every length or count field of a builder log (SHA-256 only).
    fn length_fields(bytes: &[u8]) -> Vec<(usize, usize)> {
        // Spec ID event data size, numberOfAlgorithms, digestSize, vendorInfoSize.
        let mut fields = vec![(28, 4), (56, 4), (62, 2), (64, 1)];
        let mut o = 65;
        while o + 50 <= bytes.len() {
            fields.push((o + 8, 4)); // digest count
            fields.push((o + 12, 2)); // algorithm id
            fields.push((o + 46, 4)); // event size
            let size = u32::from_le_bytes(bytes[o + 46..o + 50].try_into().unwrap()) as usize;
            o += 50 + size;
        }
        fields
    }

    #[test]
    fn mutated_logs_never_panic() {
        let mut events = typical(&[1]);
        events.insert(0, (0, EV_NO_ACTION, startup_locality_data(0)));
        let valid = log_bytes(&events);
        let fields = length_fields(&valid);
        assert!(fields.len() > 40);
        let larges: [u64; 8] =
            [u64::MAX, 0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF, 0x0100_0001, 0x00FF_FFFF, 9, 0x1_0000_0000];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for _ in 0..5_000 {
            let mut m = valid.clone();
            let ops = 1 + rng.below(3);
            for _ in 0..ops {
                match rng.below(6) {
                    0 => {
                        let i = rng.below(m.len());
                        if let Some(b) = m.get_mut(i) {
                            *b ^= 1 + rng.below(255) as u8;
                        }
                    }
                    1 => {
                        let cut = rng.below(m.len() + 1);
                        m.truncate(cut);
                    }
                    2 | 3 => {
                        let (offset, width) = fields[rng.below(fields.len())];
                        let value = if rng.below(4) == 0 {
                            rng.next_u64()
                        } else {
                            larges[rng.below(larges.len())]
                        };
                        let bytes = value.to_le_bytes();
                        if let Some(slot) = m.get_mut(offset..offset + width) {
                            slot.copy_from_slice(&bytes[..width]);
                        }
                    }
                    4 => {
                        let offset = rng.below(m.len());
                        let bytes = larges[rng.below(larges.len())].to_le_bytes();
                        let width = 1 + rng.below(8);
                        if let Some(slot) = m.get_mut(offset..offset + width) {
                            slot.copy_from_slice(&bytes[..width]);
                        }
                    }
                    _ => {
                        let start = rng.below(m.len());
                        let end = (start + rng.below(64)).min(m.len());
                        m.drain(start..end);
                    }
                }
            }
            if let Ok(log) = EventLog::parse(&m) {
                parsed += 1;
                exercise(&log);
            }
        }
        // Some mutations (e.g. in digests or event data) leave the log parseable.
        assert!(parsed > 0);
    }

    #[test]
    fn hostile_uefi_variable_lengths_are_unverifiable() {
        let mut data = EFI_GLOBAL_VARIABLE.to_vec();
        data.extend_from_slice(&u64::MAX.to_le_bytes());
        data.extend_from_slice(&u64::MAX.to_le_bytes());
        data.extend_from_slice(&[0x53, 0]);
        let mut b = LogBuilder::new();
        b.event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, &data).event(7, EV_SEPARATOR, &[0; 4]);
        let log = EventLog::parse(&b.bytes()).unwrap();
        match log.secure_boot() {
            SecureBoot::Unverifiable { reason } => assert!(reason.contains("malformed"), "{reason}"),
            other => panic!("expected Unverifiable, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Arbitrary bytes: an error or a log, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(log) = EventLog::parse(&bytes) {
                let _ = log.replay_sha256();
                let _ = log.secure_boot();
                let _ = log.problems();
            }
        }

        /// A valid header followed by random events (random PCRs, types and data, some
        /// with digests that do not match their data): parses, and replay, Secure Boot
        /// and problems never panic.
        #[test]
        fn random_events_after_a_valid_header_never_panic(
            events in proptest::collection::vec((0u32..40, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()), 0..40),
            cut in any::<usize>(),
        ) {
            let mut b = LogBuilder::new();
            for (pcr, kind, data, honest) in &events {
                if *honest {
                    b.event(*pcr, *kind, data);
                } else {
                    b.event_with_digest(*pcr, *kind, [7u8; 32], data);
                }
            }
            let bytes = b.bytes();
            let log = EventLog::parse(&bytes);
            prop_assert!(log.is_ok());
            if let Ok(log) = log {
                let _ = log.replay_sha256();
                let _ = log.secure_boot();
                let _ = log.problems();
            }
            let _ = EventLog::parse(&bytes[..cut % (bytes.len() + 1)]);
        }
    }
}
