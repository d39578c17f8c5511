//! Read and write transactions over the sealed tables.
//!
//! Every value goes through [`seal`] on the way in and [`seal::open`] on the
//! way out, with `seal::aad(table, key)` as associated data; callers only ever
//! see plaintext. Calls into redb run under `catch_unwind`, so a file altered
//! while the store is open surfaces as [`Error::Corrupt`] instead of a panic.

use std::cell::OnceCell;
use std::ops::Bound;
use std::panic::{self, AssertUnwindSafe};

use hearth_crypto::seal;
use rand::SeedableRng;
use rand::rngs::StdRng;
use redb::{ReadOnlyTable, ReadableTable};

use super::keys::prefix_end;
use super::{Error, MAX_KEY_LEN, MAX_VALUE_LEN, Row, Store, Table, panic_message};

type RawReadTable = ReadOnlyTable<&'static [u8], &'static [u8]>;
type RawRange = redb::Range<'static, &'static [u8], &'static [u8]>;
type RawEntry<'r> = Result<
    (
        redb::AccessGuard<'r, &'static [u8]>,
        redb::AccessGuard<'r, &'static [u8]>,
    ),
    redb::StorageError,
>;

/// Runs a redb call, turning a panic into [`Error::Corrupt`].
fn guarded<T>(store: &Store, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(Error::Corrupt {
            path: store.path().to_path_buf(),
            source: redb::Error::Corrupted(format!(
                "redb panicked: {}",
                panic_message(panic.as_ref())
            )),
        })
    })
}

/// Opens one sealed value read from row `key` of `table`.
fn unseal(store: &Store, table: Table, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
    seal::open(store.key(), &seal::aad(table.name(), key), sealed).map_err(|_| Error::Tampered {
        path: store.path().to_path_buf(),
        table: table.name(),
        key: short_hex(key),
    })
}

/// The key in hex, cut to its first 32 bytes so an error line stays readable.
fn short_hex(key: &[u8]) -> String {
    const SHOWN: usize = 32;
    let mut out: String = key.iter().take(SHOWN).map(|b| format!("{b:02x}")).collect();
    if key.len() > SHOWN {
        out.push('…');
    }
    out
}

/// The key range of a prefix scan starting at `from` (or at the prefix).
fn prefix_bounds<'k>(
    prefix: &'k [u8],
    from: Option<&'k [u8]>,
    end: &'k Option<Vec<u8>>,
) -> (Bound<&'k [u8]>, Bound<&'k [u8]>) {
    let start = match from {
        Some(from) if from > prefix => from,
        _ => prefix,
    };
    match end {
        // A start past the end would be an inverted range; make it empty instead.
        Some(end) => (
            Bound::Included(start.min(end.as_slice())),
            Bound::Excluded(end.as_slice()),
        ),
        None => (Bound::Included(start), Bound::Unbounded),
    }
}

fn get_in(
    store: &Store,
    table: Table,
    raw: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Vec<u8>>, Error> {
    let sealed = raw.get(key).map_err(|e| Error::redb(store.path(), e))?;
    match sealed {
        Some(sealed) => unseal(store, table, key, sealed.value()).map(Some),
        None => Ok(None),
    }
}

fn collect_range<'r>(
    store: &Store,
    table: Table,
    range: impl Iterator<Item = RawEntry<'r>>,
    limit: usize,
) -> Result<Vec<Row>, Error> {
    let mut out = Vec::new();
    for entry in range.take(limit) {
        let (key, sealed) = entry.map_err(|e| Error::redb(store.path(), e))?;
        let key = key.value();
        let plain = unseal(store, table, key, sealed.value())?;
        out.push((key.to_vec(), plain));
    }
    Ok(out)
}

/// A read transaction: a consistent snapshot of the last commit. Cheap to
/// begin; hold it only as long as needed, since it pins that snapshot's pages.
pub struct ReadTxn<'s> {
    store: &'s Store,
    txn: redb::ReadTransaction,
    // Opened on first use; `None` caches "table absent" (read as empty).
    tables: [OnceCell<Option<RawReadTable>>; Table::ALL.len()],
}

