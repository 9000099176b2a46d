//! The single writer thread: group commit, checkpoints, pruning, fail-closed recovery.
//!
//! Appenders send commands over a channel and wait on a oneshot. The thread takes
//! everything that is queued, writes it in one redb transaction as one segment
//! (records and their leaf hashes, plus any interior nodes they complete), commits with
//! `Durability::Immediate` (fsync), and only then answers every appender in the group.
//! So concurrent appenders share one fsync, and an acknowledged record is on disk.
//! Every `checkpoint_every` records (or `checkpoint_interval`) the segments since the
//! last checkpoint are merged into one well-compressed batch in the same transaction
//! that stores the signed checkpoint.
//!
//! When a commit fails (a full disk, an I/O error) nothing in the group is
//! acknowledged, the ledger turns `failed`, appends are refused at once (fail closed),
//! and every tick retries: reopen the database, probe a write, reload the head. On
//! success a `system` record states the failure window and how many appends were
//! refused, so the gap is itself evidenced.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use lucid_common::checkpoint::{sign_statement, Checkpoint};
use lucid_common::export::{prune_statement, PRUNE_DOMAIN, PRUNE_SUBJECT};
use lucid_common::hex;
use lucid_common::merkle::{leaf_hash, Frontier, Hash};
use lucid_common::record::{Entry, Kind, Record, Severity};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::store::{self, BatchHeader, HeadState, StoreError, CHUNK, CHUNK_BITS};
use super::wal::{Wal, WalGroup};
use super::{now_ns, Health, LedgerError, LedgerOptions, PruneOutcome, Receipt, Shared};

/// Work for the writer thread.
pub(crate) enum Command {
    /// An entry pre-encoded by [`Entry::encode_tail`] on the appender's thread.
    Append(Vec<u8>, ReplyTo),
    /// A merged batch from the compactor, replacing the segments it was made of.
    Replace(Compacted),
    Checkpoint(oneshot::Sender<Result<Option<u64>, LedgerError>>),
    Prune { cutoff_ns: u64, reason: String, reply: oneshot::Sender<Result<Option<PruneOutcome>, LedgerError>> },
    Tick,
    Shutdown(oneshot::Sender<()>),
}

/// Where an appender waits for its receipt.
type ReplyTo = oneshot::Sender<Result<Receipt, LedgerError>>;

/// Most appends taken into one transaction.
const MAX_GROUP: usize = 8192;

/// Records committed since the last checkpoint, as small segments; merged into one
/// batch when the next checkpoint is signed.
pub(crate) struct Pending {
    first_seq: u64,
    keys: Vec<u64>,
    header: BatchHeader,
    leaves: Vec<Hash>,
    packed: Vec<u8>,
}

/// zstd level of per-commit segments: fast, since they are rewritten at the merge.
const SEGMENT_LEVEL: i32 = 1;

/// A merged batch, compressed off the writer thread.
pub(crate) struct Compacted {
    first_seq: u64,
    keys: Vec<u64>,
    header: BatchHeader,
    body: Vec<u8>,
}

