//! Contact cards: what one person gives another to become contacts.
//!
//! A [`Card`] names an account, proves it, and says where its devices can be
//! dialled. It carries
//!
//! - the **name** the account goes by, chosen by its owner ("Ada");
//! - the account's membership [`Log`]. The account id is the hash of the
//!   log's genesis entry and every entry is signed by a device that was a
//!   member, so the log proves which devices speak for the account, and
//!   nobody can make a log with another account's id;
//! - **addresses** for some of the member devices (multiaddr text, not
//!   interpreted here);
//! - a **signature** over all of that by one member device, the *signer*.
//!
//! A card holds no secret; anyone may see it. Nor does it say whose account it
//! is: anyone can make a card for an account of their own. What ties a card to
//! a person is how it arrived (a code scanned in person, a message from
//! someone known), as with any public key.
//!
//! # What the signature covers
//!
//! ```text
//! "hearth/contact-card/v1\0" ‖ postcard( name, account id, log heads, addresses )
//! ```
//!
//! The heads (sorted) name every entry of the log, since each entry names its
//! parents by hash, so the signature covers the whole log the card carries:
//! neither the name, nor an address, nor the log can be changed, or the log
//! swapped for an older copy of the same account's, without the card failing
//! to decode.
//!
//! A card is a snapshot of the signer's view when it was made. The recipient
//! keeps the log and [merges](Log::merge) newer copies into it as it learns
//! them, so a device removed after the card was made stops counting then.
//!
//! # Card format
//!
//! ```text
//! hearthc1 ‖ base32( version ‖ postcard body ‖ checksum )
//! ```
//!
//! framed as a [pairing ticket](crate::ticket) is, by [`armor`]:
//! lower case from [`Card::encode`], upper case for a QR code in alphanumeric
//! mode from [`Card::qr_payload`], either case read by [`Card::decode`]. A
//! pairing ticket (`hearth1…`) given where a card is expected is recognised
//! and refused as [`Error::IsPairingTicket`]. The body is
//!
//! ```text
//! ( name, log: Log::encode bytes, addrs: [(device key, [address])],
//!   signer key, signature )
//! ```
//!
//! with device keys as their raw 32 bytes and the addressed devices in
//! ascending order. [`Card::to_bytes`] is `version ‖ body` without the text
//! framing, for sending a card over a connection; [`Card::from_bytes`] reads
//! it back.
//!
//! # Bounds
//!
//! A card's text is at most [`MAX_CARD_LEN`] characters, the most a QR code
//! holds in alphanumeric mode, so every card fits in one code; its binary form
//! is at most [`MAX_CARD_BYTES`], the same bound. What grows is the log: its
//! genesis entry takes 144 bytes and each later entry (one per device paired
//! or removed) about 175, so a card with a short name and no addresses holds a
//! log of at most 14 entries, and fewer with addresses. [`Card::new`] refuses
//! a card that would not fit ([`Error::TooLarge`], [`Error::AddrsTooLarge`]),
//! so every card it makes is one [`Card::decode`] accepts.
//!
//! Decoding checks the length before anything else, then re-verifies all of
//! the card: the whole log (every signature and membership rule, as
//! [`Log::decode`] does), that the signer and every addressed device are
//! current members, the signature, and every bound.

use serde::{Deserialize, Serialize};

use crate::armor::{self, CHECKSUM_LEN};
use crate::identity::{self, DeviceId, DeviceKey, Signature};
use crate::membership::{self, AccountId, Log};
use crate::ticket::{self, MAX_ADDR_LEN};

/// Text every card starts with.
pub const PREFIX: &str = "hearthc1";

/// The card format version this code writes and reads.
pub const VERSION: u8 = 1;

/// Longest card text accepted, in bytes after trimming whitespace: 4,296, the
/// most characters a QR code holds in alphanumeric mode (version 40,
/// error correction level L). Checked before anything is decoded.
pub const MAX_CARD_LEN: usize = 4296;

/// Longest binary card ([`Card::to_bytes`]) accepted: the most bytes whose
/// text form fits in [`MAX_CARD_LEN`]. base32 carries 5 bits a character, so
/// the characters after the prefix hold `(4296 - 8) * 5 / 8 = 2680` bytes, of
/// which the checksum takes 4. A binary card fits this bound exactly when its
/// text fits [`MAX_CARD_LEN`].
pub const MAX_CARD_BYTES: usize = (MAX_CARD_LEN - PREFIX.len()) * 5 / 8 - CHECKSUM_LEN;

/// Longest account name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;

/// Most devices a card gives addresses for.
pub const MAX_DEVICES: usize = 16;

/// Most addresses a card gives for one device. Each is at most
/// [`ticket::MAX_ADDR_LEN`] bytes long, as in a pairing ticket.
pub const MAX_ADDRS: usize = 4;

