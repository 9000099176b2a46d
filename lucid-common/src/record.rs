//! The ledger record: one decision or observation, as it is hashed into the tree.
//!
//! A record is stored and hashed as its canonical JSON encoding ([`Record::encode`]):
//! the fields in declaration order, `seq` first, objects with sorted keys. The leaf
//! hash covers the stored bytes exactly, so a verifier never has to re-encode.

use serde::{Deserialize, Serialize};

/// What a record is about. The set is closed: sinks and reports switch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An audit-chain decision on a prompt or a response.
    Decision,
    /// A model-file or binary integrity observation and its verdict.
    Integrity,
    /// A serving-process observation (exec, attribution).
    Process,
    /// A configuration load, apply or reload, with digests and diff.
    Config,
    /// Something unusual that an operator should look at.
    Anomaly,
    /// TPM attestation or passport issuance.
    Attestation,
    /// An operator's note, for example a change ticket.
    Note,
    /// Daemon lifecycle and ledger housekeeping (start, stop, prune, failures).
    System,
}

impl Kind {
    /// Every kind, in a stable order (for catalogs, help texts and tests).
    pub const ALL: [Kind; 8] = [
        Kind::Decision,
        Kind::Integrity,
        Kind::Process,
        Kind::Config,
        Kind::Anomaly,
        Kind::Attestation,
        Kind::Note,
        Kind::System,
    ];

    /// The lower-case name used in JSON, on the command line and in journald.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Decision => "decision",
            Kind::Integrity => "integrity",
            Kind::Process => "process",
            Kind::Config => "config",
            Kind::Anomaly => "anomaly",
            Kind::Attestation => "attestation",
            Kind::Note => "note",
            Kind::System => "system",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent a record is; maps onto syslog priorities for journald and SIEMs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Routine evidence.
    #[default]
    Info,
    /// Normal but significant (a config change, a redaction).
    Notice,
    /// Needs a look (a blocked request, an anomaly).
    Warning,
    /// A control failed or could not run.
    Error,
    /// Evidence itself is at risk (ledger cannot write, integrity broken).
    Critical,
}

impl Severity {
    /// The syslog priority (RFC 5424 numeric severity).
    pub fn syslog_priority(self) -> u8 {
        match self {
            Severity::Info => 6,
            Severity::Notice => 5,
            Severity::Warning => 4,
            Severity::Error => 3,
            Severity::Critical => 2,
        }
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// What a source hands to the ledger: a record before it has a place in the tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// What the record is about.
    pub kind: Kind,
    /// Which part of lucidd (or which client) produced it, e.g. `gateway`, `lucidctl`.
    pub source: String,
    /// SOC 2 controls this record evidences, e.g. `CC8.1`.
    pub controls: Vec<String>,
    /// How urgent it is.
    pub severity: Severity,
    /// A short subject: what was acted on or observed.
    pub subject: String,
    /// Kind-specific details. Never raw PII or secrets: types, offsets, keyed hashes.
    pub body: serde_json::Value,
}

impl Entry {
    /// Encodes the entry ahead of its placement: the canonical record encoding minus
    /// its `{"seq":N,"time_ns":T,` head (see [`Record::encode_placed`]). Appenders do
    /// this on their own threads, so the single ledger writer only splices and hashes.
    pub fn encode_tail(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        if bytes.first() == Some(&b'{') {
            bytes.remove(0);
        }
        bytes
    }
}

/// A record as stored in the ledger and hashed into the Merkle tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the ledger, from 0, without gaps; equal to the leaf index.
    pub seq: u64,
    /// Ledger time in nanoseconds since the Unix epoch; never decreases along `seq`.
    pub time_ns: u64,
    /// What the record is about.
    pub kind: Kind,
    /// Which part of lucidd (or which client) produced it.
    pub source: String,
    /// SOC 2 controls this record evidences.
    pub controls: Vec<String>,
    /// How urgent it is.
    pub severity: Severity,
    /// A short subject.
    pub subject: String,
    /// Kind-specific details.
    pub body: serde_json::Value,
}

