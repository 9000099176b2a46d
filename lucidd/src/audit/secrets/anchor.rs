//! Where a rule's matches can begin, found without running the rule over the text.
//!
//! Most provider tokens begin with one of a few fixed prefixes (`ghp_`, `sk-ant-`,
//! `AKIA`, `glpat-`). Running each rule's regex over a text costs one prefilter pass
//! per rule; finding the places its prefixes occur once, for many rules together, and
//! running each regex anchored at those places only, costs one pass in all:
//!
//! - a rule whose prefixes all hold a byte prose seldom uses at one offset (`_` in
//!   `ghp_`, `-` in `xoxb-`) is found through the positions of that byte, one `memchr`
//!   pass per byte for every rule anchored on it;
//! - the other rules with a few short prefixes share one Teddy pass (the SIMD
//!   multi-literal search of `aho-corasick`) over all their prefixes.
//!
//! Which rule is anchored, and how, is derived from the regex itself (its prefix
//! literals, as `regex-syntax` extracts them: every match begins with one of them), so
//! an operator's gitleaks rules get the same treatment as the built-in ones, and a rule
//! that does not qualify runs over the whole text with its own prefilter.

use aho_corasick::packed;
use aho_corasick::Span;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// Bytes that may anchor a rule, rarest first in prose and code.
const ANCHOR_BYTES: &[u8] = b"_=@$%&~^|\\<>[]{}#*+;:/-";

/// Texts where candidates are denser than one in this many bytes scan the rules
/// concerned the ordinary way: anchored searches at so many places would cost more
/// than a pass of each rule's own prefilter.
const MAX_DENSITY: usize = 48;

/// The most prefixes a rule may bring to the shared pass, and the most the pass holds:
/// Teddy slows down as its buckets fill (28 prefixes measured 6 us per 64 KiB, 39 of
/// one rule's 12 us, where that rule alone runs in 8).
const SHARED_PER_RULE: usize = 16;
const SHARED_TOTAL: usize = 48;

/// How a rule's candidate starts are found.
#[derive(Debug, PartialEq)]
pub enum Via {
    /// Through the positions of `byte`, which every prefix holds at `offset`.
    Byte {
        /// The byte looked for.
        byte: u8,
        /// Its distance from the start of a match.
        offset: usize,
    },
    /// Through the shared pass over the prefixes of every rule found this way.
    Shared,
}

/// A rule's anchor: every match starts with one of `prefixes`.
#[derive(Debug)]
pub struct Anchor {
    /// How candidates are found.
    pub via: Via,
    /// The literals every match starts with.
    pub prefixes: Vec<Vec<u8>>,
}

impl Anchor {
    /// The places in `text` where a match can begin, in increasing order, given the
    /// positions found for this anchor (`Positions::of`).
    pub fn starts<'a>(&'a self, text: &'a [u8], positions: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
        let offset = match self.via {
            Via::Byte { offset, .. } => offset,
            Via::Shared => 0,
        };
        positions.iter().filter_map(move |q| {
            let p = q.checked_sub(offset)?;
            let rest = text.get(p..)?;
            self.prefixes.iter().any(|l| rest.starts_with(l)).then_some(p)
        })
    }
}

/// The literals every match of `pattern` begins with, when there is a finite set of
/// non-empty ones.
fn prefixes(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::parse(pattern).ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let literals = seq.literals()?;
    let out: Vec<Vec<u8>> = literals.iter().map(|l| l.as_bytes().to_vec()).collect();
    (!out.is_empty() && out.iter().all(|l| !l.is_empty())).then_some(out)
}

/// Decides each rule's anchor and builds the shared pass.
#[derive(Default)]
pub struct Planner {
    shared: Vec<Vec<u8>>,
}

impl Planner {
    /// The anchor of a rule with regex `pattern`, if it has one.
    pub fn plan(&mut self, pattern: &str) -> Option<Anchor> {
        let prefixes = prefixes(pattern)?;
        let first = prefixes.first()?;
        let shortest = prefixes.iter().map(Vec::len).min()?;
        let mut best: Option<(usize, usize)> = None; // (rank in ANCHOR_BYTES, offset)
        for (offset, byte) in first.iter().enumerate().take(shortest) {
            let Some(rank) = ANCHOR_BYTES.iter().position(|b| b == byte) else { continue };
            if prefixes.iter().all(|l| l[offset] == *byte) && best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, offset));
            }
        }
        if let Some((rank, offset)) = best {
            return Some(Anchor { via: Via::Byte { byte: ANCHOR_BYTES[rank], offset }, prefixes });
        }
        if shortest >= 3 && prefixes.len() <= SHARED_PER_RULE && self.shared.len() + prefixes.len() <= SHARED_TOTAL {
            self.shared.extend(prefixes.iter().cloned());
            return Some(Anchor { via: Via::Shared, prefixes });
        }
        None
    }

    /// The shared pass, or `None` when no rule uses it or no SIMD searcher can be built
    /// on this machine (the caller then scans those rules the ordinary way).
    pub fn finish(mut self) -> Option<packed::Searcher> {
        self.shared.sort();
        self.shared.dedup();
        packed::Config::new().match_kind(packed::MatchKind::LeftmostFirst).builder().extend(&self.shared).build()
    }
}

