//! Pairing, the core's side: the rules of a new invitation and the inviting
//! device's flow.
//!
//! - [`Node::invite`] makes the one-time invitation a new device joins with:
//!   the account, this device, the addresses it can be dialled at and a
//!   fresh 128-bit secret from the RNG, valid for a bounded time.
//! - [`Inviting`] holds the one open invitation and the attempt using it:
//!   the join request (bounded, cleaned name), the hello, the proof, the
//!   wait for the person's code, the welcome, and how the invitation ended.
//!   The handshake's cryptography is `hearth_crypto::pairing`'s state
//!   machines.
//! - The node holds that flow ([`Node::inviting`]): [`Node::invite`] opens
//!   it, and every step a driver takes on it goes through the node, with the
//!   time of that call. The daemon's `pairing` module and the simulator
//!   carry the frames and keep no flow state of their own.
//! - Admitting the device once its code is confirmed is [`Node::admit`]:
//!   the membership change, whose batch must be durable before the welcome
//!   it returns leaves.

use hearth_crypto::identity::DeviceId;
use hearth_crypto::membership::clean_device_name;
use hearth_crypto::pairing::{
    self as handshake, Confirmed, Inviter, InviterEvent, Message, Refusal,
};
use hearth_crypto::ticket::{self, Invitation};
use rand_core::{CryptoRng, RngCore};

use super::{Millis, Node, Outputs};

/// Shortest life of an invitation, in seconds.
pub const MIN_TTL_S: u64 = 1;
/// Longest life of an invitation, in seconds: an hour.
pub const MAX_TTL_S: u64 = 3600;
/// Life of an invitation when none is asked for, in seconds.
pub const DEFAULT_TTL_S: u64 = 120;

/// Why an invitation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The asked life is out of bounds.
    #[error(
        "ttl of {ttl} s refused: an invitation lives between {MIN_TTL_S} and {MAX_TTL_S} seconds"
    )]
    Ttl {
        /// The asked life, seconds.
        ttl: u64,
    },
    /// No address a new device could dial.
    #[error("this node listens on no address a new device could dial; check --listen")]
    NoAddress,
    /// The ticket refused its parts.
    #[error(transparent)]
    Ticket(#[from] ticket::Error),
}

impl Node {
    /// A new invitation to this account, valid `ttl_s` seconds from `now`,
    /// naming the first addresses of `addrs` a ticket can carry. It is the
    /// node's open invitation from now on; an older one is cancelled.
    pub fn invite(
        &mut self,
        now: Millis,
        rng: &mut (impl CryptoRng + RngCore),
        ttl_s: u64,
        addrs: Vec<String>,
    ) -> Result<Invitation, Error> {
        if !(MIN_TTL_S..=MAX_TTL_S).contains(&ttl_s) {
            return Err(Error::Ttl { ttl: ttl_s });
        }
        let addrs: Vec<String> = addrs
            .into_iter()
            .filter(|a| a.len() <= ticket::MAX_ADDR_LEN)
            .take(ticket::MAX_ADDRS)
            .collect();
        if addrs.is_empty() {
            return Err(Error::NoAddress);
        }
        let expires_at_ms = now.max(0) as u64 + ttl_s * 1000;
        let invitation = Invitation::generate(
            self.log.account_id(),
            self.key.id(),
            addrs,
            expires_at_ms,
            rng,
        )?;
        self.inviting.open(invitation.clone());
        Ok(invitation)
    }

    /// The inviting flow: the open invitation and the attempt using it.
    pub fn inviting(&mut self) -> &mut Inviting {
        &mut self.inviting
    }

