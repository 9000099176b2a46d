//! Watching approved models: a source (eBPF probes, else fanotify, else nothing but the
//! periodic check) reports what touched a watched directory and who did it; the judge
//! ([`judge`]) batches those per model, re-hashes only what was touched, and writes one
//! ledger record per change with the verdict (and an anomaly when it is unapproved).
//! A full re-verification runs periodically as the backstop for what no source sees.

pub mod ebpf;
pub mod fanotify;
pub mod judge;
pub mod plan;
pub mod procs;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock, RwLock};

use lucid_common::probe::{DevIno, Op};
use tokio::sync::mpsc;

use super::approvals::Approval;
use super::verify::Touched;

/// The directories being watched, by the kernel's (device, inode) key, and the
/// ancestors of each model's root (a rename of one moves the model).
#[derive(Clone, Debug, Default)]
pub struct WatchSet {
    /// Watched directories: every approved model directory and its subdirectories
    /// (for a single-file model, the file's directory).
    pub dirs: HashMap<DevIno, PathBuf>,
    /// Ancestors of the watched roots, up to `/`.
    pub ancestors: HashMap<DevIno, PathBuf>,
    /// Approved single files (serving binaries among them).
    pub files: HashMap<DevIno, PathBuf>,
    /// Every approved file (what enforcement protects).
    pub protected: HashMap<DevIno, PathBuf>,
    /// Whether some approval has a file of more than one shard (then where writes
    /// land is worth tracking).
    pub needs_ranges: bool,
}

fn key_of(path: &Path) -> Option<DevIno> {
    std::fs::symlink_metadata(path).ok().map(|m| DevIno::from_stat(m.dev(), m.ino()))
}

impl WatchSet {
    /// The set for `approvals`, read from the file system now.
    pub fn build(approvals: &[Approval]) -> WatchSet {
        let mut set = WatchSet::default();
        for a in approvals {
            let Ok(meta) = std::fs::symlink_metadata(&a.path) else { continue };
            if let Ok(files) = super::hash::files(&a.path, &a.manifest.ignore_paths) {
                if let lucid_common::manifest::Method::Shards { size } = a.manifest.method {
                    set.needs_ranges |= files.iter().any(|(_, _, len)| *len > size);
                }
                for (path, _, _) in files {
                    if let Some(k) = key_of(&path) {
                        set.protected.insert(k, path);
                    }
                }
            }
            let root = if meta.is_dir() {
                a.path.clone()
            } else {
                set.files.insert(DevIno::from_stat(meta.dev(), meta.ino()), a.path.clone());
                a.path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"))
            };
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                if let Some(k) = key_of(&dir) {
                    set.dirs.insert(k, dir.clone());
                }
                if !meta.is_dir() {
                    continue;
                }
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for e in entries.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            stack.push(e.path());
                        }
                    }
                }
            }
            let mut up = root.parent();
            while let Some(dir) = up {
                if let Some(k) = key_of(dir) {
                    set.ancestors.entry(k).or_insert_with(|| dir.to_path_buf());
                }
                up = dir.parent();
            }
        }
        set
    }

    /// A known directory's path (watched or ancestor).
    pub fn path_of(&self, key: &DevIno) -> Option<&PathBuf> {
        self.dirs.get(key).or_else(|| self.ancestors.get(key))
    }
}

/// `path` with `.` and `..` folded away, without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The process behind an observation, as the source saw it.
#[derive(Clone, Debug, Default)]
pub struct Who {
    /// Process id (thread-group id).
    pub pid: u32,
    /// Parent's process id (0 where the source cannot tell).
    pub ppid: u32,
    /// Real uid (`u32::MAX` where the source cannot tell).
    pub uid: u32,
    /// `comm`.
    pub comm: String,
    /// Executable path, where the source knows it.
    pub exe: Option<String>,
}

/// Something a source saw touch a watched directory.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The operation.
    pub op: Op,
    /// Absolute paths touched (rename and link: from, to).
    pub paths: Vec<PathBuf>,
    /// Who.
    pub who: Who,
    /// Wall-clock time, ns since the epoch.
    pub time_ns: u64,
    /// False for an open for writing: the close that follows settles it.
    pub settled: bool,
    /// The bytes written, where the source knows (`None`: the whole file).
    pub range: Option<(u64, u64)>,
}

/// What sources tell the judge.
#[derive(Debug)]
pub enum Input {
    /// The approvals changed: rebuild the watch set.
    Refresh,
    /// A change.
    Seen(Seen),
    /// A process executed a program (the process table).
    Proc {
        /// Who.
        who: Who,
        /// The program as exec named it, when absolute.
        exe: Option<String>,
    },
    /// A process exited: its files open for writing are closed.
    Exit(u32),
    /// Enforcement refused a write-open of an approved file.
    Refused {
        /// Who was refused.
        who: Who,
        /// The file.
        path: PathBuf,
    },
    /// A process executed a watched or approved file (a serving binary).
    Exec {
        /// Who.
        who: Who,
        /// The executable.
        path: PathBuf,
    },
    /// Events were lost (ring buffer full, fanotify queue overflow): re-verify all.
    Lost {
        /// How many (0 where the source cannot count them).
        count: u64,
        /// Which source.
        source: &'static str,
    },
    /// Something touched a path the source could not resolve: re-verify all.
    Unresolved(String),
    /// Re-verify everything now.
    VerifyAll(&'static str),
    /// Put a new plan in force (the configuration changed); answered once it is.
    Plan(plan::WatchPlan, tokio::sync::oneshot::Sender<()>),
}

/// Where a source learns the watch set and publishes changes to it.
pub trait Source: Send + Sync {
    /// The set to watch from now on.
    fn watch(&mut self, set: &WatchSet) -> Result<(), String>;

