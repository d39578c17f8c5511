//! Who may hold a connection to this node, and which Hearth protocols each
//! admitted peer may use.
//!
//! [`Admission`] is shared between the swarm (whose gate consults it for every
//! new connection) and the application (which changes it when the membership
//! log changes or a pairing window opens). After a change, call
//! [`Handle::refresh_admission`](super::Handle::refresh_admission) so that
//! connections of peers that lost their standing are closed.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use libp2p::{PeerId, StreamProtocol};

use super::{PAIR, QUERY, SHARE, SYNC};

/// Why a peer is allowed to hold a connection to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// One of the account's devices: every Hearth protocol is open to it.
    Member,
    /// A configured bootstrap or relay node: it serves libp2p's own protocols
    /// (Kademlia, relay, identify) but none of Hearth's.
    Infrastructure,
    /// Any peer while pairing is open: it may only run the pairing handshake
    /// ([`PAIR`]) and becomes a member only when the membership log says so.
    PendingJoiner,
    /// A device of a contact account (one we added, or one asking to be
    /// added): it may use [`SHARE`] and [`QUERY`] (the core answers
    /// queries from established contacts only), and [`SYNC`] while the two
    /// accounts share a collection (the core scopes what such a session
    /// carries).
    Contact,
    /// A device of a fellow member of a share this account takes part in
    /// (named by the share's list, not a contact): it may use [`SYNC`] only,
    /// and the core scopes that session to the shares both take part in.
    SharePeer,
    /// Any other peer while contact requests are open
    /// (`[contacts] accept_requests`): it may only send a contact request on
    /// [`SHARE`], which the core bounds and rate-limits.
    Requester,
}

/// The shared admission state: members, infrastructure peers and the pairing
/// flag. Cloning gives another handle on the same state.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    inner: Arc<RwLock<State>>,
}

#[derive(Debug, Default)]
struct State {
    members: HashSet<PeerId>,
    contacts: HashSet<PeerId>,
    share_peers: HashSet<PeerId>,
    infrastructure: HashSet<PeerId>,
    pairing: bool,
    requests: bool,
}

impl Admission {
    /// Admission for these member devices, with pairing closed and no
    /// infrastructure peers (those come from [`Config`](super::Config) when the
    /// network starts).
    pub fn new(members: impl IntoIterator<Item = PeerId>) -> Self {
        Self {
            inner: Arc::new(RwLock::new(State {
                members: members.into_iter().collect(),
                ..State::default()
            })),
        }
    }

    /// Replaces the member set. Peers that lost their standing keep their
    /// connections until [`Handle::refresh_admission`](super::Handle::refresh_admission) runs.
    pub fn set_members(&self, members: impl IntoIterator<Item = PeerId>) {
        self.write().members = members.into_iter().collect();
    }

    /// Replaces the devices of contact accounts.
    pub fn set_contacts(&self, contacts: impl IntoIterator<Item = PeerId>) {
        self.write().contacts = contacts.into_iter().collect();
    }

    /// Replaces the devices of accounts this one shares a collection with
    /// (contacts' devices, and fellow members' of a share), which may sync.
    pub fn set_share_peers(&self, peers: impl IntoIterator<Item = PeerId>) {
        self.write().share_peers = peers.into_iter().collect();
    }

    /// Whether `peer` may hold a sync session: a member, or a device of an
    /// account something is shared with.
    pub fn may_sync(&self, peer: &PeerId) -> bool {
        let state = self.read();
        state.members.contains(peer) || state.share_peers.contains(peer)
    }

    /// Whether any peer may connect to send a contact request.
    pub fn set_requests(&self, open: bool) {
        self.write().requests = open;
    }

    /// Whether `peer` is a device of a contact.
    pub fn is_contact(&self, peer: &PeerId) -> bool {
        self.read().contacts.contains(peer)
    }

    /// Opens or closes the pairing window. While open, any peer is admitted as
    /// a [`Standing::PendingJoiner`].
    pub fn set_pairing(&self, open: bool) {
        self.write().pairing = open;
    }

    /// Whether the pairing window is open.
    pub fn is_pairing_open(&self) -> bool {
        self.read().pairing
    }

