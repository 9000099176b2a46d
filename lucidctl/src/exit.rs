//! lucidctl's exit codes. Scripts may rely on them; they are listed in `--help` and in
//! the man page.

/// Success.
pub const OK: u8 = 0;
/// Evidence did not verify (a ledger record or checkpoint is bad).
pub const VERIFY_FAILED: u8 = 1;
/// Usage error: bad arguments (clap's own code).
pub const USAGE: u8 = 2;
/// The daemon is not running or its socket cannot be reached.
pub const UNREACHABLE: u8 = 3;
/// The daemon refused this user (not root, not in the lucid group).
pub const FORBIDDEN: u8 = 4;
/// The daemon rejected the request (invalid config, unknown record, bad input).
pub const REJECTED: u8 = 5;
/// The daemon failed (for example the ledger cannot write: it fails closed).
pub const DAEMON_ERROR: u8 = 6;
/// A local file could not be read or written.
pub const IO: u8 = 7;
/// `lucidctl audit`: the chain denied the text.
pub const DENIED: u8 = 8;

/// `passport verify`: verified, with warnings (unanchored, AK not pinned, no event log).
pub const WARNINGS: u8 = 9;

/// The text for `--help`.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  evidence did not verify (first bad sequence number is printed)
  2  usage error
  3  lucidd is not running or its socket cannot be reached
  4  access denied: run as root or as a member of the lucid group
  5  request rejected (invalid configuration, unknown record, bad input)
  6  lucidd failed (for example: its ledger cannot write, so it fails closed)
  7  a local file could not be read or written
  8  lucidctl audit: the audit chain denied the text
  9  lucidctl passport verify: verified, with warnings (e.g. unanchored, AK not pinned)";
