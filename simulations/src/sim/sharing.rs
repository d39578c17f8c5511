//! Accounts that know each other: contacts, shares, level changes and
//! revocations, driven through the cores' own commands
//! ([`core::Node::add_contact`], [`core::Node::accept_contact`],
//! [`core::Node::share`], [`core::Node::accept_share`],
//! [`core::Node::unshare`]) as a person would on one of their devices, with
//! the contact requests of `/hearth/share/1` ([`core::Output::Deliver`])
//! carried as one request and one reply after the network's latency (the
//! reply only after the answering device's batch is durable).
//!
//! The plan is drawn at set-up from the seed: the contact graph, which
//! accounts share, with whom and at which level, and when each level
//! changes and each grant is revoked. Every device of two accounts that
//! are contacts, or fellow members of a share, gets a link; a link
//! connects only while both ends' admission gates
//! ([`core::Output::MembersChanged`]) let the other sync, as the daemon's
//! transport gate does. A person's step that cannot happen yet (the device
//! is down, the offer has not arrived) is tried again 5 s later.
//!
//! What the checkers see ([`crate::check`]):
//! - **revocation**: every shared write records the accounts revoked in
//!   its writer's list when it was written; a device of such an account
//!   that ever holds it (at that revision or later) is a violation;
//! - **refusal**: a hostile account's forged writes (`f…` ids) must never
//!   reach a replica of another account;
//! - **share convergence**: after heal, every device of every member that
//!   still holds the share (and accepted it, and is honest) holds the same
//!   records in it as the owner.

use std::collections::BTreeSet;

use hearth_crdt::node::Share;
use hearth_crypto::acl::{AclState, Level};
use hearth_crypto::membership::{AccountId, EntryHash};
use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::json;

use super::{Arc, BTreeMap, Held, Kind, Log, Node, Time, US_PER_MS, US_PER_S, World, add_link, us};
use crate::check::{self, ShareReplica, Verdict};
use crate::scenario::Scenario;

/// A person's step is tried again this long after it could not happen.
const RETRY_S: f64 = 5.0;
/// Steps abandoned after this many tries (the share checkers then fail).
const MAX_TRIES: u32 = 1_000;

/// A step of the sharing plan, or a contact request on its way.
#[derive(Debug)]
pub(super) enum Step {
    /// Account `from` adds `to`'s card.
    AddContact { from: u32, to: u32 },
    /// Account `by` accepts the request of `of`.
    AcceptContact { by: u32, of: u32 },
    /// The owner grants (or changes the level of) grant `grant` of `share`.
    Grant { share: u32, grant: u32 },
    /// The recipient of grant `grant` accepts the offer.
    Accept { share: u32, grant: u32 },
    /// The owner changes the grant's level once.
    Level { share: u32, grant: u32 },
    /// The owner revokes the grant.
    Revoke { share: u32, grant: u32 },
    /// A request arrives at device `to`.
    Request { from: u32, to: u32, frame: Vec<u8> },
    /// The reply (or the failure) of `peer` reaches device `node`.
    Reply {
        node: u32,
        incarnation: u32,
        peer: u32,
        bytes: Option<Vec<u8>>,
    },
}

/// One grant of a planned share.
#[derive(Debug)]
struct Grant {
    account: u32,
    level: Level,
    accepted: bool,
    revoked: bool,
}

/// One planned share: an owner account's collection and its grants.
#[derive(Debug)]
struct Planned {
    owner: u32,
    id: Option<EntryHash>,
    grants: Vec<Grant>,
}

/// One write to a shared collection.
#[derive(Debug)]
pub(super) struct SharedWrite {
    share: u32,
    origin: u32,
    k: u32,
    rev: String,
    generation: u64,
    at: Time,
    pub(super) acked: bool,
    pub(super) lost: bool,
    /// Devices it reached: (device, time, hops).
    reached: Vec<(u32, Time, u32)>,
}

/// The sharing plan and what the run saw of it.
#[derive(Debug, Default)]
pub(super) struct Sharing {
    accounts: Vec<AccountId>,
    logs: Vec<Arc<Log>>,
    hostile: BTreeSet<u32>,
    shares: Vec<Planned>,
    /// The share a local collection of an account holds.
    locals: BTreeMap<(u32, String), u32>,
    /// The local name of a share on an account.
    names: BTreeMap<(u32, u32), String>,
    pub(super) writes: Vec<SharedWrite>,
    /// The indexes in `writes` of each (share, writer, k), in order.
    writes_by_key: BTreeMap<(u32, u32, u32), Vec<u32>>,
    /// Per (share, writer, k): per account, the first generation written
    /// while that account was revoked in the writer's list.
    hidden: BTreeMap<(u32, u32, u32), BTreeMap<u32, u64>>,
    revocation_violations: Vec<String>,
    refusal_violations: Vec<String>,
    /// Arrivals the revocation and refusal checks looked at.
    arrivals_checked: u64,
    /// Steps given up after [`MAX_TRIES`].
    abandoned: u64,
    /// Contact requests not scheduled yet: (requester, recipient).
    pending_requests: Vec<(u32, u32)>,
}

