//! Sinks: where ledger records go after they are durable. Sinks read the ledger and
//! never write to it; each keeps its own cursor so a restart resumes where it stopped.

pub mod journal_protocol;
pub mod journald;
