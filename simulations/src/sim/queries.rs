//! Federated queries over the virtual network: each
//! [`core::Output::Query`] is one request and one reply on
//! `/hearth/query/1`, carried after the network's latency like a contact
//! request ([`super::sharing`]), the reply only after the answering
//! device's batch (an ε charge, an audit record) is durable.
//!
//! The querier's driver keeps each exchange it carries until its reply, a
//! failure or its time-out (`timeout_ms`, in core time), whichever comes
//! first, and hands the core exactly one of them through
//! [`core::Node::query_reply`]: a peer that is down, unknown or cut off by
//! a partition is a `None` after a connection attempt's time; a request or
//! reply lost on the way (`network.loss`: the stream breaks) is a `None`
//! after the latency; a reply lost
//! with a crash of the answering side is a `None` at the time-out. Results
//! ([`core::Output::Answered`]) are kept by query id ([`World::answers`]).

use std::collections::{BTreeMap, BTreeSet};

use hearth_crypto::identity::DeviceId;
use serde_json::Value;

use super::{Held, Kind, US_PER_MS, World, core};

/// A query exchange on its way.
#[derive(Debug)]
pub(super) enum Step {
    /// The request arrives at device `to`.
    Request {
        from: u32,
        incarnation: u32,
        to: u32,
        exchange: u64,
        frame: Vec<u8>,
    },
    /// The reply (or the failure) of `peer` reaches device `node`.
    Reply {
        node: u32,
        incarnation: u32,
        peer: u32,
        exchange: u64,
        bytes: Option<Vec<u8>>,
    },
    /// The exchange's time is up: no reply by now counts as undelivered.
    Timeout {
        node: u32,
        incarnation: u32,
        exchange: u64,
    },
}

/// The exchanges waiting for their reply, and every result.
#[derive(Debug, Default)]
pub(super) struct Queries {
    /// (device, its incarnation, exchange) of every exchange not answered yet.
    pending: BTreeSet<(u32, u32, u64)>,
    /// Every result a core answered, by query id.
    pub(super) answers: BTreeMap<String, Value>,
    /// When each result came, µs of virtual time.
    pub(super) answered_at: BTreeMap<String, super::Time>,
}

impl World {
    /// Starts a federated query (the JSON of
    /// [`hearth_crdt::federated::FederatedQuery::parse`]) on device
    /// `device` now; its result appears in [`World::answers`] under the
    /// returned id once the run has carried it (at once for `local`).
    pub fn query(&mut self, device: u32, body: &Value) -> Result<String, core::Error> {
        let now = self.core_now();
        let (id, out) = self.nodes[device as usize]
            .core
            .query(now, &mut self.rng, body)?;
        self.perform(device, None, out);
        Ok(id)
    }

    /// Every query result so far, by query id.
    pub fn answers(&self) -> &BTreeMap<String, Value> {
        &self.queries.answers
    }

    /// `Output::Answered`.
    pub(super) fn query_answered(&mut self, query: String, result: Value) {
        self.queries.answered_at.insert(query.clone(), self.now);
        self.queries.answers.insert(query, result);
    }

    /// `Output::Query`: a request from `me` to the device `peer`.
    pub(super) fn query_send(
        &mut self,
        me: u32,
        exchange: u64,
        peer: DeviceId,
        frame: Vec<u8>,
        timeout_ms: i64,
    ) {
        let incarnation = self.nodes[me as usize].incarnation;
        self.queries.pending.insert((me, incarnation, exchange));
        let timeout = (timeout_ms.max(1) as u64).saturating_mul(1_000);
        self.push(
            timeout,
            Kind::Query(Step::Timeout {
                node: me,
                incarnation,
                exchange,
            }),
        );
        let to = self.by_id.get(&peer).copied();
        match to {
            Some(to) if self.can_talk(me, to) => {
                let d = super::sample(&mut self.rng, self.scenario.network.latency_ms, US_PER_MS);
                if self.lost() {
                    // The stream broke under the request: the querier hears so.
                    self.push(
                        d,
                        Kind::Query(Step::Reply {
                            node: me,
                            incarnation,
                            peer: to,
                            exchange,
                            bytes: None,
                        }),
                    );
                    return;
                }
                self.push(
                    d,
                    Kind::Query(Step::Request {
                        from: me,
                        incarnation,
                        to,
                        exchange,
                        frame,
                    }),
                );
            }
            _ => {
                // A dial that fails: the querier hears so.
                let d = super::sample(&mut self.rng, self.scenario.network.connect_ms, US_PER_MS);
                self.push(
                    d.max(1),
                    Kind::Query(Step::Reply {
                        node: me,
                        incarnation,
                        peer: to.unwrap_or(me),
                        exchange,
                        bytes: None,
                    }),
                );
            }
        }
    }