/// The sharing figures of a run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Figures {
    /// Contacts established (both sides).
    pub contacts: u64,
    /// Shares planned, and grants in them.
    pub shares: u64,
    /// Grants made.
    pub grants: u64,
    /// Offers accepted.
    pub accepted: u64,
    /// Level changes made.
    pub level_changes: u64,
    /// Revocations made.
    pub revocations: u64,
    /// Writes into shared collections.
    pub shared_writes: u64,
    /// Writes a reader or revoked writer tried that its own node refused.
    pub refused_locally: u64,
    /// Writes hostile accounts forged past their node's rules.
    pub forged: u64,
    /// Sessions ended because a peer's change was refused by the gate.
    pub refused_by_gate: u64,
    /// Contact requests carried.
    pub requests: u64,
    /// Steps abandoned.
    pub abandoned: u64,
    /// Per converged shared write: time to its last member device, µs.
    #[serde(skip)]
    pub converge_us: Vec<Time>,
    /// Per converged shared write: rounds (largest hop count).
    #[serde(skip)]
    pub rounds: Vec<u32>,
    /// Shared writes that did not reach every member device.
    pub unconverged: u64,
    /// Mean member devices per share.
    pub replicas_per_share: f64,
}

fn petname(account: u32) -> String {
    format!("acct-{account}")
}

/// Draws the plan and adds the links between the accounts it relates.
pub(super) fn plan(
    scenario: &Scenario,
    rng: &mut rand::rngs::StdRng,
    nodes: &mut [Node],
    conns: &mut Vec<super::Conn>,
) -> Sharing {
    let g = &scenario.sharing;
    let t = &scenario.topology;
    let per = t.devices_per_account;
    let mut sharing = Sharing {
        accounts: (0..t.accounts)
            .map(|a| nodes[(a * per) as usize].core.log().account_id())
            .collect(),
        logs: (0..t.accounts)
            .map(|a| Arc::clone(nodes[(a * per) as usize].core.log()))
            .collect(),
        ..Sharing::default()
    };
    let n = t.accounts;
    let mut edges: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut requests = Vec::new();
    // The federated querier adds every other account.
    if let Some(f) = &scenario.federated {
        for b in (0..n).filter(|&b| b != f.querier) {
            edges.insert((f.querier.min(b), f.querier.max(b)));
            requests.push((f.querier, b));
        }
    }
    if g.contacts_per_account == 0 {
        for &(a, b) in &edges {
            for i in 0..per {
                for j in 0..per {
                    add_link(nodes, conns, a * per + i, b * per + j);
                }
            }
        }
        sharing.pending_requests = requests;
        return sharing;
    }
    for a in 0..n {
        let mut others: Vec<u32> = (0..n).filter(|&b| b != a).collect();
        others.shuffle(rng);
        for &b in others.iter().take(g.contacts_per_account as usize) {
            if edges.insert((a.min(b), a.max(b))) {
                requests.push((a, b));
            }
        }
    }
    let mut neighbours: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &(a, b) in &edges {
        neighbours.entry(a).or_default().push(b);
        neighbours.entry(b).or_default().push(a);
    }
    for a in 0..n {
        if rng.gen_bool(g.hostile_fraction) {
            sharing.hostile.insert(a);
        }
    }
    let mut related = edges.clone();
    for a in 0..n {
        if !rng.gen_bool(g.share_fraction) {
            continue;
        }
        let mut contacts = neighbours.get(&a).cloned().unwrap_or_default();
        contacts.shuffle(rng);
        contacts.truncate(g.members_per_share as usize);
        let grants: Vec<Grant> = contacts
            .iter()
            .map(|&b| Grant {
                account: b,
                level: if rng.gen_bool(g.write_fraction) {
                    Level::Write
                } else {
                    Level::Read
                },
                accepted: false,
                revoked: false,
            })
            .collect();
        for (i, &x) in contacts.iter().enumerate() {
            for &y in &contacts[i + 1..] {
                related.insert((x.min(y), x.max(y)));
            }
        }
        sharing.shares.push(Planned {
            owner: a,
            id: None,
            grants,
        });
    }
    // Every device of related accounts may reach every other (joiners
    // reach theirs through their own account's devices).
    for (a, b) in related {
        for i in 0..per {
            for j in 0..per {
                add_link(nodes, conns, a * per + i, b * per + j);
            }
        }
    }
    sharing.pending_requests = requests;
    sharing
}

