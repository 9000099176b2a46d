//! The ledger export stream and the streaming verifier that checks it.
//!
//! `lucidd` serves its ledger as a sequence of frames (`tag u8`, `len u32 LE`,
//! payload), in sequence order, straight from storage: record batches stay
//! zstd-compressed and carry the leaf hashes stored beside them. `lucidctl ledger
//! verify` feeds the frames to a [`Verifier`], which recomputes every leaf hash and the
//! tree root at every checkpoint and checks each checkpoint's signature itself, so the
//! verdict does not rest on the daemon's word.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{verify_statement, Checkpoint, VerifierKey};
use crate::merkle::{leaf_hash, Frontier, Hash};
use crate::record::{peek_head, peek_seq, Record};

/// Domain string of signed prune statements.
pub const PRUNE_DOMAIN: &str = "lucid/ledger-prune/v1";
/// Subject of the system record written when record bodies are pruned.
pub const PRUNE_SUBJECT: &str = "ledger.prune";
/// How a prune record's subject appears in its canonical encoding.
const PRUNE_NEEDLE: &[u8] = b"\"subject\":\"ledger.prune\"";

/// Frame tags.
pub mod tag {
    /// JSON [`super::ExportStart`].
    pub const START: u8 = 1;
    /// `first_seq u64`, `count u32`, `count` leaf hashes, zstd payload of records.
    pub const BATCH: u8 = 2;
    /// `range_from u64`, `range_to u64`, `first_seq u64`, `count u32`, leaf hashes.
    pub const PRUNED: u8 = 3;
    /// A signed checkpoint note (UTF-8).
    pub const CHECKPOINT: u8 = 4;
    /// JSON [`super::ExportEnd`].
    pub const END: u8 = 5;
    /// The daemon failed while streaming (UTF-8 message).
    pub const ERROR: u8 = 6;
}

/// First frame: where the stream starts and the tree state before it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportStart {
    /// The ledger origin (checkpoint key name).
    pub origin: String,
    /// The host's verifier key as the daemon reports it.
    pub verifier_key: String,
    /// First sequence number in the stream.
    pub from: u64,
    /// Frontier of the tree of `from` leaves, hex hashes, largest subtree first.
    pub frontier: Vec<String>,
}

/// Last frame: the ledger's head as the daemon's metadata records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportEnd {
    /// The next sequence number the ledger would assign.
    pub next_seq: u64,
    /// Size of the latest signed checkpoint.
    pub latest_checkpoint: u64,
}

/// Appends one frame to `out`.
pub fn write_frame(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Builds a `BATCH` frame payload from raw leaf-hash bytes (32 per record).
pub fn batch_payload(first_seq: u64, leaf_bytes: &[u8], compressed: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + leaf_bytes.len() + compressed.len());
    p.extend_from_slice(&first_seq.to_le_bytes());
    p.extend_from_slice(&((leaf_bytes.len() / 32) as u32).to_le_bytes());
    p.extend_from_slice(leaf_bytes);
    p.extend_from_slice(compressed);
    p
}

/// Builds a `PRUNED` frame payload.
pub fn pruned_payload(range: (u64, u64), first_seq: u64, leaves: &[Hash]) -> Vec<u8> {
    let mut p = Vec::with_capacity(28 + leaves.len() * 32);
    p.extend_from_slice(&range.0.to_le_bytes());
    p.extend_from_slice(&range.1.to_le_bytes());
    p.extend_from_slice(&first_seq.to_le_bytes());
    p.extend_from_slice(&(leaves.len() as u32).to_le_bytes());
    for l in leaves {
        p.extend_from_slice(l);
    }
    p
}

/// Packs record encodings into the uncompressed batch layout (`len u32 LE`, bytes).
pub fn pack_records<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// Splits the uncompressed batch layout back into record encodings.
pub fn unpack_records(mut data: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = data.get(..4).ok_or("truncated length")?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let rec = data.get(4..4 + len).ok_or("truncated record")?;
        out.push(rec);
        data = &data[4 + len..];
    }
    Ok(out)
}

