//! Links: which members the node wants a sync session with, and when it
//! tries again. The policy is [`redial`](super::redial)'s; the state is the
//! node's, so the daemon's network and the simulator keep none.
//!
//! - A member is **routable** once the driver said it knows a way to it
//!   ([`Input::Reachable`](super::Input::Reachable): an address was learnt,
//!   a lookup service can find it, the simulator's topology links the two)
//!   or the transport connected to it. Only routable members are dialled,
//!   so a member nobody can reach does not cost a timer.
//! - A routable member without a session is dialled when its backoff is due
//!   ([`Output::Dial`]); a session that ends schedules the next attempt. A
//!   new route (or a connection the peer made) makes the attempt due at once.
//! - Between two members, the device with the smaller id opens the sync
//!   stream; the other only connects and waits for it
//!   ([`Output::Dial::open_stream`](super::Output::Dial)).
//! - The node asks for one timer at a time ([`Output::Timer`]): the driver
//!   delivers [`Input::Tick`](super::Input::Tick) at or after that instant,
//!   and a newer timer replaces the older one.

use std::collections::BTreeSet;

use hearth_crypto::identity::DeviceId;
use rand_core::RngCore;

use super::redial::{Backoff, Redial};
use super::{Millis, Node, Output, Outputs};

/// The node's link state.
#[derive(Debug)]
pub(super) struct Links {
    redial: Redial<DeviceId>,
    routable: BTreeSet<DeviceId>,
    /// Sessions that ended since the last schedule, with when.
    ended: Vec<(DeviceId, Millis)>,
    /// The timer last asked of the driver, until it fires.
    timer: Option<Millis>,
    /// Something changed that may move the timer.
    dirty: bool,
}

impl Links {
    pub(super) fn new(backoff: Backoff) -> Self {
        Self {
            redial: Redial::new(backoff),
            routable: BTreeSet::new(),
            ended: Vec::new(),
            timer: None,
            dirty: false,
        }
    }

    /// Asks for a tick at `at` for something outside the links (a card to
    /// deliver again), unless an earlier one is pending.
    pub(super) fn wake_at(&mut self, at: Millis, now: Millis, out: &mut Outputs) {
        if self.timer.is_none_or(|t| at < t || t <= now) {
            self.timer = Some(at);
            out.push(Output::Timer { at });
        }
    }

    /// Something outside the links wants the timer looked at again.
    pub(super) fn touch(&mut self) {
        self.dirty = true;
    }

    /// A session with `peer` opened at `now`.
    pub(super) fn opened(&mut self, peer: DeviceId, now: Millis) {
        self.routable.insert(peer);
        self.redial.connected(&peer, now);
        self.dirty = true;
    }

    /// A session with `peer` ended at `now`; its next attempt is scheduled
    /// at the next [`Node::schedule_links`], which has the RNG.
    pub(super) fn ended(&mut self, peer: DeviceId, now: Millis) {
        self.ended.push((peer, now));
        self.dirty = true;
    }

    /// The member set changed: forget devices that left.
    pub(super) fn retain(&mut self, keep: impl Fn(&DeviceId) -> bool) {
        self.routable.retain(&keep);
        self.redial.retain(&keep);
        self.ended.retain(|(peer, _)| keep(peer));
        self.dirty = true;
    }
}

impl Node {
    /// The driver knows a way to `peer` now: dial it at once if no session
    /// is open.
    pub(super) fn link_reachable(&mut self, peer: DeviceId) {
        if peer == self.id() || !self.published.may_sync(&peer) {
            return;
        }
        self.links.routable.insert(peer);
        self.links.redial.forget(&peer);
        self.links.dirty = true;
    }

    /// The transport connected to `peer`. The side that opens the stream
    /// tries at once; the other waits for the stream.
    pub(super) fn link_connected(&mut self, peer: DeviceId) {
        if self.opens_stream_to(&peer) {
            self.link_reachable(peer);
        } else if peer != self.id() && self.published.may_sync(&peer) {
            self.links.routable.insert(peer);
            self.links.dirty = true;
        }
    }

    fn opens_stream_to(&self, peer: &DeviceId) -> bool {
        self.id() < *peer
    }

    /// The timer fired: dial every routable member that has no session and
    /// whose attempt is due.
    pub(super) fn link_tick(&mut self, now: Millis, rng: &mut impl RngCore, out: &mut Outputs) {
        self.links.timer = None;
        self.links.dirty = true;
        self.drain_ended(rng);
        let waiting: Vec<DeviceId> = self
            .links
            .routable
            .iter()
            .filter(|peer| !self.sessions.contains_key(peer))
            .copied()
            .collect();
        for peer in waiting {
            if self.links.redial.due(&peer, now, rng) {
                out.push(Output::Dial {
                    peer,
                    open_stream: self.opens_stream_to(&peer),
                });
            }
        }
    }

    fn drain_ended(&mut self, rng: &mut impl RngCore) {
        for (peer, at) in std::mem::take(&mut self.links.ended) {
            self.links.redial.disconnected(&peer, at, rng);
        }
    }

