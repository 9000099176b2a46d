//! Model manifests in the OpenSSF model_signing v1.0 format: an in-toto Statement v1
//! whose predicate (`https://model_signing/signature/v1.0`) lists every file (or every
//! shard of every file) of a model with its digest, and whose one subject's SHA-256 is
//! the hash of those digests in order. Lucid signs the Statement in a DSSE envelope with
//! the host key ([`crate::dsse`]); manifests produced by model_signing elsewhere parse
//! here and are checked against the files.
//!
//! Layout rules kept for compatibility: resources sort by path components, shards by
//! numeric offsets; a single-file model's resource is named `.`; shards are named
//! `path:start:end` with the algorithm `sha256-sharded-<size>`; empty files have no
//! shard; digests are lowercase hex.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::hex;

/// The in-toto Statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// model_signing's v1.0 predicate type.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// model_signing's default shard size (10^9 bytes).
pub const DEFAULT_SHARD_SIZE: u64 = 1_000_000_000;

/// How a model was cut into resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// One resource per file, SHA-256.
    Files,
    /// One resource per file, BLAKE3 (model_signing hashes BLAKE3 by file only).
    FilesBlake3,
    /// One resource per `size` bytes of each file.
    Shards {
        /// Bytes per shard (the last of a file is shorter).
        size: u64,
    },
}

impl Method {
    /// The `algorithm` of this method's resources.
    pub fn algorithm(self) -> String {
        match self {
            Method::Files => "sha256".into(),
            Method::FilesBlake3 => "blake3".into(),
            Method::Shards { size } => format!("sha256-sharded-{size}"),
        }
    }
}

/// One file or shard and its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Relative POSIX path (`.` for a single-file model), or `path:start:end` for a shard.
    pub name: String,
    /// `sha256`, or `sha256-sharded-<size>`.
    pub algorithm: String,
    /// Lowercase hex digest.
    pub digest: String,
}

impl Resource {
    /// The path and, for a shard, its byte range.
    pub fn split(&self) -> (&str, Option<(u64, u64)>) {
        // Only shard resources carry a range.
        if !self.algorithm.starts_with("sha256-sharded-") {
            return (&self.name, None);
        }
        let mut parts = self.name.rsplitn(3, ':');
        let (Some(end), Some(start), Some(path)) = (parts.next(), parts.next(), parts.next()) else { return (&self.name, None) };
        match (start.parse(), end.parse()) {
            (Ok(s), Ok(e)) => (path, Some((s, e))),
            _ => (&self.name, None),
        }
    }

    /// Sort key: path components, then shard offsets as numbers (model_signing's order).
    fn key(&self) -> (Vec<&str>, u64, u64) {
        let (path, range) = self.split();
        let (s, e) = range.unwrap_or((0, 0));
        (path.split('/').collect(), s, e)
    }
}

/// Why a Statement is not a model_signing v1.0 manifest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Not JSON, or a field is missing or of the wrong type.
    #[error("manifest: {0}")]
    Shape(String),
    /// A type or predicate type we do not read.
    #[error("manifest: unsupported {what} {found:?}")]
    Unsupported {
        /// Which field.
        what: &'static str,
        /// Its value.
        found: String,
    },
    /// The subject digest is not the hash of the resources' digests.
    #[error("manifest is inconsistent: its subject digest does not match its resources")]
    Inconsistent,
}

/// A model's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The model's name (its directory's name; informative only).
    pub name: String,
    /// Files or shards.
    pub method: Method,
    /// Paths left out (as model_signing records them).
    pub ignore_paths: Vec<String>,
    /// Resources, in model_signing's order.
    pub resources: Vec<Resource>,
}

impl Manifest {
    /// A manifest with its resources put in model_signing's order.
    pub fn new(name: &str, method: Method, ignore_paths: Vec<String>, mut resources: Vec<Resource>) -> Manifest {
        resources.sort_by(|a, b| a.key().cmp(&b.key()));
        Manifest { name: name.to_string(), method, ignore_paths, resources }
    }

