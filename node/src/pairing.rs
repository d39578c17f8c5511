//! The pairing protocol `/hearth/pair/1`, driven over any byte stream.
//!
//! [`hearth_crypto::pairing`] holds the handshake as sans-IO state machines;
//! this module moves its messages over a stream (a libp2p `Stream` in the
//! daemon, an in-memory pipe in tests), enforces timeouts and size bounds, and
//! keeps the inviting device's one open invitation.
//!
//! # On the wire
//!
//! Frames are the mesh's ([`crate::net::frame`]): a 4-byte big-endian length
//! and that many bytes, the length checked against a bound before anything
//! is allocated: frames the inviter
//! reads are tiny (under 256 bytes), frames the joiner reads are at most
//! [`MAX_MESSAGE_LEN`] (a welcome carrying the account state).
//!
//! ```text
//! joiner                                         inviter
//!   JoinRequest { name }                   ──▶   (postcard; the device name to record)
//!   Hello                                  ──▶
//!                                          ◀──   Challenge
//!   verifies the inviter's proof
//!   Proof                                  ──▶   verifies the joiner's proof
//!   prints "check code: NNNNNN"                  waits for the person to type the code
//!                                                  (`hearth pair` prompt or `hearth pair confirm`)
//!                                                admit(joiner, name): membership entry + payload
//!                                          ◀──   Welcome { payload }
//! ```
//!
//! Either side that fails a step with a reason the other should hear
//! ([`hearth_crypto::pairing::Error::refusal`]) sends `Refused { reason }` and
//! closes. The joiner turns a received refusal into
//! [`Error::Handshake`]`(Refused(reason))`, whose message names the reason.
//!
//! # The inviting side
//!
//! The node holds at most one invitation; opening a new one
//! ([`Node::invite`]) cancels the old. Each inbound `/hearth/pair/1` stream runs
//! [`Invitations::serve`]. The first device to prove the secret holds the
//! invitation until it completes or leaves; others get `Busy`. When its proof
//! verifies, the session waits, at most until the invitation expires, for
//! [`Invitations::confirm`] with the code the new device shows. Only after the
//! right code does `serve` call `admit`, which the engine implements (append
//! the device to the membership log, build the account state), and send the
//! welcome. A wrong code burns the invitation and the waiting joiner is told.
//! [`Invitations::status`] and [`Invitations::wait`] let `hearth pair` follow
//! along: prompt for the code when a device is waiting, report how it ended.
//!
//! The flow itself (who holds the invitation, how far the attempt got, how
//! it ended) is the core's ([`hearth_crdt::node::pairing::Inviting`], held
//! by the node). [`Invitations`] asks the core at every step, through a
//! [`Core`]: the engine in the daemon, so time is the core's time; timers
//! sleep in real time until the expiry the core reports.

use std::future::Future;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use hearth_crdt::node::pairing::{
    Inviting, SessionError, Waiting, decode_join_request, encode_join_request,
};
use hearth_crdt::node::{self, Millis, Node, Outputs};
use hearth_crypto::identity::DeviceId;
use hearth_crypto::pairing::{
    self as handshake, CheckCode, Confirmed, Joiner, JoinerEvent, MAX_MESSAGE_LEN, Message, Refusal,
};
use hearth_crypto::ticket::Invitation;
use rand::rngs::OsRng;
use tokio::sync::watch;

/// The libp2p protocol name.
pub const PROTOCOL: &str = "/hearth/pair/1";

pub use hearth_crdt::node::pairing::MAX_JOINER_FRAME;

