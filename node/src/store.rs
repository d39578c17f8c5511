//! The encrypted replica: one redb file per device, every value sealed.
//!
//! # Model
//!
//! A [`Store`] is `<home>/store.redb`, a redb 4 database. Every row of the
//! data tables is a byte key and a *sealed* value: XChaCha20-Poly1305 under
//! the random 32-byte **store key**, with associated data
//! `hearth_crypto::seal::aad(table_name, key)`. Keys are stored in the clear
//! (they are collection names and sequence numbers, never record contents), so
//! range scans work; values are opaque. Because the associated data names the
//! table and key, a value copied, moved or swapped to another row fails to open
//! and is reported as [`Error::Tampered`] instead of being read as wrong data.
//!
//! The store key is never stored in the clear. Its [`WrappedKey`] lives in the
//! unsealed table `keyring-1`, wrapped either under Argon2id(passphrase) or
//! under a random key-encryption key kept in `<home>/keys/store.key` (mode
//! 0600). Which one was used is recorded, so opening with the wrong kind of
//! [`Unlock`] gives a clear error ([`OpenError::PassphraseRequired`],
//! [`OpenError::NoPassphraseNeeded`]) rather than a failed decryption.
//!
//! # Tables
//!
//! Table names carry a version; a new layout gets a new name and a named,
//! idempotent migration.
//!
//! | table | key | value |
//! |---|---|---|
//! | `keyring-1` (not sealed) | `"store"` | [`WrappedKey::to_bytes`] of the store key |
//! | | `"format"` | store format version, `u32` big-endian ([`FORMAT_VERSION`]) |
//! | `meta-1` | `"device-key"` | this device's ed25519 secret seed (32 bytes) |
//! | | `"device-name"` | this device's name (UTF-8) |
//! | | `"membership-log"` | the account's membership log (`membership::Log::encode`) |
//! | `collections-1` | collection name (UTF-8) | catalog entry (`hearth_crdt::node::Catalog`, JSON) |
//! | `chunks-1` | [`keys::chunk_key`]`(collection, shard, seq)` | one Automerge chunk of the shard: an incremental save, or after compaction the whole shard |
//! | `changes-2` | [`keys::change_key`]`(collection, seq)` | one changed record, one row per record: `[id, rev, deleted]` (JSON) |
//! | `changes-1` | [`keys::change_key`]`(collection, seq)` | legacy: one row per commit, a JSON list of `[id, rev, deleted]`; renumbered into `changes-2` and removed when the engine opens the store (`engine/changes.rs`, `migrate`) |
//! | `peers-1` | [`keys::peer_seen_key`]`(peer)` | when a session with the peer last ended, ms since the Unix epoch, `i64` big-endian |
//! | | [`keys::peer_sync_key`]`(peer, collection, shard)` | the encoded Automerge sync state with the peer for that shard |
//! | | [`keys::peer_addrs_key`]`(peer)` | addresses where the peer was last reached, newest first, at most 8 (JSON list of strings) |
//!
//! Every value above except `keyring-1`'s is sealed. [`keys`] gives each
//! composite key's byte layout.
//!
//! # Durability
//!
//! Every write transaction commits with redb's two-phase commit (the data
//! comes from other peers, and it stops a crafted workload from forging a
//! valid-looking partial commit) and [`redb::Durability::Immediate`]:
//! [`WriteTxn::commit`] returns only once the commit is on disk, so an
//! acknowledged write survives `kill -9` and power loss. Batch many inserts
//! into one transaction (the fsyncs are per commit, not per row), through one
//! [`WriteTxn::table`] writer (opening a redb table per row costs about 1 µs).
//!
//! # Corruption and tampering
//!
//! The file is opened with redb's integrity check on, which verifies the
//! checksum of every page of the committed trees. Together with two-phase
//! commit (which forbids falling back to an older commit slot), a truncated
//! file or flipped bytes fail the open with [`OpenError::Corrupt`], and redb
//! panics on hostile files are caught and reported the same way. Values that
//! pass redb's checks but were altered, moved or swapped fail authentication
//! on read ([`Error::Tampered`]).
//!
//! Not detected: replacing the whole file with an older copy of itself, or a
//! row with an older sealed value *for the same key* (a rollback). Both are
//! valid encryptions under the store key; catching them needs state kept
//! outside the file.
//!
//! # Example
//!
//! ```no_run
//! use hearth_node::home::Home;
//! use hearth_node::store::{keys, Store, Table, Unlock};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let home = Home::resolve(None)?;
//! let store = Store::open(&home, Unlock::KeyFile)?;
//! let mut txn = store.write()?;
//! txn.insert(Table::Changes, &keys::change_key("notes", 1)?, b"{\"_id\":\"a\"}")?;
//! txn.commit()?; // durable from here on
//! let read = store.read()?;
//! let feed = read.scan_prefix(Table::Changes, &keys::change_prefix("notes")?)?;
//! assert_eq!(feed.len(), 1);
//! # Ok(()) }
//! ```

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hearth_crypto::seal::SecretKey;
use hearth_crypto::wrap::{self, KdfParams, MethodKind, WrappedKey};
use redb::{ReadableDatabase, TableDefinition};
use zeroize::Zeroizing;

use crate::home::{self, Home};

pub mod keys;
mod txn;
mod unlock;

pub use txn::{PrefixIter, ReadTxn, TableWriter, WriteTxn};

/// The store format this build writes and reads (`keyring-1`/`"format"`).
pub const FORMAT_VERSION: u32 = 1;

/// Largest key accepted by [`WriteTxn::insert`], in bytes.
pub const MAX_KEY_LEN: usize = 4096;

/// Largest plaintext value accepted by [`WriteTxn::insert`], in bytes
/// (64 MiB). Larger Automerge documents must be split into chunks.
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;

/// Default bound of redb's page cache, in bytes (64 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

const KEYRING: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("keyring-1");
const KEYRING_STORE_KEY: &str = "store";
const KEYRING_FORMAT: &str = "format";

/// A row read from a sealed table: its key and its plaintext value.
pub type Row = (Vec<u8>, Vec<u8>);

