//! journald's native protocol (systemd's `sd_journal_sendv`, written out): one datagram
//! of `KEY=value` fields to `/run/systemd/journal/socket`, or a sealed memfd passed
//! with `SCM_RIGHTS` when the entry is larger than a datagram may be.
//!
//! Written here rather than taken from `tracing-journald` because that layer discards
//! send errors: a sink that follows the ledger must know whether an entry arrived
//! before it moves its cursor, or records would be lost without anyone noticing.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where journald listens for native entries.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// How long one send may block on a full journald queue before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// A socket to journald that reports whether each entry was accepted by the kernel.
pub struct JournalSocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournalSocket {
    /// Opens a socket and checks that journald is listening at `path` (an empty
    /// datagram, which journald ignores): a stale socket file gives `ECONNREFUSED` here.
    pub fn connect(path: &Path) -> io::Result<JournalSocket> {
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        socket.send_to(&[], path)?;
        Ok(JournalSocket { socket, path: path.to_path_buf() })
    }

    /// Sends one entry. Field names must be journald-valid (upper case, digits, `_`).
    pub fn send(&self, fields: &[(&str, &str)]) -> io::Result<()> {
        let payload = encode(fields);
        match self.socket.send_to(&payload, &self.path) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMSGSIZE) | Some(libc::ENOBUFS)) => self.send_memfd(&payload),
            Err(e) => Err(e),
        }
    }

    /// The large-entry path: the payload in a sealed memfd, passed as the only content.
    fn send_memfd(&self, payload: &[u8]) -> io::Result<()> {
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

        let fd = memfd_create(c"lucid-journal", MemFdCreateFlag::MFD_ALLOW_SEALING | MemFdCreateFlag::MFD_CLOEXEC)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(payload)?;
        seal(&file)?;
        let addr = UnixAddr::new(&self.path)?;
        let fds = [file.as_raw_fd()];
        sendmsg(self.socket.as_raw_fd(), &[], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), Some(&addr))?;
        Ok(())
    }
}

/// Seals a memfd against any change, as journald requires before it reads one.
///
/// `F_SEAL_WRITE` fails with `EBUSY` while the kernel still holds an extra reference
/// to a page just written (a per-CPU LRU batch, a migration, a THP collapse); the
/// kernel waits about 160 ms for those itself and then gives up. Such holds are brief,
/// so the seal is tried eight times with a growing pause between (about 2.5 s in all
/// with the kernel's own waits) before the send counts as failed (the sink then keeps its cursor and tries the entry again later).
fn seal(file: &std::fs::File) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL;
    let mut pause = Duration::from_millis(10);
    for _ in 0..7 {
        match fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)) {
            Err(nix::errno::Errno::EBUSY) => std::thread::sleep(pause),
            other => return other.map(drop).map_err(io::Error::from),
        }
        pause *= 2;
    }
    fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).map(drop).map_err(io::Error::from)
}

/// Encodes fields: `KEY=value\n`, or for values with a newline
/// `KEY\n<u64 LE length><value>\n`.
pub fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|(k, v)| k.len() + v.len() + 10).sum());
    for (key, value) in fields {
        out.extend_from_slice(key.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line_values_are_framed() {
        let out = encode(&[("MESSAGE", "one line"), ("LUCID_BODY", "a\nb")]);
        let mut want = b"MESSAGE=one line\nLUCID_BODY\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(out, want);
    }

    #[test]
    fn a_stale_socket_file_is_refused_at_connect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        drop(UnixDatagram::bind(&path).unwrap());
        let err = JournalSocket::connect(&path).err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    }

    #[test]
    fn a_seal_waits_out_a_brief_hold_on_the_pages() {
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        let fd = memfd_create(c"lucid-test", MemFdCreateFlag::MFD_ALLOW_SEALING | MemFdCreateFlag::MFD_CLOEXEC).unwrap();
        let mut file = std::fs::File::from(fd);
        file.write_all(&vec![7u8; 1 << 16]).unwrap();
        // Splicing the file into a pipe lends the pipe its pages: the kernel refuses
        // F_SEAL_WRITE with EBUSY until the pipe is read, here for longer than the
        // kernel's own wait inside one fcntl (about 160 ms).
        let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
        let mut offset: libc::loff_t = 0;
        let moved = unsafe { libc::splice(file.as_raw_fd(), &mut offset, pipe_w.as_raw_fd(), std::ptr::null_mut(), 1 << 16, 0) };
        assert!(moved > 0, "splice: {}", io::Error::last_os_error());
        let held = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_WRITE));
        if held != Err(nix::errno::Errno::EBUSY) {
            eprintln!("skipped: this kernel ({held:?}) does not hold spliced pages against F_SEAL_WRITE, so no hold can be made");
            return;
        }
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let mut pipe = std::fs::File::from(pipe_r);
            let mut sink = vec![0u8; 1 << 16];
            let mut got = 0;
            while got < moved as usize {
                got += io::Read::read(&mut pipe, &mut sink).unwrap();
            }
        });
        seal(&file).unwrap();
        reader.join().unwrap();
        let seals = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
        assert_eq!(seals & libc::F_SEAL_WRITE, libc::F_SEAL_WRITE);
        assert!(file.write_all(b"x").is_err(), "a sealed memfd refuses writes");
    }

    #[test]
    fn entries_arrive_whole_including_large_ones_by_memfd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let client = JournalSocket::connect(&path).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        assert_eq!(server.recv(&mut buf).unwrap(), 0, "the connect probe is an empty datagram");
        client.send(&[("MESSAGE", "hi")]).unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MESSAGE=hi\n");
        // Larger than any datagram the kernel accepts: goes as a sealed memfd.
        let big = "x".repeat(8 << 20);
        client.send(&[("MESSAGE", &big)]).unwrap();
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(server.as_raw_fd(), &mut iov, Some(&mut space), nix::sys::socket::MsgFlags::empty()).unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a passed descriptor");
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        assert_eq!(file.metadata().unwrap().len(), (big.len() + "MESSAGE=\n".len()) as u64);
    }
}
