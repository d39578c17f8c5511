//! One-time pairing invitations and their ticket text form.
//!
//! `hearth pair` on an existing device creates an [`Invitation`]: the account to
//! join, the inviting device and where to dial it, a 128-bit secret and an
//! expiry. The person carries it to the new device as a ticket string or a QR
//! code, and the new device runs the [`pairing`](crate::pairing) handshake with
//! it.
//!
//! # Ticket format
//!
//! ```text
//! hearth1 ‖ base32( version ‖ postcard body ‖ checksum )
//! ```
//!
//! - `hearth1` names what the string is, so a ticket pasted in the wrong place
//!   is recognised as one.
//! - base32 is RFC 4648, unpadded. [`Invitation::encode`] writes it in lower
//!   case for reading and typing; [`Invitation::qr_payload`] writes the same
//!   ticket in upper case, because QR alphanumeric mode holds only upper-case
//!   letters, digits and a few symbols and packs them at 5.5 bits a character
//!   (byte mode spends 8), so the code stays small enough to scan from a
//!   terminal. Decoding accepts either case and surrounding whitespace.
//! - The body holds the account id and inviter key as raw bytes (not their
//!   text forms), the addresses, the secret and the expiry.
//! - The checksum is the first 4 bytes of the blake3 hash of version and body.
//!   It catches a typo or a cut-off copy with a clear message before anything
//!   is dialled; it is not a security measure (the secret is).
//!
//! The framing (prefix, base32, checksum) is [`armor`], shared
//! with the [contact card](crate::card).
//!
//! Input is bounded ([`MAX_TICKET_LEN`]) before any decoding, and addresses are
//! bounded in count and length, so every ticket [`Invitation::encode`] produces
//! is one [`Invitation::decode`] accepts.

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::armor;
#[cfg(test)]
use crate::armor::{CHECKSUM_LEN, checksum};
use crate::identity::{self, DeviceId};
use crate::membership::AccountId;

/// Text every ticket starts with.
pub const PREFIX: &str = "hearth1";

/// The ticket format version this code writes and reads.
pub const VERSION: u8 = 1;

/// Longest ticket text accepted, in bytes after trimming whitespace. The
/// largest ticket the address bounds allow is about 1,400 characters.
pub const MAX_TICKET_LEN: usize = 2048;

/// Most addresses an invitation carries.
pub const MAX_ADDRS: usize = 6;

/// Longest address accepted, in bytes of multiaddr text.
pub const MAX_ADDR_LEN: usize = 128;

/// Length of the invitation secret, in bytes (128 bits).
pub const SECRET_LEN: usize = 16;