/// Prefix of the signed message, so a card signature can never be mistaken
/// for a signature over anything else the device key signs.
const SIGNING_CONTEXT: &[u8] = b"hearth/contact-card/v1\0";

/// Why a card could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is longer than any card.
    #[error("contact card is {len} characters long; cards are at most {max}")]
    TooLong {
        /// Length of the trimmed text, in bytes.
        len: usize,
        /// [`MAX_CARD_LEN`].
        max: usize,
    },
    /// The text does not start with [`PREFIX`].
    #[error("not a contact card; cards start with \"hearthc1\"")]
    Prefix,
    /// The text is a pairing ticket, given where a card was expected.
    #[error("this is a pairing ticket (hearth1…), not a contact card; use `hearth join` with it")]
    IsPairingTicket,
    /// The text after the prefix is not base32.
    #[error("contact card is not valid base32 (letters a-z and digits 2-7): {0}")]
    Base32(#[source] data_encoding::DecodeError),
    /// The card is too short to hold a version and a checksum.
    #[error("contact card is cut short; copy the whole card again")]
    Truncated,
    /// The checksum does not match: a typo or a partial copy.
    #[error("contact card checksum does not match; it was mistyped or cut, copy it again")]
    Checksum,
    /// The card was written by a version of Hearth this one does not know.
    #[error("contact card version {0} is not supported; update hearth on this device")]
    Version(u8),
    /// The binary card is longer than [`MAX_CARD_BYTES`].
    #[error("contact card is {len} bytes long; cards are at most {max}")]
    TooManyBytes {
        /// Length of the input, in bytes.
        len: usize,
        /// [`MAX_CARD_BYTES`].
        max: usize,
    },
    /// The checksum matched but the body does not decode.
    #[error("contact card body is malformed: {0}")]
    Body(#[source] postcard::Error),
    /// The body decodes but bytes follow it.
    #[error("contact card body is malformed: unexpected bytes after the card")]
    TrailingBytes,
    /// The body lists the addressed devices out of order.
    #[error("contact card body is malformed: its devices are not in ascending order")]
    UnsortedDevices,
    /// The signer or an addressed device is not a valid device id.
    #[error("contact card names an invalid device: {0}")]
    Device(#[source] identity::Error),
    /// The card's log does not decode or breaks a membership rule.
    #[error("the card's membership log does not verify: {0}")]
    Log(#[source] membership::Error),
    /// The signer is not a current member of the card's account.
    #[error("contact card is signed by {signer}, which is not a member of the account")]
    SignerNotAMember {
        /// The device that signed (or was to sign) the card.
        signer: DeviceId,
    },
    /// The signature does not verify: the card was changed after signing.
    #[error("contact card signature does not verify; the card was altered after it was made")]
    BadSignature(#[source] identity::Error),
    /// The card gives addresses for a device that is not a current member.
    #[error("contact card gives addresses for {0}, which is not a member of the account")]
    NotAMember(DeviceId),
    /// The card gives addresses for the same device twice.
    #[error("contact card gives addresses for {0} twice")]
    DuplicateDevice(DeviceId),
    /// The account name is empty or only whitespace.
    #[error("account name on the card is empty")]
    NameEmpty,
    /// The account name is longer than [`MAX_NAME_LEN`].
    #[error("account name on the card is {len} bytes; the limit is {max}")]
    NameTooLong {
        /// Name length in bytes.
        len: usize,
        /// [`MAX_NAME_LEN`].
        max: usize,
    },
    /// The account name contains control characters (which could rewrite a
    /// terminal when the name is printed).
    #[error("account name on the card contains control characters")]
    NameControlChar,
    /// Addresses for more than [`MAX_DEVICES`] devices.
    #[error("contact card gives addresses for {count} devices; at most {max} are allowed")]
    TooManyDevices {
        /// Devices given.
        count: usize,
        /// [`MAX_DEVICES`].
        max: usize,
    },
    /// More than [`MAX_ADDRS`] addresses for one device.
    #[error("contact card gives {count} addresses for {device}; at most {max} are allowed")]
    TooManyAddrs {
        /// The device.
        device: DeviceId,
        /// Addresses given for it.
        count: usize,
        /// [`MAX_ADDRS`].
        max: usize,
    },
    /// An address longer than [`ticket::MAX_ADDR_LEN`].
    #[error("contact card address is {len} bytes long; addresses are at most {max}")]
    AddrTooLong {
        /// Length of the address, in bytes.
        len: usize,
        /// [`ticket::MAX_ADDR_LEN`].
        max: usize,
    },
    /// The card would not fit in [`MAX_CARD_LEN`] even without addresses.
    #[error(
        "contact card would be {len} characters long, over the {max} a card holds: \
         the account's membership log is too long to fit in a card"
    )]
    TooLarge {
        /// Length the card text would have, addresses included.
        len: usize,
        /// [`MAX_CARD_LEN`].
        max: usize,
    },
    /// The card would fit in [`MAX_CARD_LEN`], but not with these addresses.
    #[error(
        "contact card would be {len} characters long, over the {max} a card holds; \
         give fewer or shorter addresses"
    )]
    AddrsTooLarge {
        /// Length the card text would have.
        len: usize,
        /// [`MAX_CARD_LEN`].
        max: usize,
    },
}