/// Reads frames from a byte buffer that may end mid-frame.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameReader {
    /// Adds received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let head = self.buf.get(self.pos..self.pos + 5)?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let tag = head[0];
        let payload = self.buf.get(self.pos + 5..self.pos + 5 + len)?.to_vec();
        self.pos += 5 + len;
        if self.pos > (1 << 20) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Some((tag, payload))
    }
}

/// The first record that failed verification, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyFailure {
    /// First bad sequence number.
    pub seq: u64,
    /// What was wrong.
    pub reason: String,
}

/// A range of records whose bodies were removed under retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedRange {
    /// First pruned sequence number.
    pub from: u64,
    /// One past the last pruned sequence number.
    pub to: u64,
    /// Sequence number of the signed prune record that accounts for it.
    pub prune_record: Option<u64>,
}

/// What a verification run established.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    /// `true` when every check passed.
    pub ok: bool,
    /// First sequence number verified.
    pub from: u64,
    /// Records whose bytes were hashed.
    pub records_checked: u64,
    /// Records present only as leaf hashes (pruned).
    pub pruned_leaves: u64,
    /// Checkpoint signatures and roots checked.
    pub checkpoints_checked: u64,
    /// Tree size reached.
    pub tree_size: u64,
    /// Root of the tree reached (hex).
    pub root: String,
    /// Size of the latest checkpoint checked.
    pub latest_checkpoint: u64,
    /// Records after the latest checkpoint: hashed, but not yet covered by a signature.
    pub unsigned_tail: u64,
    /// Pruned ranges and the prune records that account for them.
    pub pruned: Vec<PrunedRange>,
    /// The first failure, when `ok` is false.
    pub failure: Option<VerifyFailure>,
}

struct PruneClaim {
    seq: u64,
    from: u64,
    to: u64,
    range_root: String,
    signature: String,
}

/// Recomputes the ledger's Merkle tree from an export stream and checks it.
pub struct Verifier {
    key: VerifierKey,
    frontier: Frontier,
    report: VerifyReport,
    last_good_checkpoint: u64,
    current_prune: Option<(u64, u64, Frontier)>,
    pruned_roots: Vec<(u64, u64, Hash)>,
    claims: Vec<PruneClaim>,
    ended: bool,
}

impl Verifier {
    /// A verifier that trusts checkpoints signed by `key` only.
    pub fn new(key: VerifierKey) -> Verifier {
        Verifier {
            key,
            frontier: Frontier::default(),
            report: VerifyReport::default(),
            last_good_checkpoint: 0,
            current_prune: None,
            pruned_roots: Vec::new(),
            claims: Vec::new(),
            ended: false,
        }
    }

    fn fail(&mut self, seq: u64, reason: String) -> VerifyFailure {
        let f = VerifyFailure { seq, reason };
        self.report.failure = Some(f.clone());
        f
    }

    /// Consumes one frame. The first failure is final: stop feeding after it.
    pub fn feed(&mut self, tag: u8, payload: &[u8]) -> Result<(), VerifyFailure> {
        if let Some(f) = &self.report.failure {
            return Err(f.clone());
        }
        let at = self.frontier.size();
        match tag {
            tag::START => self.start(payload),
            tag::BATCH => self.batch(payload),
            tag::PRUNED => self.pruned(payload),
            tag::CHECKPOINT => self.checkpoint(payload),
            tag::END => self.end(payload),
            tag::ERROR => Err(self.fail(at, format!("daemon error: {}", String::from_utf8_lossy(payload)))),
            other => Err(self.fail(at, format!("unknown frame tag {other}"))),
        }
    }

    fn start(&mut self, payload: &[u8]) -> Result<(), VerifyFailure> {
        let start: ExportStart =
            serde_json::from_slice(payload).map_err(|e| self.fail(0, format!("bad start frame: {e}")))?;
        let nodes = start
            .frontier
            .iter()
            .map(|h| crate::hex::decode32(h))
            .collect::<Option<Vec<_>>>()
            .and_then(|nodes| Frontier::from_parts(start.from, nodes));
        let Some(frontier) = nodes else {
            return Err(self.fail(start.from, "bad frontier in start frame".into()));
        };
        self.frontier = frontier;
        self.report.from = start.from;
        self.last_good_checkpoint = start.from;
        Ok(())
    }

