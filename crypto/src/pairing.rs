//! The pairing handshake, as sans-IO state machines.
//!
//! An existing device (the *inviter*) shows an [`Invitation`]; a new device (the
//! *joiner*) reads it and dials the inviter. The transport authenticates both
//! ends as [`DeviceId`]s; [`Inviter`] and [`Joiner`] take those authenticated ids
//! with every message, and the caller moves [`Message`]s between them. Nothing
//! here reads a clock or draws randomness on its own: `now_ms` and the RNG are
//! parameters.
//!
//! # The handshake
//!
//! The invitation secret is 128 random bits, far beyond online guessing, so no
//! PAKE is needed: each side proves it holds the secret with a MAC over a
//! transcript that binds the whole exchange.
//!
//! ```text
//! joiner                                            inviter
//!   Hello { joiner, nonce_j }                 ──▶   checks joiner = authenticated peer
//!                                             ◀──   Challenge { nonce_i, mac(k, "hearth pair inviter" ‖ T) }
//!   checks the inviter's proof
//!   Proof { mac(k, "hearth pair joiner" ‖ T) } ──▶  checks the joiner's proof
//!   shows the check code                            waits for the person to type it
//!                                             ◀──   Welcome { payload }   (only after confirmation)
//! ```
//!
//! - `T` is the transcript: a blake3 hash, in its own derivation context, of
//!   the account id, the inviter and joiner keys, both nonces and the expiry.
//!   A proof therefore holds for this one exchange between these two devices
//!   only: it cannot be replayed to another device, account or session.
//! - `k` is derived from the secret with `blake3::derive_key`. Proofs are keyed
//!   blake3 hashes and are compared in constant time.
//! - The check code is a keyed blake3 hash of `T` under a second key derived
//!   from the secret, reduced mod 10⁶ and shown as 6 digits. Both sides compute
//!   it; the joiner shows it and the person types it on the inviter. It proves
//!   that the device the person holds is the one in this session, not someone
//!   else who saw the ticket (a photographed QR code) and connected first.
//!
//! # Rules the inviter enforces
//!
//! - **Single use.** One joiner at a time: a `Hello` from another device while
//!   a session is in progress is refused as [`Error::Busy`]. Once confirmed,
//!   the invitation is used; any later `Hello` (a replay) gets
//!   [`Error::AlreadyUsed`].
//! - **Expiry.** A `Hello`, a `Proof` or a confirmation at or after the expiry
//!   is refused with [`Error::Expired`], and the invitation closes.
//! - **A wrong proof ends the attempt, not the invitation.** It returns to
//!   waiting for a joiner. Burning it would let anyone who can reach the
//!   inviter cancel the invitation, and the 128-bit secret cannot be guessed
//!   anyway.
//! - **A wrong code burns the invitation.** The code has only 10⁶ values, so
//!   unlimited tries would turn it from a check into a guessing game, and a
//!   mismatch means either a typo or that another device is in the session,
//!   which means someone else holds the ticket. Starting over with a fresh
//!   invitation (new secret) is the only safe answer to either. Text that is
//!   not 6 digits at all is refused as [`Error::InvalidCode`] without burning:
//!   it tests nothing.
//! - **Nothing secret before confirmation.** [`Inviter::welcome`], which wraps
//!   the account state for the joiner, refuses until [`Inviter::confirm`]
//!   succeeded.
//!
//! When a call returns an error that the other side should hear about,
//! [`Error::refusal`] gives the reason to send back as [`Message::Refused`].

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::identity::DeviceId;
use crate::ticket::Invitation;

/// Largest [`Message::Welcome`] payload, in bytes.
pub const MAX_WELCOME_LEN: usize = 1 << 20;

/// Largest encoded message, in bytes: the largest welcome and its framing.
pub const MAX_MESSAGE_LEN: usize = MAX_WELCOME_LEN + 16;

/// Length of the random nonce each side contributes.
pub const NONCE_LEN: usize = 32;

/// Length of a proof (a keyed blake3 hash).
pub const PROOF_LEN: usize = 32;

const TRANSCRIPT_CONTEXT: &str = "hearth 2026 pairing v1 transcript";
const PROOF_KEY_CONTEXT: &str = "hearth 2026 pairing v1 proof key";
const CODE_KEY_CONTEXT: &str = "hearth 2026 pairing v1 check code key";
const INVITER_LABEL: &[u8] = b"hearth pair inviter";
const JOINER_LABEL: &[u8] = b"hearth pair joiner";

