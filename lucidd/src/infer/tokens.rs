//! Token-classification heads: a probability per token that it belongs to an entity
//! (a person's name), scored on the same hidden states as the sequence heads, in the
//! same encoder pass. A pack ships them as `token_heads.json` + `token_heads.safetensors`
//! (`models/guard/train_names.py` trains the default one).
//!
//! A head reads, for each token, the hidden states of the token and of its neighbours
//! on either side and, optionally, five features of the word's case and place (the
//! default encoder lower-cases its input, so capitals would otherwise be lost), through
//! one hidden layer to a sigmoid. The neighbours' contributions are one fused GEMM over
//! the hidden states, shifted by a row, rather than a matrix three times as wide.

use std::path::Path;

use serde::Deserialize;

use super::encoder::Packed;
use super::ops::{Activation, Linear};
use super::weights::Weights;
use super::InferError;

/// Case features per token (see [`Words::case_features`]).
pub const CASE_FEATURES: usize = 5;

/// Characters of a word that its case features read.
const WORD_CHARS: usize = 64;

/// One token head.
pub struct TokenHead {
    /// Its name (`names`).
    pub name: String,
    /// The entity its spans are (`person`).
    pub entity: String,
    /// The probability from which a token is part of a span.
    pub threshold: f32,
    /// Whether it reads [`case_features`].
    pub case: bool,
    hidden: usize,
    /// Previous, own and next token's weights, fused: `[3 * hidden, width]`.
    neighbours: Linear,
    /// Case features' weights (already scaled), `[hidden][CASE_FEATURES]`, and the bias.
    case_w: Vec<f32>,
    bias: Vec<f32>,
    activation: Activation,
    out: Linear,
}

#[derive(Deserialize)]
struct Spec {
    heads: Vec<SpecHead>,
}

#[derive(Deserialize)]
struct SpecHead {
    name: String,
    entity: String,
    /// Neighbours read on each side (only 1 is supported).
    context: usize,
    /// The factor case features are multiplied by; 0 or absent: none.
    #[serde(default)]
    case_features: f32,
    hidden_activation: String,
    threshold: f32,
}

impl TokenHead {
    /// The heads in `dir/token_heads.json`, or none where the pack has no such file.
    pub fn from_pack(dir: &Path, width: usize) -> Result<Vec<TokenHead>, InferError> {
        let spec_path = dir.join("token_heads.json");
        if !spec_path.exists() {
            return Ok(Vec::new());
        }
        let format = |message: String| InferError::Format { path: spec_path.display().to_string(), message };
        let text = std::fs::read_to_string(&spec_path).map_err(|source| InferError::Io { path: spec_path.display().to_string(), source })?;
        let spec: Spec = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
        let mut w = Weights::load_any(&dir.join("token_heads.safetensors"))?;
        let mut heads = Vec::new();
        for h in spec.heads {
            if h.context != 1 {
                return Err(format(format!("token head {}: context must be 1, found {}", h.name, h.context)));
            }
            if !(h.threshold > 0.0 && h.threshold < 1.0) {
                return Err(format(format!("token head {}: threshold must be between 0 and 1, found {}", h.name, h.threshold)));
            }
            let case = h.case_features != 0.0;
            let inp = 3 * width + if case { CASE_FEATURES } else { 0 };
            let hidden = w.shape(&format!("{}.pre.weight", h.name)).and_then(|s| s.first().copied()).unwrap_or(0);
            let pre = w.take(&format!("{}.pre.weight", h.name), &[hidden, inp])?;
            let bias = w.take(&format!("{}.pre.bias", h.name), &[hidden])?;
            let out = Linear::load(&mut w, &format!("{}.out", h.name), 1, hidden)?;
            // [hidden, inp] split by columns into the three neighbours and the case block.
            let block = |b: usize| -> Vec<f32> { pre.chunks_exact(inp).flat_map(|row| row[b * width..(b + 1) * width].iter().copied()).collect() };
            let zeros = vec![0.0; hidden];
            let neighbours = Linear::concat((0..3).map(|b| Linear::from_parts(block(b), zeros.clone(), hidden, width)).collect());
            let case_w = match case {
                true => pre.chunks_exact(inp).flat_map(|row| row[3 * width..].iter().map(|v| v * h.case_features)).collect(),
                false => Vec::new(),
            };
            heads.push(TokenHead {
                name: h.name,
                entity: h.entity,
                threshold: h.threshold,
                case,
                hidden,
                neighbours,
                case_w,
                bias,
                activation: Activation::parse(&h.hidden_activation)?,
                out,
            });
        }
        Ok(heads)
    }