struct Failure {
    since_ns: u64,
    error: String,
    refused: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    key: SigningKey,
    opts: LedgerOptions,
    head: HeadState,
    pending: Option<Pending>,
    last_checkpoint: u64,
    last_checkpoint_at: Instant,
    failure: Option<Failure>,
    compact_ready: Option<Pending>,
    compactor: std::sync::mpsc::Sender<Pending>,
    wal: Option<Wal>,
    /// Reused for every segment (see [`store::encode_body_with`]).
    compressor: zstd::bulk::Compressor<'static>,
    /// Set while staging when the transaction must commit durably (checkpoint, prune,
    /// a full log); a durable commit lets the log start over.
    durable: bool,
    /// The latest committed checkpoint (size, signed note), published with the head.
    latest_note: Option<(u64, String)>,
    /// A checkpoint signed in the transaction being staged; latest once it commits.
    staged_note: Option<(u64, String)>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: SigningKey,
        opts: LedgerOptions,
        compactor: std::sync::mpsc::Sender<Pending>,
    ) -> Result<Writer, StoreError> {
        let mut w = Writer {
            shared,
            key,
            opts,
            head: HeadState::default(),
            pending: None,
            last_checkpoint: 0,
            last_checkpoint_at: Instant::now(),
            failure: None,
            compact_ready: None,
            compactor,
            wal: None,
            durable: false,
            latest_note: None,
            staged_note: None,
            compressor: zstd::bulk::Compressor::new(SEGMENT_LEVEL)
                .map_err(|e| StoreError::Corrupt(format!("zstd: {e}")))?,
        };
        if let Err(e) = w.reload() {
            match e {
                // Integrity problems (a truncated ledger): stay readable so
                // `lucidctl ledger verify` can show them, but refuse to append.
                StoreError::Corrupt(_) => w.enter_failure(&e),
                other => return Err(other),
            }
        }
        Ok(w)
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.shared.db().ok_or_else(|| StoreError::Corrupt("database is closed".into()))
    }

    /// Loads the committed head and latest checkpoint from disk and replays what the
    /// write-ahead log holds beyond them.
    fn reload(&mut self) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        self.head = store::read_head(&txn)?;
        self.latest_note = store::latest_checkpoint(&txn)?;
        self.last_checkpoint = self.latest_note.as_ref().map_or(0, |(size, _)| *size);
        drop(txn);
        let stored = self.head.frontier.size();
        self.pending = None;
        self.compact_ready = None;
        let (wal, groups) = Wal::open(&self.opts.path.with_extension("wal"), self.opts.wal_capacity)?;
        self.wal = Some(wal);
        let replay: Vec<WalGroup> = groups
            .into_iter()
            .skip_while(|g| g.first_seq < self.head.frontier.size())
            .collect();
        if !replay.is_empty() && replay[0].first_seq == self.head.frontier.size() {
            let replayed = self.write(|w, txn| {
                let mut head = w.head.clone();
                let mut count = 0u64;
                for group in replay {
                    if group.first_seq != head.frontier.size() {
                        break;
                    }
                    let records = lucid_common::export::unpack_records(&group.packed)
                        .map_err(|e| StoreError::Corrupt(format!("write-ahead log group {}: {e}", group.first_seq)))?;
                    let records: Vec<Vec<u8>> = records.into_iter().map(<[u8]>::to_vec).collect();
                    count += records.len() as u64;
                    w.head = head;
                    let (_, next) = w.stage_encoded(txn, records, false)?;
                    head = next;
                }
                w.durable = true;
                Ok((count, head))
            })?;
            tracing::info!(records = replayed, "replayed the ledger write-ahead log");
        } else if let Some(wal) = &mut self.wal {
            wal.reset();
        }
        self.shared.publish_head(&self.head, self.latest_note.clone());
        if self.last_checkpoint > self.head.frontier.size() {
            return Err(StoreError::Corrupt(format!(
                "ledger truncated: a signed checkpoint covers {} records but only {} are stored (before replay: {stored}); \
                 appends are refused; run `lucidctl ledger verify`",
                self.last_checkpoint,
                self.head.frontier.size()
            )));
        }
        Ok(())
    }

    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let (mut appends, mut replaces, mut others) = (Vec::new(), Vec::new(), Vec::new());
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(e, r) => appends.push((e, r)),
                    Command::Replace(c) => replaces.push(c),
                    other => others.push(other),
                }
                if appends.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            if !appends.is_empty() || !replaces.is_empty() {
                self.commit_group(appends, replaces);
            }
            for cmd in others {
                if !self.handle(cmd) {
                    return;
                }
            }
        }
        // All senders gone: leave a checkpoint behind.
        let _ = self.checkpoint_now();
    }

    /// Handles a non-append command; `false` means stop.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Append(e, r) => self.commit_group(vec![(e, r)], Vec::new()),
            Command::Replace(c) => self.commit_group(Vec::new(), vec![c]),
            Command::Checkpoint(reply) => {
                let _ = reply.send(self.checkpoint_now());
            }
            Command::Prune { cutoff_ns, reason, reply } => {
                let result = match self.refusal() {
                    Some(err) => Err(err),
                    None => self.prune(cutoff_ns, &reason),
                };
                let _ = reply.send(result);
            }
            Command::Tick => self.tick(),
            Command::Shutdown(reply) => {
                if let Err(e) = self.checkpoint_now() {
                    tracing::error!(error = %e, "final checkpoint failed");
                }
                // Release the file before answering, so the caller may reopen it.
                self.shared.close_db();
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    fn refusal(&self) -> Option<LedgerError> {
        self.failure.as_ref().map(|f| LedgerError::Unavailable(f.error.clone()))
    }

    /// Commits a group of appends (and merged batches from the compactor) in one
    /// transaction, then answers the appenders.
    fn commit_group(
        &mut self,
        group: Vec<(Vec<u8>, ReplyTo)>,
        replaces: Vec<Compacted>,
    ) {
        if let Some(f) = &mut self.failure {
            f.refused += group.len() as u64;
            self.shared.refused.fetch_add(group.len() as u64, Ordering::Relaxed);
            for (_, reply) in group {
                let _ = reply.send(Err(LedgerError::Unavailable(f.error.clone())));
            }
            return;
        }
        let (tails, replies): (Vec<Vec<u8>>, Vec<_>) = group.into_iter().unzip();
        let result = self.write(|w, txn| {
            apply_replaces(txn, replaces)?;
            if tails.is_empty() {
                return Ok((Vec::new(), w.head.clone()));
            }
            w.stage(txn, tails)
        });
        match result {
            Ok(receipts) => {
                for (reply, receipt) in replies.into_iter().zip(receipts) {
                    let _ = reply.send(Ok(receipt));
                }
            }
            Err(e) => {
                let refused = replies.len() as u64;
                for reply in replies {
                    let _ = reply.send(Err(LedgerError::Unavailable(e.to_string())));
                }
                self.shared.refused.fetch_add(refused, Ordering::Relaxed);
                if let Some(f) = &mut self.failure {
                    f.refused += refused;
                }
            }
        }
    }

    /// Runs `stage` in a write transaction and commits. On failure the in-memory
    /// state is left as it was before and the ledger turns `failed`.
    fn write<T>(
        &mut self,
        stage: impl FnOnce(&mut Self, &WriteTransaction) -> Result<(T, HeadState), StoreError>,
    ) -> Result<T, StoreError> {
        let attempt = (|| {
            let db = self.db()?;
            let mut txn = db.begin_write()?;
            self.durable = false;
            self.staged_note = None;
            let (out, head) = stage(self, &txn)?;
            let wal_full = self.wal.as_ref().is_some_and(|w| w.len() >= self.opts.wal_capacity / 2);
            let durable = self.durable || wal_full;
            txn.set_durability(if durable { Durability::Immediate } else { Durability::None })
                .map_err(|e| StoreError::Corrupt(format!("setting durability: {e}")))?;
            txn.commit()?;
            if durable {
                if let Some(wal) = &mut self.wal {
                    wal.reset();
                }
            }
            Ok((out, head))
        })();
        match attempt {
            Ok((out, head)) => {
                self.head = head;
                if let Some(job) = self.compact_ready.take() {
                    // The compactor may be gone at shutdown; the segments then stay as they are.
                    let _ = self.compactor.send(job);
                }
                if let Some(note) = self.staged_note.take() {
                    self.latest_note = Some(note);
                }
                self.shared.publish_head(&self.head, self.latest_note.clone());
                Ok(out)
            }
            Err(e) => {
                self.pending = None;
                self.compact_ready = None;
                self.staged_note = None;
                self.enter_failure(&e);
                Err(e)
            }
        }
    }

    /// Places entries in the tree, logs them to the write-ahead log and writes them
    /// into `txn` as one segment. Returns the receipts and the head after them.
    fn stage(&mut self, txn: &WriteTransaction, tails: Vec<Vec<u8>>) -> Result<(Vec<Receipt>, HeadState), StoreError> {
        let first = self.head.frontier.size();
        let time_ns = now_ns().max(self.head.last_time);
        let records = tails
            .iter()
            .enumerate()
            .map(|(i, tail)| Record::encode_placed(first + i as u64, time_ns, tail))
            .collect();
        self.stage_encoded(txn, records, true)
    }

    /// Writes encoded records (whose `seq` must continue the head) into `txn` as one
    /// segment, first to the write-ahead log when `log` is set.
    fn stage_encoded(
        &mut self,
        txn: &WriteTransaction,
        records: Vec<Vec<u8>>,
        log: bool,
    ) -> Result<(Vec<Receipt>, HeadState), StoreError> {
        let mut head = self.head.clone();
        let first_new = head.frontier.size();
        let mut receipts = Vec::with_capacity(records.len());
        let mut leaves = Vec::with_capacity(records.len());
        let mut packed = Vec::new();
        let mut nodes = Vec::new();
        let mut min_time = None;
        for bytes in records {
            let seq = head.frontier.size();
            if lucid_common::record::peek_seq(&bytes) != Some(seq) {
                return Err(StoreError::Corrupt(format!("record for position {seq} carries another sequence number")));
            }
            let time_ns = lucid_common::record::peek_head(&bytes).map_or(head.last_time, |(_, t, _)| t).max(head.last_time);
            min_time.get_or_insert(time_ns);
            let leaf = leaf_hash(&bytes);
            head.frontier.push_with(leaf, |height, hash| {
                if height >= CHUNK_BITS {
                    nodes.push((store::node_key(height, ((seq + 1) >> height) - 1), *hash));
                }
            });
            head.last_time = time_ns;
            packed.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            packed.extend_from_slice(&bytes);
            leaves.push(leaf);
            receipts.push(Receipt { seq, time_ns, leaf_hash: leaf });
        }
        let min_time = min_time.unwrap_or(head.last_time);
        let header = BatchHeader { count: leaves.len() as u32, min_time, max_time: head.last_time };
        if log {
            if let Some(wal) = &mut self.wal {
                wal.append(first_new, header.count, &packed)?;
            }
        }
        let body = store::encode_body_with(&mut self.compressor, &leaves, &packed)?;
        store::put_batch(txn, first_new, &header, &body)?;
        if !nodes.is_empty() {
            let mut node_table = txn.open_table(store::NODES)?;
            for (key, hash) in &nodes {
                node_table.insert(*key, hash.as_slice())?;
            }
        }
        let pending = self.pending.get_or_insert_with(|| Pending {
            first_seq: first_new,
            keys: Vec::new(),
            header: BatchHeader { count: 0, min_time, max_time: min_time },
            leaves: Vec::new(),
            packed: Vec::new(),
        });
        pending.keys.push(first_new);
        pending.header.count += header.count;
        pending.header.max_time = header.max_time;
        pending.leaves.extend_from_slice(&leaves);
        pending.packed.extend_from_slice(&packed);
        if head.frontier.size() - self.last_checkpoint >= self.opts.checkpoint_every {
            self.stage_checkpoint(txn, &head)?;
        }
        Ok((receipts, head))
    }

    /// Signs a checkpoint at the head in `txn`; once that commits, the segments since
    /// the previous checkpoint go to the compactor to be merged into one batch.
    fn stage_checkpoint(&mut self, txn: &WriteTransaction, head: &HeadState) -> Result<(), StoreError> {
        self.compact_ready = self.pending.take().filter(|p| p.keys.len() > 1 || p.header.count > 1);
        let cp = Checkpoint {
            origin: self.shared.origin.clone(),
            size: head.frontier.size(),
            root: head.frontier.root(),
            time_ns: head.last_time,
        };
        let note = cp.sign(&self.key);
        txn.open_table(store::CHECKPOINTS)?.insert(cp.size, note.as_str())?;
        self.staged_note = Some((cp.size, note));
        self.durable = true;
        self.last_checkpoint = cp.size;
        self.last_checkpoint_at = Instant::now();
        Ok(())
    }

    /// Signs a checkpoint if records were added since the last one.
    fn checkpoint_now(&mut self) -> Result<Option<u64>, LedgerError> {
        if let Some(err) = self.refusal() {
            return Err(err);
        }
        if self.head.frontier.size() == self.last_checkpoint {
            return Ok(None);
        }
        let size = self.head.frontier.size();
        self.write(|w, txn| {
            let head = w.head.clone();
            w.stage_checkpoint(txn, &head)?;
            Ok(((), head))
        })?;
        Ok(Some(size))
    }

    fn tick(&mut self) {
        self.shared.heartbeat.store(now_ns(), Ordering::Relaxed);
        if self.failure.is_some() {
            self.try_recover();
            return;
        }
        if self.head.frontier.size() > self.last_checkpoint
            && self.last_checkpoint_at.elapsed() >= self.opts.checkpoint_interval
        {
            if let Err(e) = self.checkpoint_now() {
                tracing::error!(error = %e, "timed checkpoint failed");
            }
        }
    }

    fn enter_failure(&mut self, e: &StoreError) {
        if self.failure.is_none() {
            let message = if e.is_disk_full() { format!("disk full: {e}") } else { e.to_string() };
            tracing::error!(
                message_id = super::MESSAGE_ID_LEDGER_FAILED,
                error = %message,
                "evidence ledger cannot write; refusing work that needs evidence until it recovers"
            );
            self.failure = Some(Failure { since_ns: now_ns(), error: message.clone(), refused: 0 });
            self.shared.set_health(Health::Failed { error: message, since_ns: now_ns() });
        }
        // redb refuses further use after an I/O error: close it so recovery can reopen.
        // Corrupt data is not cured by reopening; readers keep the database.
        if !matches!(e, StoreError::Corrupt(_)) {
            self.shared.close_db();
        }
    }

    fn try_recover(&mut self) {
        let probe = (|| -> Result<(), StoreError> {
            if self.shared.db().is_none() {
                self.shared.set_db(store::open(&self.opts.path)?);
            }
            let db = self.db()?;
            let txn = db.begin_write()?;
            {
                // Commit something the size of a small batch, so "recovered" means
                // there is room to write again, not merely that a page was free.
                let probe = vec![0u8; 64 * 1024];
                txn.open_table(store::META)?.insert("probe", probe.as_slice())?;
            }
            txn.commit()?;
            let txn = db.begin_write()?;
            txn.open_table(store::META)?.remove("probe")?;
            txn.commit()?;
            self.reload()
        })();
        if let Err(e) = probe {
            tracing::debug!(error = %e, "ledger still cannot write");
            if !matches!(e, StoreError::Corrupt(_)) {
                self.shared.close_db();
            }
            return;
        }
        let Some(f) = self.failure.take() else { return };
        self.shared.set_health(Health::Ok);
        tracing::warn!(
            message_id = super::MESSAGE_ID_LEDGER_RECOVERED,
            refused = f.refused,
            "evidence ledger can write again"
        );
        let entry = Entry {
            kind: Kind::System,
            source: "ledger".into(),
            controls: vec!["CC7.2".into(), "A1.2".into()],
            severity: Severity::Critical,
            subject: "ledger.recovered".into(),
            body: serde_json::json!({
                "failed_since_ns": f.since_ns,
                "recovered_ns": now_ns(),
                "error": f.error,
                "refused_appends": f.refused,
            }),
        };
        if let Err(e) = self.write(|w, txn| w.stage(txn, vec![entry.encode_tail()])) {
            tracing::error!(error = %e, "could not record ledger recovery");
        }
    }

    fn prune(&mut self, cutoff_ns: u64, reason: &str) -> Result<Option<PruneOutcome>, LedgerError> {
        let origin = self.shared.origin.clone();
        let key = self.key.clone();
        let last_checkpoint = self.last_checkpoint;
        let outcome = self.write(|w, txn| {
            let head = w.head.clone();
            let Some((from, to, keys)) = prunable(txn, cutoff_ns, last_checkpoint)? else {
                return Ok((None, head));
            };
            let mut range = Frontier::default();
            for k in &keys {
                let Some((header, body)) = store::remove_batch(txn, *k)? else { continue };
                let (hashes, _) = store::split_body(*k, &header, &body)?;
                let leaves: Vec<Hash> = hashes.chunks_exact(32).filter_map(|c| c.try_into().ok()).collect();
                for leaf in &leaves {
                    range.push(*leaf);
                }
                write_leaves(txn, *k, &leaves)?;
            }
            let range_root = hex::encode(&range.root());
            txn.open_table(store::PRUNED)?.insert(from, to)?;
            let signature = sign_statement(&key, PRUNE_DOMAIN, &prune_statement(&origin, from, to, &range_root));
            let entry = Entry {
                kind: Kind::System,
                source: "ledger".into(),
                controls: vec!["CC7.2".into()],
                severity: Severity::Notice,
                subject: PRUNE_SUBJECT.into(),
                body: serde_json::json!({
                    "pruned_from": from,
                    "pruned_to": to,
                    "records": to - from,
                    "cutoff_ns": cutoff_ns,
                    "reason": reason,
                    "range_root": range_root,
                    "signature": signature,
                }),
            };
            let (receipts, head) = w.stage(txn, vec![entry.encode_tail()])?;
            w.stage_checkpoint(txn, &head)?;
            w.durable = true;
            let seq = receipts.first().map(|r| r.seq).unwrap_or_default();
            Ok((Some(PruneOutcome { from, to, record_seq: seq }), head))
        })?;
        Ok(outcome)
    }
}

