//! The evidence ledger: durable, tamper-evident storage of every decision and
//! observation (DESIGN.md section 3).
//!
//! * [`Ledger::append`] returns only after the record is on disk; concurrent appends
//!   share one fsync ([`writer`]).
//! * Records are leaves of an RFC 6962 Merkle tree; a C2SP signed checkpoint is
//!   written every `checkpoint_every` records or `checkpoint_interval`.
//! * [`Ledger::prove`], [`Ledger::consistency`] and [`Ledger::export`] serve proofs and
//!   the verification stream from storage ([`store`]).
//! * [`Ledger::prune`] removes old bodies under retention and writes a signed prune
//!   record; hashes and checkpoints stay.
//!
//! The ledger knows no source: it stores [`Entry`] values and tells subscribers
//! (sinks, `logs --follow`) when the head moves.

pub mod read;
pub mod store;
pub mod wal;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use lucid_common::checkpoint::VerifierKey;
use lucid_common::merkle::Hash;
use lucid_common::record::Entry;
use redb::Database;
use tokio::sync::{mpsc, oneshot, watch};

use store::{HeadState, StoreError};
use writer::Command;

/// journald MESSAGE_ID of "the ledger cannot write".
pub const MESSAGE_ID_LEDGER_FAILED: &str = "374ac128fff3444e8b43564e9a9d23a1";
/// journald MESSAGE_ID of "the ledger can write again".
pub const MESSAGE_ID_LEDGER_RECOVERED: &str = "046064624f174e81abcbcc75fcdd5931";

/// zstd level for record batches (3: zstd's default; the benchmark reports the ratio).
pub const ZSTD_LEVEL: i32 = 3;

/// How the ledger is stored and when it signs.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    /// The redb database file (the write-ahead log sits beside it, extension `wal`).
    pub path: PathBuf,
    /// Checkpoint origin and key name, e.g. `host.example/lucid`.
    pub origin: String,
    /// Sign a checkpoint at least every this many records.
    pub checkpoint_every: u64,
    /// ... and at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// Appends queued before appenders wait (back-pressure).
    pub queue_depth: usize,
    /// Size of the preallocated write-ahead log; half full forces a durable redb commit.
    pub wal_capacity: u64,
}

impl LedgerOptions {
    /// Defaults for a database at `path`.
    pub fn new(path: PathBuf, origin: String) -> LedgerOptions {
        LedgerOptions {
            path,
            origin,
            checkpoint_every: 4096,
            checkpoint_interval: Duration::from_secs(10),
            queue_depth: 65536,
            wal_capacity: 4 << 20,
        }
    }
}

/// Why the ledger could not do something.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger cannot write (disk full, I/O error): fail closed.
    #[error("evidence ledger unavailable: {0}")]
    Unavailable(String),
    /// Reading storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer thread has stopped (the daemon is shutting down).
    #[error("evidence ledger is shut down")]
    Closed,
    /// A sequence number or range that does not exist (yet).
    #[error("{0}")]
    NotFound(String),
    /// The writer thread could not be started.
    #[error("starting the ledger writer: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Proof that a record is durable: where it is and what it hashes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Sequence number.
    pub seq: u64,
    /// Ledger time.
    pub time_ns: u64,
    /// Leaf hash.
    pub leaf_hash: Hash,
}

/// What a prune removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PruneOutcome {
    /// First pruned sequence number.
    pub from: u64,
    /// One past the last.
    pub to: u64,
    /// Sequence number of the signed prune record.
    pub record_seq: u64,
}

/// Whether the ledger can write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Writing.
    Ok,
    /// Cannot write since `since_ns`; appends are refused.
    Failed {
        /// The storage error.
        error: String,
        /// When it began.
        since_ns: u64,
    },
}

/// The committed head, published after every commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Records in the ledger (the next sequence number).
    pub next_seq: u64,
    /// Latest checkpoint size and note.
    pub checkpoint: Option<(u64, String)>,
}

/// State shared by the handle, the writer thread and readers.
pub(crate) struct Shared {
    db: RwLock<Option<Arc<Database>>>,
    origin: String,
    head: watch::Sender<Head>,
    health: watch::Sender<Health>,
    refused: AtomicU64,
    heartbeat: AtomicU64,
}

