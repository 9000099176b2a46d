//! The ledger's on-disk layout in redb, and the reads and writes on it.
//!
//! | table         | key                        | value                                        |
//! |---------------|----------------------------|----------------------------------------------|
//! | `meta`        | `"head"`                   | frontier bytes, then last `time_ns` (8 bytes) |
//! | `meta`        | `"origin"`                 | the checkpoint origin (UTF-8)                |
//! | `batches`     | first seq of the batch     | [`BatchHeader`] then zstd of packed records  |
//! | `leaves`      | `seq >> 8` (a chunk)       | up to 256 leaf hashes, in order              |
//! | `nodes`       | `height << 56 \| index`    | hash of a perfect subtree of height >= 8     |
//! | `checkpoints` | tree size                  | signed note                                  |
//! | `pruned`      | first pruned seq           | one past the last pruned seq                 |
//!
//! Leaf hashes and interior nodes outlive pruned bodies, so proofs and verification
//! keep working after retention. Every write happens in one transaction with the
//! record batch it belongs to, so a crash leaves either all of it or none.

use std::path::Path;

use lucid_common::export::unpack_records;
use lucid_common::merkle::{node_hash, split_point, Frontier, Hash, SubtreeSource};
use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

/// Table of small named values.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Compressed record batches by first sequence number.
pub const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
/// Leaf hashes in chunks of [`CHUNK`].
pub const LEAVES: TableDefinition<u64, &[u8]> = TableDefinition::new("leaves");
/// Interior nodes of perfect subtrees of height >= [`CHUNK_BITS`].
pub const NODES: TableDefinition<u64, &[u8]> = TableDefinition::new("nodes");
/// Signed checkpoints by tree size.
pub const CHECKPOINTS: TableDefinition<u64, &str> = TableDefinition::new("checkpoints");
/// Pruned ranges `[from, to)`.
pub const PRUNED: TableDefinition<u64, u64> = TableDefinition::new("pruned");

/// log2 of the leaf-chunk size.
pub const CHUNK_BITS: u32 = 8;
/// Leaves per chunk in `leaves`.
pub const CHUNK: u64 = 1 << CHUNK_BITS;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb reported an error (I/O, a full disk, a corrupt file).
    #[error("ledger database: {0}")]
    Db(#[from] redb::Error),
    /// Stored data does not have the expected shape.
    #[error("ledger data is corrupt: {0}")]
    Corrupt(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::DatabaseError
);

impl StoreError {
    /// Whether the error is the disk being full.
    pub fn is_disk_full(&self) -> bool {
        let text = self.to_string();
        text.contains("No space left") || text.contains("os error 28")
    }
}

/// Fixed header in front of each compressed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Records in the batch.
    pub count: u32,
    /// Ledger time of the first record.
    pub min_time: u64,
    /// Ledger time of the last record.
    pub max_time: u64,
}

impl BatchHeader {
    /// Encoded length.
    pub const LEN: usize = 20;

    /// Encodes the header.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&self.count.to_le_bytes());
        out[4..12].copy_from_slice(&self.min_time.to_le_bytes());
        out[12..].copy_from_slice(&self.max_time.to_le_bytes());
        out
    }

    /// Decodes a header from the front of a stored batch.
    pub fn decode(bytes: &[u8]) -> Option<BatchHeader> {
        let b = bytes.get(..Self::LEN)?;
        Some(BatchHeader {
            count: u32::from_le_bytes(b[..4].try_into().ok()?),
            min_time: u64::from_le_bytes(b[4..12].try_into().ok()?),
            max_time: u64::from_le_bytes(b[12..20].try_into().ok()?),
        })
    }
}

/// The head of the ledger as last committed.
#[derive(Clone, Debug, Default)]
pub struct HeadState {
    /// Tree state of all records.
    pub frontier: Frontier,
    /// Ledger time of the last record.
    pub last_time: u64,
}

/// Key of an interior node in `nodes`.
pub fn node_key(height: u32, index: u64) -> u64 {
    (u64::from(height) << 56) | index
}

/// Opens (creating if needed) the database and its tables.
pub fn open(path: &Path) -> Result<Database, StoreError> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    {
        txn.open_table(META)?;
        txn.open_table(BATCHES)?;
        txn.open_table(LEAVES)?;
        txn.open_table(NODES)?;
        txn.open_table(CHECKPOINTS)?;
        txn.open_table(PRUNED)?;
    }
    txn.commit()?;
    Ok(db)
}

/// Reads the committed head.
pub fn read_head(txn: &ReadTransaction) -> Result<HeadState, StoreError> {
    let meta = txn.open_table(META)?;
    let Some(raw) = meta.get("head")? else { return Ok(HeadState::default()) };
    let raw = raw.value();
    let split = raw.len().checked_sub(8).ok_or_else(|| StoreError::Corrupt("head too short".into()))?;
    let frontier = Frontier::from_bytes(&raw[..split]).ok_or_else(|| StoreError::Corrupt("head frontier".into()))?;
    let last_time = u64::from_le_bytes(raw[split..].try_into().map_err(|_| StoreError::Corrupt("head time".into()))?);
    Ok(HeadState { frontier, last_time })
}

/// Writes the head inside a write transaction.
pub fn write_head(txn: &WriteTransaction, head: &HeadState) -> Result<(), StoreError> {
    let mut bytes = head.frontier.to_bytes();
    bytes.extend_from_slice(&head.last_time.to_le_bytes());
    txn.open_table(META)?.insert("head", bytes.as_slice())?;
    Ok(())
}