    /// SHA-256 over the raw digests of the resources, in order: the Statement's subject.
    pub fn subject_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for r in &self.resources {
            h.update(hex::decode(&r.digest).unwrap_or_default());
        }
        h.finalize().into()
    }

    /// The in-toto Statement (the DSSE payload).
    pub fn statement(&self) -> Value {
        let mut serialization = json!({ "hash_type": "sha256", "allow_symlinks": false, "ignore_paths": self.ignore_paths });
        match self.method {
            Method::Files => serialization["method"] = json!("files"),
            Method::FilesBlake3 => {
                serialization["method"] = json!("files");
                serialization["hash_type"] = json!("blake3");
            }
            Method::Shards { size } => {
                serialization["method"] = json!("shards");
                serialization["shard_size"] = json!(size);
            }
        }
        json!({
            "_type": STATEMENT_TYPE,
            "subject": [{ "name": self.name, "digest": { "sha256": hex::encode(&self.subject_digest()) } }],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": serialization,
                "resources": self.resources.iter().map(|r| json!({ "name": r.name, "algorithm": r.algorithm, "digest": r.digest })).collect::<Vec<_>>(),
            },
        })
    }

    /// Reads a Statement (ours or model_signing's) and checks it is self-consistent.
    pub fn from_statement(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| ManifestError::Shape(e.to_string()))?;
        let field = |v: &Value, name: &str| -> Result<String, ManifestError> {
            v.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| ManifestError::Shape(format!("`{name}` missing or not a string")))
        };
        let t = field(&v, "_type")?;
        if t != STATEMENT_TYPE {
            return Err(ManifestError::Unsupported { what: "statement type", found: t });
        }
        let p = field(&v, "predicateType")?;
        if p != PREDICATE_TYPE {
            return Err(ManifestError::Unsupported { what: "predicate type", found: p });
        }
        let subjects = v["subject"].as_array().ok_or_else(|| ManifestError::Shape("`subject` is not a list".into()))?;
        let [subject] = subjects.as_slice() else { return Err(ManifestError::Shape(format!("{} subjects, expected 1", subjects.len()))) };
        let name = field(subject, "name")?;
        let claimed = subject["digest"]["sha256"].as_str().ok_or_else(|| ManifestError::Shape("subject has no sha256 digest".into()))?;
        let ser = &v["predicate"]["serialization"];
        let hash_type = ser["hash_type"].as_str().unwrap_or("sha256");
        let method = match (ser["method"].as_str(), hash_type) {
            (Some("files"), "sha256") => Method::Files,
            (Some("files"), "blake3") => Method::FilesBlake3,
            (Some("shards"), "sha256") => {
                // Written as a float by model_signing (`1000000000.0`).
                let size = ser["shard_size"].as_f64().filter(|s| *s >= 1.0 && s.fract() == 0.0).ok_or_else(|| ManifestError::Shape("bad `shard_size`".into()))?;
                Method::Shards { size: size as u64 }
            }
            (other, hash) => return Err(ManifestError::Unsupported { what: "serialization", found: format!("{other:?} with {hash}") }),
        };
        let ignore_paths = ser["ignore_paths"].as_array().map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect()).unwrap_or_default();
        let mut resources = Vec::new();
        for r in v["predicate"]["resources"].as_array().ok_or_else(|| ManifestError::Shape("`resources` is not a list".into()))? {
            let resource = Resource { name: field(r, "name")?, algorithm: field(r, "algorithm")?, digest: field(r, "digest")?.to_ascii_lowercase() };
            if resource.algorithm != method.algorithm() {
                return Err(ManifestError::Unsupported { what: "resource algorithm", found: resource.algorithm });
            }
            if hex::decode(&resource.digest).is_none_or(|d| d.len() != 32) {
                return Err(ManifestError::Shape(format!("resource {}: digest is not 32 bytes of hex", resource.name)));
            }
            resources.push(resource);
        }
        // Consistency is checked in the order listed, as model_signing does.
        let listed = Manifest { name, method, ignore_paths, resources };
        if hex::encode(&listed.subject_digest()) != claimed.to_ascii_lowercase() {
            return Err(ManifestError::Inconsistent);
        }
        Ok(Manifest::new(&listed.name, listed.method, listed.ignore_paths, listed.resources))
    }

    /// Resource names whose digests differ between `self` (approved) and `now`, with
    /// those only in one of them: (changed, missing now, new now).
    pub fn diff(&self, now: &Manifest) -> (Vec<String>, Vec<String>, Vec<String>) {
        let old: std::collections::BTreeMap<&str, &str> = self.resources.iter().map(|r| (r.name.as_str(), r.digest.as_str())).collect();
        let new: std::collections::BTreeMap<&str, &str> = now.resources.iter().map(|r| (r.name.as_str(), r.digest.as_str())).collect();
        let changed = old.iter().filter(|(n, d)| new.get(*n).is_some_and(|e| e != *d)).map(|(n, _)| n.to_string()).collect();
        let missing = old.keys().filter(|n| !new.contains_key(*n)).map(|n| n.to_string()).collect();
        let added = new.keys().filter(|n| !old.contains_key(*n)).map(|n| n.to_string()).collect();
        (changed, missing, added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        hex::encode(&Sha256::digest(bytes))
    }

    /// model_signing's own v1.1.0 test model: `signme-1` = "signme-1\n", `signme-2` =
    /// "signme-2"; its signed Statement's subject digest is 92745110...
    #[test]
    fn the_upstream_two_file_vector_gives_its_subject_digest() {
        let r = |name: &str, data: &[u8]| Resource { name: name.into(), algorithm: "sha256".into(), digest: sha(data) };
        let m = Manifest::new("v1.1.0-elliptic-key", Method::Files, vec![], vec![r("signme-2", b"signme-2"), r("signme-1", b"signme-1\n")]);
        assert_eq!(m.resources[0].name, "signme-1", "resources are sorted");
        assert_eq!(m.resources[0].digest, "bc9a717db6064a32cbe9eae6fc40651dd6d36ef1757183f590eff2b1765d7ebc");
        assert_eq!(hex::encode(&m.subject_digest()), "92745110b1ab4368471cbe31664e10174e954b113a3df333db860317b2c6dec4");
        let statement = serde_json::to_vec(&m.statement()).unwrap();
        assert_eq!(Manifest::from_statement(&statement).unwrap(), m);
    }

    #[test]
    fn shards_sort_numerically_and_paths_by_component() {
        let r = |name: &str| Resource { name: name.into(), algorithm: "sha256-sharded-8".into(), digest: sha(name.as_bytes()) };
        let m = Manifest::new("m", Method::Shards { size: 8 }, vec![], vec![r("f:16:23"), r("a.b:0:8"), r("f:8:16"), r("a/b:0:8"), r("f:0:8")]);
        let names: Vec<&str> = m.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a/b:0:8", "a.b:0:8", "f:0:8", "f:8:16", "f:16:23"]);
        assert_eq!(m.resources[4].split(), ("f", Some((16, 23))));
        // model_signing writes the shard size as a float.
        let mut v = m.statement();
        v["predicate"]["serialization"]["shard_size"] = json!(8.0);
        assert_eq!(Manifest::from_statement(&serde_json::to_vec(&v).unwrap()).unwrap().method, Method::Shards { size: 8 });
    }

    #[test]
    fn blake3_manifests_are_by_file_and_round_trip() {
        let r = Resource { name: "w.bin".into(), algorithm: "blake3".into(), digest: sha(b"stands in for a blake3 digest") };
        let m = Manifest::new("m", Method::FilesBlake3, vec![], vec![r]);
        let v = m.statement();
        assert_eq!((v["predicate"]["serialization"]["method"].as_str(), v["predicate"]["serialization"]["hash_type"].as_str()), (Some("files"), Some("blake3")));
        assert_eq!(Manifest::from_statement(&serde_json::to_vec(&v).unwrap()).unwrap(), m);
    }

    #[test]
    fn inconsistent_or_foreign_statements_are_refused() {
        let r = Resource { name: ".".into(), algorithm: "sha256".into(), digest: sha(b"x") };
        let m = Manifest::new("model.bin", Method::Files, vec![], vec![r]);
        let mut v = m.statement();
        v["predicate"]["resources"][0]["digest"] = json!(sha(b"y"));
        assert_eq!(Manifest::from_statement(&serde_json::to_vec(&v).unwrap()), Err(ManifestError::Inconsistent));
        let mut v = m.statement();
        v["predicateType"] = json!("https://slsa.dev/provenance/v1");
        assert!(matches!(Manifest::from_statement(&serde_json::to_vec(&v).unwrap()), Err(ManifestError::Unsupported { .. })));
        assert!(matches!(Manifest::from_statement(b"not json"), Err(ManifestError::Shape(_))));
        let mut v = m.statement();
        v["predicate"]["resources"][0]["algorithm"] = json!("md5");
        assert!(matches!(Manifest::from_statement(&serde_json::to_vec(&v).unwrap()), Err(ManifestError::Unsupported { .. })));
    }

    #[test]
    fn diff_names_changed_missing_and_new_resources() {
        let r = |n: &str, d: &[u8]| Resource { name: n.into(), algorithm: "sha256".into(), digest: sha(d) };
        let old = Manifest::new("m", Method::Files, vec![], vec![r("a", b"1"), r("b", b"2"), r("c", b"3")]);
        let now = Manifest::new("m", Method::Files, vec![], vec![r("a", b"1"), r("b", b"changed"), r("d", b"4")]);
        assert_eq!(old.diff(&now), (vec!["b".to_string()], vec!["c".to_string()], vec!["d".to_string()]));
    }
}