    /// The probability of every packed row (`case`: each row's case features, empty
    /// when no head reads them).
    pub fn apply(&self, hidden: &[f32], batch: &Packed, case: &[[f32; CASE_FEATURES]]) -> Vec<f32> {
        let rows = batch.rows();
        let n = self.hidden;
        let p = self.neighbours.forward(hidden, rows);
        let mut pre = vec![0.0f32; rows * n];
        for &(start, len) in &batch.seqs {
            for t in start..start + len {
                let row = &mut pre[t * n..(t + 1) * n];
                row.copy_from_slice(&self.bias);
                let mut add = |src: usize, block: usize| {
                    row.iter_mut().zip(&p[src * 3 * n + block * n..src * 3 * n + (block + 1) * n]).for_each(|(r, v)| *r += v);
                };
                if t > start {
                    add(t - 1, 0);
                }
                add(t, 1);
                if t + 1 < start + len {
                    add(t + 1, 2);
                }
                if let (true, Some(f)) = (self.case, case.get(t)) {
                    for (j, r) in row.iter_mut().enumerate() {
                        *r += self.case_w[j * CASE_FEATURES..(j + 1) * CASE_FEATURES].iter().zip(f).map(|(w, x)| w * x).sum::<f32>();
                    }
                }
            }
        }
        self.activation.apply(&mut pre);
        self.out.forward(&pre, rows).into_iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
    }
}

/// Whether `c` continues a word (letters, digits, apostrophes, hyphens).
fn in_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '\'' | '-' | '\u{2019}')
}

/// The words of a text (maximal runs of [`in_word`] characters), found in one pass so
/// that widening each token to its word costs a binary search, not a walk along the
/// word: a text of one long hyphenated "word" would otherwise cost the square of its
/// length.
pub struct Words<'a> {
    text: &'a str,
    runs: Vec<(usize, usize)>,
}