/// The time-outs of a pairing session (`[pairing]` in `hearth.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long one step may take on the wire (the join request, the hello,
    /// the challenge, the proof) before the session is dropped. Default 30 s.
    pub step: Duration,
    /// How long the joiner waits past the invitation's expiry for the
    /// welcome, to absorb clock skew between the two devices and the
    /// admission itself. Default 30 s.
    pub welcome_slack: Duration,
    /// Upper bound on any wait derived from an expiry, so a hostile ticket
    /// with a far-future expiry cannot hold a session open for years.
    /// Default 24 h.
    pub max_wait: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            step: Duration::from_secs(30),
            welcome_slack: Duration::from_secs(30),
            max_wait: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Why a pairing session failed, on either side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A handshake step failed, or the other side refused (`Refused(reason)`).
    #[error("{0}")]
    Handshake(#[from] handshake::Error),
    /// The stream failed.
    #[error("pairing connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The other device closed the stream before the pairing finished.
    #[error("the other device closed the pairing connection before it finished")]
    Closed,
    /// A frame announced a length above the bound for this step.
    #[error("pairing frame of {len} bytes refused; at most {max} are allowed")]
    FrameTooLong {
        /// Announced length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The joiner's first frame is not a join request.
    #[error("malformed join request: {0}")]
    JoinRequest(#[source] postcard::Error),
    /// The other device took too long for one step.
    #[error("timed out after {}s waiting for {step}", after.as_secs())]
    Timeout {
        /// What was awaited.
        step: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// A device dialled but this device has no invitation open.
    #[error("no invitation is open; create one with `hearth pair`")]
    NoInvitation,
    /// [`Invitations::confirm`] was called but no device has proved the secret.
    #[error("no device is waiting for a check code")]
    NothingWaiting,
    /// The invitation was cancelled or replaced by a newer one mid-session.
    #[error("the invitation was cancelled or replaced by a newer one")]
    Cancelled,
    /// The core could not admit the device (adding it to the account, or
    /// making that durable, failed), or it stopped.
    #[error("could not add the new device to the account: {0}")]
    Admit(#[source] CoreError),
    /// The core could not run a step of the flow (it stopped).
    #[error("the node could not run the pairing step: {0}")]
    Core(#[source] CoreError),
}

impl Error {
    /// The reason the other side gave, when this error is its refusal.
    pub fn refused(&self) -> Option<Refusal> {
        match self {
            Error::Handshake(handshake::Error::Refused(reason)) => Some(*reason),
            _ => None,
        }
    }

    /// What to tell the other side before closing, if anything.
    fn refusal_to_send(&self) -> Option<Refusal> {
        match self {
            Error::Handshake(e) => e.refusal(),
            Error::FrameTooLong { .. } | Error::JoinRequest(_) => Some(Refusal::Protocol),
            Error::NoInvitation | Error::Cancelled => Some(Refusal::AlreadyUsed),
            Error::Io(_)
            | Error::Closed
            | Error::Timeout { .. }
            | Error::NothingWaiting
            | Error::Admit(_)
            | Error::Core(_) => None,
        }
    }
}

/// A device that joined, how an invitation ended, and what `hearth pair`
/// shows meanwhile: the core's types (see [`hearth_crdt::node::pairing`]).
pub use hearth_crdt::node::pairing::{Joined, Outcome, PendingInfo};

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Handshake(e) => Error::Handshake(e),
            SessionError::FrameTooLong { len, max } => Error::FrameTooLong { len, max },
            SessionError::JoinRequest(e) => Error::JoinRequest(e),
            SessionError::NoInvitation => Error::NoInvitation,
            SessionError::NothingWaiting => Error::NothingWaiting,
            SessionError::Cancelled => Error::Cancelled,
        }
    }
}

/// The node core that holds the inviting flow, as this driver reaches it.
///
/// The daemon's is the engine ([`crate::engine::Handle`]): each step runs on
/// the engine thread, at the engine's clock, and whatever the step asks to
/// persist is durable before its answer comes back. Tests of this driver
/// give a bare [`Node`] with a clock of their own.
pub trait Core: Send + Sync + 'static {
    /// Runs `step` on the node at the current time, performs its outputs,
    /// and returns its answer; an error is the step's, or the core's own
    /// (it stopped, a batch did not persist).
    fn run<T: Send + 'static>(
        &self,
        step: impl FnOnce(&mut Node, Millis) -> Result<(T, Outputs), node::Error> + Send + 'static,
    ) -> impl Future<Output = Result<T, CoreError>> + Send;
}

/// Why the core could not run a step: its own error type, boxed.
pub type CoreError = Box<dyn std::error::Error + Send + Sync>;

/// The driver of the inviting side: moves the core's flow
/// ([`Node::inviting`]) over the streams of joining devices, with a change
/// signal that waiting sessions and `hearth pair` follow. It keeps no flow
/// state: every step asks the core.
///
/// Shared by the daemon's stream handlers and its API; all methods take
/// `&self`.
pub struct Invitations<C> {
    core: C,
    timeouts: Timeouts,
    /// Bumped on every step; sessions and waiters watch it.
    changed: watch::Sender<u64>,
}

impl<C: Core> Invitations<C> {
    /// The driver of `core`'s invitations, with these time-outs.
    pub fn new(core: C, timeouts: Timeouts) -> Self {
        Self {
            core,
            timeouts,
            changed: watch::channel(0).0,
        }
    }