    /// Whether `peer` is one of the account's devices.
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.read().members.contains(peer)
    }

    /// The current member set.
    pub fn members(&self) -> HashSet<PeerId> {
        self.read().members.clone()
    }

    /// Why `peer` is admitted, or `None` when it must be refused. A member
    /// that is also an infrastructure peer counts as a member.
    pub fn standing(&self, peer: &PeerId) -> Option<Standing> {
        let state = self.read();
        if state.members.contains(peer) {
            Some(Standing::Member)
        } else if state.infrastructure.contains(peer) {
            Some(Standing::Infrastructure)
        } else if state.contacts.contains(peer) {
            Some(Standing::Contact)
        } else if state.share_peers.contains(peer) {
            Some(Standing::SharePeer)
        } else if state.pairing {
            Some(Standing::PendingJoiner)
        } else if state.requests {
            Some(Standing::Requester)
        } else {
            None
        }
    }

    /// The check every acceptor of a Hearth stream runs before reading a byte:
    /// members may use every Hearth protocol, pending joiners only [`PAIR`],
    /// contacts [`SHARE`] and [`QUERY`], requesters only [`SHARE`],
    /// infrastructure peers and strangers none.
    pub fn may_use(&self, peer: &PeerId, protocol: &StreamProtocol) -> bool {
        match self.standing(peer) {
            Some(Standing::Member) => true,
            Some(Standing::PendingJoiner) => {
                *protocol == PAIR || (*protocol == SHARE && self.read().requests)
            }
            Some(Standing::Contact) => {
                *protocol == SHARE
                    || *protocol == QUERY
                    || (*protocol == SYNC && self.read().share_peers.contains(peer))
            }
            Some(Standing::SharePeer) => *protocol == SYNC,
            Some(Standing::Requester) => *protocol == SHARE,
            Some(Standing::Infrastructure) | None => false,
        }
    }

    /// Adds the configured bootstrap and relay peers.
    pub(crate) fn add_infrastructure(&self, peers: impl IntoIterator<Item = PeerId>) {
        self.write().infrastructure.extend(peers);
    }

    // A panic while holding the lock cannot leave the sets half-updated (every
    // write is a single assignment or extend), so a poisoned lock is still
    // consistent and is used as is.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{QUERY, SHARE, SYNC};

    #[test]
    fn standing_follows_members_infrastructure_and_pairing() {
        let member = PeerId::random();
        let relay = PeerId::random();
        let stranger = PeerId::random();
        let admission = Admission::new([member]);
        admission.add_infrastructure([relay]);

        assert_eq!(admission.standing(&member), Some(Standing::Member));
        assert_eq!(admission.standing(&relay), Some(Standing::Infrastructure));
        assert_eq!(admission.standing(&stranger), None);

        admission.set_pairing(true);
        assert!(admission.is_pairing_open());
        assert_eq!(admission.standing(&stranger), Some(Standing::PendingJoiner));
        assert!(admission.may_use(&stranger, &PAIR));
        assert!(!admission.may_use(&stranger, &SYNC));
        assert!(!admission.may_use(&relay, &SYNC));
        assert!(admission.may_use(&member, &SYNC));
        assert!(admission.may_use(&member, &QUERY));
        assert!(
            !admission.may_use(&stranger, &QUERY),
            "a pending joiner never queries"
        );

        admission.set_pairing(false);
        assert_eq!(admission.standing(&stranger), None);
        admission.set_requests(true);
        assert_eq!(admission.standing(&stranger), Some(Standing::Requester));
        assert!(admission.may_use(&stranger, &SHARE));
        assert!(!admission.may_use(&stranger, &SYNC));
        assert!(
            !admission.may_use(&stranger, &QUERY),
            "a requester never queries"
        );
        admission.set_requests(false);
        admission.set_contacts([stranger]);
        assert_eq!(admission.standing(&stranger), Some(Standing::Contact));
        assert!(admission.may_use(&stranger, &SHARE));
        assert!(!admission.may_use(&stranger, &SYNC));
        assert!(!admission.may_use(&stranger, &PAIR));
        assert!(!admission.may_use(&stranger, &SYNC));
        assert!(admission.may_use(&stranger, &QUERY));
        admission.set_share_peers([stranger]);
        assert!(admission.may_use(&stranger, &SYNC) && admission.may_sync(&stranger));
        admission.set_share_peers([]);
        admission.set_contacts([]);
        // A fellow member of a share, not a contact: sync only.
        admission.set_share_peers([stranger]);
        assert_eq!(admission.standing(&stranger), Some(Standing::SharePeer));
        assert!(admission.may_use(&stranger, &SYNC) && admission.may_sync(&stranger));
        assert!(!admission.may_use(&stranger, &SHARE) && !admission.may_use(&stranger, &PAIR));
        assert!(
            !admission.may_use(&stranger, &QUERY),
            "a share peer is not a contact"
        );
        admission.set_share_peers([]);
        assert_eq!(admission.standing(&stranger), None);
        assert!(!admission.may_use(&stranger, &QUERY));
        admission.set_members([stranger]);
        assert!(admission.is_member(&stranger));
        assert!(!admission.is_member(&member));
        assert_eq!(admission.standing(&member), None);
    }

    #[test]
    fn clones_share_state() {
        let peer = PeerId::random();
        let admission = Admission::new([]);
        let clone = admission.clone();
        clone.set_members([peer]);
        assert!(admission.is_member(&peer));
    }
}