/// Why a pairing step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The invitation expired.
    #[error("the invitation has expired; create a new one with `hearth pair`")]
    Expired,
    /// The invitation was already used, burned by a wrong code, or closed.
    #[error("the invitation was already used or cancelled; create a new one with `hearth pair`")]
    AlreadyUsed,
    /// Another device is pairing with this invitation.
    #[error("another device is already pairing with this invitation; try again when it is done")]
    Busy,
    /// The other side does not hold the invitation secret.
    #[error(
        "the other device does not hold this invitation's secret; check the ticket was copied whole from the inviting device"
    )]
    WrongProof,
    /// The typed check code does not match; the invitation is burned.
    #[error(
        "the check code does not match the one on the new device; the invitation is cancelled, start again with `hearth pair`"
    )]
    WrongCode,
    /// The typed text is not a 6-digit code.
    #[error("a check code is 6 digits, as shown on the new device")]
    InvalidCode,
    /// No device has proved itself yet, so there is no code to confirm.
    #[error("no device is waiting for confirmation yet")]
    NothingToConfirm,
    /// The welcome was asked for before the person confirmed the code.
    #[error("the pairing is not confirmed yet; nothing secret may be sent")]
    NotConfirmed,
    /// A message arrived that does not fit the current step.
    #[error("unexpected {got} message while {state}")]
    UnexpectedMessage {
        /// The kind of message received.
        got: &'static str,
        /// What the machine was doing.
        state: &'static str,
    },
    /// The authenticated peer is not the device the message or ticket names.
    #[error("the connected device {connected} is not {claimed}, the device expected")]
    PeerMismatch {
        /// The device the transport authenticated.
        connected: DeviceId,
        /// The device named in the message or the ticket.
        claimed: DeviceId,
    },
    /// The joiner is the inviter itself.
    #[error("a device cannot pair with itself; read the ticket on the new device")]
    OwnDevice,
    /// An encoded message is larger than [`MAX_MESSAGE_LEN`].
    #[error("pairing message is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Length received.
        len: usize,
        /// [`MAX_MESSAGE_LEN`].
        max: usize,
    },
    /// A welcome payload is larger than [`MAX_WELCOME_LEN`].
    #[error("welcome payload is {len} bytes long; at most {max} are allowed")]
    WelcomeTooLarge {
        /// Length of the payload.
        len: usize,
        /// [`MAX_WELCOME_LEN`].
        max: usize,
    },
    /// The bytes are not a pairing message.
    #[error("malformed pairing message: {0}")]
    Malformed(#[from] postcard::Error),
    /// Bytes follow a well-formed message.
    #[error("malformed pairing message: unexpected bytes after the message")]
    TrailingBytes,
    /// The other side refused.
    #[error("the other device refused the pairing: {0}")]
    Refused(Refusal),
}

impl Error {
    /// The reason to send the other side in a [`Message::Refused`], or `None`
    /// when the error is local (a mistyped code format, a call out of order)
    /// or is itself the other side's refusal.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Expired => Some(Refusal::Expired),
            Error::AlreadyUsed => Some(Refusal::AlreadyUsed),
            Error::Busy => Some(Refusal::Busy),
            Error::WrongProof => Some(Refusal::WrongProof),
            Error::WrongCode => Some(Refusal::WrongCode),
            Error::PeerMismatch { .. } | Error::OwnDevice => Some(Refusal::PeerMismatch),
            Error::UnexpectedMessage { .. }
            | Error::TooLong { .. }
            | Error::WelcomeTooLarge { .. }
            | Error::Malformed(_)
            | Error::TrailingBytes => Some(Refusal::Protocol),
            Error::InvalidCode
            | Error::NothingToConfirm
            | Error::NotConfirmed
            | Error::Refused(_) => None,
        }
    }
}

/// Why one side refused, as sent in [`Message::Refused`]. A closed set, so a
/// peer cannot make the other side print arbitrary text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    /// The invitation expired.
    Expired,
    /// The invitation was used or cancelled.
    AlreadyUsed,
    /// Another device is pairing.
    Busy,
    /// The sender's proof of the secret did not verify.
    WrongProof,
    /// The person typed a different check code.
    WrongCode,
    /// The device ids do not match the connection or the ticket.
    PeerMismatch,
    /// A message out of order or malformed.
    Protocol,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Expired => "the invitation has expired; create a new one",
            Refusal::AlreadyUsed => {
                "the invitation was already used or cancelled; create a new one"
            }
            Refusal::Busy => "another device is pairing with this invitation",
            Refusal::WrongProof => "the ticket's secret does not match; copy the ticket again",
            Refusal::WrongCode => {
                "the check code typed on the inviting device did not match; create a new invitation"
            }
            Refusal::PeerMismatch => "the device ids do not match the connection",
            Refusal::Protocol => "a pairing message was out of order or malformed",
        })
    }
}

/// A pairing message. [`Message::encode`] and [`Message::decode`] give its
/// postcard wire form.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Joiner → inviter: opens the session.
    Hello {
        /// The joining device; must be the authenticated peer.
        joiner: DeviceId,
        /// The joiner's random nonce.
        nonce: [u8; NONCE_LEN],
    },
    /// Inviter → joiner: the inviter's nonce and its proof of the secret.
    Challenge {
        /// The inviter's random nonce.
        nonce: [u8; NONCE_LEN],
        /// `mac(k, "hearth pair inviter" ‖ transcript)`.
        proof: [u8; PROOF_LEN],
    },
    /// Joiner → inviter: the joiner's proof of the secret.
    Proof {
        /// `mac(k, "hearth pair joiner" ‖ transcript)`.
        proof: [u8; PROOF_LEN],
    },
    /// Inviter → joiner, after confirmation: the account state, opaque here.
    Welcome {
        /// At most [`MAX_WELCOME_LEN`] bytes.
        payload: Vec<u8>,
    },
    /// Either way: the session is over.
    Refused {
        /// Why.
        reason: Refusal,
    },
}