impl<'a> Words<'a> {
    /// The words of `text`.
    pub fn new(text: &'a str) -> Words<'a> {
        let mut runs = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            match (in_word(c), start) {
                (true, None) => start = Some(i),
                (false, Some(a)) => {
                    runs.push((a, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(a) = start {
            runs.push((a, text.len()));
        }
        Words { text, runs }
    }

    /// The byte span `s..e` widened to the whole word it is part of: back to the start
    /// of the word that ends at or runs through `s`, on to the end of the word that
    /// starts at or runs through `e`.
    pub fn widen(&self, s: usize, e: usize) -> (usize, usize) {
        // The run containing the character just before `s`, and the one containing the
        // character at `e`.
        let i = self.runs.partition_point(|r| r.1 < s);
        let s = match self.runs.get(i) {
            Some(&(a, b)) if a < s && s <= b => a,
            _ => s,
        };
        let j = self.runs.partition_point(|r| r.1 <= e);
        let e = match self.runs.get(j) {
            Some(&(a, b)) if a <= e && e < b => b,
            _ => e,
        };
        (s, e)
    }

    /// A token's case features from its byte offsets: its word starts with a capital;
    /// is all capitals (two characters or more); has a digit; the token starts the word;
    /// the word starts the text, a line or a sentence (after `. ! ? :`, a quote or an
    /// opening bracket); of a word's first 64 characters. Zero for special tokens (empty
    /// offsets).
    pub fn case_features(&self, (s, e): (usize, usize)) -> [f32; CASE_FEATURES] {
        let text = self.text;
        if e <= s || text.get(s..e).is_none() {
            return [0.0; CASE_FEATURES];
        }
        let (ws, we) = self.widen(s, e);
        // The word's first characters only: a word of a whole text ("a-a-a-...") read once
        // per token would cost the square of its length, and no name is that long.
        let w: String = text[ws..we].chars().take(WORD_CHARS).collect();
        let upper = w.chars().any(char::is_uppercase) && !w.chars().any(char::is_lowercase);
        let before = text[..ws].trim_end_matches([' ', '\t']);
        let opens = before.chars().next_back().is_none_or(|c| ".!?:\n\"'(".contains(c));
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        [b(w.chars().next().is_some_and(char::is_uppercase)), b(w.chars().count() > 1 && upper), b(w.chars().any(char::is_numeric)), b(s == ws), b(opens)]
    }

    /// Spans whose tokens' probabilities (`(start, end, probability)` in byte offsets,
    /// in order) reach `threshold`: each token widened to its word, neighbours separated
    /// by nothing but spaces or tabs merged (not across lines: a list of names is a list);
    /// each with its highest probability.
    pub fn spans(&self, tokens: &[(usize, usize, f32)], threshold: f32) -> Vec<(usize, usize, f32)> {
        let text = self.text;
        let mut out: Vec<(usize, usize, f32)> = Vec::new();
        for &(s, e, p) in tokens {
            if e <= s || p < threshold || text.get(s..e).is_none() {
                continue;
            }
            let (s, e) = self.widen(s, e);
            match out.last_mut() {
                Some(last) if s <= last.1 + 1 && text.get(last.1.min(s)..s).is_some_and(|gap| gap.chars().all(|c| c == ' ' || c == '\t')) => {
                    last.1 = last.1.max(e);
                    last.2 = last.2.max(p);
                }
                _ => out.push((s, e, p)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_widened_and_neighbours_merged() {
        let text = "cc Jean-Luc O\u{2019}Neill, Zoë Ölund";
        let words = Words::new(text);
        let j = text.find("Luc").unwrap();
        let (a, b) = words.widen(j, j + 2);
        assert_eq!(&text[a..b], "Jean-Luc");
        let spans = |toks: &[(usize, usize, f32)], t: f32| words.spans(toks, t);
        let o = text.find("Neill").unwrap();
        let z = text.find("Zoë").unwrap();
        let toks = [(j, j + 3, 0.95), (o, o + 5, 0.93), (z, z + 2, 0.97), (z + 5, z + 7, 0.2)];
        let got: Vec<&str> = spans(&toks, 0.9).iter().map(|(s, e, _)| &text[*s..*e]).collect();
        assert_eq!(got, ["Jean-Luc O\u{2019}Neill", "Zoë"]);
        // A comma between two names keeps them apart.
        let toks = [(j, j + 3, 0.95), (z, z + 2, 0.97)];
        assert_eq!(spans(&toks, 0.9).len(), 2);
        // Offsets off a character boundary or out of range are skipped, not a panic.
        assert!(spans(&[(z + 2, z + 3, 0.99), (900, 901, 0.99)], 0.5).is_empty());
        // Two names on two lines are two names.
        let list = "Anna Berg\nPeter Braun";
        let toks = [(0, 4, 0.99), (5, 9, 0.99), (10, 15, 0.99), (16, 21, 0.99)];
        assert_eq!(Words::new(list).spans(&toks, 0.9), [(0, 9, 0.99), (10, 21, 0.99)]);
        // Punctuation next to a word joins it, as the training pipeline's widening does.
        let words = Words::new("Smith, Jones");
        assert_eq!(words.widen(5, 6), (0, 6));
        assert_eq!(words.widen(6, 7), (6, 12));
    }

    /// A text that is one long hyphenated word: widening every token to it costs a
    /// binary search each, not a walk along the word (which made this quadratic).
    #[test]
    fn widening_every_token_of_one_long_word_is_linear() {
        let time = |n: usize| {
            let text = "a-".repeat(n);
            let t = std::time::Instant::now();
            let words = Words::new(&text);
            let f: f32 = (0..n).map(|k| words.case_features((2 * k, 2 * k + 1))[0]).sum();
            let spans = words.spans(&(0..n).map(|k| (2 * k, 2 * k + 1, 1.0)).collect::<Vec<_>>(), 0.5);
            assert_eq!((f, spans.len()), (0.0, 1));
            t.elapsed()
        };
        let (small, large) = (time(20_000), time(320_000));
        assert!(large < small * 64, "16 times the text took {:?} against {:?}", large, small);
    }

    #[test]
    fn case_features_read_the_original_text() {
        let text = "Dear Ms SMITH: call ab12 now.\nAnna";
        let words = Words::new(text);
        let f = |word: &str, from: usize| {
            let s = text.find(word).unwrap() + from;
            words.case_features((s, s + 1))
        };
        assert_eq!(f("Dear", 0), [1.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!(f("SMITH", 0), [1.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(f("call", 0), [0.0, 0.0, 0.0, 1.0, 1.0], "after a colon");
        assert_eq!(f("ab12", 2), [0.0, 0.0, 1.0, 0.0, 0.0], "a token inside its word");
        assert_eq!(f("Anna", 0), [1.0, 0.0, 0.0, 1.0, 1.0], "a new line");
        assert_eq!(words.case_features((0, 0)), [0.0; CASE_FEATURES]);
    }
}
