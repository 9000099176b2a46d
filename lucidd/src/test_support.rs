//! How this workspace's tests say they were skipped (used by lucidd's unit tests and the
//! integration tests in `tests/`; nothing in the daemon calls it).
//!
//! A skipped test prints `SKIPPED test: why`, which nextest hides for a passing test, so
//! each skip is also appended to the file `LUCID_SKIP_LOG` names, for the summary at the
//! end of `scripts/test.sh`. Under `LUCID_STRICT_SKIPS=1` (set by `.ci/run`, where
//! everything is installed and the tests run as root), a skip for any reason but a
//! missing GPU or AMX unit fails the test instead: a test that cannot run there is a
//! broken set-up, not a pass.

use std::io::Write;

/// The reasons a strict run accepts: hardware a build machine may lack (`no GPU`,
/// `no AMX`), or have (`GPU host`: a check of the GPU-less path, on a host with a GPU).
pub const ALLOWED_IN_STRICT: [&str; 3] = ["no GPU", "no AMX", "GPU host"];

/// Reports that `test` was skipped because of `why`; panics instead under
/// `LUCID_STRICT_SKIPS=1` unless `why` begins with one of [`ALLOWED_IN_STRICT`].
#[allow(clippy::panic)]
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    if let Some(log) = std::env::var_os("LUCID_SKIP_LOG") {
        let line = format!("{test}: {why}\n").replace('\n', " ").trim_end().to_string() + "\n";
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = f.write_all(line.as_bytes());
        }
    }
    let strict = std::env::var_os("LUCID_STRICT_SKIPS").is_some_and(|v| v == "1");
    if strict && !ALLOWED_IN_STRICT.iter().any(|a| why.starts_with(a)) {
        panic!("{test} was skipped ({why}); under LUCID_STRICT_SKIPS=1 only a missing GPU or AMX unit may skip a test");
    }
}
