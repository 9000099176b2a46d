//! Hashing a model into a manifest: every file (or every shard of every file) streamed
//! through SHA-256 in 1 MiB reads, the files and shards spread over all cores, so a
//! directory of many shards hashes in parallel and a single large file does too once it
//! is cut into shards. Symlinks are refused, as model_signing refuses them by default:
//! a link could point the approval at a file outside the model.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use lucid_common::hex;
use lucid_common::manifest::{Manifest, Method, Resource};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Paths model_signing leaves out by default (version control files).
pub const DEFAULT_IGNORED: &[&str] = &[".git", ".gitattributes", ".github", ".gitignore"];

/// Bytes read per call.
const CHUNK: usize = 1 << 20;

/// Why a model could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A symbolic link inside the model.
    #[error("{0}: symbolic links are not allowed in an approved model")]
    Symlink(String),
    /// Something that is neither a file nor a directory (a socket, a device).
    #[error("{0}: not a regular file")]
    NotAFile(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> HashError + '_ {
    move |source| HashError::Io { path: path.display().to_string(), source }
}

/// One unit of work: a whole file, or one byte range of it.
struct Piece {
    path: PathBuf,
    /// The file's relative name.
    file: String,
    /// The resource's name (the file's, or `file:start:end`).
    name: String,
    range: Option<(u64, u64)>,
}

/// The regular files under `root` (or `root` itself), as (absolute path, relative POSIX
/// name, size), leaving out `ignored` relative paths and everything under them.
pub fn files(root: &Path, ignored: &[String]) -> Result<Vec<(PathBuf, String, u64)>, HashError> {
    let meta = std::fs::symlink_metadata(root).map_err(io(root))?;
    if meta.file_type().is_symlink() {
        return Err(HashError::Symlink(root.display().to_string()));
    }
    if meta.is_file() {
        return Ok(vec![(root.to_path_buf(), ".".into(), meta.len())]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if ignored.iter().any(|i| name == *i || name.starts_with(&format!("{i}/"))) {
                continue;
            }
            let kind = entry.file_type().map_err(io(&path))?;
            if kind.is_symlink() {
                return Err(HashError::Symlink(path.display().to_string()));
            } else if kind.is_dir() {
                stack.push((path, format!("{name}/")));
            } else if kind.is_file() {
                let len = entry.metadata().map_err(io(&path))?.len();
                out.push((path, name, len));
            } else {
                return Err(HashError::NotAFile(path.display().to_string()));
            }
        }
    }
    Ok(out)
}

/// SHA-256 of `len` bytes of `file` from `start`, reading `CHUNK` at a time.
fn digest_range(file: &File, start: u64, len: u64, path: &Path, done: &AtomicU64) -> Result<[u8; 32], HashError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK.min(len as usize).max(1)];
    let mut at = start;
    let end = start + len;
    while at < end {
        let want = buf.len().min((end - at) as usize);
        let n = match file.read_at(&mut buf[..want], at) {
            Ok(0) => return Err(HashError::Io { path: path.display().to_string(), source: ErrorKind::UnexpectedEof.into() }),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(path)(e)),
        };
        h.update(&buf[..n]);
        at += n as u64;
        done.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(h.finalize().into())
}

/// An earlier manifest of the same model and which resources changed since (by the
/// file's relative name and, for a shard, its byte range): those are hashed again, the
/// others' digests reused.
pub type Previous<'a> = (&'a Manifest, &'a (dyn Fn(&str, Option<(u64, u64)>) -> bool + Sync));

