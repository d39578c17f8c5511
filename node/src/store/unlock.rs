//! Wrapping and unwrapping the store key, and the key file.
//!
//! The key file `<home>/keys/store.key` (mode 0600) is 40 bytes:
//!
//! ```text
//! "HEARTHK1" (8 bytes: magic and format version) ‖ key-encryption key (32 bytes)
//! ```
//!
//! It is written atomically (temp file, fsync, rename, directory fsync), so a
//! crash never leaves a truncated key.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hearth_crypto::seal::SecretKey;
use hearth_crypto::wrap::{self, KdfParams, MethodKind, WrappedKey};
use zeroize::Zeroizing;

use super::{OpenError, Unlock};
use crate::home::{self, Home};

const KEY_FILE_MAGIC: &[u8; 8] = b"HEARTHK1";
const KEY_FILE_LEN: usize = KEY_FILE_MAGIC.len() + SecretKey::LEN;

/// Wraps `store_key` as `unlock` asks, creating the key file if needed.
pub(super) fn wrap(
    home: &Home,
    store: &Path,
    store_key: &SecretKey,
    unlock: &Unlock,
    kdf: KdfParams,
) -> Result<WrappedKey, OpenError> {
    let rng = &mut rand::rngs::OsRng;
    match unlock {
        Unlock::Passphrase(passphrase) => {
            wrap::wrap_with_passphrase(store_key, passphrase.as_bytes(), kdf, rng).map_err(
                |source| OpenError::Wrap {
                    path: store.to_path_buf(),
                    source,
                },
            )
        }
        Unlock::KeyFile => {
            let kek = load_or_create_key_file(home)?;
            Ok(wrap::wrap_with_key(store_key, &kek, rng))
        }
    }
}

/// Unwraps the store key of the store at `store`.
pub(super) fn unwrap(
    home: &Home,
    store: &Path,
    wrapped: &WrappedKey,
    unlock: &Unlock,
) -> Result<SecretKey, OpenError> {
    match (wrapped.method_kind(), unlock) {
        (MethodKind::Passphrase, Unlock::KeyFile) => Err(OpenError::PassphraseRequired {
            path: store.to_path_buf(),
        }),
        (MethodKind::KeyFile, Unlock::Passphrase(_)) => Err(OpenError::NoPassphraseNeeded {
            path: store.to_path_buf(),
            key_file: home.store_key_path(),
        }),
        (MethodKind::Passphrase, Unlock::Passphrase(passphrase)) => wrapped
            .unwrap_with_passphrase(passphrase.as_bytes())
            .map_err(|source| match source {
                wrap::Error::WrongPassphrase | wrap::Error::EmptyPassphrase => {
                    OpenError::WrongPassphrase {
                        path: store.to_path_buf(),
                    }
                }
                source => OpenError::KeyringInvalid {
                    path: store.to_path_buf(),
                    source,
                },
            }),
        (MethodKind::KeyFile, Unlock::KeyFile) => {
            let kek = read_key_file(&home.store_key_path())?;
            wrapped
                .unwrap_with_key(&kek)
                .map_err(|source| match source {
                    wrap::Error::WrongKey => OpenError::WrongKeyFile {
                        path: home.store_key_path(),
                        store: store.to_path_buf(),
                    },
                    source => OpenError::KeyringInvalid {
                        path: store.to_path_buf(),
                        source,
                    },
                })
        }
    }
}

/// Reads the key file, or creates one with a fresh random key if it is absent.
/// An existing but invalid file is an error, never overwritten: it may be the
/// only key to some other copy of the store.
fn load_or_create_key_file(home: &Home) -> Result<SecretKey, OpenError> {
    let path = home.store_key_path();
    match read_key_file(&path) {
        Ok(kek) => Ok(kek),
        Err(OpenError::KeyFileMissing { .. }) => {
            home.ensure_dirs()?;
            let kek = SecretKey::generate(&mut rand::rngs::OsRng);
            let mut contents = Zeroizing::new([0u8; KEY_FILE_LEN]);
            contents[..KEY_FILE_MAGIC.len()].copy_from_slice(KEY_FILE_MAGIC);
            contents[KEY_FILE_MAGIC.len()..].copy_from_slice(kek.as_bytes());
            home::write_atomic(&path, &contents[..], home::SECRET_FILE_MODE)?;
            tracing::info!(key_file = %path.display(), "wrote new store key file");
            Ok(kek)
        }
        Err(e) => Err(e),
    }
}

fn read_key_file(path: &Path) -> Result<SecretKey, OpenError> {
    let bytes = match home::read_bounded(path, KEY_FILE_LEN as u64) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(home::Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(OpenError::KeyFileMissing {
                path: path.to_path_buf(),
            });
        }
        Err(home::Error::TooLarge { .. }) => {
            return Err(OpenError::KeyFileInvalid {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let invalid = || OpenError::KeyFileInvalid {
        path: path.to_path_buf(),
    };
    let key: &[u8; SecretKey::LEN] = bytes
        .strip_prefix(KEY_FILE_MAGIC)
        .ok_or_else(invalid)?
        .try_into()
        .map_err(|_| invalid())?;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                key_file = %path.display(),
                mode = format_args!("{mode:o}"),
                "store key file is readable by other users; run chmod 600 on it"
            );
        }
    }
    Ok(SecretKey::from_bytes(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Home) {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path()).unwrap();
        (tmp, home)
    }

    #[test]
    fn key_file_is_created_private_and_then_reused() {
        let (_tmp, home) = home();
        let first = load_or_create_key_file(&home).unwrap();
        let path = home.store_key_path();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_FILE_LEN as u64);
        let again = load_or_create_key_file(&home).unwrap();
        assert_eq!(first.as_bytes(), again.as_bytes());
    }

    #[test]
    fn invalid_key_file_is_refused_and_not_overwritten() {
        let (_tmp, home) = home();
        home.ensure_dirs().unwrap();
        let path = home.store_key_path();
        for bad in [&b""[..], &[0u8; KEY_FILE_LEN], b"HEARTHK1short"] {
            fs::write(&path, bad).unwrap();
            assert!(matches!(
                load_or_create_key_file(&home),
                Err(OpenError::KeyFileInvalid { .. })
            ));
            assert_eq!(fs::read(&path).unwrap(), bad);
        }
        fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let err = read_key_file(&path).err().unwrap();
        assert!(matches!(err, OpenError::KeyFileInvalid { .. }), "{err}");
        assert!(err.to_string().contains("keys/store.key"), "{err}");
    }

    #[test]
    fn missing_key_file_is_reported_by_path() {
        let (_tmp, home) = home();
        let err = read_key_file(&home.store_key_path()).err().unwrap();
        assert!(matches!(err, OpenError::KeyFileMissing { .. }));
        assert!(err.to_string().contains("keys/store.key"), "{err}");
    }
}
