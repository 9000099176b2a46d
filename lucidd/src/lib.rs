//! `lucidd`, the Lucid host daemon, as a library: every piece of logic lives here and
//! `main.rs` only parses arguments and starts [`daemon::run`].
//!
//! Data flows one way: sources (the control API's notes and applies, timers) ->
//! [`ledger`] -> sinks ([`export`]). The ledger knows no source; sinks only read
//! ledger records.
#![deny(missing_docs)]

pub mod access;
pub mod attest;
pub mod audit;
pub mod config;
pub mod control;
pub mod controls;
pub mod daemon;
pub mod export;
pub mod gateway;
pub mod infer;
pub mod integrity;
pub mod ledger;
pub mod passport;
pub mod test_support;