impl Sharing {
    /// Whether account `a` is hostile.
    pub(super) fn is_hostile(&self, a: u32) -> bool {
        self.hostile.contains(&a)
    }
}

impl World {
    /// Puts the plan's first steps on the queue.
    pub(super) fn schedule_sharing(&mut self) {
        let g = self.scenario.sharing.clone();
        for (from, to) in std::mem::take(&mut self.sharing.pending_requests) {
            let d = super::sample(&mut self.rng, g.contacts_at_s, US_PER_S);
            self.push(d, Kind::Share(Step::AddContact { from, to }, 0));
        }
        for share in 0..self.sharing.shares.len() as u32 {
            let grants = self.sharing.shares[share as usize].grants.len() as u32;
            for grant in 0..grants {
                let at = super::sample(&mut self.rng, g.grant_at_s, US_PER_S);
                self.push(at, Kind::Share(Step::Grant { share, grant }, 0));
                let change = self.rng.gen_bool(g.level_change_fraction);
                let revoke = self.rng.gen_bool(g.revoke_fraction);
                let mut times = [
                    super::sample(&mut self.rng, g.change_at_s, US_PER_S),
                    super::sample(&mut self.rng, g.change_at_s, US_PER_S),
                ];
                times.sort_unstable();
                if change {
                    self.push(times[0], Kind::Share(Step::Level { share, grant }, 0));
                }
                if revoke {
                    self.push(times[1], Kind::Share(Step::Revoke { share, grant }, 0));
                }
            }
        }
    }

    /// Runs one step; `tries` counts earlier attempts of it.
    pub(super) fn share_step(&mut self, step: Step, tries: u32) {
        let again = match step {
            Step::AddContact { from, to } => self.add_contact(from, to),
            Step::AcceptContact { by, of } => self.accept_contact(by, of),
            Step::Grant { share, grant } => self.grant(share, grant, false),
            Step::Level { share, grant } => self.grant(share, grant, true),
            Step::Accept { share, grant } => self.accept_share(share, grant),
            Step::Revoke { share, grant } => self.revoke(share, grant),
            Step::Request { from, to, frame } => {
                self.share_request(from, to, frame);
                None
            }
            Step::Reply {
                node,
                incarnation,
                peer,
                bytes,
            } => {
                self.share_reply(node, incarnation, peer, bytes);
                None
            }
        };
        if let Some(step) = again {
            if tries + 1 >= MAX_TRIES {
                self.sharing.abandoned += 1;
            } else {
                self.push(us(RETRY_S), Kind::Share(step, tries + 1));
            }
        }
    }

    /// A device of `account` that can act now: up, a member, not removed;
    /// the first such from a random start.
    fn device_of(&mut self, account: u32) -> Option<u32> {
        let per = self.scenario.topology.devices_per_account;
        let start = self.rng.gen_range(0..per);
        (0..per)
            .map(|i| account * per + (start + i) % per)
            .find(|&d| self.can_act(d))
    }

    fn can_act(&self, d: u32) -> bool {
        let n = &self.nodes[d as usize];
        n.online && !n.crashed && n.member && !n.removed
    }

    fn add_contact(&mut self, from: u32, to: u32) -> Option<Step> {
        let Some(me) = self.device_of(from) else {
            return Some(Step::AddContact { from, to });
        };
        let per = self.scenario.topology.devices_per_account;
        // The card is read off a screen: it needs no network.
        let Ok(card) = self.nodes[(to * per) as usize].core.card() else {
            self.counters.session_errors += 1;
            return None;
        };
        let now = self.core_now();
        match self.nodes[me as usize]
            .core
            .add_contact(now, card, &petname(to))
        {
            Ok((_, out)) => {
                self.perform(me, None, out);
                let d = super::sample(
                    &mut self.rng,
                    self.scenario.sharing.accept_delay_s,
                    US_PER_S,
                );
                self.push(d, Kind::Share(Step::AcceptContact { by: to, of: from }, 0));
                None
            }
            Err(_) => {
                self.counters.session_errors += 1;
                None
            }
        }
    }

