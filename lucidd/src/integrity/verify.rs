//! Checking a model against its approval: contents (by the approval's hashing method,
//! re-hashing only what a watch saw touched when it says so), the set of files, and
//! each file's mode and owner.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use super::approvals::{Approval, Attr, Verification};
use super::hash::{files, hash_model, HashError};
use crate::ledger::now_ns;

/// Mode and owner of every file of the model at `root`, by relative name.
pub fn attrs_of(root: &Path, ignored: &[String]) -> Result<BTreeMap<String, Attr>, HashError> {
    let mut out = BTreeMap::new();
    for (path, name, _) in files(root, ignored)? {
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            out.insert(name, Attr { mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid() });
        }
    }
    Ok(out)
}

/// What a watch saw touched in a model: relative names (files, or directories whose
/// contents all count), each with the byte range written where it is known (`None`:
/// the whole file).
pub type Touched = BTreeMap<String, Option<(u64, u64)>>;

/// Whether the resource for `file` (its byte range `shard` when sharded) is touched.
fn is_touched(touched: &Touched, file: &str, shard: Option<(u64, u64)>) -> bool {
    touched.iter().any(|(t, written)| {
        if t == file {
            return match (written, shard) {
                (Some((lo, hi)), Some((start, end))) => *lo < end && start < *hi,
                _ => true,
            };
        }
        t.is_empty() || file.starts_with(&format!("{t}/"))
    })
}

/// The state of `approval`'s model now. With `touched`, only those files (or files under
/// those directories, or the shards overlapping what was written) are read again; the others keep their approved digests (the
/// watch vouches that nothing else was written). `done` counts bytes hashed.
pub fn check(approval: &Approval, touched: Option<&Touched>, done: &AtomicU64) -> Verification {
    let now = now_ns();
    let approved = &approval.manifest;
    if std::fs::symlink_metadata(&approval.path).is_err() {
        let missing = approved.resources.iter().map(|r| r.split().0.to_string()).collect::<BTreeSet<_>>().into_iter().collect();
        return Verification { state: "missing".into(), time_ns: now, missing, ..Default::default() };
    }
    let changed_fn = |f: &str, shard: Option<(u64, u64)>| touched.is_some_and(|t| is_touched(t, f, shard));
    let previous = touched.map(|_| (approved, &changed_fn as &(dyn Fn(&str, Option<(u64, u64)>) -> bool + Sync)));
    let current = match hash_model(&approval.path, approved.method, &approved.ignore_paths, done, previous) {
        Ok(m) => m,
        Err(e) => {
            // A symlink or a special file dropped into the model, or a file that went away
            // while being read: the model is not as approved.
            return Verification { state: "modified".into(), time_ns: now, changed: vec![e.to_string()], ..Default::default() };
        }
    };
    let (changed, missing, added) = approved.diff(&current);
    let mut attributes = Vec::new();
    if !approval.attrs.is_empty() {
        if let Ok(now_attrs) = attrs_of(&approval.path, &approved.ignore_paths) {
            for (name, want) in &approval.attrs {
                if let Some(got) = now_attrs.get(name) {
                    if got != want {
                        attributes.push(format!(
                            "{name}: mode {:o} uid {} gid {} (approved {:o} {} {})",
                            got.mode, got.uid, got.gid, want.mode, want.uid, want.gid
                        ));
                    }
                }
            }
        }
    }
    let state = if !changed.is_empty() || !missing.is_empty() || !attributes.is_empty() {
        "modified"
    } else if !added.is_empty() {
        "unapproved file"
    } else {
        "verified"
    };
    Verification { state: state.into(), time_ns: now, changed, missing, added, attributes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucid_common::manifest::Method;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::Ordering;

    fn t(names: &[(&str, Option<(u64, u64)>)]) -> Touched {
        names.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    fn approve(root: &Path) -> Approval {
        let manifest = hash_model(root, Method::Shards { size: 1024 }, &[], &AtomicU64::new(0), None).unwrap();
        Approval {
            id: "t".into(),
            path: root.to_path_buf(),
            note: None,
            approved_ns: 0,
            record_seq: 0,
            envelope: lucid_common::dsse::Envelope { payload: String::new(), payload_type: String::new(), signatures: vec![] },
            manifest,
            last: Default::default(),
            attrs: attrs_of(root, &[]).unwrap(),
            last_change: None,
        }
    }

    #[test]
    fn states_follow_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.bin"), vec![1u8; 5000]).unwrap();
        std::fs::write(dir.path().join("sub/b.bin"), vec![2u8; 3000]).unwrap();
        let a = approve(dir.path());
        let done = AtomicU64::new(0);
        assert_eq!(check(&a, None, &done).state, "verified");
        assert_eq!(done.load(Ordering::Relaxed), 8000);

        // Only the touched file is read again.
        std::fs::write(dir.path().join("sub/b.bin"), vec![3u8; 3000]).unwrap();
        let done = AtomicU64::new(0);
        let v = check(&a, Some(&t(&[("sub/b.bin", None)])), &done);
        assert_eq!((v.state.as_str(), done.load(Ordering::Relaxed)), ("modified", 3000));
        // A touched directory covers the files under it.
        let done = AtomicU64::new(0);
        assert_eq!(check(&a, Some(&t(&[("sub", None)])), &done).state, "modified");
        assert_eq!(done.load(Ordering::Relaxed), 3000);
        std::fs::write(dir.path().join("sub/b.bin"), vec![2u8; 3000]).unwrap();

        // A write at a known range re-reads only the shards it overlaps (1 KiB shards).
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new().write(true).open(dir.path().join("a.bin")).unwrap().write_at(b"zz", 2100).unwrap();
        let done = AtomicU64::new(0);
        let v = check(&a, Some(&t(&[("a.bin", Some((2100, 2102)))])), &done);
        assert_eq!((v.state.as_str(), v.changed.as_slice(), done.load(Ordering::Relaxed)), ("modified", ["a.bin:2048:3072".to_string()].as_slice(), 1024));
        std::fs::OpenOptions::new().write(true).open(dir.path().join("a.bin")).unwrap().write_at(&[1u8, 1], 2100).unwrap();

        // Mode changes count; an added file alone is "unapproved file".
        std::fs::set_permissions(dir.path().join("a.bin"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let v = check(&a, Some(&Touched::new()), &AtomicU64::new(0));
        assert_eq!((v.state.as_str(), v.attributes.len()), ("modified", 1));
        std::fs::set_permissions(dir.path().join("a.bin"), std::fs::Permissions::from_mode(a.attrs["a.bin"].mode)).unwrap();
        std::fs::write(dir.path().join("new.bin"), b"x").unwrap();
        let v = check(&a, Some(&t(&[("new.bin", None)])), &AtomicU64::new(0));
        assert_eq!((v.state.as_str(), v.added.as_slice()), ("unapproved file", ["new.bin:0:1".to_string()].as_slice()));
        std::fs::remove_file(dir.path().join("new.bin")).unwrap();
        std::fs::remove_file(dir.path().join("a.bin")).unwrap();
        let v = check(&a, Some(&t(&[("a.bin", None)])), &AtomicU64::new(0));
        assert_eq!((v.state.as_str(), v.missing.len()), ("modified", 5));
    }
}
