//! One module per subcommand.

pub mod config;
pub mod generate;
pub mod ledger;
pub mod logs;
pub mod status;