    fn accept_contact(&mut self, by: u32, of: u32) -> Option<Step> {
        let retry = Some(Step::AcceptContact { by, of });
        let Some(me) = self.device_of(by) else {
            return retry;
        };
        let account = self.sharing.accounts[of as usize];
        let Some(contact) = self.nodes[me as usize].core.contacts().get(&account) else {
            return retry;
        };
        if contact.state() == hearth_crdt::node::contacts::State::Established {
            return None;
        }
        let now = self.core_now();
        match self.nodes[me as usize]
            .core
            .accept_contact(now, &account.to_string(), &petname(of))
        {
            Ok((_, out)) => {
                self.perform(me, None, out);
                None
            }
            // The request is not here yet.
            Err(_) => retry,
        }
    }

    /// The owner's first device grants the planned level (or, `change`,
    /// the other one). Only that device administers the share, so no
    /// device of the owner creates a second list for the same collection.
    fn grant(&mut self, share: u32, grant: u32, change: bool) -> Option<Step> {
        let retry = Some(if change {
            Step::Level { share, grant }
        } else {
            Step::Grant { share, grant }
        });
        let per = self.scenario.topology.devices_per_account;
        let owner = self.sharing.shares[share as usize].owner;
        let me = owner * per;
        if !self.can_act(me) {
            return retry;
        }
        let g = &self.sharing.shares[share as usize].grants[grant as usize];
        if g.revoked {
            return None;
        }
        let (account, planned) = (g.account, g.level);
        let level = match (change, planned) {
            (false, l) => l,
            (true, Level::Read) => Level::Write,
            (true, Level::Write) => Level::Read,
        };
        let collection = self.scenario.sharing.collection.clone();
        if self.nodes[me as usize]
            .core
            .collections()
            .get(&collection)
            .is_none_or(|l| l.data.is_empty())
        {
            // Sharing needs the collection: its first record.
            self.sharing
                .locals
                .insert((owner, collection.clone()), share);
            self.sharing
                .names
                .insert((share, owner), collection.clone());
            self.shared_put(me, share, 0);
        }
        let now = self.core_now();
        match self.nodes[me as usize]
            .core
            .share(now, &collection, &petname(account), level)
        {
            Ok((made, out)) => {
                let planned = &mut self.sharing.shares[share as usize];
                planned.id = Some(made.id());
                planned.grants[grant as usize].level = level;
                self.sharing
                    .locals
                    .insert((owner, collection.clone()), share);
                self.sharing.names.insert((share, owner), collection);
                if change {
                    self.sharing_figures.level_changes += 1;
                } else {
                    self.sharing_figures.grants += 1;
                    let d = super::sample(
                        &mut self.rng,
                        self.scenario.sharing.accept_delay_s,
                        US_PER_S,
                    );
                    self.push(d, Kind::Share(Step::Accept { share, grant }, 0));
                }
                self.perform(me, None, out);
                None
            }
            // The contact is not established on this device yet.
            Err(_) => retry,
        }
    }

    fn accept_share(&mut self, share: u32, grant: u32) -> Option<Step> {
        let retry = Some(Step::Accept { share, grant });
        let planned = &self.sharing.shares[share as usize];
        let (Some(id), account) = (planned.id, planned.grants[grant as usize].account) else {
            return retry;
        };
        if planned.grants[grant as usize].accepted {
            return None;
        }
        let Some(me) = self.device_of(account) else {
            return retry;
        };
        if !self.nodes[me as usize].core.shares().contains_key(&id) {
            return retry;
        }
        let now = self.core_now();
        match self.nodes[me as usize]
            .core
            .accept_share(now, &id.to_string(), None)
        {
            Ok((accepted, out)) => {
                if let Some(local) = accepted.local.clone() {
                    self.sharing.locals.insert((account, local.clone()), share);
                    self.sharing.names.insert((share, account), local);
                }
                self.sharing.shares[share as usize].grants[grant as usize].accepted = true;
                self.sharing_figures.accepted += 1;
                self.perform(me, None, out);
                None
            }
            // Revoked before it was accepted: nothing to accept.
            Err(hearth_crdt::node::Error::Share(hearth_crdt::node::ShareError::Revoked)) => None,
            Err(_) => retry,
        }
    }

    fn revoke(&mut self, share: u32, grant: u32) -> Option<Step> {
        let retry = Some(Step::Revoke { share, grant });
        let per = self.scenario.topology.devices_per_account;
        let planned = &self.sharing.shares[share as usize];
        let (owner, account) = (planned.owner, planned.grants[grant as usize].account);
        let me = owner * per;
        if planned.id.is_none() || !self.can_act(me) {
            return retry;
        }
        let collection = self.scenario.sharing.collection.clone();
        let now = self.core_now();
        match self.nodes[me as usize]
            .core
            .unshare(now, &collection, &petname(account))
        {
            Ok((_, out)) => {
                self.sharing.shares[share as usize].grants[grant as usize].revoked = true;
                self.sharing_figures.revocations += 1;
                self.perform(me, None, out);
                None
            }
            Err(_) => retry,
        }
    }