    /// Whether writes to approved files are refused: `off`, `on (...)`, or
    /// `unavailable: why`.
    fn enforcement(&self) -> String {
        "off".into()
    }
}

/// The watch as the rest of the daemon sees it: its mode, and a way to tell it that
/// approvals changed.
#[derive(Default)]
pub struct Watch {
    tx: OnceLock<mpsc::UnboundedSender<Input>>,
    info: Mutex<WatchInfo>,
    plan: Mutex<Option<plan::WatchPlan>>,
    /// The set in force, shared with the source's reader.
    pub set: std::sync::Arc<RwLock<WatchSet>>,
}

/// How the watch runs.
#[derive(Clone, Debug, Default)]
pub struct WatchInfo {
    /// `ebpf-tracepoint`, `fanotify`, `periodic` or `off`.
    pub mode: String,
    /// Why that mode (what failed before it).
    pub detail: String,
    /// Changes judged.
    pub changes: u64,
    /// Events lost.
    pub lost: u64,
    /// Enforcement: `off`, `on (...)` or `unavailable: why`.
    pub enforcement: String,
}

impl Watch {
    /// Tells the judge the approvals changed.
    pub fn refresh(&self) {
        self.send(Input::Refresh);
    }

    /// Sends `input` to the judge (dropped before the watch starts).
    pub fn send(&self, input: Input) {
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(input);
        }
    }

    /// Puts `plan` in force and waits until it is (the source picked again when it
    /// changed); false if the watch is not running or did not answer within `patience`.
    pub async fn replan(&self, plan: plan::WatchPlan, patience: std::time::Duration) -> bool {
        let Some(tx) = self.tx.get() else { return false };
        let (done, wait) = tokio::sync::oneshot::channel();
        if tx.send(Input::Plan(plan, done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(patience, wait).await, Ok(Ok(())))
    }

    /// The plan in force (`None` until the watch has started).
    pub fn plan(&self) -> Option<plan::WatchPlan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_plan(&self, plan: Option<plan::WatchPlan>) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    /// How the watch runs now.
    pub fn info(&self) -> WatchInfo {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut WatchInfo)) {
        f(&mut self.info.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Relative names (in a model rooted at `root`) of `paths` under it, with `range` (the
/// bytes written); `None` inside when one of them is the root itself or above it (the
/// whole model moved or went).
pub fn touched_in(root: &Path, is_dir: bool, paths: &[PathBuf], range: Option<(u64, u64)>) -> Option<Option<Touched>> {
    let mut names = Touched::new();
    let mut hit = false;
    for p in paths {
        if root.starts_with(p) {
            return Some(None);
        }
        if !is_dir {
            continue;
        }
        if let Ok(rel) = p.strip_prefix(root) {
            hit = true;
            names.insert(rel.to_string_lossy().into_owned(), range);
        }
    }
    hit.then_some(Some(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_folded_lexically() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
        assert_eq!(normalize(Path::new("/../..")), PathBuf::from("/"));
    }

    #[test]
    fn touched_names_inside_a_model() {
        let root = Path::new("/m/llama");
        let t = touched_in(root, true, &[PathBuf::from("/m/llama/w.bin"), PathBuf::from("/tmp/x")], Some((5, 9)));
        assert_eq!(t, Some(Some(Touched::from([("w.bin".to_string(), Some((5, 9)))]))));
        assert_eq!(touched_in(root, true, &[PathBuf::from("/m")], None), Some(None));
        assert_eq!(touched_in(root, true, &[PathBuf::from("/m/llama2/w")], None), None);
        // A single-file model is touched when the file or a directory above it is.
        assert_eq!(touched_in(Path::new("/usr/bin/srv"), false, &[PathBuf::from("/usr/bin/srv")], None), Some(None));
        assert_eq!(touched_in(Path::new("/usr/bin/srv"), false, &[PathBuf::from("/usr/bin/other")], None), None);
    }

    #[test]
    fn the_set_holds_subdirectories_ancestors_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m");
        std::fs::create_dir_all(model.join("sub/deeper")).unwrap();
        std::fs::write(model.join("sub/w.bin"), b"x").unwrap();
        std::fs::write(dir.path().join("srv"), b"#!").unwrap();
        let approval = |path: PathBuf| Approval {
            id: super::super::approvals::id_of(&path),
            path,
            note: None,
            approved_ns: 0,
            record_seq: 0,
            envelope: lucid_common::dsse::Envelope { payload: String::new(), payload_type: String::new(), signatures: vec![] },
            manifest: lucid_common::manifest::Manifest::new("m", lucid_common::manifest::Method::Files, vec![], vec![]),
            last: Default::default(),
            attrs: Default::default(),
            last_change: None,
        };
        let set = WatchSet::build(&[approval(model.clone()), approval(dir.path().join("srv"))]);
        let dirs: std::collections::BTreeSet<&PathBuf> = set.dirs.values().collect();
        assert!(dirs.contains(&model) && dirs.contains(&model.join("sub/deeper")) && dirs.contains(&dir.path().to_path_buf()));
        assert!(set.ancestors.values().any(|p| p == Path::new("/")));
        assert_eq!(set.files.values().next(), Some(&dir.path().join("srv")));
    }
}