/// Finds the batches entirely older than `cutoff_ns` and covered by a checkpoint,
/// contiguous from the first unpruned one.
fn prunable(txn: &WriteTransaction, cutoff_ns: u64, last_checkpoint: u64) -> Result<Option<(u64, u64, Vec<u64>)>, StoreError> {
    let batches = txn.open_table(store::BATCHES)?;
    let mut keys = Vec::new();
    let mut range: Option<(u64, u64)> = None;
    for item in batches.iter()? {
        let (k, v) = item?;
        let first = k.value();
        let header = store::batch_header(first, v.value())?;
        let end = first + u64::from(header.count);
        let contiguous = range.is_none_or(|(_, to)| to == first);
        if header.max_time >= cutoff_ns || end > last_checkpoint || !contiguous {
            break;
        }
        keys.push(first);
        range = Some((range.map_or(first, |(from, _)| from), end));
    }
    Ok(range.map(|(from, to)| (from, to, keys)))
}

/// Appends leaf hashes to their chunks.
fn write_leaves(txn: &WriteTransaction, first: u64, leaves: &[lucid_common::merkle::Hash]) -> Result<(), StoreError> {
    let mut table = txn.open_table(store::LEAVES)?;
    let mut seq = first;
    let mut rest = leaves;
    while !rest.is_empty() {
        let chunk = seq >> CHUNK_BITS;
        let room = (CHUNK - (seq & (CHUNK - 1))) as usize;
        let (now, later) = rest.split_at(room.min(rest.len()));
        let mut value = match table.get(chunk)? {
            Some(existing) if seq & (CHUNK - 1) != 0 => existing.value().to_vec(),
            _ => Vec::with_capacity(CHUNK as usize * 32),
        };
        value.truncate(((seq & (CHUNK - 1)) * 32) as usize);
        for leaf in now {
            value.extend_from_slice(leaf);
        }
        table.insert(chunk, value.as_slice())?;
        seq += now.len() as u64;
        rest = later;
    }
    Ok(())
}

