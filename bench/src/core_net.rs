//! Real node cores (`hearth_crdt::node::Node`, the sans-IO state machine
//! the daemon's engine thread drives) wired to each other in memory, for
//! P12.
//!
//! Every output is performed as a driver must, in order: a
//! [`Output::Persist`] batch is dropped (nothing reloads from it; the
//! store's commit is what P1 measures, not this), a [`Output::Send`] is
//! handed at once to the node at the other end of its session, a
//! [`Output::Close`] ends both ends, and a [`Output::Deliver`] (a contact
//! card, a share offer or answer on `/hearth/share/1`) is answered by the
//! addressed node through `Node::share_request` and brought back through
//! `Node::share_reply`; a [`Output::Query`] (`/hearth/query/1`) likewise
//! through `Node::query_request` and `Node::query_reply` (`None` for a
//! device not in the net), and every [`Output::Answered`] is kept by query
//! id ([`Net::answers`]). Dials and timers are ignored: sessions open only
//! where the scenario connects two nodes. So contacts, shares, acceptance,
//! the access-list frames, the share gate and the signatures all run the
//! core's own code, with nothing of the benchmark's in between.

use std::collections::{BTreeMap, VecDeque};

use anyhow::{Context, Result};
use hearth_crdt::node::{Config, Input, Millis, Node, Output, Outputs, SessionId};
use hearth_crypto::identity::{DeviceId, DeviceKey};
use hearth_crypto::membership::Log;

/// A frame one node sent another: (from, to, bytes).
pub(crate) type Sent = (usize, usize, Vec<u8>);

/// Nodes and the sessions between them.
pub(crate) struct Net {
    pub(crate) nodes: Vec<Node>,
    /// Open sessions: (node, its session id) → the other end.
    links: BTreeMap<(usize, SessionId), (usize, SessionId)>,
    next_session: u64,
    /// Every close a node asked for: (node, peer, reason).
    pub(crate) closed: Vec<(usize, DeviceId, String)>,
    now: Millis,
    /// Frames sent while recording.
    recording: Option<Vec<Sent>>,
    /// Every federated query's result, by query id.
    pub(crate) answers: BTreeMap<String, serde_json::Value>,
}

/// The devices of one account, named `names`: the first made the account
/// and added the others (the log a pairing leaves behind). Each node's card
/// names a made-up loopback address per device (nothing dials it here).
pub(crate) fn account(names: &[&str]) -> Result<Vec<Node>> {
    anyhow::ensure!(!names.is_empty(), "an account has at least one device");
    let keys: Vec<DeviceKey> = names
        .iter()
        .map(|_| DeviceKey::generate(&mut rand::rngs::OsRng))
        .collect();
    let mut log = Log::genesis(&keys[0], names[0], 0);
    for (i, key) in keys.iter().enumerate().skip(1) {
        log.add_device(&keys[0], key.id(), names[i], i as u64)
            .context("cannot add a device to the account")?;
    }
    let addrs: Vec<(DeviceId, Vec<String>)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.id(), vec![format!("/ip4/127.0.0.1/tcp/{}", 4000 + i)]))
        .collect();
    Ok(keys
        .into_iter()
        .zip(names)
        .map(|(key, name)| {
            let mut node = Node::new(key, name, log.clone(), Config::default());
            node.set_card_addrs(addrs.clone());
            node
        })
        .collect())
}

impl Net {
    pub(crate) fn new(nodes: Vec<Node>) -> Self {
        Self {
            nodes,
            links: BTreeMap::new(),
            next_session: 1,
            closed: Vec::new(),
            now: 1_000,
            recording: None,
            answers: BTreeMap::new(),
        }
    }

    /// The clock, moved on by 1 ms (every call sees a later time).
    pub(crate) fn tick(&mut self) -> Millis {
        self.now += 1;
        self.now
    }

