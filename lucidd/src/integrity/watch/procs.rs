//! Who did it: a table of processes built from exec and exit events, completed from
//! `/proc` while a process is still there, so a change can name the process, its
//! executable (and that file's digest), its parents and its systemd unit even when a
//! short-lived writer has exited by the time the change is judged.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What is known of one process.
#[derive(Clone, Debug, Default)]
pub struct Proc {
    /// Parent process id.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Executable path.
    pub exe: Option<String>,
    /// `comm`.
    pub comm: String,
    /// cgroup v2 path (`/system.slice/x.service`).
    pub cgroup: Option<String>,
    /// When it exited, if it did.
    pub exited: Option<std::time::Instant>,
}

/// Processes by id, and executable digests by path.
#[derive(Default)]
pub struct Procs {
    table: HashMap<u32, Proc>,
    digests: HashMap<String, (u64, String)>,
}

/// How long an exited process stays in the table (late events still name it).
const KEEP_EXITED: std::time::Duration = std::time::Duration::from_secs(60);

fn proc_status(pid: u32) -> Option<(u32, u32, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
    let ppid = field("PPid:")?.parse().ok()?;
    let uid = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
    Some((ppid, uid, field("Name:").unwrap_or_default()))
}

fn proc_cgroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string)
}

/// The systemd unit of a cgroup path: its last `.service` or `.scope` component.
pub fn unit_of(cgroup: &str) -> Option<String> {
    cgroup.rsplit('/').find(|c| c.ends_with(".service") || c.ends_with(".scope")).map(str::to_string)
}

impl Procs {
    /// Records an exec seen by a probe (`exe` as the kernel gave it).
    pub fn exec(&mut self, pid: u32, ppid: u32, uid: u32, comm: String, exe: Option<String>) {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .or_else(|| exe.and_then(|e| std::fs::canonicalize(e).ok()))
            .map(|p| p.display().to_string());
        let cgroup = proc_cgroup(pid);
        self.table.insert(pid, Proc { ppid, uid, exe, comm, cgroup, exited: None });
    }

    /// Records an exit; the entry is kept a while for events still in flight.
    pub fn exit(&mut self, pid: u32) {
        if let Some(p) = self.table.get_mut(&pid) {
            p.exited = Some(std::time::Instant::now());
        }
        if self.table.len() > 4096 {
            self.table.retain(|_, p| p.exited.is_none_or(|t| t.elapsed() < KEEP_EXITED));
        }
    }

    /// Whether `pid`'s exec (or a `/proc` read while it ran) is in the table.
    pub fn knows(&self, pid: u32) -> bool {
        self.table.contains_key(&pid)
    }

    /// What is known of `pid`: the table first, then `/proc`, then what the event said.
    pub fn get(&mut self, pid: u32, hint: &Proc) -> Proc {
        if let Some(p) = self.table.get(&pid) {
            return p.clone();
        }
        let mut p = hint.clone();
        if let Some((ppid, uid, comm)) = proc_status(pid) {
            p.ppid = ppid;
            p.uid = uid;
            if p.comm.is_empty() {
                p.comm = comm;
            }
        }
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            p.exe = Some(exe.display().to_string());
        }
        if p.cgroup.is_none() {
            p.cgroup = proc_cgroup(pid);
        }
        if p.exe.is_some() {
            self.table.insert(pid, p.clone());
        }
        p
    }

    /// SHA-256 of `pid`'s executable (through `/proc/pid/exe` while it runs, so a
    /// replaced or deleted file is still the one that ran), cached by path and mtime.
    pub fn exe_digest(&mut self, pid: u32, exe: &str) -> Option<String> {
        let live = format!("/proc/{pid}/exe");
        let path = if Path::new(&live).exists() { live.as_str() } else { exe };
        let meta = std::fs::metadata(path).ok()?;
        let stamp = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos() as u64).unwrap_or(0) ^ meta.len();
        if let Some((s, d)) = self.digests.get(exe) {
            if *s == stamp {
                return Some(d.clone());
            }
        }
        let mut f = std::fs::File::open(path).ok()?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(_) => return None,
            }
        }
        let d = lucid_common::hex::encode(&h.finalize());
        self.digests.insert(exe.to_string(), (stamp, d.clone()));
        Some(d)
    }

    /// The evidence of who `pid` is: id, uid, comm, executable and its digest, cgroup
    /// and unit, and up to 8 ancestors (pid and executable).
    pub fn describe(&mut self, pid: u32, hint: &Proc) -> Value {
        let p = self.get(pid, hint);
        let digest = p.exe.clone().and_then(|e| self.exe_digest(pid, &e));
        let mut parents = Vec::new();
        let mut next = p.ppid;
        for _ in 0..8 {
            if next == 0 {
                break;
            }
            let q = self.get(next, &Proc::default());
            parents.push(json!({ "pid": next, "exe": q.exe, "comm": q.comm }));
            if next == 1 {
                break;
            }
            next = q.ppid;
        }
        json!({
            "pid": pid,
            "ppid": p.ppid,
            "uid": p.uid,
            "comm": p.comm,
            "exe": p.exe,
            "exe_sha256": digest,
            "cgroup": p.cgroup,
            "unit": p.cgroup.as_deref().and_then(unit_of),
            "parents": parents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_from_cgroup_paths() {
        assert_eq!(unit_of("/system.slice/vllm.service").as_deref(), Some("vllm.service"));
        assert_eq!(unit_of("/user.slice/user-0.slice/session-3.scope").as_deref(), Some("session-3.scope"));
        assert_eq!(unit_of("/"), None);
    }

    #[test]
    fn this_process_is_described_from_proc() {
        let mut procs = Procs::default();
        let me = std::process::id();
        let d = procs.describe(me, &Proc::default());
        assert_eq!(d["pid"], me);
        let exe = std::env::current_exe().unwrap().display().to_string();
        assert_eq!(d["exe"], exe);
        assert_eq!(d["exe_sha256"].as_str().map(str::len), Some(64));
        assert!(!d["parents"].as_array().unwrap().is_empty());
    }
}
