//! The text framing shared by pairing tickets and contact cards.
//!
//! Hearth hands some values from person to person as text: typed, pasted into
//! a chat or scanned from a QR code. Each such value is framed the same way:
//!
//! ```text
//! prefix ‖ base32( content ‖ checksum )        content = version ‖ body
//! ```
//!
//! - The **prefix** names what the text is (`hearth1` for a
//!   [pairing ticket](crate::ticket), `hearthc1` for a
//!   [contact card](crate::card)), so text pasted in the wrong place is
//!   recognised for what it is instead of failing as noise.
//! - **base32** is RFC 4648 without padding. [`encode`] writes it in lower case,
//!   for reading and typing; [`encode_upper`] writes the same text in upper
//!   case, because QR alphanumeric mode holds only upper-case letters, digits
//!   and a few symbols, and packs them at 5.5 bits a character where byte mode
//!   spends 8. [`decode`] accepts either case and ignores surrounding
//!   whitespace.
//! - The **content** is a version byte followed by the value's body, both
//!   chosen by the caller; this module only carries them.
//! - The **checksum** is the first [`CHECKSUM_LEN`] bytes of the blake3 hash of
//!   the content. It catches a typo or a cut-off copy with a clear message
//!   before the body is looked at. It is not a security measure: anyone can
//!   compute it, and what the body holds must be protected (or verified) by
//!   the caller.
//!
//! [`decode`] checks the text length against the caller's bound before it
//! decodes anything, so the work and memory spent on hostile input are
//! bounded by the caller's limit, not by the input.

use zeroize::Zeroize;

/// Length of the checksum that ends the decoded bytes.
pub const CHECKSUM_LEN: usize = 4;

/// Why framed text could not be read.
///
/// The messages are generic; the ticket and the card turn these into errors
/// that name what was being read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is longer than the caller's bound.
    #[error("text is {len} characters long; at most {max} are accepted")]
    TooLong {
        /// Length of the trimmed text, in bytes.
        len: usize,
        /// The caller's bound.
        max: usize,
    },
    /// The text does not start with the expected prefix.
    #[error("text does not start with \"{expected}\"")]
    Prefix {
        /// The prefix the caller asked for.
        expected: &'static str,
    },
    /// The text after the prefix is not base32.
    #[error("text is not valid base32 (letters a-z and digits 2-7): {0}")]
    Base32(#[source] data_encoding::DecodeError),
    /// The text is too short to hold a version byte and a checksum.
    #[error("text is cut short; copy all of it again")]
    Truncated,
    /// The checksum does not match the content: a typo or a partial copy.
    #[error("checksum does not match; the text was mistyped or cut, copy it again")]
    Checksum,
}

/// Frames `content` (a version byte and a body) as `prefix` followed by
/// lower-case base32 of the content and its checksum.
///
/// `prefix` should be lower case. No copy of `content` is left behind in
/// memory other than the returned text, so a content holding a secret is
/// only as exposed as the text itself.
pub fn encode(prefix: &str, content: &[u8]) -> String {
    let mut text = frame(prefix, content);
    text[prefix.len()..].make_ascii_lowercase();
    text
}

/// Like [`encode`], but all in upper case, prefix included, for a QR code in
/// alphanumeric mode. [`decode`] reads it back.
pub fn encode_upper(prefix: &str, content: &[u8]) -> String {
    let mut text = frame(prefix, content);
    text[..prefix.len()].make_ascii_uppercase();
    text
}

/// Length in characters of the text [`encode`] writes for `content_len`
/// bytes of content under `prefix`.
pub fn encoded_len(prefix: &str, content_len: usize) -> usize {
    prefix.len() + data_encoding::BASE32_NOPAD.encode_len(content_len + CHECKSUM_LEN)
}