/// Hashes the model at `root` by `method`, leaving out `ignored` paths; `done` counts
/// bytes hashed so far (for progress). `only` limits the work to the named resources
/// (an incremental re-hash after a change): the others are taken from `previous`.
pub fn hash_model(root: &Path, method: Method, ignored: &[String], done: &AtomicU64, previous: Option<Previous>) -> Result<Manifest, HashError> {
    let mut pieces = Vec::new();
    for (path, name, len) in files(root, ignored)? {
        match method {
            Method::Files | Method::FilesBlake3 => pieces.push(Piece { path, file: name.clone(), name, range: None }),
            Method::Shards { size } => {
                let mut start = 0;
                while start < len {
                    let end = (start + size).min(len);
                    pieces.push(Piece { path: path.clone(), file: name.clone(), name: format!("{name}:{start}:{end}"), range: Some((start, end)) });
                    start = end;
                }
            }
        }
    }
    let algorithm = method.algorithm();
    // The previous digests by resource name (a model can have thousands of shards).
    let reusable: std::collections::HashMap<&str, &Resource> =
        previous.map(|(prev, _)| prev.resources.iter().map(|r| (r.name.as_str(), r)).collect()).unwrap_or_default();
    let resources = pieces
        .par_iter()
        .map(|p| {
            // Unchanged since the previous manifest: reuse its digest.
            if let Some((_, changed)) = &previous {
                if let Some(r) = reusable.get(p.name.as_str()).filter(|_| !changed(&p.file, p.range)) {
                    return Ok((*r).clone());
                }
            }
            if method == Method::FilesBlake3 {
                // BLAKE3's tree spreads one file over every core.
                let mut h = blake3::Hasher::new();
                h.update_mmap_rayon(&p.path).map_err(io(&p.path))?;
                done.fetch_add(h.count(), Ordering::Relaxed);
                return Ok(Resource { name: p.name.clone(), algorithm: algorithm.clone(), digest: h.finalize().to_hex().to_string() });
            }
            let file = File::open(&p.path).map_err(io(&p.path))?;
            let (start, len) = match p.range {
                Some((s, e)) => (s, e - s),
                None => (0, file.metadata().map_err(io(&p.path))?.len()),
            };
            let digest = digest_range(&file, start, len, &p.path, done)?;
            Ok(Resource { name: p.name.clone(), algorithm: algorithm.clone(), digest: hex::encode(&digest) })
        })
        .collect::<Result<Vec<_>, HashError>>()?;
    let name = root.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| ".".into());
    Ok(Manifest::new(&name, method, ignored.to_vec(), resources))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored() -> Vec<String> {
        DEFAULT_IGNORED.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_upstream_vector_hashes_to_its_digest_by_files_and_by_shards() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("v1.1.0-elliptic-key");
        std::fs::create_dir_all(model.join(".git")).unwrap();
        std::fs::write(model.join("signme-1"), b"signme-1\n").unwrap();
        std::fs::write(model.join("signme-2"), b"signme-2").unwrap();
        std::fs::write(model.join("empty"), b"").unwrap();
        std::fs::write(model.join(".git/HEAD"), b"ref").unwrap();
        let done = AtomicU64::new(0);
        let mut ig = ignored();
        ig.push("empty".into());
        let m = hash_model(&model, Method::Files, &ig, &done, None).unwrap();
        assert_eq!(m.name, "v1.1.0-elliptic-key");
        assert_eq!(hex::encode(&m.subject_digest()), "92745110b1ab4368471cbe31664e10174e954b113a3df333db860317b2c6dec4");
        assert_eq!(done.load(Ordering::Relaxed), 17);
        // Shards of 4 bytes; the empty file (no longer ignored) has no shard at all.
        let s = hash_model(&model, Method::Shards { size: 4 }, &ignored(), &AtomicU64::new(0), None).unwrap();
        let names: Vec<&str> = s.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["signme-1:0:4", "signme-1:4:8", "signme-1:8:9", "signme-2:0:4", "signme-2:4:8"]);
        assert_eq!(s.resources[0].algorithm, "sha256-sharded-4");
        assert_eq!(hex::encode(&s.subject_digest()), "694e6f4e02dc1ad66d9c33c44d6c1dc3269404ebe79fc109e221b93bdb8f8ffc");
    }

    #[test]
    fn a_rehash_after_a_change_reads_only_the_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        for (name, size) in [("a.bin", 10_000usize), ("b.bin", 20_000)] {
            std::fs::write(dir.path().join(name), vec![7u8; size]).unwrap();
        }
        let first = hash_model(dir.path(), Method::Shards { size: 4096 }, &[], &AtomicU64::new(0), None).unwrap();
        std::fs::write(dir.path().join("b.bin"), vec![8u8; 20_000]).unwrap();
        let done = AtomicU64::new(0);
        let changed = |f: &str, _: Option<(u64, u64)>| f == "b.bin";
        let second = hash_model(dir.path(), Method::Shards { size: 4096 }, &[], &done, Some((&first, &changed))).unwrap();
        assert_eq!(done.load(Ordering::Relaxed), 20_000, "a.bin was not read again");
        let full = hash_model(dir.path(), Method::Shards { size: 4096 }, &[], &AtomicU64::new(0), None).unwrap();
        assert_eq!(second, full);
        let (changed, missing, added) = first.diff(&second);
        assert_eq!((changed.len(), missing.len(), added.len()), (5, 0, 0));
    }

    #[test]
    fn symlinks_and_unreadable_paths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.bin"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        assert!(matches!(hash_model(dir.path(), Method::Files, &[], &AtomicU64::new(0), None), Err(HashError::Symlink(_))));
        assert!(matches!(hash_model(&dir.path().join("absent"), Method::Files, &[], &AtomicU64::new(0), None), Err(HashError::Io { .. })));
        // BLAKE3 by file.
        let b3 = hash_model(dir.path(), Method::FilesBlake3, &["link".to_string()], &AtomicU64::new(0), None).unwrap();
        assert_eq!((b3.resources[0].algorithm.as_str(), b3.resources[0].digest.clone()), ("blake3", blake3::hash(b"x").to_hex().to_string()));
        // A single file is a model whose one resource is ".".
        let one = hash_model(&dir.path().join("w.bin"), Method::Files, &[], &AtomicU64::new(0), None).unwrap();
        assert_eq!(one.resources[0].name, ".");
    }
}
