//! The account: a signed, mergeable log of its member devices.
//!
//! An account has no secret of its own. It *is* its membership [`Log`]: a DAG of
//! [`Entry`]s, each signed by a device and naming the entries it builds on (its
//! `parents`, the heads of the log its author had seen). The first entry is the
//! **genesis**, in which the founding device adds itself; the account's
//! [`AccountId`] is the hash of that entry, so nobody can make a different log
//! with the same id. Later entries add or remove one device each.
//!
//! Devices exchange entries in any order and at any time; [`Log::apply`] takes
//! an entry from elsewhere and [`Log::merge`] takes a whole log. Because entries
//! are content-addressed and name their parents, two devices holding the same
//! entries hold the same DAG, and the member set is a pure function of the
//! DAG: every device agrees on it, whatever order the entries arrived in.
//!
//! # Rules
//!
//! An entry is **accepted** (by `apply`, `merge` and `decode` alike) only if its
//! signature verifies, all its parents are already in the log, and — judging
//! only by its *causal past* (its ancestors), never by entries it could not
//! have seen —
//!
//! - its author is a member;
//! - an `AddDevice` names a device that is not a member and was never removed;
//! - a `RemoveDevice` names a member that is not the only member.
//!
//! The **members** of a set of entries are then computed as follows.
//!
//! 1. **Removal is permanent and wins.** Every device named by a
//!    `RemoveDevice` entry is out, including when the removal is concurrent
//!    with an add or with the removed device's own entries. A removed device is
//!    never re-added; to come back it pairs again with a fresh device key. Two
//!    devices that remove each other concurrently both leave, so concurrent
//!    removals can even leave an account with no members.
//! 2. **A removed device's later adds do not count.** An add by a device that
//!    has been removed counts only if it is in the causal past of at least one
//!    removal of that device: some device that removed it had seen the add and
//!    let it stand. Adds the removed device made after, or unseen by, its
//!    removal are ignored. An add also counts only if an add of its author
//!    that counts is in its causal past, so devices brought in by an ignored
//!    add are out too, transitively.
//! 3. A member's name and `added_at_ms` come from its counting add with the
//!    smallest `(at_ms, hash)`, a tie-break every device computes the same way.
//!
//! Timestamps (`at_ms`) are the author's wall clock. They are informational
//! and play no part in who is a member.
//!
//! # Bounds
//!
//! A log holds at most [`MAX_ENTRIES`] entries, each with at most
//! [`MAX_PARENTS`] parents and a device name of at most [`MAX_DEVICE_NAME_LEN`]
//! bytes; encodings longer than [`MAX_ENTRY_BYTES`] / [`MAX_LOG_BYTES`] are
//! refused before parsing. [`Log::decode`] re-verifies every entry, so a corrupt
//! or hostile encoding gives an [`Error`], never a panic or an unbounded
//! allocation.

use crate::identity::{self, DeviceId};

mod entry;
mod log;

pub use entry::{AccountId, Entry, EntryHash, Op};
pub use log::{Applied, Log, Member};

/// Most entries a log holds. Each entry adds or removes one device, so this is
/// hundreds of devices paired and retired over an account's life. It also
/// bounds the work of verifying a log (quadratic in the entry count at worst).
pub const MAX_ENTRIES: usize = 4096;

/// Most parents one entry names. Locally made entries name the current heads,
/// up to this many (the rest are merged by the next entry); more heads than this
/// would take that many concurrent entries.
pub const MAX_PARENTS: usize = 32;

/// Longest device name, in bytes of UTF-8.
pub const MAX_DEVICE_NAME_LEN: usize = 64;

/// Longest encoding of one entry, in bytes: the largest possible entry (a
/// maximal name and [`MAX_PARENTS`] parents) with room to spare.
pub const MAX_ENTRY_BYTES: usize =
    1 + 32 + 2 + MAX_DEVICE_NAME_LEN + 32 + 2 + MAX_PARENTS * 32 + 10 + 2 + 64;

