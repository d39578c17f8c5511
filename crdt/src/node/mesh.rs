//! The node's side of the mesh: one sync session per connected member, what
//! a peer's frame changes, and the account's membership.
//!
//! - **Persist, then answer, then forward.** A frame goes through the peer's
//!   [`Session`]. Every collection it created, merged into or whose shard
//!   heads it moved (whether or not a record visibly changed) has its chunks
//!   staged, with the sync states and the membership log when it grew, in
//!   one [`Batch`]. Only after that batch come the answer to the peer and
//!   the offers to the other sessions, so no peer learns of state that a
//!   crash could still lose.
//! - **Membership.** Adding a device (after a confirmed pairing) or removing
//!   one appends a signed entry; a peer's log is merged by its session. Every
//!   change of the member set closes the sessions of devices that left,
//!   sends the log to every other session, and yields
//!   [`Output::MembersChanged`] for the driver's admission gate.
//! - **Access.** A session's peer must be a member on every frame (checked
//!   by [`Session`]); a stream from a non-member is refused when it opens.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hearth_crypto::identity::DeviceId;
use hearth_crypto::membership::{self, Log};

use super::data::check_doctype;
use super::shares::Scope;
use super::{Batch, Catalog, Error, Loaded, Millis, Node, Output, Outputs, SessionId, Write};
use crate::collection::{Collection, ShardIndex};
use crate::query::Indexes;
use crate::sync::{self, Session};

/// The account's member devices, as the network layer needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// This device.
    pub me: DeviceId,
    /// Every member device, this one included.
    pub devices: BTreeSet<DeviceId>,
    /// The devices of every contact account (added by us or asking to be),
    /// which may use `/hearth/share/1`.
    pub contacts: BTreeSet<DeviceId>,
    /// The devices of other accounts this one shares a collection with
    /// now (both sides active in it), which may also sync: contacts'
    /// devices, and those of fellow members of a share.
    pub peers: BTreeSet<DeviceId>,
    /// Where those peers listen, as their accounts' cards say (for a fellow
    /// member, the card came with the share's list).
    pub addrs: BTreeMap<DeviceId, Vec<String>>,
}

impl Members {
    /// The member set of `log`, seen from `me`.
    pub fn of(me: DeviceId, log: &Log) -> Members {
        Members {
            me,
            devices: log.members().into_iter().map(|m| m.device).collect(),
            contacts: BTreeSet::new(),
            peers: BTreeSet::new(),
            addrs: BTreeMap::new(),
        }
    }

    /// Whether `device` may open a sync session: a member, or a device of
    /// an account something is shared with.
    pub fn may_sync(&self, device: &DeviceId) -> bool {
        self.devices.contains(device) || self.peers.contains(device)
    }
}

/// Why the node ended a session.
#[derive(Debug)]
pub enum CloseReason {
    /// The driver reported the stream ended or undeliverable.
    StreamEnded,
    /// A newer stream with the same peer replaced it.
    Replaced,
    /// The peer is not (or no longer) a member of the account.
    NotAMember,
    /// The peer's account shares nothing with this one any more.
    NotShared,
    /// The peer sent what the session refuses, or a session step failed.
    Refused(sync::Error),
    /// The driver could not make a batch durable (see [`Node::close_all`]).
    StoreFailed,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::StreamEnded => f.write_str("stream closed"),
            CloseReason::Replaced => f.write_str("a new sync stream replaced it"),
            CloseReason::NotAMember => f.write_str("the peer is not a member of the account"),
            CloseReason::NotShared => f.write_str("nothing is shared with the peer's account now"),
            CloseReason::Refused(e) => write!(f, "it sent data this device refuses: {e}"),
            CloseReason::StoreFailed => f.write_str("storing its changes failed"),
        }
    }
}

/// One open session.
#[derive(Debug)]
pub(super) struct Peer {
    id: SessionId,
    session: Session,
    /// The scope last announced to a device of another account.
    announced: Option<Arc<Scope>>,
}

/// The node's collections and log, as a sync session sees them: all of
/// them for a member, only a [`Scope`] (under wire names) for a device of
/// another account.
struct Replica<'n> {
    collections: &'n mut BTreeMap<String, Loaded>,
    log: &'n mut Arc<Log>,
    actor: automerge::ActorId,
    now: Millis,
    /// `Some` for a device of another account (empty: nothing shared).
    scope: Option<Arc<Scope>>,
    /// The gates of shared collections, by local name.
    gates: Arc<BTreeMap<String, sync::Gate>>,
}