impl<'s> ReadTxn<'s> {
    pub(super) fn begin(store: &'s Store) -> Result<Self, Error> {
        use redb::ReadableDatabase;
        let txn = guarded(store, || {
            store
                .db()
                .begin_read()
                .map_err(|e| Error::redb(store.path(), e))
        })?;
        Ok(ReadTxn {
            store,
            txn,
            tables: Default::default(),
        })
    }

    fn table(&self, table: Table) -> Result<Option<&RawReadTable>, Error> {
        let cell = &self.tables[table.index()];
        if let Some(opened) = cell.get() {
            return Ok(opened.as_ref());
        }
        let opened = guarded(self.store, || {
            match self.txn.open_table(table.definition()) {
                Ok(t) => Ok(Some(t)),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
                Err(e) => Err(Error::redb(self.store.path(), e)),
            }
        })?;
        Ok(cell.get_or_init(|| opened).as_ref())
    }

    /// The plaintext value at `key`, if any.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let Some(raw) = self.table(table)? else {
            return Ok(None);
        };
        guarded(self.store, || get_in(self.store, table, raw, key))
    }

    /// Every row whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<Row>, Error> {
        self.scan_prefix_from(table, prefix, prefix, usize::MAX)
    }

    /// At most `limit` rows whose key starts with `prefix` and is `>= from`, in
    /// key order (for paging, or a changes feed read "since" a sequence).
    pub fn scan_prefix_from(
        &self,
        table: Table,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, Error> {
        self.iter_prefix_from(table, prefix, from)?
            .take(limit)
            .collect()
    }

    /// A lazy iterator over the rows whose key starts with `prefix`, in key
    /// order; each value is opened as it is reached. Reverse it with `.rev()`.
    pub fn iter_prefix(&self, table: Table, prefix: &[u8]) -> Result<PrefixIter<'s>, Error> {
        self.iter_prefix_from(table, prefix, prefix)
    }

    /// Like [`ReadTxn::iter_prefix`], starting at the first key `>= from`.
    pub fn iter_prefix_from(
        &self,
        table: Table,
        prefix: &[u8],
        from: &[u8],
    ) -> Result<PrefixIter<'s>, Error> {
        let Some(raw) = self.table(table)? else {
            return Ok(PrefixIter {
                store: self.store,
                table,
                range: None,
            });
        };
        let end = prefix_end(prefix);
        let range = guarded(self.store, || {
            raw.range::<&[u8]>(prefix_bounds(prefix, Some(from), &end))
                .map_err(|e| Error::redb(self.store.path(), e))
        })?;
        Ok(PrefixIter {
            store: self.store,
            table,
            range: Some(range),
        })
    }

    /// The last row (greatest key) starting with `prefix`: for example the
    /// highest sequence number of a feed.
    pub fn last_in_prefix(&self, table: Table, prefix: &[u8]) -> Result<Option<Row>, Error> {
        self.iter_prefix(table, prefix)?.next_back().transpose()
    }
}

/// Iterator over sealed rows of a [`ReadTxn`], yielding `(key, plaintext)`.
/// It keeps its snapshot alive on its own, so it may outlive the `ReadTxn`.
pub struct PrefixIter<'s> {
    store: &'s Store,
    table: Table,
    range: Option<RawRange>,
}

impl PrefixIter<'_> {
    fn step(
        &mut self,
        next: impl FnOnce(&mut RawRange) -> Option<RawEntry<'static>>,
    ) -> Option<Result<Row, Error>> {
        let range = self.range.as_mut()?;
        let store = self.store;
        let table = self.table;
        let item = guarded(store, || {
            let Some(entry) = next(range) else {
                return Ok(None);
            };
            let (key, sealed) = entry.map_err(|e| Error::redb(store.path(), e))?;
            let key = key.value();
            let plain = unseal(store, table, key, sealed.value())?;
            Ok(Some((key.to_vec(), plain)))
        });
        match item {
            Ok(Some(row)) => Some(Ok(row)),
            Ok(None) => {
                self.range = None;
                None
            }
            Err(e) => {
                // After an error the position is unknown; end the iteration.
                self.range = None;
                Some(Err(e))
            }
        }
    }
}

