//! The home directory: where one node keeps everything it owns on disk.
//!
//! A node's state lives under a single directory, its *home*. It is chosen, in
//! order, by the `--home DIR` flag, the `HEARTH_HOME` environment variable, or
//! the platform data directory (`~/.local/share/hearth` on Linux,
//! `~/Library/Application Support/org.hearth.hearth` on macOS).
//!
//! ```text
//! <home>/                 0700
//!   store.redb            0600  the encrypted replica (see `crate::store`)
//!   store.redb.creating   0600  a store being created; linked to store.redb when complete
//!   keys/                 0700
//!     store.key           0600  key file that wraps the store key when no passphrase is used
//!   hearth.toml                 configuration
//!   api.addr                    address of the running daemon's HTTP API
//!   api-token             0600  bearer token of that API
//!   daemon.lock                 held by the running daemon
//!   daemon.log                  the daemon's log when it runs detached
//! ```
//!
//! Directories are created with mode 0700. Files are replaced atomically with
//! [`write_atomic`]: the bytes go to a temporary file in the same directory,
//! which is fsynced, renamed over the target, and then the directory itself is
//! fsynced. A crash therefore leaves either the old file or the new one, never
//! a half-written key or token.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Environment variable that selects the home directory when `--home` is absent.
pub const HOME_ENV: &str = "HEARTH_HOME";

/// Mode of every directory the node creates under its home.
pub const DIR_MODE: u32 = 0o700;

/// Mode of files that hold secrets (keys, tokens, the store).
pub const SECRET_FILE_MODE: u32 = 0o600;

/// Mode of files that hold nothing secret (the API address, the config).
pub const PUBLIC_FILE_MODE: u32 = 0o644;

