//! When to dial a device again: the one redial and backoff policy of the
//! mesh, used for connections to members (the daemon's network task), for
//! reopening a sync stream (the daemon's mesh) and for every link of the
//! simulator.
//!
//! - A peer not yet tried is due at once.
//! - Each attempt that is due pushes the next one out by the current delay,
//!   drawn with jitter from `[delay / 2, delay]` so that devices that lost
//!   each other at the same moment do not redial in lockstep; the delay then
//!   doubles, up to [`Backoff::max_ms`].
//! - A connection that lasted [`Backoff::stable_ms`] counts as a success: the
//!   delay starts again from [`Backoff::min_ms`]. A peer that completes the
//!   handshake and then drops us (its gate refused us) keeps backing off
//!   instead of being redialled every second.
//!
//! Time is a parameter ([`Millis`]) and so is the randomness, so the policy
//! runs the same under the daemon's clock and the simulator's.

use std::collections::BTreeMap;

use rand_core::RngCore;

use super::Millis;

/// The backoff's bounds; config fields of the daemon (`[net]`) and settings
/// of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay after a failed or lost connection, ms. Default 1000.
    pub min_ms: u64,
    /// Longest delay, ms. Default 60 000.
    pub max_ms: u64,
    /// A connection up this long resets the delay, ms. Default 10 000.
    pub stable_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min_ms: 1_000,
            max_ms: 60_000,
            stable_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    /// No attempt before this.
    next: Millis,
    /// The delay the next attempt adds.
    delay_ms: u64,
    /// When the current connection came up.
    up_since: Option<Millis>,
}

/// Per-peer redial state under one [`Backoff`]. `K` names a peer: a libp2p
/// peer id in the daemon, a link in the simulator.
#[derive(Debug, Clone)]
pub struct Redial<K> {
    backoff: Backoff,
    peers: BTreeMap<K, Peer>,
}

impl<K: Ord + Clone> Redial<K> {
    /// No peer tried yet.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            peers: BTreeMap::new(),
        }
    }

    fn jitter(delay_ms: u64, rng: &mut impl RngCore) -> u64 {
        let half = delay_ms / 2;
        let span = delay_ms - half;
        if span == 0 {
            return delay_ms;
        }
        half + rng.next_u64() % (span + 1)
    }

    /// Whether an attempt on `peer` may start at `now`; if so, the attempt
    /// counts and the next one is pushed out.
    pub fn due(&mut self, peer: &K, now: Millis, rng: &mut impl RngCore) -> bool {
        let min = self.backoff.min_ms;
        let max = self.backoff.max_ms;
        let state = self.peers.entry(peer.clone()).or_insert(Peer {
            next: now,
            delay_ms: min,
            up_since: None,
        });
        if state.next > now {
            return false;
        }
        state.next = now.saturating_add(Self::jitter(state.delay_ms, rng) as Millis);
        state.delay_ms = state.delay_ms.saturating_mul(2).clamp(min, max.max(min));
        true
    }

    /// The peer's connection came up.
    pub fn connected(&mut self, peer: &K, now: Millis) {
        let min = self.backoff.min_ms;
        self.peers
            .entry(peer.clone())
            .or_insert(Peer {
                next: now,
                delay_ms: min,
                up_since: None,
            })
            .up_since = Some(now);
    }

    /// The peer's connection went down at `now`; returns when the next
    /// attempt is due. A connection that lasted [`Backoff::stable_ms`]
    /// resets the delay.
    pub fn disconnected(&mut self, peer: &K, now: Millis, rng: &mut impl RngCore) -> Millis {
        let (min, max, stable) = (
            self.backoff.min_ms,
            self.backoff.max_ms,
            self.backoff.stable_ms,
        );
        let state = self.peers.entry(peer.clone()).or_insert(Peer {
            next: now,
            delay_ms: min,
            up_since: None,
        });
        let lasted = state
            .up_since
            .take()
            .map(|since| now.saturating_sub(since).max(0) as u64);
        if lasted.is_some_and(|l| l >= stable) {
            state.delay_ms = min;
        }
        let wait = Self::jitter(state.delay_ms, rng) as Millis;
        state.next = state.next.max(now.saturating_add(wait));
        state.delay_ms = state.delay_ms.saturating_mul(2).clamp(min, max.max(min));
        state.next
    }

    /// When the next attempt on `peer` is due, if it was ever tried.
    pub fn next_at(&self, peer: &K) -> Option<Millis> {
        self.peers.get(peer).map(|p| p.next)
    }

    /// Forgets peers for which `keep` is false (removed members).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.peers.retain(|k, _| keep(k));
    }

    /// Forgets one peer.
    pub fn forget(&mut self, peer: &K) {
        self.peers.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u64);
    impl RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
            self.0 >> 11
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = self.next_u64() as u8;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    #[test]
    fn a_new_peer_is_due_at_once_then_backs_off_with_jitter_up_to_the_max() {
        let mut r = Redial::new(Backoff::default());
        let mut rng = Counter(7);
        assert!(r.due(&1u8, 0, &mut rng));
        assert!(!r.due(&1u8, 0, &mut rng));
        let first = r.next_at(&1).unwrap();
        assert!((500..=1_000).contains(&first), "{first}");
        // Keep failing: the waits double until the max, never beyond.
        let mut now = first;
        let mut last_wait = 0;
        for _ in 0..12 {
            assert!(r.due(&1u8, now, &mut rng));
            let next = r.next_at(&1).unwrap();
            last_wait = next - now;
            assert!(last_wait <= 60_000);
            now = next;
        }
        assert!(last_wait >= 30_000, "{last_wait}");
    }

    #[test]
    fn only_a_stable_connection_resets_the_delay() {
        let mut r = Redial::new(Backoff::default());
        let mut rng = Counter(3);
        let mut now = 0;
        for _ in 0..6 {
            assert!(r.due(&1u8, now, &mut rng));
            now = r.next_at(&1).unwrap();
        }
        // Up for 2 s, then dropped (a gate that refuses us): still backing off.
        r.connected(&1, now);
        let next = r.disconnected(&1, now + 2_000, &mut rng);
        assert!(next - (now + 2_000) >= 16_000, "{}", next - now);
        // Up for 10 s: back to about a second.
        let now = next;
        r.connected(&1, now);
        let next = r.disconnected(&1, now + 10_000, &mut rng);
        assert!(next - (now + 10_000) <= 1_000, "{}", next - now);
    }
}
