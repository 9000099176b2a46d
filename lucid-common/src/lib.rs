//! Types shared by `lucidd`, `lucidctl` and (with the eBPF issue) the kernel programs.
//!
//! Without the `user` feature this crate is `no_std`: it will hold the `#[repr(C)]`
//! event types that eBPF programs and user space exchange. With `user` (the default) it
//! adds what the daemon and the CLI must agree on and what an auditor needs to check
//! evidence without trusting the daemon:
//!
//! * [`record`]: the ledger record and its canonical encoding,
//! * [`merkle`]: RFC 6962 / RFC 9162 Merkle tree hashing and proofs,
//! * [`checkpoint`]: C2SP signed-note checkpoints signed with the host Ed25519 key,
//! * [`dsse`]: DSSE envelopes signed with the host key (model manifests),
//! * [`manifest`]: model manifests in the OpenSSF model_signing v1.0 format,
//! * [`export`]: the binary stream the daemon serves for verification, and the
//!   streaming [`export::Verifier`] that recomputes the tree from it,
//! * [`api`]: request and response bodies of the control API,
//! * [`tpm`]: TPM quotes, NV certifications and the measured-boot event log, checked
//!   without a TPM,
//! * [`passport`]: AI passports and their offline verification.
//!
//! Always (also without `std`): [`probe`], the events and map keys the eBPF programs
//! share with the daemon. With `btf` (std, no aya): [`btf`], the kernel struct offsets
//! those programs read through, from the running kernel's BTF.
//!
//! It deliberately holds no storage, networking or configuration code: those live in
//! `lucidd`, and `lucidctl` never depends on `lucidd`.
//!
//! ```
//! use lucid_common::merkle::{leaf_hash, Frontier};
//! let mut tree = Frontier::default();
//! tree.push(leaf_hash(b"record 0"));
//! tree.push(leaf_hash(b"record 1"));
//! assert_eq!(tree.size(), 2);
//! ```
#![cfg_attr(not(any(feature = "user", feature = "btf")), no_std)]
#![deny(missing_docs)]

pub mod probe;
#[cfg(feature = "btf")]
pub mod btf;
#[cfg(feature = "user")]
pub mod api;
#[cfg(feature = "user")]
pub mod checkpoint;
#[cfg(feature = "user")]
pub mod dsse;
#[cfg(feature = "user")]
pub mod export;
#[cfg(feature = "user")]
pub mod hex;
#[cfg(feature = "user")]
pub mod manifest;
#[cfg(feature = "user")]
pub mod merkle;
#[cfg(feature = "user")]
pub mod passport;
#[cfg(feature = "user")]
pub mod record;
#[cfg(feature = "user")]
pub mod tpm;
