//! The engine's side of shares: the core's share commands on the engine
//! thread, and shares as `hearth shares` shows them.
//!
//! Every rule (who may grant, what an offer must prove, who may write, what
//! a contact's device may sync) is the core's
//! ([`hearth_crdt::node::shares`]); here its outputs are performed in
//! order, so an answer leaves only after what it answers is durable.

use hearth_crdt::node::Node;
use hearth_crdt::node::shares::{Share, Standing};
use hearth_crypto::acl::Level;
use serde::{Deserialize, Serialize};

use super::{Error, Handle};

/// One member of a share, for `hearth shares`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareMember {
    /// This account's name for it.
    pub contact: String,
    /// Its account id.
    pub account_id: String,
    /// `read` or `write`; `null` once revoked.
    pub level: Option<Level>,
    /// `offered`, `active`, `declined` or `revoked`.
    pub state: Standing,
}

/// One share, for `hearth shares`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareInfo {
    /// Its id (`hearth shares accept <id>` takes any unique prefix).
    pub id: String,
    /// `outgoing` (this account owns it) or `incoming`.
    pub direction: String,
    /// The collection's name on the owner's devices.
    pub collection: String,
    /// Its name on this account, once accepted (the owner's own name for
    /// an outgoing share).
    pub local: Option<String>,
    /// The owner, as this account names it (`me` for its own).
    pub owner: String,
    /// The owner's account id.
    pub owner_id: String,
    /// For an incoming share: this account's level (`null` once revoked).
    pub level: Option<Level>,
    /// For an incoming share: where this account stands; for an outgoing
    /// one, `active`.
    pub state: Standing,
    /// For an outgoing share: every contact it names.
    pub members: Vec<ShareMember>,
    /// Whether a message about it has yet to reach someone.
    pub owed: bool,
}

impl ShareInfo {
    /// `share` as `core` sees it.
    pub fn of(core: &Node, share: &Share) -> ShareInfo {
        let me = core.log().account_id();
        let owner = share.owner();
        let owner_log = if owner == me {
            Some(std::sync::Arc::clone(core.log()))
        } else {
            core.contacts()
                .get(&owner)
                .map(|c| std::sync::Arc::clone(&c.log))
        };
        let state = owner_log
            .map(|log| share.acl.state(&log))
            .unwrap_or_default();
        let outgoing = owner == me;
        let mut named: Vec<_> = share
            .acl
            .entries()
            .iter()
            .filter_map(|e| e.op().account())
            .collect();
        named.sort();
        named.dedup();
        ShareInfo {
            id: share.id().to_string(),
            direction: if outgoing { "outgoing" } else { "incoming" }.to_owned(),
            collection: share.acl.collection().to_owned(),
            local: share.local.clone(),
            owner: core.account_name(&owner),
            owner_id: owner.to_string(),
            level: (!outgoing).then(|| state.level(&me)).flatten(),
            state: if outgoing {
                Standing::Active
            } else {
                share.standing(&me, &state)
            },
            members: if outgoing {
                named
                    .into_iter()
                    .map(|a| ShareMember {
                        contact: core.account_name(&a),
                        account_id: a.to_string(),
                        level: state.level(&a),
                        state: share.standing(&a, &state),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            owed: !share.owed.is_empty(),
        }
    }
}

impl Handle {
    /// Every share, outgoing and incoming.
    pub async fn shares(&self) -> Result<Vec<ShareInfo>, Error> {
        self.call(|e| {
            Ok(e.core
                .shares()
                .values()
                .map(|s| ShareInfo::of(&e.core, s))
                .collect())
        })
        .await
    }

    /// Grants the contact `who` `level` on `collection`, once durable.
    pub async fn share(
        &self,
        collection: String,
        who: String,
        level: Level,
    ) -> Result<ShareInfo, Error> {
        self.call(move |e| {
            let share = e.run(|n, now, _| n.share(now, &collection, &who, level))?;
            Ok(ShareInfo::of(&e.core, &share))
        })
        .await
    }

    /// Revokes the contact `who` on `collection`, once durable.
    pub async fn unshare(&self, collection: String, who: String) -> Result<ShareInfo, Error> {
        self.call(move |e| {
            let share = e.run(|n, now, _| n.unshare(now, &collection, &who))?;
            Ok(ShareInfo::of(&e.core, &share))
        })
        .await
    }

    /// Accepts the share `id` under `local` (or the default name).
    pub async fn accept_share(
        &self,
        id: String,
        local: Option<String>,
    ) -> Result<ShareInfo, Error> {
        self.call(move |e| {
            let share = e.run(|n, now, _| n.accept_share(now, &id, local.as_deref()))?;
            Ok(ShareInfo::of(&e.core, &share))
        })
        .await
    }

    /// Declines the share `id`.
    pub async fn decline_share(&self, id: String) -> Result<ShareInfo, Error> {
        self.call(move |e| {
            let share = e.run(|n, now, _| n.decline_share(now, &id))?;
            Ok(ShareInfo::of(&e.core, &share))
        })
        .await
    }
}