/// One of the store's sealed tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `meta-1`: this device's key and name, and the account's membership
    /// log; key = UTF-8 name.
    Meta,
    /// `collections-1`: the collection catalog; key = collection name.
    Collections,
    /// `chunks-1`: Automerge shard chunks; key = [`keys::chunk_key`].
    Chunks,
    /// `changes-2`: per-collection changes feed, one row per changed record;
    /// key = [`keys::change_key`].
    Changes,
    /// `changes-1`: the feed's earlier layout (one row per commit), read
    /// only by the migration to `changes-2`.
    ChangesV1,
    /// `peers-1`: what this device remembers of each peer device: its sync
    /// state per shard, when it was last seen and where it was reached; keys
    /// = [`keys::peer_sync_key`], [`keys::peer_seen_key`],
    /// [`keys::peer_addrs_key`].
    Peers,
}

impl Table {
    /// Every sealed table, in a fixed order.
    pub const ALL: [Table; 6] = [
        Table::Meta,
        Table::Collections,
        Table::Chunks,
        Table::Changes,
        Table::Peers,
        Table::ChangesV1,
    ];

    /// The table's versioned name in the redb file, also bound into each
    /// value's associated data.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta-1",
            Table::Collections => "collections-1",
            Table::Chunks => "chunks-1",
            Table::Changes => "changes-2",
            Table::ChangesV1 => "changes-1",
            Table::Peers => "peers-1",
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            Table::Meta => 0,
            Table::Collections => 1,
            Table::Chunks => 2,
            Table::Changes => 3,
            Table::Peers => 4,
            Table::ChangesV1 => 5,
        }
    }

    pub(crate) const fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to unlock the store key.
pub enum Unlock {
    /// With a passphrase (from `HEARTH_PASSPHRASE` or `--passphrase-file`),
    /// through Argon2id.
    Passphrase(Zeroizing<String>),
    /// With the key file `<home>/keys/store.key`.
    KeyFile,
}

impl fmt::Debug for Unlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unlock::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
            Unlock::KeyFile => f.write_str("KeyFile"),
        }
    }
}

/// Tuning of an opened store. Plain data; the defaults suit a personal node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Upper bound of redb's in-memory page cache, in bytes. Default
    /// [`DEFAULT_CACHE_BYTES`] (64 MiB).
    pub cache_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Why a store could not be created, opened or re-keyed. Every variant names