    fn index_of(&self, device: DeviceId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id() == device)
    }

    fn input(&mut self, at: usize, input: Input) -> Outputs {
        let now = self.tick();
        self.nodes[at].handle(now, &mut rand::rngs::OsRng, input)
    }

    /// Starts keeping every frame sent, until [`Net::take_recording`].
    pub(crate) fn record(&mut self) {
        self.recording = Some(Vec::new());
    }

    /// The frames sent since [`Net::record`]; stops recording.
    pub(crate) fn take_recording(&mut self) -> Vec<Sent> {
        self.recording.take().unwrap_or_default()
    }

    /// Performs everything `out` (from node `from`) asks for, and what that
    /// causes, until nothing is left.
    pub(crate) fn carry(&mut self, from: usize, out: Outputs) {
        self.carry_all(VecDeque::from([(from, out)]));
    }

    /// [`Net::carry`] of several nodes' outputs at once, in order: what
    /// each causes is queued behind the others (as two Hellos cross).
    fn carry_all(&mut self, mut queue: VecDeque<(usize, Outputs)>) {
        while let Some((at, out)) = queue.pop_front() {
            for item in out.items {
                match item {
                    Output::Send { session, frame } => {
                        let Some(&(to, theirs)) = self.links.get(&(at, session)) else {
                            continue;
                        };
                        if let Some(kept) = self.recording.as_mut() {
                            kept.push((at, to, frame.clone()));
                        }
                        let out = self.input(
                            to,
                            Input::Frame {
                                session: theirs,
                                frame,
                            },
                        );
                        queue.push_back((to, out));
                    }
                    Output::Close {
                        session,
                        peer,
                        reason,
                    } => {
                        self.closed.push((at, peer, reason.to_string()));
                        if let Some((to, theirs)) = self.links.remove(&(at, session)) {
                            self.links.remove(&(to, theirs));
                            let out = self.input(to, Input::Closed { session: theirs });
                            queue.push_back((to, out));
                        }
                    }
                    Output::Deliver { peer, frame, .. } => {
                        let sender = self.nodes[at].id();
                        let now = self.tick();
                        let reply = match self.index_of(peer) {
                            Some(to) => {
                                let (_, bytes, out) =
                                    self.nodes[to].share_request(now, sender, &frame);
                                queue.push_back((to, out));
                                Some(bytes)
                            }
                            None => None,
                        };
                        let (_, out) = self.nodes[at].share_reply(now, peer, reply.as_deref());
                        queue.push_back((at, out));
                    }
                    Output::Query {
                        exchange,
                        peer,
                        frame,
                        ..
                    } => {
                        let sender = self.nodes[at].id();
                        let now = self.tick();
                        let reply = match self.index_of(peer) {
                            Some(to) => {
                                let (bytes, out) = self.nodes[to].query_request(
                                    now,
                                    &mut rand::rngs::OsRng,
                                    sender,
                                    &frame,
                                );
                                // The reply leaves after the answering node's
                                // outputs (its ε charge) are performed.
                                self.carry(to, out);
                                Some(bytes)
                            }
                            None => None,
                        };
                        let out = self.nodes[at].query_reply(now, exchange, reply.as_deref());
                        queue.push_back((at, out));
                    }
                    Output::Answered { query, result } => {
                        self.answers.insert(query, result);
                    }
                    // Persist: nothing reloads from it. Dials, timers and
                    // member sets: sessions open only where asked.
                    _ => {}
                }
            }
        }
    }

    /// Opens a sync session between `a` and `b` and carries it to rest.
    pub(crate) fn connect(&mut self, a: usize, b: usize) {
        let (sa, sb) = (
            SessionId(self.next_session),
            SessionId(self.next_session + 1),
        );
        self.next_session += 2;
        self.links.insert((a, sa), (b, sb));
        self.links.insert((b, sb), (a, sa));
        let (ida, idb) = (self.nodes[a].id(), self.nodes[b].id());
        let out_a = self.input(
            a,
            Input::Opened {
                session: sa,
                peer: idb,
                states: Vec::new(),
            },
        );
        let out_b = self.input(
            b,
            Input::Opened {
                session: sb,
                peer: ida,
                states: Vec::new(),
            },
        );
        // Both Hellos are on their way before either is read.
        self.carry_all(VecDeque::from([(a, out_a), (b, out_b)]));
    }

    /// Whether a session between `a` and `b` is open.
    pub(crate) fn connected(&self, a: usize, b: usize) -> bool {
        self.links.iter().any(|(&(x, _), &(y, _))| x == a && y == b)
    }

    /// Makes `a` and `b` established contacts: `a` adds `b`'s card under
    /// `b_name`, `b` accepts the request under `a_name`.
    pub(crate) fn befriend(
        &mut self,
        a: usize,
        b: usize,
        b_name: &str,
        a_name: &str,
    ) -> Result<()> {
        let card = self.nodes[b].card()?;
        let now = self.tick();
        let (_, out) = self.nodes[a].add_contact(now, card, b_name)?;
        self.carry(a, out);
        let card_name = self.nodes[a].name().to_owned();
        let now = self.tick();
        let (_, out) = self.nodes[b].accept_contact(now, &card_name, a_name)?;
        self.carry(b, out);
        Ok(())
    }

    /// Runs one command on node `at` and performs its outputs.
    pub(crate) fn run<T>(
        &mut self,
        at: usize,
        command: impl FnOnce(&mut Node, Millis) -> Result<(T, Outputs), hearth_crdt::node::Error>,
    ) -> Result<T> {
        let now = self.tick();
        let (value, out) = command(&mut self.nodes[at], now)?;
        self.carry(at, out);
        Ok(value)
    }
}
