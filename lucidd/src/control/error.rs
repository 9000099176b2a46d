//! Errors as the control API returns them: a status code and an [`ApiError`] body.
//! Internal errors are logged in full and shown briefly.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lucid_common::api::{self, ErrorBody};

use crate::daemon::state::ApplyError;
use crate::ledger::LedgerError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// Any status and code.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError { status, body: ErrorBody { code: code.into(), message: message.into(), location: None } }
    }

    /// The error body (for streamed answers, which report errors in-band).
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 403: the peer may not use the API.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        match e {
            LedgerError::Unavailable(_) | LedgerError::Closed => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable", e.to_string())
            }
            LedgerError::NotFound(m) => ApiError::not_found(m),
            other => {
                tracing::error!(error = %other, "ledger read failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("ledger read failed: {other}"))
            }
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> ApiError {
        match e {
            ApplyError::Invalid(c) => {
                let location = c.location();
                let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", c.to_string());
                err.body.location = location;
                err
            }
            ApplyError::Ledger(l) => l.into(),
            ApplyError::Chain(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", m),
            e @ ApplyError::NeedsRestart(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "needs_restart", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(api::ApiError { error: self.body })).into_response()
    }
}