    // --- contact requests over /hearth/share/1 ----------------------------

    /// Whether devices `a` and `b` can talk now (both up, same side).
    pub(super) fn can_talk(&self, a: u32, b: u32) -> bool {
        let up = |n: u32| {
            let node = &self.nodes[n as usize];
            node.online && !node.crashed
        };
        let split = self
            .partition
            .as_ref()
            .is_some_and(|side| side[a as usize] != side[b as usize]);
        up(a) && up(b) && !split
    }

    /// `Output::Deliver`: a request from `me` to the device `peer`.
    pub(super) fn share_deliver(
        &mut self,
        me: u32,
        peer: hearth_crypto::identity::DeviceId,
        frame: Vec<u8>,
    ) {
        self.sharing_figures.requests += 1;
        let incarnation = self.nodes[me as usize].incarnation;
        let to = self.by_id.get(&peer).copied();
        match to {
            Some(to) if self.can_talk(me, to) => {
                let d = super::sample(&mut self.rng, self.scenario.network.latency_ms, US_PER_MS);
                self.push(
                    d,
                    Kind::Share(
                        Step::Request {
                            from: me,
                            to,
                            frame,
                        },
                        0,
                    ),
                );
            }
            _ => {
                // A dial that fails: the requester hears so.
                let d = super::sample(&mut self.rng, self.scenario.network.connect_ms, US_PER_MS);
                let peer = to.unwrap_or(me);
                self.push(
                    d.max(1),
                    Kind::Share(
                        Step::Reply {
                            node: me,
                            incarnation,
                            peer,
                            bytes: None,
                        },
                        0,
                    ),
                );
            }
        }
    }

    fn share_request(&mut self, from: u32, to: u32, frame: Vec<u8>) {
        let incarnation = self.nodes[from as usize].incarnation;
        if !self.can_talk(from, to) {
            self.push(
                1,
                Kind::Share(
                    Step::Reply {
                        node: from,
                        incarnation,
                        peer: to,
                        bytes: None,
                    },
                    0,
                ),
            );
            return;
        }
        let now = self.core_now();
        let sender = self.nodes[from as usize].id;
        let (_, bytes, out) = self.nodes[to as usize]
            .core
            .share_request(now, sender, &frame);
        self.perform(to, None, out);
        // The answer goes only after what it promised is durable.
        let node = &mut self.nodes[to as usize];
        if node.pending.is_empty() && node.held.is_empty() {
            self.send_reply(from, incarnation, to, bytes);
        } else {
            node.held.push_back(Held::Reply {
                to: from,
                incarnation,
                bytes,
            });
            self.max_held = self.max_held.max(node.held.len() as u64);
        }
    }

    /// The reply of `from` leaves for device `to`.
    pub(super) fn send_reply(&mut self, to: u32, incarnation: u32, from: u32, bytes: Vec<u8>) {
        let d = super::sample(&mut self.rng, self.scenario.network.latency_ms, US_PER_MS);
        self.push(
            d,
            Kind::Share(
                Step::Reply {
                    node: to,
                    incarnation,
                    peer: from,
                    bytes: Some(bytes),
                },
                0,
            ),
        );
    }

    fn share_reply(&mut self, node: u32, incarnation: u32, peer: u32, bytes: Option<Vec<u8>>) {
        let n = &self.nodes[node as usize];
        if n.crashed || n.incarnation != incarnation {
            return;
        }
        // A reply to a device that went offline was lost with the stream.
        let bytes = bytes.filter(|_| self.can_talk(node, peer));
        let now = self.core_now();
        let peer_id = self.nodes[peer as usize].id;
        let (_, out) = self.nodes[node as usize]
            .core
            .share_reply(now, peer_id, bytes.as_deref());
        self.perform(node, None, out);
    }

    // --- admission between accounts ----------------------------------------

    /// `Output::MembersChanged`: the device's gate now admits these peers;
    /// its core hears of every linked peer it may sync with now.
    pub(super) fn members_changed(&mut self, me: u32, members: hearth_crdt::node::Members) {
        self.nodes[me as usize].admission = members;
        let links = self.nodes[me as usize].links.clone();
        for c in links {
            let [a, b] = self.conns[c as usize].ends;
            let other = if a == me { b } else { a };
            if self.nodes[other as usize].account == self.nodes[me as usize].account
                || self.conns[c as usize].up
                || !self.reachable(c)
            {
                continue;
            }
            let peer = self.nodes[other as usize].id;
            let now = self.core_now();
            let out = self.nodes[me as usize].core.handle(
                now,
                &mut self.rng,
                hearth_crdt::node::Input::Reachable { peer },
            );
            self.perform(me, None, out);
        }
    }