impl Message {
    /// The postcard encoding. A welcome above [`MAX_WELCOME_LEN`] encodes but
    /// does not decode; [`Inviter::welcome`] never builds one.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("pairing messages always encode into a Vec")
    }

    /// Decodes a message, refusing oversized, malformed or trailing input.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(Error::TooLong {
                len: bytes.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let (message, rest): (Message, _) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes);
        }
        if let Message::Welcome { payload } = &message {
            check_welcome_len(payload.len())?;
        }
        Ok(message)
    }

    /// The message kind, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Challenge { .. } => "challenge",
            Message::Proof { .. } => "proof",
            Message::Welcome { .. } => "welcome",
            Message::Refused { .. } => "refused",
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Hello { joiner, .. } => f
                .debug_struct("Hello")
                .field("joiner", joiner)
                .finish_non_exhaustive(),
            Message::Challenge { .. } => f.debug_struct("Challenge").finish_non_exhaustive(),
            Message::Proof { .. } => f.debug_struct("Proof").finish_non_exhaustive(),
            // The payload carries account secrets; show only its size.
            Message::Welcome { payload } => f
                .debug_struct("Welcome")
                .field("len", &payload.len())
                .finish(),
            Message::Refused { reason } => {
                f.debug_struct("Refused").field("reason", reason).finish()
            }
        }
    }
}

fn check_welcome_len(len: usize) -> Result<(), Error> {
    if len > MAX_WELCOME_LEN {
        return Err(Error::WelcomeTooLarge {
            len,
            max: MAX_WELCOME_LEN,
        });
    }
    Ok(())
}

/// The 6-digit check code both sides derive; shown zero-padded (`004217`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckCode(u32);

impl CheckCode {
    /// Number of digits.
    pub const DIGITS: usize = 6;

    /// Reads a typed code: exactly 6 digits, with spaces and hyphens ignored
    /// (`123 456`, `123-456`).
    pub fn parse(text: &str) -> Result<Self, Error> {
        // Bounded so a pasted essay is not scanned.
        if text.len() > 32 {
            return Err(Error::InvalidCode);
        }
        let mut value = 0u32;
        let mut digits = 0;
        for c in text.chars().filter(|c| !c.is_whitespace() && *c != '-') {
            let d = c.to_digit(10).ok_or(Error::InvalidCode)?;
            digits += 1;
            if digits > Self::DIGITS {
                return Err(Error::InvalidCode);
            }
            value = value * 10 + d;
        }
        if digits != Self::DIGITS {
            return Err(Error::InvalidCode);
        }
        Ok(Self(value))
    }

    /// The code as a number below 10⁶.
    pub fn value(&self) -> u32 {
        self.0
    }
}

impl fmt::Display for CheckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

impl fmt::Debug for CheckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckCode({self})")
    }
}

/// The hash binding one session: account, both devices, both nonces, expiry.
fn transcript(
    invitation: &Invitation,
    joiner: &DeviceId,
    joiner_nonce: &[u8; NONCE_LEN],
    inviter_nonce: &[u8; NONCE_LEN],
) -> [u8; 32] {
    // Every field has a fixed length, so plain concatenation is unambiguous.
    let mut h = blake3::Hasher::new_derive_key(TRANSCRIPT_CONTEXT);
    h.update(invitation.account().as_bytes());
    h.update(invitation.inviter().as_bytes());
    h.update(joiner.as_bytes());
    h.update(joiner_nonce);
    h.update(inviter_nonce);
    h.update(&invitation.expires_at_ms().to_le_bytes());
    *h.finalize().as_bytes()
}

fn proof(invitation: &Invitation, label: &[u8], transcript: &[u8; 32]) -> blake3::Hash {
    let key = Zeroizing::new(blake3::derive_key(PROOF_KEY_CONTEXT, invitation.secret()));
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(label);
    h.update(transcript);
    h.finalize()
}

/// Constant-time check of a received proof: `blake3::Hash` equality is
/// constant-time, unlike byte-array equality.
fn proof_matches(received: &[u8; PROOF_LEN], expected: &blake3::Hash) -> bool {
    blake3::Hash::from_bytes(*received) == *expected
}

fn check_code(invitation: &Invitation, transcript: &[u8; 32]) -> CheckCode {
    let key = Zeroizing::new(blake3::derive_key(CODE_KEY_CONTEXT, invitation.secret()));
    let hash = blake3::keyed_hash(&key, transcript);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    // 2⁶⁴ mod 10⁶ is tiny next to 2⁶⁴, so the reduction bias is negligible.
    let code = u64::from_le_bytes(first) % 1_000_000;
    CheckCode(u32::try_from(code).expect("a value below 10^6 fits in u32"))
}