    /// Admits the device of the confirmed attempt of `generation` to the
    /// account and makes its welcome, which carries the account's log. A
    /// device that is a member already (an earlier welcome was lost) is
    /// welcomed again.
    ///
    /// The outputs hold the membership change: the welcome may leave only
    /// once its batch is durable. A welcome that cannot be made after the
    /// device was added (the log outgrew a welcome) is the answer's error,
    /// with the outputs still to perform; the invitation then ended as
    /// [`Outcome::Failed`].
    pub fn admit(
        &mut self,
        now: Millis,
        generation: u64,
        peer: DeviceId,
    ) -> Result<(Result<Message, SessionError>, Outputs), super::Error> {
        let name = self
            .inviting
            .confirmed(now.max(0) as u64, generation, peer)?;
        // A device admitted by an earlier attempt whose welcome was lost
        // is welcomed again, with nothing to change.
        let added = if self.log.is_member(&peer) {
            Ok((std::sync::Arc::clone(&self.log), Outputs::default()))
        } else {
            self.add_device(now, peer, &name)
        };
        let (log, out) = match added {
            Ok(added) => added,
            Err(error) => {
                self.inviting.finish(
                    generation,
                    Outcome::Failed {
                        device: peer,
                        reason: format!("could not add the new device to the account: {error}"),
                    },
                );
                return Err(error);
            }
        };
        let welcome = self.inviting.welcome(generation, peer, log.encode());
        Ok((welcome, out))
    }
}

// ---------------------------------------------------------------------------
// The inviting side's flow: one open invitation and the attempt using it.

/// Longest frame the inviter reads from a joiner. Hello, Proof and Refused
/// are all under 100 bytes; the join request is a name of at most
/// [`MAX_DEVICE_NAME_LEN`](hearth_crypto::membership::MAX_DEVICE_NAME_LEN)
/// bytes. Unauthenticated peers get no more.
pub const MAX_JOINER_FRAME: usize = 256;

