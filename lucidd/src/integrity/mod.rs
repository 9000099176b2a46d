//! Model integrity and change management (SOC 2 CC8.1): what an approved model is
//! (a model_signing v1.0 manifest signed by the host key, `lucid_common::manifest`),
//! hashing a model into one (`hash`), and the approvals this host signed
//! (`approvals`), checking a model against its approval (`verify`), and watching
//! approved models for changes with eBPF probes, fanotify or periodic
//! re-verification, judging each change (`watch`).

pub mod approvals;
pub mod hash;
pub mod import;
pub mod verify;
pub mod watch;