    fn batch(&mut self, p: &[u8]) -> Result<(), VerifyFailure> {
        let at = self.frontier.size();
        let (first, count) = header(p).ok_or_else(|| self.fail(at, "truncated batch frame".into()))?;
        let hashes_end = 12 + count as usize * 32;
        let stored = p.get(12..hashes_end).ok_or_else(|| self.fail(at, "truncated batch hashes".into()))?;
        if first != at {
            let seq = first.min(at);
            return Err(self.fail(seq, format!("expected record {at}, stream continues at {first}: records missing or reordered")));
        }
        let data = zstd::decode_all(&p[hashes_end..]).map_err(|e| self.fail(at, format!("batch does not decompress: {e}")))?;
        let records = unpack_records(&data).map_err(|e| self.fail(at, format!("batch layout: {e}")))?;
        if records.len() != count as usize {
            let seq = at + records.len().min(count as usize) as u64;
            return Err(self.fail(seq, format!("batch holds {} records, its index says {count}", records.len())));
        }
        for (i, bytes) in records.iter().enumerate() {
            let expected = self.frontier.size();
            match peek_seq(bytes) {
                Some(seq) if seq == expected => {}
                Some(seq) => {
                    return Err(self.fail(expected, format!("record {expected} missing or out of order (found {seq})")))
                }
                None => return Err(self.fail(expected, format!("record {expected} is not a canonical record"))),
            }
            let leaf = leaf_hash(bytes);
            if stored[i * 32..i * 32 + 32] != leaf {
                return Err(self.fail(expected, format!("record {expected} was modified: its hash differs from the stored leaf")));
            }
            if is_system(bytes) && bytes.windows(PRUNE_NEEDLE.len()).any(|w| w == PRUNE_NEEDLE) {
                self.note_prune_claim(bytes);
            }
            self.frontier.push(leaf);
            self.report.records_checked += 1;
        }
        Ok(())
    }

    fn note_prune_claim(&mut self, bytes: &[u8]) {
        let Ok(rec) = Record::decode(bytes) else { return };
        let b = &rec.body;
        let (Some(from), Some(to), Some(root), Some(sig)) = (
            b["pruned_from"].as_u64(),
            b["pruned_to"].as_u64(),
            b["range_root"].as_str(),
            b["signature"].as_str(),
        ) else {
            return;
        };
        self.claims.push(PruneClaim { seq: rec.seq, from, to, range_root: root.into(), signature: sig.into() });
    }

    fn pruned(&mut self, p: &[u8]) -> Result<(), VerifyFailure> {
        let at = self.frontier.size();
        let parsed = (|| {
            let range_from = u64::from_le_bytes(p.get(0..8)?.try_into().ok()?);
            let range_to = u64::from_le_bytes(p.get(8..16)?.try_into().ok()?);
            let (first, count) = header(p.get(16..)?)?;
            let hashes = p.get(28..28 + count as usize * 32)?;
            Some((range_from, range_to, first, hashes))
        })();
        let Some((range_from, range_to, first, hashes)) = parsed else {
            return Err(self.fail(at, "truncated pruned frame".into()));
        };
        if first != at {
            return Err(self.fail(first.min(at), format!("expected leaf {at}, pruned range continues at {first}")));
        }
        let (_, _, range) = self.current_prune.get_or_insert_with(|| (range_from, range_to, Frontier::default()));
        for h in hashes.chunks_exact(32) {
            let mut leaf = [0u8; 32];
            leaf.copy_from_slice(h);
            range.push(leaf);
            self.frontier.push(leaf);
            self.report.pruned_leaves += 1;
        }
        if self.frontier.size() >= range_to {
            if let Some((from, to, range)) = self.current_prune.take() {
                self.pruned_roots.push((from, to, range.root()));
            }
        }
        Ok(())
    }