fn random_nonce(rng: &mut (impl CryptoRng + RngCore)) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    nonce
}

fn unexpected(message: &Message, state: &'static str) -> Error {
    Error::UnexpectedMessage {
        got: message.kind(),
        state,
    }
}

/// What the inviter's caller does next after [`Inviter::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviterEvent {
    /// Send this message to the joiner.
    Send(Message),
    /// The joiner proved the secret; ask the person to type the code the new
    /// device shows, then call [`Inviter::confirm`].
    AwaitingConfirmation {
        /// The device waiting to join.
        joiner: DeviceId,
        /// The code it shows (for tests and logs; never display it on the
        /// inviter, or the check proves nothing).
        code: CheckCode,
    },
}

/// A confirmed pairing: the person typed the right code in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    /// The device to add to the membership log and send the account state.
    pub joiner: DeviceId,
}

#[derive(Debug)]
enum InviterState {
    Open,
    Challenged {
        joiner: DeviceId,
        transcript: [u8; 32],
    },
    AwaitingConfirmation {
        joiner: DeviceId,
        code: CheckCode,
    },
    Confirmed {
        joiner: DeviceId,
    },
    Closed,
}

impl InviterState {
    fn describe(&self) -> &'static str {
        match self {
            InviterState::Open => "waiting for a joining device",
            InviterState::Challenged { .. } => "waiting for the joining device's proof",
            InviterState::AwaitingConfirmation { .. } => "waiting for the check code",
            InviterState::Confirmed { .. } => "confirmed and waiting to send the welcome",
            InviterState::Closed => "the invitation is closed",
        }
    }

    fn joiner(&self) -> Option<DeviceId> {
        match self {
            InviterState::Challenged { joiner, .. }
            | InviterState::AwaitingConfirmation { joiner, .. }
            | InviterState::Confirmed { joiner } => Some(*joiner),
            InviterState::Open | InviterState::Closed => None,
        }
    }
}

/// The inviting device's side of one invitation.
#[derive(Debug)]
pub struct Inviter {
    invitation: Invitation,
    state: InviterState,
}

impl Inviter {
    /// Starts waiting for a joiner on `invitation` (whose inviter is this
    /// device).
    pub fn new(invitation: Invitation) -> Self {
        Self {
            invitation,
            state: InviterState::Open,
        }
    }

    /// The invitation being served.
    pub fn invitation(&self) -> &Invitation {
        &self.invitation
    }

    /// The device currently pairing or confirmed, if any.
    pub fn joiner(&self) -> Option<DeviceId> {
        self.state.joiner()
    }

