//! The ledger's on-disk layout in redb, and the reads and writes on it.
//!
//! | table         | key                        | value                                        |
//! |---------------|----------------------------|----------------------------------------------|
//! | `batches`     | first seq of the batch     | [`BatchHeader`] and body length              |
//! | `bodies`      | (first seq, part)          | the body in parts of [`PART`] bytes: leaf hashes, then zstd of packed records |
//! | `nodes`       | `height << 56 \| index`    | hash of a perfect subtree of height >= 8     |
//! | `checkpoints` | tree size                  | signed note                                  |
//! | `leaves`      | `seq >> 8` (a chunk)       | leaf hashes of pruned records, 256 a chunk   |
//! | `pruned`      | first pruned seq           | one past the last pruned seq                 |
//! | `meta`        | name                       | small values (the recovery probe)            |
//!
//! Bodies are cut into parts of one size so that redb's buddy allocator can reuse freed
//! pages exactly (one large value would take the next power of two and waste up to
//! half of it). A commit normally writes one new key at the end of `batches` (a small "segment"),
//! which keeps the pages an fsync must flush few. When a checkpoint is signed the
//! segments since the previous one are merged into one batch that compresses well, so
//! checkpoints always fall on batch boundaries. The head (tree size, frontier, last
//! time) is derived from the last batch and `nodes`, so it is never written apart from
//! the records it describes. Pruning moves a batch's leaf hashes into `leaves` and
//! deletes its body; hashes and interior nodes outlive bodies, so proofs and
//! verification keep working after retention. Every change is one transaction.

use std::path::Path;

use lucid_common::export::unpack_records;
use lucid_common::merkle::{node_hash, split_point, Frontier, Hash, SubtreeSource};
use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

/// Table of small named values.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Batch index: header and body length by first sequence number.
pub const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
/// Batch bodies in parts.
pub const BODIES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("bodies");

/// Bytes per body part: a part and its entry overhead fill a 16 KiB page.
pub const PART: usize = 16_256;
/// Leaf hashes of pruned records in chunks of [`CHUNK`].
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
    /// The write-ahead log could not be read or written.
    #[error("ledger write-ahead log: {0}")]
    Wal(#[from] std::io::Error),
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
        txn.open_table(BODIES)?;
        txn.open_table(LEAVES)?;
        txn.open_table(NODES)?;
        txn.open_table(CHECKPOINTS)?;
        txn.open_table(PRUNED)?;
    }
    txn.commit()?;
    Ok(db)
}

/// Derives the committed head from the last batch and the stored nodes.
pub fn read_head(txn: &ReadTransaction) -> Result<HeadState, StoreError> {
    let Some((first, header)) = last_batch(txn)? else { return Ok(HeadState::default()) };
    let size = first + u64::from(header.count);
    Ok(HeadState { frontier: frontier_at(txn, size)?, last_time: header.max_time })
}

/// Number of records the stored batches reach (the head's size), without computing
/// its frontier: cheap, and works on a damaged ledger that verification must report.
pub fn head_size(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(match last_batch(txn)? {
        Some((first, h)) => first + u64::from(h.count),
        None => pruned_to(txn)?,
    })
}

/// The newest batch's first sequence number and header.
fn last_batch(txn: &ReadTransaction) -> Result<Option<(u64, BatchHeader)>, StoreError> {
    let t = txn.open_table(BATCHES)?;
    let Some((k, v)) = t.last()? else { return Ok(None) };
    Ok(Some((k.value(), batch_header(k.value(), v.value())?)))
}