/// Why a step of the inviting side failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A handshake step failed, or the other side refused.
    #[error("{0}")]
    Handshake(#[from] handshake::Error),
    /// A frame longer than the bound for this step.
    #[error("pairing frame of {len} bytes refused; at most {max} are allowed")]
    FrameTooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The joiner's first frame is not a join request.
    #[error("malformed join request: {0}")]
    JoinRequest(#[source] postcard::Error),
    /// No invitation is open.
    #[error("no invitation is open; create one with `hearth pair`")]
    NoInvitation,
    /// A code was typed but no device has proved the secret.
    #[error("no device is waiting for a check code")]
    NothingWaiting,
    /// The invitation was cancelled or replaced by a newer one mid-session.
    #[error("the invitation was cancelled or replaced by a newer one")]
    Cancelled,
}

impl SessionError {
    /// What to tell the joiner before closing, if anything.
    pub fn refusal_to_send(&self) -> Option<Refusal> {
        match self {
            SessionError::Handshake(e) => e.refusal(),
            SessionError::FrameTooLong { .. } | SessionError::JoinRequest(_) => {
                Some(Refusal::Protocol)
            }
            SessionError::NoInvitation | SessionError::Cancelled => Some(Refusal::AlreadyUsed),
            SessionError::NothingWaiting => None,
        }
    }
}

/// The joiner's first frame: the name to record the device under.
#[derive(serde::Serialize, serde::Deserialize)]
struct JoinRequest {
    name: String,
}

/// The joiner's first frame for `name` (cleaned, as the inviter records it).
pub fn encode_join_request(name: &str) -> Vec<u8> {
    let request = JoinRequest {
        name: clean_device_name(name),
    };
    // A struct of one string always encodes.
    postcard::to_stdvec(&request).unwrap_or_default()
}

/// The name in a joiner's first frame, bounded and cleaned: the peer's word
/// is not trusted to be clean.
pub fn decode_join_request(bytes: &[u8]) -> Result<String, SessionError> {
    if bytes.len() > MAX_JOINER_FRAME {
        return Err(SessionError::FrameTooLong {
            len: bytes.len(),
            max: MAX_JOINER_FRAME,
        });
    }
    let (request, rest): (JoinRequest, _) =
        postcard::take_from_bytes(bytes).map_err(SessionError::JoinRequest)?;
    if !rest.is_empty() {
        return Err(SessionError::JoinRequest(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(clean_device_name(&request.name))
}

/// A device that joined through an invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The new device.
    pub device: DeviceId,
    /// Its name, cleaned.
    pub name: String,
}

/// How an invitation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The device was admitted and received its welcome.
    Joined(Joined),
    /// The invitation was burnt; today only by a wrong check code.
    Refused(Refusal),
    /// Nobody completed the pairing before the expiry.
    Expired,
    /// A newer invitation replaced it, or it was cancelled.
    Cancelled,
    /// The code was confirmed but admitting the device or delivering its
    /// welcome failed.
    Failed {
        /// The confirmed device.
        device: DeviceId,
        /// What went wrong, for the person.
        reason: String,
    },
}

/// What `hearth pair` shows while an invitation is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInfo {
    /// The device in the attempt in progress, if one has connected.
    pub joiner: Option<DeviceId>,
    /// Its name, from its join request.
    pub name: Option<String>,
    /// Whether the device proved the secret and its check code is awaited.
    pub code_needed: bool,
    /// When the invitation expires (ms since the Unix epoch).
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Challenged,
    AwaitingCode,
    Confirmed,
}

#[derive(Debug)]
struct Attempt {
    joiner: DeviceId,
    name: String,
    stage: Stage,
}

#[derive(Debug)]
struct Current {
    /// Tells sessions of a replaced invitation apart from the current one.
    generation: u64,
    inviter: Inviter,
    attempt: Option<Attempt>,
    outcome: Option<Outcome>,
}

impl Current {
    /// Records the expiry once `now` passes it; returns whether it did.
    fn settle(&mut self, now_ms: u64) -> bool {
        if self.outcome.is_none() && self.inviter.invitation().is_expired(now_ms) {
            self.outcome = Some(Outcome::Expired);
            return true;
        }
        false
    }

    /// Records how the invitation ended after a handshake error that closed it.
    fn record_closing(&mut self, error: &handshake::Error) {
        if self.outcome.is_some() || !self.inviter.is_closed() {
            return;
        }
        self.outcome = Some(match error {
            handshake::Error::Expired => Outcome::Expired,
            handshake::Error::WrongCode => Outcome::Refused(Refusal::WrongCode),
            // Other closing errors do not exist today; a closed invitation
            // with no recorded outcome is still over.
            _ => Outcome::Cancelled,
        });
    }
}

/// The error a session sees for an invitation that already ended.
fn ended(outcome: &Outcome) -> SessionError {
    match outcome {
        Outcome::Expired => handshake::Error::Expired.into(),
        Outcome::Cancelled => SessionError::Cancelled,
        Outcome::Joined(_) | Outcome::Refused(_) | Outcome::Failed { .. } => {
            handshake::Error::AlreadyUsed.into()
        }
    }
}

/// The local error matching a refusal the inviter decided on.
fn refusal_error(reason: Refusal) -> handshake::Error {
    match reason {
        Refusal::Expired => handshake::Error::Expired,
        Refusal::AlreadyUsed => handshake::Error::AlreadyUsed,
        Refusal::Busy => handshake::Error::Busy,
        Refusal::WrongProof => handshake::Error::WrongProof,
        Refusal::WrongCode => handshake::Error::WrongCode,
        Refusal::PeerMismatch | Refusal::Protocol => handshake::Error::Refused(reason),
    }
}

/// Where an attempt stands while its joiner waits for the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Still waiting, at most this many ms (until the expiry).
    For(u64),
    /// The right code was typed: admit the device and welcome it.
    Confirmed,
}

/// The inviting device's one open invitation and the attempt using it: the
/// rules of the flow, as the daemon and the simulator both run them.
///
/// - Opening a new invitation cancels the old one; a session of the old one
///   learns it from its `generation`.
/// - The first device whose hello arrives holds the invitation; others get
///   `Busy` (from [`Inviter`]). A wrong proof, or a joiner that leaves before
///   its code is confirmed ([`Inviting::abandon`]), frees it again.
/// - A wrong code burns the invitation ([`Outcome::Refused`]); the expiry
///   ends it ([`Outcome::Expired`]). Only a confirmed attempt gets a welcome.
#[derive(Debug, Default)]
pub struct Inviting {
    next_generation: u64,
    current: Option<Current>,
}

impl Inviting {
    /// Opens `invitation`, cancelling any older one; returns its generation.
    pub fn open(&mut self, invitation: Invitation) -> u64 {
        self.next_generation += 1;
        self.current = Some(Current {
            generation: self.next_generation,
            inviter: Inviter::new(invitation),
            attempt: None,
            outcome: None,
        });
        self.next_generation
    }