    fn checkpoint(&mut self, p: &[u8]) -> Result<(), VerifyFailure> {
        let at = self.frontier.size();
        let note = std::str::from_utf8(p).map_err(|_| self.fail(at, "checkpoint is not UTF-8".into()))?;
        let cp = Checkpoint::verify(note, &self.key).map_err(|e| {
            let seq = self.last_good_checkpoint;
            self.fail(seq, format!("checkpoint at size {at}: {e}"))
        })?;
        if cp.size != at {
            let seq = cp.size.min(at);
            return Err(self.fail(seq, format!("checkpoint for size {} arrived after {at} records", cp.size)));
        }
        if cp.root != self.frontier.root() {
            let seq = self.last_good_checkpoint;
            return Err(self.fail(seq, format!("recomputed root differs from the signed checkpoint at size {}", cp.size)));
        }
        self.last_good_checkpoint = cp.size;
        self.report.checkpoints_checked += 1;
        self.report.latest_checkpoint = cp.size;
        Ok(())
    }

    fn end(&mut self, p: &[u8]) -> Result<(), VerifyFailure> {
        let at = self.frontier.size();
        let end: ExportEnd = serde_json::from_slice(p).map_err(|e| self.fail(at, format!("bad end frame: {e}")))?;
        if end.next_seq > at || end.latest_checkpoint > at {
            return Err(self.fail(at, format!("ledger truncated: records {at}..{} are missing", end.next_seq.max(end.latest_checkpoint))));
        }
        if end.next_seq < at {
            return Err(self.fail(end.next_seq, format!("ledger head says {} records but {at} were streamed", end.next_seq)));
        }
        if end.latest_checkpoint > self.report.latest_checkpoint {
            return Err(self.fail(self.report.latest_checkpoint, format!("checkpoint at size {} is missing", end.latest_checkpoint)));
        }
        for (from, to, root) in std::mem::take(&mut self.pruned_roots) {
            let statement = prune_statement(&self.key.name, from, to, &crate::hex::encode(&root));
            let claim = self.claims.iter().find(|c| {
                c.from == from
                    && c.to == to
                    && c.range_root == crate::hex::encode(&root)
                    && verify_statement(&self.key.key, PRUNE_DOMAIN, &statement, &c.signature)
            });
            match claim {
                Some(c) => self.report.pruned.push(PrunedRange { from, to, prune_record: Some(c.seq) }),
                None => return Err(self.fail(from, format!("records {from}..{to} were removed without a signed prune record"))),
            }
        }
        self.ended = true;
        Ok(())
    }

    /// The report so far; call after the `END` frame (or a failure).
    pub fn finish(mut self) -> VerifyReport {
        if self.report.failure.is_none() && !self.ended {
            let at = self.frontier.size();
            self.fail(at, "stream ended before its end frame".into());
        }
        self.report.ok = self.report.failure.is_none();
        self.report.tree_size = self.frontier.size();
        self.report.root = crate::hex::encode(&self.frontier.root());
        self.report.unsigned_tail = self.report.tree_size.saturating_sub(self.report.latest_checkpoint);
        self.report
    }
}

/// Whether a canonical encoding is of a `system` record (checked near its start, where
/// `kind` follows `seq` and `time_ns`), so the verifier only searches those for prune
/// claims.
fn is_system(bytes: &[u8]) -> bool {
    peek_head(bytes).is_some_and(|(_, _, rest)| rest.starts_with(b",\"kind\":\"system\""))
}

fn header(p: &[u8]) -> Option<(u64, u32)> {
    let first = u64::from_le_bytes(p.get(0..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(p.get(8..12)?.try_into().ok()?);
    Some((first, count))
}

/// The statement a prune record signs: origin, range and the range's own tree hash.
pub fn prune_statement(origin: &str, from: u64, to: u64, range_root_hex: &str) -> String {
    format!("{origin}\n{from}\n{to}\n{range_root_hex}")
}