/// Errors from resolving or writing the home directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `--home` nor `HEARTH_HOME` was given and the platform has no data directory.
    #[error(
        "no home directory: pass --home DIR or set {HOME_ENV} (the platform has no data directory)"
    )]
    NoDataDir,
    /// The current directory, needed to make a relative home absolute, is unavailable.
    #[error("cannot resolve relative home {path}")]
    Relative {
        /// The relative path as given.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation on a path under the home failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done (`create directory`, `write`, …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A file is larger than the caller allows, so it was not read.
    #[error("file {path} is too large ({len} bytes, at most {max} expected)")]
    TooLarge {
        /// The file concerned.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
        /// The limit in bytes.
        max: u64,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A resolved, absolute home directory and the paths of the files in it.
///
/// Resolving does not touch the filesystem; [`Home::ensure_dirs`] creates the
/// directories when a command is about to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Resolves the home from an explicit `--home` value, then `HEARTH_HOME`,
    /// then the platform data directory.
    pub fn resolve(explicit: Option<&Path>) -> Result<Home, Error> {
        let env = std::env::var_os(HOME_ENV);
        Self::resolve_from(explicit, env.as_deref())
    }

    /// Like [`Home::resolve`], with the environment value passed in (for tests
    /// and for callers that read the environment themselves). An empty value
    /// counts as unset.
    pub fn resolve_from(explicit: Option<&Path>, env: Option<&OsStr>) -> Result<Home, Error> {
        if let Some(path) = explicit.filter(|p| !p.as_os_str().is_empty()) {
            return Home::at(path);
        }
        if let Some(value) = env.filter(|v| !v.is_empty()) {
            return Home::at(Path::new(value));
        }
        let dirs =
            directories::ProjectDirs::from("org", "hearth", "hearth").ok_or(Error::NoDataDir)?;
        Home::at(dirs.data_dir())
    }

    /// A home at `root`, made absolute against the current directory.
    pub fn at(root: impl AsRef<Path>) -> Result<Home, Error> {
        let root = root.as_ref();
        let root = std::path::absolute(root).map_err(|source| Error::Relative {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(Home { root })
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<home>/store.redb`: the encrypted replica.
    pub fn store_path(&self) -> PathBuf {
        self.root.join("store.redb")
    }

    /// `<home>/store.redb.creating`: where a new store is built before it is
    /// linked to [`Home::store_path`], so a crash mid-create leaves no store.
    pub fn store_staging_path(&self) -> PathBuf {
        self.root.join("store.redb.creating")
    }

    /// `<home>/keys`: secret key material, mode 0700.
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// `<home>/keys/store.key`: the key file that wraps the store key when no
    /// passphrase protects it.
    pub fn store_key_path(&self) -> PathBuf {
        self.keys_dir().join("store.key")
    }

    /// `<home>/hearth.toml`: the configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("hearth.toml")
    }

    /// `<home>/api.addr`: the socket address of the running daemon's HTTP API.
    pub fn api_addr_path(&self) -> PathBuf {
        self.root.join("api.addr")
    }

    /// `<home>/listen.addrs`: the network addresses `hearth up` bound last
    /// time with its default listen addresses, one multiaddr a line, so the
    /// device keeps its ports across restarts and other devices find it
    /// where they last saw it.
    pub fn listen_path(&self) -> PathBuf {
        self.root.join("listen.addrs")
    }

    /// `<home>/api-token`: the bearer token of the HTTP API, mode 0600.
    pub fn api_token_path(&self) -> PathBuf {
        self.root.join("api-token")
    }

    /// `<home>/daemon.lock`: held by the running daemon.
    pub fn daemon_lock_path(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// `<home>/daemon.log`: the daemon's log when it runs detached.
    pub fn daemon_log_path(&self) -> PathBuf {
        self.root.join("daemon.log")
    }

    /// Whether a store exists in this home (`hearth init` has run).
    pub fn is_initialised(&self) -> bool {
        self.store_path().is_file()
    }

    /// Creates the home and `keys/` directories with mode 0700 if they are
    /// missing. An existing `keys/` directory is tightened to 0700; an existing
    /// home directory keeps the mode its owner gave it.
    pub fn ensure_dirs(&self) -> Result<(), Error> {
        create_dir_private(&self.root)?;
        let keys = self.keys_dir();
        create_dir_private(&keys)?;
        let mode = fs::metadata(&keys)
            .map_err(|e| Error::io("inspect", &keys, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(&keys, fs::Permissions::from_mode(DIR_MODE))
                .map_err(|e| Error::io("set permissions of", &keys, e))?;
        }
        Ok(())
    }
}

/// Creates `dir` and any missing parents with mode 0700, fsyncing the parent
/// of each directory created so the new entries survive a crash.
pub fn create_dir_private(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_private(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        // Another process won the race; the directory is there, which is all we need.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(Error::io("create directory", dir, e)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Fsyncs a directory, making renames and creations inside it durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// Replaces `path` with `contents` atomically and durably, with file mode `mode`.
///
/// The bytes are written to a fresh temporary file beside `path` (created with
/// `mode`, so a secret is never readable by others even briefly), fsynced,
/// renamed over `path`, and the directory is fsynced. The parent directory
/// must exist.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .unwrap_or(OsStr::new("file"))
        .to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| Error::io("replace", path, e))
    })();
    if result.is_err() {
        // Best effort: the temp file holds nothing the target would not have.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(dir)
}

/// Reads a whole file, refusing one longer than `max` bytes so that a hostile
/// or mistaken file cannot make the node allocate without bound.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("inspect", path, e))?
        .len();
    if len > max {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            len,
            max,
        });
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // `take` guards against a file that grows between the length check and the read.
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    if buf.len() as u64 > max {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            len: buf.len() as u64,
            max,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn explicit_home_wins_over_env_and_env_over_platform_dir() {
        let explicit = Home::resolve_from(Some(Path::new("/a/b")), Some(OsStr::new("/c"))).unwrap();
        assert_eq!(explicit.root(), Path::new("/a/b"));
        let env = Home::resolve_from(None, Some(OsStr::new("/c"))).unwrap();
        assert_eq!(env.root(), Path::new("/c"));
        let empty_explicit = Home::resolve_from(Some(Path::new("")), Some(OsStr::new("/c")));
        assert_eq!(empty_explicit.unwrap().root(), Path::new("/c"));
        // An empty variable counts as unset: both fall through to the platform dir.
        let empty_env = Home::resolve_from(None, Some(OsStr::new("")));
        let platform = Home::resolve_from(None, None);
        assert_eq!(format!("{empty_env:?}"), format!("{platform:?}"));
        if let Ok(platform) = platform {
            let root = platform.root();
            assert!(root.is_absolute());
            assert!(
                root.ends_with("hearth") || root.ends_with("org.hearth.hearth"),
                "{root:?}"
            );
        }
    }

    #[test]
    fn relative_home_is_made_absolute() {
        let home = Home::at("some/rel").unwrap();
        assert!(home.root().is_absolute());
        assert!(home.root().ends_with("some/rel"));
    }

    #[test]
    fn layout_paths_are_under_the_home() {
        let home = Home::at("/h").unwrap();
        assert_eq!(home.store_path(), Path::new("/h/store.redb"));
        assert_eq!(home.store_key_path(), Path::new("/h/keys/store.key"));
        assert_eq!(home.api_addr_path(), Path::new("/h/api.addr"));
        assert_eq!(home.api_token_path(), Path::new("/h/api-token"));
        assert_eq!(home.config_path(), Path::new("/h/hearth.toml"));
        assert_eq!(home.daemon_lock_path(), Path::new("/h/daemon.lock"));
        assert_eq!(home.daemon_log_path(), Path::new("/h/daemon.log"));
    }

    #[test]
    fn ensure_dirs_creates_private_directories_and_tightens_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("nested/home")).unwrap();
        assert!(!home.is_initialised());
        home.ensure_dirs().unwrap();
        assert_eq!(mode_of(home.root()), 0o700);
        assert_eq!(mode_of(tmp.path().join("nested").as_path()), 0o700);
        assert_eq!(mode_of(&home.keys_dir()), 0o700);

        fs::set_permissions(home.keys_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        home.ensure_dirs().unwrap();
        assert_eq!(mode_of(&home.keys_dir()), 0o700);
    }

    #[test]
    fn write_atomic_replaces_content_with_the_requested_mode_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("api-token");
        write_atomic(&path, b"first", SECRET_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(mode_of(&path), 0o600);
        write_atomic(&path, b"second", SECRET_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsStr::new("api-token").to_os_string()]);
    }

    #[test]
    fn write_atomic_into_a_missing_directory_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("missing/api.addr");
        let err = write_atomic(&path, b"x", PUBLIC_FILE_MODE).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn read_bounded_refuses_files_over_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, [7u8; 65]).unwrap();
        assert_eq!(read_bounded(&path, 65).unwrap().len(), 65);
        let err = read_bounded(&path, 64).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    len: 65,
                    max: 64,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));
    }
}