/// Decodes a batch's index entry; a bad one is corruption, named by its first record.
pub fn batch_header(first: u64, bytes: &[u8]) -> Result<BatchHeader, StoreError> {
    BatchHeader::decode(bytes).ok_or_else(|| StoreError::Corrupt(format!("batch {first} header")))
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

/// A stored batch: header, leaf hashes and decompressed record encodings.
pub struct Batch {
    /// First sequence number.
    pub first_seq: u64,
    /// Header.
    pub header: BatchHeader,
    /// Leaf hashes, one per record.
    pub leaves: Vec<Hash>,
    /// Packed records (see [`lucid_common::export::pack_records`]).
    pub packed: Vec<u8>,
}

impl Batch {
    /// The record encodings.
    pub fn records(&self) -> Result<Vec<&[u8]>, StoreError> {
        unpack_records(&self.packed).map_err(|e| StoreError::Corrupt(format!("batch {}: {e}", self.first_seq)))
    }
}

/// Encodes a batch body: leaf hashes, then the compressed records.
pub fn encode_body(leaves: &[Hash], packed: &[u8], level: i32) -> Result<Vec<u8>, StoreError> {
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(|e| StoreError::Corrupt(format!("zstd: {e}")))?;
    encode_body_with(&mut compressor, leaves, packed)
}

/// [`encode_body`] with a compressor that is kept and reused: creating a zstd context
/// per batch costs more than compressing a small one.
pub fn encode_body_with(
    compressor: &mut zstd::bulk::Compressor<'static>,
    leaves: &[Hash],
    packed: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let compressed =
        compressor.compress(packed).map_err(|e| StoreError::Corrupt(format!("compressing batch: {e}")))?;
    let mut body = Vec::with_capacity(leaves.len() * 32 + compressed.len());
    for l in leaves {
        body.extend_from_slice(l);
    }
    body.extend_from_slice(&compressed);
    Ok(body)
}

/// Stores a batch: its index entry and its body in parts.
pub fn put_batch(txn: &WriteTransaction, first: u64, header: &BatchHeader, body: &[u8]) -> Result<(), StoreError> {
    let mut index = header.encode().to_vec();
    index.extend_from_slice(&(body.len() as u64).to_le_bytes());
    txn.open_table(BATCHES)?.insert(first, index.as_slice())?;
    let mut bodies = txn.open_table(BODIES)?;
    for (i, part) in body.chunks(PART).enumerate() {
        bodies.insert((first, i as u32), part)?;
    }
    Ok(())
}

/// Removes a batch and returns its header and body, if it exists.
pub fn remove_batch(txn: &WriteTransaction, first: u64) -> Result<Option<(BatchHeader, Vec<u8>)>, StoreError> {
    let index = {
        let mut batches = txn.open_table(BATCHES)?;
        let removed = batches.remove(first)?.map(|v| v.value().to_vec());
        removed
    };
    let Some(index) = index else { return Ok(None) };
    let header = batch_header(first, &index)?;
    let mut bodies = txn.open_table(BODIES)?;
    let mut body = Vec::new();
    let mut part = 0u32;
    while let Some(bytes) = bodies.remove((first, part))? {
        body.extend_from_slice(bytes.value());
        part += 1;
    }
    Ok(Some((header, body)))
}

/// Deletes a batch whose contents live on elsewhere (segments merged into one batch);
/// unlike [`remove_batch`] it reads nothing back.
pub fn delete_batch(txn: &WriteTransaction, first: u64) -> Result<(), StoreError> {
    txn.open_table(BATCHES)?.remove(first)?;
    let mut bodies = txn.open_table(BODIES)?;
    let mut part = 0u32;
    while bodies.remove((first, part))?.is_some() {
        part += 1;
    }
    Ok(())
}

/// Reads a batch body from its parts.
pub fn read_body(bodies: &impl ReadableTable<(u64, u32), &'static [u8]>, first: u64) -> Result<Vec<u8>, StoreError> {
    let mut body = Vec::new();
    for item in bodies.range((first, 0)..=(first, u32::MAX))? {
        body.extend_from_slice(item?.1.value());
    }
    Ok(body)
}

/// Splits a body into leaf hashes (raw) and compressed records.
pub fn split_body<'b>(first_seq: u64, header: &BatchHeader, body: &'b [u8]) -> Result<(&'b [u8], &'b [u8]), StoreError> {
    let end = header.count as usize * 32;
    let hashes = body.get(..end).ok_or_else(|| StoreError::Corrupt(format!("batch {first_seq} hashes")))?;
    Ok((hashes, &body[end..]))
}

/// Decodes a batch from its header and body.
pub fn decode_batch(first_seq: u64, header: BatchHeader, body: &[u8]) -> Result<Batch, StoreError> {
    let (hashes, compressed) = split_body(first_seq, &header, body)?;
    let packed = zstd::decode_all(compressed)
        .map_err(|e| StoreError::Corrupt(format!("batch {first_seq} does not decompress: {e}")))?;
    let leaves = hashes.chunks_exact(32).filter_map(|c| c.try_into().ok()).collect();
    Ok(Batch { first_seq, header, leaves, packed })
}

/// First sequence number of the stored batch that holds `seq`, if any.
pub fn batch_containing(txn: &ReadTransaction, seq: u64) -> Result<Option<(u64, BatchHeader)>, StoreError> {
    let t = txn.open_table(BATCHES)?;
    let Some((k, v)) = t.range(..=seq)?.next_back().transpose()? else { return Ok(None) };
    let first = k.value();
    let header = batch_header(first, v.value())?;
    Ok((seq < first + u64::from(header.count)).then_some((first, header)))
}

/// Leaf hashes `[from, to)`: pruned ones from `leaves`, the rest from their batches.
pub fn read_leaves(txn: &ReadTransaction, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
    let pruned = pruned_to(txn)?;
    let mut out = if from < pruned { leaves_in(&txn.open_table(LEAVES)?, from, to.min(pruned))? } else { Vec::new() };
    let mut seq = from.max(pruned);
    if seq >= to {
        return Ok(out);
    }
    let start = batch_containing(txn, seq)?.map(|(first, _)| first).unwrap_or(seq);
    let batches = txn.open_table(BATCHES)?;
    let bodies = txn.open_table(BODIES)?;
    for item in batches.range(start..to)? {
        let (k, v) = item?;
        let first = k.value();
        let header = batch_header(first, v.value())?;
        let body = read_body(&bodies, first)?;
        let (hashes, _) = split_body(first, &header, &body)?;
        if first > seq {
            return Err(StoreError::Corrupt(format!("leaves {seq}..{first} missing")));
        }
        let end = (first + u64::from(header.count)).min(to);
        for s in seq..end {
            let off = ((s - first) * 32) as usize;
            let h: Hash = hashes.get(off..off + 32).and_then(|b| b.try_into().ok()).ok_or_else(|| StoreError::Corrupt(format!("leaf {s}")))?;
            out.push(h);
        }
        seq = end;
        if seq >= to {
            break;
        }
    }
    if seq < to {
        return Err(StoreError::Corrupt(format!("leaves {seq}..{to} missing")));
    }
    Ok(out)
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
        if n.is_power_of_two() && start.is_multiple_of(n) && n >= CHUNK {
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