    /// Whether the invitation is finished (used, burned or expired) and the
    /// node may forget it.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, InviterState::Closed)
    }

    /// Handles `message` from the authenticated device `peer`.
    pub fn handle(
        &mut self,
        peer: DeviceId,
        message: Message,
        now_ms: u64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<InviterEvent, Error> {
        let active = self.state.joiner();
        if matches!(self.state, InviterState::Closed) {
            return Err(Error::AlreadyUsed);
        }
        match message {
            Message::Hello { joiner, nonce } => {
                if joiner != peer {
                    return Err(Error::PeerMismatch {
                        connected: peer,
                        claimed: joiner,
                    });
                }
                match active {
                    Some(active) if active == peer => {
                        return Err(Error::UnexpectedMessage {
                            got: "hello",
                            state: self.state.describe(),
                        });
                    }
                    Some(_) if matches!(self.state, InviterState::Confirmed { .. }) => {
                        return Err(Error::AlreadyUsed);
                    }
                    Some(_) => return Err(Error::Busy),
                    None => {}
                }
                self.check_expiry(now_ms)?;
                if joiner == self.invitation.inviter() {
                    return Err(Error::OwnDevice);
                }
                let inviter_nonce = random_nonce(rng);
                let transcript = transcript(&self.invitation, &joiner, &nonce, &inviter_nonce);
                let proof = proof(&self.invitation, INVITER_LABEL, &transcript);
                self.state = InviterState::Challenged { joiner, transcript };
                Ok(InviterEvent::Send(Message::Challenge {
                    nonce: inviter_nonce,
                    proof: *proof.as_bytes(),
                }))
            }
            Message::Proof { proof: received } => {
                let InviterState::Challenged { joiner, transcript } = self.state else {
                    return Err(self.not_now(peer, &Message::Proof { proof: received }));
                };
                if peer != joiner {
                    return Err(Error::Busy);
                }
                self.check_expiry(now_ms)?;
                let expected = proof(&self.invitation, JOINER_LABEL, &transcript);
                if !proof_matches(&received, &expected) {
                    self.state = InviterState::Open;
                    return Err(Error::WrongProof);
                }
                let code = check_code(&self.invitation, &transcript);
                self.state = InviterState::AwaitingConfirmation { joiner, code };
                Ok(InviterEvent::AwaitingConfirmation { joiner, code })
            }
            Message::Refused { reason } => match self.state {
                InviterState::Challenged { joiner, .. }
                | InviterState::AwaitingConfirmation { joiner, .. }
                    if joiner == peer =>
                {
                    // The joiner gave up (wrong ticket, cancelled): let
                    // another attempt use the invitation.
                    self.state = InviterState::Open;
                    Err(Error::Refused(reason))
                }
                _ => Err(self.not_now(peer, &Message::Refused { reason })),
            },
            other @ (Message::Challenge { .. } | Message::Welcome { .. }) => {
                Err(unexpected(&other, self.state.describe()))
            }
        }
    }

    /// The error for a message that does not fit the current state: `Busy`
    /// for a device other than the active joiner, unexpected otherwise.
    fn not_now(&self, peer: DeviceId, message: &Message) -> Error {
        match self.state.joiner() {
            Some(active) if active != peer => Error::Busy,
            _ => unexpected(message, self.state.describe()),
        }
    }

    fn check_expiry(&mut self, now_ms: u64) -> Result<(), Error> {
        if self.invitation.is_expired(now_ms) {
            self.state = InviterState::Closed;
            return Err(Error::Expired);
        }
        Ok(())
    }

    /// The person typed `code` on this device. The right code in time confirms
    /// the joiner; a wrong one burns the invitation (see the module docs).
    pub fn confirm(&mut self, code: &str, now_ms: u64) -> Result<Confirmed, Error> {
        let (joiner, expected) = match self.state {
            InviterState::AwaitingConfirmation { joiner, code } => (joiner, code),
            InviterState::Confirmed { .. } | InviterState::Closed => {
                return Err(Error::AlreadyUsed);
            }
            InviterState::Open | InviterState::Challenged { .. } => {
                return Err(Error::NothingToConfirm);
            }
        };
        self.check_expiry(now_ms)?;
        let typed = CheckCode::parse(code)?;
        // One try only, so timing reveals nothing worth hiding here.
        if typed != expected {
            self.state = InviterState::Closed;
            return Err(Error::WrongCode);
        }
        self.state = InviterState::Confirmed { joiner };
        Ok(Confirmed { joiner })
    }

    /// Wraps the account state for the confirmed joiner and closes the
    /// invitation. Refused before confirmation.
    pub fn welcome(&mut self, payload: Vec<u8>) -> Result<Message, Error> {
        match self.state {
            InviterState::Confirmed { .. } => {
                check_welcome_len(payload.len())?;
                self.state = InviterState::Closed;
                Ok(Message::Welcome { payload })
            }
            InviterState::Closed => Err(Error::AlreadyUsed),
            _ => Err(Error::NotConfirmed),
        }
    }
}

/// What the joiner's caller does next after [`Joiner::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinerEvent {
    /// The inviter proved the secret: send `reply` and show `code` to the
    /// person, who types it on the inviting device.
    ShowCode {
        /// The [`Message::Proof`] to send.
        reply: Message,
        /// The code to display.
        code: CheckCode,
    },
    /// The inviter confirmed and sent the account state. Pairing is done.
    Welcomed {
        /// The opaque account state.
        payload: Vec<u8>,
    },
}

#[derive(Debug)]
enum JoinerState {
    AwaitingChallenge,
    AwaitingWelcome { code: CheckCode },
    Done,
}

/// The new device's side of the handshake.
///
/// It takes no clock after [`Joiner::start`]: the inviter's clock is the one
/// that enforces the expiry.
#[derive(Debug)]
pub struct Joiner {
    invitation: Invitation,
    me: DeviceId,
    nonce: [u8; NONCE_LEN],
    state: JoinerState,
}

