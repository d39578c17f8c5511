//! Pure cryptography for Hearth: device identities, the account membership log,
//! sealed values and key wrapping.
//!
//! This crate is sans-IO. It never reads a clock, a file or ambient randomness:
//! times are `at_ms: u64` parameters and every function that needs randomness
//! takes `rng: &mut (impl CryptoRng + RngCore)`. The node owns the clock, the
//! disk and the operating system's RNG; tests pass seeded RNGs and fixed times.
//!
//! # The model
//!
//! **A device is an ed25519 key.** [`identity::DeviceKey`] is the secret half and
//! never leaves the device. Its public half, [`identity::DeviceId`], prints in the
//! libp2p `PeerId` text form (`12D3KooW…`), so the same string names the device in
//! Hearth and the peer on the network: a connection authenticated by libp2p as
//! peer `P` is a connection from device `P`.
//!
//! **An account is a signed membership log.** [`membership::Log`] is a small DAG of
//! signed [`membership::Entry`]s: a genesis entry that founds the account, then
//! entries that add or remove devices, each signed by a device that was a member
//! in that entry's causal past. The [`membership::AccountId`] is the hash of the
//! genesis entry, so it cannot be claimed by anyone else. There is no
//! account-wide master secret. Logs from different devices merge; the member set
//! is a pure function of the set of entries, so every device that holds the same
//! entries agrees on the members whatever order they arrived in.
//!
//! **Stored values are sealed.** [`seal::seal`] encrypts a value with
//! XChaCha20-Poly1305 under the store's [`seal::SecretKey`] and a random nonce.
//! The associated data from [`seal::aad`] binds each value to its table and key,
//! so a value copied or swapped to another position fails to open instead of
//! being read as the wrong data.
//!
//! **The store key is wrapped.** The store key is random. [`wrap`] encrypts it
//! either under a key derived from a passphrase with Argon2id, or under a random
//! key kept in a separate key file. The key-file default protects a copied or
//! backed-up store file, a discarded disk image that lost the key file, and any
//! reader that sees the store but not the `keys/` directory. It does not protect
//! against someone who can read the whole Hearth home as the user (they read the
//! key file too); a passphrase does.
//!
//! **A new device joins by invitation.** [`ticket::Invitation`] is a one-time
//! invitation (account, inviter, addresses, 128-bit secret, expiry) carried as a
//! `hearth1…` ticket or QR code. [`pairing`] runs the handshake as sans-IO state
//! machines: both devices prove the secret over a transcript bound to both
//! device ids, derive a 6-digit check code, and the inviter sends nothing
//! secret until the person confirms that code.
//!
//! **Two people become contacts by exchanging cards.** [`card::Card`] is what
//! one person gives another, as a `hearthc1…` text or QR code framed like a
//! ticket: the account's name for itself, its membership log (which proves the
//! account id, since the id is the hash of the log's genesis), and where its
//! devices can be dialled, all signed by one of its member devices. Decoding
//! re-verifies the whole log and the signature, so a card altered on the way
//! fails to read. It holds no secret, so anyone may see it; but anyone can
//! also make a card for an account of their own, so what ties a card to a
//! person is how it arrived (a code scanned in person, a message from someone
//! known), as with any public key.
//!
//! **A shared collection has an access list.** [`acl::Acl`] is a signed DAG
//! like the membership log, written only by the owner account's devices:
//! grants of `read` or `write` to other accounts, level changes and
//! revocations. Every replica computes the same [`acl::AclState`] from the
//! same entries; a revocation wins over a concurrent grant. (The sharing
//! protocol that carries it between accounts is not built yet; this is the
//! rule every replica will enforce.)
//!
//! # Example
//!
//! ```
//! use hearth_crypto::identity::DeviceKey;
//! use hearth_crypto::membership::Log;
//! use hearth_crypto::seal::{self, SecretKey};
//! use rand_core::OsRng;
//!
//! // A device founds an account.
//! let laptop = DeviceKey::generate(&mut OsRng);
//! let mut log = Log::genesis(&laptop, "laptop", 1_700_000_000_000);
//! assert!(log.is_member(&laptop.id()));
//!
//! // It adds a second device; the entry goes to the other devices.
//! let phone = DeviceKey::generate(&mut OsRng);
//! let entry = log.add_device(&laptop, phone.id(), "phone", 1_700_000_001_000)?;
//! assert_eq!(log.members().len(), 2);
//!
//! // Another replica of the log (the phone's, after pairing) accepts the entry.
//! let mut replica = Log::decode(&log.encode())?;
//! assert_eq!(replica.account_id(), log.account_id());
//! assert!(replica.apply(entry).is_ok());
//!
//! // A value sealed for one table and key opens only there.
//! let store_key = SecretKey::generate(&mut OsRng);
//! let aad = seal::aad("records-1", b"contacts/42");
//! let sealed = seal::seal(&store_key, &aad, b"{\"name\":\"Ada\"}", &mut OsRng);
//! assert_eq!(seal::open(&store_key, &aad, &sealed)?, b"{\"name\":\"Ada\"}");
//! let elsewhere = seal::aad("records-1", b"contacts/43");
//! assert_eq!(
//!     seal::open(&store_key, &elsewhere, &sealed),
//!     Err(seal::Error::Authentication)
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod acl;
pub mod armor;
pub mod card;
pub mod identity;
pub mod membership;
pub mod pairing;
pub mod rng;
pub mod seal;
pub mod sealed;
mod text;
pub mod ticket;
pub mod wrap;
