//! One module per subcommand.

pub mod audit;
pub mod config;
pub mod generate;
pub mod keys;
pub mod ledger;
pub mod logs;
pub mod model;
pub mod passport;
pub mod status;