impl Joiner {
    /// Starts pairing as device `me` with the invitation read from a ticket;
    /// returns the [`Message::Hello`] to send to the inviter.
    pub fn start(
        invitation: Invitation,
        me: DeviceId,
        now_ms: u64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<(Self, Message), Error> {
        if invitation.is_expired(now_ms) {
            return Err(Error::Expired);
        }
        if me == invitation.inviter() {
            return Err(Error::OwnDevice);
        }
        let nonce = random_nonce(rng);
        let hello = Message::Hello { joiner: me, nonce };
        let joiner = Self {
            invitation,
            me,
            nonce,
            state: JoinerState::AwaitingChallenge,
        };
        Ok((joiner, hello))
    }

    /// The check code, once the inviter's proof verified.
    pub fn code(&self) -> Option<CheckCode> {
        match self.state {
            JoinerState::AwaitingWelcome { code } => Some(code),
            _ => None,
        }
    }

    /// Whether the handshake is over, welcomed or failed.
    pub fn is_done(&self) -> bool {
        matches!(self.state, JoinerState::Done)
    }

    /// Handles `message` from the authenticated device `peer`, which must be
    /// the inviter named in the ticket.
    pub fn handle(&mut self, peer: DeviceId, message: Message) -> Result<JoinerEvent, Error> {
        let inviter = self.invitation.inviter();
        if peer != inviter {
            return Err(Error::PeerMismatch {
                connected: peer,
                claimed: inviter,
            });
        }
        match (&self.state, message) {
            (
                JoinerState::AwaitingChallenge,
                Message::Challenge {
                    nonce,
                    proof: received,
                },
            ) => {
                let transcript = transcript(&self.invitation, &self.me, &self.nonce, &nonce);
                let expected = proof(&self.invitation, INVITER_LABEL, &transcript);
                if !proof_matches(&received, &expected) {
                    self.state = JoinerState::Done;
                    return Err(Error::WrongProof);
                }
                let reply = Message::Proof {
                    proof: *proof(&self.invitation, JOINER_LABEL, &transcript).as_bytes(),
                };
                let code = check_code(&self.invitation, &transcript);
                self.state = JoinerState::AwaitingWelcome { code };
                Ok(JoinerEvent::ShowCode { reply, code })
            }
            (JoinerState::AwaitingWelcome { .. }, Message::Welcome { payload }) => {
                check_welcome_len(payload.len())?;
                self.state = JoinerState::Done;
                Ok(JoinerEvent::Welcomed { payload })
            }
            (
                JoinerState::AwaitingChallenge | JoinerState::AwaitingWelcome { .. },
                Message::Refused { reason },
            ) => {
                self.state = JoinerState::Done;
                Err(Error::Refused(reason))
            }
            (state, other) => Err(unexpected(
                &other,
                match state {
                    JoinerState::AwaitingChallenge => "waiting for the inviter's challenge",
                    JoinerState::AwaitingWelcome { .. } => "waiting for the welcome",
                    JoinerState::Done => "the pairing is over",
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKey;
    use crate::membership::AccountId;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const NOW: u64 = 1_700_000_000_000;
    const EXPIRY: u64 = NOW + 120_000;

    fn id(n: u8) -> DeviceId {
        DeviceKey::from_bytes(&[n; 32]).id()
    }

    fn invitation(secret: u8) -> Invitation {
        Invitation::new(
            AccountId::from_bytes(&[1; 32]),
            id(1),
            vec!["/ip4/10.0.0.1/udp/4001/quic-v1".to_owned()],
            [secret; 16],
            EXPIRY,
        )
        .unwrap()
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    /// Runs the handshake up to the inviter awaiting confirmation.
    fn handshake(
        inviter: &mut Inviter,
        joiner_id: DeviceId,
        rng: &mut StdRng,
    ) -> (Joiner, CheckCode, CheckCode) {
        let (mut joiner, hello) = Joiner::start(invitation(9), joiner_id, NOW, rng).unwrap();
        let InviterEvent::Send(challenge) = inviter.handle(joiner_id, hello, NOW, rng).unwrap()
        else {
            panic!("expected a challenge");
        };
        let JoinerEvent::ShowCode { reply, code: shown } = joiner.handle(id(1), challenge).unwrap()
        else {
            panic!("expected a code");
        };
        let InviterEvent::AwaitingConfirmation { joiner: j, code } =
            inviter.handle(joiner_id, reply, NOW + 1, rng).unwrap()
        else {
            panic!("expected confirmation");
        };
        assert_eq!(j, joiner_id);
        (joiner, shown, code)
    }

    #[test]
    fn happy_path_agrees_on_the_code_and_welcomes() {
        let mut rng = rng();
        let mut inviter = Inviter::new(invitation(9));
        let (mut joiner, shown, code) = handshake(&mut inviter, id(2), &mut rng);
        assert_eq!(shown, code);
        assert_eq!(joiner.code(), Some(code));
        assert_eq!(shown.to_string().len(), 6);
        assert!(matches!(inviter.welcome(vec![1]), Err(Error::NotConfirmed)));
        let typed = format!(" {} ", shown);
        assert_eq!(
            inviter.confirm(&typed, NOW + 2).unwrap(),
            Confirmed { joiner: id(2) }
        );
        let welcome = inviter.welcome(b"state".to_vec()).unwrap();
        let welcome = Message::decode(&welcome.encode()).unwrap();
        assert_eq!(
            joiner.handle(id(1), welcome).unwrap(),
            JoinerEvent::Welcomed {
                payload: b"state".to_vec()
            }
        );
        assert!(joiner.is_done());
        assert!(inviter.is_closed());
    }

    #[test]
    fn replayed_hello_after_completion_is_refused() {
        let mut rng = rng();
        let mut inviter = Inviter::new(invitation(9));
        let (_, hello) = Joiner::start(invitation(9), id(2), NOW, &mut rng).unwrap();

        let (_, code, _) = handshake(&mut inviter, id(2), &mut rng);
        inviter.confirm(&code.to_string(), NOW + 2).unwrap();
        // Confirmed, welcome not yet sent: used for everyone else.
        let other = Message::Hello {
            joiner: id(3),
            nonce: [0; 32],
        };
        assert!(matches!(
            inviter.handle(id(3), other.clone(), NOW + 3, &mut rng),
            Err(Error::AlreadyUsed)
        ));
        inviter.welcome(vec![]).unwrap();
        // After the welcome: the replayed hello and any new one are refused.
        let err = inviter.handle(id(2), hello, NOW + 3, &mut rng).unwrap_err();
        assert!(matches!(err, Error::AlreadyUsed));
        assert_eq!(err.refusal(), Some(Refusal::AlreadyUsed));
        assert!(matches!(
            inviter.handle(id(3), other, NOW + 3, &mut rng),
            Err(Error::AlreadyUsed)
        ));
        assert!(matches!(
            inviter.confirm(&code.to_string(), NOW + 3),
            Err(Error::AlreadyUsed)
        ));
    }

    #[test]
    fn expired_invitation_is_refused_everywhere() {
        let mut rng = rng();
        assert!(matches!(
            Joiner::start(invitation(9), id(2), EXPIRY, &mut rng),
            Err(Error::Expired)
        ));
        // Hello after expiry.
        let (_, hello) = Joiner::start(invitation(9), id(2), NOW, &mut rng).unwrap();
        let mut inviter = Inviter::new(invitation(9));
        let err = inviter.handle(id(2), hello, EXPIRY, &mut rng).unwrap_err();
        assert!(matches!(err, Error::Expired));
        assert_eq!(err.refusal(), Some(Refusal::Expired));
        assert!(inviter.is_closed());
        // Confirmation after expiry.
        let mut inviter = Inviter::new(invitation(9));
        let (_, code, _) = handshake(&mut inviter, id(2), &mut rng);
        assert!(matches!(
            inviter.confirm(&code.to_string(), EXPIRY + 5),
            Err(Error::Expired)
        ));
        assert!(matches!(inviter.welcome(vec![]), Err(Error::AlreadyUsed)));
    }

    #[test]
    fn wrong_secret_fails_on_the_joiner_side() {
        let mut rng = rng();
        let mut inviter = Inviter::new(invitation(9));
        let (mut joiner, hello) = Joiner::start(invitation(8), id(2), NOW, &mut rng).unwrap();
        let InviterEvent::Send(challenge) = inviter.handle(id(2), hello, NOW, &mut rng).unwrap()
        else {
            panic!("expected a challenge");
        };
        let err = joiner.handle(id(1), challenge).unwrap_err();
        assert!(matches!(err, Error::WrongProof));
        // The joiner tells the inviter, which reopens for the right device.
        let refused = Message::Refused {
            reason: err.refusal().unwrap(),
        };
        assert!(matches!(
            inviter.handle(id(2), refused, NOW, &mut rng),
            Err(Error::Refused(Refusal::WrongProof))
        ));
        assert_eq!(inviter.joiner(), None);
        let (_, shown, code) = handshake(&mut inviter, id(3), &mut rng);
        assert_eq!(shown, code);
    }

    #[test]
    fn wrong_secret_fails_on_the_inviter_side() {
        let mut rng = rng();
        let mut inviter = Inviter::new(invitation(9));
        let (_, hello) = Joiner::start(invitation(9), id(2), NOW, &mut rng).unwrap();
        inviter.handle(id(2), hello, NOW, &mut rng).unwrap();
        // A joiner that skips verifying and sends a proof it cannot compute.
        let err = inviter
            .handle(id(2), Message::Proof { proof: [5; 32] }, NOW, &mut rng)
            .unwrap_err();
        assert!(matches!(err, Error::WrongProof));
        assert!(matches!(
            inviter.confirm("000000", NOW),
            Err(Error::NothingToConfirm)
        ));
        // The attempt is over; a fresh one can start.
        assert_eq!(inviter.joiner(), None);
        assert!(!inviter.is_closed());
    }

    #[test]
    fn wrong_code_burns_the_invitation() {
        let mut rng = rng();
        let mut inviter = Inviter::new(invitation(9));
        let (_, _, code) = handshake(&mut inviter, id(2), &mut rng);
        assert!(matches!(
            inviter.confirm("12345", NOW),
            Err(Error::InvalidCode)
        ));
        assert!(matches!(
            inviter.confirm("12a456", NOW),
            Err(Error::InvalidCode)
        ));
        let wrong = CheckCode((code.value() + 1) % 1_000_000).to_string();
        let err = inviter.confirm(&wrong, NOW).unwrap_err();
        assert!(matches!(err, Error::WrongCode));
        assert_eq!(err.refusal(), Some(Refusal::WrongCode));
        assert!(inviter.is_closed());
        assert!(matches!(
            inviter.confirm(&code.to_string(), NOW),
            Err(Error::AlreadyUsed)
        ));
        assert!(matches!(inviter.welcome(vec![]), Err(Error::AlreadyUsed)));
    }

    #[test]
    fn second_joiner_is_refused_while_one_is_in_progress() {
        let mut rng = rng();
        let mut inviter = Inviter::new(invitation(9));
        let (_, first) = Joiner::start(invitation(9), id(2), NOW, &mut rng).unwrap();
        let (mut second, racing) = Joiner::start(invitation(9), id(3), NOW, &mut rng).unwrap();
        inviter.handle(id(2), first, NOW, &mut rng).unwrap();
        let err = inviter
            .handle(id(3), racing.clone(), NOW, &mut rng)
            .unwrap_err();
        assert!(matches!(err, Error::Busy));
        assert_eq!(err.refusal(), Some(Refusal::Busy));
        assert!(matches!(
            inviter.handle(id(3), Message::Proof { proof: [0; 32] }, NOW, &mut rng),
            Err(Error::Busy)
        ));
        assert_eq!(inviter.joiner(), Some(id(2)));
        assert!(matches!(
            second.handle(
                id(1),
                Message::Refused {
                    reason: Refusal::Busy
                }
            ),
            Err(Error::Refused(Refusal::Busy))
        ));
        assert!(second.is_done());
    }

    #[test]
    fn peer_id_mismatch_is_refused() {
        let mut rng = rng();
        let mut inviter = Inviter::new(invitation(9));
        let (mut joiner, hello) = Joiner::start(invitation(9), id(2), NOW, &mut rng).unwrap();
        let err = inviter
            .handle(id(3), hello.clone(), NOW, &mut rng)
            .unwrap_err();
        assert!(
            matches!(err, Error::PeerMismatch { connected, claimed } if connected == id(3) && claimed == id(2))
        );
        assert_eq!(inviter.joiner(), None);
        let InviterEvent::Send(challenge) = inviter.handle(id(2), hello, NOW, &mut rng).unwrap()
        else {
            panic!("expected a challenge");
        };
        assert!(matches!(
            joiner.handle(id(4), challenge.clone()),
            Err(Error::PeerMismatch { .. })
        ));
        // The mismatch changed nothing: the real inviter still gets through.
        assert!(joiner.handle(id(1), challenge).is_ok());
        // A device cannot invite itself.
        assert!(matches!(
            Joiner::start(invitation(9), id(1), NOW, &mut rng),
            Err(Error::OwnDevice)
        ));
    }

    #[test]
    fn out_of_order_messages_are_unexpected() {
        let mut rng = rng();
        let mut inviter = Inviter::new(invitation(9));
        assert!(matches!(
            inviter.handle(id(2), Message::Proof { proof: [0; 32] }, NOW, &mut rng),
            Err(Error::UnexpectedMessage { got: "proof", .. })
        ));
        assert!(matches!(
            inviter.handle(id(2), Message::Welcome { payload: vec![] }, NOW, &mut rng),
            Err(Error::UnexpectedMessage { got: "welcome", .. })
        ));
        let (mut joiner, _) = Joiner::start(invitation(9), id(2), NOW, &mut rng).unwrap();
        assert!(matches!(
            joiner.handle(id(1), Message::Welcome { payload: vec![] }),
            Err(Error::UnexpectedMessage { got: "welcome", .. })
        ));
    }

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let messages = [
            Message::Hello {
                joiner: id(2),
                nonce: [3; 32],
            },
            Message::Challenge {
                nonce: [4; 32],
                proof: [5; 32],
            },
            Message::Proof { proof: [6; 32] },
            Message::Welcome {
                payload: vec![7; 100],
            },
            Message::Refused {
                reason: Refusal::WrongCode,
            },
        ];
        for m in messages {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
            let mut trailing = m.encode();
            trailing.push(0);
            assert!(matches!(
                Message::decode(&trailing),
                Err(Error::TrailingBytes)
            ));
        }
        assert!(matches!(Message::decode(&[]), Err(Error::Malformed(_))));
        assert!(matches!(Message::decode(&[9, 9]), Err(Error::Malformed(_))));
        let huge = vec![0; MAX_MESSAGE_LEN + 1];
        assert!(matches!(Message::decode(&huge), Err(Error::TooLong { .. })));
        let big = Message::Welcome {
            payload: vec![0; MAX_WELCOME_LEN + 1],
        };
        assert!(matches!(
            Message::decode(&big.encode()),
            Err(Error::WelcomeTooLarge { .. })
        ));
    }

    #[test]
    fn check_codes_parse_and_print() {
        assert_eq!(CheckCode::parse("004217").unwrap().to_string(), "004217");
        assert_eq!(CheckCode::parse("123 456").unwrap().value(), 123_456);
        assert_eq!(CheckCode::parse("123-456").unwrap().value(), 123_456);
        for bad in ["", "12345", "1234567", "12345x", "١٢٣٤٥٦", &"1".repeat(40)] {
            assert!(
                matches!(CheckCode::parse(bad), Err(Error::InvalidCode)),
                "{bad}"
            );
        }
    }

    #[test]
    fn welcome_is_bounded() {
        let mut rng = rng();
        let mut inviter = Inviter::new(invitation(9));
        let (_, code, _) = handshake(&mut inviter, id(2), &mut rng);
        inviter.confirm(&code.to_string(), NOW).unwrap();
        assert!(matches!(
            inviter.welcome(vec![0; MAX_WELCOME_LEN + 1]),
            Err(Error::WelcomeTooLarge { .. })
        ));
        assert!(inviter.welcome(vec![0; MAX_WELCOME_LEN]).is_ok());
    }
}