/// Why an invitation could not be built or a ticket could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is longer than any ticket.
    #[error("ticket is {len} characters long; tickets are at most {max}")]
    TooLong {
        /// Length of the trimmed text, in bytes.
        len: usize,
        /// [`MAX_TICKET_LEN`].
        max: usize,
    },
    /// The text does not start with [`PREFIX`].
    #[error("not a hearth ticket; tickets start with \"hearth1\"")]
    Prefix,
    /// The text after the prefix is not base32.
    #[error("ticket is not valid base32 (letters a-z and digits 2-7): {0}")]
    Base32(#[source] data_encoding::DecodeError),
    /// The ticket is too short to hold a version and a checksum.
    #[error("ticket is cut short; copy the whole ticket again")]
    Truncated,
    /// The checksum does not match: a typo or a partial copy.
    #[error("ticket checksum does not match; it was mistyped or cut, copy it again")]
    Checksum,
    /// The ticket was written by a version of Hearth this one does not know.
    #[error("ticket version {0} is not supported; update hearth on this device")]
    Version(u8),
    /// The checksum matched but the body does not decode.
    #[error("ticket body is malformed: {0}")]
    Body(#[source] postcard::Error),
    /// The body decodes but bytes follow it.
    #[error("ticket body is malformed: unexpected bytes after the invitation")]
    TrailingBytes,
    /// The inviter's key is not a valid device id.
    #[error("ticket names an invalid inviting device: {0}")]
    Inviter(#[source] identity::Error),
    /// More addresses than [`MAX_ADDRS`].
    #[error("invitation has {count} addresses; at most {max} are allowed")]
    TooManyAddrs {
        /// Number of addresses given.
        count: usize,
        /// [`MAX_ADDRS`].
        max: usize,
    },
    /// An address longer than [`MAX_ADDR_LEN`].
    #[error("invitation address is {len} bytes long; addresses are at most {max}")]
    AddrTooLong {
        /// Length of the address, in bytes.
        len: usize,
        /// [`MAX_ADDR_LEN`].
        max: usize,
    },
}

/// A one-time invitation to join an account.
///
/// Fields are private so that every invitation respects the address bounds and
/// therefore encodes to a ticket that decodes. The secret is wiped on drop and
/// hidden from `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    account: AccountId,
    inviter: DeviceId,
    addrs: Vec<String>,
    secret: [u8; SECRET_LEN],
    expires_at_ms: u64,
}

/// The postcard body: ids as raw bytes, which is 70 characters shorter in
/// base32 than their text forms.
#[derive(Serialize, Deserialize)]
struct Body {
    account: [u8; 32],
    inviter: [u8; 32],
    addrs: Vec<String>,
    secret: [u8; SECRET_LEN],
    expires_at_ms: u64,
}

impl Invitation {
    /// Creates an invitation with a fresh random secret.
    pub fn generate(
        account: AccountId,
        inviter: DeviceId,
        addrs: Vec<String>,
        expires_at_ms: u64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Self, Error> {
        let mut secret = [0u8; SECRET_LEN];
        rng.fill_bytes(&mut secret);
        Self::new(account, inviter, addrs, secret, expires_at_ms)
    }

    /// Builds an invitation from its parts, checking the address bounds.
    pub fn new(
        account: AccountId,
        inviter: DeviceId,
        addrs: Vec<String>,
        secret: [u8; SECRET_LEN],
        expires_at_ms: u64,
    ) -> Result<Self, Error> {
        check_addrs(&addrs)?;
        Ok(Self {
            account,
            inviter,
            addrs,
            secret,
            expires_at_ms,
        })
    }

    /// The account the new device joins.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The device that created the invitation and will be dialled.
    pub fn inviter(&self) -> DeviceId {
        self.inviter
    }

    /// Where to dial the inviter: multiaddr text, not interpreted here.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The 128-bit secret both sides prove knowledge of.
    pub fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.secret
    }

    /// When the invitation stops being accepted (ms since the Unix epoch).
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// Whether the invitation has expired at `now_ms`. The expiry instant
    /// itself counts as expired.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// The ticket text: `hearth1` and lowercase base32.
    pub fn encode(&self) -> String {
        armor::encode(PREFIX, &self.content())
    }

    /// The ticket in upper case, for a QR code in alphanumeric mode.
    /// [`Invitation::decode`] reads it back.
    pub fn qr_payload(&self) -> String {
        armor::encode_upper(PREFIX, &self.content())
    }

    /// Reads a ticket in either case, ignoring surrounding whitespace.
    pub fn decode(text: &str) -> Result<Self, Error> {
        let content = armor::decode(text, PREFIX, MAX_TICKET_LEN).map_err(from_armor)?;
        let content = Zeroizing::new(content);
        Self::from_content(&content)
    }

    /// Version byte and postcard body, wiped on drop.
    fn content(&self) -> Zeroizing<Vec<u8>> {
        let mut body = Body {
            account: *self.account.as_bytes(),
            inviter: *self.inviter.as_bytes(),
            addrs: self.addrs.clone(),
            secret: self.secret,
            expires_at_ms: self.expires_at_ms,
        };
        let bytes = postcard::to_extend(&body, vec![VERSION])
            .expect("the ticket body always encodes into a Vec");
        body.secret.zeroize();
        Zeroizing::new(bytes)
    }

    /// Reads the content [`armor::decode`] returned: version, then body.
    fn from_content(content: &[u8]) -> Result<Self, Error> {
        let (&version, body) = content.split_first().ok_or(Error::Truncated)?;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let (mut body, rest): (Body, _) = postcard::take_from_bytes(body).map_err(Error::Body)?;
        if !rest.is_empty() {
            body.secret.zeroize();
            return Err(Error::TrailingBytes);
        }
        let inviter = DeviceId::from_bytes(&body.inviter);
        let built = inviter.map_err(Error::Inviter).and_then(|inviter| {
            Self::new(
                AccountId::from_bytes(&body.account),
                inviter,
                std::mem::take(&mut body.addrs),
                body.secret,
                body.expires_at_ms,
            )
        });
        body.secret.zeroize();
        built
    }
}

impl Drop for Invitation {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl fmt::Debug for Invitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invitation")
            .field("account", &self.account)
            .field("inviter", &self.inviter)
            .field("addrs", &self.addrs)
            .field("secret", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// The ticket error for a framing error, with the ticket's own message.
fn from_armor(e: armor::Error) -> Error {
    match e {
        armor::Error::TooLong { len, max } => Error::TooLong { len, max },
        armor::Error::Prefix { .. } => Error::Prefix,
        armor::Error::Base32(e) => Error::Base32(e),
        armor::Error::Truncated => Error::Truncated,
        armor::Error::Checksum => Error::Checksum,
    }
}

fn check_addrs(addrs: &[String]) -> Result<(), Error> {
    if addrs.len() > MAX_ADDRS {
        return Err(Error::TooManyAddrs {
            count: addrs.len(),
            max: MAX_ADDRS,
        });
    }
    match addrs.iter().find(|a| a.len() > MAX_ADDR_LEN) {
        Some(long) => Err(Error::AddrTooLong {
            len: long.len(),
            max: MAX_ADDR_LEN,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKey;

    fn sample() -> Invitation {
        let inviter = DeviceKey::from_bytes(&[7; 32]).id();
        Invitation::new(
            AccountId::from_bytes(&[3; 32]),
            inviter,
            vec![
                "/ip4/192.168.1.20/udp/4001/quic-v1".to_owned(),
                "/ip6/fe80::1/tcp/4001".to_owned(),
            ],
            [9; SECRET_LEN],
            1_700_000_120_000,
        )
        .unwrap()
    }

    /// Re-encodes decoded bytes with a valid checksum, to reach the checks
    /// behind the checksum.
    fn ticket_from_content(content: &[u8]) -> String {
        let mut bytes = content.to_vec();
        bytes.extend_from_slice(&checksum(content));
        format!("{PREFIX}{}", data_encoding::BASE32_NOPAD.encode(&bytes))
    }

    fn content_of(inv: &Invitation) -> Vec<u8> {
        let text = inv.encode();
        let mut bytes = data_encoding::BASE32_NOPAD_NOCASE
            .decode(&text.as_bytes()[PREFIX.len()..])
            .unwrap();
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        bytes
    }

    #[test]
    fn round_trips_in_both_cases_with_whitespace() {
        let inv = sample();
        let text = inv.encode();
        assert!(text.starts_with("hearth1"));
        assert_eq!(text, text.to_ascii_lowercase());
        assert_eq!(Invitation::decode(&text).unwrap(), inv);
        let qr = inv.qr_payload();
        assert!(qr.starts_with("HEARTH1"));
        assert!(
            qr.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        assert_eq!(Invitation::decode(&format!("  {qr}\n")).unwrap(), inv);
    }

    #[test]
    fn largest_invitation_fits_the_bound() {
        let addrs = vec!["/".repeat(MAX_ADDR_LEN); MAX_ADDRS];
        let inv = Invitation::new(
            AccountId::from_bytes(&[0xff; 32]),
            sample().inviter(),
            addrs,
            [0xff; SECRET_LEN],
            u64::MAX,
        )
        .unwrap();
        let text = inv.encode();
        assert!(text.len() <= MAX_TICKET_LEN, "{}", text.len());
        assert_eq!(Invitation::decode(&text).unwrap(), inv);
    }

    #[test]
    fn refuses_out_of_bound_addresses() {
        let s = sample();
        let many = vec!["/ip4/1.2.3.4".to_owned(); MAX_ADDRS + 1];
        assert!(matches!(
            Invitation::new(s.account(), s.inviter(), many, [0; 16], 1),
            Err(Error::TooManyAddrs { count: 7, max: 6 })
        ));
        let long = vec!["x".repeat(MAX_ADDR_LEN + 1)];
        assert!(matches!(
            Invitation::new(s.account(), s.inviter(), long, [0; 16], 1),
            Err(Error::AddrTooLong { .. })
        ));
    }

    #[test]
    fn refuses_each_kind_of_bad_ticket() {
        let text = sample().encode();
        assert!(matches!(
            Invitation::decode(&"a".repeat(MAX_TICKET_LEN + 1)),
            Err(Error::TooLong { .. })
        ));
        assert!(matches!(
            Invitation::decode(&text.replacen("hearth1", "hearth2", 1)),
            Err(Error::Prefix)
        ));
        assert!(matches!(Invitation::decode("hea"), Err(Error::Prefix)));
        assert!(matches!(
            Invitation::decode("hearth1é"),
            Err(Error::Base32(_))
        ));
        assert!(matches!(
            Invitation::decode(&format!("{text}1")),
            Err(Error::Base32(_))
        ));
        assert!(matches!(
            Invitation::decode("hearth1"),
            Err(Error::Truncated)
        ));
        assert!(matches!(
            Invitation::decode("hearth1aaaaaaa"),
            Err(Error::Truncated)
        ));
        assert!(matches!(
            Invitation::decode(&text[..text.len() - 8]),
            Err(Error::Checksum | Error::Base32(_))
        ));

        let mut content = content_of(&sample());
        content[0] = 2;
        assert!(matches!(
            Invitation::decode(&ticket_from_content(&content)),
            Err(Error::Version(2))
        ));
        let content = content_of(&sample());
        assert!(matches!(
            Invitation::decode(&ticket_from_content(&content[..content.len() - 3])),
            Err(Error::Body(_))
        ));
        let mut long = content.clone();
        long.push(0);
        assert!(matches!(
            Invitation::decode(&ticket_from_content(&long)),
            Err(Error::TrailingBytes)
        ));
        let mut bad_key = content;
        // Byte 33 onwards is the inviter key; y = p + 1 is not canonical or
        // not on the curve, either way not a device id.
        bad_key[33..65].copy_from_slice(&[0xff; 32]);
        assert!(matches!(
            Invitation::decode(&ticket_from_content(&bad_key)),
            Err(Error::Inviter(_))
        ));
    }

    #[test]
    fn expiry_instant_counts_as_expired() {
        let inv = sample();
        assert!(!inv.is_expired(inv.expires_at_ms() - 1));
        assert!(inv.is_expired(inv.expires_at_ms()));
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", sample());
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("[9, 9"));
    }

    #[test]
    fn generate_draws_the_secret_from_the_rng() {
        let s = sample();
        let a = Invitation::generate(s.account(), s.inviter(), vec![], 5, &mut rand_core::OsRng)
            .unwrap();
        let b = Invitation::generate(s.account(), s.inviter(), vec![], 5, &mut rand_core::OsRng)
            .unwrap();
        assert_ne!(a.secret(), b.secret());
    }
}