    /// Runs `step` on the core's flow at the core's time, then wakes every
    /// waiter.
    async fn with<T: Send + 'static>(
        &self,
        step: impl FnOnce(&mut Inviting, u64, &mut OsRng) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let answer = self.ask(step).await;
        self.opened();
        answer
    }

    /// Runs `step` on the core's flow at the core's time, waking nobody:
    /// for the questions waiters ask, which would otherwise wake themselves.
    async fn ask<T: Send + 'static>(
        &self,
        step: impl FnOnce(&mut Inviting, u64, &mut OsRng) -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.core
            .run(move |node, now| {
                let answer = step(node.inviting(), now.max(0) as u64, &mut OsRng);
                Ok((answer, Outputs::default()))
            })
            .await
            .map_err(Error::Core)
    }

    /// Tells waiters that the flow changed outside this driver: the core
    /// opened a new invitation ([`Node::invite`]).
    pub fn opened(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn remaining(&self, ms: u64) -> Duration {
        Duration::from_millis(ms).min(self.timeouts.max_wait)
    }

    /// Cancels the open invitation, if any.
    pub async fn cancel(&self) -> Result<bool, Error> {
        self.with(|flow, _, _| flow.cancel()).await
    }

    /// The open invitation's state, or `None` when no invitation is open
    /// (never created, or ended) or the core is gone.
    pub async fn status(&self) -> Option<PendingInfo> {
        self.ask(|flow, now, _| flow.status(now))
            .await
            .ok()
            .flatten()
    }

    /// How the last invitation ended, once it has; `None` while one is open,
    /// when none was ever opened, or when the core is gone.
    pub async fn last_outcome(&self) -> Option<Outcome> {
        self.ask(|flow, now, _| flow.last_outcome(now))
            .await
            .ok()
            .flatten()
    }

    /// The person typed `code` on this device. The right code releases the
    /// waiting session to admit the device; a wrong one burns the invitation
    /// and the waiting device is told. Text that is not 6 digits is refused
    /// without burning anything.
    pub async fn confirm(&self, code: &str) -> Result<Confirmed, Error> {
        let code = code.to_owned();
        Ok(self
            .with(move |flow, now, _| flow.confirm(now, &code))
            .await??)
    }

    /// Waits until the invitation open now ends and reports how; `None` if no
    /// invitation was ever opened.
    pub async fn wait(&self) -> Option<Outcome> {
        let mut changes = self.changed.subscribe();
        let generation = self.ask(|flow, _, _| flow.generation()).await.ok()??;
        loop {
            let left = match self
                .ask(move |flow, now, _| flow.outcome(generation, now))
                .await
            {
                Ok(Ok(outcome)) => return Some(outcome.unwrap_or(Outcome::Cancelled)),
                Ok(Err(left)) => self.remaining(left),
                // The core stopped: the invitation ended with it.
                Err(_) => return Some(Outcome::Cancelled),
            };
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep(left) => {}
            }
        }
    }

    /// Runs one inbound pairing session from the authenticated device `peer`.
    ///
    /// Reads the join request and hello, answers the challenge, checks the
    /// proof, then waits (at most until the invitation expires) for
    /// [`Invitations::confirm`]. Once confirmed the core admits the device
    /// ([`Node::admit`]); the welcome leaves once that is durable. Any
    /// refusal is sent to the peer before the stream is closed.
    pub async fn serve<S>(&self, peer: DeviceId, mut stream: S) -> Result<Joined, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut session = None;
        let result = self.run_session(peer, &mut stream, &mut session).await;
        if let Err(error) = &result {
            if let Some(generation) = session {
                let _ = self
                    .with(move |flow, now, rng| flow.abandon(now, rng, generation, peer))
                    .await;
            }
            if let Some(reason) = error.refusal_to_send() {
                // The peer may already be gone; the session failed either way.
                let _ = write_message(&mut stream, &Message::Refused { reason }).await;
            }
        }
        let _ = stream.close().await;
        result
    }

    async fn run_session<S>(
        &self,
        peer: DeviceId,
        stream: &mut S,
        session: &mut Option<u64>,
    ) -> Result<Joined, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let t = self.timeouts.step;
        let request = step(t, "the join request", read_frame(stream, MAX_JOINER_FRAME)).await?;
        let name = decode_join_request(&request)?;

        let hello = step(t, "the hello", read_frame(stream, MAX_JOINER_FRAME)).await?;
        let named = name.clone();
        let (generation, challenge) = self
            .with(move |flow, now, rng| flow.hello(now, rng, peer, &hello, named))
            .await??;
        *session = Some(generation);
        write_message(stream, &challenge).await?;

        let proof = step(t, "the proof", read_frame(stream, MAX_JOINER_FRAME)).await?;
        if let Err((error, held)) = self
            .with(move |flow, now, rng| flow.proof(now, rng, generation, peer, &proof))
            .await?
        {
            if !held {
                // A wrong proof or the joiner's own refusal reopened the
                // invitation; there is nothing left to abandon.
                *session = None;
            }
            return Err(error.into());
        }

        self.await_confirmation(generation, peer, stream).await?;

        let admitted = self
            .core
            .run(move |node, now| node.admit(now, generation, peer))
            .await;
        self.opened();
        let welcome = match admitted {
            Ok(Ok(welcome)) => welcome,
            Ok(Err(error)) => return Err(error.into()),
            Err(error) => {
                let error = Error::Admit(error);
                self.finish(generation, failed(peer, &error)).await;
                return Err(error);
            }
        };
        if let Err(error) = write_message(stream, &welcome).await {
            self.finish(
                generation,
                Outcome::Failed {
                    device: peer,
                    reason: format!(
                        "the device was added but its welcome could not be delivered: {error}"
                    ),
                },
            )
            .await;
            return Err(error);
        }
        let joined = Joined { device: peer, name };
        self.finish(generation, Outcome::Joined(joined.clone()))
            .await;
        Ok(joined)
    }

    /// Waits for the person to confirm the code, for the invitation to end,
    /// or for the joiner to hang up, whichever comes first.
    async fn await_confirmation<S>(
        &self,
        generation: u64,
        peer: DeviceId,
        stream: &mut S,
    ) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut changes = self.changed.subscribe();
        loop {
            let left = match self
                .ask(move |flow, now, _| flow.waiting(now, generation, peer))
                .await??
            {
                Waiting::Confirmed => return Ok(()),
                Waiting::For(ms) => self.remaining(ms),
            };
            // The joiner sends nothing while it waits: any frame or the end
            // of the stream means it left.
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep(left) => {}
                frame = read_frame(stream, MAX_JOINER_FRAME) => {
                    return Err(joiner_left(frame));
                }
            }
        }
    }

    /// Records how the invitation of `generation` ended, if it is still the
    /// current one.
    async fn finish(&self, generation: u64, outcome: Outcome) {
        let _ = self
            .with(move |flow, _, _| flow.finish(generation, outcome))
            .await;
    }
}

impl<C> std::fmt::Debug for Invitations<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitations")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

fn failed(device: DeviceId, error: &Error) -> Outcome {
    Outcome::Failed {
        device,
        reason: error.to_string(),
    }
}

/// Why a joiner that spoke (or hung up) while awaiting confirmation left.
fn joiner_left(frame: Result<Vec<u8>, Error>) -> Error {
    match frame {
        Err(e) => e,
        Ok(bytes) => match Message::decode(&bytes) {
            Ok(Message::Refused { reason }) => handshake::Error::Refused(reason).into(),
            Ok(other) => handshake::Error::UnexpectedMessage {
                got: other.kind(),
                state: "waiting for the check code",
            }
            .into(),
            Err(e) => e.into(),
        },
    }
}