/// Longest encoding of a log, in bytes (about 5 MiB).
pub const MAX_LOG_BYTES: usize = 1 + 3 + MAX_ENTRIES * MAX_ENTRY_BYTES;

/// Why an entry or a log was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An entry names a device id that is not a valid ed25519 key.
    #[error("entry names an invalid device: {0}")]
    Identity(#[from] identity::Error),
    /// An entry's signature does not verify for its author.
    #[error("entry signature does not verify")]
    BadSignature(#[source] identity::Error),
    /// The bytes are not a well-formed encoding.
    #[error("malformed membership encoding: {0}")]
    Encoding(#[from] postcard::Error),
    /// The input is empty.
    #[error("membership log encoding is empty")]
    Empty,
    /// Bytes follow the encoded value.
    #[error("{len} unexpected bytes after the membership encoding")]
    TrailingBytes {
        /// How many bytes were left over.
        len: usize,
    },
    /// The input is longer than any valid encoding.
    #[error("membership encoding is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Input length.
        len: usize,
        /// [`MAX_ENTRY_BYTES`] or [`MAX_LOG_BYTES`].
        max: usize,
    },
    /// The log format version is not one this build reads.
    #[error("membership log has unsupported format version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The log is full.
    #[error("membership log already holds the maximum of {max} entries")]
    TooManyEntries {
        /// [`MAX_ENTRIES`].
        max: usize,
    },
    /// An entry names too many parents.
    #[error("entry names {count} parents; the limit is {max}")]
    TooManyParents {
        /// Parents named.
        count: usize,
        /// [`MAX_PARENTS`].
        max: usize,
    },
    /// An entry's parents are not in canonical (sorted, unique) order.
    #[error("entry parents are not sorted and unique")]
    UnsortedParents,
    /// A device name is empty.
    #[error("device name is empty")]
    NameEmpty,
    /// A device name is too long.
    #[error("device name is {len} bytes; the limit is {max}")]
    NameTooLong {
        /// Name length in bytes.
        len: usize,
        /// [`MAX_DEVICE_NAME_LEN`].
        max: usize,
    },
    /// A device name contains control characters (which could rewrite a
    /// terminal when the device list is printed).
    #[error("device name contains control characters")]
    NameControlChar,
    /// A genesis entry names parents.
    #[error("a genesis entry cannot have parents")]
    GenesisWithParents,
    /// A genesis entry adds a device other than its author.
    #[error("a genesis entry must add its own author")]
    GenesisNotSelf,
    /// A non-genesis entry names no parents.
    #[error("a non-genesis entry must have at least one parent")]
    NoParents,
    /// The first entry of a log is not a genesis entry.
    #[error("a membership log must start with a genesis entry")]
    NotGenesis,
    /// A genesis entry turned up after the first entry: it founds another
    /// account.
    #[error("entry {hash} is the genesis of another account")]
    UnexpectedGenesis {
        /// The stray entry.
        hash: EntryHash,
    },
    /// An entry builds on entries this log does not have yet; fetch them first.
    #[error("entry builds on {} entries this log does not hold yet", missing.len())]
    MissingParents {
        /// The unknown parents (never empty).
        missing: Vec<EntryHash>,
    },
    /// The author was never a member in the entry's causal past.
    #[error("author {author} is not a member of the account")]
    NotMember {
        /// The entry's author.
        author: DeviceId,
    },
    /// The author had been removed in the entry's causal past.
    #[error("author {author} was removed from the account")]
    AuthorRemoved {
        /// The entry's author.
        author: DeviceId,
    },
    /// The device to add is already a member.
    #[error("device {device} is already a member")]
    AlreadyMember {
        /// The device.
        device: DeviceId,
    },
    /// The device to add was removed before; removal is permanent.
    #[error("device {device} was removed and cannot be re-added; pair it with a new device key")]
    DeviceRemoved {
        /// The device.
        device: DeviceId,
    },
    /// The device to remove is already removed.
    #[error("device {device} was already removed")]
    AlreadyRemoved {
        /// The device.
        device: DeviceId,
    },
    /// The device to remove was never a member.
    #[error("device {device} is not a member of the account")]
    UnknownDevice {
        /// The device.
        device: DeviceId,
    },
    /// Removing the device would leave the account without members.
    #[error("cannot remove {device}: it is the last member of the account")]
    LastMember {
        /// The device.
        device: DeviceId,
    },
    /// A log of another account was offered for merging.
    #[error("cannot merge the log of account {found} into account {expected}")]
    AccountMismatch {
        /// This log's account.
        expected: AccountId,
        /// The other log's account.
        found: AccountId,
    },
    /// An encoded log holds the same entry twice.
    #[error("entry {hash} appears twice in the log")]
    DuplicateEntry {
        /// The repeated entry.
        hash: EntryHash,
    },
}

/// Why an [`AccountId`] or [`EntryHash`] could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// An account id lacks its `acc_` prefix.
    #[error("account id must start with \"acc_\"")]
    MissingPrefix,
    /// The text has the wrong length.
    #[error("{what} is {len} characters; expected {expected}")]
    Length {
        /// What was being parsed.
        what: &'static str,
        /// Length found.
        len: usize,
        /// Length expected.
        expected: usize,
    },
    /// The text holds characters outside its alphabet.
    #[error("{what} is not valid {alphabet}: {source}")]
    Encoding {
        /// What was being parsed.
        what: &'static str,
        /// The expected alphabet.
        alphabet: &'static str,
        /// The decoder's report.
        #[source]
        source: data_encoding::DecodeError,
    },
}

