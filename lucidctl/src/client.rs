//! A small HTTP/1.1 client for lucidd's control socket (hyper over a Unix stream).

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::exit;

/// A failed call, with the exit code it maps to.
#[derive(Debug)]
pub struct CallError {
    /// Exit code.
    pub code: u8,
    /// Message for stderr.
    pub message: String,
}

impl CallError {
    pub fn new(code: u8, message: impl Into<String>) -> CallError {
        CallError { code, message: message.into() }
    }
}

/// Talks to one daemon.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Client {
        Client { socket }
    }

    /// Sends a request; returns the response if its status is 2xx.
    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Response<Incoming>, CallError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "is lucidd running? (`systemctl status lucidd`, or `lucidd --dev` for a local one)"
                }
                std::io::ErrorKind::PermissionDenied => "run as root or as a member of the lucid group",
                _ => "",
            };
            let code = if e.kind() == std::io::ErrorKind::PermissionDenied { exit::FORBIDDEN } else { exit::UNREACHABLE };
            CallError::new(code, format!("cannot reach lucidd at {}: {e}; {hint}", self.socket.display()))
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CallError::new(exit::UNREACHABLE, format!("talking to lucidd: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "lucidd")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CallError::new(exit::USAGE, format!("building the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| CallError::new(exit::UNREACHABLE, format!("talking to lucidd: {e}")))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        Err(error_from(status, &bytes))
    }

    /// GET and decode JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        decode(self.send(Method::GET, path, None).await?).await
    }

    /// POST JSON and decode JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| CallError::new(exit::USAGE, e.to_string()))?;
        decode(self.send(Method::POST, path, Some(body)).await?).await
    }
}

async fn decode<T: DeserializeOwned>(response: Response<Incoming>) -> Result<T, CallError> {
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| CallError::new(exit::UNREACHABLE, format!("reading lucidd's answer: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| CallError::new(exit::DAEMON_ERROR, format!("unexpected answer from lucidd: {e}")))
}

fn error_from(status: StatusCode, body: &[u8]) -> CallError {
    let parsed: Option<lucid_common::api::ApiError> = serde_json::from_slice(body).ok();
    let message = match &parsed {
        Some(e) => e.error.message.clone(),
        None => format!("lucidd answered {status}: {}", String::from_utf8_lossy(body).trim()),
    };
    let code = match status {
        StatusCode::FORBIDDEN => exit::FORBIDDEN,
        // The files do not match what they were checked against (model import).
        StatusCode::CONFLICT => exit::VERIFY_FAILED,
        s if s.is_client_error() => exit::REJECTED,
        _ => exit::DAEMON_ERROR,
    };
    CallError::new(code, message)
}

/// Reads a streamed body chunk by chunk.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, CallError> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(CallError::new(exit::UNREACHABLE, format!("stream from lucidd broke: {e}"))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}