    // --- shared writes ------------------------------------------------------

    /// The shares device `me`'s account holds under a local name its core
    /// knows, with this device's level in each (`None`: owner).
    fn shares_held(&self, me: u32) -> Vec<(u32, String)> {
        let account = self.nodes[me as usize].account;
        let core = &self.nodes[me as usize].core;
        self.sharing
            .names
            .iter()
            .filter(|((_, a), _)| *a == account)
            .filter(|(_, local)| core.share_of(local).is_some())
            .map(|((s, _), local)| (*s, local.clone()))
            .collect()
    }

    /// A workload write that goes to a shared collection, if this device's
    /// account holds one; returns whether it wrote (or tried to).
    pub(super) fn shared_write(&mut self, me: u32) -> bool {
        let held = self.shares_held(me);
        if held.is_empty() || !self.rng.gen_bool(self.scenario.sharing.shared_writes) {
            return false;
        }
        let (share, local) = held[self.rng.gen_range(0..held.len())].clone();
        let k = self.rng.gen_range(0..self.scenario.workload.ids_per_device);
        let account = self.nodes[me as usize].account;
        let may_write = self.writer_state(me, &local).is_some_and(|(owner, state)| {
            owner == self.sharing.accounts[account as usize]
                || state.may_write(&self.sharing.accounts[account as usize])
        });
        if !may_write && self.sharing.is_hostile(account) {
            self.forge(me, &local, k);
        } else if !self.shared_put(me, share, k) {
            self.sharing_figures.refused_locally += 1;
        }
        true
    }

    /// The list state device `me` holds for its local collection `local`,
    /// with the share's owner.
    fn writer_state(&self, me: u32, local: &str) -> Option<(AccountId, AclState)> {
        let core = &self.nodes[me as usize].core;
        let share: &Share = core.share_of(local)?;
        let owner = share.owner();
        let log = self
            .sharing
            .accounts
            .iter()
            .position(|a| *a == owner)
            .map(|i| Arc::clone(&self.sharing.logs[i]))?;
        let log = if core.log().account_id() == owner {
            Arc::clone(core.log())
        } else {
            core.contacts()
                .get(&owner)
                .map_or(log, |c| Arc::clone(&c.log))
        };
        Some((owner, share.acl.state(&log)))
    }

    /// Writes `s{me}-{k}` into the share's local collection through the
    /// node's own rules; false if the node refused it.
    fn shared_put(&mut self, me: u32, share: u32, k: u32) -> bool {
        let account = self.nodes[me as usize].account;
        let Some(local) = self.sharing.names.get(&(share, account)).cloned() else {
            return false;
        };
        let revoked: Vec<u32> = match self.writer_state(me, &local) {
            Some((_, state)) => self.sharing.shares[share as usize]
                .grants
                .iter()
                .map(|g| g.account)
                .filter(|a| state.is_revoked(&self.sharing.accounts[*a as usize]))
                .collect(),
            None => Vec::new(),
        };
        let now = self.core_now();
        let node = &mut self.nodes[me as usize];
        node.writes_made += 1;
        let body = json!({ "n": node.writes_made, "pad": self.pad });
        let put = node.core.put(
            now,
            &mut self.rng,
            &local,
            Some(format!("s{me}-{k}")),
            body,
            hearth_crdt::collection::PutMode::Upsert,
        );
        let Ok((written, out)) = put else {
            return false;
        };
        self.perform(me, None, out);
        let generation = check::rev_generation(&written.rev).unwrap_or(0);
        for a in revoked {
            self.sharing
                .hidden
                .entry((share, me, k))
                .or_default()
                .entry(a)
                .or_insert(generation);
        }
        let index = self.sharing.writes.len() as u32;
        self.sharing
            .writes_by_key
            .entry((share, me, k))
            .or_default()
            .push(index);
        self.sharing.writes.push(SharedWrite {
            share,
            origin: me,
            k,
            rev: written.rev,
            generation,
            at: self.now,
            acked: false,
            lost: false,
            reached: Vec::new(),
        });
        self.nodes[me as usize]
            .shared_seen
            .insert((share, me, k), (generation, 0));
        let node = &mut self.nodes[me as usize];
        node.held.push_back(Held::SharedAck { write: index });
        self.max_held = self.max_held.max(node.held.len() as u64);
        self.sharing_figures.shared_writes += 1;
        self.ensure_fsync(me);
        true
    }

