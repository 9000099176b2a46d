//! Lucid's kernel programs live in `main.rs` (a `no_std`, `no_main` binary built for
//! `bpfel-unknown-none`). This empty library lets `lucidd` name the crate as a build
//! dependency, so cargo rebuilds the daemon when the programs change.
#![no_std]
