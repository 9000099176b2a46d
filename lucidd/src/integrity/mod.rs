//! Model integrity and change management (SOC 2 CC8.1): what an approved model is
//! (a model_signing v1.0 manifest signed by the host key, `lucid_common::manifest`),
//! and hashing a model into one (`hash`). Watching for changes (eBPF probes, fanotify,
//! periodic re-verification) and the verdicts on them build on these.

pub mod hash;