/// An account's contact card. See the [module docs](self).
///
/// Fields are private, so every card has passed the checks of [`Card::new`]
/// or [`Card::from_bytes`]: a verified log, a signer and addressed devices that
/// are members of it, a valid signature, and sizes within bounds.
#[derive(Clone, Debug)]
pub struct Card {
    // Invariants: name passes check_name; addrs are sorted by device, unique
    // and within bounds; signer and every addressed device are members of
    // log; signature is signer's over signing_message(name, log, addrs); the
    // binary form is at most MAX_CARD_BYTES.
    name: String,
    log: Log,
    addrs: Vec<(DeviceId, Vec<String>)>,
    signer: DeviceId,
    signature: Signature,
}

/// The postcard body: ids as raw bytes, the log as its own encoding.
#[derive(Serialize, Deserialize)]
struct Body<'a> {
    name: &'a str,
    log: &'a [u8],
    addrs: Vec<([u8; 32], Vec<String>)>,
    signer: [u8; 32],
    signature: Signature,
}

/// What the signature covers, after [`SIGNING_CONTEXT`].
#[derive(Serialize)]
struct Signed<'a> {
    name: &'a str,
    account: [u8; 32],
    heads: Vec<[u8; 32]>,
    addrs: Vec<(&'a [u8; 32], &'a [String])>,
}

impl Card {
    /// Makes and signs a card for the account whose log is `log`.
    ///
    /// `name` is what the account goes by; surrounding whitespace is dropped.
    /// `addrs` gives, for member devices, where to dial them; it is sorted by
    /// device. `signer` must be a current member, as must every device in
    /// `addrs`. Fails with [`Error::TooLarge`] or [`Error::AddrsTooLarge`] if
    /// the card would not fit in [`MAX_CARD_LEN`] characters.
    pub fn new(
        signer: &DeviceKey,
        name: &str,
        log: Log,
        mut addrs: Vec<(DeviceId, Vec<String>)>,
    ) -> Result<Card, Error> {
        let name = name.trim();
        addrs.sort_by_key(|a| a.0);
        check_shape(name, &addrs)?;
        check_members(&log, &addrs, signer.id())?;
        let signature = signer.sign(&signing_message(name, &log, &addrs));
        let card = Card {
            name: name.to_owned(),
            log,
            addrs,
            signer: signer.id(),
            signature,
        };
        let len = card.to_bytes().len();
        if len > MAX_CARD_BYTES {
            let bare = Card {
                addrs: Vec::new(),
                ..card.clone()
            };
            let len = armor::encoded_len(PREFIX, len);
            return Err(if bare.to_bytes().len() > MAX_CARD_BYTES {
                Error::TooLarge {
                    len,
                    max: MAX_CARD_LEN,
                }
            } else {
                Error::AddrsTooLarge {
                    len,
                    max: MAX_CARD_LEN,
                }
            });
        }
        Ok(card)
    }

    /// The name the account goes by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account the card is for: the id of its log.
    pub fn account(&self) -> AccountId {
        self.log.account_id()
    }

    /// The account's membership log, as the signer knew it.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Where to dial member devices: multiaddr text, not interpreted here,
    /// ordered by device.
    pub fn addrs(&self) -> &[(DeviceId, Vec<String>)] {
        &self.addrs
    }

    /// The member device that signed the card.
    pub fn signer(&self) -> DeviceId {
        self.signer
    }

    /// The account's membership log, for keeping.
    pub fn into_log(self) -> Log {
        self.log
    }

    /// The card text: `hearthc1` and lowercase base32.
    pub fn encode(&self) -> String {
        armor::encode(PREFIX, &self.to_bytes())
    }

    /// The card in upper case, for a QR code in alphanumeric mode.
    /// [`Card::decode`] reads it back.
    pub fn qr_payload(&self) -> String {
        armor::encode_upper(PREFIX, &self.to_bytes())
    }

    /// Reads a card in either case, ignoring surrounding whitespace, and
    /// verifies it as [`Card::from_bytes`] does.
    pub fn decode(text: &str) -> Result<Card, Error> {
        let content = armor::decode(text, PREFIX, MAX_CARD_LEN).map_err(|e| match e {
            armor::Error::TooLong { len, max } => Error::TooLong { len, max },
            armor::Error::Prefix { .. } if armor::has_prefix(text, ticket::PREFIX) => {
                Error::IsPairingTicket
            }
            armor::Error::Prefix { .. } => Error::Prefix,
            armor::Error::Base32(e) => Error::Base32(e),
            armor::Error::Truncated => Error::Truncated,
            armor::Error::Checksum => Error::Checksum,
        })?;
        Self::from_bytes(&content)
    }