    /// Cancels the open invitation; returns whether one was open.
    pub fn cancel(&mut self) -> bool {
        match self.current.as_mut() {
            Some(current) if current.outcome.is_none() => {
                current.outcome = Some(Outcome::Cancelled);
                true
            }
            _ => false,
        }
    }

    /// The open invitation at `now`, or `None` when none is (never opened,
    /// or ended).
    pub fn status(&mut self, now_ms: u64) -> Option<PendingInfo> {
        let current = self.current.as_mut()?;
        current.settle(now_ms);
        if current.outcome.is_some() {
            return None;
        }
        let attempt = current.attempt.as_ref();
        Some(PendingInfo {
            joiner: attempt.map(|a| a.joiner),
            name: attempt.map(|a| a.name.clone()),
            code_needed: attempt.is_some_and(|a| a.stage == Stage::AwaitingCode),
            expires_at_ms: current.inviter.invitation().expires_at_ms(),
        })
    }

    /// How the last invitation ended, once it has (until a new one opens).
    pub fn last_outcome(&mut self, now_ms: u64) -> Option<Outcome> {
        let current = self.current.as_mut()?;
        current.settle(now_ms);
        current.outcome.clone()
    }

    /// The generation of the invitation open now, if any.
    pub fn generation(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.generation)
    }

    /// How the invitation of `generation` ended, settled at `now`:
    /// `Ok(None)` while it is open, with the ms left until its expiry.
    pub fn outcome(&mut self, generation: u64, now_ms: u64) -> Result<Option<Outcome>, u64> {
        let Some(current) = self.current.as_mut().filter(|c| c.generation == generation) else {
            return Ok(Some(Outcome::Cancelled));
        };
        current.settle(now_ms);
        match &current.outcome {
            Some(outcome) => Ok(Some(outcome.clone())),
            None => Err(current
                .inviter
                .invitation()
                .expires_at_ms()
                .saturating_sub(now_ms)),
        }
    }

    fn still_open(&mut self, now_ms: u64) -> Result<&mut Current, SessionError> {
        let current = self.current.as_mut().ok_or(SessionError::NoInvitation)?;
        current.settle(now_ms);
        match &current.outcome {
            Some(outcome) => Err(ended(outcome)),
            None => Ok(current),
        }
    }

    fn of(&mut self, generation: u64) -> Result<&mut Current, SessionError> {
        self.current
            .as_mut()
            .filter(|c| c.generation == generation)
            .ok_or(SessionError::Cancelled)
    }

    /// The person typed `code`. The right code releases the waiting attempt;
    /// a wrong one burns the invitation. Text that is not 6 digits is
    /// refused without burning anything.
    pub fn confirm(&mut self, now_ms: u64, code: &str) -> Result<Confirmed, SessionError> {
        let current = self.still_open(now_ms)?;
        match current.inviter.confirm(code, now_ms) {
            Ok(confirmed) => {
                if let Some(attempt) = current.attempt.as_mut() {
                    attempt.stage = Stage::Confirmed;
                }
                Ok(confirmed)
            }
            Err(handshake::Error::NothingToConfirm) => Err(SessionError::NothingWaiting),
            Err(e) => {
                current.record_closing(&e);
                Err(e.into())
            }
        }
    }

    /// A joiner's hello (after its join request named it `name`): the attempt
    /// starts if the invitation is free. Returns the attempt's generation
    /// and the challenge to send.
    pub fn hello(
        &mut self,
        now_ms: u64,
        rng: &mut (impl CryptoRng + RngCore),
        peer: DeviceId,
        hello: &[u8],
        name: String,
    ) -> Result<(u64, Message), SessionError> {
        let hello = Message::decode(bounded(hello)?)?;
        let current = self.still_open(now_ms)?;
        match current.inviter.handle(peer, hello, now_ms, rng) {
            Ok(InviterEvent::Send(challenge)) => {
                current.attempt = Some(Attempt {
                    joiner: peer,
                    name,
                    stage: Stage::Challenged,
                });
                Ok((current.generation, challenge))
            }
            Ok(InviterEvent::AwaitingConfirmation { .. }) => {
                Err(handshake::Error::UnexpectedMessage {
                    got: "hello",
                    state: "waiting for a joining device",
                }
                .into())
            }
            Err(e) => {
                current.record_closing(&e);
                Err(e.into())
            }
        }
    }

    /// The joiner's proof: the attempt then awaits the check code. On an
    /// error, whether the attempt is still held (`false`: a wrong proof or
    /// the joiner's refusal freed the invitation) comes with it.
    pub fn proof(
        &mut self,
        now_ms: u64,
        rng: &mut (impl CryptoRng + RngCore),
        generation: u64,
        peer: DeviceId,
        proof: &[u8],
    ) -> Result<(), (SessionError, bool)> {
        let proof = Message::decode(bounded(proof).map_err(|e| (e, true))?)
            .map_err(|e| (e.into(), true))?;
        let current = self.of(generation).map_err(|e| (e, true))?;
        current.settle(now_ms);
        if let Some(outcome) = &current.outcome {
            return Err((ended(outcome), true));
        }
        match current.inviter.handle(peer, proof, now_ms, rng) {
            Ok(InviterEvent::AwaitingConfirmation { joiner, .. }) => {
                if let Some(attempt) = current.attempt.as_mut().filter(|a| a.joiner == joiner) {
                    attempt.stage = Stage::AwaitingCode;
                }
                Ok(())
            }
            Ok(InviterEvent::Send(message)) => Err((
                handshake::Error::UnexpectedMessage {
                    got: message.kind(),
                    state: "waiting for the joining device's proof",
                }
                .into(),
                true,
            )),
            Err(e) => {
                let mut held = true;
                if !current.inviter.is_closed() && current.inviter.joiner().is_none() {
                    current.attempt = None;
                    held = false;
                }
                current.record_closing(&e);
                Err((e.into(), held))
            }
        }
    }

    /// Where `peer`'s attempt stands while it waits for the code, at `now`.
    pub fn waiting(
        &mut self,
        now_ms: u64,
        generation: u64,
        peer: DeviceId,
    ) -> Result<Waiting, SessionError> {
        let current = self.of(generation)?;
        current.settle(now_ms);
        match &current.outcome {
            // The waiting joiner hears why: a wrong code, expiry...
            Some(Outcome::Refused(reason)) => return Err(refusal_error(*reason).into()),
            Some(outcome) => return Err(ended(outcome)),
            None => {}
        }
        match &current.attempt {
            Some(a) if a.joiner == peer && a.stage == Stage::Confirmed => Ok(Waiting::Confirmed),
            Some(a) if a.joiner == peer => Ok(Waiting::For(
                current
                    .inviter
                    .invitation()
                    .expires_at_ms()
                    .saturating_sub(now_ms),
            )),
            _ => Err(SessionError::Cancelled),
        }
    }

    /// The name of `peer`'s attempt of `generation`, once its code was
    /// confirmed; otherwise why it may not be admitted.
    pub fn confirmed(
        &mut self,
        now_ms: u64,
        generation: u64,
        peer: DeviceId,
    ) -> Result<String, SessionError> {
        match self.waiting(now_ms, generation, peer)? {
            Waiting::Confirmed => {}
            Waiting::For(_) => return Err(SessionError::NothingWaiting),
        }
        let current = self.of(generation)?;
        Ok(current
            .attempt
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default())
    }

    /// The welcome carrying `payload` (the account's log, which lists the
    /// admitted device), for the confirmed attempt of `generation`.
    fn welcome(
        &mut self,
        generation: u64,
        peer: DeviceId,
        payload: Vec<u8>,
    ) -> Result<Message, SessionError> {
        // The invitation was replaced after the device was admitted; it is a
        // member now but gets no state from this session.
        let current = self.of(generation)?;
        match current.inviter.welcome(payload) {
            Ok(welcome) => Ok(welcome),
            Err(e) => {
                current.outcome = Some(Outcome::Failed {
                    device: peer,
                    reason: e.to_string(),
                });
                Err(e.into())
            }
        }
    }

    /// Records how the invitation of `generation` ended, if it is still the
    /// current one and had not ended.
    pub fn finish(&mut self, generation: u64, outcome: Outcome) {
        if let Ok(current) = self.of(generation) {
            current.outcome.get_or_insert(outcome);
        }
    }

    /// `peer`'s session failed before confirmation: free the invitation for
    /// another attempt. Returns whether anything changed.
    pub fn abandon(
        &mut self,
        now_ms: u64,
        rng: &mut (impl CryptoRng + RngCore),
        generation: u64,
        peer: DeviceId,
    ) -> bool {
        let Ok(current) = self.of(generation) else {
            return false;
        };
        let ours = current
            .attempt
            .as_ref()
            .is_some_and(|a| a.joiner == peer && a.stage != Stage::Confirmed);
        if !ours || current.outcome.is_some() {
            return false;
        }
        // The state machine reopens when the active joiner refuses; that is
        // exactly what a vanished joiner amounts to.
        let gone = Message::Refused {
            reason: Refusal::Protocol,
        };
        let _ = current.inviter.handle(peer, gone, now_ms, rng);
        current.attempt = None;
        true
    }
}

