//! Who is on the other end of the control socket, and whether they may use it.
//!
//! The kernel's SO_PEERCRED is the only identity the API trusts: root, the daemon's
//! own user and members of the control group (`lucid` by default, primary or
//! supplementary, read from `/proc/<pid>/status`) are allowed; everyone else gets 403.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::net::UnixListener;
use tracing::Instrument;

use super::error::ApiError;
use crate::daemon::state::AppState;

/// Peer credentials of a control connection.
#[derive(Clone, Copy, Debug)]
pub struct PeerCred {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id (None if the kernel did not say).
    pub pid: Option<i32>,
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, UnixListener>> for PeerCred {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => PeerCred { uid: c.uid(), gid: c.gid(), pid: c.pid() },
            // Unknown peers are treated as nobody: they will be refused.
            Err(_) => PeerCred { uid: u32::MAX, gid: u32::MAX, pid: None },
        }
    }
}

/// Supplementary groups of a process, from `/proc/<pid>/status`.
pub fn supplementary_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether `peer` may use the API.
pub fn allowed(peer: &PeerCred, own_uid: u32, control_gid: Option<u32>) -> bool {
    if peer.uid == 0 || peer.uid == own_uid {
        return true;
    }
    let Some(gid) = control_gid else { return false };
    if peer.gid == gid {
        return true;
    }
    let Some(pid) = peer.pid else { return false };
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| supplementary_groups(&s).contains(&gid))
}

/// Middleware: authorises the peer and wraps the request in a tracing span.
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    request: Request,
    next: Next,
) -> Response {
    let span = tracing::info_span!(
        "control",
        method = %request.method(),
        path = %request.uri().path(),
        uid = peer.uid,
        pid = peer.pid.unwrap_or(-1),
    );
    async move {
        if !allowed(&peer, nix::unistd::getuid().as_raw(), state.run.control_gid) {
            tracing::warn!("refused control client: not root, not the daemon's user, not in the control group");
            return ApiError::forbidden(format!(
                "uid {} may not use lucidd's control socket: run as root or as a member of the lucid group",
                peer.uid
            ))
            .into_response();
        }
        let response = next.run(request).await;
        tracing::debug!(status = response.status().as_u16(), "control request");
        response
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_supplementary_groups() {
        let status = "Name:\tbash\nGroups:\t4 24 27 100 \nNSpid:\t1\n";
        assert_eq!(supplementary_groups(status), vec![4, 24, 27, 100]);
        assert!(supplementary_groups("Name: x\n").is_empty());
    }

    #[test]
    fn root_own_user_and_group_members_only() {
        let peer = |uid, gid| PeerCred { uid, gid, pid: None };
        assert!(allowed(&peer(0, 0), 1000, None));
        assert!(allowed(&peer(1000, 1000), 1000, None));
        assert!(allowed(&peer(2000, 995), 1000, Some(995)));
        assert!(!allowed(&peer(2000, 2000), 1000, Some(995)));
        assert!(!allowed(&peer(2000, 2000), 1000, None));
    }
}