/// Pairs with the inviter `peer` over `stream` as device `me`.
///
/// `invitation` is the decoded ticket and `name` this device's name (cleaned
/// and cut to [`MAX_DEVICE_NAME_LEN`](hearth_crypto::membership::MAX_DEVICE_NAME_LEN) bytes before sending). `on_code` is
/// called with the check code as soon as both proofs verified; show it to the
/// person, who types it on the inviting device. Returns the welcome payload;
/// a refusal from the inviter is [`Error::Handshake`] naming the reason (see
/// [`Error::refused`]).
pub async fn join<S>(
    mut stream: S,
    me: DeviceId,
    invitation: Invitation,
    name: &str,
    now_ms: u64,
    timeouts: Timeouts,
    on_code: impl FnMut(CheckCode),
) -> Result<Vec<u8>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = invitation.inviter();
    let wait = Duration::from_millis(invitation.expires_at_ms().saturating_sub(now_ms))
        .saturating_add(timeouts.welcome_slack)
        .min(timeouts.max_wait);
    // Checked before a byte is sent: an expired ticket or our own is refused
    // here, and the inviter hears nothing.
    let (joiner, hello) = Joiner::start(invitation, me, now_ms, &mut OsRng)?;
    let result = run_join(
        &mut stream,
        peer,
        joiner,
        hello,
        name,
        (timeouts.step, wait),
        on_code,
    )
    .await;
    if let Err(error) = &result
        && let Some(reason) = error.refusal_to_send()
    {
        // Tells the inviter to free the invitation; it may be gone already.
        let _ = write_message(&mut stream, &Message::Refused { reason }).await;
    }
    let _ = stream.close().await;
    result
}

async fn run_join<S>(
    stream: &mut S,
    peer: DeviceId,
    mut joiner: Joiner,
    hello: Message,
    name: &str,
    (step_timeout, wait): (Duration, Duration),
    mut on_code: impl FnMut(CheckCode),
) -> Result<Vec<u8>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    write_frame(stream, &encode_join_request(name)).await?;
    write_message(stream, &hello).await?;

    let challenge = step(
        step_timeout,
        "the inviter's challenge",
        read_frame(stream, MAX_MESSAGE_LEN),
    )
    .await?;
    let challenge = Message::decode(&challenge)?;
    match joiner.handle(peer, challenge)? {
        JoinerEvent::ShowCode { reply, code } => {
            write_message(stream, &reply).await?;
            on_code(code);
        }
        JoinerEvent::Welcomed { .. } => {
            return Err(handshake::Error::UnexpectedMessage {
                got: "welcome",
                state: "waiting for the inviter's challenge",
            }
            .into());
        }
    }

    let welcome = tokio::time::timeout(wait, read_frame(stream, MAX_MESSAGE_LEN))
        .await
        .map_err(|_| Error::Timeout {
            step: "the check code to be confirmed on the inviting device",
            after: wait,
        })??;
    let welcome = Message::decode(&welcome)?;
    match joiner.handle(peer, welcome)? {
        JoinerEvent::Welcomed { payload } => Ok(payload),
        JoinerEvent::ShowCode { .. } => Err(handshake::Error::UnexpectedMessage {
            got: "challenge",
            state: "waiting for the welcome",
        }
        .into()),
    }
}

/// Runs one wire step under `timeout` ([`Timeouts::step`]).
async fn step<T>(
    timeout: Duration,
    what: &'static str,
    future: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| Error::Timeout {
            step: what,
            after: timeout,
        })?
}

async fn write_message<S: AsyncWrite + Unpin>(
    stream: &mut S,
    message: &Message,
) -> Result<(), Error> {
    write_frame(stream, &message.encode()).await
}

/// Writes one frame (the mesh's framing, [`crate::net::frame`]), refusing
/// one longer than any pairing message.
async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(Error::FrameTooLong {
            len: bytes.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    crate::net::frame::write_frame(stream, bytes)
        .await
        .map_err(eof_is_closed)
}

/// Reads one frame of at most `max` bytes (the mesh's framing, which checks
/// the length before allocating); the stream's end is [`Error::Closed`].
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> Result<Vec<u8>, Error> {
    use crate::net::frame::{self, Error as FrameError};
    match frame::read_frame(stream, max).await {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) | Err(FrameError::Truncated { .. }) => Err(Error::Closed),
        Err(FrameError::TooLarge { len, max }) => Err(Error::FrameTooLong {
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max,
        }),
        Err(FrameError::Io(e)) => Err(eof_is_closed(e)),
    }
}