/// the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// There is no store in this home yet.
    #[error("no store at {path}: run `hearth init` first")]
    NotInitialised {
        /// Where the store was expected.
        path: PathBuf,
    },
    /// `create` found a store already there, and will not overwrite it.
    #[error("a store already exists at {path}")]
    AlreadyExists {
        /// The existing store.
        path: PathBuf,
    },
    /// The passphrase does not unwrap the store key.
    #[error("wrong passphrase for store {path}")]
    WrongPassphrase {
        /// The store.
        path: PathBuf,
    },
    /// The store is passphrase-protected but no passphrase was given.
    #[error(
        "store {path} is protected by a passphrase: set HEARTH_PASSPHRASE or pass --passphrase-file"
    )]
    PassphraseRequired {
        /// The store.
        path: PathBuf,
    },
    /// A passphrase was given for a store protected by its key file.
    #[error(
        "store {path} is protected by the key file {key_file}, not a passphrase: unset HEARTH_PASSPHRASE and drop --passphrase-file"
    )]
    NoPassphraseNeeded {
        /// The store.
        path: PathBuf,
        /// The key file that protects it.
        key_file: PathBuf,
    },
    /// The store is key-file-protected but the key file is gone.
    #[error("key file {path} is missing: the store cannot be unlocked without it")]
    KeyFileMissing {
        /// The key file.
        path: PathBuf,
    },
    /// The key file exists but is not a hearth key file.
    #[error("key file {path} is not a valid hearth store key")]
    KeyFileInvalid {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is well formed but does not unwrap this store's key.
    #[error("key file {path} does not unlock store {store}")]
    WrongKeyFile {
        /// The key file.
        path: PathBuf,
        /// The store it failed to unlock.
        store: PathBuf,
    },
    /// redb found the file corrupt (truncated, altered pages, bad header), or
    /// panicked reading it.
    #[error("store {path} is corrupt")]
    Corrupt {
        /// The store.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// The file is a redb database but not a hearth store (no keyring).
    #[error("{path} is not a hearth store (it has no keyring)")]
    NotAStore {
        /// The file.
        path: PathBuf,
    },
    /// The keyring entry holding the wrapped store key is damaged.
    #[error("store {path} has a damaged keyring")]
    KeyringInvalid {
        /// The store.
        path: PathBuf,
        /// Why the wrapped key was refused.
        #[source]
        source: wrap::Error,
    },
    /// The store was written by a newer hearth.
    #[error(
        "store {path} has format {found}, this hearth reads format {FORMAT_VERSION}: upgrade hearth"
    )]
    UnsupportedFormat {
        /// The store.
        path: PathBuf,
        /// The format version found.
        found: u32,
    },
    /// The passphrase could not be used to wrap the key (empty, or KDF
    /// parameters out of bounds).
    #[error("cannot protect store {path} with this passphrase")]
    Wrap {
        /// The store.
        path: PathBuf,
        /// Why the wrapping failed.
        #[source]
        source: wrap::Error,
    },
    /// Another process has the store open.
    #[error("store {path} is in use by another hearth process")]
    Locked {
        /// The store.
        path: PathBuf,
    },
    /// redb failed for a reason other than corruption or locking.
    #[error("cannot open store {path}")]
    Redb {
        /// The store.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// Creating the home directories or writing the key file failed.
    #[error(transparent)]
    Home(#[from] home::Error),
    /// A filesystem operation on the store file failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// Why a read or write on an open store failed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value failed authentication: it was altered, or moved from another
    /// row or table, or the file is corrupt. Its plaintext is never returned.
    #[error(
        "store {path}: value {table}/{key} failed authentication (the file was tampered with or is corrupt)"
    )]
    Tampered {
        /// The store.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The row's key in hex, shortened to its first 32 bytes.
        key: String,
    },
    /// redb reported corruption (or panicked) while reading or writing.
    #[error("store {path} is corrupt")]
    Corrupt {
        /// The store.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// redb failed (I/O error, full disk, …).
    #[error("store {path}")]
    Redb {
        /// The store.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// A key longer than [`MAX_KEY_LEN`].
    #[error("store {path}: key of {len} bytes for {table} exceeds the {max}-byte limit")]
    KeyTooLarge {
        /// The store.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The key's length.
        len: usize,
        /// [`MAX_KEY_LEN`].
        max: usize,
    },
    /// A value longer than [`MAX_VALUE_LEN`].
    #[error("store {path}: value of {len} bytes for {table} exceeds the {max}-byte limit")]
    ValueTooLarge {
        /// The store.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The value's length.
        len: usize,
        /// [`MAX_VALUE_LEN`].
        max: usize,
    },
    /// An earlier operation in this write transaction failed inside redb, so
    /// the transaction cannot be committed.
    #[error("store {path}: the write transaction was abandoned after an earlier failure")]
    Poisoned {
        /// The store.
        path: PathBuf,
    },
}

impl Error {
    /// Classifies a redb error: corruption is [`Error::Corrupt`], the rest
    /// [`Error::Redb`].
    pub(crate) fn redb(path: &Path, err: impl Into<redb::Error>) -> Self {
        let source = err.into();
        if matches!(source, redb::Error::Corrupted(_)) {
            Error::Corrupt {
                path: path.to_path_buf(),
                source,
            }
        } else {
            Error::Redb {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// An open, unlocked store. Cheap to share by reference across threads; redb
/// serialises write transactions (a second [`Store::write`] waits for the
/// first to end).
pub struct Store {
    db: redb::Database,
    key: SecretKey,
    path: PathBuf,
    method: MethodKind,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Creates a new store in `home` with a fresh random store key, protected
    /// by `unlock`; `kdf` is used when that is a passphrase. Refuses if
    /// `store.redb` exists.
    ///
    /// With [`Unlock::KeyFile`], an existing valid `keys/store.key` is reused
    /// (so a store moved aside earlier stays openable), else a new one is
    /// written. The store appears at `store.redb` only once it is complete.
    pub fn create(home: &Home, unlock: Unlock, kdf: KdfParams) -> Result<Store, OpenError> {
        Self::create_with(home, unlock, kdf, &Options::default())
    }

    /// [`Store::create`] with explicit [`Options`].
    pub fn create_with(
        home: &Home,
        unlock: Unlock,
        kdf: KdfParams,
        options: &Options,
    ) -> Result<Store, OpenError> {
        let path = home.store_path();
        home.ensure_dirs()?;
        if path.exists() {
            return Err(OpenError::AlreadyExists { path });
        }
        // Built under a temporary name and linked into place when complete, so a
        // crash mid-create never leaves a `store.redb` that cannot be opened.
        let staging = home.store_staging_path();
        claim_staging_file(&staging, &path)?;
        let db =
            open_database(&staging, true, options).map_err(|e| rename_path(e, &staging, &path))?;
        // Holding redb's lock on the staging file serialises concurrent creators;
        // re-check now that no other creator can be between check and link.
        if path.exists() {
            drop(db);
            let _ = fs::remove_file(&staging);
            return Err(OpenError::AlreadyExists { path });
        }

        let store_key = SecretKey::generate(&mut rand::rngs::OsRng);
        let result = (|| {
            let wrapped = unlock::wrap(home, &path, &store_key, &unlock, kdf)?;
            let mut txn = db.begin_write().map_err(|e| redb_open_error(&path, e))?;
            txn.set_two_phase_commit(true);
            {
                let mut keyring = txn
                    .open_table(KEYRING)
                    .map_err(|e| redb_open_error(&path, e))?;
                keyring
                    .insert(KEYRING_STORE_KEY, wrapped.to_bytes().as_slice())
                    .map_err(|e| redb_open_error(&path, e))?;
                keyring
                    .insert(KEYRING_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())
                    .map_err(|e| redb_open_error(&path, e))?;
            }
            for table in Table::ALL {
                txn.open_table(table.definition())
                    .map_err(|e| redb_open_error(&path, e))?;
            }
            txn.commit().map_err(|e| redb_open_error(&path, e))?;
            match fs::hard_link(&staging, &path) {
                Ok(()) => Ok(wrapped.method_kind()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(OpenError::AlreadyExists { path: path.clone() })
                }
                Err(source) => Err(OpenError::Io {
                    op: "link",
                    path: path.clone(),
                    source,
                }),
            }
        })();
        let _ = fs::remove_file(&staging);
        let method = result?;
        home::sync_dir(home.root())?;
        tracing::info!(store = %path.display(), %method, "created store");
        Ok(Store {
            db,
            key: store_key,
            path,
            method,
        })
    }

    /// Opens the store in `home` and unlocks its key with `unlock`.
    ///
    /// The whole file is integrity-checked first; see the module docs.
    pub fn open(home: &Home, unlock: Unlock) -> Result<Store, OpenError> {
        Self::open_with(home, unlock, &Options::default())
    }

    /// [`Store::open`] with explicit [`Options`].
    pub fn open_with(home: &Home, unlock: Unlock, options: &Options) -> Result<Store, OpenError> {
        let path = home.store_path();
        match fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(OpenError::NotInitialised { path });
            }
            Err(source) => {
                return Err(OpenError::Io {
                    op: "inspect",
                    path,
                    source,
                });
            }
        }
        let db = open_database(&path, false, options)?;
        let wrapped = read_keyring(&db, &path)?;
        let key = unlock::unwrap(home, &path, &wrapped, &unlock)?;
        tracing::debug!(store = %path.display(), method = %wrapped.method_kind(), "opened store");
        Ok(Store {
            db,
            key,
            path,
            method: wrapped.method_kind(),
        })
    }

    /// Re-protects the store key with `unlock` (to set, change or remove a
    /// passphrase). Values are not re-encrypted: only the keyring changes, in
    /// one durable commit. Moving to [`Unlock::KeyFile`] reuses or creates
    /// `keys/store.key`; moving away from it leaves the key file in place.
    pub fn change_unlock(
        &mut self,
        home: &Home,
        unlock: Unlock,
        kdf: KdfParams,
    ) -> Result<(), OpenError> {
        let wrapped = unlock::wrap(home, &self.path, &self.key, &unlock, kdf)?;
        let path = &self.path;
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| redb_open_error(path, e))?;
        txn.set_two_phase_commit(true);
        {
            let mut keyring = txn
                .open_table(KEYRING)
                .map_err(|e| redb_open_error(path, e))?;
            keyring
                .insert(KEYRING_STORE_KEY, wrapped.to_bytes().as_slice())
                .map_err(|e| redb_open_error(path, e))?;
        }
        txn.commit().map_err(|e| redb_open_error(path, e))?;
        self.method = wrapped.method_kind();
        Ok(())
    }

    /// Gives the pages freed by removed rows back to the file system, moving
    /// live pages down and truncating the file. Needs no open transaction
    /// (the `&mut` makes sure of that). Returns whether the file shrank.
    pub fn compact(&mut self) -> Result<bool, Error> {
        let mut shrank = false;
        // Each pass moves what it can; a few passes reach the minimum.
        for _ in 0..4 {
            match self.db.compact() {
                Ok(true) => shrank = true,
                Ok(false) => break,
                Err(e) => return Err(Error::redb(&self.path, e)),
            }
        }
        Ok(shrank)
    }

    /// The store file, `<home>/store.redb`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the store key is protected.
    pub fn unlock_method(&self) -> MethodKind {
        self.method
    }

    /// Begins a read transaction: a consistent snapshot of the last commit.
    pub fn read(&self) -> Result<ReadTxn<'_>, Error> {
        ReadTxn::begin(self)
    }

    /// Begins a write transaction. Nothing is visible to readers, or durable,
    /// until [`WriteTxn::commit`]; dropping it aborts.
    pub fn write(&self) -> Result<WriteTxn<'_>, Error> {
        WriteTxn::begin(self)
    }

    pub(crate) fn db(&self) -> &redb::Database {
        &self.db
    }

    pub(crate) fn key(&self) -> &SecretKey {
        &self.key
    }
}