/// Whether `text`, with surrounding whitespace removed, starts with `prefix`
/// in either case. Lets a caller tell what kind of text it was given when
/// [`decode`] reports [`Error::Prefix`].
pub fn has_prefix(text: &str, prefix: &str) -> bool {
    text.trim()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Reads text framed by [`encode`] or [`encode_upper`] and returns its content
/// (version byte and body) after checking the checksum.
///
/// Surrounding whitespace is ignored and the text may be in either case. The
/// trimmed text must be at most `max_len` bytes long, checked before anything
/// is decoded. The returned content is never empty, so it always has a version
/// byte. The decoded bytes are wiped before an error is returned; wiping the
/// returned content, if it holds a secret, is the caller's job.
pub fn decode(text: &str, prefix: &'static str, max_len: usize) -> Result<Vec<u8>, Error> {
    let text = text.trim();
    if text.len() > max_len {
        return Err(Error::TooLong {
            len: text.len(),
            max: max_len,
        });
    }
    let rest = text
        .get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .and_then(|_| text.get(prefix.len()..))
        .ok_or(Error::Prefix { expected: prefix })?;
    let mut bytes = data_encoding::BASE32_NOPAD_NOCASE
        .decode(rest.as_bytes())
        .map_err(Error::Base32)?;
    let Some(split) = bytes.len().checked_sub(CHECKSUM_LEN).filter(|&n| n > 0) else {
        bytes.zeroize();
        return Err(Error::Truncated);
    };
    let (content, sum) = bytes.split_at(split);
    if checksum(content) != sum {
        bytes.zeroize();
        return Err(Error::Checksum);
    }
    // Only the checksum, a hash of the content, is left past the end.
    bytes.truncate(split);
    Ok(bytes)
}

/// `prefix` and upper-case base32 of `content` and its checksum, with the
/// intermediate bytes wiped.
fn frame(prefix: &str, content: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(content.len() + CHECKSUM_LEN);
    bytes.extend_from_slice(content);
    bytes.extend_from_slice(&checksum(content));
    let mut text = String::with_capacity(encoded_len(prefix, content.len()));
    text.push_str(prefix);
    data_encoding::BASE32_NOPAD.encode_append(&bytes, &mut text);
    bytes.zeroize();
    text
}

/// The first [`CHECKSUM_LEN`] bytes of the blake3 hash of `content`.
pub(crate) fn checksum(content: &[u8]) -> [u8; CHECKSUM_LEN] {
    let hash = blake3::hash(content);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&hash.as_bytes()[..CHECKSUM_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "test1";

    #[test]
    fn round_trips_in_both_cases_with_whitespace() {
        let content = b"\x01some body";
        let lower = encode(PREFIX, content);
        assert!(lower.starts_with(PREFIX));
        assert_eq!(lower, lower.to_ascii_lowercase());
        assert_eq!(lower.len(), encoded_len(PREFIX, content.len()));
        let upper = encode_upper(PREFIX, content);
        assert_eq!(upper, lower.to_ascii_uppercase());
        for text in [lower, upper.clone(), format!(" \t{upper}\r\n")] {
            assert_eq!(decode(&text, PREFIX, 100).unwrap(), content);
            assert!(has_prefix(&text, PREFIX));
        }
    }

    #[test]
    fn encoded_len_matches_encode_for_every_remainder() {
        for len in 1..=12 {
            let content = vec![0xa5; len];
            assert_eq!(encode(PREFIX, &content).len(), encoded_len(PREFIX, len));
        }
    }

    #[test]
    fn refuses_each_kind_of_bad_text() {
        let text = encode(PREFIX, b"\x01body");
        assert!(matches!(
            decode(&text, PREFIX, text.len() - 1),
            Err(Error::TooLong { len, max }) if len == text.len() && max == text.len() - 1
        ));
        assert!(matches!(
            decode(&text, "other1", 100),
            Err(Error::Prefix { expected: "other1" })
        ));
        assert!(matches!(
            decode("te", PREFIX, 100),
            Err(Error::Prefix { .. })
        ));
        assert!(matches!(
            decode(&format!("{text}1"), PREFIX, 100),
            Err(Error::Base32(_))
        ));
        assert!(matches!(decode(PREFIX, PREFIX, 100), Err(Error::Truncated)));
        // Four bytes: a checksum with no content before it.
        let empty = encode(PREFIX, b"");
        assert!(matches!(decode(&empty, PREFIX, 100), Err(Error::Truncated)));
        let mut typo = text.into_bytes();
        let last = typo.len() - 3;
        typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert!(matches!(decode(&typo, PREFIX, 100), Err(Error::Checksum)));
        assert!(!has_prefix("te", PREFIX));
        assert!(!has_prefix("other1abc", PREFIX));
    }
}