/// Checks a device name against the rules every entry must follow: non-empty,
/// at most [`MAX_DEVICE_NAME_LEN`] bytes, no control characters.
pub fn validate_device_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::NameEmpty);
    }
    if name.len() > MAX_DEVICE_NAME_LEN {
        return Err(Error::NameTooLong {
            len: name.len(),
            max: MAX_DEVICE_NAME_LEN,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Error::NameControlChar);
    }
    Ok(())
}

/// Turns any string into a valid device name: control characters become
/// spaces, surrounding spaces go, the result is cut to
/// [`MAX_DEVICE_NAME_LEN`] bytes at a character boundary, and an empty result
/// becomes `"unnamed"`. [`Log::genesis`] and [`Log::add_device`] apply it, as a
/// device name is a display label, often a hostname, that should not block
/// pairing.
pub fn clean_device_name(name: &str) -> String {
    let spaced: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut cut = spaced.trim();
    if cut.len() > MAX_DEVICE_NAME_LEN {
        let mut end = MAX_DEVICE_NAME_LEN;
        while !cut.is_char_boundary(end) {
            end -= 1;
        }
        cut = cut[..end].trim_end();
    }
    if cut.is_empty() {
        "unnamed".to_owned()
    } else {
        cut.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaned_names_always_validate() {
        for raw in [
            "",
            "   ",
            "laptop",
            "  phone\n",
            "\u{1b}[2Jevil",
            &"é".repeat(40),
            &"x".repeat(200),
            "a\u{0}b",
        ] {
            let clean = clean_device_name(raw);
            assert!(validate_device_name(&clean).is_ok(), "{raw:?} -> {clean:?}");
        }
        assert_eq!(clean_device_name("  phone\n"), "phone");
        assert_eq!(clean_device_name(""), "unnamed");
        assert_eq!(clean_device_name("\u{1b}[2Jx"), "[2Jx");
        assert_eq!(clean_device_name(&"é".repeat(40)).len(), 64);
        assert_eq!(clean_device_name("laptop"), "laptop");
    }

    #[test]
    fn name_validation_names_the_problem() {
        assert!(matches!(validate_device_name(""), Err(Error::NameEmpty)));
        assert!(matches!(
            validate_device_name(&"x".repeat(65)),
            Err(Error::NameTooLong { len: 65, max: 64 })
        ));
        assert!(validate_device_name(&"x".repeat(64)).is_ok());
        assert!(matches!(
            validate_device_name("a\tb"),
            Err(Error::NameControlChar)
        ));
    }
}
