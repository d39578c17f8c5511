//! Pairing in the simulation: new devices join an account through the
//! inviting flow the inviter's core holds ([`core::Node::invite`],
//! [`core::Node::inviting`]: the join request, hello, proof, the wait for
//! the code; [`core::Node::admit`]: the membership change and the welcome)
//! and the joiner's handshake ([`hearth_crypto::pairing::Joiner`]), as the
//! daemon's driver (`node/src/pairing.rs`) runs them. This module carries
//! the frames and keeps no flow state of its own.
//!
//! ```text
//! joiner                                   inviter
//!   name frame, Hello              ──▶
//!                                  ◀──     Challenge
//!   Proof (shows the check code)   ──▶     AwaitingConfirmation
//!                                          … human delay: the person types the code …
//!                                          right code: admit, persist the log
//!                                  ◀──     Welcome { encoded log }   (after the fsync)
//!   adopts the log, syncs as a member
//! ```
//!
//! Each attempt is one invitation (made by the inviter's core with the
//! seeded RNG, encoded to a ticket and decoded on the joiner, as a person
//! copying it would) and one pairing connection whose frames arrive in order after
//! the network's latency. A transport fault on a pairing frame, a device
//! going down, or a partition between the two ends the attempt; a wrong code
//! burns the invitation and the joiner is refused. Either way the joiner
//! starts over with a fresh invitation after `retry_delay_ms`.

use hearth_crdt::node::pairing::{SessionError, decode_join_request, encode_join_request};
use hearth_crypto::identity::DeviceId;
use hearth_crypto::membership::Log;
use hearth_crypto::pairing::{self as handshake, CheckCode, Joiner, JoinerEvent, Message, Refusal};
use hearth_crypto::ticket::Invitation;
use rand::Rng;
use rand::rngs::StdRng;

use super::{
    Arc, BTreeMap, Conn, Durable, Held, Kind, Node, Time, US_PER_MS, VecDeque, World, add_link,
    core, sample,
};
use crate::check::{self, AccessViolation, Verdict};
use crate::scenario::Scenario;

/// One join of the scenario, across its attempts.
#[derive(Debug)]
pub(super) struct JoinState {
    node: u32,
    inviter: u32,
    attempts: u32,
    wrong_left: u32,
    first_start: Option<Time>,
    joined_at: Option<Time>,
    abandoned: bool,
    /// The number of the current attempt (stale frames carry older ones).
    attempt_no: u32,
    current: Option<Attempt>,
}

/// One attempt: one invitation, one pairing connection.
#[derive(Debug)]
struct Attempt {
    /// The invitation's generation in the inviter's flow, once the inviter
    /// took the hello.
    generation: Option<u64>,
    joiner: Joiner,
    name: Option<String>,
    last_arrival: [Time; 2],
    confirmed: bool,
    /// Entries naming the joiner in the inviter's log when the attempt
    /// started: a refusal must leave it unchanged.
    entries_before: usize,
}

