//! Where a rule's matches can begin, found without running the rule over the text.
//!
//! Most provider tokens begin with a fixed prefix holding a byte that prose seldom uses
//! (`ghp_`, `sk-ant-`, `xoxb-`, `npm_`, `-----BEGIN`). For such a rule every match has
//! that byte at a fixed distance from its start, so the places a match can begin are
//! the places that byte occurs. One `memchr` pass per byte, shared by every rule anchored
//! on it, replaces one prefilter pass per rule; the rule's regex then runs anchored at
//! those places only. Which rule is anchored, and where, is derived from the regex
//! itself (its prefix literals, as `regex-syntax` extracts them), so an operator's
//! gitleaks rules get the same treatment as the built-in ones, and a rule that does not
//! qualify simply runs over the whole text as before.

use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// Bytes that may anchor a rule, rarest first in prose and code.
const ANCHOR_BYTES: &[u8] = b"_=@$%&~^|\\<>[]{}#*+;:/-";

/// Texts where an anchor byte is denser than one in this many bytes scan the rules
/// anchored on it the ordinary way: anchored searches at so many places would cost more
/// than one pass of the rule's own prefilter.
const MAX_DENSITY: usize = 48;

/// A rule's anchor: every match starts with one of `prefixes`, all of which hold `byte`
/// at `offset`.
#[derive(Debug)]
pub struct Anchor {
    /// The byte looked for.
    pub byte: u8,
    /// Its distance from the start of a match.
    pub offset: usize,
    /// The literals every match starts with.
    pub prefixes: Vec<Vec<u8>>,
}

impl Anchor {
    /// The anchor of `pattern`, if every match begins with one of a finite set of
    /// literals that agree on an anchor byte at some offset; `None` otherwise.
    pub fn of(pattern: &str) -> Option<Anchor> {
        let hir = regex_syntax::parse(pattern).ok()?;
        let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
        let literals = seq.literals()?;
        let first = literals.first()?.as_bytes();
        let shortest = literals.iter().map(|l| l.len()).min()?;
        let mut best: Option<(usize, usize)> = None; // (rank in ANCHOR_BYTES, offset)
        for (offset, byte) in first.iter().enumerate().take(shortest) {
            let Some(rank) = ANCHOR_BYTES.iter().position(|b| b == byte) else { continue };
            if literals.iter().all(|l| l.as_bytes()[offset] == *byte) && best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, offset));
            }
        }
        let (rank, offset) = best?;
        Some(Anchor { byte: ANCHOR_BYTES[rank], offset, prefixes: literals.iter().map(|l| l.as_bytes().to_vec()).collect() })
    }

    /// The places in `text` where a match can begin, in increasing order, given the
    /// positions of this anchor's byte.
    pub fn starts<'a>(&'a self, text: &'a [u8], positions: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
        positions.iter().filter_map(move |q| {
            let p = q.checked_sub(self.offset)?;
            let rest = text.get(p..)?;
            self.prefixes.iter().any(|l| rest.starts_with(l)).then_some(p)
        })
    }
}

/// Where each anchor byte occurs in one text, found once per text and shared by the
/// rules anchored on it.
pub struct Positions<'t> {
    text: &'t [u8],
    found: [Option<Option<Vec<usize>>>; ANCHOR_BYTES.len()],
}

impl<'t> Positions<'t> {
    /// Nothing looked up yet in `text`.
    pub fn new(text: &'t [u8]) -> Positions<'t> {
        Positions { text, found: Default::default() }
    }

    /// The positions of `byte` in the text, or `None` where it is too dense for
    /// anchored searches to pay.
    pub fn of(&mut self, byte: u8) -> Option<&[usize]> {
        let slot = ANCHOR_BYTES.iter().position(|b| *b == byte)?;
        let text = self.text;
        self.found[slot]
            .get_or_insert_with(|| {
                let limit = text.len() / MAX_DENSITY + 16;
                let mut at = Vec::new();
                for p in memchr::memchr_iter(byte, text) {
                    if at.len() == limit {
                        return None;
                    }
                    at.push(p);
                }
                Some(at)
            })
            .as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_come_from_the_rarest_byte_every_prefix_shares() {
        let a = Anchor::of(r"\b((?:ghp|gho|ghu)_[A-Za-z0-9]{36})\b").unwrap();
        assert_eq!((a.byte, a.offset, a.prefixes.len()), (b'_', 3, 3));
        let a = Anchor::of(r"\b(sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{80})").unwrap();
        assert_eq!((a.byte, a.offset), (b'-', 2));
        // No shared rare byte, no finite prefix set, or a prefix too short to hold one.
        assert!(Anchor::of(r"\b(?:EAAA|sq0atp-)[A-Za-z0-9_-]{22}").is_none());
        assert!(Anchor::of(r"\b\d{8,10}:AA[A-Za-z0-9_-]{33}").is_none());
        assert!(Anchor::of(r"\bSK[0-9a-f]{32}").is_none());
    }

    #[test]
    fn starts_are_where_a_prefix_holds_the_anchor() {
        let a = Anchor::of(r"(?:ghp|gho)_[a-z]+").unwrap();
        let text = b"_x ghp_abc gh_ gho_d xghp_";
        let mut positions = Positions::new(text);
        let at = positions.of(b'_').unwrap().to_vec();
        assert_eq!(a.starts(text, &at).collect::<Vec<_>>(), [3, 15, 22]);
        // Too dense: the caller falls back to scanning.
        let dense = vec![b'_'; 4096];
        assert!(Positions::new(&dense).of(b'_').is_none());
    }
}