fn eof_is_closed(error: std::io::Error) -> Error {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::Closed
    } else {
        Error::Io(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_crypto::identity::DeviceKey;
    use hearth_crypto::membership::{AccountId, Log};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::DuplexStream;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    const NOW: u64 = 1_700_000_000_000;
    const EXPIRY: u64 = NOW + 120_000;

    type Pipe = Compat<DuplexStream>;

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

    fn pipe() -> (Pipe, Pipe) {
        let (a, b) = tokio::io::duplex(1 << 16);
        (a.compat(), b.compat())
    }

    /// A bare core: the real node logic, with a clock of its own and no
    /// store (a batch counts as durable at once).
    struct Bare {
        node: std::sync::Mutex<Node>,
        clock: AtomicU64,
    }

    impl Core for Arc<Bare> {
        async fn run<T: Send + 'static>(
            &self,
            step: impl FnOnce(&mut Node, Millis) -> Result<(T, Outputs), node::Error> + Send + 'static,
        ) -> Result<T, CoreError> {
            let now = self.clock.load(Ordering::SeqCst) as Millis;
            let mut node = self.node.lock().unwrap();
            let (answer, _durable) = step(&mut node, now)?;
            Ok(answer)
        }
    }

    /// The welcome's payload is the inviter's log, which lists the new
    /// device under `name`.
    fn assert_welcome(payload: &[u8], name: &str) {
        let log = Log::decode(payload).unwrap();
        assert!(
            log.members().iter().any(|m| m.name == name),
            "{name} is not in the welcome's log"
        );
    }

    struct Fixture {
        invitations: Arc<Invitations<Arc<Bare>>>,
        core: Arc<Bare>,
    }

    impl Fixture {
        /// An inviting device (`id(1)`) with `invitation(9)` open.
        fn new() -> Self {
            let f = Self::empty(Log::genesis(&DeviceKey::from_bytes(&[1; 32]), "inviter", 0));
            f.open(invitation(9));
            f
        }

        /// An inviting device whose account log is `log`, with no invitation.
        fn empty(log: Log) -> Self {
            let key = DeviceKey::from_bytes(&[1; 32]);
            let node = Node::new(key, "inviter", log, node::Config::default());
            let core = Arc::new(Bare {
                node: std::sync::Mutex::new(node),
                clock: AtomicU64::new(NOW),
            });
            let invitations = Arc::new(Invitations::new(core.clone(), Timeouts::default()));
            Self { invitations, core }
        }

        /// Opens `invitation` in the core, as [`Node::invite`] does.
        fn open(&self, invitation: Invitation) {
            self.core.node.lock().unwrap().inviting().open(invitation);
            self.invitations.opened();
        }

        fn set_clock(&self, ms: u64) {
            self.core.clock.store(ms, Ordering::SeqCst);
        }

        /// Whether the core admitted `id(2)`.
        fn admitted(&self) -> bool {
            self.core.node.lock().unwrap().log().is_member(&id(2))
        }

        /// The inviter's side of a session with `peer`.
        fn serve(&self, peer: DeviceId, stream: Pipe) -> JoinHandle<Result<Joined, Error>> {
            let invitations = self.invitations.clone();
            tokio::spawn(async move { invitations.serve(peer, stream).await })
        }

        /// Connects joiner `me` holding `ticket`, with its clock at `now_ms`.
        fn join(
            &self,
            me: DeviceId,
            ticket: Invitation,
            name: &'static str,
            now_ms: u64,
        ) -> Session {
            let (inviter_end, joiner_end) = pipe();
            let served = self.serve(me, inviter_end);
            let (codes, code) = mpsc::channel(1);
            let joined = tokio::spawn(async move {
                join(
                    joiner_end,
                    me,
                    ticket,
                    name,
                    now_ms,
                    Timeouts::default(),
                    move |c| {
                        codes.try_send(c).unwrap();
                    },
                )
                .await
            });
            Session {
                served,
                joined,
                code,
            }
        }

        /// Waits until the inviter has verified a proof and awaits the code.
        async fn code_needed(&self) -> PendingInfo {
            for _ in 0..500 {
                if let Some(info) = self.invitations.status().await
                    && info.code_needed
                {
                    return info;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            panic!("no device came to await its code");
        }
    }

    struct Session {
        served: JoinHandle<Result<Joined, Error>>,
        joined: JoinHandle<Result<Vec<u8>, Error>>,
        code: mpsc::Receiver<CheckCode>,
    }

    impl Session {
        async fn finish(self) -> (Result<Joined, Error>, Result<Vec<u8>, Error>) {
            (self.served.await.unwrap(), self.joined.await.unwrap())
        }
    }

    #[tokio::test]
    async fn happy_path_welcomes_with_the_admitted_payload() {
        let f = Fixture::new();
        let waiter = {
            let invitations = f.invitations.clone();
            tokio::spawn(async move { invitations.wait().await })
        };
        let mut s = f.join(id(2), invitation(9), "laptop", NOW);
        let code = s.code.recv().await.unwrap();
        let info = f.code_needed().await;
        assert_eq!(info.joiner, Some(id(2)));
        assert_eq!(info.name.as_deref(), Some("laptop"));
        assert_eq!(info.expires_at_ms, EXPIRY);

        // Nothing secret before confirmation: admit has not run, no welcome.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!f.admitted());
        assert!(!s.joined.is_finished());
        assert!(!waiter.is_finished());

        // The joiner's code is the one the inviter derived.
        let confirmed = f.invitations.confirm(&code.to_string()).await.unwrap();
        assert_eq!(confirmed.joiner, id(2));
        let (served, joined) = s.finish().await;
        assert_welcome(&joined.unwrap(), "laptop");
        let expected = Joined {
            device: id(2),
            name: "laptop".to_owned(),
        };
        assert_eq!(served.unwrap(), expected);
        assert!(f.admitted());
        assert_eq!(waiter.await.unwrap(), Some(Outcome::Joined(expected)));
        assert_eq!(f.invitations.status().await, None);
    }

    #[tokio::test]
    async fn replay_after_success_is_already_used() {
        let f = Fixture::new();
        let mut s = f.join(id(2), invitation(9), "laptop", NOW);
        let code = s.code.recv().await.unwrap();
        f.code_needed().await;
        f.invitations.confirm(&code.to_string()).await.unwrap();
        assert!(s.finish().await.1.is_ok());

        for device in [id(2), id(3)] {
            let mut again = f.join(device, invitation(9), "again", NOW);
            let (served, joined) = (again.served.await.unwrap(), again.joined.await.unwrap());
            let joined = joined.unwrap_err();
            assert_eq!(joined.refused(), Some(Refusal::AlreadyUsed), "{joined}");
            assert!(joined.to_string().contains("already used"), "{joined}");
            assert!(matches!(
                served,
                Err(Error::Handshake(handshake::Error::AlreadyUsed))
            ));
            assert!(again.code.try_recv().is_err());
        }
        assert!(matches!(
            f.invitations.confirm(&code.to_string()).await,
            Err(Error::Handshake(handshake::Error::AlreadyUsed))
        ));
    }

    #[tokio::test]
    async fn wrong_code_burns_the_invitation_and_tells_the_joiner() {
        let f = Fixture::new();
        let mut s = f.join(id(2), invitation(9), "laptop", NOW);
        let code = s.code.recv().await.unwrap();
        f.code_needed().await;
        // Not 6 digits: refused without burning anything.
        assert!(matches!(
            f.invitations.confirm("12a456").await,
            Err(Error::Handshake(handshake::Error::InvalidCode))
        ));
        let wrong = format!("{:06}", (code.value() + 1) % 1_000_000);
        assert!(matches!(
            f.invitations.confirm(&wrong).await,
            Err(Error::Handshake(handshake::Error::WrongCode))
        ));
        let (served, joined) = s.finish().await;
        let joined = joined.unwrap_err();
        assert_eq!(joined.refused(), Some(Refusal::WrongCode));
        assert!(joined.to_string().contains("check code"), "{joined}");
        assert!(matches!(
            served,
            Err(Error::Handshake(handshake::Error::WrongCode))
        ));
        assert!(!f.admitted());
        assert_eq!(
            f.invitations.wait().await,
            Some(Outcome::Refused(Refusal::WrongCode))
        );
        assert_eq!(
            f.invitations.last_outcome().await,
            Some(Outcome::Refused(Refusal::WrongCode)),
            "the core keeps how it ended, for `hearth pair status`"
        );

        // Burnt: the right code and a new attempt are both refused.
        assert!(f.invitations.confirm(&code.to_string()).await.is_err());
        let next = f.join(id(3), invitation(9), "phone", NOW);
        let (_, joined) = next.finish().await;
        assert_eq!(joined.unwrap_err().refused(), Some(Refusal::AlreadyUsed));
        assert!(!f.admitted());
    }

    #[tokio::test]
    async fn expired_invitation_is_refused_on_both_sides() {
        let f = Fixture::new();
        f.set_clock(EXPIRY);
        // The joiner's clock lags, so only the inviter can tell.
        let s = f.join(id(2), invitation(9), "laptop", NOW);
        let (served, joined) = s.finish().await;
        assert_eq!(joined.unwrap_err().refused(), Some(Refusal::Expired));
        assert!(matches!(
            served,
            Err(Error::Handshake(handshake::Error::Expired))
        ));
        assert_eq!(f.invitations.wait().await, Some(Outcome::Expired));
        assert_eq!(f.invitations.status().await, None);

        // A joiner that knows the ticket expired does not send anything.
        let s = f.join(id(3), invitation(9), "phone", EXPIRY + 1);
        let (served, joined) = s.finish().await;
        assert!(matches!(
            joined,
            Err(Error::Handshake(handshake::Error::Expired))
        ));
        assert!(matches!(served, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn expiry_while_awaiting_the_code_refuses_the_joiner() {
        let f = Fixture::new();
        let mut s = f.join(id(2), invitation(9), "laptop", NOW);
        let code = s.code.recv().await.unwrap();
        f.code_needed().await;
        f.set_clock(EXPIRY + 1);
        assert!(matches!(
            f.invitations.confirm(&code.to_string()).await,
            Err(Error::Handshake(handshake::Error::Expired))
        ));
        let (served, joined) = s.finish().await;
        assert_eq!(joined.unwrap_err().refused(), Some(Refusal::Expired));
        assert!(served.is_err());
        assert!(!f.admitted());
        assert_eq!(f.invitations.wait().await, Some(Outcome::Expired));
    }

    #[tokio::test]
    async fn second_joiner_is_busy_and_the_first_completes() {
        let f = Fixture::new();
        let mut first = f.join(id(2), invitation(9), "laptop", NOW);
        let code = first.code.recv().await.unwrap();
        f.code_needed().await;

        let mut second = f.join(id(3), invitation(9), "intruder", NOW);
        let (served, joined) = (second.served.await.unwrap(), second.joined.await.unwrap());
        assert_eq!(joined.unwrap_err().refused(), Some(Refusal::Busy));
        assert!(matches!(
            served,
            Err(Error::Handshake(handshake::Error::Busy))
        ));
        assert!(second.code.try_recv().is_err());

        // The first session is untouched.
        let info = f.code_needed().await;
        assert_eq!(info.joiner, Some(id(2)));
        f.invitations.confirm(&code.to_string()).await.unwrap();
        let (served, joined) = first.finish().await;
        assert_welcome(&joined.unwrap(), "laptop");
        assert_eq!(served.unwrap().device, id(2));
    }

    #[tokio::test]
    async fn joiner_hanging_up_frees_the_invitation() {
        let f = Fixture::new();
        let mut first = f.join(id(2), invitation(9), "laptop", NOW);
        first.code.recv().await.unwrap();
        f.code_needed().await;
        first.joined.abort();
        let served = first.served.await.unwrap();
        assert!(matches!(served, Err(Error::Closed)), "{served:?}");
        let info = f.invitations.status().await.unwrap();
        assert_eq!(info.joiner, None);
        assert!(!info.code_needed);
        assert!(matches!(
            f.invitations.confirm("123456").await,
            Err(Error::NothingWaiting)
        ));

        let mut second = f.join(id(3), invitation(9), "phone", NOW);
        let code = second.code.recv().await.unwrap();
        f.code_needed().await;
        f.invitations.confirm(&code.to_string()).await.unwrap();
        assert_welcome(&second.finish().await.1.unwrap(), "phone");
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_and_the_invitation_stays_open() {
        let f = Fixture::new();
        let s = f.join(id(2), invitation(8), "laptop", NOW);
        let (served, joined) = s.finish().await;
        assert!(matches!(
            joined,
            Err(Error::Handshake(handshake::Error::WrongProof))
        ));
        // The joiner's refusal reached the inviter.
        assert_eq!(served.unwrap_err().refused(), Some(Refusal::WrongProof));
        assert!(f.invitations.status().await.unwrap().joiner.is_none());

        let mut good = f.join(id(3), invitation(9), "phone", NOW);
        let code = good.code.recv().await.unwrap();
        f.code_needed().await;
        f.invitations.confirm(&code.to_string()).await.unwrap();
        assert!(good.finish().await.1.is_ok());
    }

    #[tokio::test]
    async fn a_new_invitation_cancels_the_waiting_session() {
        let f = Fixture::new();
        let waiter = {
            let invitations = f.invitations.clone();
            tokio::spawn(async move { invitations.wait().await })
        };
        let mut s = f.join(id(2), invitation(9), "laptop", NOW);
        s.code.recv().await.unwrap();
        f.code_needed().await;
        f.open(invitation(7));
        let (served, joined) = s.finish().await;
        assert!(matches!(served, Err(Error::Cancelled)));
        assert_eq!(joined.unwrap_err().refused(), Some(Refusal::AlreadyUsed));
        assert_eq!(waiter.await.unwrap(), Some(Outcome::Cancelled));
        // The new invitation is open and untouched.
        let info = f.invitations.status().await.unwrap();
        assert_eq!(info.joiner, None);
    }

    #[tokio::test]
    async fn no_invitation_and_nothing_waiting_are_clear_errors() {
        let f = Fixture::empty(Log::genesis(&DeviceKey::from_bytes(&[1; 32]), "inviter", 0));
        let invitations = f.invitations.clone();
        assert_eq!(invitations.wait().await, None);
        assert_eq!(invitations.status().await, None);
        assert!(matches!(
            invitations.confirm("123456").await,
            Err(Error::NoInvitation)
        ));
        let (inviter_end, joiner_end) = pipe();
        let served = f.serve(id(2), inviter_end);
        let joined = join(
            joiner_end,
            id(2),
            invitation(9),
            "x",
            NOW,
            Timeouts::default(),
            |_| {},
        )
        .await;
        assert_eq!(joined.unwrap_err().refused(), Some(Refusal::AlreadyUsed));
        assert!(matches!(served.await.unwrap(), Err(Error::NoInvitation)));

        f.open(invitation(9));
        let err = invitations.confirm("123456").await.unwrap_err();
        assert!(matches!(err, Error::NothingWaiting));
        assert_eq!(err.to_string(), "no device is waiting for a check code");
    }

    #[tokio::test]
    async fn admit_failure_sends_nothing_and_is_reported() {
        // The joiner's key was removed from the account once: it can never
        // be admitted again, so the core refuses at the admission step.
        let key = DeviceKey::from_bytes(&[1; 32]);
        let mut log = Log::genesis(&key, "inviter", 0);
        log.add_device(&key, id(2), "old laptop", 1).unwrap();
        log.remove_device(&key, id(2), 2).unwrap();
        let f = Fixture::empty(log);
        f.open(invitation(9));
        let (inviter_end, joiner_end) = pipe();
        let served = f.serve(id(2), inviter_end);
        let (codes, mut code) = mpsc::channel(1);
        let joined = tokio::spawn(join(
            joiner_end,
            id(2),
            invitation(9),
            "laptop",
            NOW,
            Timeouts::default(),
            move |c| codes.try_send(c).unwrap(),
        ));
        let c = code.recv().await.unwrap();
        f.code_needed().await;
        f.invitations.confirm(&c.to_string()).await.unwrap();
        assert!(matches!(served.await.unwrap(), Err(Error::Admit(_))));
        assert!(matches!(joined.await.unwrap(), Err(Error::Closed)));
        assert!(matches!(
            f.invitations.wait().await,
            Some(Outcome::Failed { device, reason }) if device == id(2) && reason.contains("cannot be re-added")
        ));
    }

    #[tokio::test]
    async fn device_name_is_cleaned() {
        let f = Fixture::new();
        let long: &'static str = "  my\tlaptop with a very long name that keeps going past the limit of sixty-four bytes ";
        let mut s = f.join(id(2), invitation(9), long, NOW);
        let code = s.code.recv().await.unwrap();
        let info = f.code_needed().await;
        let name = info.name.unwrap();
        assert_eq!(name, hearth_crypto::membership::clean_device_name(long));
        assert!(name.len() <= hearth_crypto::membership::MAX_DEVICE_NAME_LEN);
        f.invitations.confirm(&code.to_string()).await.unwrap();
        assert_eq!(s.finish().await.0.unwrap().name, name);
    }

    /// A raw peer: sends `bytes`, then returns the first frame it gets back.
    async fn serve_raw(f: &Fixture, bytes: Vec<u8>) -> (Result<Joined, Error>, Option<Message>) {
        let (inviter_end, mut raw) = pipe();
        let served = f.serve(id(2), inviter_end);
        raw.write_all(&bytes).await.unwrap();
        raw.flush().await.unwrap();
        let served = served.await.unwrap();
        let reply = read_frame(&mut raw, MAX_MESSAGE_LEN)
            .await
            .ok()
            .map(|b| Message::decode(&b).unwrap());
        (served, reply)
    }

    fn frame(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    fn name_frame() -> Vec<u8> {
        frame(&encode_join_request("x"))
    }

    #[tokio::test]
    async fn inviter_refuses_garbage_without_panicking() {
        let f = Fixture::new();
        let protocol = Some(Message::Refused {
            reason: Refusal::Protocol,
        });

        // An oversized length is refused before allocating.
        let (served, reply) = serve_raw(&f, u32::MAX.to_be_bytes().to_vec()).await;
        assert!(matches!(
            served,
            Err(Error::FrameTooLong {
                max: MAX_JOINER_FRAME,
                ..
            })
        ));
        assert_eq!(reply, protocol);

        // A join request that is not one.
        let (served, reply) = serve_raw(&f, frame(&[0xff, 0xff, 0xff])).await;
        assert!(matches!(served, Err(Error::JoinRequest(_))), "{served:?}");
        assert_eq!(reply, protocol);

        // A hello that is garbage.
        let mut bytes = name_frame();
        bytes.extend(frame(&[9, 9, 9]));
        let (served, reply) = serve_raw(&f, bytes).await;
        assert!(matches!(served, Err(Error::Handshake(_))), "{served:?}");
        assert_eq!(reply, protocol);

        // A proof first, out of order.
        let mut bytes = name_frame();
        bytes.extend(frame(&Message::Proof { proof: [0; 32] }.encode()));
        let (served, reply) = serve_raw(&f, bytes).await;
        assert!(served.is_err());
        assert_eq!(reply, protocol);

        // A stream cut in the middle of a frame.
        let mut bytes = name_frame();
        bytes.extend_from_slice(&40u32.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3]);
        let (inviter_end, mut raw) = pipe();
        let served = f.serve(id(2), inviter_end);
        raw.write_all(&bytes).await.unwrap();
        raw.close().await.unwrap();
        drop(raw);
        assert!(matches!(served.await.unwrap(), Err(Error::Closed)));

        // None of it touched the invitation.
        assert!(f.invitations.status().await.unwrap().joiner.is_none());
        assert!(!f.admitted());
    }

    /// Runs `join` against a fake inviter that answers the hello with `reply`.
    async fn join_against(reply: Vec<u8>) -> Result<Vec<u8>, Error> {
        let (mut fake, joiner_end) = pipe();
        let joining = tokio::spawn(join(
            joiner_end,
            id(2),
            invitation(9),
            "laptop",
            NOW,
            Timeouts::default(),
            |_| {},
        ));
        read_frame(&mut fake, MAX_JOINER_FRAME).await.unwrap();
        read_frame(&mut fake, MAX_JOINER_FRAME).await.unwrap();
        fake.write_all(&reply).await.unwrap();
        // Shut down the write side, so a cut-off reply ends in EOF.
        fake.close().await.unwrap();
        joining.await.unwrap()
    }

    #[tokio::test]
    async fn joiner_refuses_garbage_without_panicking() {
        let too_long = u32::try_from(MAX_MESSAGE_LEN + 1).unwrap().to_be_bytes();
        assert!(matches!(
            join_against(too_long.to_vec()).await,
            Err(Error::FrameTooLong { .. })
        ));
        assert!(matches!(
            join_against(frame(&[7, 7])).await,
            Err(Error::Handshake(handshake::Error::Malformed(_)))
        ));
        // A welcome before any challenge.
        let early = Message::Welcome {
            payload: b"secret".to_vec(),
        };
        assert!(matches!(
            join_against(frame(&early.encode())).await,
            Err(Error::Handshake(handshake::Error::UnexpectedMessage { .. }))
        ));
        // A challenge whose proof is wrong: someone without the secret.
        let forged = Message::Challenge {
            nonce: [1; 32],
            proof: [2; 32],
        };
        assert!(matches!(
            join_against(frame(&forged.encode())).await,
            Err(Error::Handshake(handshake::Error::WrongProof))
        ));
        // Cut off.
        assert!(matches!(join_against(vec![0, 0]).await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn frames_round_trip_and_bounds_hold() {
        let (mut a, mut b) = pipe();
        write_frame(&mut a, b"hello").await.unwrap();
        write_frame(&mut a, b"").await.unwrap();
        assert_eq!(read_frame(&mut b, 5).await.unwrap(), b"hello");
        assert_eq!(read_frame(&mut b, 5).await.unwrap(), b"");
        write_frame(&mut a, b"toolong").await.unwrap();
        assert!(matches!(
            read_frame(&mut b, 5).await,
            Err(Error::FrameTooLong { len: 7, max: 5 })
        ));
        let huge = vec![0; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            write_frame(&mut a, &huge).await,
            Err(Error::FrameTooLong { .. })
        ));
    }
}