impl Shared {
    fn db(&self) -> Option<Arc<Database>> {
        self.db.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_db(&self, db: Database) {
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
    }

    /// Drops the database once readers let go of it, so it can be reopened.
    fn close_db(&self) {
        let old = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut db) = old {
            for _ in 0..5000 {
                match Arc::try_unwrap(db) {
                    Ok(inner) => {
                        drop(inner);
                        return;
                    }
                    Err(still_shared) => {
                        db = still_shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            tracing::warn!("ledger readers still hold the database; reopening later");
        }
    }

    fn publish_head(&self, head: &HeadState, checkpoint: Option<(u64, String)>) {
        let next = Head { next_seq: head.frontier.size(), checkpoint };
        self.head.send_if_modified(|h| {
            let changed = *h != next;
            *h = next;
            changed
        });
    }

    fn set_health(&self, health: Health) {
        self.health.send_replace(health);
    }
}

/// Handle to the ledger; cheap to share behind an `Arc`.
pub struct Ledger {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    key: VerifierKey,
    opts: LedgerOptions,
}

impl Ledger {
    /// Opens (or creates) the ledger and starts its writer thread.
    pub fn open(opts: LedgerOptions, key: SigningKey) -> Result<Ledger, LedgerError> {
        let db = store::open(&opts.path)?;
        let (head_tx, _) = watch::channel(Head::default());
        let (health_tx, _) = watch::channel(Health::Ok);
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            origin: opts.origin.clone(),
            head: head_tx,
            health: health_tx,
            refused: AtomicU64::new(0),
            heartbeat: AtomicU64::new(now_ns()),
        });
        let verifier = VerifierKey::new(&opts.origin, key.verifying_key());
        let (compact_tx, compact_rx) = std::sync::mpsc::channel();
        let writer = writer::Writer::new(shared.clone(), key, opts.clone(), compact_tx)?;
        let (tx, rx) = mpsc::channel(opts.queue_depth);
        writer::spawn_compactor(compact_rx, tx.clone()).map_err(LedgerError::Spawn)?;
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(LedgerError::Spawn)?;
        writer::spawn_ticker(tx.clone(), Duration::from_secs(1)).map_err(LedgerError::Spawn)?;
        Ok(Ledger { tx, shared, key: verifier, opts })
    }

    /// Appends one record; returns once it is durable.
    pub async fn append(&self, entry: Entry) -> Result<Receipt, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let tail = entry.encode_tail();
        self.tx.send(Command::Append(tail, reply)).await.map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Signs a checkpoint now if records were added since the last one; returns its size.
    pub async fn checkpoint(&self) -> Result<Option<u64>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Checkpoint(reply)).await.map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Removes the bodies of checkpointed records older than `cutoff_ns` and writes a
    /// signed prune record. `None` when nothing was old enough.
    pub async fn prune(&self, cutoff_ns: u64, reason: String) -> Result<Option<PruneOutcome>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Prune { cutoff_ns, reason, reply })
            .await
            .map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Commits what is queued, signs a final checkpoint and stops the writer.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Watches the committed head (for followers and sinks).
    pub fn subscribe(&self) -> watch::Receiver<Head> {
        self.shared.head.subscribe()
    }

    /// Watches the write health.
    pub fn health(&self) -> watch::Receiver<Health> {
        self.shared.health.subscribe()
    }

    /// The committed head now.
    pub fn head(&self) -> Head {
        self.shared.head.borrow().clone()
    }

    /// Appends refused since start because the ledger could not write.
    pub fn refused_appends(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// When the writer thread last handled a tick (ns); the watchdog checks it.
    pub fn heartbeat_ns(&self) -> u64 {
        self.shared.heartbeat.load(Ordering::Relaxed)
    }

    /// The checkpoint verifier key.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.key
    }

    /// The options it was opened with.
    pub fn options(&self) -> &LedgerOptions {
        &self.opts
    }

    fn reader(&self) -> Result<Arc<Database>, LedgerError> {
        self.shared.db().ok_or_else(|| LedgerError::Unavailable("ledger database is being reopened".into()))
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
