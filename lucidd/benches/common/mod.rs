//! What the benchmarks share: exiting with a message instead of panicking, a seeded
//! generator for reproducible inputs, and running a peer script from the repository's
//! virtualenvs.

#![allow(dead_code)] // each bench uses only part of this

use std::path::{Path, PathBuf};

/// Prints `bench: msg` and exits 1 (benches report, they do not panic).
pub fn fail(bench: &str, msg: &str) -> ! {
    eprintln!("{bench} bench: {msg}");
    std::process::exit(1)
}

/// xorshift64: the same inputs on every run and in every peer.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value; 0 is made odd).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `python script args...` (python of the virtualenv `venv` under the repository)
/// and parses the JSON object on the last line it prints (peers may log to stdout); a
/// peer that cannot run is reported in the result as `{"error": ...}` with the last
/// line of its stderr, never hidden.
pub fn run_peer(venv: &str, script: &str, args: &[String]) -> serde_json::Value {
    let root = repo_root();
    let python = root.join(venv).join("bin/python");
    let script = root.join(script);
    let failed = |why: String| serde_json::json!({ "error": format!("{} {}: {why}", python.display(), script.display()) });
    match std::process::Command::new(&python).arg(&script).args(args).output() {
        Err(e) => failed(e.to_string()),
        Ok(o) => {
            let stdout = String::from_utf8_lossy(&o.stdout);
            let last = stdout.trim().lines().last().unwrap_or_default();
            serde_json::from_str(last).unwrap_or_else(|_| {
            let stderr = String::from_utf8_lossy(&o.stderr);
                failed(stderr.trim().lines().last().unwrap_or("no output").to_string())
            })
        }
    }
}