/// Where anchors occur in one text, found once per text and shared by the rules
/// anchored on them.
pub struct Positions<'t> {
    text: &'t [u8],
    shared: Option<&'t packed::Searcher>,
    bytes: [Option<Option<Vec<usize>>>; ANCHOR_BYTES.len()],
    shared_found: Option<Option<Vec<usize>>>,
}

impl<'t> Positions<'t> {
    /// Nothing looked up yet in `text`; `shared` is the shared pass, if there is one.
    pub fn new(text: &'t [u8], shared: Option<&'t packed::Searcher>) -> Positions<'t> {
        Positions { text, shared, bytes: Default::default(), shared_found: None }
    }

    /// The positions for `anchor` (of its byte, or where any shared prefix begins), or
    /// `None` where they are too dense for anchored searches to pay.
    pub fn of(&mut self, anchor: &Anchor) -> Option<&[usize]> {
        let text = self.text;
        let limit = text.len() / MAX_DENSITY + 16;
        let slot = match anchor.via {
            Via::Byte { byte, .. } => {
                let slot = ANCHOR_BYTES.iter().position(|b| *b == byte)?;
                self.bytes[slot].get_or_insert_with(|| capped(memchr::memchr_iter(byte, text), limit))
            }
            Via::Shared => {
                let searcher = self.shared?;
                self.shared_found.get_or_insert_with(|| {
                    // Restarting one past each match start finds every position where
                    // some prefix begins, not only the leftmost of overlapping ones.
                    let mut at = 0;
                    let all = std::iter::from_fn(|| {
                        let m = searcher.find_in(text, Span::from(at..text.len()))?;
                        at = m.start() + 1;
                        Some(m.start())
                    });
                    capped(all, limit)
                })
            }
        };
        slot.as_deref()
    }
}

/// The first `limit` items, or `None` when there are more.
fn capped(items: impl Iterator<Item = usize>, limit: usize) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for p in items {
        if out.len() == limit {
            return None;
        }
        out.push(p);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_anchored_on_a_rare_shared_byte_or_join_the_shared_pass() {
        let mut planner = Planner::default();
        let a = planner.plan(r"\b((?:ghp|gho|ghu)_[A-Za-z0-9]{36})\b").unwrap();
        assert_eq!((a.via, a.prefixes.len()), (Via::Byte { byte: b'_', offset: 3 }, 3));
        let a = planner.plan(r"\b(sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{80})").unwrap();
        assert_eq!(a.via, Via::Byte { byte: b'-', offset: 2 });
        // No shared rare byte: the shared pass.
        assert_eq!(planner.plan(r"\b(?:EAAA|sq0atp-)[A-Za-z0-9_-]{22}").unwrap().via, Via::Shared);
        assert_eq!(planner.plan(r"\b(?:glpat|gldt)-[a-z]{20}").unwrap().via, Via::Shared);
        // No finite prefix set, or prefixes too short for the shared pass.
        assert!(planner.plan(r"\b\d{8,10}:AA[A-Za-z0-9_-]{33}").is_none());
        assert!(planner.plan(r"\bSK[0-9a-f]{32}").is_none());
        assert!(planner.finish().is_some());
    }

    #[test]
    fn starts_are_where_a_prefix_holds_the_anchor() {
        let mut planner = Planner::default();
        let a = planner.plan(r"(?:ghp|gho)_[a-z]+").unwrap();
        let text = b"_x ghp_abc gh_ gho_d xghp_";
        let mut positions = Positions::new(text, None);
        let at = positions.of(&a).unwrap().to_vec();
        assert_eq!(a.starts(text, &at).collect::<Vec<_>>(), [3, 15, 22]);
        // Too dense: the caller falls back to scanning.
        let dense = vec![b'_'; 4096];
        assert!(Positions::new(&dense, None).of(&a).is_none());
    }

    #[test]
    fn the_shared_pass_finds_overlapping_prefixes_of_different_rules() {
        let mut planner = Planner::default();
        let aws = planner.plan(r"\b(?:AKIA|ASIA)[A-Z2-7]{16}").unwrap();
        let acc = planner.plan(r"AKIAX[0-9]+").unwrap();
        let square = planner.plan(r"(?:EAAA|sq0)[a-z]+").unwrap();
        let shared = planner.finish().unwrap();
        let text = b"AKIAX1 EAAAKIA sq0";
        let mut positions = Positions::new(text, Some(&shared));
        let at = positions.of(&aws).unwrap().to_vec();
        assert_eq!(aws.starts(text, &at).collect::<Vec<_>>(), [0, 10]);
        assert_eq!(acc.starts(text, &at).collect::<Vec<_>>(), [0]);
        assert_eq!(square.starts(text, &at).collect::<Vec<_>>(), [7, 15]);
    }
}
