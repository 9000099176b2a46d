//! The fanotify source, for hosts where the eBPF programs cannot load: one notification
//! group reporting directory file handles and names (`FAN_REPORT_DFID_NAME`), an inode
//! mark on every watched directory, and the events matched back to paths by the
//! handles recorded when the marks were set.
//!
//! What it cannot do, compared with eBPF: it names only the pid (the rest of the
//! process is read from `/proc`, racing its exit), events are merged, and it cannot
//! enforce. Raw `libc` is used because nix's fanotify API cannot read FID records.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use lucid_common::probe::Op;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::{Input, Seen, Source, WatchSet, Who};
use crate::ledger::now_ns;

/// Events asked for on each watched directory.
const DIR_MASK: u64 = libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF
    | libc::FAN_ONDIR
    | libc::FAN_EVENT_ON_CHILD;

/// Events asked for on each ancestor of a watched root (the model moved or went).
const ANCESTOR_MASK: u64 = libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_ONDIR;

/// A file handle as bytes (type, then the opaque handle).
type Handle = Vec<u8>;

#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

fn handle_of(path: &Path) -> Option<Handle> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut h = RawHandle { handle_bytes: 128, handle_type: 0, f_handle: [0; 128] };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: the handle buffer is 128 bytes, as handle_bytes says.
    let r = unsafe {
        libc::syscall(libc::SYS_name_to_handle_at, libc::AT_FDCWD, c.as_ptr(), &mut h as *mut RawHandle, &mut mount_id, 0)
    };
    if r != 0 {
        return None;
    }
    let mut out = h.handle_type.to_ne_bytes().to_vec();
    out.extend_from_slice(h.f_handle.get(..h.handle_bytes as usize)?);
    Some(out)
}

/// The fanotify group and the directories it marks.
pub struct FanotifySource {
    fd: Arc<OwnedFd>,
    handles: Arc<RwLock<HashMap<Handle, PathBuf>>>,
    marked: Vec<PathBuf>,
}

