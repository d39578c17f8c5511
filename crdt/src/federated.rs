//! Federated queries: aggregates answered across this account's devices and
//! consenting contacts, as answers and never as records.
//!
//! A [`FederatedQuery`] is the local aggregate request plus a `scope`
//! (`devices` or `contacts`), an optional list of contacts and a deadline.
//! Nothing leaves a device for it unless a stored [`Policy`] of its owner
//! allows it; the policy's [`Terms`] say how the answer is computed.
//!
//! ```text
//!  querier ── Ask ──▶ contact (judges its policy, charges its ledger)
//!     │                 │ exact policy: its exact partial aggregate
//!     │                 │ noisy policy: its bounded contribution, split in
//!     │                 ▼   two additive shares, one sealed to each aggregator
//!     │◀── answer ──────┘
//!     ├── shares ──▶ aggregator A (sums its shares, adds +G noise) ──┐
//!     └── shares ──▶ aggregator B (sums its shares, adds −G noise) ──┤
//!         answer = exact parts + A + B  ◀────────────────────────────┘
//! ```
//!
//! - [`policy`]: consent policies and the judging of a query against one.
//! - [`contribution`]: one account's answer under its terms: exact groups,
//!   or a bounded vector (clamped values, a record limit per group, every
//!   group of the policy present).
//! - [`secret`]: additive secret shares of those vectors modulo 2²⁵⁶; each
//!   share alone is uniform.
//! - [`noise`]: discrete Laplace noise from `prio`'s integer sampler, added
//!   once in two geometric halves, one per aggregator.
//! - [`budget`]: the ε ledger, one per account, charged before a
//!   contribution leaves; a repeat the same day costs nothing and gets the
//!   same numbers.
//! - [`audit`]: the hash-chained record of every query a device decided.
//! - [`answer`]: the querier's side: combining exact parts and released
//!   sums into one result with its noise and 95 % intervals.
//!
//! # Threat model
//!
//! A contact's own numbers are hidden from everyone, the querier included,
//! as long as one of the two aggregators is honest: each sees one uniform
//! share per contribution and releases only a sum over at least the
//! cohort's accounts. The noise gives ε-differential privacy per account
//! when both aggregators add their half; an aggregator that colludes with
//! the querier can subtract its own half, leaving one-sided geometric noise
//! (the numbers stay hidden among the cohort, but the ε guarantee no longer
//! holds). The cohort counts distinct accounts, which a querier able to
//! create accounts could fill with its own; the noise, not the cohort, is
//! the protection against that.

use serde_json::{Map, Value};

use crate::query::{self, AggregateRequest, Scope};

pub mod answer;
pub mod audit;
pub mod budget;
pub mod contribution;
pub mod noise;
pub mod policy;
pub mod secret;

pub use policy::{Policy, PolicyError, Terms};

/// The longest deadline a query may ask for, in milliseconds.
pub const MAX_DEADLINE_MS: u64 = 60_000;
/// The deadline of a query that names none.
pub const DEFAULT_DEADLINE_MS: u64 = 5_000;
/// The most contacts a query may name.
pub const MAX_NAMED_CONTACTS: usize = 1024;
/// The deepest nesting a query's JSON may have.
pub const MAX_DEPTH: usize = 32;

/// Why an account did not answer a query. Its [`reason`](Decline::reason)
/// is the one word the querier's completeness report shows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Decline {
    /// The account has no policy for the collection.
    #[error("no policy allows queries on this collection")]
    NoPolicy,
    /// A policy exists but does not name this querier.
    #[error("the policy does not name this querier")]
    Querier,
    /// The policy does not cover part of the query.
    #[error("{0}")]
    Policy(String),
    /// The ε budget is spent.
    #[error("budget: {detail}")]
    Budget {
        /// Which budget, and how much of it is spent.
        detail: String,
    },
    /// Fewer accounts contributed than the cohort needs.
    #[error("cohort: {got} accounts contributed, {needed} are needed")]
    Cohort {
        /// Accounts that contributed.
        got: usize,
        /// The cohort asked for.
        needed: usize,
    },
    /// The querier asks too often.
    #[error("rate: too many queries from this querier; try again later")]
    Rate,
    /// The query is malformed or too large.
    #[error("bad query: {0}")]
    Bad(String),
}

impl Decline {
    /// The reason in one word: `no-policy`, `querier`, `policy`, `budget`,
    /// `cohort`, `rate` or `bad-query`.
    pub fn reason(&self) -> &'static str {
        match self {
            Decline::NoPolicy => "no-policy",
            Decline::Querier => "querier",
            Decline::Policy(_) => "policy",
            Decline::Budget { .. } => "budget",
            Decline::Cohort { .. } => "cohort",
            Decline::Rate => "rate",
            Decline::Bad(_) => "bad-query",
        }
    }
}