    /// A hostile device writes `f{me}-{k}` past its node's rules.
    fn forge(&mut self, me: u32, local: &str, k: u32) {
        let now = self.core_now();
        let body = json!({ "forged": true, "pad": self.pad });
        let forged = self.nodes[me as usize]
            .core
            .forge(now, local, &format!("f{me}-{k}"), body);
        if let Ok((_, out)) = forged {
            self.sharing_figures.forged += 1;
            self.perform(me, None, out);
        }
    }

    /// Records that `me` now holds these records of its local collection
    /// `name`, reached from `from`; checks them against the revocations
    /// and the forgeries.
    pub(super) fn share_arrivals(
        &mut self,
        me: u32,
        from: u32,
        name: &str,
        records: &[(String, String)],
    ) {
        let account = self.nodes[me as usize].account;
        let Some(&share) = self.sharing.locals.get(&(account, name.to_owned())) else {
            return;
        };
        for (id, rev) in records {
            self.sharing.arrivals_checked += 1;
            self.check_held(me, share, id, rev);
            let Some((origin, k)) = parse(id, 's') else {
                continue;
            };
            let generation = check::rev_generation(rev).unwrap_or(0);
            let key = (share, origin, k);
            let prev = self.nodes[me as usize]
                .shared_seen
                .get(&key)
                .map_or(0, |s| s.0);
            if generation <= prev {
                continue;
            }
            let hops = self.nodes[from as usize]
                .shared_seen
                .get(&key)
                .map_or(0, |s| s.1)
                + 1;
            self.nodes[me as usize]
                .shared_seen
                .insert(key, (generation, hops));
            let now = self.now;
            let Some(indexes) = self.sharing.writes_by_key.get(&key) else {
                continue;
            };
            for &i in indexes {
                let w = &mut self.sharing.writes[i as usize];
                if !w.lost && w.generation > prev && w.generation <= generation {
                    w.reached.push((me, now, hops));
                }
            }
        }
    }

    /// The revocation and refusal checks of one record `me` holds.
    fn check_held(&mut self, me: u32, share: u32, id: &str, rev: &str) {
        let account = self.nodes[me as usize].account;
        if let Some((origin, _)) = parse(id, 'f')
            && self.nodes.get(origin as usize).map(|n| n.account) != Some(account)
        {
            self.sharing.refusal_violations.push(format!(
                "device {me} (account {account}) holds {id}, forged by device {origin}, at {} µs",
                self.now
            ));
        }
        if let Some((origin, k)) = parse(id, 's') {
            let generation = check::rev_generation(rev).unwrap_or(0);
            if let Some(&first) = self
                .sharing
                .hidden
                .get(&(share, origin, k))
                .and_then(|h| h.get(&account))
                && first <= generation
            {
                self.sharing.revocation_violations.push(format!(
                    "device {me} of revoked account {account} holds {id} at {rev}, written by device {origin} after the revocation (first hidden generation {first}), at {} µs",
                    self.now
                ));
            }
        }
    }

    // --- the end --------------------------------------------------------------

