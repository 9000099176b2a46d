//! Model integrity and change management (SOC 2 CC8.1): what an approved model is
//! (a model_signing v1.0 manifest signed by the host key, `lucid_common::manifest`),
//! hashing a model into one (`hash`), and the approvals this host signed
//! (`approvals`). Watching for changes (eBPF probes, fanotify,
//! periodic re-verification) and the verdicts on them build on these.

pub mod approvals;
pub mod hash;
