//! What the kernel programs (`lucid-ebpf`) and `lucidd` exchange: map keys, the kernel
//! struct offsets the programs read through, and the events they send through the ring
//! buffer. Everything here is `#[repr(C)]`, `Copy` and free of pointers, because it
//! crosses the user/kernel boundary as bytes; it compiles without `std`.

/// A file or directory as the kernel names it: the superblock's device number in the
/// kernel's own encoding (`major << 20 | minor`, not `st_dev`'s) and the inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevIno {
    /// `inode->i_sb->s_dev`.
    pub dev: u32,
    /// Padding, always zero (map keys are compared as bytes).
    pub pad: u32,
    /// `inode->i_ino`.
    pub ino: u64,
}

impl DevIno {
    /// The kernel's key of a file whose `stat` gave `st_dev` and `st_ino`.
    pub fn from_stat(st_dev: u64, st_ino: u64) -> DevIno {
        let major = ((st_dev >> 32) & 0xffff_f000) | ((st_dev >> 8) & 0xfff);
        let minor = ((st_dev >> 12) & 0xffff_ff00) | (st_dev & 0xff);
        DevIno { dev: ((major << 20) | minor) as u32, pad: 0, ino: st_ino }
    }
}

/// Byte offsets of the kernel struct fields the programs follow, read from
/// `/sys/kernel/btf/vmlinux` at start-up (aya's eBPF side has no CO-RE, and these move
/// between kernel versions). Loaded into the programs' `OFFSETS` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// `task_struct.files`
    pub task_files: u32,
    /// `task_struct.fs`
    pub task_fs: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `mm_struct.exe_file`
    pub mm_exe_file: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.fd`
    pub fdt_fd: u32,
    /// `fdtable.max_fds`
    pub fdt_max_fds: u32,
    /// `file.f_path`
    pub file_path: u32,
    /// `path.dentry`
    pub path_dentry: u32,
    /// `dentry.d_parent`
    pub dentry_parent: u32,
    /// `dentry.d_inode`
    pub dentry_inode: u32,
    /// `dentry.d_name`
    pub dentry_name: u32,
    /// `qstr.name`
    pub qstr_name: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `fs_struct.pwd`
    pub fs_pwd: u32,
    /// `linux_binprm.file`
    pub bprm_file: u32,
    /// `linux_binprm.filename`
    pub bprm_filename: u32,
    /// `file.f_mode`
    pub file_mode: u32,
    /// `file.f_flags`
    pub file_flags: u32,
    /// `file.f_pos`
    pub file_pos: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `inode.i_size`
    pub inode_size: u32,
}

/// What an [`Event`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A process executed a program (every exec: the process table).
    Exec = 1,
    /// A thread-group leader exited.
    Exit = 2,
    /// A file under a watched directory was opened with write intent (or created).
    Open = 3,
    /// A file opened for writing under a watched directory was closed.
    Close = 4,
    /// A path-based change (rename, unlink, chmod, ...) that may touch a watched
    /// directory; user space resolves the path exactly.
    Path = 5,
    /// An fd-based change (ftruncate, fchmod, fchown) of a file under a watched directory.
    Fd = 6,
    /// A process holding files open for writing forked (`ret`: the child's pid): the
    /// child shares them.
    Fork = 7,
}

impl EventKind {
    /// The kind of a raw `Event::kind`.
    pub fn from_u32(v: u32) -> Option<EventKind> {
        Some(match v {
            1 => EventKind::Exec,
            2 => EventKind::Exit,
            3 => EventKind::Open,
            4 => EventKind::Close,
            5 => EventKind::Path,
            6 => EventKind::Fd,
            7 => EventKind::Fork,
            _ => return None,
        })
    }
}

/// The syscall behind an [`Event`] (`Event::op`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Not a syscall (exec, exit).
    None = 0,
    /// open, openat, openat2, creat
    Open = 1,
    /// close
    Close = 2,
    /// rename, renameat, renameat2
    Rename = 3,
    /// unlink, unlinkat
    Unlink = 4,
    /// rmdir
    Rmdir = 5,
    /// truncate
    Truncate = 6,
    /// ftruncate
    Ftruncate = 7,
    /// chmod, fchmodat, fchmodat2
    Chmod = 8,
    /// fchmod
    Fchmod = 9,
    /// chown, lchown, fchownat
    Chown = 10,
    /// fchown
    Fchown = 11,
    /// link, linkat
    Link = 12,
    /// symlink, symlinkat
    Symlink = 13,
    /// dup, dup2, dup3, fcntl(F_DUPFD*) of a file open for writing
    Dup = 14,
}

impl Op {
    /// The operation of a raw `Event::op`.
    pub fn from_u32(v: u32) -> Op {
        match v {
            1 => Op::Open,
            2 => Op::Close,
            3 => Op::Rename,
            4 => Op::Unlink,
            5 => Op::Rmdir,
            6 => Op::Truncate,
            7 => Op::Ftruncate,
            8 => Op::Chmod,
            9 => Op::Fchmod,
            10 => Op::Chown,
            11 => Op::Fchown,
            12 => Op::Link,
            13 => Op::Symlink,
            14 => Op::Dup,
            _ => Op::None,
        }
    }

    /// The name ledger records use.
    pub fn name(self) -> &'static str {
        match self {
            Op::None => "none",
            Op::Open => "open",
            Op::Close => "close",
            Op::Rename => "rename",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Truncate => "truncate",
            Op::Ftruncate => "ftruncate",
            Op::Chmod => "chmod",
            Op::Fchmod => "fchmod",
            Op::Chown => "chown",
            Op::Fchown => "fchown",
            Op::Link => "link",
            Op::Symlink => "symlink",
            Op::Dup => "dup",
        }
    }
}

/// `Event::hit` bit: the first path's start directory is at or under a watched
/// directory (for Open/Close/Fd events: the file is).
pub const HIT_WATCHED: u32 = 1;
/// `Event::hit` bit: the second path's start directory is at or under a watched one.
pub const HIT_WATCHED2: u32 = 2;
/// `Event::hit` bit: a path may reach a watched directory from elsewhere (absolute, or
/// through an ancestor of a watched directory, or containing `..`): resolve it.
pub const HIT_MAYBE: u32 = 4;
/// `Event::hit` bit: the executed file is an approved serving binary (or lies in a
/// watched directory).
pub const HIT_EXE: u32 = 8;

/// `Event::source`: syscall tracepoints (and tp_btf for exec/exit).
pub const SOURCE_TRACEPOINT: u32 = 0;
/// `Event::source`: a BPF LSM hook.
pub const SOURCE_LSM: u32 = 1;
/// `Event::source`: an fentry program on the kernel's `security_*` functions.
pub const SOURCE_FENTRY: u32 = 2;

/// `AT_FDCWD` as the syscalls take it.
pub const AT_FDCWD: i32 = -100;

/// Length of the path buffers.
pub const PATH_LEN: usize = 256;
/// Length of the file-name buffer.
pub const NAME_LEN: usize = 64;

/// One observation from the kernel. Fixed size, built in place in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    /// [`EventKind`].
    pub kind: u32,
    /// [`Op`].
    pub op: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub time_ns: u64,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// The parent's process id.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// cgroup v2 id (the inode of the cgroup's directory).
    pub cgroup: u64,
    /// Syscall return value.
    pub ret: i64,
    /// Open flags, mode, or the rename flags.
    pub flags: u64,
    /// The fd (open, close, fd ops) or the first dirfd (path ops).
    pub fd: i32,
    /// `HIT_*` bits.
    pub hit: u32,
    /// The second dirfd (rename, link).
    pub fd2: i32,
    /// Which program family saw it: [`SOURCE_TRACEPOINT`], [`SOURCE_LSM`] or
    /// [`SOURCE_FENTRY`].
    pub source: u32,
    /// The file (Open, Close, Fd), the start directory of the first path (Path), or the
    /// executed file (Exec).
    pub file: DevIno,
    /// The watched directory that matched (Open, Fd), or the second path's start
    /// directory (Path).
    pub dir: DevIno,
    /// The current process's executable.
    pub exe: DevIno,
    /// The kernel object an LSM or fentry Open and its Close are about (the `struct
    /// file`'s address): those programs see the file's last release, not an fd's close,
    /// so this pairs them. 0 elsewhere.
    pub object: u64,
    /// `comm` of the current task.
    pub comm: [u8; 16],
    /// The file's name (`d_name`), NUL-terminated (Open, Close, Fd).
    pub name: [u8; NAME_LEN],
    /// The first path as the caller passed it (Path), or the executed filename (Exec).
    pub path: [u8; PATH_LEN],
    /// The second path (rename, link, symlink).
    pub path2: [u8; PATH_LEN],
}

