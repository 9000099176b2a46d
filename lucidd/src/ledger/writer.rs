//! The single writer thread: group commit, checkpoints, pruning, fail-closed recovery.
//!
//! Appenders send commands over a channel and wait on a oneshot. The thread takes
//! everything that is queued, writes it in one redb transaction (records, leaf
//! hashes, interior nodes, head, and a checkpoint when one is due), commits with
//! `Durability::Immediate` (fsync), and only then answers every appender in the group.
//! So concurrent appenders share one fsync, and an acknowledged record is on disk.
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
use lucid_common::export::{pack_records, prune_statement, PRUNE_DOMAIN, PRUNE_SUBJECT};
use lucid_common::hex;
use lucid_common::merkle::{leaf_hash, Frontier};
use lucid_common::record::{Entry, Kind, Record, Severity};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::store::{self, BatchHeader, HeadState, StoreError, CHUNK, CHUNK_BITS};
use super::{now_ns, Health, LedgerError, LedgerOptions, PruneOutcome, Receipt, Shared};

/// Work for the writer thread.
pub(crate) enum Command {
    Append(Entry, oneshot::Sender<Result<Receipt, LedgerError>>),
    Checkpoint(oneshot::Sender<Result<Option<u64>, LedgerError>>),
    Prune { cutoff_ns: u64, reason: String, reply: oneshot::Sender<Result<Option<PruneOutcome>, LedgerError>> },
    Tick,
    Shutdown(oneshot::Sender<()>),
}

/// Most appends taken into one transaction.
const MAX_GROUP: usize = 8192;