impl Replica<'_> {
    /// The local collection a session name means.
    fn local<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        match &self.scope {
            Some(scope) => scope.local_of(name),
            None => Some(name),
        }
    }

    /// The name the session uses for the local collection `local`.
    fn session_name(&self, local: &str) -> Option<String> {
        match &self.scope {
            Some(scope) => scope.wire_of(local).map(str::to_owned),
            None => Some(local.to_owned()),
        }
    }
}

impl sync::Replica for Replica<'_> {
    type CreateError = Error;

    fn collection_names(&self) -> Vec<String> {
        match &self.scope {
            Some(scope) => scope
                .shares
                .iter()
                .filter(|(_, (local, _, _))| self.collections.contains_key(local))
                .map(|(wire, _)| wire.clone())
                .collect(),
            None => self.collections.keys().cloned().collect(),
        }
    }

    fn collection(&self, name: &str) -> Option<&Collection> {
        let local = self.local(name)?;
        self.collections.get(local).map(|l| &l.data)
    }

    fn collection_mut(&mut self, name: &str) -> Option<&mut Collection> {
        let local = self.local(name)?.to_owned();
        self.collections.get_mut(&local).map(|l| &mut l.data)
    }

    fn create_collection(&mut self, name: &str, shards: u16) -> Result<(), Error> {
        let name = match self.local(name) {
            Some(local) => local.to_owned(),
            None => return Err(Error::BadDoctype(name.to_owned())),
        };
        let name = name.as_str();
        // A peer names it: the same rules as a local write's collection.
        check_doctype(name)?;
        let data = Collection::new(name, shards, self.actor.clone())?;
        self.collections.insert(
            name.to_string(),
            Loaded {
                data,
                indexes: Indexes::default(),
                meta: Catalog::new(shards, self.now),
            },
        );
        Ok(())
    }

    fn membership(&self) -> &Log {
        self.log
    }

    fn membership_mut(&mut self) -> &mut Log {
        Arc::make_mut(self.log)
    }

    fn admits(&self, peer: &DeviceId) -> bool {
        match &self.scope {
            Some(scope) => !scope.shares.is_empty(),
            None => self.log.is_member(peer),
        }
    }

    fn carries_log(&self) -> bool {
        self.scope.is_none()
    }

    fn may_hold(&self, name: &str) -> bool {
        self.local(name).is_some()
    }

    fn access_lists(&self) -> Vec<(String, Vec<u8>)> {
        self.scope.as_ref().map_or_else(Vec::new, |scope| {
            scope
                .shares
                .iter()
                .map(|(wire, (_, _, acl))| (wire.clone(), acl.clone()))
                .collect()
        })
    }

    fn gate(&self, name: &str) -> Option<sync::Gate> {
        self.gates.get(self.local(name)?).cloned()
    }
}