/// Reads one stored value from `meta`.
pub fn read_meta(txn: &ReadTransaction, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(txn.open_table(META)?.get(key)?.map(|v| v.value().to_vec()))
}

/// The latest checkpoint note, if any.
pub fn latest_checkpoint(txn: &ReadTransaction) -> Result<Option<(u64, String)>, StoreError> {
    let t = txn.open_table(CHECKPOINTS)?;
    let last = t.last()?.map(|(k, v)| (k.value(), v.value().to_string()));
    Ok(last)
}

/// The checkpoint at exactly `size`, if one was signed.
pub fn checkpoint_at(txn: &ReadTransaction, size: u64) -> Result<Option<String>, StoreError> {
    Ok(txn.open_table(CHECKPOINTS)?.get(size)?.map(|v| v.value().to_string()))
}

/// One past the end of the pruned prefix (0 when nothing was pruned).
pub fn pruned_to(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(txn.open_table(PRUNED)?.last()?.map(|(_, to)| to.value()).unwrap_or(0))
}

/// A stored batch: header and decompressed record encodings.
pub struct Batch {
    /// First sequence number.
    pub first_seq: u64,
    /// Header.
    pub header: BatchHeader,
    /// Packed records (see [`lucid_common::export::pack_records`]).
    pub packed: Vec<u8>,
}

impl Batch {
    /// The record encodings.
    pub fn records(&self) -> Result<Vec<&[u8]>, StoreError> {
        unpack_records(&self.packed).map_err(|e| StoreError::Corrupt(format!("batch {}: {e}", self.first_seq)))
    }
}

/// Decodes a stored batch value.
pub fn decode_batch(first_seq: u64, raw: &[u8]) -> Result<Batch, StoreError> {
    let header = BatchHeader::decode(raw).ok_or_else(|| StoreError::Corrupt(format!("batch {first_seq} header")))?;
    let packed = zstd::decode_all(&raw[BatchHeader::LEN..])
        .map_err(|e| StoreError::Corrupt(format!("batch {first_seq} does not decompress: {e}")))?;
    Ok(Batch { first_seq, header, packed })
}

/// First sequence number of the stored batch that holds `seq`, if any.
pub fn batch_containing(txn: &ReadTransaction, seq: u64) -> Result<Option<(u64, BatchHeader)>, StoreError> {
    let t = txn.open_table(BATCHES)?;
    let Some((k, v)) = t.range(..=seq)?.next_back().transpose()? else { return Ok(None) };
    let first = k.value();
    let header = BatchHeader::decode(v.value()).ok_or_else(|| StoreError::Corrupt(format!("batch {first} header")))?;
    Ok((seq < first + u64::from(header.count)).then_some((first, header)))
}

/// Leaf hashes `[from, to)` from the chunk table.
pub fn read_leaves(txn: &ReadTransaction, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
    leaves_in(&txn.open_table(LEAVES)?, from, to)
}

/// Leaf hashes `[from, to)` from an open `leaves` table (read or write transaction).
pub fn leaves_in(table: &impl ReadableTable<u64, &'static [u8]>, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
    let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
    let mut seq = from;
    while seq < to {
        let chunk = seq >> CHUNK_BITS;
        let raw = table.get(chunk)?.ok_or_else(|| StoreError::Corrupt(format!("leaf chunk {chunk} missing")))?;
        let raw = raw.value();
        let chunk_end = ((chunk + 1) << CHUNK_BITS).min(to);
        for s in seq..chunk_end {
            let off = ((s & (CHUNK - 1)) * 32) as usize;
            let h: Hash = raw
                .get(off..off + 32)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("leaf {s} missing")))?;
            out.push(h);
        }
        seq = chunk_end;
    }
    Ok(out)
}

/// Subtree hashes served from stored leaves and interior nodes, for proofs.
pub struct StoredTree<'a> {
    /// The read transaction the hashes come from.
    pub txn: &'a ReadTransaction,
}

impl SubtreeSource for StoredTree<'_> {
    type Error = StoreError;

    fn subtree_hash(&self, start: u64, end: u64) -> Result<Hash, StoreError> {
        let n = end - start;
        if n.is_power_of_two() && start % n == 0 && n >= CHUNK {
            let key = node_key(n.trailing_zeros(), start / n);
            let t = self.txn.open_table(NODES)?;
            let raw = t.get(key)?.ok_or_else(|| StoreError::Corrupt(format!("node {start}..{end} missing")))?;
            return raw.value().try_into().map_err(|_| StoreError::Corrupt(format!("node {start}..{end} length")));
        }
        if n <= CHUNK && start >> CHUNK_BITS == (end - 1) >> CHUNK_BITS {
            return Ok(lucid_common::merkle::mth(&read_leaves(self.txn, start, end)?));
        }
        let k = split_point(n);
        Ok(node_hash(&self.subtree_hash(start, start + k)?, &self.subtree_hash(start + k, end)?))
    }
}

/// The frontier of the tree of `size` leaves, from stored nodes.
pub fn frontier_at(txn: &ReadTransaction, size: u64) -> Result<Frontier, StoreError> {
    let tree = StoredTree { txn };
    let mut nodes = Vec::new();
    let mut start = 0;
    for bit in (0..64).rev() {
        let width = 1u64 << bit;
        if size & width != 0 {
            nodes.push(tree.subtree_hash(start, start + width)?);
            start += width;
        }
    }
    Frontier::from_parts(size, nodes).ok_or_else(|| StoreError::Corrupt("frontier".into()))
}