    /// The three share checkers and the figures.
    pub(super) fn sharing_verdicts(&mut self) -> Vec<Verdict> {
        if self.scenario.sharing.contacts_per_account == 0 {
            return Vec::new();
        }
        // Every record every replica ends with passes the same checks.
        let mut held = Vec::new();
        for (me, node) in self.nodes.iter().enumerate() {
            for ((account, local), &share) in &self.sharing.locals {
                if *account != node.account {
                    continue;
                }
                if let Some(l) = node.core.collections().get(local) {
                    for (id, record) in l.data.records() {
                        let rev = record.get("_rev").and_then(|r| r.as_str()).unwrap_or("");
                        held.push((me as u32, share, id.clone(), rev.to_owned()));
                    }
                }
            }
        }
        for (me, share, id, rev) in held {
            self.sharing.arrivals_checked += 1;
            self.check_held(me, share, &id, &rev);
        }
        let mut replicas = Vec::new();
        let mut member_devices = Vec::new();
        let per = self.scenario.topology.devices_per_account;
        for (s, planned) in self.sharing.shares.iter().enumerate() {
            let s = s as u32;
            let Some(_) = planned.id else { continue };
            let mut accounts = vec![planned.owner];
            accounts.extend(
                planned
                    .grants
                    .iter()
                    .filter(|g| {
                        g.accepted && !g.revoked && !self.sharing.hostile.contains(&g.account)
                    })
                    .map(|g| g.account),
            );
            if self.sharing.hostile.contains(&planned.owner) {
                continue;
            }
            let mut devices = Vec::new();
            for &a in &accounts {
                let Some(local) = self.sharing.names.get(&(s, a)) else {
                    continue;
                };
                for d in 0..per {
                    let me = a * per + d;
                    let node = &self.nodes[me as usize];
                    if node.removed || !node.member {
                        continue;
                    }
                    devices.push(me);
                    let records = node
                        .core
                        .collections()
                        .get(local)
                        .map(|l| serde_json::to_vec(l.data.records()).unwrap_or_default())
                        .unwrap_or_else(|| b"{}".to_vec());
                    replicas.push(ShareReplica {
                        share: s,
                        node: me,
                        account: a,
                        records: *blake3::hash(&records).as_bytes(),
                    });
                }
            }
            member_devices.push((s, devices));
        }
        self.share_propagation(&member_devices);
        self.sharing_figures.abandoned = self.sharing.abandoned;
        self.sharing_figures.contacts = self.established_contacts();
        self.sharing_figures.shares = self.sharing.shares.len() as u64;
        vec![
            check::revocation(
                &self.sharing.revocation_violations,
                self.sharing.arrivals_checked,
            ),
            check::refusal(
                &self.sharing.refusal_violations,
                self.sharing_figures.forged,
                self.sharing_figures.refused_by_gate,
            ),
            check::share_convergence(&replicas, self.sharing.abandoned),
        ]
    }

    /// Contact pairs both of whose first devices hold the other as
    /// established.
    fn established_contacts(&self) -> u64 {
        let per = self.scenario.topology.devices_per_account;
        let mut n = 0;
        for (a, node) in self.nodes.iter().enumerate().step_by(per as usize) {
            let a = (a as u32) / per;
            n += node
                .core
                .contacts()
                .values()
                .filter(|c| c.state() == hearth_crdt::node::contacts::State::Established)
                .filter(|c| {
                    self.sharing
                        .accounts
                        .iter()
                        .position(|x| *x == c.account)
                        .is_some_and(|b| b as u32 > a)
                })
                .count() as u64;
        }
        n
    }

    /// Time to converge and rounds of every shared write over the devices
    /// of its share's final members.
    fn share_propagation(&mut self, members: &[(u32, Vec<u32>)]) {
        let by_share: BTreeMap<u32, &Vec<u32>> = members.iter().map(|(s, d)| (*s, d)).collect();
        let mut total = 0usize;
        for (_, d) in members {
            total += d.len();
        }
        if !members.is_empty() {
            self.sharing_figures.replicas_per_share = total as f64 / members.len() as f64;
        }
        for w in &self.sharing.writes {
            if w.lost || self.nodes[w.origin as usize].removed {
                continue;
            }
            let Some(devices) = by_share.get(&w.share) else {
                continue;
            };
            if !devices.contains(&w.origin) {
                continue;
            }
            let mut last = w.at;
            let mut hops = 0;
            let mut all = true;
            for &d in devices.iter().filter(|&&d| d != w.origin) {
                match w.reached.iter().find(|r| r.0 == d) {
                    Some(&(_, at, h)) => {
                        last = last.max(at);
                        hops = hops.max(h);
                    }
                    None => all = false,
                }
            }
            if all {
                self.sharing_figures.converge_us.push(last - w.at);
                self.sharing_figures.rounds.push(hops);
            } else {
                self.sharing_figures.unconverged += 1;
            }
        }
        self.sharing_figures.converge_us.sort_unstable();
        self.sharing_figures.rounds.sort_unstable();
    }

    /// The acknowledged shared writes, for the durability check.
    pub(super) fn shared_acked(&self) -> Vec<check::AckedWrite> {
        self.sharing
            .writes
            .iter()
            .filter(|w| w.acked && !self.nodes[w.origin as usize].removed)
            .filter_map(|w| {
                let account = self.nodes[w.origin as usize].account;
                let local = self.sharing.names.get(&(w.share, account))?;
                Some(check::AckedWrite {
                    node: w.origin,
                    account,
                    collection: local.clone(),
                    id: format!("s{}-{}", w.origin, w.k),
                    rev: w.rev.clone(),
                })
            })
            .collect()
    }
}

/// `<prefix><origin>-<k>`.
fn parse(id: &str, prefix: char) -> Option<(u32, u32)> {
    let (origin, k) = id.strip_prefix(prefix)?.split_once('-')?;
    Some((origin.parse().ok()?, k.parse().ok()?))
}