/// A batch that later commits may still extend (small commits share a batch so they
/// compress well).
struct OpenBatch {
    first_seq: u64,
    header: BatchHeader,
    packed: Vec<u8>,
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
    open: Option<OpenBatch>,
    last_checkpoint: u64,
    last_checkpoint_at: Instant,
    failure: Option<Failure>,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, key: SigningKey, opts: LedgerOptions) -> Result<Writer, StoreError> {
        let mut w = Writer {
            shared,
            key,
            opts,
            head: HeadState::default(),
            open: None,
            last_checkpoint: 0,
            last_checkpoint_at: Instant::now(),
            failure: None,
        };
        w.reload()?;
        Ok(w)
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.shared.db().ok_or_else(|| StoreError::Corrupt("database is closed".into()))
    }

    /// Loads the committed head and latest checkpoint from disk.
    fn reload(&mut self) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        self.head = store::read_head(&txn)?;
        self.last_checkpoint = store::latest_checkpoint(&txn)?.map(|(size, _)| size).unwrap_or(0);
        self.open = None;
        self.shared.publish_head(&self.head, store::latest_checkpoint(&txn)?);
        Ok(())
    }

    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut appends = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut others = Vec::new();
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(e, r) => appends.push((e, r)),
                    other => others.push(other),
                }
                if appends.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.commit_appends(std::mem::take(&mut appends));
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
            Command::Append(e, r) => self.commit_appends(vec![(e, r)]),
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
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    fn refusal(&self) -> Option<LedgerError> {
        self.failure.as_ref().map(|f| LedgerError::Unavailable(f.error.clone()))
    }

    fn commit_appends(&mut self, group: Vec<(Entry, oneshot::Sender<Result<Receipt, LedgerError>>)>) {
        if let Some(f) = &mut self.failure {
            f.refused += group.len() as u64;
            self.shared.refused.fetch_add(group.len() as u64, Ordering::Relaxed);
            for (_, reply) in group {
                let _ = reply.send(Err(LedgerError::Unavailable(f.error.clone())));
            }
            return;
        }
        let (entries, replies): (Vec<Entry>, Vec<_>) = group.into_iter().unzip();
        let result = self.write(|w, txn| w.stage(txn, entries));
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
            let txn = db.begin_write()?;
            let (out, head) = stage(self, &txn)?;
            store::write_head(&txn, &head)?;
            txn.commit()?;
            Ok((out, head))
        })();
        match attempt {
            Ok((out, head)) => {
                self.head = head;
                let latest = self.latest_checkpoint_note();
                self.shared.publish_head(&self.head, latest);
                Ok(out)
            }
            Err(e) => {
                self.open = None;
                self.enter_failure(&e);
                Err(e)
            }
        }
    }

    fn latest_checkpoint_note(&self) -> Option<(u64, String)> {
        let db = self.shared.db()?;
        let txn = db.begin_read().ok()?;
        store::latest_checkpoint(&txn).ok().flatten()
    }

    /// Places entries in the tree and writes them into `txn`. Returns the receipts
    /// and the head after them; commits nothing.
    fn stage(&mut self, txn: &WriteTransaction, entries: Vec<Entry>) -> Result<(Vec<Receipt>, HeadState), StoreError> {
        let mut head = self.head.clone();
        let first_new = head.frontier.size();
        let mut open = match self.open.take() {
            Some(open) => open,
            None => OpenBatch {
                first_seq: first_new,
                header: BatchHeader { count: 0, min_time: 0, max_time: 0 },
                packed: Vec::new(),
            },
        };
        let mut receipts = Vec::with_capacity(entries.len());
        let mut leaves = Vec::with_capacity(entries.len());
        let mut nodes = Vec::new();
        let now = now_ns();
        for entry in entries {
            let seq = head.frontier.size();
            let time_ns = now.max(head.last_time);
            let bytes = Record::from_entry(seq, time_ns, entry).encode();
            let leaf = leaf_hash(&bytes);
            head.frontier.push_with(leaf, |height, hash| {
                if height >= CHUNK_BITS {
                    nodes.push((store::node_key(height, ((seq + 1) >> height) - 1), *hash));
                }
            });
            head.last_time = time_ns;
            open.packed.extend_from_slice(&pack_records([bytes.as_slice()]));
            if open.header.count == 0 {
                open.header.min_time = time_ns;
            }
            open.header.count += 1;
            open.header.max_time = time_ns;
            leaves.push(leaf);
            receipts.push(Receipt { seq, time_ns, leaf_hash: leaf });
        }
        write_leaves(txn, first_new, &leaves)?;
        let mut node_table = txn.open_table(store::NODES)?;
        for (key, hash) in &nodes {
            node_table.insert(*key, hash.as_slice())?;
        }
        drop(node_table);
        write_batch(txn, &open)?;
        let checkpoint_due = head.frontier.size() - self.last_checkpoint >= self.opts.checkpoint_every;
        let batch_full = open.header.count as usize >= self.opts.batch_records || open.packed.len() >= self.opts.batch_bytes;
        if checkpoint_due {
            self.stage_checkpoint(txn, &head)?;
        } else if !batch_full {
            self.open = Some(open);
        }
        Ok((receipts, head))
    }

    fn stage_checkpoint(&mut self, txn: &WriteTransaction, head: &HeadState) -> Result<(), StoreError> {
        let cp = Checkpoint {
            origin: self.shared.origin.clone(),
            size: head.frontier.size(),
            root: head.frontier.root(),
            time_ns: head.last_time,
        };
        let note = cp.sign(&self.key);
        txn.open_table(store::CHECKPOINTS)?.insert(cp.size, note.as_str())?;
        // A checkpoint always closes the batch, so checkpoints fall on batch boundaries.
        self.open = None;
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
        self.shared.close_db();
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
            self.shared.close_db();
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
        if let Err(e) = self.write(|w, txn| w.stage(txn, vec![entry])) {
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
            for leaf in store::leaves_in(&txn.open_table(store::LEAVES)?, from, to)? {
                range.push(leaf);
            }
            let range_root = hex::encode(&range.root());
            let mut batches = txn.open_table(store::BATCHES)?;
            for k in &keys {
                batches.remove(*k)?;
            }
            drop(batches);
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
            let (receipts, head) = w.stage(txn, vec![entry])?;
            w.stage_checkpoint(txn, &head)?;
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
        let header = BatchHeader::decode(v.value()).ok_or_else(|| StoreError::Corrupt(format!("batch {first} header")))?;
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

/// Compresses and stores a batch (replacing an earlier version of an open batch).
fn write_batch(txn: &WriteTransaction, batch: &OpenBatch) -> Result<(), StoreError> {
    let compressed = zstd::bulk::compress(&batch.packed, super::ZSTD_LEVEL)
        .map_err(|e| StoreError::Corrupt(format!("compressing batch: {e}")))?;
    let mut value = Vec::with_capacity(BatchHeader::LEN + compressed.len());
    value.extend_from_slice(&batch.header.encode());
    value.extend_from_slice(&compressed);
    txn.open_table(store::BATCHES)?.insert(batch.first_seq, value.as_slice())?;
    Ok(())
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
