//! `lucidd`, the Lucid host daemon, as a library: every piece of logic lives here and
//! `main.rs` only parses arguments and starts [`daemon`].
#![deny(missing_docs)]

pub mod config;
pub mod ledger;
