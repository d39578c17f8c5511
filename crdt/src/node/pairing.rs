//! Pairing, the core's side: the rules of a new invitation.
//!
//! [`Node::invite`] makes the one-time invitation a new device joins with:
//! the account, this device, the addresses it can be dialled at and a fresh
//! 128-bit secret from the RNG, valid for a bounded time. Admitting the
//! device once its code is confirmed is [`Node::add_device`]. The
//! handshake itself is `hearth_crypto::pairing`'s state machines; the
//! daemon's `pairing` module and the simulator drive them over their
//! streams.

use hearth_crypto::ticket::{self, Invitation};
use rand_core::{CryptoRng, RngCore};

use super::{Millis, Node};

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
    /// naming the first addresses of `addrs` a ticket can carry.
    pub fn invite(
        &self,
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
        Ok(Invitation::generate(
            self.log.account_id(),
            self.key.id(),
            addrs,
            expires_at_ms,
            rng,
        )?)
    }
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
        let n = node();
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
        let n = node();
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
}