/// Opens the group and starts the reader.
pub fn start(tx: mpsc::UnboundedSender<Input>) -> Result<FanotifySource, String> {
    let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_REPORT_DFID_NAME | libc::FAN_REPORT_FID;
    // SAFETY: plain syscall; the result is checked.
    let raw = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
    if raw < 0 {
        return Err(format!("fanotify_init: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor we own.
    let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
    let handles = Arc::new(RwLock::new(HashMap::new()));
    // SAFETY: the group's fd is shared through the Arc and stays open while the reader
    // holds it.
    let reader = unsafe { AsyncFd::register_with_interest(fd.clone(), tokio::io::Interest::READABLE) }
        .map_err(|e| format!("polling fanotify: {e}"))?;
    tokio::spawn(read(reader, handles.clone(), tx));
    Ok(FanotifySource { fd, handles, marked: Vec::new() })
}

fn mark(fd: &OwnedFd, flags: u32, mask: u64, path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: a valid fanotify fd and NUL-terminated path.
    let r = unsafe { libc::fanotify_mark(fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, c.as_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Source for FanotifySource {
    fn watch(&mut self, set: &WatchSet) -> Result<(), String> {
        for p in self.marked.drain(..) {
            let _ = mark(&self.fd, libc::FAN_MARK_REMOVE, DIR_MASK | ANCESTOR_MASK, &p);
        }
        let mut handles = HashMap::new();
        for dir in set.dirs.values() {
            mark(&self.fd, libc::FAN_MARK_ADD, DIR_MASK, dir).map_err(|e| format!("fanotify_mark {}: {e}", dir.display()))?;
            if let Some(h) = handle_of(dir) {
                handles.insert(h, dir.clone());
            }
            self.marked.push(dir.clone());
        }
        for dir in set.ancestors.values() {
            if mark(&self.fd, libc::FAN_MARK_ADD, ANCESTOR_MASK, dir).is_ok() {
                if let Some(h) = handle_of(dir) {
                    handles.insert(h, dir.clone());
                }
                self.marked.push(dir.clone());
            }
        }
        *self.handles.write().unwrap_or_else(|p| p.into_inner()) = handles;
        Ok(())
    }
}

fn op_of(mask: u64) -> (Op, bool) {
    if mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO | libc::FAN_MOVE_SELF) != 0 {
        (Op::Rename, true)
    } else if mask & (libc::FAN_DELETE | libc::FAN_DELETE_SELF) != 0 {
        (Op::Unlink, true)
    } else if mask & libc::FAN_CLOSE_WRITE != 0 {
        (Op::Close, true)
    } else if mask & libc::FAN_ATTRIB != 0 {
        (Op::Chmod, true)
    } else if mask & libc::FAN_CREATE != 0 {
        (Op::Open, true)
    } else {
        (Op::Open, false)
    }
}

/// Parses one read's worth of events.
fn parse(buf: &[u8], handles: &HashMap<Handle, PathBuf>, tx: &mpsc::UnboundedSender<Input>) {
    let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
    let mut at = 0;
    while at + meta_len <= buf.len() {
        // SAFETY: at least one metadata struct remains; read unaligned.
        let meta: libc::fanotify_event_metadata = unsafe { std::ptr::read_unaligned(buf[at..].as_ptr() as *const _) };
        let len = meta.event_len as usize;
        if len < meta_len || at + len > buf.len() {
            break;
        }
        let event = &buf[at..at + len];
        at += len;
        if meta.mask & libc::FAN_Q_OVERFLOW != 0 {
            let _ = tx.send(Input::Lost { count: 0, source: "fanotify" });
            continue;
        }
        let mut path = None;
        let mut info = meta.metadata_len as usize;
        while info + 4 <= event.len() {
            let kind = event[info];
            let ilen = u16::from_ne_bytes([event[info + 2], event[info + 3]]) as usize;
            if ilen < 4 || info + ilen > event.len() {
                break;
            }
            let rec = &event[info..info + ilen];
            info += ilen;
            // header(4) + fsid(8) + handle_bytes(4) + handle_type(4) + handle [+ name]
            if rec.len() < 20 {
                continue;
            }
            let hbytes = u32::from_ne_bytes([rec[12], rec[13], rec[14], rec[15]]) as usize;
            let Some(handle) = rec.get(20..20 + hbytes) else { continue };
            let mut key = rec[16..20].to_vec();
            key.extend_from_slice(handle);
            let Some(dir) = handles.get(&key) else { continue };
            if kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
                let name = &rec[20 + hbytes..];
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                let name = std::ffi::OsStr::from_bytes(&name[..end]);
                path = Some(if name.is_empty() || name == "." { dir.clone() } else { dir.join(name) });
                break;
            } else if path.is_none() {
                path = Some(dir.clone());
            }
        }
        let Some(path) = path else { continue };
        let (op, settled) = op_of(meta.mask);
        let pid = meta.pid.max(0) as u32;
        let who = Who { pid, ppid: 0, uid: u32::MAX, comm: String::new(), exe: None };
        let _ = tx.send(Input::Seen(Seen { op, paths: vec![path], who, time_ns: now_ns(), settled, range: None }));
    }
}

async fn read(fd: AsyncFd<Arc<OwnedFd>>, handles: Arc<RwLock<HashMap<Handle, PathBuf>>>, tx: mpsc::UnboundedSender<Input>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "fanotify failed; changes are now found by periodic re-verification only");
                return;
            }
        };
        // SAFETY: reading into our buffer from a fanotify fd.
        let n = unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                guard.clear_ready();
                continue;
            }
            tracing::error!(error = %err, "reading fanotify events failed");
            let _ = tx.send(Input::Lost { count: 0, source: "fanotify" });
            guard.clear_ready();
            continue;
        }
        parse(&buf[..n as usize], &handles.read().unwrap_or_else(|p| p.into_inner()), &tx);
    }
}
