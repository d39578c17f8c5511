//! The engine's side of contacts: the core's contact commands on the engine
//! thread, the `/hearth/share/1` exchanges it asks for ([`Delivery`]) and
//! answers, and the contact list as `hearth contacts` shows it.
//!
//! Every rule (what a card must prove, who may ask, how many requests are
//! kept, when a card is sent again) is the core's
//! ([`hearth_crdt::node::contacts`]); here its outputs are performed in
//! order, so a reply leaves only after what it answers is durable.

use hearth_crdt::node::contacts::{Direction, Reply, State};
use hearth_crdt::node::shares::Standing;
use hearth_crdt::node::{Contact, Node};
use hearth_crypto::acl::Level;
use hearth_crypto::card::Card;
use hearth_crypto::identity::DeviceId;
use serde::{Deserialize, Serialize};

use super::shares::ShareInfo;
use super::{Error, Handle};

/// A card exchange the core asked for ([`node::Output::Deliver`]): send
/// `frame` to `peer` on `/hearth/share/1`, dialling `addrs` if need be,
/// and hand its reply to [`Handle::share_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// A device of the contact.
    pub peer: DeviceId,
    /// Where its card says it listens.
    pub addrs: Vec<String>,
    /// The request.
    pub frame: Vec<u8>,
}

/// One device of a contact, for `hearth contacts`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactDevice {
    /// Its id.
    pub id: String,
    /// Its name in its account's log.
    pub name: String,
    /// Whether this node is connected to it now (filled by the daemon).
    pub online: bool,
}

/// One contact, for `hearth contacts`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactInfo {
    /// Our petname; `null` for a request nobody here accepted yet.
    pub name: Option<String>,
    /// The name its own card gives.
    pub card_name: String,
    /// Its account id.
    pub account_id: String,
    /// `established` or `pending`.
    pub state: State,
    /// For a pending contact: `outgoing` (we added it, it has not answered)
    /// or `incoming` (it asks to be added: `hearth contact accept`).
    pub direction: Option<Direction>,
    /// Whether our card has yet to reach it.
    pub card_owed: bool,
    /// Its devices, from its membership log.
    pub devices: Vec<ContactDevice>,
    /// What this account shares with it and it with this account.
    pub shares: Vec<ContactShare>,
    /// When the record last changed, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// One share between this account and a contact, for `hearth contacts`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactShare {
    /// The share's id.
    pub id: String,
    /// `outgoing` (ours, shared with the contact) or `incoming` (the
    /// contact's, shared with us).
    pub direction: String,
    /// The collection, by the owner's name for it.
    pub collection: String,
    /// The contact's level on ours, or ours on theirs; `null` once revoked.
    pub level: Option<Level>,
    /// `offered`, `active`, `declined` or `revoked`.
    pub state: Standing,
}

impl ContactInfo {
    /// `c` as `core` sees it, with the shares both ways.
    pub fn of(core: &Node, c: &Contact) -> ContactInfo {
        let mut info = ContactInfo::from(c);
        let names = |share: &&hearth_crdt::node::shares::Share| {
            share.owner() == c.account
                || share
                    .acl
                    .entries()
                    .iter()
                    .any(|e| e.op().account() == Some(c.account))
        };
        for share in core.shares().values().filter(names) {
            let s = ShareInfo::of(core, share);
            let (level, state) = if share.owner() == c.account {
                (s.level, s.state)
            } else if let Some(m) = s.members.iter().find(|m| m.account_id == info.account_id) {
                (m.level, m.state)
            } else {
                continue;
            };
            info.shares.push(ContactShare {
                id: s.id,
                direction: s.direction,
                collection: s.collection,
                level,
                state,
            });
        }
        info
    }
}

impl From<&Contact> for ContactInfo {
    fn from(c: &Contact) -> Self {
        ContactInfo {
            name: c.name.clone(),
            card_name: c.card_name.clone(),
            account_id: c.account.to_string(),
            state: c.state(),
            direction: c.direction(),
            card_owed: c.added && c.deliver,
            devices: c
                .log
                .members()
                .into_iter()
                .map(|m| ContactDevice {
                    id: m.device.to_string(),
                    name: m.name,
                    online: false,
                })
                .collect(),
            shares: Vec::new(),
            updated_at_ms: c.updated_at_ms,
        }
    }
}

impl Handle {
    /// This account's card, with the addresses last set by
    /// [`Handle::set_card_addrs`] (none before the network runs).
    pub async fn card(&self) -> Result<Card, Error> {
        self.call(move |e| Ok(e.core.card()?)).await
    }

    /// Sets the addresses the cards this node sends carry.
    pub async fn set_card_addrs(&self, addrs: Vec<(DeviceId, Vec<String>)>) -> Result<(), Error> {
        self.call(move |e| {
            e.core.set_card_addrs(addrs);
            Ok(())
        })
        .await
    }

    /// Every contact, pending ones included.
    pub async fn contacts(&self) -> Result<Vec<ContactInfo>, Error> {
        self.call(|e| {
            Ok(e.core
                .contacts()
                .values()
                .map(|c| ContactInfo::of(&e.core, c))
                .collect())
        })
        .await
    }

    /// The contact `who` names (a name or an account id).
    pub async fn contact(&self, who: String) -> Result<ContactInfo, Error> {
        self.call(move |e| Ok(ContactInfo::of(&e.core, e.core.find_contact(&who)?)))
            .await
    }

    /// Adds a contact from its card under `name`, once durable.
    pub async fn add_contact(&self, card: Card, name: String) -> Result<ContactInfo, Error> {
        self.call(move |e| {
            e.run(|n, now, _| n.add_contact(now, card, &name))
                .map(|c| ContactInfo::from(&c))
        })
        .await
    }

    /// Accepts the pending request of `who` (a name or an account id).
    pub async fn accept_contact(&self, who: String, name: String) -> Result<ContactInfo, Error> {
        self.call(move |e| {
            e.run(|n, now, _| n.accept_contact(now, &who, &name))
                .map(|c| ContactInfo::of(&e.core, &c))
        })
        .await
    }

    /// Removes the contact `who`.
    pub async fn remove_contact(&self, who: String) -> Result<ContactInfo, Error> {
        self.call(move |e| {
            e.run(|n, now, _| n.remove_contact(now, &who))
                .map(|c| ContactInfo::from(&c))
        })
        .await
    }

    /// Answers a `/hearth/share/1` request from `from`: the reply frame,
    /// once what it changed is durable.
    pub async fn share_request(&self, from: DeviceId, frame: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.call(move |e| {
            let (reply, bytes) = e.run(|n, now, _| {
                let (reply, bytes, out) = n.share_request(now, from, &frame);
                Ok(((reply, bytes), out))
            })?;
            if let Reply::Refused { reason } = &reply {
                tracing::warn!(peer = %from, %reason, "refused a contact request");
            }
            Ok(bytes)
        })
        .await
    }

    /// Hands the core the reply `peer` gave to a card we sent (`None`: it
    /// could not be delivered).
    pub async fn share_reply(&self, peer: DeviceId, reply: Option<Vec<u8>>) -> Result<(), Error> {
        self.call(move |e| {
            let problem = e.run(|n, now, _| {
                let (problem, out) = n.share_reply(now, peer, reply.as_deref());
                Ok((problem, out))
            })?;
            if let Some(problem) = problem {
                tracing::info!(%peer, %problem, "our card did not get through; it is sent again later");
            }
            Ok(())
        })
        .await
    }
}