/// A parsed federated query: the aggregate request plus where it runs.
#[derive(Debug, Clone)]
pub struct FederatedQuery {
    /// The aggregate itself (its `scope` field is always local: the request
    /// is what each replica runs).
    pub request: AggregateRequest,
    /// The selector as written, for the policy's operator check.
    pub selector: Value,
    /// Where the query runs.
    pub scope: Scope,
    /// The contacts named, by the querier's name or account id; `None` asks
    /// every established contact.
    pub contacts: Option<Vec<String>>,
    /// How long the querier waits for answers.
    pub deadline_ms: u64,
    /// The query without its routing (`scope`, `contacts`, `deadline_ms`),
    /// as JSON with sorted keys: what policies judge, ledgers charge and
    /// audit logs keep.
    pub canonical: String,
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

impl FederatedQuery {
    /// Parses a query. `collection` is required; `scope` defaults to
    /// `local`; `contacts` only goes with `"scope": "contacts"`;
    /// `deadline_ms` is 1 to [`MAX_DEADLINE_MS`].
    pub fn parse(body: &Value) -> Result<FederatedQuery, query::Error> {
        let bad = |key: &'static str, expected: &'static str, got: &Value| query::Error::BadValue {
            key,
            context: "query",
            expected,
            got: match got {
                Value::String(s) => format!("{s:?}"),
                other => other.to_string().chars().take(60).collect(),
            },
        };
        let Value::Object(map) = body else {
            return Err(query::Error::NotAnObject {
                what: "query",
                got: "not an object",
            });
        };
        if depth(body) > MAX_DEPTH {
            return Err(bad("query", "JSON nested at most 32 deep", &Value::Null));
        }
        let mut rest = Map::new();
        let mut scope = Scope::Local;
        let mut contacts = None;
        let mut deadline_ms = DEFAULT_DEADLINE_MS;
        for (key, value) in map {
            match key.as_str() {
                "scope" => {
                    scope = match value.as_str() {
                        Some("local") => Scope::Local,
                        Some("devices") => Scope::Devices,
                        Some("contacts") => Scope::Contacts,
                        _ => {
                            return Err(bad(
                                "scope",
                                "\"local\", \"devices\" or \"contacts\"",
                                value,
                            ));
                        }
                    }
                }
                "contacts" => {
                    const EXPECTED: &str = "an array of 1 to 1024 contact names or account ids";
                    let Some(items) = value.as_array() else {
                        return Err(bad("contacts", EXPECTED, value));
                    };
                    if items.is_empty() || items.len() > MAX_NAMED_CONTACTS {
                        return Err(bad("contacts", EXPECTED, value));
                    }
                    let names = items
                        .iter()
                        .map(|v| match v.as_str() {
                            Some(s) if !s.is_empty() && s.len() <= 128 => Ok(s.to_owned()),
                            _ => Err(bad("contacts", EXPECTED, v)),
                        })
                        .collect::<Result<Vec<String>, _>>()?;
                    contacts = Some(names);
                }
                "deadline_ms" => match value.as_u64() {
                    Some(ms) if (1..=MAX_DEADLINE_MS).contains(&ms) => deadline_ms = ms,
                    _ => return Err(bad("deadline_ms", "milliseconds, 1 to 60000", value)),
                },
                _ => {
                    rest.insert(key.clone(), value.clone());
                }
            }
        }
        if contacts.is_some() && scope != Scope::Contacts {
            return Err(bad(
                "contacts",
                "no contacts list unless \"scope\" is \"contacts\"",
                &Value::Null,
            ));
        }
        let rest = Value::Object(rest);
        let request = AggregateRequest::parse(&rest)?;
        if request.collection.is_none() {
            return Err(query::Error::MissingKey {
                key: "collection",
                context: "query",
            });
        }
        let selector = rest
            .get("selector")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        Ok(FederatedQuery {
            request,
            selector,
            scope,
            contacts,
            deadline_ms,
            canonical: rest.to_string(),
        })
    }

    /// The collection asked about.
    pub fn collection(&self) -> &str {
        self.request.collection.as_deref().unwrap_or_default()
    }

    /// A short digest of the canonical query: equal questions have equal
    /// keys, whoever routes them and however their keys were ordered.
    pub fn key(&self) -> String {
        blake3::hash(self.canonical.as_bytes()).to_hex()[..32].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_documented_query_parses_with_its_routing_apart() {
        let q = FederatedQuery::parse(&json!({
            "collection": "energy.readings", "selector": { "year": 2026 },
            "group_by": ["month"],
            "aggregate": { "kwh": { "$avg": "kwh" }, "n": { "$count": true } },
            "scope": "contacts", "deadline_ms": 5000
        }))
        .unwrap();
        assert_eq!(q.scope, Scope::Contacts);
        assert_eq!(q.deadline_ms, 5000);
        assert_eq!(q.collection(), "energy.readings");
        assert!(!q.canonical.contains("scope"));
        let same = FederatedQuery::parse(&json!({
            "aggregate": { "n": { "$count": true }, "kwh": { "$avg": "kwh" } },
            "group_by": ["month"], "selector": { "year": 2026 },
            "collection": "energy.readings", "scope": "devices"
        }))
        .unwrap();
        assert_eq!(q.key(), same.key());
    }

    #[test]
    fn bad_routing_is_refused() {
        let base = json!({ "collection": "c", "aggregate": { "n": { "$count": true } } });
        for (patch, needle) in [
            (json!({ "scope": "world" }), "scope"),
            (json!({ "contacts": ["bob"] }), "contacts"),
            (json!({ "scope": "contacts", "contacts": [] }), "contacts"),
            (json!({ "deadline_ms": 0 }), "deadline_ms"),
            (json!({ "deadline_ms": 600000 }), "deadline_ms"),
        ] {
            let mut body = base.clone();
            for (k, v) in patch.as_object().unwrap() {
                body[k] = v.clone();
            }
            let err = FederatedQuery::parse(&body).unwrap_err().to_string();
            assert!(err.contains(needle), "{patch}: {err}");
        }
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "$and": [deep] });
        }
        let body = json!({ "collection": "c", "selector": deep, "aggregate": { "n": { "$count": true } } });
        assert!(FederatedQuery::parse(&body).is_err());
        assert!(
            FederatedQuery::parse(&json!({ "aggregate": { "n": { "$count": true } } })).is_err()
        );
    }
}