impl Iterator for PrefixIter<'_> {
    type Item = Result<Row, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(|r| r.next())
    }
}

impl DoubleEndedIterator for PrefixIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(|r| r.next_back())
    }
}

/// A write transaction. Reads inside it see its own writes. Nothing is
/// visible to other transactions, or durable, until [`WriteTxn::commit`]
/// returns; dropping it aborts.
pub struct WriteTxn<'s> {
    store: &'s Store,
    txn: redb::WriteTransaction,
    // Nonces come from a ChaCha CSPRNG seeded from the OS per transaction: one
    // getrandom call per transaction instead of one per sealed value.
    rng: StdRng,
    poisoned: bool,
}

impl<'s> WriteTxn<'s> {
    pub(super) fn begin(store: &'s Store) -> Result<Self, Error> {
        let mut txn = guarded(store, || {
            store
                .db()
                .begin_write()
                .map_err(|e| Error::redb(store.path(), e))
        })?;
        txn.set_two_phase_commit(true);
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| Error::redb(store.path(), e))?;
        let rng = StdRng::from_rng(rand::rngs::OsRng).map_err(|e| Error::Redb {
            path: store.path().to_path_buf(),
            source: redb::Error::Io(std::io::Error::other(e)),
        })?;
        Ok(WriteTxn {
            store,
            txn,
            rng,
            poisoned: false,
        })
    }

    /// Opens `table` for a run of operations. Opening a table has a cost in
    /// redb (about a microsecond), so bulk writers should open it once and
    /// insert many rows through the returned writer.
    pub fn table(&mut self, table: Table) -> Result<TableWriter<'_>, Error> {
        if self.poisoned {
            return Err(Error::Poisoned {
                path: self.store.path().to_path_buf(),
            });
        }
        let store = self.store;
        let txn = &self.txn;
        let raw = guarded(store, || {
            txn.open_table(table.definition())
                .map_err(|e| Error::redb(store.path(), e))
        });
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        Ok(TableWriter {
            store,
            table,
            raw,
            rng: &mut self.rng,
            poisoned: &mut self.poisoned,
        })
    }

    /// The plaintext value at `key`, if any, including this transaction's writes.
    pub fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.table(table)?.get(key)
    }

    /// Every row whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&mut self, table: Table, prefix: &[u8]) -> Result<Vec<Row>, Error> {
        self.table(table)?
            .scan_prefix_from(prefix, prefix, usize::MAX)
    }

    /// At most `limit` rows whose key starts with `prefix` and is `>= from`.
    pub fn scan_prefix_from(
        &mut self,
        table: Table,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, Error> {
        self.table(table)?.scan_prefix_from(prefix, from, limit)
    }

    /// The last row (greatest key) starting with `prefix`.
    pub fn last_in_prefix(&mut self, table: Table, prefix: &[u8]) -> Result<Option<Row>, Error> {
        self.table(table)?.last_in_prefix(prefix)
    }

    /// Seals `value` and stores it at `key`, replacing any previous value.
    pub fn insert(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.table(table)?.insert(key, value)
    }

    /// Removes the row at `key`; returns whether there was one.
    pub fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, Error> {
        self.table(table)?.remove(key)
    }

    /// Removes every row whose key starts with `prefix`; returns how many.
    pub fn remove_prefix(&mut self, table: Table, prefix: &[u8]) -> Result<u64, Error> {
        self.table(table)?.remove_prefix(prefix)
    }

    /// Commits durably: returns only once the commit is on disk (two-phase
    /// commit, fsynced). On error nothing of this transaction is applied.
    pub fn commit(self) -> Result<(), Error> {
        let store = self.store;
        if self.poisoned {
            return Err(Error::Poisoned {
                path: store.path().to_path_buf(),
            });
        }
        let txn = self.txn;
        guarded(store, || {
            txn.commit().map_err(|e| Error::redb(store.path(), e))
        })
    }

    /// Abandons the transaction, discarding its writes (as dropping it does).
    pub fn abort(self) -> Result<(), Error> {
        let store = self.store;
        let txn = self.txn;
        guarded(store, || {
            txn.abort().map_err(|e| Error::redb(store.path(), e))
        })
    }
}

