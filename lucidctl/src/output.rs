//! Output: stable JSON (`-o json`), readable text and tables, and quiet exits on a
//! closed pipe (`lucidctl logs | head`).

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use clap::ValueEnum;

use crate::client::CallError;
use crate::exit;

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text and tables.
    #[default]
    Text,
    /// Stable JSON, one document (or one object per line for streams).
    Json,
}

/// Writes a line to stdout; a closed pipe becomes a quiet, successful exit.
pub fn line(text: &str) -> Result<(), CallError> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(i32::from(exit::OK)),
        Err(e) => Err(CallError::new(exit::IO, format!("writing output: {e}"))),
    }
}

/// Writes a value as pretty JSON.
pub fn json<T: serde::Serialize>(value: &T) -> Result<(), CallError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CallError::new(exit::IO, e.to_string()))?;
    line(&text)
}

/// RFC 3339 time (milliseconds, UTC) of a nanosecond timestamp.
pub fn time(ns: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

/// A table with the house style; no header row when `header` is empty. Long cells wrap
/// to the width of the terminal (or `COLUMNS`, or 100 columns into a pipe or file)
/// rather than widening every row.
pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    if let Some(w) = fixed_width() {
        t.set_width(w);
    }
    if !header.is_empty() {
        t.set_header(header.iter().map(|h| comfy_table::Cell::new(h).add_attribute(comfy_table::Attribute::Bold)));
    }
    t
}

/// The width to wrap to where the terminal's cannot be asked: `COLUMNS`, else 100 when
/// stdout is not a terminal; `None` on a terminal (comfy-table asks it).
fn fixed_width() -> Option<u16> {
    use std::io::IsTerminal;
    match std::env::var("COLUMNS").ok().and_then(|c| c.parse::<u16>().ok()).filter(|c| *c >= 40) {
        Some(c) => Some(c),
        None if std::io::stdout().is_terminal() => None,
        None => Some(100),
    }
}

/// The width text is wrapped to: the terminal's (`COLUMNS` where set), 100 otherwise.
pub fn width() -> u16 {
    fixed_width().or_else(|| comfy_table::Table::new().width()).unwrap_or(100)
}

/// `text` as lines of at most `width` characters, broken at spaces (a word longer than
/// a line stands alone): the first line starts with `first`, the others with `rest`.
pub fn wrap(text: &str, first: &str, rest: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::replace(&mut line, rest.to_string()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    if !empty {
        lines.push(line);
    }
    lines
}

/// A table as text, without the trailing blanks that pad cells to the column width.
pub fn render(t: comfy_table::Table) -> String {
    t.to_string().lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
}

/// Bytes as a short human size.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// The first `n` characters of a daemon-supplied text (a digest, a root), whatever it
/// holds.
pub fn short(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// Parses `--since`/`--until`: RFC 3339 (`2026-11-22T10:00:00Z`), a date
/// (`2026-11-22`), or an age (`15m`, `2h`, `7d`) meaning that long ago.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let to_ns = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    if let Ok(age) = humantime::parse_duration(text) {
        return std::time::SystemTime::now().checked_sub(age).map(to_ns).ok_or_else(|| format!("{text}: further back than this clock can go"));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(to_ns(t));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(&format!("{text} 00:00:00")) {
        return Ok(to_ns(t));
    }
    Err(format!("{text:?} is not a time: use RFC 3339 (2026-11-22T10:00:00Z), a date (2026-11-22) or an age (15m, 2h, 7d)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_parse_in_three_forms() {
        assert!(super::parse_time("2026-11-22T10:00:00Z").is_ok());
        assert!(super::parse_time("2026-11-22").is_ok());
        let an_hour_ago = super::parse_time("1h").unwrap_or(0);
        let now = super::parse_time("0s").unwrap_or(0);
        assert!(now > an_hour_ago && now - an_hour_ago >= 3_599_000_000_000);
        assert!(super::parse_time("yesterday-ish").is_err());
        assert!(super::parse_time("500000000000y").is_err(), "an age before the epoch is an error, not a panic");
        assert_eq!(super::size(2048), "2.0 KiB");
        assert_eq!(super::short("ab€cd", 3), "ab€");
        assert_eq!(super::short("ab", 16), "ab");
        assert_eq!(super::wrap("aa bb cc dd", "> ", "  ", 8), ["> aa bb", "  cc dd"]);
        assert_eq!(super::wrap("averyveryverylongword x", "", "", 5), ["averyveryverylongword", "x"]);
        assert!(super::wrap("", "> ", "  ", 8).is_empty());
    }
}
