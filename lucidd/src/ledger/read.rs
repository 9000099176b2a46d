//! Reads: records, log queries, proofs, checkpoints and the export stream.
//!
//! All of these are blocking (redb read transactions); async callers run them on
//! `spawn_blocking`. Reads never wait for the writer: redb gives each a snapshot.

use lucid_common::api::{CheckpointInfo, CheckpointResponse, ConsistencyProof, InclusionProof, LogQuery};
use lucid_common::checkpoint::Checkpoint;
use lucid_common::export::{batch_payload, pruned_payload, tag, write_frame, ExportEnd, ExportStart};
use lucid_common::hex;
use lucid_common::merkle::{consistency_proof, inclusion_proof};
use lucid_common::record::{Kind, Record, Severity};
use redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use super::store::{self, StoreError, StoredTree};
use super::{Ledger, LedgerError};

/// Leaf hashes per `PRUNED` frame.
const PRUNED_FRAME_LEAVES: u64 = 4096;

impl Ledger {
    fn read_txn(&self) -> Result<ReadTransaction, LedgerError> {
        Ok(self.reader()?.begin_read().map_err(StoreError::from)?)
    }

    /// Records with `from <= seq < to` whose bodies are still stored, in order.
    pub fn records(&self, from: u64, to: u64) -> Result<Vec<Record>, LedgerError> {
        let txn = self.read_txn()?;
        let mut out = Vec::new();
        let start = store::batch_containing(&txn, from)?.map(|(first, _)| first).unwrap_or(from);
        let batches = txn.open_table(store::BATCHES).map_err(StoreError::from)?;
        let bodies = txn.open_table(store::BODIES).map_err(StoreError::from)?;
        for item in batches.range(start..to).map_err(StoreError::from)? {
            let (k, v) = item.map_err(StoreError::from)?;
            let batch = load_batch(&bodies, k.value(), v.value())?;
            for (i, bytes) in batch.records()?.into_iter().enumerate() {
                let seq = batch.first_seq + i as u64;
                if seq >= from && seq < to {
                    out.push(decode(seq, bytes)?);
                }
            }
        }
        Ok(out)
    }

    /// One record, if its body is still stored.
    pub fn record(&self, seq: u64) -> Result<Option<Record>, LedgerError> {
        Ok(self.records(seq, seq + 1)?.pop())
    }

    /// Records matching a log query, oldest first, starting at `from_seq`; at most
    /// `limit` of the newest matches when a limit is given.
    pub fn query(&self, q: &LogQuery, from_seq: u64) -> Result<Vec<Record>, LedgerError> {
        if let (Some(limit), None, 0) = (q.limit, q.since_ns, from_seq) {
            return self.query_tail(q, limit);
        }
        let mut out = Vec::new();
        self.visit(q, from_seq, |r| out.push(r))?;
        if let Some(limit) = q.limit {
            let excess = out.len().saturating_sub(limit as usize);
            out.drain(..excess);
        }
        Ok(out)
    }

    /// Hands each record matching `q` (its `limit` aside) from `from_seq` on to `f`,
    /// oldest first, without holding them all: a passport folds an hour of records,
    /// which on a busy gateway is millions.
    pub fn visit(&self, q: &LogQuery, from_seq: u64, mut f: impl FnMut(Record)) -> Result<(), LedgerError> {
        let txn = self.read_txn()?;
        let batches = txn.open_table(store::BATCHES).map_err(StoreError::from)?;
        let bodies = txn.open_table(store::BODIES).map_err(StoreError::from)?;
        let start = store::batch_containing(&txn, from_seq)?.map(|(first, _)| first).unwrap_or(from_seq);
        for item in batches.range(start..).map_err(StoreError::from)? {
            let (k, v) = item.map_err(StoreError::from)?;
            let header = store::batch_header(k.value(), v.value())?;
            if q.since_ns.is_some_and(|s| header.max_time < s) {
                continue;
            }
            if q.until_ns.is_some_and(|u| header.min_time >= u) {
                break;
            }
            let batch = store::decode_batch(k.value(), header, &store::read_body(&bodies, k.value())?)?;
            for (i, bytes) in batch.records()?.into_iter().enumerate() {
                let seq = batch.first_seq + i as u64;
                if seq < from_seq {
                    continue;
                }
                let rec = decode(seq, bytes)?;
                if matches(q, &rec) {
                    f(rec);
                }
            }
        }
        Ok(())
    }

