//! The engine's side of federated queries: the core's query, consent and
//! audit commands on the engine thread, the `/hearth/query/1` exchanges it
//! asks for ([`QueryExchange`]) and answers, and the results it hands to
//! the callers waiting for them.
//!
//! Every rule (who may ask, what a policy allows, what the budget charges,
//! what the audit log keeps, when a phase of a query ends) is the core's
//! ([`hearth_crdt::node::queries`]). Here its outputs are performed in
//! order, so a reply leaves only after the ε it charged is durable, and a
//! query's result ([`hearth_crdt::node::Output::Answered`]) reaches the
//! oneshot its caller registered before the query's first output was
//! performed: a `local` query answers within the same call.

use std::time::Duration;

use hearth_crdt::federated::FederatedQuery;
use hearth_crdt::federated::audit::Record;
use hearth_crdt::node::Millis;
use hearth_crdt::node::queries::Reply;
use hearth_crypto::identity::DeviceId;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Engine, Error, Handle, now_ms};

/// How long past its deadline a caller of [`Handle::query`] waits for the
/// result: the core answers at the deadline itself, on the mesh's timer
/// tick, so this only covers a busy engine queue.
const ANSWER_MARGIN_MS: u64 = 5_000;

/// One `/hearth/query/1` exchange the core asked for
/// ([`hearth_crdt::node::Output::Query`]): send `frame` to `peer`, dialling `addrs` if
/// need be, read one reply within `timeout_ms`, and hand it (or `None`) to
/// [`Handle::query_reply`] under `exchange`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryExchange {
    /// The core's number for the exchange.
    pub exchange: u64,
    /// One of this account's devices or a contact's.
    pub peer: DeviceId,
    /// Where its account's card says it listens (empty for our own).
    pub addrs: Vec<String>,
    /// The request.
    pub frame: Vec<u8>,
    /// How long the whole exchange may take, in ms.
    pub timeout_ms: Millis,
}

impl Engine {
    /// Starts a query and registers its caller before performing anything,
    /// so that a result in the same outputs (scope `local`) is not lost.
    fn start_query(
        &mut self,
        body: &Value,
    ) -> Result<(String, oneshot::Receiver<Value>, u64), Error> {
        let (id, out) = self.core.query(now_ms(), &mut rand::rngs::OsRng, body)?;
        let deadline_ms = FederatedQuery::parse(body)
            .map(|q| q.deadline_ms)
            .unwrap_or(hearth_crdt::federated::DEFAULT_DEADLINE_MS);
        let (tx, rx) = oneshot::channel();
        // Callers that gave up (their time ran out) leave closed senders.
        self.answers.retain(|_, waiting| !waiting.is_closed());
        self.answers.insert(id.clone(), tx);
        if let Err(e) = self.perform(out) {
            self.answers.remove(&id);
            return Err(e);
        }
        Ok((id, rx, deadline_ms))
    }
}

impl Handle {
    /// Runs a federated query (the JSON of
    /// [`FederatedQuery::parse`]) and waits for its result: at once for
    /// `local`, at the latest by its deadline for `devices` and `contacts`.
    pub async fn query(&self, body: Value) -> Result<Value, Error> {
        let (id, rx, deadline_ms) = self.call(move |e| e.start_query(&body)).await?;
        let waited_ms = deadline_ms.saturating_add(ANSWER_MARGIN_MS);
        match tokio::time::timeout(Duration::from_millis(waited_ms), rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => {
                let query = id.clone();
                let _ = self
                    .submit(move |e| {
                        e.answers.remove(&query);
                    })
                    .await;
                Err(Error::NoAnswer {
                    query: id,
                    waited_ms,
                })
            }
        }
    }

    /// Answers a `/hearth/query/1` request from `from`: the reply frame,
    /// once what it changed (an ε charge, an audit record) is durable.
    pub async fn query_request(&self, from: DeviceId, frame: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.call(move |e| {
            let max = e.core.config().queries.max_message_bytes;
            let bytes = e.run(|n, now, rng| Ok(n.query_request(now, rng, from, &frame)))?;
            if let Ok(Reply::Refused { reason }) = Reply::decode(&bytes, max) {
                tracing::info!(peer = %from, %reason, "refused a query request");
            }
            Ok(bytes)
        })
        .await
    }

    /// Hands the core the reply to exchange `exchange` (`None`: it could
    /// not be delivered in time).
    pub async fn query_reply(&self, exchange: u64, reply: Option<Vec<u8>>) -> Result<(), Error> {
        self.call(move |e| {
            e.run(|n, now, _| Ok(((), n.query_reply(now, exchange, reply.as_deref()))))
        })
        .await
    }

    /// Stores the consent `policy` for `collection`, once durable; the
    /// stored consent (`collection`, `policy`, `version`, `set_at`, `id`).
    pub async fn set_consent(&self, collection: String, policy: Value) -> Result<Value, Error> {
        self.call(move |e| e.run(|n, now, _| n.set_consent(now, &collection, &policy)))
            .await
    }

    /// Every stored consent policy.
    pub async fn consents(&self) -> Result<Vec<Value>, Error> {
        self.call(|e| Ok(e.core.consents())).await
    }

    /// Removes every consent policy of `collection`, once durable; how many
    /// there were.
    pub async fn remove_consent(&self, collection: String) -> Result<usize, Error> {
        self.call(move |e| e.run(|n, now, _| n.remove_consent(now, &collection)))
            .await
    }

    /// Every audit record of the account's devices, newest first.
    pub async fn audit(&self) -> Result<Vec<Record>, Error> {
        self.call(|e| Ok(e.core.audit())).await
    }
}