/// The LSM family of file-change programs: (program, LSM hook, whether the family can
/// do without it). The one optional hook is one a kernel may lack (`file_truncate`
/// before 6.2, where `ftruncate` reaches `path_truncate` instead).
pub const LSM_PROGRAMS: &[(&str, &str, bool)] = &[
    ("lsm_file_open", "file_open", false),
    ("lsm_file_free", "file_free_security", false),
    ("lsm_path_truncate", "path_truncate", false),
    ("lsm_file_truncate", "file_truncate", true),
    ("lsm_path_chmod", "path_chmod", false),
    ("lsm_path_chown", "path_chown", false),
    ("lsm_path_rename", "path_rename", false),
    ("lsm_path_unlink", "path_unlink", false),
    ("lsm_path_rmdir", "path_rmdir", false),
    ("lsm_path_link", "path_link", false),
    ("lsm_path_symlink", "path_symlink", false),
];

/// The fentry family: the same programs on the `security_*` functions that call the
/// LSM hooks (program, kernel function, optional).
pub const FENTRY_PROGRAMS: &[(&str, &str, bool)] = &[
    ("fentry_file_open", "security_file_open", false),
    ("fentry_file_free", "security_file_free", false),
    ("fentry_path_truncate", "security_path_truncate", false),
    ("fentry_file_truncate", "security_file_truncate", true),
    ("fentry_path_chmod", "security_path_chmod", false),
    ("fentry_path_chown", "security_path_chown", false),
    ("fentry_path_rename", "security_path_rename", false),
    ("fentry_path_unlink", "security_path_unlink", false),
    ("fentry_path_rmdir", "security_path_rmdir", false),
    ("fentry_path_link", "security_path_link", false),
    ("fentry_path_symlink", "security_path_symlink", false),
];