    /// The newest record for which `keep` holds, read from the end backwards (the
    /// latest anchor, passport or launch measurement without reading the whole ledger).
    pub fn last_matching(&self, keep: impl Fn(&Record) -> bool) -> Result<Option<Record>, LedgerError> {
        let mut found = None;
        self.scan_back(|r| {
            if keep(r) {
                found = Some(r.clone());
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }

    /// Visits stored records newest first while `visit` returns true.
    pub fn scan_back(&self, mut visit: impl FnMut(&Record) -> bool) -> Result<(), LedgerError> {
        let txn = self.read_txn()?;
        let batches = txn.open_table(store::BATCHES).map_err(StoreError::from)?;
        let bodies = txn.open_table(store::BODIES).map_err(StoreError::from)?;
        for item in batches.iter().map_err(StoreError::from)?.rev() {
            let (k, v) = item.map_err(StoreError::from)?;
            let header = store::batch_header(k.value(), v.value())?;
            let batch = store::decode_batch(k.value(), header, &store::read_body(&bodies, k.value())?)?;
            for (i, bytes) in batch.records()?.into_iter().enumerate().rev() {
                if !visit(&decode(batch.first_seq + i as u64, bytes)?) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The newest `limit` matches, read from the end backwards, so `lucidctl logs` on a
    /// large ledger does not decompress all of it.
    fn query_tail(&self, q: &LogQuery, limit: u64) -> Result<Vec<Record>, LedgerError> {
        let txn = self.read_txn()?;
        let batches = txn.open_table(store::BATCHES).map_err(StoreError::from)?;
        let bodies = txn.open_table(store::BODIES).map_err(StoreError::from)?;
        let mut out = Vec::new();
        for item in batches.iter().map_err(StoreError::from)?.rev() {
            if out.len() as u64 >= limit {
                break;
            }
            let (k, v) = item.map_err(StoreError::from)?;
            let header = store::batch_header(k.value(), v.value())?;
            if q.until_ns.is_some_and(|u| header.min_time >= u) {
                continue;
            }
            let batch = store::decode_batch(k.value(), header, &store::read_body(&bodies, k.value())?)?;
            for (i, bytes) in batch.records()?.into_iter().enumerate().rev() {
                let rec = decode(batch.first_seq + i as u64, bytes)?;
                if matches(q, &rec) {
                    out.push(rec);
                    if out.len() as u64 >= limit {
                        break;
                    }
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The latest signed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointResponse>, LedgerError> {
        let txn = self.read_txn()?;
        let Some((_, note)) = store::latest_checkpoint(&txn)? else { return Ok(None) };
        Ok(Some(self.checkpoint_response(note)?))
    }

    fn checkpoint_response(&self, note: String) -> Result<CheckpointResponse, LedgerError> {
        let cp = Checkpoint::verify(&note, &self.key)
            .map_err(|e| StoreError::Corrupt(format!("stored checkpoint does not verify: {e}")))?;
        Ok(CheckpointResponse {
            note,
            info: CheckpointInfo { size: cp.size, root: hex::encode(&cp.root), time_ns: cp.time_ns },
            verifier_key: self.key.to_string(),
        })
    }

    /// Signed checkpoints with size >= `from_size`, oldest first, at most `limit`.
    pub fn checkpoints(&self, from_size: u64, limit: usize) -> Result<Vec<CheckpointResponse>, LedgerError> {
        let txn = self.read_txn()?;
        let t = txn.open_table(store::CHECKPOINTS).map_err(StoreError::from)?;
        let mut notes = Vec::new();
        for item in t.range(from_size..).map_err(StoreError::from)?.take(limit) {
            notes.push(item.map_err(StoreError::from)?.1.value().to_string());
        }
        notes.into_iter().map(|n| self.checkpoint_response(n)).collect()
    }

    /// Inclusion proof of record `seq` against the latest checkpoint. Fails with
    /// `NotFound` if no checkpoint covers it yet (sign one with [`Ledger::checkpoint`]).
    pub fn prove(&self, seq: u64) -> Result<InclusionProof, LedgerError> {
        let txn = self.read_txn()?;
        let (size, note) = store::latest_checkpoint(&txn)?
            .filter(|(size, _)| seq < *size)
            .ok_or_else(|| LedgerError::NotFound(format!("record {seq} is not covered by a checkpoint yet")))?;
        let tree = StoredTree { txn: &txn };
        let proof = inclusion_proof(&tree, seq, size)?;
        let leaf = store::read_leaves(&txn, seq, seq + 1)?.pop().ok_or_else(|| StoreError::Corrupt(format!("leaf {seq}")))?;
        drop(txn);
        let record = self.record(seq)?.map(|r| serde_json::to_value(r).unwrap_or_default());
        Ok(InclusionProof {
            seq,
            leaf_hash: hex::encode(&leaf),
            record,
            tree_size: size,
            proof: proof.iter().map(|h| hex::encode(h)).collect(),
            checkpoint: note,
            verifier_key: self.key.to_string(),
        })
    }

    /// Consistency proof between two checkpointed tree sizes.
    pub fn consistency(&self, old: u64, new: u64) -> Result<ConsistencyProof, LedgerError> {
        let txn = self.read_txn()?;
        let missing = |size| LedgerError::NotFound(format!("no checkpoint at tree size {size}"));
        let old_note = store::checkpoint_at(&txn, old)?.ok_or_else(|| missing(old))?;
        let new_note = store::checkpoint_at(&txn, new)?.ok_or_else(|| missing(new))?;
        if old > new {
            return Err(LedgerError::NotFound(format!("old size {old} is larger than new size {new}")));
        }
        let proof = consistency_proof(&StoredTree { txn: &txn }, old, new)?;
        Ok(ConsistencyProof {
            old_size: old,
            new_size: new,
            proof: proof.iter().map(|h| hex::encode(h)).collect(),
            old_checkpoint: old_note,
            new_checkpoint: new_note,
        })
    }

    /// Bytes on disk: the database file and the write-ahead log beside it.
    pub fn db_bytes(&self) -> u64 {
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        size(&self.opts.path) + size(&self.opts.path.with_extension("wal"))
    }

    /// Bytes of stored batch values and their count (the data inside the file).
    pub fn stored_batch_bytes(&self) -> Result<(u64, u64), LedgerError> {
        let txn = self.read_txn()?;
        let t = txn.open_table(store::BODIES).map_err(StoreError::from)?;
        let (mut bytes, mut count) = (0, 0);
        for item in t.iter().map_err(StoreError::from)? {
            let (_, v) = item.map_err(StoreError::from)?;
            bytes += v.value().len() as u64;
            count += 1;
        }
        Ok((bytes, count))
    }

    /// One past the last pruned record (0 when nothing was pruned).
    pub fn pruned_to(&self) -> Result<u64, LedgerError> {
        Ok(store::pruned_to(&self.read_txn()?)?)
    }

    /// Streams the ledger from `from` as export frames (see
    /// [`lucid_common::export`]), calling `sink` with chunks of bytes; stops early
    /// when `sink` returns false. Starts at the batch or pruned range holding `from`.
    pub fn export(&self, from: u64, mut sink: impl FnMut(Vec<u8>) -> bool) -> Result<(), LedgerError> {
        let txn = self.read_txn()?;
        let next_seq = store::head_size(&txn)?;
        let latest_checkpoint = store::latest_checkpoint(&txn)?.map(|(s, _)| s).unwrap_or(0);
        let pruned: Vec<(u64, u64)> = {
            let t = txn.open_table(store::PRUNED).map_err(StoreError::from)?;
            let mut v = Vec::new();
            for item in t.iter().map_err(StoreError::from)? {
                let (a, b) = item.map_err(StoreError::from)?;
                v.push((a.value(), b.value()));
            }
            v
        };
        let from = from.min(next_seq);
        let start = match pruned.iter().find(|(a, b)| *a <= from && from < *b) {
            Some((a, _)) => *a,
            None => store::batch_containing(&txn, from)?.map(|(first, _)| first).unwrap_or(from),
        };
        let frontier = store::frontier_at(&txn, start)?;
        let mut out = Vec::with_capacity(1 << 20);
        let start_frame = ExportStart {
            origin: self.key.name.clone(),
            verifier_key: self.key.to_string(),
            from: start,
            frontier: frontier.nodes().iter().map(|h| hex::encode(h)).collect(),
        };
        write_frame(&mut out, tag::START, &serde_json::to_vec(&start_frame).unwrap_or_default());

        let batches = txn.open_table(store::BATCHES).map_err(StoreError::from)?;
        let bodies = txn.open_table(store::BODIES).map_err(StoreError::from)?;
        let checkpoints = txn.open_table(store::CHECKPOINTS).map_err(StoreError::from)?;
        let mut cps = checkpoints.range(start + 1..).map_err(StoreError::from)?.peekable();
        let mut cursor = start;
        // The cursor only moves forward, so one pass over the sorted ranges suffices.
        let mut ranges = pruned.iter().peekable();
        loop {
            while ranges.next_if(|(_, b)| *b <= cursor).is_some() {}
            if let Some(&&(a, b)) = ranges.peek().filter(|(a, _)| *a <= cursor) {
                let mut seq = cursor;
                while seq < b {
                    let end = (seq + PRUNED_FRAME_LEAVES).min(b);
                    let leaves = store::read_leaves(&txn, seq, end)?;
                    write_frame(&mut out, tag::PRUNED, &pruned_payload((a, b), seq, &leaves));
                    seq = end;
                }
                cursor = b;
            } else {
                // The batch at the cursor, or (if storage lost it) the next one, so
                // the verifier sees the gap.
                let Some(item) = batches.range(cursor..).map_err(StoreError::from)?.next() else { break };
                let (k, v) = item.map_err(StoreError::from)?;
                let first = k.value();
                let header = store::batch_header(first, v.value())?;
                let body = store::read_body(&bodies, first)?;
                let (hashes, compressed) = store::split_body(first, &header, &body)?;
                let end = first + u64::from(header.count);
                write_frame(&mut out, tag::BATCH, &batch_payload(first, hashes, compressed));
                cursor = end;
            }
            while let Some(Ok((size, _))) = cps.peek() {
                if size.value() > cursor {
                    break;
                }
                if let Some(Ok((_, note))) = cps.next() {
                    write_frame(&mut out, tag::CHECKPOINT, note.value().as_bytes());
                }
            }
            if out.len() >= 1 << 20 && !sink(std::mem::replace(&mut out, Vec::with_capacity(1 << 20))) {
                return Ok(());
            }
        }
        let end = ExportEnd { next_seq, latest_checkpoint };
        write_frame(&mut out, tag::END, &serde_json::to_vec(&end).unwrap_or_default());
        sink(out);
        Ok(())
    }
}

fn load_batch(
    bodies: &impl ReadableTable<(u64, u32), &'static [u8]>,
    first: u64,
    index: &[u8],
) -> Result<store::Batch, StoreError> {
    let header = store::batch_header(first, index)?;
    store::decode_batch(first, header, &store::read_body(bodies, first)?)
}

fn decode(seq: u64, bytes: &[u8]) -> Result<Record, LedgerError> {
    Record::decode(bytes).map_err(|e| LedgerError::Store(StoreError::Corrupt(format!("record {seq}: {e}"))))
}

/// Whether a record matches a log query's filters (not its time window's batch skip).
pub fn matches(q: &LogQuery, r: &Record) -> bool {
    if q.since_ns.is_some_and(|s| r.time_ns < s) || q.until_ns.is_some_and(|u| r.time_ns >= u) {
        return false;
    }
    if q.kind.is_some_and(|k| r.kind != k) {
        return false;
    }
    if let Some(controls) = &q.control {
        // Split lazily: this runs for every record a query scans.
        let mut wanted = controls.split(',').map(str::trim).filter(|c| !c.is_empty()).peekable();
        if wanted.peek().is_some() && !wanted.any(|w| r.controls.iter().any(|c| w.eq_ignore_ascii_case(c))) {
            return false;
        }
    }
    if q.anomalies && r.kind != Kind::Anomaly && r.severity < Severity::Warning {
        return false;
    }
    if let Some(agent) = &q.agent {
        let about = r.body.pointer("/request/agent").or_else(|| r.body.get("agent")).and_then(|a| a.as_str());
        if about != Some(agent.as_str()) {
            return false;
        }
    }
    true
}