/// Creates the joining devices (not yet members) and their links: every
/// device of the account on a full topology, else the inviter and
/// `degree - 1` random others.
pub(super) fn add_joiners(
    scenario: &Scenario,
    config: &core::Config,
    rng: &mut StdRng,
    nodes: &mut Vec<Node>,
    conns: &mut Vec<Conn>,
) -> Vec<JoinState> {
    let per = scenario.topology.devices_per_account;
    let mut states = Vec::with_capacity(scenario.joins.len());
    for (j, join) in scenario.joins.iter().enumerate() {
        let index = nodes.len() as u32;
        let key = hearth_crypto::identity::DeviceKey::from_bytes(&rng.r#gen::<[u8; 32]>());
        // Until its welcome the device has no account; a log of its own
        // stands in and is never synced (nothing connects to it).
        let placeholder = Log::genesis(&key, "joining", 0);
        let base = join.account * per;
        let inviter = base + join.inviter;
        let mut peers: Vec<u32> = match scenario.topology.degree {
            None => (base..base + per).collect(),
            Some(d) => {
                let mut picked = vec![inviter];
                while picked.len() < (d as usize).min(per as usize) {
                    let p = base + rng.gen_range(0..per);
                    if !picked.contains(&p) {
                        picked.push(p);
                    }
                }
                picked
            }
        };
        if scenario.topology.degree.is_none() {
            // Earlier joiners of the same account are devices of it too.
            peers.extend(
                states
                    .iter()
                    .zip(&scenario.joins)
                    .filter(|(_, other)| other.account == join.account)
                    .map(|(s, _): (&JoinState, _)| s.node),
            );
        }
        let id = key.id();
        let admission = core::Members::of(id, &placeholder);
        nodes.push(Node {
            account: join.account,
            id,
            core: core::Node::new(key, "joining", placeholder, config.clone()),
            durable: Durable::default(),
            pending: Vec::new(),
            held: VecDeque::new(),
            fsync_scheduled: false,
            incarnation: 0,
            online: true,
            crashed: false,
            removed: false,
            member: false,
            joiner_of: Some(j as u32),
            timer: None,
            admission,
            shared_seen: BTreeMap::new(),
            links: Vec::new(),
            outbox: 0,
            seen: BTreeMap::new(),
            writes_made: 0,
            frames_sent: 0,
            bytes_sent: 0,
            arrivals: Default::default(),
        });
        for p in peers {
            add_link(nodes, conns, p, index);
        }
        states.push(JoinState {
            node: index,
            inviter,
            attempts: 0,
            wrong_left: join.wrong_codes_first,
            first_start: None,
            joined_at: None,
            abandoned: false,
            attempt_no: 0,
            current: None,
        });
    }
    states
}

/// Entries of `log` about `device`.
fn entries_about(log: &Log, device: &DeviceId) -> usize {
    log.entries()
        .iter()
        .filter(|e| e.op().device() == *device)
        .count()
}

impl World {
    fn now_ms(&self) -> u64 {
        self.now / 1_000
    }

    fn node_up(&self, n: u32) -> bool {
        let node = &self.nodes[n as usize];
        node.online && !node.crashed
    }

    /// Whether the two ends of join `j` can reach each other.
    fn pair_reachable(&self, j: u32) -> bool {
        let st = &self.joins[j as usize];
        let (a, b) = (st.node, st.inviter);
        let split = self
            .partition
            .as_ref()
            .is_some_and(|side| side[a as usize] != side[b as usize]);
        self.node_up(a) && self.node_up(b) && !split
    }

    pub(super) fn join_start(&mut self, j: u32) {
        let spec = self.scenario.joins[j as usize].clone();
        let st = &self.joins[j as usize];
        if st.joined_at.is_some() || st.abandoned || st.current.is_some() {
            return;
        }
        if st.attempts >= spec.max_attempts {
            self.joins[j as usize].abandoned = true;
            return;
        }
        let retry = (spec.retry_delay_ms * US_PER_MS).round() as Time;
        if !self.pair_reachable(j) {
            // The person waits until both devices are up and can see each
            // other; no invitation is opened meanwhile.
            self.push(retry.max(1), Kind::JoinStart { join: j });
            return;
        }
        let (node, inviter) = (st.node, st.inviter);
        let now_ms = self.now_ms();
        let joiner_id = self.nodes[node as usize].id;
        let ttl_s = spec.invitation_ttl_s.round() as u64;
        let addrs = vec![format!("/sim/device/{inviter}")];
        let now = self.core_now();
        let started = self.nodes[inviter as usize]
            .core
            .invite(now, &mut self.rng, ttl_s, addrs)
            .map_err(|e| e.to_string())
            .and_then(|invitation| {
                // The person copies the ticket to the new device.
                let read = Invitation::decode(&invitation.encode()).map_err(|e| e.to_string())?;
                let (joiner, hello) = Joiner::start(read, joiner_id, now_ms, &mut self.rng)
                    .map_err(|e| e.to_string())?;
                Ok((invitation, joiner, hello))
            });
        let st = &mut self.joins[j as usize];
        st.attempts += 1;
        st.attempt_no += 1;
        st.first_start.get_or_insert(self.now);
        self.counters.pairing_attempts += 1;
        let (invitation, joiner_sm, hello) = match started {
            Ok(parts) => parts,
            Err(why) => {
                self.pairing_violations
                    .push(format!("join {j}: cannot start pairing: {why}"));
                self.counters.pairings_failed += 1;
                self.push(retry.max(1), Kind::JoinStart { join: j });
                return;
            }
        };
        let entries_before = entries_about(self.nodes[inviter as usize].core.log(), &joiner_id);
        // The pairing connection opens after a dial delay.
        let dial = sample(&mut self.rng, self.scenario.network.connect_ms, US_PER_MS);
        let attempt = st.attempt_no;
        drop(invitation);
        st.current = Some(Attempt {
            generation: None,
            joiner: joiner_sm,
            name: None,
            last_arrival: [self.now + dial; 2],
            confirmed: false,
            entries_before,
        });
        self.pair_send(j, attempt, 0, encode_join_request(&format!("joined-{j}")));
        self.pair_send(j, attempt, 0, hello.encode());
    }

    /// Puts a pairing frame on the wire; `dir` 0 is joiner → inviter.
    pub(super) fn pair_send(&mut self, j: u32, attempt: u32, dir: usize, frame: Vec<u8>) {
        let st = &self.joins[j as usize];
        if st.attempt_no != attempt {
            return;
        }
        let Some(a) = st.current.as_ref() else {
            return;
        };
        let (from, to) = if dir == 0 {
            (st.node, st.inviter)
        } else {
            (st.inviter, st.node)
        };
        // The access check: before its confirmation a joining device gets
        // nothing but handshake messages — never the log, never data.
        self.frames_checked += 1;
        if dir == 1 {
            self.to_non_members += 1;
            if let Ok(Message::Welcome { .. }) = Message::decode(&frame)
                && !a.confirmed
            {
                self.violations.push(AccessViolation {
                    at_us: self.now,
                    from,
                    to,
                    collection: "membership log (welcome before confirmation)".to_owned(),
                });
            }
        }
        let sender = &mut self.nodes[from as usize];
        sender.frames_sent += 1;
        sender.bytes_sent += frame.len() as u64;
        if self.faulty() {
            let net = &self.scenario.network;
            let (loss, dup, reorder) = (net.loss, net.duplication, net.reorder);
            if self.rng.gen_bool(loss) || self.rng.gen_bool(dup) || self.rng.gen_bool(reorder) {
                self.pair_failed(j);
                return;
            }
        }
        let latency = sample(&mut self.rng, self.scenario.network.latency_ms, US_PER_MS);
        let Some(a) = self.joins[j as usize].current.as_mut() else {
            return;
        };
        let at = (self.now + latency).max(a.last_arrival[dir]);
        a.last_arrival[dir] = at;
        self.seq += 1;
        self.queue.push(super::Event {
            at,
            seq: self.seq,
            kind: Kind::PairDeliver {
                join: j,
                attempt,
                dir,
                frame,
            },
        });
    }

    /// Ends the current attempt of join `j` without a welcome and schedules
    /// a fresh one.
    fn pair_failed(&mut self, j: u32) {
        let st = &mut self.joins[j as usize];
        if st.current.take().is_none() {
            return;
        }
        self.counters.pairings_failed += 1;
        self.retry(j);
    }

    fn retry(&mut self, j: u32) {
        let d = (self.scenario.joins[j as usize].retry_delay_ms * US_PER_MS).round() as Time;
        self.push(d.max(1), Kind::JoinStart { join: j });
    }

    /// A device went down: attempts it takes part in end.
    pub(super) fn pairing_down(&mut self, me: u32) {
        for j in 0..self.joins.len() as u32 {
            let st = &self.joins[j as usize];
            if st.current.is_some() && (st.node == me || st.inviter == me) {
                self.pair_failed(j);
            }
        }
    }

    pub(super) fn pair_deliver(&mut self, j: u32, attempt: u32, dir: usize, frame: Vec<u8>) {
        let st = &self.joins[j as usize];
        if st.attempt_no != attempt || st.current.is_none() {
            return;
        }
        if !self.pair_reachable(j) {
            self.pair_failed(j);
            return;
        }
        if dir == 0 {
            self.inviter_receives(j, attempt, frame);
        } else {
            self.joiner_receives(j, attempt, frame);
        }
    }

    fn inviter_receives(&mut self, j: u32, attempt: u32, frame: Vec<u8>) {
        let now_ms = self.now_ms();
        let joiner_id = self.nodes[self.joins[j as usize].node as usize].id;
        let inviter = self.joins[j as usize].inviter;
        let st = &mut self.joins[j as usize];
        let flow = self.nodes[inviter as usize].core.inviting();
        let Some(a) = st.current.as_mut() else {
            return;
        };
        let Some(name) = a.name.clone() else {
            // The join request: a bounded name, cleaned, as the node records it.
            match decode_join_request(&frame) {
                Ok(name) => a.name = Some(name),
                Err(e) => {
                    let refusal = e.refusal_to_send();
                    self.refuse(j, attempt, 1, refusal);
                }
            }
            return;
        };
        match a.generation {
            None => match flow.hello(now_ms, &mut self.rng, joiner_id, &frame, name) {
                Ok((generation, challenge)) => {
                    a.generation = Some(generation);
                    self.pair_send(j, attempt, 1, challenge.encode());
                }
                Err(e) => self.refuse(j, attempt, 1, e.refusal_to_send()),
            },
            Some(generation) => {
                match flow.proof(now_ms, &mut self.rng, generation, joiner_id, &frame) {
                    Ok(()) => {
                        let delay = self.scenario.joins[j as usize].human_delay_ms;
                        let d = sample(&mut self.rng, delay, US_PER_MS);
                        self.push(d.max(1), Kind::PairConfirm { join: j, attempt });
                    }
                    Err((e, _)) => self.refuse(j, attempt, 1, e.refusal_to_send()),
                }
            }
        }
    }

    /// A step failed on one side: tell the other side when the node would,
    /// then end the attempt.
    fn refuse(&mut self, j: u32, attempt: u32, dir: usize, refusal: Option<Refusal>) {
        if let Some(reason) = refusal {
            // The refusal goes out; the attempt is over either way, so it
            // is not waited for.
            self.pair_send(j, attempt, dir, Message::Refused { reason }.encode());
        }
        self.pair_failed(j);
    }

    fn joiner_receives(&mut self, j: u32, attempt: u32, frame: Vec<u8>) {
        let inviter_id = self.nodes[self.joins[j as usize].inviter as usize].id;
        let Some(a) = self.joins[j as usize].current.as_mut() else {
            return;
        };
        let result = Message::decode(&frame).and_then(|m| a.joiner.handle(inviter_id, m));
        match result {
            Ok(JoinerEvent::ShowCode { reply, .. }) => {
                self.pair_send(j, attempt, 0, reply.encode());
            }
            Ok(JoinerEvent::Welcomed { payload }) => self.adopt(j, &payload),
            Err(handshake::Error::Refused(Refusal::WrongCode)) => {
                // Both ends are over: the inviter burned the invitation,
                // the joiner was refused. Start again with a new one.
                let now_ms = self.now / 1_000;
                let st = &mut self.joins[j as usize];
                let done = st.current.as_ref().is_some_and(|a| a.joiner.is_done());
                let flow = self.nodes[st.inviter as usize].core.inviting();
                let closed = flow.status(now_ms).is_none() && done;
                if !closed {
                    self.pairing_violations.push(format!(
                        "join {j}: a wrong code left the invitation or the joiner open"
                    ));
                }
                self.joins[j as usize].current = None;
                self.retry(j);
            }
            Err(e) => self.refuse(j, attempt, 0, e.refusal()),
        }
    }

    /// The person types the code on the inviter: the one the new device
    /// shows, or in a fraction of attempts a wrong one.
    pub(super) fn pair_confirm(&mut self, j: u32, attempt: u32) {
        let st = &self.joins[j as usize];
        if st.attempt_no != attempt || st.current.is_none() {
            return;
        }
        if !self.pair_reachable(j) {
            self.pair_failed(j);
            return;
        }
        let spec = &self.scenario.joins[j as usize];
        let p = spec.wrong_code_probability;
        let (node, inviter) = (st.node, st.inviter);
        let wrong = if st.wrong_left > 0 {
            self.joins[j as usize].wrong_left -= 1;
            true
        } else {
            self.rng.gen_bool(p)
        };
        let offset = self.rng.gen_range(1..1_000_000u32);
        let now_ms = self.now_ms();
        let st = &mut self.joins[j as usize];
        let Some(a) = st.current.as_mut() else {
            return;
        };
        let Some(shown) = a.joiner.code() else {
            return;
        };
        let typed = if wrong {
            (shown.value() + offset) % 1_000_000
        } else {
            shown.value()
        };
        let typed = format!("{typed:0width$}", width = CheckCode::DIGITS);
        match self.nodes[inviter as usize]
            .core
            .inviting()
            .confirm(now_ms, &typed)
        {
            Ok(confirmed) => {
                a.confirmed = true;
                self.admit(j, attempt, inviter, confirmed.joiner);
            }
            Err(e) => {
                if matches!(e, SessionError::Handshake(handshake::Error::WrongCode)) {
                    self.counters.pairings_refused += 1;
                    let joiner_id = self.nodes[node as usize].id;
                    let now = entries_about(self.nodes[inviter as usize].core.log(), &joiner_id);
                    if now != a.entries_before {
                        self.pairing_violations.push(format!(
                            "join {j}: a refused attempt changed the log's entries for the device"
                        ));
                    }
                    if let Some(reason) = e.refusal_to_send() {
                        self.pair_send(j, attempt, 1, Message::Refused { reason }.encode());
                    }
                    // The joiner's answer to the refusal ends the attempt;
                    // if the refusal is lost, the break does.
                } else {
                    self.refuse(j, attempt, 1, e.refusal_to_send());
                }
            }
        }
    }

    /// The right code: the inviter's core admits the device (the log, to
    /// persist and offer to its sessions) and makes the welcome, sent once
    /// that is durable.
    fn admit(&mut self, j: u32, attempt: u32, inviter: u32, device: DeviceId) {
        let now = self.core_now();
        let Some(generation) = self.joins[j as usize]
            .current
            .as_ref()
            .and_then(|a| a.generation)
        else {
            return;
        };
        let admitted = self.nodes[inviter as usize]
            .core
            .admit(now, generation, device);
        let frame = match admitted {
            Ok((welcome, out)) => {
                self.perform(inviter, None, out);
                match welcome {
                    Ok(m) => m.encode(),
                    Err(e) => {
                        self.refuse(j, attempt, 1, e.refusal_to_send());
                        return;
                    }
                }
            }
            Err(e) => {
                self.pairing_violations
                    .push(format!("join {j}: admitting the device failed: {e}"));
                self.pair_failed(j);
                return;
            }
        };
        let node = &mut self.nodes[inviter as usize];
        if node.pending.is_empty() && node.held.is_empty() {
            self.pair_send(j, attempt, 1, frame);
        } else {
            node.held.push_back(Held::Pair {
                join: j,
                attempt,
                frame,
            });
            self.max_held = self.max_held.max(node.held.len() as u64);
            self.ensure_fsync(inviter);
        }
    }

    /// The joiner takes the account's log from its welcome and becomes a
    /// member: it creates its store from it (durable at once, as the node's
    /// `init_joined` commits before it serves) and dials its links.
    fn adopt(&mut self, j: u32, payload: &[u8]) {
        let node = self.joins[j as usize].node;
        let inviter = self.joins[j as usize].inviter;
        let me = self.nodes[node as usize].id;
        let account = self.nodes[inviter as usize].core.log().account_id();
        let log = match Log::decode(payload) {
            Ok(log) if log.account_id() == account && log.is_member(&me) => log,
            Ok(_) => {
                self.pairing_violations.push(format!(
                    "join {j}: the welcome's log does not list the device"
                ));
                self.pair_failed(j);
                return;
            }
            Err(e) => {
                self.pairing_violations
                    .push(format!("join {j}: the welcome's log does not decode: {e}"));
                self.pair_failed(j);
                return;
            }
        };
        let log = Arc::new(log);
        let config = self.core.clone();
        let n = &mut self.nodes[node as usize];
        let key = hearth_crypto::identity::DeviceKey::from_bytes(&n.core.key().to_bytes());
        let name = n.core.name().to_owned();
        n.core = core::Node::new(key, &name, Arc::clone(&log), config);
        n.timer = None;
        n.durable.log = Some(log);
        n.member = true;
        let st = &mut self.joins[j as usize];
        st.current = None;
        st.joined_at = Some(self.now);
        self.counters.pairings_succeeded += 1;
        self.wake(node);
    }

    /// After `me`'s log changed: links to joined devices it now admits may
    /// connect; its core hears they are reachable.
    pub(super) fn admit_joiners(&mut self, me: u32) {
        if self.joins.is_empty() {
            return;
        }
        let links = self.nodes[me as usize].links.clone();
        for c in links {
            let [a, b] = self.conns[c as usize].ends;
            let other = if a == me { b } else { a };
            if self.nodes[other as usize].joiner_of.is_some()
                && !self.conns[c as usize].up
                && self.reachable(c)
            {
                let peer = self.nodes[other as usize].id;
                let now = self.core_now();
                let out = self.nodes[me as usize].core.handle(
                    now,
                    &mut self.rng,
                    core::Input::Reachable { peer },
                );
                self.perform(me, None, out);
            }
        }
    }

    pub(super) fn pairing_durations(&self) -> Vec<Time> {
        let mut v: Vec<Time> = self
            .joins
            .iter()
            .filter_map(|s| Some(s.joined_at? - s.first_start?))
            .collect();
        v.sort_unstable();
        v
    }

    /// The pairing check: every join completed, with the device a member
    /// on every member replica of its account; no refused attempt added
    /// it; and nothing else went wrong along the way.
    pub(super) fn pairing_verdict(&self) -> Verdict {
        let mut joined = Vec::new();
        let mut problems = self.pairing_violations.clone();
        for (j, st) in self.joins.iter().enumerate() {
            let node = &self.nodes[st.node as usize];
            if st.joined_at.is_none() {
                problems.push(format!(
                    "join {j}: device {} never joined after {} attempts",
                    st.node, st.attempts
                ));
                continue;
            }
            joined.push((node.account, node.id, st.node));
        }
        let replicas: Vec<(u32, u32, &Log)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.member && !n.removed)
            .map(|(i, n)| (i as u32, n.account, &**n.core.log()))
            .collect();
        check::pairing(
            &joined,
            &replicas,
            &problems,
            self.counters.pairing_attempts,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Join, Range};
    use crate::sim::us;

    fn scenario(wrong_first: u32) -> Scenario {
        let mut s: Scenario = toml::from_str(
            r#"
            name = "pair"
            duration_s = 60
            [topology]
            accounts = 1
            devices_per_account = 3
            [workload]
            writes_per_device_per_min = 12
            "#,
        )
        .unwrap();
        s.joins.push(Join {
            at_s: 10.0,
            account: 0,
            inviter: 1,
            human_delay_ms: Range::exactly(2_000.0),
            wrong_code_probability: 0.0,
            wrong_codes_first: wrong_first,
            retry_delay_ms: 1_000.0,
            invitation_ttl_s: 300.0,
            max_attempts: 5,
        });
        s.validate().unwrap();
        s
    }

    #[test]
    fn a_wrong_code_burns_the_invitation_and_the_retry_joins() {
        let s = scenario(1);
        let mut world = World::new(&s, 3).unwrap();
        // Run until the first attempt is over.
        let joiner = world.joins[0].node;
        let inviter = world.joins[0].inviter;
        let mut refused_seen = false;
        while let Some(ev) = world.queue.pop() {
            world.now = ev.at;
            let was_first = world.joins[0].attempt_no == 1 && world.joins[0].current.is_some();
            world.dispatch(ev.kind);
            if was_first && world.joins[0].current.is_none() {
                // The wrong code: refused on both sides, the log unchanged.
                assert_eq!(world.counters.pairings_refused, 1);
                assert_eq!(world.counters.pairings_succeeded, 0);
                let id = world.nodes[joiner as usize].id;
                assert!(!world.nodes[inviter as usize].core.log().is_member(&id));
                assert_eq!(
                    entries_about(world.nodes[inviter as usize].core.log(), &id),
                    0
                );
                assert!(!world.nodes[joiner as usize].member);
                refused_seen = true;
            }
            if world.now > us(s.duration_s + 600.0) {
                break;
            }
        }
        assert!(refused_seen);
        assert!(
            world.pairing_violations.is_empty(),
            "{:?}",
            world.pairing_violations
        );
        assert_eq!(world.counters.pairing_attempts, 2);
        assert_eq!(world.counters.pairings_succeeded, 1);
        let outcome = world.finish(true);
        for v in &outcome.verdicts {
            assert!(v.passed, "{v:?}");
        }
        assert_eq!(outcome.pairing_us.len(), 1);
    }

    #[test]
    fn the_inviter_refuses_a_wrong_code_and_the_joiner_hears_it() {
        // The state machines as the simulator drives them, step by step.
        let s = scenario(0);
        let mut world = World::new(&s, 1).unwrap();
        world.now = us(10.0);
        world.join_start(0);
        let mut confirm = None;
        while let Some(ev) = world.queue.pop() {
            if let Kind::PairConfirm { join, attempt } = ev.kind {
                confirm = Some((join, attempt));
                break;
            }
            world.now = ev.at;
            if matches!(ev.kind, Kind::PairDeliver { .. }) {
                world.dispatch(ev.kind);
            }
        }
        let (join, attempt) = confirm.unwrap();
        world.joins[0].wrong_left = 1;
        world.pair_confirm(join, attempt);
        let now_ms = world.now / 1_000;
        let inviter = world.joins[0].inviter;
        let flow = world.nodes[inviter as usize].core.inviting();
        assert!(flow.status(now_ms).is_none(), "burnt");
        let a = world.joins[0].current.as_ref().unwrap();
        assert!(!a.joiner.is_done());
        while let Some(ev) = world.queue.pop() {
            world.now = ev.at;
            if let Kind::PairDeliver { .. } = ev.kind {
                world.dispatch(ev.kind);
                break;
            }
        }
        assert!(world.joins[0].current.is_none());
        assert_eq!(world.counters.pairings_refused, 1);
        assert!(world.pairing_violations.is_empty());
    }
}