    /// The binary form: version byte and postcard body, without the text
    /// framing. At most [`MAX_CARD_BYTES`] long.
    pub fn to_bytes(&self) -> Vec<u8> {
        let log = self.log.encode();
        let body = Body {
            name: &self.name,
            log: &log,
            addrs: self
                .addrs
                .iter()
                .map(|(device, addrs)| (*device.as_bytes(), addrs.clone()))
                .collect(),
            signer: *self.signer.as_bytes(),
            signature: self.signature,
        };
        postcard::to_extend(&body, vec![VERSION]).expect("the card body always encodes into a Vec")
    }

    /// Reads and verifies a binary card from [`Card::to_bytes`]: its length
    /// (checked first), version, exact encoding (no trailing bytes), name and
    /// bounds, the whole log, that the signer and the addressed devices are
    /// current members, and the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Card, Error> {
        if bytes.len() > MAX_CARD_BYTES {
            return Err(Error::TooManyBytes {
                len: bytes.len(),
                max: MAX_CARD_BYTES,
            });
        }
        let (&version, body) = bytes.split_first().ok_or(Error::Truncated)?;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let (body, rest): (Body<'_>, _) = postcard::take_from_bytes(body).map_err(Error::Body)?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes);
        }
        let addrs = body
            .addrs
            .into_iter()
            .map(|(device, addrs)| Ok((DeviceId::from_bytes(&device)?, addrs)))
            .collect::<Result<Vec<_>, identity::Error>>()
            .map_err(Error::Device)?;
        let signer = DeviceId::from_bytes(&body.signer).map_err(Error::Device)?;
        check_shape(body.name, &addrs)?;
        let log = Log::decode(body.log).map_err(Error::Log)?;
        check_members(&log, &addrs, signer)?;
        signer
            .verify(&signing_message(body.name, &log, &addrs), &body.signature)
            .map_err(Error::BadSignature)?;
        Ok(Card {
            name: body.name.to_owned(),
            log,
            addrs,
            signer,
            signature: body.signature,
        })
    }
}

/// The checks that need no log: the name, and the addresses' order and
/// bounds.
fn check_shape(name: &str, addrs: &[(DeviceId, Vec<String>)]) -> Result<(), Error> {
    check_name(name)?;
    if addrs.len() > MAX_DEVICES {
        return Err(Error::TooManyDevices {
            count: addrs.len(),
            max: MAX_DEVICES,
        });
    }
    for pair in addrs.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(Error::DuplicateDevice(pair[0].0));
        }
        if pair[0].0 > pair[1].0 {
            return Err(Error::UnsortedDevices);
        }
    }
    for (device, list) in addrs {
        if list.len() > MAX_ADDRS {
            return Err(Error::TooManyAddrs {
                device: *device,
                count: list.len(),
                max: MAX_ADDRS,
            });
        }
        if let Some(long) = list.iter().find(|a| a.len() > MAX_ADDR_LEN) {
            return Err(Error::AddrTooLong {
                len: long.len(),
                max: MAX_ADDR_LEN,
            });
        }
    }
    Ok(())
}

/// An account name is not blank, at most [`MAX_NAME_LEN`] bytes, and free of
/// control characters.
fn check_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() {
        return Err(Error::NameEmpty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Error::NameControlChar);
    }
    Ok(())
}

/// The signer and every addressed device are current members of `log`.
fn check_members(
    log: &Log,
    addrs: &[(DeviceId, Vec<String>)],
    signer: DeviceId,
) -> Result<(), Error> {
    if !log.is_member(&signer) {
        return Err(Error::SignerNotAMember { signer });
    }
    match addrs.iter().find(|(device, _)| !log.is_member(device)) {
        Some((device, _)) => Err(Error::NotAMember(*device)),
        None => Ok(()),
    }
}