impl Node {
    /// The replica as a session with `peer` sees it.
    fn replica_for(&mut self, now: Millis, peer: Option<&DeviceId>) -> Replica<'_> {
        let actor = self.actor();
        let scope = peer
            .filter(|p| !self.log.is_member(p))
            .map(|p| self.cached_scope(p).unwrap_or_default());
        // Another device of the account is trusted as this one is: its
        // changes are only held back until the access list state they name
        // is here (their signatures are still kept and passed on). A
        // contact's device meets the gates of the shares.
        let gates = match scope {
            Some(_) => self.cached_gates(),
            None => self.cached_member_gates(),
        };
        Replica {
            collections: &mut self.collections,
            log: &mut self.log,
            actor,
            now,
            scope,
            gates,
        }
    }

    /// The member set now, with the devices of contacts and of accounts
    /// something is shared with.
    pub fn members(&self) -> Members {
        let mut members = Members::of(self.key.id(), &self.log);
        members.contacts = self
            .contacts()
            .values()
            .flat_map(super::Contact::devices)
            .filter(|d| !members.devices.contains(d))
            .collect();
        let peers = self.share_peers();
        members.peers = peers
            .keys()
            .filter(|d| !members.devices.contains(d))
            .copied()
            .collect();
        members.addrs = peers
            .into_iter()
            .filter(|(d, addrs)| members.peers.contains(d) && !addrs.is_empty())
            .collect();
        members
    }

    /// The peers with an open session.
    pub fn connected(&self) -> impl Iterator<Item = &DeviceId> {
        self.sessions.keys()
    }

    pub(super) fn peer_of_session(&self, session: SessionId) -> Option<DeviceId> {
        self.sessions
            .iter()
            .find(|(_, p)| p.id == session)
            .map(|(peer, _)| *peer)
    }

    pub(super) fn open_session(
        &mut self,
        now: Millis,
        session: SessionId,
        peer: DeviceId,
        states: Vec<(String, ShardIndex, Vec<u8>)>,
        out: &mut Outputs,
    ) {
        let announced = match self.log.is_member(&peer) {
            true => None,
            false => self.cached_scope(&peer),
        };
        if peer == self.key.id() || !(self.log.is_member(&peer) || announced.is_some()) {
            out.push(Output::Close {
                session,
                peer,
                reason: CloseReason::NotAMember,
            });
            return;
        }
        let mut s = Session::new(peer, states, self.config.limits);
        let hello = s.start(&self.replica_for(now, Some(&peer)));
        self.links.opened(peer, now);
        if let Some(old) = self.sessions.insert(
            peer,
            Peer {
                id: session,
                session: s,
                announced,
            },
        ) {
            out.push(Output::Close {
                session: old.id,
                peer,
                reason: CloseReason::Replaced,
            });
        }
        match hello {
            Ok(frames) => self.send(session, frames, out),
            Err(e) => self.close_session(now, peer, CloseReason::Refused(e), out),
        }
    }

    fn send(&self, session: SessionId, frames: Vec<Vec<u8>>, out: &mut Outputs) {
        for frame in frames {
            out.push(Output::Send { session, frame });
        }
    }

    /// Ends `peer`'s session, remembering when it was last seen.
    pub(super) fn close_session(
        &mut self,
        now: Millis,
        peer: DeviceId,
        reason: CloseReason,
        out: &mut Outputs,
    ) {
        if let Some(p) = self.sessions.remove(&peer) {
            self.links.ended(peer, now);
            out.persist(Batch {
                writes: vec![Write::PeerSeen { peer, at_ms: now }],
            });
            out.push(Output::Close {
                session: p.id,
                peer,
                reason,
            });
        }
    }

    /// Ends every session, for a driver whose store failed.
    pub fn close_all(&mut self, now: Millis) -> Outputs {
        let mut out = Outputs::default();
        let peers: Vec<DeviceId> = self.sessions.keys().copied().collect();
        for peer in peers {
            self.close_session(now, peer, CloseReason::StoreFailed, &mut out);
        }
        out
    }

    pub(super) fn session_frame(
        &mut self,
        now: Millis,
        session: SessionId,
        frame: &[u8],
        out: &mut Outputs,
    ) {
        let Some(peer) = self.peer_of_session(session) else {
            return;
        };
        let Some(mut p) = self.sessions.remove(&peer) else {
            return;
        };
        let heads_before = self.log.heads();
        let scoped = !self.log.is_member(&peer);
        let mut replica = self.replica_for(now, Some(&peer));
        let result = p.session.receive(&mut replica, frame);
        // Effects name collections as the session does; the node by their
        // local names.
        let result = result.map(|mut fx| {
            if let Some(scope) = replica.scope.as_ref() {
                let local = |n: &String| scope.local_of(n).map(str::to_owned).unwrap_or_default();
                fx.created = fx.created.iter().map(local).collect();
                for (name, _) in &mut fx.merged {
                    *name = local(name);
                }
                for (name, _) in &mut fx.changed {
                    *name = local(name);
                }
            }
            fx
        });
        drop(replica);
        self.sessions.insert(peer, p);
        // Entries the session merged passed the log's checks, even when the
        // frame as a whole was refused afterwards; they are stored either way.
        let log_moved = self.log.heads() != heads_before;
        #[cfg_attr(not(feature = "planted-bugs"), allow(unused_mut))]
        let mut fx = match result {
            Ok(fx) => fx,
            Err(e) => {
                if log_moved {
                    out.persist(Batch {
                        writes: vec![Write::Membership(Arc::clone(&self.log))],
                    });
                    self.publish_members(now, Some(peer), out);
                }
                let reason = match e {
                    sync::Error::NotMember { .. } if scoped => CloseReason::NotShared,
                    sync::Error::NotMember { .. } => CloseReason::NotAMember,
                    e => CloseReason::Refused(e),
                };
                self.close_session(now, peer, reason, out);
                return;
            }
        };
        let mut batch = Batch::default();
        if log_moved {
            batch.writes.push(Write::Membership(Arc::clone(&self.log)));
        }
        // Every collection the frame touched, whether or not a record became
        // visible: a shard whose heads moved has chunks to store.
        let mut touched: BTreeSet<&str> = fx.created.iter().map(String::as_str).collect();
        touched.extend(fx.merged.iter().map(|(n, _)| n.as_str()));
        touched.extend(fx.changed.iter().map(|(n, _)| n.as_str()));
        let touched: Vec<String> = touched.into_iter().map(str::to_owned).collect();
        let mut merged: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for (name, written) in fx.merged {
            merged.entry(name).or_default().extend(written);
        }
        // The contact and share records another device of the account changed.
        let mut contacts_changed = Vec::new();
        let mut shares_changed = Vec::new();
        for name in &touched {
            let written = merged.remove(name).unwrap_or_default();
            if name == super::contacts::COLLECTION {
                contacts_changed.extend(written.iter().map(|w| w.id.clone()));
            }
            if name == super::shares::COLLECTION {
                shares_changed.extend(written.iter().map(|w| w.id.clone()));
            }
            self.stage(name, &written, &mut batch);
        }
        if !fx.created.is_empty() {
            self.set_notes();
        }
        for (collection, shard, bytes) in fx.states {
            batch.writes.push(Write::SyncState {
                peer,
                collection,
                shard,
                bytes,
            });
        }
        // The one wrong order a test may plant: the answer before the batch.
        #[cfg(feature = "planted-bugs")]
        if self.config.planted == Some(super::PlantedBug::SendBeforePersist) {
            self.send(session, std::mem::take(&mut fx.send), out);
        }
        out.persist(batch);
        self.send(session, fx.send, out);
        if !contacts_changed.is_empty() {
            self.refresh_contacts(now, contacts_changed.iter().map(String::as_str), out);
        }
        if !shares_changed.is_empty() {
            self.refresh_shares(now, shares_changed.iter().map(String::as_str), out);
        }
        // Access lists come before the data they govern: merged (and passed
        // on to every other session) before the next frame is read.
        for (wire, bytes) in std::mem::take(&mut fx.access_lists) {
            if !scoped {
                continue;
            }
            if let Err(reason) = self.take_acl(now, &wire, &bytes, out) {
                self.close_session(
                    now,
                    peer,
                    CloseReason::Refused(sync::Error::NotShared {
                        collection: format!("{wire} ({reason})"),
                    }),
                    out,
                );
                return;
            }
        }
        self.after_merge(
            now,
            peer,
            fx.changed,
            log_moved || fx.membership_changed,
            out,
        );
    }

    /// Offers shards a peer's frame changed to every other session, and acts
    /// on a grown log.
    fn after_merge(
        &mut self,
        now: Millis,
        from: DeviceId,
        changed: Vec<(String, ShardIndex)>,
        log_changed: bool,
        out: &mut Outputs,
    ) {
        let mut by_collection: BTreeMap<String, Vec<ShardIndex>> = BTreeMap::new();
        for (name, shard) in changed {
            by_collection.entry(name).or_default().push(shard);
        }
        for (name, shards) in by_collection {
            self.offer(now, &name, &shards, Some(from), out);
        }
        if log_changed {
            self.publish_members(now, None, out);
        }
    }

    /// Offers `shards` of `name` to every open session but `except`'s.
    pub(super) fn offer(
        &mut self,
        now: Millis,
        name: &str,
        shards: &[ShardIndex],
        except: Option<DeviceId>,
        out: &mut Outputs,
    ) {
        self.each_session(now, except, out, |session, replica| {
            match replica.session_name(name) {
                Some(wire) => session.local_change(replica, &wire, shards),
                None => Ok(Vec::new()),
            }
        });
    }

    /// After shares changed: every session with another account's device
    /// announces its scope again (access lists first), or closes when
    /// nothing is shared with that account any more.
    pub(super) fn rescope(&mut self, now: Millis, out: &mut Outputs) {
        let peers: Vec<DeviceId> = self
            .sessions
            .keys()
            .copied()
            .filter(|p| !self.log.is_member(p))
            .collect();
        for peer in peers {
            let Some(scope) = self.cached_scope(&peer) else {
                self.close_session(now, peer, CloseReason::NotShared, out);
                continue;
            };
            // A change elsewhere in the shares leaves this peer's as it was:
            // nothing to announce again.
            if self.sessions.get(&peer).and_then(|p| p.announced.as_ref()) == Some(&scope) {
                continue;
            }
            let Some(mut p) = self.sessions.remove(&peer) else {
                continue;
            };
            let frames = p.session.restart(&self.replica_for(now, Some(&peer)));
            let id = p.id;
            p.announced = Some(scope);
            self.sessions.insert(peer, p);
            match frames {
                Ok(frames) => self.send(id, frames, out),
                Err(e) => self.close_session(now, peer, CloseReason::Refused(e), out),
            }
        }
    }

    /// Runs `make` on every open session but `except`'s and sends what it
    /// returns; a session whose frames cannot be made closes.
    fn each_session(
        &mut self,
        now: Millis,
        except: Option<DeviceId>,
        out: &mut Outputs,
        mut make: impl FnMut(&mut Session, &Replica<'_>) -> Result<Vec<Vec<u8>>, sync::Error>,
    ) {
        let peers: Vec<DeviceId> = self
            .sessions
            .keys()
            .copied()
            .filter(|p| Some(*p) != except)
            .collect();
        for peer in peers {
            let Some(mut p) = self.sessions.remove(&peer) else {
                continue;
            };
            let frames = make(&mut p.session, &self.replica_for(now, Some(&peer)));
            let id = p.id;
            self.sessions.insert(peer, p);
            match frames {
                Ok(frames) => self.send(id, frames, out),
                Err(e) => self.close_session(now, peer, CloseReason::Refused(e), out),
            }
        }
    }

    /// After the log changed: sessions of devices that left close, the
    /// driver hears of the new member set, and every other session (but
    /// `except`'s, whose peer sent it) gets the log.
    fn publish_members(&mut self, now: Millis, except: Option<DeviceId>, out: &mut Outputs) {
        let before = self.published.devices.clone();
        self.publish_admission(now, out);
        let after = self.published.devices.clone();
        if before != after {
            // Every contact must learn of our new member set.
            self.contacts_owe_card(now, out);
        }
        self.each_session(now, except, out, |session, replica| {
            session.local_membership_change(replica)
        });
    }

    /// Tells the driver who to admit when that changed; sessions of devices
    /// that left the account close.
    pub(super) fn publish_admission(&mut self, now: Millis, out: &mut Outputs) {
        let after = self.members();
        if self.published == after {
            return;
        }
        let before = std::mem::replace(&mut self.published, after.clone());
        for removed in before.devices.difference(&after.devices) {
            self.close_session(now, *removed, CloseReason::NotAMember, out);
        }
        self.links.retain(|d| after.may_sync(d));
        out.push(Output::MembersChanged(after));
    }

    /// Appends a log entry made by `change`, persists the log and acts on it.
    fn change_membership(
        &mut self,
        now: Millis,
        change: impl FnOnce(
            &mut Log,
            &hearth_crypto::identity::DeviceKey,
        ) -> Result<(), membership::Error>,
    ) -> Result<Outputs, Error> {
        let mut log = (*self.log).clone();
        change(&mut log, &self.key)?;
        Ok(self.replace_log(now, log))
    }

    /// Makes `log` the account's: persisted, then acted on.
    fn replace_log(&mut self, now: Millis, log: Log) -> Outputs {
        self.log = Arc::new(log);
        let mut out = Outputs::default();
        out.persist(Batch {
            writes: vec![Write::Membership(Arc::clone(&self.log))],
        });
        self.publish_members(now, None, &mut out);
        out
    }

    /// Adds a device whose pairing was confirmed. After the outputs' batch
    /// is durable, send it the welcome: the log, which now lists it.
    pub fn add_device(
        &mut self,
        now: Millis,
        device: DeviceId,
        name: &str,
    ) -> Result<(Arc<Log>, Outputs), Error> {
        let at = now.max(0) as u64;
        let out = self.change_membership(now, |log, key| {
            log.add_device(key, device, name, at).map(drop)
        })?;
        Ok((Arc::clone(&self.log), out))
    }

    /// Removes a device from the account for good.
    pub fn remove_device(&mut self, now: Millis, device: DeviceId) -> Result<Outputs, Error> {
        if device == self.key.id() {
            return Err(Error::RemoveSelf);
        }
        if !self.log.is_member(&device) {
            return Err(Error::NotAMember(device));
        }
        let at = now.max(0) as u64;
        self.change_membership(now, |log, key| log.remove_device(key, device, at).map(drop))
    }

    /// Whether this device may join another account: only while it holds
    /// no data and its own account has no other device, so nothing is
    /// orphaned ([`Error::NotEmpty`] otherwise).
    pub fn check_may_join(&self) -> Result<(), Error> {
        if !self.collections.is_empty() || self.log.members().len() > 1 {
            return Err(Error::NotEmpty);
        }
        Ok(())
    }

    /// Makes this device a member of the account in `log` instead of the
    /// one-device account it was created with. Allowed only while it holds
    /// no data and its own account has no other device, so nothing is
    /// orphaned (`hearth join` on an initialised home).
    pub fn adopt_account(&mut self, now: Millis, log: Log) -> Result<Outputs, Error> {
        self.check_may_join()?;
        if !log.is_member(&self.key.id()) {
            return Err(Error::NotAMember(self.key.id()));
        }
        Ok(self.replace_log(now, log))
    }
}