    /// After an input: asks for a timer at the earliest attempt due, when
    /// that moved.
    pub(super) fn schedule_links(
        &mut self,
        now: Millis,
        rng: &mut impl RngCore,
        out: &mut Outputs,
    ) {
        if !self.links.dirty {
            return;
        }
        self.links.dirty = false;
        self.drain_ended(rng);
        let earliest = self
            .links
            .routable
            .iter()
            .filter(|peer| !self.sessions.contains_key(peer))
            .map(|peer| self.links.redial.next_at(peer).unwrap_or(now))
            .chain(self.contacts.due())
            .chain(self.queries.due())
            .min();
        // A timer already due counts as spent: the driver may have dropped
        // its tick (the device was down), so a new one is asked for.
        if let Some(at) = earliest
            && self.links.timer.is_none_or(|t| at < t || t <= now)
        {
            self.links.timer = Some(at);
            out.push(Output::Timer { at });
        }
    }
}

#[cfg(test)]
mod tests {
    use hearth_crypto::identity::DeviceKey;
    use hearth_crypto::membership::Log;
    use rand_core::OsRng;

    use super::super::{Config, Input, SessionId};
    use super::*;

    /// A node of an account with `n` other members, and their ids.
    fn node(n: u8) -> (Node, Vec<DeviceId>) {
        let key = DeviceKey::from_bytes(&[100; 32]);
        let mut log = Log::genesis(&key, "me", 0);
        let mut others = Vec::new();
        for i in 0..n {
            let id = DeviceKey::from_bytes(&[i + 1; 32]).id();
            log.add_device(&key, id, "peer", 1)
                .unwrap_or_else(|e| panic!("{e}"));
            others.push(id);
        }
        (Node::new(key, "me", log, Config::default()), others)
    }

    fn dials(out: &Outputs) -> Vec<DeviceId> {
        out.items
            .iter()
            .filter_map(|o| match o {
                Output::Dial { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect()
    }

    fn timer(out: &Outputs) -> Option<Millis> {
        out.items.iter().find_map(|o| match o {
            Output::Timer { at } => Some(*at),
            _ => None,
        })
    }

    #[test]
    fn only_routable_members_are_dialled_and_a_route_asks_for_a_timer_now() {
        let (mut n, peers) = node(2);
        let out = n.handle(1_000, &mut OsRng, Input::Tick);
        assert!(dials(&out).is_empty(), "no route known: nothing to dial");
        assert_eq!(timer(&out), None);

        let out = n.handle(1_000, &mut OsRng, Input::Reachable { peer: peers[0] });
        assert_eq!(timer(&out), Some(1_000));
        let out = n.handle(1_000, &mut OsRng, Input::Tick);
        assert_eq!(dials(&out), vec![peers[0]]);
        // The next attempt is pushed out by the first delay, jittered.
        let at = timer(&out).unwrap_or_else(|| panic!("no timer after a dial"));
        assert!((1_500..=2_000).contains(&at), "{at}");
        let out = n.handle(1_100, &mut OsRng, Input::Tick);
        assert!(dials(&out).is_empty(), "not due yet");
        assert_eq!(timer(&out), Some(at), "an early tick asks again");
    }

    #[test]
    fn a_session_stops_dialling_and_its_end_backs_off() {
        let (mut n, peers) = node(1);
        let peer = peers[0];
        let _ = n.handle(0, &mut OsRng, Input::Reachable { peer });
        let out = n.handle(0, &mut OsRng, Input::Tick);
        assert_eq!(dials(&out), vec![peer]);
        let opened = Input::Opened {
            session: SessionId(1),
            peer,
            states: vec![],
        };
        let _ = n.handle(10, &mut OsRng, opened);
        let out = n.handle(5_000, &mut OsRng, Input::Tick);
        assert!(dials(&out).is_empty(), "a session is open");
        assert_eq!(
            timer(&out),
            None,
            "no timer while every route has a session"
        );

        // Dropped before it was stable: the delay doubled (2 s, jittered).
        let out = n.handle(
            5_000,
            &mut OsRng,
            Input::Closed {
                session: SessionId(1),
            },
        );
        let at = timer(&out).unwrap_or_else(|| panic!("no timer after a close"));
        assert!((6_000..=7_000).contains(&at), "{at}");
    }

    #[test]
    fn the_smaller_id_opens_the_stream_and_a_connection_makes_it_try_at_once() {
        let (mut n, peers) = node(2);
        for peer in peers {
            let _ = n.handle(0, &mut OsRng, Input::Connected { peer });
            let out = n.handle(0, &mut OsRng, Input::Tick);
            let opens = out.items.iter().find_map(|o| match o {
                Output::Dial {
                    peer: p,
                    open_stream,
                } if *p == peer => Some(*open_stream),
                _ => None,
            });
            assert_eq!(opens, Some(n.id() < peer));
        }
    }

    #[test]
    fn a_timer_whose_tick_never_came_is_asked_for_again() {
        let (mut n, peers) = node(1);
        let out = n.handle(0, &mut OsRng, Input::Reachable { peer: peers[0] });
        assert_eq!(timer(&out), Some(0));
        // The driver was down and dropped that tick; later news of the
        // peer asks for a new timer although the old one was "earlier".
        let out = n.handle(9_000, &mut OsRng, Input::Reachable { peer: peers[0] });
        assert_eq!(timer(&out), Some(9_000));
    }

    #[test]
    fn non_members_and_removed_devices_are_never_dialled() {
        let (mut n, peers) = node(1);
        let stranger = DeviceKey::from_bytes(&[77; 32]).id();
        let _ = n.handle(0, &mut OsRng, Input::Reachable { peer: stranger });
        let _ = n.handle(0, &mut OsRng, Input::Reachable { peer: peers[0] });
        let out = n
            .remove_device(0, peers[0])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(dials(&out).is_empty());
        let out = n.handle(0, &mut OsRng, Input::Tick);
        assert!(dials(&out).is_empty());
    }
}