/// The message the signer signs: [`SIGNING_CONTEXT`], then postcard of the
/// name, the account id, the log's sorted heads and the addresses.
fn signing_message(name: &str, log: &Log, addrs: &[(DeviceId, Vec<String>)]) -> Vec<u8> {
    let signed = Signed {
        name,
        account: *log.account_id().as_bytes(),
        heads: log.heads().iter().map(|h| *h.as_bytes()).collect(),
        addrs: addrs
            .iter()
            .map(|(device, list)| (device.as_bytes(), list.as_slice()))
            .collect(),
    };
    postcard::to_extend(&signed, SIGNING_CONTEXT.to_vec())
        .expect("the signed message always encodes into a Vec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{Entry, Op};
    use crate::ticket::Invitation;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn keys(n: usize) -> Vec<DeviceKey> {
        let mut rng = StdRng::seed_from_u64(11);
        (0..n).map(|_| DeviceKey::generate(&mut rng)).collect()
    }

    /// A log with every key as a member, the first as founder.
    fn log_of(k: &[DeviceKey]) -> Log {
        let mut log = Log::genesis(&k[0], "laptop", 1_700_000_000_000);
        for (i, key) in k.iter().enumerate().skip(1) {
            log.add_device(&k[0], key.id(), "phone", 1_700_000_000_000 + i as u64)
                .unwrap();
        }
        log
    }

    fn addr(i: usize) -> String {
        format!("/ip4/192.168.1.{}/udp/4001/quic-v1", 20 + i)
    }

    /// Two devices, one address each, signed by the second.
    fn sample() -> (Vec<DeviceKey>, Card) {
        let k = keys(2);
        let addrs = vec![(k[0].id(), vec![addr(0)]), (k[1].id(), vec![addr(1)])];
        let card = Card::new(&k[1], "Ada", log_of(&k), addrs).unwrap();
        (k, card)
    }

    /// A binary card from any parts, to reach the checks a real card passes.
    fn body_bytes(
        name: &str,
        log: &[u8],
        addrs: &[(DeviceId, Vec<String>)],
        signer: DeviceId,
        signature: Signature,
    ) -> Vec<u8> {
        let body = Body {
            name,
            log,
            addrs: addrs
                .iter()
                .map(|(d, a)| (*d.as_bytes(), a.clone()))
                .collect(),
            signer: *signer.as_bytes(),
            signature,
        };
        postcard::to_extend(&body, vec![VERSION]).unwrap()
    }

    /// A binary card from any parts, validly signed by `key`.
    fn signed_bytes(
        key: &DeviceKey,
        name: &str,
        log: &Log,
        addrs: &[(DeviceId, Vec<String>)],
    ) -> Vec<u8> {
        let signature = key.sign(&signing_message(name, log, addrs));
        body_bytes(name, &log.encode(), addrs, key.id(), signature)
    }

    fn text_of(content: &[u8]) -> String {
        armor::encode(PREFIX, content)
    }

    fn assert_same(a: &Card, b: &Card) {
        assert_eq!(a.name(), b.name());
        assert_eq!(a.account(), b.account());
        assert_eq!(a.addrs(), b.addrs());
        assert_eq!(a.signer(), b.signer());
        assert_eq!(a.log().members(), b.log().members());
        assert_eq!(a.log().heads(), b.log().heads());
        assert_eq!(a.to_bytes(), b.to_bytes());
    }

    #[test]
    fn round_trips_as_text_qr_payload_and_bytes() {
        let (_, card) = sample();
        let text = card.encode();
        assert!(text.starts_with("hearthc1"));
        assert_eq!(text, text.to_ascii_lowercase());
        assert_same(&Card::decode(&text).unwrap(), &card);
        assert_eq!(Card::decode(&text).unwrap().encode(), text);

        let qr = card.qr_payload();
        assert_eq!(qr, text.to_ascii_uppercase());
        assert!(
            qr.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        assert_same(&Card::decode(&format!(" {qr}\r\n")).unwrap(), &card);

        let bytes = card.to_bytes();
        assert!(bytes.len() <= MAX_CARD_BYTES);
        assert_same(&Card::from_bytes(&bytes).unwrap(), &card);
    }

    #[test]
    fn two_device_card_carries_account_name_and_addresses() {
        let (k, card) = sample();
        let back = Card::decode(&card.encode()).unwrap();
        assert_eq!(back.name(), "Ada");
        assert_eq!(back.account(), log_of(&k).account_id());
        assert_eq!(back.signer(), k[1].id());
        let mut expected = vec![(k[0].id(), vec![addr(0)]), (k[1].id(), vec![addr(1)])];
        expected.sort_by_key(|a| a.0);
        assert_eq!(back.addrs(), expected.as_slice());
        let log = back.into_log();
        assert!(log.is_member(&k[0].id()) && log.is_member(&k[1].id()));
        // Measured: 914 characters (562 bytes, of which the log is 321),
        // under a quarter of what a QR code holds.
        let len = card.encode().len();
        assert!(len < MAX_CARD_LEN / 4, "{len}");
    }

    #[test]
    fn name_is_trimmed_and_checked() {
        let k = keys(1);
        let log = log_of(&k);
        let card = Card::new(&k[0], "  Ada Lovelace \n", log.clone(), vec![]).unwrap();
        assert_eq!(card.name(), "Ada Lovelace");
        for (name, ok) in [
            ("", false),
            (" \t ", false),
            (&"x".repeat(MAX_NAME_LEN), true),
            (&"x".repeat(MAX_NAME_LEN + 1), false),
            ("a\u{1b}[2Jb", false),
            ("Zoë", true),
        ] {
            let made = Card::new(&k[0], name, log.clone(), vec![]);
            assert_eq!(made.is_ok(), ok, "{name:?}");
        }
        assert!(matches!(
            Card::new(&k[0], " ", log.clone(), vec![]),
            Err(Error::NameEmpty)
        ));
        assert!(matches!(
            Card::new(&k[0], &"é".repeat(33), log.clone(), vec![]),
            Err(Error::NameTooLong { len: 66, max: 64 })
        ));
        assert!(matches!(
            Card::new(&k[0], "a\u{7}b", log.clone(), vec![]),
            Err(Error::NameControlChar)
        ));
        // A name Card::new would refuse, in an otherwise valid card.
        let bytes = signed_bytes(&k[0], "a\nb", &log, &[]);
        assert!(matches!(
            Card::from_bytes(&bytes),
            Err(Error::NameControlChar)
        ));
    }

    #[test]
    fn a_changed_field_breaks_the_signature() {
        let (k, card) = sample();
        let log = card.log().encode();
        let sig = card.signature;
        let signer = card.signer();

        let renamed = body_bytes("Eve", &log, card.addrs(), signer, sig);
        assert!(matches!(
            Card::from_bytes(&renamed),
            Err(Error::BadSignature(_))
        ));

        let mut redirected = card.addrs().to_vec();
        redirected[0].1 = vec!["/ip4/203.0.113.9/udp/4001/quic-v1".to_owned()];
        let redirected = body_bytes(card.name(), &log, &redirected, signer, sig);
        assert!(matches!(
            Card::decode(&text_of(&redirected)),
            Err(Error::BadSignature(_))
        ));

        let dropped = body_bytes(card.name(), &log, &card.addrs()[..1], signer, sig);
        assert!(matches!(
            Card::from_bytes(&dropped),
            Err(Error::BadSignature(_))
        ));

        // A longer log of the same account, with the old signature.
        let mut grown = log_of(&k);
        let newcomer = keys(3).remove(2);
        grown.add_device(&k[0], newcomer.id(), "tablet", 5).unwrap();
        let swapped = body_bytes(card.name(), &grown.encode(), card.addrs(), signer, sig);
        assert!(matches!(
            Card::from_bytes(&swapped),
            Err(Error::BadSignature(_))
        ));
    }

    #[test]
    fn signer_must_be_a_member() {
        let k = keys(3);
        let log = log_of(&k[..2]);
        assert!(matches!(
            Card::new(&k[2], "Ada", log.clone(), vec![]),
            Err(Error::SignerNotAMember { signer }) if signer == k[2].id()
        ));
        let forged = signed_bytes(&k[2], "Ada", &log, &[]);
        assert!(matches!(
            Card::from_bytes(&forged),
            Err(Error::SignerNotAMember { signer }) if signer == k[2].id()
        ));
        // A removed device is no longer a member.
        let mut log = log;
        log.remove_device(&k[0], k[1].id(), 9).unwrap();
        assert!(matches!(
            Card::new(&k[1], "Ada", log, vec![]),
            Err(Error::SignerNotAMember { .. })
        ));
    }

    #[test]
    fn addressed_devices_must_be_members() {
        let k = keys(3);
        let log = log_of(&k[..2]);
        let addrs = vec![(k[2].id(), vec![addr(2)])];
        assert!(matches!(
            Card::new(&k[0], "Ada", log.clone(), addrs.clone()),
            Err(Error::NotAMember(device)) if device == k[2].id()
        ));
        let forged = signed_bytes(&k[0], "Ada", &log, &addrs);
        assert!(matches!(
            Card::from_bytes(&forged),
            Err(Error::NotAMember(device)) if device == k[2].id()
        ));
    }

    #[test]
    fn devices_are_sorted_and_unique() {
        let k = keys(2);
        let log = log_of(&k);
        let mut addrs = vec![(k[0].id(), vec![addr(0)]), (k[1].id(), vec![addr(1)])];
        addrs.sort_by_key(|a| std::cmp::Reverse(a.0));
        let card = Card::new(&k[0], "Ada", log.clone(), addrs.clone()).unwrap();
        assert!(card.addrs()[0].0 < card.addrs()[1].0);
        let unsorted = signed_bytes(&k[0], "Ada", &log, &addrs);
        assert!(matches!(
            Card::from_bytes(&unsorted),
            Err(Error::UnsortedDevices)
        ));
        let twice = vec![(k[0].id(), vec![addr(0)]), (k[0].id(), vec![addr(1)])];
        assert!(matches!(
            Card::new(&k[0], "Ada", log.clone(), twice.clone()),
            Err(Error::DuplicateDevice(device)) if device == k[0].id()
        ));
        let twice = signed_bytes(&k[0], "Ada", &log, &twice);
        assert!(matches!(
            Card::from_bytes(&twice),
            Err(Error::DuplicateDevice(_))
        ));
    }

    #[test]
    fn refuses_out_of_bound_addresses() {
        let k = keys(MAX_DEVICES + 1);
        let log = log_of(&k);
        let many: Vec<_> = k.iter().map(|key| (key.id(), vec![])).collect();
        assert!(matches!(
            Card::new(&k[0], "Ada", log.clone(), many),
            Err(Error::TooManyDevices { count: 17, max: 16 })
        ));
        let crowded = vec![(k[1].id(), vec![addr(0); MAX_ADDRS + 1])];
        assert!(matches!(
            Card::new(&k[0], "Ada", log.clone(), crowded),
            Err(Error::TooManyAddrs { device, count: 5, max: 4 }) if device == k[1].id()
        ));
        let long = vec![(k[1].id(), vec!["/".repeat(MAX_ADDR_LEN + 1)])];
        assert!(matches!(
            Card::new(&k[0], "Ada", log, long),
            Err(Error::AddrTooLong { len: 129, max: 128 })
        ));
    }

    #[test]
    fn a_typo_fails_the_checksum() {
        let text = sample().1.encode();
        let mut typo = text.clone().into_bytes();
        let at = text.len() / 2;
        typo[at] = if typo[at] == b'q' { b'r' } else { b'q' };
        let typo = String::from_utf8(typo).unwrap();
        assert!(matches!(Card::decode(&typo), Err(Error::Checksum)));
        assert!(matches!(
            Card::decode(&text[..text.len() - 10]),
            Err(Error::Checksum | Error::Base32(_))
        ));
        assert!(matches!(
            Card::decode(&format!("{text}8")),
            Err(Error::Base32(_))
        ));
    }

    #[test]
    fn a_pairing_ticket_is_recognised() {
        let (k, card) = sample();
        let inv = Invitation::new(card.account(), k[0].id(), vec![addr(0)], [5; 16], 1).unwrap();
        for ticket in [
            inv.encode(),
            inv.qr_payload(),
            format!("\n {}", inv.encode()),
        ] {
            assert!(matches!(Card::decode(&ticket), Err(Error::IsPairingTicket)));
        }
        assert!(Error::IsPairingTicket.to_string().contains("hearth join"));
        // And the other way round, a card is not mistaken for a ticket.
        assert!(matches!(
            Invitation::decode(&card.encode()),
            Err(ticket::Error::Prefix)
        ));
        for other in ["", "hearth", "hearthc", "acc_abc", "12D3KooWabc"] {
            assert!(matches!(Card::decode(other), Err(Error::Prefix)), "{other}");
        }
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        // Not even base32: the length is checked first.
        let text = format!("{PREFIX}{}", "!".repeat(MAX_CARD_LEN));
        assert!(matches!(
            Card::decode(&text),
            Err(Error::TooLong { len, max: MAX_CARD_LEN }) if len == text.len()
        ));
        assert!(matches!(
            Card::from_bytes(&vec![VERSION; MAX_CARD_BYTES + 1]),
            Err(Error::TooManyBytes { len, max: MAX_CARD_BYTES }) if len == MAX_CARD_BYTES + 1
        ));
    }

    #[test]
    fn binary_bound_matches_text_bound() {
        assert!(armor::encoded_len(PREFIX, MAX_CARD_BYTES) <= MAX_CARD_LEN);
        assert!(armor::encoded_len(PREFIX, MAX_CARD_BYTES + 1) > MAX_CARD_LEN);
    }

    #[test]
    fn a_log_too_long_for_a_card_is_refused() {
        let k = keys(20);
        let log = log_of(&k);
        let made = Card::new(&k[0], "Ada", log, vec![]);
        assert!(
            matches!(made, Err(Error::TooLarge { len, max: MAX_CARD_LEN }) if len > MAX_CARD_LEN),
            "{made:?}"
        );
        assert!(made.unwrap_err().to_string().contains("membership log"));
    }

    #[test]
    fn too_many_addresses_for_a_card_are_refused() {
        let k = keys(8);
        let log = log_of(&k);
        assert!(Card::new(&k[0], "Ada", log.clone(), vec![]).is_ok());
        let addrs = k
            .iter()
            .map(|key| (key.id(), vec!["/".repeat(MAX_ADDR_LEN); MAX_ADDRS]))
            .collect();
        let made = Card::new(&k[0], "Ada", log, addrs);
        assert!(
            matches!(made, Err(Error::AddrsTooLarge { len, max: MAX_CARD_LEN }) if len > MAX_CARD_LEN),
            "{made:?}"
        );
    }

    #[test]
    fn refuses_each_kind_of_malformed_card() {
        let (_, card) = sample();
        let bytes = card.to_bytes();
        assert!(matches!(Card::decode(PREFIX), Err(Error::Truncated)));
        assert!(matches!(Card::from_bytes(&[]), Err(Error::Truncated)));
        assert!(matches!(
            Card::from_bytes(&bytes[..bytes.len() - 3]),
            Err(Error::Body(_))
        ));
        assert!(matches!(
            Card::decode(&text_of(&bytes[..40])),
            Err(Error::Body(_))
        ));

        let mut newer = bytes.clone();
        newer[0] = 2;
        assert!(matches!(Card::from_bytes(&newer), Err(Error::Version(2))));
        assert!(matches!(
            Card::decode(&text_of(&newer)),
            Err(Error::Version(2))
        ));

        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(Card::from_bytes(&long), Err(Error::TrailingBytes)));
        assert!(matches!(
            Card::decode(&text_of(&long)),
            Err(Error::TrailingBytes)
        ));

        // y = p + 1 is not a canonical curve point, so not a device id.
        let mut bad_signer = body_bytes(
            card.name(),
            &card.log().encode(),
            card.addrs(),
            card.signer(),
            card.signature,
        );
        let at = bad_signer.len() - 1 - Signature::LEN - 32;
        bad_signer[at..at + 32].copy_from_slice(&[0xff; 32]);
        assert!(matches!(
            Card::from_bytes(&bad_signer),
            Err(Error::Device(_))
        ));
    }

    #[test]
    fn a_forged_log_entry_is_refused() {
        let k = keys(3);
        let log = Log::genesis(&k[0], "laptop", 0);
        // A device that was never a member adds another, as if it were one.
        let forged = Entry::sign(
            &k[1],
            Op::AddDevice {
                device: k[2].id(),
                name: "x".into(),
            },
            log.heads(),
            1,
        )
        .unwrap();
        // A log encoding is a version byte, the entry count, then the entries.
        let mut bad_log = vec![1, 2];
        bad_log.extend(log.entries()[0].to_bytes());
        bad_log.extend(forged.to_bytes());
        assert!(matches!(
            Log::decode(&bad_log),
            Err(membership::Error::NotMember { .. })
        ));
        let bytes = body_bytes("Ada", &bad_log, &[], k[0].id(), k[0].sign(b"-"));
        assert!(matches!(
            Card::from_bytes(&bytes),
            Err(Error::Log(membership::Error::NotMember { .. }))
        ));

        // One flipped byte inside an entry breaks that entry's signature.
        let mut flipped = log_of(&k[..2]).encode();
        let at = flipped.len() - 70;
        flipped[at] ^= 1;
        let bytes = body_bytes("Ada", &flipped, &[], k[0].id(), k[0].sign(b"-"));
        let err = Card::from_bytes(&bytes).unwrap_err();
        assert!(matches!(err, Error::Log(_)), "{err:?}");
        assert!(err.to_string().starts_with("the card's membership log"));
    }

    #[test]
    fn largest_card_fits_or_is_refused_as_too_large() {
        let k = keys(MAX_DEVICES);
        let addrs = k
            .iter()
            .map(|key| (key.id(), vec!["/".repeat(MAX_ADDR_LEN); MAX_ADDRS]))
            .collect();
        let name = "x".repeat(MAX_NAME_LEN);
        match Card::new(&k[0], &name, log_of(&k), addrs) {
            Ok(card) => assert_same(&Card::decode(&card.encode()).unwrap(), &card),
            Err(Error::TooLarge { len, .. } | Error::AddrsTooLarge { len, .. }) => {
                assert!(len > MAX_CARD_LEN);
            }
            Err(other) => panic!("{other}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Every card `Card::new` makes decodes to the same card, from its
        /// text, its QR payload and its bytes; every card it refuses for size
        /// really is too long.
        #[test]
        fn every_card_new_makes_round_trips(
            members in 1..=20usize,
            addressed in 0..=MAX_DEVICES,
            per_device in 0..=MAX_ADDRS,
            addr_len in 1..=MAX_ADDR_LEN,
            name_len in 1..=MAX_NAME_LEN,
            signer in 0..20usize,
        ) {
            let k = keys(members);
            let addrs = k
                .iter()
                .take(addressed)
                .map(|key| (key.id(), vec!["/".repeat(addr_len); per_device]))
                .collect();
            let name = "n".repeat(name_len);
            match Card::new(&k[signer % members], &name, log_of(&k), addrs) {
                Ok(card) => {
                    let text = card.encode();
                    prop_assert!(text.len() <= MAX_CARD_LEN);
                    assert_same(&Card::decode(&text).unwrap(), &card);
                    assert_same(&Card::decode(&card.qr_payload()).unwrap(), &card);
                    assert_same(&Card::from_bytes(&card.to_bytes()).unwrap(), &card);
                }
                Err(Error::TooLarge { len, .. } | Error::AddrsTooLarge { len, .. }) => {
                    prop_assert!(len > MAX_CARD_LEN);
                }
                Err(other) => prop_assert!(false, "{other}"),
            }
        }
    }
}
