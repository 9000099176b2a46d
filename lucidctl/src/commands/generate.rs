//! Shell completions and man pages, generated from the CLI definition.

use std::path::Path;

use clap::CommandFactory;

use crate::client::CallError;
use crate::{exit, Cli};

pub fn completions(shell: clap_complete::Shell) -> Result<u8, CallError> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "lucidctl", &mut std::io::stdout());
    Ok(exit::OK)
}

pub fn man(dir: &Path) -> Result<u8, CallError> {
    let io = |e: std::io::Error| CallError::new(exit::IO, format!("writing man pages to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(io)?;
    Ok(exit::OK)
}
