//! A configuration's run-time objects, built and checked before the configuration is
//! accepted (STYLE.md 6: parse, then build): every agent's audit chain (classifiers
//! loaded, rule files parsed, a GPU present where `cuda` is asked for) and the model
//! watch's plan (agents agreeing, allowed writers existing). Start-up, `apply`, SIGHUP
//! and `lucidd check-config` all go through [`build`], so what one accepts the others
//! accept, and every error names file, line and column.

use crate::config::{ConfigError, Environment};
use crate::gateway::routes::Routes;
use crate::integrity::watch::plan::WatchPlan;

/// What a configuration runs with.
pub struct Runtime {
    /// Every agent's built chain, by model.
    pub routes: Routes,
    /// The model watch's settings, combined over agents.
    pub watch: WatchPlan,
}

/// Builds and checks the run-time objects of `env` (read from `file`, whose digest is
/// `digest`). Loading classifiers reads their weights: call it off the async runtime's
/// workers.
pub fn build(env: &Environment, file: &str, digest: &str, pii_hash_key: [u8; 32]) -> Result<Runtime, ConfigError> {
    let watch = WatchPlan::build(env, file)?;
    let routes = Routes::build(env, digest, pii_hash_key).map_err(|e| ConfigError::at_span(file, e.span, e.message))?;
    Ok(Runtime { routes, watch })
}
