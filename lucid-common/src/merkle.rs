//! RFC 6962 Merkle tree hashing, a compact frontier, and RFC 9162 proofs.
//!
//! The ledger appends leaves to a [`Frontier`] (O(log n) state) and asks a
//! [`SubtreeSource`] (its storage) for subtree hashes when it builds proofs. Proof
//! *generation* is here, next to verification, so both follow one reading of the RFC
//! and are tested against each other.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Hash of a leaf: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// Hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The right edge of a tree: the roots of its perfect subtrees, largest first.
///
/// This is all the state needed to append leaves and compute the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// Rebuilds a frontier from its parts; `None` if the node count does not match
    /// the number of set bits in `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Frontier> {
        (size.count_ones() as usize == nodes.len()).then_some(Frontier { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, largest (leftmost) first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _| {});
    }

    /// Appends one leaf hash and reports every perfect subtree it completes as
    /// `(height, hash)`, from the leaf itself (height 0) upwards. The subtree of height
    /// `h` completed by the push has index `(new size >> h) - 1` at its level; storage
    /// uses this to keep interior nodes for proofs.
    pub fn push_with(&mut self, leaf: Hash, mut completed: impl FnMut(u32, &Hash)) {
        let mut hash = leaf;
        let mut size = self.size;
        let mut height = 0;
        completed(height, &hash);
        while size & 1 == 1 {
            // A set low bit means a perfect subtree of this height is waiting for a
            // right sibling: merge it.
            let Some(left) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            size >>= 1;
            height += 1;
            completed(height, &hash);
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The Merkle tree hash of all leaves so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(last) = iter.next() else { return empty_root() };
        iter.fold(*last, |right, left| node_hash(left, &right))
    }

    /// Serialises as `size` (8 bytes little-endian) followed by the nodes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.nodes.len());
        out.extend_from_slice(&self.size.to_le_bytes());
        for n in &self.nodes {
            out.extend_from_slice(n);
        }
        out
    }

    /// Parses [`Frontier::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Frontier> {
        let size = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let rest = &bytes[8..];
        if !rest.len().is_multiple_of(32) {
            return None;
        }
        let nodes = rest.chunks_exact(32).map(|c| c.try_into().ok()).collect::<Option<Vec<Hash>>>()?;
        Frontier::from_parts(size, nodes)
    }
}

/// Largest power of two strictly smaller than `n` (n >= 2), the RFC 6962 split point.
pub fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Where proof generation gets the Merkle tree hash of a range of leaves.
pub trait SubtreeSource {
    /// The error of the underlying storage.
    type Error;
    /// MTH of leaves `[start, end)`, `end > start`.
    fn subtree_hash(&self, start: u64, end: u64) -> Result<Hash, Self::Error>;
}

/// Inclusion proof (RFC 6962 `PATH`) for leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof<S: SubtreeSource>(src: &S, index: u64, size: u64) -> Result<Vec<Hash>, S::Error> {
    let mut proof = Vec::new();
    // Iterative form of PATH(m, D[start:end]): descend, collecting siblings, then
    // reverse so the deepest sibling comes first.
    let (mut start, mut end, mut m) = (0u64, size, index);
    while end - start > 1 {
        let k = split_point(end - start);
        if m < k {
            proof.push(src.subtree_hash(start + k, end)?);
            end = start + k;
        } else {
            proof.push(src.subtree_hash(start, start + k)?);
            start += k;
            m -= k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Consistency proof (RFC 6962 `PROOF`) from the tree of `old` leaves to `new` leaves.
pub fn consistency_proof<S: SubtreeSource>(src: &S, old: u64, new: u64) -> Result<Vec<Hash>, S::Error> {
    let mut proof = Vec::new();
    if old == 0 || old >= new {
        return Ok(proof);
    }
    // SUBPROOF(m, D[start:end], b), iteratively.
    let (mut start, mut end, mut m, mut complete) = (0u64, new, old, true);
    loop {
        let n = end - start;
        if m == n {
            if !complete {
                proof.push(src.subtree_hash(start, end)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            proof.push(src.subtree_hash(start + k, end)?);
            end = start + k;
        } else {
            proof.push(src.subtree_hash(start, start + k)?);
            start += k;
            m -= k;
            complete = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Checks an inclusion proof (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, *leaf);
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// Checks a consistency proof (RFC 9162 section 2.1.4.2).
pub fn verify_consistency(old: u64, new: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> bool {
    if old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *old_root && sr == *new_root && snode == 0
}

/// Leaves held in memory: the reference [`SubtreeSource`] for tests and small trees.
pub struct MemoryLeaves<'a>(pub &'a [Hash]);

impl SubtreeSource for MemoryLeaves<'_> {
    type Error = std::convert::Infallible;

    fn subtree_hash(&self, start: u64, end: u64) -> Result<Hash, Self::Error> {
        Ok(mth(&self.0[start as usize..end as usize]))
    }
}

/// Merkle tree hash of a slice of leaf hashes (RFC 6962 `MTH`), recursively.
pub fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    #[test]
    fn rfc6962_empty_and_single() {
        assert_eq!(
            crate::hex::encode(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // RFC 6962 test vector: leaf hash of the empty string.
        assert_eq!(
            crate::hex::encode(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn frontier_root_matches_recursive_mth() {
        let all = leaves(70);
        let mut f = Frontier::default();
        assert_eq!(f.root(), mth(&[]));
        for (i, l) in all.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.root(), mth(&all[..=i]), "size {}", i + 1);
            let back = Frontier::from_bytes(&f.to_bytes());
            assert_eq!(back.as_ref(), Some(&f));
        }
    }

    #[test]
    fn push_with_reports_completed_subtrees() {
        let all = leaves(16);
        let mut f = Frontier::default();
        let mut seen = Vec::new();
        for l in &all {
            f.push_with(*l, |h, hash| seen.push((h, *hash)));
        }
        // 16 leaves complete 16 + 8 + 4 + 2 + 1 perfect subtrees.
        assert_eq!(seen.len(), 31);
        assert!(seen.iter().any(|(h, hash)| *h == 4 && *hash == mth(&all)));
        assert!(seen.iter().any(|(h, hash)| *h == 3 && *hash == mth(&all[8..16])));
    }

    #[test]
    fn inclusion_proofs_verify_and_reject_tampering() {
        let all = leaves(37);
        let src = MemoryLeaves(&all);
        for size in 1..=all.len() as u64 {
            let root = mth(&all[..size as usize]);
            for index in 0..size {
                let Ok(proof) = inclusion_proof(&src, index, size);
                assert!(verify_inclusion(index, size, &all[index as usize], &proof, &root), "{index}/{size}");
                let wrong = leaf_hash(b"other");
                assert!(!verify_inclusion(index, size, &wrong, &proof, &root));
                if size > 1 {
                    assert!(!verify_inclusion((index + 1) % size, size, &all[index as usize], &proof, &root));
                }
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_reject_tampering() {
        let all = leaves(33);
        let src = MemoryLeaves(&all);
        for new in 1..=all.len() as u64 {
            for old in 1..=new {
                let Ok(proof) = consistency_proof(&src, old, new);
                let (r1, r2) = (mth(&all[..old as usize]), mth(&all[..new as usize]));
                assert!(verify_consistency(old, new, &r1, &r2, &proof), "{old}->{new}");
                if old < new {
                    assert!(!verify_consistency(old, new, &leaf_hash(b"x"), &r2, &proof));
                    assert!(!verify_consistency(old, new, &r1, &leaf_hash(b"x"), &proof));
                }
            }
        }
    }
}
