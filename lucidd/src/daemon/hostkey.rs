//! The host's Ed25519 signing key: created on first start, kept in the state
//! directory with mode 0600, refused if anyone else can read it.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::SigningKey;

/// Why the host key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// Reading or writing the key file failed.
    #[error("host key {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file exists but is not a key.
    #[error("host key {0} is not a 32-byte Ed25519 seed")]
    Malformed(String),
    /// Group or others may read the file.
    #[error("host key {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)")]
    TooOpen {
        /// The key file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// No randomness for a new key.
    #[error("generating a host key: {0}")]
    Random(String),
}

/// Loads the key at `path`, creating it (mode 0600) if it does not exist.
pub fn load_or_create(path: &Path) -> Result<SigningKey, HostKeyError> {
    let shown = path.display().to_string();
    let io = |source| HostKeyError::Io { path: shown.clone(), source };
    match OpenOptions::new().read(true).open(path) {
        Ok(mut file) => {
            let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(HostKeyError::TooOpen { path: shown, mode });
            }
            let mut seed = Vec::new();
            file.read_to_end(&mut seed).map_err(io)?;
            let seed: [u8; 32] = seed.try_into().map_err(|_| HostKeyError::Malformed(shown.clone()))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed).map_err(|e| HostKeyError::Random(e.to_string()))?;
            let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
            file.write_all(&seed).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), "created host signing key");
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_and_refused_when_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.key");
        let a = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_or_create(&path), Err(HostKeyError::TooOpen { .. })));
    }
}