    pub(super) fn query_step(&mut self, step: Step) {
        match step {
            Step::Request {
                from,
                incarnation,
                to,
                exchange,
                frame,
            } => self.query_request(from, incarnation, to, exchange, frame),
            Step::Reply {
                node,
                incarnation,
                peer,
                exchange,
                bytes,
            } => {
                // A reply to a device that went offline was lost with the stream.
                let bytes = bytes.filter(|_| self.can_talk(node, peer));
                self.query_reply(node, incarnation, exchange, bytes);
            }
            Step::Timeout {
                node,
                incarnation,
                exchange,
            } => self.query_reply(node, incarnation, exchange, None),
        }
    }

    fn query_request(
        &mut self,
        from: u32,
        incarnation: u32,
        to: u32,
        exchange: u64,
        frame: Vec<u8>,
    ) {
        if !self.can_talk(from, to) {
            self.push(
                1,
                Kind::Query(Step::Reply {
                    node: from,
                    incarnation,
                    peer: to,
                    exchange,
                    bytes: None,
                }),
            );
            return;
        }
        let now = self.core_now();
        let sender = self.nodes[from as usize].id;
        let (bytes, out) =
            self.nodes[to as usize]
                .core
                .query_request(now, &mut self.rng, sender, &frame);
        self.perform(to, None, out);
        // The answer goes only after what it promised (the ε charged) is durable.
        let node = &mut self.nodes[to as usize];
        if node.pending.is_empty() && node.held.is_empty() {
            self.send_query_reply(from, incarnation, to, exchange, bytes);
        } else {
            node.held.push_back(Held::QueryReply {
                to: from,
                incarnation,
                exchange,
                bytes,
            });
            self.max_held = self.max_held.max(node.held.len() as u64);
        }
    }

    /// The reply of `from` to exchange `exchange` leaves for device `to`.
    pub(super) fn send_query_reply(
        &mut self,
        to: u32,
        incarnation: u32,
        from: u32,
        exchange: u64,
        bytes: Vec<u8>,
    ) {
        let d = super::sample(&mut self.rng, self.scenario.network.latency_ms, US_PER_MS);
        // A reply lost with its stream: the answering side did its part
        // (an ε charged), the querier sees a failure.
        let bytes = (!self.lost()).then_some(bytes);
        self.push(
            d,
            Kind::Query(Step::Reply {
                node: to,
                incarnation,
                peer: from,
                exchange,
                bytes,
            }),
        );
    }

    /// Whether a query message is lost (`network.loss`): its stream breaks.
    fn lost(&mut self) -> bool {
        let loss = self.scenario.network.loss;
        loss > 0.0 && rand::Rng::gen_bool(&mut self.rng, loss)
    }

    /// Hands the core the first of an exchange's reply, failure or
    /// time-out; the others find it gone.
    fn query_reply(&mut self, node: u32, incarnation: u32, exchange: u64, bytes: Option<Vec<u8>>) {
        if !self.queries.pending.remove(&(node, incarnation, exchange)) {
            return;
        }
        let n = &self.nodes[node as usize];
        if n.crashed || n.incarnation != incarnation {
            return;
        }
        let now = self.core_now();
        let out = self.nodes[node as usize]
            .core
            .query_reply(now, exchange, bytes.as_deref());
        self.perform(node, None, out);
    }

    /// A crash forgets the device's exchanges: its new core knows none.
    pub(super) fn queries_crashed(&mut self, me: u32) {
        self.queries.pending.retain(|(node, _, _)| *node != me);
    }
}