/// The kernel's open flags the programs test (x86_64 values).
pub mod oflags {
    /// O_WRONLY
    pub const WRONLY: u64 = 0o1;
    /// O_RDWR
    pub const RDWR: u64 = 0o2;
    /// O_CREAT
    pub const CREAT: u64 = 0o100;
    /// O_TRUNC
    pub const TRUNC: u64 = 0o1000;
    /// Any of these means the open may change the file.
    pub const WRITE_INTENT: u64 = WRONLY | RDWR | CREAT | TRUNC;
}

#[cfg(feature = "aya")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, every bit pattern valid.
    unsafe impl aya::Pod for super::DevIno {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Offsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding() {
        // st_dev 8:1 (/dev/sda1) is 0x801 in user space, (8 << 20) | 1 in the kernel.
        assert_eq!(DevIno::from_stat(0x801, 5).dev, (8 << 20) | 1);
        // A large minor (259:65536 for nvme partitions) uses the split encoding.
        let (major, minor) = (259u64, 65537u64);
        let st_dev = (major << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
        assert_eq!(DevIno::from_stat(st_dev, 1).dev, (259 << 20) | 65537);
    }

    #[test]
    fn event_size_is_stable() {
        assert_eq!(core::mem::size_of::<DevIno>(), 16);
        assert_eq!(core::mem::size_of::<Event>(), 72 + 48 + 8 + 16 + NAME_LEN + 2 * PATH_LEN);
    }
}