/// Swaps merged batches in for their segments, unless a segment is gone (pruned
/// meanwhile), in which case that merge is dropped and the segments stay.
fn apply_replaces(txn: &WriteTransaction, replaces: Vec<Compacted>) -> Result<(), StoreError> {
    if replaces.is_empty() {
        return Ok(());
    }
    for c in replaces {
        let mut all_present = true;
        {
            let batches = txn.open_table(store::BATCHES)?;
            for key in &c.keys {
                all_present &= batches.get(*key)?.is_some();
            }
        }
        if !all_present {
            continue;
        }
        for key in &c.keys {
            store::delete_batch(txn, *key)?;
        }
        store::put_batch(txn, c.first_seq, &c.header, &c.body)?;
    }
    Ok(())
}

/// Compresses merged batches off the writer thread and hands them back to it, below
/// the gateway's priority: merging is housekeeping that no acknowledgement waits for.
pub(crate) fn spawn_compactor(
    jobs: std::sync::mpsc::Receiver<Pending>,
    writer: mpsc::Sender<Command>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("ledger-compact".into()).spawn(move || {
        crate::daemon::background::lower_priority();
        let Ok(mut compressor) = zstd::bulk::Compressor::new(super::ZSTD_LEVEL) else {
            tracing::warn!("no zstd context for merging; segments stay as they are");
            return;
        };
        for p in jobs {
            match store::encode_body_with(&mut compressor, &p.leaves, &p.packed) {
                Ok(body) => {
                    let c = Compacted { first_seq: p.first_seq, keys: p.keys, header: p.header, body };
                    if writer.blocking_send(Command::Replace(c)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "merging ledger segments failed; they stay as they are"),
            }
        }
    })
}

/// Sends a tick every `period` until the writer goes away.
pub(crate) fn spawn_ticker(tx: mpsc::Sender<Command>, period: Duration) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("ledger-tick".into()).spawn(move || loop {
        std::thread::sleep(period);
        if tx.blocking_send(Command::Tick).is_err() {
            return;
        }
    })
}