/// Makes `staging` an empty file with mode 0600 that no other creator holds.
fn claim_staging_file(staging: &Path, store: &Path) -> Result<(), OpenError> {
    let io_err = |op, source| OpenError::Io {
        op,
        path: staging.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(home::SECRET_FILE_MODE)
        .open(staging)
        .map_err(|e| io_err("create", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(OpenError::Locked {
                path: store.to_path_buf(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", e)),
    }
    // A leftover from a crashed create: start again from an empty file.
    file.set_len(0).map_err(|e| io_err("truncate", e))?;
    Ok(())
}

/// Reports errors about the staging file under the final store path, which is
/// the name the user knows.
fn rename_path(err: OpenError, staging: &Path, store: &Path) -> OpenError {
    match err {
        OpenError::Corrupt { path, source } if path == staging => OpenError::Corrupt {
            path: store.to_path_buf(),
            source,
        },
        OpenError::Locked { .. } => OpenError::Locked {
            path: store.to_path_buf(),
        },
        other => other,
    }
}

fn redb_open_error(path: &Path, err: impl Into<redb::Error>) -> OpenError {
    let source = err.into();
    match source {
        redb::Error::Corrupted(_) => OpenError::Corrupt {
            path: path.to_path_buf(),
            source,
        },
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => OpenError::Locked {
            path: path.to_path_buf(),
        },
        // redb reports a bad magic number or a file too short for its header as I/O errors.
        redb::Error::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            OpenError::Corrupt {
                path: path.to_path_buf(),
                source: redb::Error::Io(e),
            }
        }
        redb::Error::Io(source) => OpenError::Io {
            op: "access",
            path: path.to_path_buf(),
            source,
        },
        source => OpenError::Redb {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Opens (or, with `create`, initialises) the redb file with two-phase commit
/// and a full integrity check, turning any redb panic into [`OpenError::Corrupt`].
fn open_database(
    path: &Path,
    create: bool,
    options: &Options,
) -> Result<redb::Database, OpenError> {
    let mut builder = redb::Builder::new();
    builder
        .set_cache_size(options.cache_bytes)
        .set_check_integrity_on_open(true);
    let opened = panic::catch_unwind(AssertUnwindSafe(|| {
        if create {
            builder.create(path)
        } else {
            builder.open(path)
        }
    }));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(redb_open_error(path, e)),
        Err(panic) => Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            source: redb::Error::Corrupted(format!(
                "redb panicked while opening the file: {}",
                panic_message(panic.as_ref())
            )),
        }),
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "unknown panic"
    }
}

fn read_keyring(db: &redb::Database, path: &Path) -> Result<WrappedKey, OpenError> {
    let read = panic::catch_unwind(AssertUnwindSafe(|| -> Result<_, OpenError> {
        let txn = db.begin_read().map_err(|e| redb_open_error(path, e))?;
        let table = match txn.open_table(KEYRING) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(OpenError::NotAStore {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(redb_open_error(path, e)),
        };
        let format = table
            .get(KEYRING_FORMAT)
            .map_err(|e| redb_open_error(path, e))?
            .map(|v| v.value().to_vec());
        let wrapped = table
            .get(KEYRING_STORE_KEY)
            .map_err(|e| redb_open_error(path, e))?
            .map(|v| v.value().to_vec());
        Ok((format, wrapped))
    }));
    let (format, wrapped) = match read {
        Ok(result) => result?,
        Err(panic) => {
            return Err(OpenError::Corrupt {
                path: path.to_path_buf(),
                source: redb::Error::Corrupted(format!(
                    "redb panicked while reading the keyring: {}",
                    panic_message(panic.as_ref())
                )),
            });
        }
    };
    let (Some(format), Some(wrapped)) = (format, wrapped) else {
        return Err(OpenError::NotAStore {
            path: path.to_path_buf(),
        });
    };
    let found = <[u8; 4]>::try_from(format.as_slice())
        .map(u32::from_be_bytes)
        .map_err(|_| OpenError::NotAStore {
            path: path.to_path_buf(),
        })?;
    if found != FORMAT_VERSION {
        return Err(OpenError::UnsupportedFormat {
            path: path.to_path_buf(),
            found,
        });
    }
    WrappedKey::from_bytes(&wrapped).map_err(|source| OpenError::KeyringInvalid {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use proptest::prelude::*;

    use super::*;

    type Rows = Vec<(Vec<u8>, Vec<u8>)>;

    fn cheap_kdf() -> KdfParams {
        KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        }
    }

    fn passphrase(p: &str) -> Unlock {
        Unlock::Passphrase(Zeroizing::new(p.to_owned()))
    }

    fn new_home() -> (tempfile::TempDir, Home) {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("home")).unwrap();
        (tmp, home)
    }

    fn create(home: &Home) -> Store {
        Store::create(home, Unlock::KeyFile, cheap_kdf()).unwrap()
    }

    fn open(home: &Home) -> Result<Store, OpenError> {
        Store::open(home, Unlock::KeyFile)
    }

    /// Writes `n` rows of `value_len` bytes into `chunks-1` under collection "c".
    fn fill(store: &Store, n: u64, value_len: usize) {
        let mut txn = store.write().unwrap();
        let mut chunks = txn.table(Table::Chunks).unwrap();
        for seq in 0..n {
            let key = keys::chunk_key("c", 0, seq).unwrap();
            let mut value = vec![b'v'; value_len];
            value[..8].copy_from_slice(&seq.to_be_bytes());
            chunks.insert(&key, &value).unwrap();
        }
        drop(chunks);
        txn.commit().unwrap();
    }

    /// Reads everything through the store; any error is returned, never a panic.
    fn read_all(home: &Home) -> Result<Vec<Rows>, String> {
        let store = open(home).map_err(|e| e.to_string())?;
        let read = store.read().map_err(|e| e.to_string())?;
        Table::ALL
            .iter()
            .map(|t| read.scan_prefix(*t, b"").map_err(|e| e.to_string()))
            .collect()
    }

    fn raw_db(home: &Home) -> redb::Database {
        redb::Database::open(home.store_path()).unwrap()
    }

    fn raw_get(db: &redb::Database, table: Table, key: &[u8]) -> Vec<u8> {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(table.definition()).unwrap();
        t.get(key).unwrap().unwrap().value().to_vec()
    }

    fn raw_put(db: &redb::Database, table: Table, key: &[u8], value: &[u8]) {
        let txn = db.begin_write().unwrap();
        txn.open_table(table.definition())
            .unwrap()
            .insert(key, value)
            .unwrap();
        txn.commit().unwrap();
    }

    fn all_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_files(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn store_handles_can_move_to_a_storage_thread() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Store>();
        send::<ReadTxn<'static>>();
        send::<PrefixIter<'static>>();
        send::<OpenError>();
        send_sync::<Error>();
    }

    #[test]
    fn table_names_carry_a_version() {
        let names: Vec<_> = Table::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "meta-1",
                "collections-1",
                "chunks-1",
                "changes-2",
                "peers-1",
                "changes-1"
            ]
        );
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
    }

    #[test]
    fn values_survive_close_and_reopen_in_every_table() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        assert_eq!(store.unlock_method(), MethodKind::KeyFile);
        let mut txn = store.write().unwrap();
        for (i, t) in Table::ALL.iter().enumerate() {
            txn.insert(*t, b"k", format!("value {i}").as_bytes())
                .unwrap();
        }
        txn.commit().unwrap();
        drop(store);

        assert!(home.is_initialised());
        let store = open(&home).unwrap();
        let read = store.read().unwrap();
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(
                read.get(*t, b"k").unwrap().unwrap(),
                format!("value {i}").as_bytes()
            );
            assert_eq!(read.get(*t, b"absent").unwrap(), None);
        }
        assert_eq!(store.path(), home.store_path());
    }

    #[test]
    fn create_refuses_an_existing_store_and_open_needs_one() {
        let (_tmp, home) = new_home();
        let err = open(&home).unwrap_err();
        assert!(matches!(err, OpenError::NotInitialised { .. }), "{err}");
        assert!(err.to_string().contains("store.redb"), "{err}");

        let store = create(&home);
        fill(&store, 3, 16);
        drop(store);
        let err = Store::create(&home, Unlock::KeyFile, cheap_kdf()).unwrap_err();
        assert!(matches!(err, OpenError::AlreadyExists { .. }), "{err}");
        // The refused create did not touch the existing store.
        assert_eq!(read_all(&home).unwrap()[2].len(), 3);
    }

    #[test]
    fn create_recovers_from_a_leftover_staging_file() {
        let (_tmp, home) = new_home();
        home.ensure_dirs().unwrap();
        fs::write(home.store_staging_path(), b"half-written garbage").unwrap();
        let store = create(&home);
        fill(&store, 1, 16);
        drop(store);
        assert!(!home.store_staging_path().exists());
        assert_eq!(read_all(&home).unwrap()[2].len(), 1);
    }

    #[test]
    fn store_and_key_files_are_private() {
        let (_tmp, home) = new_home();
        drop(create(&home));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home.store_path()), 0o600);
        assert_eq!(mode(&home.store_key_path()), 0o600);
        assert_eq!(mode(&home.keys_dir()), 0o700);
        assert_eq!(mode(home.root()), 0o700);
    }

    #[test]
    fn passphrase_store_opens_only_with_the_right_passphrase() {
        let (_tmp, home) = new_home();
        let store = Store::create(&home, passphrase("correct horse"), cheap_kdf()).unwrap();
        assert_eq!(store.unlock_method(), MethodKind::Passphrase);
        fill(&store, 2, 16);
        drop(store);
        assert!(
            !home.store_key_path().exists(),
            "no key file for a passphrase store"
        );

        let err = Store::open(&home, passphrase("wrong")).unwrap_err();
        assert!(matches!(err, OpenError::WrongPassphrase { .. }), "{err}");
        assert!(err.to_string().contains("store.redb"));

        let err = Store::open(&home, Unlock::KeyFile).unwrap_err();
        assert!(matches!(err, OpenError::PassphraseRequired { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "store {} is protected by a passphrase: set HEARTH_PASSPHRASE or pass --passphrase-file",
                home.store_path().display()
            )
        );

        let store = Store::open(&home, passphrase("correct horse")).unwrap();
        assert_eq!(
            store
                .read()
                .unwrap()
                .scan_prefix(Table::Chunks, b"")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn key_file_store_refuses_a_passphrase_with_a_clear_error() {
        let (_tmp, home) = new_home();
        drop(create(&home));
        let err = Store::open(&home, passphrase("anything")).unwrap_err();
        assert!(matches!(err, OpenError::NoPassphraseNeeded { .. }), "{err}");
        assert!(err.to_string().contains("keys/store.key"), "{err}");
    }

    #[test]
    fn empty_passphrase_is_refused_at_create() {
        let (_tmp, home) = new_home();
        let err = Store::create(&home, passphrase(""), cheap_kdf()).unwrap_err();
        assert!(matches!(err, OpenError::Wrap { .. }), "{err}");
        assert!(!home.is_initialised());
        assert!(!home.store_staging_path().exists());
    }

    #[test]
    fn missing_wrong_or_invalid_key_file_is_named() {
        let (tmp, home) = new_home();
        drop(create(&home));
        let key_path = home.store_key_path();
        let original = fs::read(&key_path).unwrap();

        fs::remove_file(&key_path).unwrap();
        let err = open(&home).unwrap_err();
        assert!(matches!(err, OpenError::KeyFileMissing { .. }), "{err}");
        assert!(err.to_string().contains("keys/store.key"));

        // A valid key file of another home does not unlock this store.
        let other = Home::at(tmp.path().join("other")).unwrap();
        drop(create(&other));
        fs::copy(other.store_key_path(), &key_path).unwrap();
        let err = open(&home).unwrap_err();
        assert!(matches!(err, OpenError::WrongKeyFile { .. }), "{err}");
        assert!(err.to_string().contains("keys/store.key"));

        fs::write(&key_path, b"not a key").unwrap();
        let err = open(&home).unwrap_err();
        assert!(matches!(err, OpenError::KeyFileInvalid { .. }), "{err}");

        fs::write(&key_path, &original).unwrap();
        open(&home).unwrap();
    }

    #[test]
    fn a_second_open_while_in_use_reports_locked() {
        let (_tmp, home) = new_home();
        let _first = create(&home);
        let err = open(&home).unwrap_err();
        assert!(matches!(err, OpenError::Locked { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "store {} is in use by another hearth process",
                home.store_path().display()
            )
        );
    }

    #[test]
    fn change_unlock_moves_between_key_file_and_passphrase() {
        let (_tmp, home) = new_home();
        let mut store = create(&home);
        fill(&store, 5, 32);
        store
            .change_unlock(&home, passphrase("s3cret"), cheap_kdf())
            .unwrap();
        assert_eq!(store.unlock_method(), MethodKind::Passphrase);
        drop(store);
        assert!(matches!(
            open(&home).unwrap_err(),
            OpenError::PassphraseRequired { .. }
        ));
        let mut store = Store::open(&home, passphrase("s3cret")).unwrap();
        assert_eq!(
            store
                .read()
                .unwrap()
                .scan_prefix(Table::Chunks, b"")
                .unwrap()
                .len(),
            5
        );
        store
            .change_unlock(&home, Unlock::KeyFile, cheap_kdf())
            .unwrap();
        drop(store);
        assert_eq!(read_all(&home).unwrap()[2].len(), 5);
    }

    #[test]
    fn written_values_appear_in_plaintext_in_no_file_under_the_home() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        let marker = b"MARKER-4f1c9a-plaintext-must-not-leak";
        let mut txn = store.write().unwrap();
        for t in Table::ALL {
            txn.insert(t, b"row", marker).unwrap();
        }
        // Many copies, so that it also cannot hide in a page split.
        for seq in 0..500 {
            let mut value = marker.to_vec();
            value.extend_from_slice(&[b'.'; 200]);
            txn.insert(
                Table::Chunks,
                &keys::chunk_key("c", 1, seq).unwrap(),
                &value,
            )
            .unwrap();
        }
        txn.commit().unwrap();

        let check = |when: &str| {
            let files = all_files(home.root());
            assert!(files.len() >= 2, "{files:?}");
            for file in files {
                let bytes = fs::read(&file).unwrap();
                assert!(
                    !bytes.windows(marker.len()).any(|w| w == marker),
                    "{when}: marker found in plaintext in {}",
                    file.display()
                );
            }
        };
        check("while open");
        drop(store);
        check("after close");
        assert_eq!(
            open(&home)
                .unwrap()
                .read()
                .unwrap()
                .get(Table::Meta, b"row")
                .unwrap()
                .unwrap(),
            marker
        );
    }

    #[test]
    fn truncated_store_fails_to_open_as_corrupt() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        fill(&store, 2000, 100);
        drop(store);
        let path = home.store_path();
        let len = fs::metadata(&path).unwrap().len();
        for new_len in [len / 2, len - 1, 4096, 100, 0] {
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(new_len).unwrap();
            drop(file);
            let err = open(&home).unwrap_err();
            assert!(
                matches!(err, OpenError::Corrupt { .. }),
                "len {new_len}: {err:?}"
            );
            assert!(err.to_string().contains("store.redb"), "{err}");
        }
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused() {
        let (_tmp, home) = new_home();
        home.ensure_dirs().unwrap();
        fs::write(home.store_path(), vec![0x5a; 64 * 1024]).unwrap();
        let err = open(&home).unwrap_err();
        assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");

        // A genuine redb file without a keyring.
        fs::remove_file(home.store_path()).unwrap();
        let db = redb::Database::create(home.store_path()).unwrap();
        raw_put(&db, Table::Meta, b"x", b"y");
        drop(db);
        let err = open(&home).unwrap_err();
        assert!(matches!(err, OpenError::NotAStore { .. }), "{err:?}");
    }

    #[test]
    fn damaged_keyring_or_newer_format_is_reported() {
        let (_tmp, home) = new_home();
        drop(create(&home));
        let db = raw_db(&home);
        let txn = db.begin_write().unwrap();
        txn.open_table(KEYRING)
            .unwrap()
            .insert(KEYRING_FORMAT, 2u32.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = open(&home).unwrap_err();
        assert!(
            matches!(err, OpenError::UnsupportedFormat { found: 2, .. }),
            "{err:?}"
        );

        let db = raw_db(&home);
        let txn = db.begin_write().unwrap();
        {
            let mut keyring = txn.open_table(KEYRING).unwrap();
            keyring
                .insert(KEYRING_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())
                .unwrap();
            keyring.insert(KEYRING_STORE_KEY, &b"HWRKjunk"[..]).unwrap();
        }
        txn.commit().unwrap();
        drop(db);
        let err = open(&home).unwrap_err();
        assert!(matches!(err, OpenError::KeyringInvalid { .. }), "{err:?}");
    }

    #[test]
    fn flipped_bytes_are_detected_and_never_read_as_data() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        fill(&store, 3000, 100);
        drop(store);
        let path = home.store_path();
        let pristine = fs::read(&path).unwrap();
        let expected = read_all(&home).unwrap();

        // Every 97th byte after the header page; then single bytes across the file.
        let mut patterns: Vec<Vec<usize>> = vec![(4096..pristine.len()).step_by(97).collect()];
        patterns.extend(
            (0..pristine.len())
                .step_by(pristine.len() / 23)
                .map(|i| vec![i]),
        );
        let mut detected = 0;
        for flips in patterns {
            let mut bytes = pristine.clone();
            for &i in &flips {
                bytes[i] ^= 0x41;
            }
            fs::write(&path, &bytes).unwrap();
            match read_all(&home) {
                Err(_) => detected += 1,
                // A flip in free space or unused header bytes changes nothing readable.
                Ok(rows) => assert_eq!(rows, expected, "flips at {:?} changed data", &flips[..1]),
            }
        }
        assert!(detected > 0, "no corruption was detected at all");
    }

    #[test]
    fn a_flipped_byte_inside_a_known_value_is_detected() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        let key = keys::chunk_key("c", 0, 7).unwrap();
        let plaintext = b"a long known plaintext value that we will look for in the file".repeat(4);
        let mut txn = store.write().unwrap();
        txn.insert(Table::Chunks, &key, &plaintext).unwrap();
        txn.commit().unwrap();
        drop(store);

        let sealed = raw_get(&raw_db(&home), Table::Chunks, &key);
        let path = home.store_path();
        let mut bytes = fs::read(&path).unwrap();
        assert!(!bytes.windows(plaintext.len()).any(|w| w == plaintext));
        let at = bytes
            .windows(sealed.len())
            .position(|w| w == sealed)
            .expect("sealed value is in the file");
        bytes[at + sealed.len() / 2] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let err = read_all(&home).unwrap_err();
        assert!(err.contains("corrupt") || err.contains("tampered"), "{err}");
    }

    #[test]
    fn values_swapped_or_moved_between_rows_fail_authentication() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        let k1 = keys::chunk_key("c", 0, 1).unwrap();
        let k2 = keys::chunk_key("c", 0, 2).unwrap();
        let mut txn = store.write().unwrap();
        txn.insert(Table::Chunks, &k1, b"first").unwrap();
        txn.insert(Table::Chunks, &k2, b"second").unwrap();
        txn.insert(Table::Meta, b"identity", b"secret identity")
            .unwrap();
        txn.commit().unwrap();
        drop(store);

        // An attacker with write access swaps two rows through redb itself, so
        // every redb checksum is valid.
        let db = raw_db(&home);
        let v1 = raw_get(&db, Table::Chunks, &k1);
        let v2 = raw_get(&db, Table::Chunks, &k2);
        raw_put(&db, Table::Chunks, &k1, &v2);
        raw_put(&db, Table::Chunks, &k2, &v1);
        // ... and copies a value into another table under the same key.
        let identity = raw_get(&db, Table::Meta, b"identity");
        raw_put(&db, Table::Collections, b"identity", &identity);
        drop(db);

        let store = open(&home).unwrap();
        let read = store.read().unwrap();
        let err = read.get(Table::Chunks, &k1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Tampered {
                    table: "chunks-1",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("store.redb"), "{err}");
        assert!(
            err.to_string()
                .contains(&k1.iter().map(|b| format!("{b:02x}")).collect::<String>())
        );
        assert!(matches!(
            read.scan_prefix(Table::Chunks, b""),
            Err(Error::Tampered { .. })
        ));
        let err = read.get(Table::Collections, b"identity").unwrap_err();
        assert!(
            matches!(
                err,
                Error::Tampered {
                    table: "collections-1",
                    ..
                }
            ),
            "{err}"
        );
        // The untouched row still reads.
        assert_eq!(
            read.get(Table::Meta, b"identity").unwrap().unwrap(),
            b"secret identity"
        );
        // Lazy iteration stops at the first failure.
        let mut iter = read.iter_prefix(Table::Chunks, b"").unwrap();
        assert!(matches!(iter.next(), Some(Err(Error::Tampered { .. }))));
        assert!(iter.next().is_none());
    }

    #[test]
    fn a_value_edited_through_redb_fails_authentication() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        let mut txn = store.write().unwrap();
        txn.insert(Table::Changes, b"k", b"balance: 10").unwrap();
        txn.commit().unwrap();
        drop(store);
        let db = raw_db(&home);
        let mut v = raw_get(&db, Table::Changes, b"k");
        let last = v.len() - 20;
        v[last] ^= 0x80;
        raw_put(&db, Table::Changes, b"k", &v);
        raw_put(&db, Table::Changes, b"short", b"xx");
        drop(db);
        let store = open(&home).unwrap();
        let mut txn = store.write().unwrap();
        assert!(matches!(
            txn.get(Table::Changes, b"k"),
            Err(Error::Tampered { .. })
        ));
        assert!(matches!(
            txn.get(Table::Changes, b"short"),
            Err(Error::Tampered { .. })
        ));
    }

    #[test]
    fn prefix_operations_stay_within_their_prefix() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        let mut txn = store.write().unwrap();
        for name in ["ab", "abc", "b"] {
            for seq in 0..5 {
                txn.insert(
                    Table::Changes,
                    &keys::change_key(name, seq).unwrap(),
                    name.as_bytes(),
                )
                .unwrap();
            }
        }
        txn.commit().unwrap();

        let read = store.read().unwrap();
        let ab = keys::change_prefix("ab").unwrap();
        let rows = read.scan_prefix(Table::Changes, &ab).unwrap();
        assert_eq!(rows.len(), 5);
        assert!(rows.iter().all(|(_, v)| v == b"ab"));
        let seqs: Vec<u64> = rows
            .iter()
            .map(|(k, _)| keys::decode_change_key(k).unwrap().seq)
            .collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4]);

        let since = read
            .scan_prefix_from(Table::Changes, &ab, &keys::change_key("ab", 2).unwrap(), 2)
            .unwrap();
        let since: Vec<u64> = since
            .iter()
            .map(|(k, _)| keys::decode_change_key(k).unwrap().seq)
            .collect();
        assert_eq!(since, [2, 3]);
        // A start beyond the prefix yields nothing rather than another collection.
        assert!(
            read.scan_prefix_from(Table::Changes, &ab, b"\xff\xff", 10)
                .unwrap()
                .is_empty()
        );

        let (last, _) = read.last_in_prefix(Table::Changes, &ab).unwrap().unwrap();
        assert_eq!(keys::decode_change_key(&last).unwrap().seq, 4);
        assert_eq!(
            read.last_in_prefix(Table::Changes, &keys::change_prefix("zz").unwrap())
                .unwrap(),
            None
        );
        let backwards: Vec<_> = read
            .iter_prefix(Table::Changes, &ab)
            .unwrap()
            .rev()
            .map(|r| keys::decode_change_key(&r.unwrap().0).unwrap().seq)
            .collect();
        assert_eq!(backwards, [4, 3, 2, 1, 0]);
        drop(read);

        let mut txn = store.write().unwrap();
        assert_eq!(txn.remove_prefix(Table::Changes, &ab).unwrap(), 5);
        assert!(txn.scan_prefix(Table::Changes, &ab).unwrap().is_empty());
        assert_eq!(
            txn.last_in_prefix(Table::Changes, &keys::change_prefix("abc").unwrap())
                .unwrap()
                .map(|(k, _)| keys::decode_change_key(&k).unwrap().seq),
            Some(4)
        );
        txn.commit().unwrap();
        let read = store.read().unwrap();
        assert_eq!(read.scan_prefix(Table::Changes, b"").unwrap().len(), 10);
    }

    #[test]
    fn writes_are_invisible_until_commit_and_abort_discards_them() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        let mut txn = store.write().unwrap();
        txn.insert(Table::Meta, b"k", b"v").unwrap();
        assert_eq!(txn.get(Table::Meta, b"k").unwrap().unwrap(), b"v");
        assert_eq!(store.read().unwrap().get(Table::Meta, b"k").unwrap(), None);
        txn.abort().unwrap();
        assert_eq!(store.read().unwrap().get(Table::Meta, b"k").unwrap(), None);

        let mut txn = store.write().unwrap();
        txn.insert(Table::Meta, b"k", b"v").unwrap();
        drop(txn);
        assert_eq!(store.read().unwrap().get(Table::Meta, b"k").unwrap(), None);

        let snapshot = store.read().unwrap();
        let mut txn = store.write().unwrap();
        txn.insert(Table::Meta, b"k", b"v2").unwrap();
        assert!(!txn.remove(Table::Meta, b"other").unwrap());
        txn.commit().unwrap();
        assert_eq!(
            snapshot.get(Table::Meta, b"k").unwrap(),
            None,
            "snapshot is stable"
        );
        assert_eq!(
            store
                .read()
                .unwrap()
                .get(Table::Meta, b"k")
                .unwrap()
                .unwrap(),
            b"v2"
        );
        let mut txn = store.write().unwrap();
        assert!(txn.remove(Table::Meta, b"k").unwrap());
        txn.commit().unwrap();
        assert_eq!(store.read().unwrap().get(Table::Meta, b"k").unwrap(), None);
    }

    #[test]
    fn oversized_keys_and_values_are_refused_without_poisoning() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        let mut txn = store.write().unwrap();
        let err = txn
            .insert(Table::Meta, &vec![0; MAX_KEY_LEN + 1], b"v")
            .unwrap_err();
        assert!(matches!(err, Error::KeyTooLarge { .. }), "{err}");
        let err = txn
            .insert(Table::Chunks, b"k", &vec![0; MAX_VALUE_LEN + 1])
            .unwrap_err();
        assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
        txn.insert(Table::Meta, &vec![0; MAX_KEY_LEN], b"ok")
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(
            store
                .read()
                .unwrap()
                .get(Table::Meta, &vec![0; MAX_KEY_LEN])
                .unwrap()
                .unwrap(),
            b"ok"
        );
    }

    #[test]
    fn a_bulk_transaction_commits_every_row() {
        let (_tmp, home) = new_home();
        let store = create(&home);
        fill(&store, 20_000, 100);
        let rows = store
            .read()
            .unwrap()
            .scan_prefix(Table::Chunks, &keys::chunk_prefix("c").unwrap())
            .unwrap();
        assert_eq!(rows.len(), 20_000);
        for (i, (key, value)) in rows.iter().enumerate() {
            assert_eq!(keys::decode_chunk_key(key).unwrap().seq, i as u64);
            assert_eq!(value[..8], (i as u64).to_be_bytes());
            assert_eq!(value.len(), 100);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Table, u8, Vec<u8>),
        Remove(Table, u8),
        RemovePrefix(Table, u8),
        Commit,
        Abort,
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        let table = prop::sample::select(Table::ALL.to_vec());
        prop_oneof![
            4 => (table.clone(), 0u8..16, prop::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(t, k, v)| Op::Insert(t, k, v)),
            2 => (table.clone(), 0u8..16).prop_map(|(t, k)| Op::Remove(t, k)),
            1 => (table, 0u8..4).prop_map(|(t, p)| Op::RemovePrefix(t, p)),
            2 => Just(Op::Commit),
            1 => Just(Op::Abort),
            1 => Just(Op::Reopen),
        ]
    }

    /// Two-byte keys `[k / 4, k % 4]`, so prefixes of one byte group four keys.
    fn model_key(k: u8) -> Vec<u8> {
        vec![k / 4, k % 4]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The store behaves like a map of committed state, across aborts and
        /// reopenings (a reopen drops uncommitted writes).
        #[test]
        fn store_matches_a_btreemap_model(ops in prop::collection::vec(op(), 1..40)) {
            let (_tmp, home) = new_home();
            let mut store = Some(create(&home));
            let mut committed: BTreeMap<(Table, Vec<u8>), Vec<u8>> = BTreeMap::new();
            let mut pending = committed.clone();
            let mut txn_ops: Vec<Op> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(t, k, ref v) => { pending.insert((t, model_key(k)), v.clone()); txn_ops.push(op.clone()); }
                    Op::Remove(t, k) => { pending.remove(&(t, model_key(k))); txn_ops.push(op.clone()); }
                    Op::RemovePrefix(t, p) => { pending.retain(|(tt, k), _| !(*tt == t && k[0] == p)); txn_ops.push(op.clone()); }
                    Op::Commit => {
                        let s = store.as_ref().unwrap();
                        let mut txn = s.write().unwrap();
                        for op in txn_ops.drain(..) {
                            match op {
                                Op::Insert(t, k, v) => txn.insert(t, &model_key(k), &v).unwrap(),
                                Op::Remove(t, k) => { txn.remove(t, &model_key(k)).unwrap(); }
                                Op::RemovePrefix(t, p) => { txn.remove_prefix(t, &[p]).unwrap(); }
                                _ => unreachable!(),
                            }
                        }
                        txn.commit().unwrap();
                        committed = pending.clone();
                    }
                    Op::Abort => {
                        let s = store.as_ref().unwrap();
                        let mut txn = s.write().unwrap();
                        for op in txn_ops.drain(..) {
                            if let Op::Insert(t, k, v) = op { txn.insert(t, &model_key(k), &v).unwrap(); }
                        }
                        txn.abort().unwrap();
                        pending = committed.clone();
                    }
                    Op::Reopen => {
                        txn_ops.clear();
                        pending = committed.clone();
                        drop(store.take());
                        store = Some(open(&home).unwrap());
                    }
                }
                let s = store.as_ref().unwrap();
                let read = s.read().unwrap();
                let mut actual = BTreeMap::new();
                for t in Table::ALL {
                    for (k, v) in read.scan_prefix(t, b"").unwrap() {
                        actual.insert((t, k), v);
                    }
                }
                prop_assert_eq!(&actual, &committed);
            }
        }
    }
}
