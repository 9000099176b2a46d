//! The control API that `lucidctl` talks to: HTTP/1.1 and JSON over a Unix socket,
//! NDJSON for streams, authorised by peer credentials ([`auth`]).
//!
//! | route                          | what                                             |
//! |--------------------------------|--------------------------------------------------|
//! | `GET  /v1/status`              | daemon, config and ledger status                 |
//! | `GET  /v1/logs`                | records as NDJSON; `follow=true` keeps streaming |
//! | `POST /v1/notes`               | an operator note record                          |
//! | `POST /v1/config/apply`        | validate, record and swap a configuration        |
//! | `POST /v1/config/reload`       | what SIGHUP does                                 |
//! | `GET  /v1/ledger/checkpoint`   | the latest signed checkpoint                     |
//! | `POST /v1/ledger/checkpoint`   | sign one now                                     |
//! | `GET  /v1/ledger/prove`        | inclusion proof of `seq`                         |
//! | `GET  /v1/ledger/consistency`  | consistency proof between two checkpoints        |
//! | `GET  /v1/ledger/export`       | the verification stream from `from`              |
//! | `POST /v1/ledger/retention`    | run retention now (`as_of_ns` in dev mode only)  |
//! | `GET  /v1/keys`                | gateway API keys (never the secrets)             |
//! | `POST /v1/keys`                | create a key; the secret is in this answer only  |
//! | `POST /v1/keys/{id}/revoke`    | revoke a key (effective on the next request)     |
//! | `POST /v1/audit`               | run an agent's chain on a text, no upstream      |
//! | `GET  /v1/models`              | approved models and their latest verification    |
//! | `POST /v1/models/approve`      | hash, sign and record a model's manifest         |
//! | `POST /v1/models/approve/stream` | the same, with NDJSON hashing progress         |
//! | `POST /v1/models/import`       | check a model_signing signature made elsewhere   |
//! | `POST /v1/models/verify`       | re-hash a model against its approval, record it  |
//! | `GET  /v1/passports`           | passport summaries (`from_ns`, `to_ns`)          |
//! | `POST /v1/passports`           | issue a passport now                             |
//! | `GET  /v1/passports/{number}`  | one passport's record and signed envelope        |
//! | `GET  /v1/attest`              | TPM state, EK/AK public parts, the host key      |
//! | `POST /v1/attest/activate`     | answer a verifier's enrolment challenge          |

pub mod auth;
pub mod error;
mod handlers;
mod models;
mod passports;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::UnixListener;

use crate::daemon::state::AppState;

/// The API's routes with authorisation applied.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/status", get(handlers::status))
        .route("/v1/logs", get(handlers::logs))
        .route("/v1/notes", post(handlers::note))
        .route("/v1/config/apply", post(handlers::apply))
        .route("/v1/config/reload", post(handlers::reload))
        .route("/v1/ledger/checkpoint", get(handlers::checkpoint).post(handlers::sign_checkpoint))
        .route("/v1/ledger/prove", get(handlers::prove))
        .route("/v1/ledger/consistency", get(handlers::consistency))
        .route("/v1/ledger/export", get(handlers::export))
        .route("/v1/ledger/retention", post(handlers::retention))
        .route("/v1/keys", get(handlers::list_keys).post(handlers::create_key))
        .route("/v1/keys/{id}/revoke", post(handlers::revoke_key))
        .route("/v1/audit", post(handlers::audit))
        .route("/v1/models", get(models::list))
        .route("/v1/models/approve", post(models::approve))
        .route("/v1/models/approve/stream", post(models::approve_stream))
        .route("/v1/models/import", post(models::import))
        .route("/v1/models/verify", post(models::verify))
        .route("/v1/passports", get(passports::list).post(passports::issue))
        .route("/v1/passports/{number}", get(passports::show))
        .route("/v1/attest", get(passports::attest))
        .route("/v1/attest/activate", post(passports::activate))
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authorize))
        .with_state(state)
}

/// Binds the control socket. A stale socket file is replaced; a live one means
/// another daemon is running, which is an error.
pub async fn bind(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use: is another lucidd running?", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Serves the API until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app(state).into_make_service_with_connect_info::<auth::PeerCred>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