fn bounded(frame: &[u8]) -> Result<&[u8], SessionError> {
    if frame.len() > MAX_JOINER_FRAME {
        return Err(SessionError::FrameTooLong {
            len: frame.len(),
            max: MAX_JOINER_FRAME,
        });
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use hearth_crypto::identity::DeviceKey;
    use hearth_crypto::membership::Log;

    use super::*;
    use crate::node::Config;

    fn node() -> Node {
        let key = DeviceKey::from_bytes(&[5; 32]);
        let log = Log::genesis(&key, "laptop", 0);
        Node::new(key, "laptop", log, Config::default())
    }

    #[test]
    fn an_invitation_names_the_account_and_expires_after_its_ttl() {
        let mut n = node();
        let addr = "/ip4/127.0.0.1/tcp/4001".to_string();
        let inv = n
            .invite(1_000, &mut rand_core::OsRng, 60, vec![addr.clone()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inv.account(), n.log().account_id());
        assert_eq!(inv.expires_at_ms(), 61_000);
        assert_eq!(inv.addrs(), [addr]);
    }

    #[test]
    fn a_ttl_out_of_bounds_or_no_address_is_refused() {
        let mut n = node();
        let addr = vec!["/ip4/127.0.0.1/tcp/4001".to_string()];
        for ttl in [0, MAX_TTL_S + 1] {
            let e = n
                .invite(0, &mut rand_core::OsRng, ttl, addr.clone())
                .unwrap_err();
            assert!(e.to_string().contains("between 1 and 3600 seconds"), "{e}");
        }
        let e = n.invite(0, &mut rand_core::OsRng, 60, vec![]).unwrap_err();
        assert!(matches!(e, Error::NoAddress));
    }

    /// Runs one attempt of `joiner_id` through to its admission and returns
    /// the admission's outputs.
    fn pair_once(n: &mut Node, joiner_id: DeviceId) -> crate::node::Outputs {
        use hearth_crypto::pairing::{Joiner, JoinerEvent};
        let addr = vec!["/ip4/127.0.0.1/tcp/4001".to_string()];
        let inv = n
            .invite(0, &mut rand_core::OsRng, 60, addr)
            .unwrap_or_else(|e| panic!("{e}"));
        let inviter = n.id();
        let (mut joiner, hello) = Joiner::start(inv, joiner_id, 0, &mut rand_core::OsRng)
            .unwrap_or_else(|e| panic!("{e}"));
        let (generation, challenge) = n
            .inviting()
            .hello(
                1,
                &mut rand_core::OsRng,
                joiner_id,
                &hello.encode(),
                "phone".into(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let JoinerEvent::ShowCode { reply, code } = joiner
            .handle(inviter, challenge)
            .unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("no code shown");
        };
        n.inviting()
            .proof(
                2,
                &mut rand_core::OsRng,
                generation,
                joiner_id,
                &reply.encode(),
            )
            .unwrap_or_else(|(e, _)| panic!("{e}"));
        n.inviting()
            .confirm(3, &code.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let (welcome, out) = n
            .admit(4, generation, joiner_id)
            .unwrap_or_else(|e| panic!("{e}"));
        let welcome = welcome.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            joiner.handle(inviter, welcome),
            Ok(JoinerEvent::Welcomed { .. })
        ));
        out
    }

    /// A joiner whose welcome was lost after it was admitted pairs again
    /// with a fresh invitation and is welcomed, with nothing to persist.
    #[test]
    fn a_joiner_admitted_before_is_welcomed_again() {
        let mut n = node();
        let joiner_id = DeviceKey::from_bytes(&[6; 32]).id();
        let first = pair_once(&mut n, joiner_id);
        assert!(matches!(
            first.items.first(),
            Some(crate::node::Output::Persist(_))
        ));
        let entries = n.log().entries().len();
        let again = pair_once(&mut n, joiner_id);
        assert!(again.items.is_empty(), "nothing changes: {:?}", again.items);
        assert_eq!(n.log().entries().len(), entries);
    }

    /// The whole flow against the joiner's state machine: a wrong code burns
    /// the invitation and tells the waiting joiner; a fresh invitation and
    /// the right code end in a welcome and [`Outcome::Joined`].
    #[test]
    fn the_flow_burns_on_a_wrong_code_and_welcomes_on_the_right_one() {
        use hearth_crypto::pairing::{Joiner, JoinerEvent};
        let mut n = node();
        let addr = vec!["/ip4/127.0.0.1/tcp/4001".to_string()];
        let joiner_id = DeviceKey::from_bytes(&[6; 32]).id();
        for wrong in [true, false] {
            let inv = n
                .invite(0, &mut rand_core::OsRng, 60, addr.clone())
                .unwrap_or_else(|e| panic!("{e}"));
            let opened = n.inviting().generation().unwrap_or_default();
            let inviter = n.id();
            let flow = n.inviting();
            let (mut joiner, hello) = Joiner::start(inv, joiner_id, 0, &mut rand_core::OsRng)
                .unwrap_or_else(|e| panic!("{e}"));
            let name = decode_join_request(&encode_join_request("phone"))
                .unwrap_or_else(|e| panic!("{e}"));
            let (generation, challenge) = flow
                .hello(1, &mut rand_core::OsRng, joiner_id, &hello.encode(), name)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(generation, opened);
            let JoinerEvent::ShowCode { reply, code } = joiner
                .handle(inviter, challenge)
                .unwrap_or_else(|e| panic!("{e}"))
            else {
                panic!("no code shown");
            };
            flow.proof(
                2,
                &mut rand_core::OsRng,
                generation,
                joiner_id,
                &reply.encode(),
            )
            .unwrap_or_else(|(e, _)| panic!("{e}"));
            assert_eq!(flow.status(3).map(|p| p.code_needed), Some(true));
            assert_eq!(
                flow.waiting(3, generation, joiner_id).ok(),
                Some(Waiting::For(59_997))
            );
            if wrong {
                let typed = format!("{:06}", (code.value() + 1) % 1_000_000);
                assert!(flow.confirm(4, &typed).is_err());
                assert!(
                    flow.status(5).is_none(),
                    "a wrong code burns the invitation"
                );
                let heard = flow.waiting(5, generation, joiner_id).unwrap_err();
                assert_eq!(heard.refusal_to_send(), Some(Refusal::WrongCode));
                continue;
            }
            flow.confirm(4, &code.to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                flow.waiting(5, generation, joiner_id).ok(),
                Some(Waiting::Confirmed)
            );
            let (welcome, out) = n
                .admit(5, generation, joiner_id)
                .unwrap_or_else(|e| panic!("{e}"));
            let welcome = welcome.unwrap_or_else(|e| panic!("{e}"));
            assert!(
                matches!(out.items.first(), Some(crate::node::Output::Persist(_))),
                "the membership change is persisted before the welcome leaves"
            );
            assert!(n.log().is_member(&joiner_id));
            let joined = Joined {
                device: joiner_id,
                name: "phone".into(),
            };
            n.inviting()
                .finish(generation, Outcome::Joined(joined.clone()));
            assert_eq!(
                n.inviting().outcome(generation, 6),
                Ok(Some(Outcome::Joined(joined)))
            );
            let event = joiner
                .handle(inviter, welcome)
                .unwrap_or_else(|e| panic!("{e}"));
            let JoinerEvent::Welcomed { payload } = event else {
                panic!("no welcome");
            };
            let log = Log::decode(&payload).unwrap_or_else(|e| panic!("{e}"));
            assert!(log.is_member(&joiner_id));
        }
    }
}