/// One table of a [`WriteTxn`], opened for a run of operations (see
/// [`WriteTxn::table`]). Drop it to use the transaction again.
pub struct TableWriter<'t> {
    store: &'t Store,
    table: Table,
    raw: redb::Table<'t, &'static [u8], &'static [u8]>,
    rng: &'t mut StdRng,
    poisoned: &'t mut bool,
}

impl TableWriter<'_> {
    /// Runs one redb operation; a failure inside redb poisons the transaction
    /// so that it can no longer be committed.
    fn run<T>(
        &mut self,
        f: impl FnOnce(
            &Store,
            Table,
            &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        ) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if *self.poisoned {
            return Err(Error::Poisoned {
                path: self.store.path().to_path_buf(),
            });
        }
        let (store, table, raw) = (self.store, self.table, &mut self.raw);
        let result = guarded(store, || f(store, table, raw));
        if matches!(result, Err(Error::Corrupt { .. } | Error::Redb { .. })) {
            *self.poisoned = true;
        }
        result
    }

    /// The plaintext value at `key`, if any, including this transaction's writes.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.run(|store, table, raw| get_in(store, table, raw, key))
    }

    /// At most `limit` rows whose key starts with `prefix` and is `>= from`.
    pub fn scan_prefix_from(
        &mut self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, Error> {
        let end = prefix_end(prefix);
        self.run(|store, table, raw| {
            let range = raw
                .range::<&[u8]>(prefix_bounds(prefix, Some(from), &end))
                .map_err(|e| Error::redb(store.path(), e))?;
            collect_range(store, table, range, limit)
        })
    }

    /// The last row (greatest key) starting with `prefix`.
    pub fn last_in_prefix(&mut self, prefix: &[u8]) -> Result<Option<Row>, Error> {
        let end = prefix_end(prefix);
        self.run(|store, table, raw| {
            let range = raw
                .range::<&[u8]>(prefix_bounds(prefix, None, &end))
                .map_err(|e| Error::redb(store.path(), e))?;
            Ok(collect_range(store, table, range.rev(), 1)?.pop())
        })
    }

    /// Seals `value` and stores it at `key`, replacing any previous value.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let table = self.table.name();
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLarge {
                path: self.store.path().to_path_buf(),
                table,
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::ValueTooLarge {
                path: self.store.path().to_path_buf(),
                table,
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        let sealed = seal::seal(
            self.store.key(),
            &seal::aad(table, key),
            value,
            &mut *self.rng,
        );
        self.run(|store, _, raw| {
            raw.insert(key, sealed.as_slice())
                .map(drop)
                .map_err(|e| Error::redb(store.path(), e))
        })
    }

    /// Removes the row at `key`; returns whether there was one.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool, Error> {
        self.run(|store, _, raw| {
            raw.remove(key)
                .map(|old| old.is_some())
                .map_err(|e| Error::redb(store.path(), e))
        })
    }

    /// Removes every row whose key starts with `prefix`; returns how many.
    pub fn remove_prefix(&mut self, prefix: &[u8]) -> Result<u64, Error> {
        let end = prefix_end(prefix);
        self.run(|store, _, raw| {
            let mut removed = 0u64;
            raw.retain_in::<&[u8], _>(prefix_bounds(prefix, None, &end), |_, _| {
                removed += 1;
                false
            })
            .map_err(|e| Error::redb(store.path(), e))?;
            Ok(removed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hex_cuts_long_keys() {
        assert_eq!(short_hex(&[0x00, 0xab]), "00ab");
        let long = short_hex(&[0x11; 40]);
        assert_eq!(long.chars().count(), 65);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn prefix_bounds_start_at_the_later_of_prefix_and_from() {
        let end = prefix_end(b"ab");
        assert_eq!(
            prefix_bounds(b"ab", Some(b"a"), &end),
            (Bound::Included(&b"ab"[..]), Bound::Excluded(&b"ac"[..]))
        );
        assert_eq!(
            prefix_bounds(b"ab", Some(b"abz"), &end).0,
            Bound::Included(&b"abz"[..])
        );
        let none = prefix_end(b"");
        assert_eq!(prefix_bounds(b"", None, &none).1, Bound::Unbounded);
    }
}