impl Record {
    /// Places an entry at `seq` and `time_ns`.
    pub fn from_entry(seq: u64, time_ns: u64, entry: Entry) -> Record {
        Record {
            seq,
            time_ns,
            kind: entry.kind,
            source: entry.source,
            controls: entry.controls,
            severity: entry.severity,
            subject: entry.subject,
            body: entry.body,
        }
    }

    /// The canonical encoding: the bytes that are stored and hashed.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain structs, strings and a `Value` to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The canonical encoding of the record at `seq` and `time_ns` whose entry was
    /// encoded with [`Entry::encode_tail`]; byte-for-byte what [`Record::encode`] gives.
    pub fn encode_placed(seq: u64, time_ns: u64, tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + tail.len());
        out.extend_from_slice(format!("{{\"seq\":{seq},\"time_ns\":{time_ns},").as_bytes());
        out.extend_from_slice(tail);
        out
    }

    /// Decodes stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Reads `seq` from the start of a canonical encoding without parsing the rest.
///
/// The verifier uses this to check order at a million records a second; a record
/// whose bytes do not start with `{"seq":<digits>,` is reported as bad.
pub fn peek_seq(bytes: &[u8]) -> Option<u64> {
    number_after(bytes, b"{\"seq\":").map(|(seq, _)| seq)
}

/// Reads `seq` and `time_ns` from the start of a canonical encoding, and returns the
/// bytes after them (which begin `,"kind":` ...), without parsing the rest.
pub fn peek_head(bytes: &[u8]) -> Option<(u64, u64, &[u8])> {
    let (seq, rest) = number_after(bytes, b"{\"seq\":")?;
    let (time_ns, rest) = number_after(rest, b",\"time_ns\":")?;
    Some((seq, time_ns, rest))
}

/// The decimal number right after `prefix`, which must be followed by a comma; and the
/// bytes from that comma on.
fn number_after<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<(u64, &'a [u8])> {
    let rest = bytes.strip_prefix(prefix)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || rest.get(digits) != Some(&b',') {
        return None;
    }
    let n = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((n, &rest[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Record {
        Record::from_entry(
            seq,
            1_700_000_000_000_000_000,
            Entry {
                kind: Kind::Note,
                source: "test".into(),
                controls: vec!["CC8.1".into()],
                severity: Severity::Notice,
                subject: "change ticket".into(),
                body: serde_json::json!({"z": 1, "a": "x"}),
            },
        )
    }

    #[test]
    fn encoding_starts_with_seq_and_sorts_body_keys() {
        let bytes = sample(42).encode();
        let text = String::from_utf8(bytes.clone()).unwrap_or_default();
        assert!(text.starts_with("{\"seq\":42,\"time_ns\":"), "{text}");
        assert!(text.contains("\"body\":{\"a\":\"x\",\"z\":1}"), "{text}");
        assert_eq!(peek_seq(&bytes), Some(42));
        assert_eq!(Record::decode(&bytes).ok(), Some(sample(42)));
    }

    #[test]
    fn placed_encoding_equals_full_encoding() {
        let rec = sample(7);
        let entry = Entry {
            kind: rec.kind,
            source: rec.source.clone(),
            controls: rec.controls.clone(),
            severity: rec.severity,
            subject: rec.subject.clone(),
            body: rec.body.clone(),
        };
        assert_eq!(Record::encode_placed(7, rec.time_ns, &entry.encode_tail()), rec.encode());
    }

    #[test]
    fn peek_seq_rejects_anything_else() {
        assert_eq!(peek_seq(b"{\"seq\":,"), None);
        assert_eq!(peek_seq(b"{\"seq\":12"), None);
        assert_eq!(peek_seq(b"{\"time_ns\":1,\"seq\":1,"), None);
        assert_eq!(peek_seq(b"{\"seq\":99999999999999999999999,"), None);
        let (seq, time, rest) = peek_head(b"{\"seq\":18446744073709551615,\"time_ns\":17,\"kind\":\"system\"}").unwrap();
        assert_eq!((seq, time, rest), (u64::MAX, 17, &b",\"kind\":\"system\"}"[..]));
        assert_eq!(peek_head(b"{\"seq\":1,\"kind\":\"x\"}"), None);
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("nope"), None);
    }
}
