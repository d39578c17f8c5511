//! Federated queries on the node: the querier's coordinator and the
//! answering side, over `/hearth/query/1`.
//!
//! # The protocol
//!
//! Every exchange is one request and its reply, over the links the querier
//! already has: to its own devices and to its contacts' devices. Nobody
//! needs a link to anyone else, because the querier relays the sealed
//! shares it cannot open.
//!
//! ```text
//!  scope devices:  querier ── Gather ──▶ own device: matching records ──▶ union by _id
//!  scope contacts:
//!   1 ask        querier ── Ask ──▶ every device of every target account
//!                  ◀── Exact (exact policy) | Willing (noisy terms) | Declined
//!   2 contribute  the largest class of willing accounts with one grid;
//!                 two aggregator accounts chosen among those that answered
//!                querier ── Contribute(aggregators' cards) ──▶ willing account
//!                  contributor charges its ε ledger (durable), splits its
//!                  bounded vector in two shares, seals one to each aggregator
//!                  ◀── Shares
//!   3 release    querier ── Release(index, sealed shares) ──▶ aggregator
//!                  aggregator opens them, checks the cohort, adds its half
//!                  of the noise once per query and day
//!                  ◀── Released(sum of shares + half noise)
//!                querier: exact parts + both releases = the answer
//! ```
//!
//! The first reply of an account counts; its other devices' replies are
//! dropped. The deadline is split: asks end at half of it, contributions at
//! three quarters, releases at the whole; whoever has not answered by then
//! is reported as timed out, a target none of whose devices could be
//! reached as unreachable.
//!
//! # What the answering side keeps
//!
//! Three reserved collections, which sync to the account's devices like
//! contacts do, so policy, budget and audit are the account's and not one
//! device's:
//!
//! - [`CONSENT`]: one record per collection and set of queriers, holding the
//!   owner's [`Policy`] as written.
//! - [`BUDGET`]: the ε ledger's [`Charge`](budget::Charge)s, written
//!   durably before the contribution they pay for leaves; an aggregator's
//!   noise seed per query and day is kept there too (an ε-0 charge keyed
//!   `release:<key>`), so a repeat gets the same noise.
//! - [`AUDIT`]: each device's hash-chained [`audit::Record`]s.
//!
//! # Trust
//!
//! A contributor checks that the two aggregators are distinct accounts,
//! neither of them the querier, and that each named device is a member of
//! its account's log (the querier relays the aggregators' contact cards).
//! Sealed shares are not signed: a querier could forge contributions from
//! made-up accounts, which is the same power as creating accounts to fill
//! the cohort (see the [threat model](crate::federated)): the noise, not
//! the cohort, protects against a querier that lies.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ethnum::{I256, U256};
use hearth_crypto::card::Card;
use hearth_crypto::identity::DeviceId;
use hearth_crypto::membership::AccountId;
use hearth_crypto::sealed;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::contacts::{decode, encode};
use super::{Error, Millis, Node, Output, Outputs};
use crate::collection::PutMode;
use crate::federated::answer::{self, Release};
use crate::federated::audit::{self, Decision, Entry};
use crate::federated::budget::{self, Charge, Ledger};
use crate::federated::contribution::{self, Contribution};
use crate::federated::noise::{self, Half, Seeded};
use crate::federated::policy::Noise;
use crate::federated::{Decline, FederatedQuery, Policy, PolicyError, Terms, secret};
use crate::query::{self, Aggregated, Scope};

/// The reserved collection of consent policies.
pub const CONSENT: &str = "hearth.consent";
/// The reserved collection of the ε ledger.
pub const BUDGET: &str = "hearth.budget";
/// The reserved collection of audit records.
pub const AUDIT: &str = "hearth.audit";

/// What a sealed share is for; both sides must name it.
const SHARE_INFO: &[u8] = b"hearth/query/1 share";

/// Bounds on federated queries; each is a field of `[queries]` in
/// `hearth.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Queries this node runs as querier at once. Default 16.
    pub max_running: usize,
    /// Requests one query has on their way at once. Default 64.
    pub in_flight: usize,
    /// Largest canonical query accepted, in bytes. Default 64 KiB.
    pub max_query_bytes: usize,
    /// Largest `/hearth/query/1` message either way, in bytes. Default 8 MiB.
    pub max_message_bytes: usize,
    /// Requests one device may send per minute; more are refused. Default 120.
    pub requests_per_minute: u32,
    /// (query, step, device) triples remembered to refuse replays. Default
    /// 4,096.
    pub seen: usize,
    /// Records a device sends for one `devices` query. Default 100,000.
    pub max_records: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_running: 16,
            in_flight: 64,
            max_query_bytes: 64 * 1024,
            max_message_bytes: 8 * 1024 * 1024,
            requests_per_minute: 120,
            seen: 4096,
            max_records: 100_000,
        }
    }
}

/// Devices whose request windows are remembered.
const RATE_MAX_DEVICES: usize = 1024;

/// A request on `/hearth/query/1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// From one of the account's own devices: the records that match.
    Gather {
        /// The query's id.
        id: String,
        /// The canonical query.
        canonical: String,
    },
    /// Phase 1: what would you answer?
    Ask {
        /// The query's id.
        id: String,
        /// The canonical query.
        canonical: String,
    },
    /// Phase 2: contribute, sealed to these two aggregators.
    Contribute {
        /// The query's id.
        id: String,
        /// The canonical query.
        canonical: String,
        /// The aggregators, in index order.
        aggregators: Vec<Aggregator>,
    },
    /// Phase 2: your willing answer is not used, and why (for your audit).
    Dismiss {
        /// The query's id.
        id: String,
        /// The canonical query.
        canonical: String,
        /// The one-word reason.
        reason: String,
        /// A sentence.
        detail: String,
    },
    /// Phase 3: sum these shares, sealed to you, and add your noise.
    Release {
        /// The query's id.
        id: String,
        /// The canonical query.
        canonical: String,
        /// Which aggregator (0 or 1).
        index: u8,
        /// The sealed shares, by contributor account.
        shares: Vec<SealedShare>,
    },
}

/// An aggregator named in a [`Request::Contribute`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregator {
    /// The device the share is sealed to.
    pub device: String,
    /// Its account's contact card, proving the device is a member.
    pub card: Vec<u8>,
}

/// One contributor's share, sealed to an aggregator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShare {
    /// The contributor's account id.
    pub account: String,
    /// The sealed share with its terms (postcard, sealed with HPKE).
    pub sealed: Vec<u8>,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The matching records, as a JSON array.
    Records {
        /// JSON bytes.
        json: Vec<u8>,
    },
    /// The exact partial aggregate ([`Aggregated`] as JSON).
    Exact {
        /// JSON bytes.
        json: Vec<u8>,
    },
    /// Willing to contribute under these terms.
    Willing {
        /// The cells, as JSON (`[[value, …], …]`).
        grid: String,
        /// The fewest accounts the sum may be released over.
        min_cohort: u32,
    },
    /// Not answered, and why.
    Declined {
        /// The one word ([`Decline::reason`]).
        reason: String,
        /// A sentence.
        detail: String,
    },
    /// Two sealed shares, in aggregator order.
    Shares {
        /// The sealed shares.
        shares: Vec<Vec<u8>>,
    },
    /// An aggregator's sum of shares plus its half of the noise.
    Released {
        /// The sum.
        #[serde(with = "secret::wire")]
        totals: Vec<U256>,
        /// The noise on each integer of a cell.
        noise: Vec<Noise>,
        /// The largest ε a contributor spent.
        epsilon: f64,
    },
    /// Taken note of.
    Noted,
    /// The request itself was refused.
    Refused {
        /// A sentence.
        reason: String,
    },
}

/// What a contributor seals to an aggregator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Plain {
    #[serde(with = "secret::wire")]
    share: Vec<U256>,
    grid: String,
    min_cohort: u32,
    noise: Vec<Noise>,
    epsilon: f64,
}

impl Request {
    /// The wire form: a version byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    fn id(&self) -> &str {
        match self {
            Request::Gather { id, .. }
            | Request::Ask { id, .. }
            | Request::Contribute { id, .. }
            | Request::Dismiss { id, .. }
            | Request::Release { id, .. } => id,
        }
    }

    fn step(&self) -> u8 {
        match self {
            Request::Gather { .. } => 0,
            Request::Ask { .. } => 1,
            Request::Contribute { .. } => 2,
            Request::Dismiss { .. } => 3,
            Request::Release { .. } => 4,
        }
    }

    fn canonical(&self) -> &str {
        match self {
            Request::Gather { canonical, .. }
            | Request::Ask { canonical, .. }
            | Request::Contribute { canonical, .. }
            | Request::Dismiss { canonical, .. }
            | Request::Release { canonical, .. } => canonical,
        }
    }
}

impl Reply {
    /// Reads a reply of at most `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Reply, String> {
        decode(bytes, max)
    }
}

/// Why a query or consent command failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The policy does not parse.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A named contact is not established.
    #[error("{0} is not an established contact yet: both sides must add each other's card")]
    NotEstablished(String),
    /// Nobody to ask.
    #[error(
        "no established contacts to ask; add one with `hearth contact add` or name some in \"contacts\""
    )]
    NoContacts,
    /// Too many queries run already.
    #[error("{0} queries are running already, the most at once ([queries] max_running)")]
    Busy(usize),
    /// No consent to remove.
    #[error("no consent policy for {0}; `hearth consent list` shows them")]
    NoConsent(String),
    /// Consent is for a user collection.
    #[error("{0} is kept by hearth itself; consent applies to your own collections")]
    ReservedCollection(String),
}

/// The querier's and answerer's state.
#[derive(Debug, Default)]
pub(super) struct Queries {
    running: BTreeMap<String, Running>,
    /// Exchange number → (query id, what it is).
    exchanges: BTreeMap<u64, (String, Step)>,
    next_exchange: u64,
    /// Per sending device: the start of its minute and its requests in it.
    windows: BTreeMap<DeviceId, (Millis, u32)>,
    seen: BTreeSet<(String, u8, DeviceId)>,
    seen_order: VecDeque<(String, u8, DeviceId)>,
}

impl Queries {
    /// When the node wants a tick for its queries' deadlines.
    pub(super) fn due(&self) -> Option<Millis> {
        self.running.values().map(Running::phase_end).min()
    }
}

#[derive(Debug, Clone)]
enum Step {
    Gather(DeviceId),
    Ask(AccountId, DeviceId),
    Contribute(AccountId),
    Release(usize),
    Dismiss,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Ask,
    Contribute,
    Release,
}

#[derive(Debug, Clone, PartialEq)]
enum Status {
    /// Waiting for a reply; this many devices have not failed yet.
    Waiting(usize),
    Exact(DeviceId),
    Willing {
        device: DeviceId,
        grid: String,
        min_cohort: u32,
    },
    Contributing,
    Contributed,
    Declined(String),
    Unreachable,
    TimedOut,
}

#[derive(Debug)]
struct Target {
    name: String,
    addrs: BTreeMap<DeviceId, Vec<String>>,
    card: Vec<u8>,
    status: Status,
}

#[derive(Debug)]
struct Running {
    query: FederatedQuery,
    started: Millis,
    phase: Phase,
    targets: BTreeMap<AccountId, Target>,
    /// Own devices asked (scope devices), with whether they replied.
    devices: BTreeMap<DeviceId, Option<bool>>,
    queue: VecDeque<(DeviceId, Vec<String>, Vec<u8>, Step)>,
    in_flight: usize,
    exact: Option<Aggregated>,
    records: BTreeMap<String, Value>,
    aggregators: Vec<(AccountId, DeviceId)>,
    shares: BTreeMap<AccountId, Vec<Vec<u8>>>,
    /// Each aggregator's release, or why there is none.
    released: Vec<Option<Result<Part, String>>>,
    min_cohort: u32,
    grid: String,
}

/// One aggregator's release: its sum, the noise per integer of a cell and
/// the ε.
#[derive(Debug, Clone)]
struct Part {
    totals: Vec<U256>,
    noise: Vec<Noise>,
    epsilon: f64,
}

impl Running {
    fn phase_end(&self) -> Millis {
        let d = i64::try_from(self.query.deadline_ms).unwrap_or(i64::MAX);
        let part = match self.phase {
            Phase::Ask => d / 2,
            Phase::Contribute => d * 3 / 4,
            Phase::Release => d,
        };
        self.started.saturating_add(part)
    }

    fn waiting(&self) -> bool {
        match self.phase {
            Phase::Ask => {
                self.targets
                    .values()
                    .any(|t| matches!(t.status, Status::Waiting(_)))
                    || self.devices.values().any(Option::is_none)
            }
            Phase::Contribute => self
                .targets
                .values()
                .any(|t| t.status == Status::Contributing),
            Phase::Release => self.released.iter().any(Option::is_none),
        }
    }
}

impl Node {
    // ----- consent -------------------------------------------------------

    /// Stores `policy` for `collection`, replacing the one for the same set
    /// of queriers. Answer after the outputs' batch is durable.
    pub fn set_consent(
        &mut self,
        now: Millis,
        collection: &str,
        policy: &Value,
    ) -> Result<(Value, Outputs), Error> {
        super::check_doctype(collection)?;
        if super::data::is_reserved(collection) {
            return Err(QueryError::ReservedCollection(collection.to_owned()).into());
        }
        let parsed = Policy::parse(policy).map_err(QueryError::from)?;
        if let federated_queriers::Named(names) = &parsed.queriers {
            for name in names {
                self.find_contact(name)?;
            }
        }
        let text = policy.to_string();
        let queriers = serde_json::to_string(&policy["queriers"]).unwrap_or_default();
        let id = format!(
            "{collection}.{}",
            &blake3::hash(queriers.as_bytes()).to_hex()[..16]
        );
        let record = json!({
            "collection": collection,
            "policy": policy,
            "version": audit::policy_hash(&text),
            "set_at": now,
        });
        let loaded = self.ensure_collection(CONSENT, now)?;
        let written =
            loaded
                .data
                .put_many(vec![(id.clone(), record.clone())], PutMode::Upsert, now)?;
        let out = self.commit(now, CONSENT, &written);
        let mut shown = record;
        shown["id"] = Value::String(id);
        Ok((shown, out))
    }

    /// Every stored consent policy: `collection`, `policy`, `version`,
    /// `set_at` and `id`, by id.
    pub fn consents(&self) -> Vec<Value> {
        let Some(loaded) = self.collections.get(CONSENT) else {
            return Vec::new();
        };
        loaded
            .data
            .records()
            .iter()
            .map(|(id, r)| {
                let mut shown = r.clone();
                if let Value::Object(map) = &mut shown {
                    map.remove("_rev");
                    map.remove("_id");
                    map.insert("id".into(), Value::String(id.clone()));
                }
                shown
            })
            .collect()
    }

    /// Removes every consent policy of `collection`; how many there were.
    pub fn remove_consent(
        &mut self,
        now: Millis,
        collection: &str,
    ) -> Result<(usize, Outputs), Error> {
        let ids: Vec<String> = self
            .consents()
            .iter()
            .filter(|c| c["collection"] == collection)
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect();
        if ids.is_empty() {
            return Err(QueryError::NoConsent(collection.to_owned()).into());
        }
        let loaded = self.ensure_collection(CONSENT, now)?;
        let mut written = Vec::new();
        for id in &ids {
            written.push(loaded.data.delete(id, None, now)?);
        }
        Ok((ids.len(), self.commit(now, CONSENT, &written)))
    }

    /// The policy that applies to `querier` (our name for it, and its
    /// account) on `collection`, with its version: one naming the querier
    /// before one for all contacts.
    fn policy_for(
        &self,
        collection: &str,
        name: Option<&str>,
        account: &str,
    ) -> Option<(Policy, String)> {
        let mut found: Vec<(bool, Policy, String)> = self
            .consents()
            .into_iter()
            .filter(|c| c["collection"] == collection)
            .filter_map(|c| {
                let policy = Policy::parse(&c["policy"]).ok()?;
                policy.admits(name, account).then(|| {
                    let named = matches!(policy.queriers, federated_queriers::Named(_));
                    (
                        named,
                        policy,
                        c["version"].as_str().unwrap_or("").to_owned(),
                    )
                })
            })
            .collect();
        found.sort_by_key(|(named, _, _)| !*named);
        found.into_iter().next().map(|(_, p, v)| (p, v))
    }

    // ----- audit ---------------------------------------------------------

    /// Every audit record of the account's devices, newest first.
    pub fn audit(&self) -> Vec<audit::Record> {
        let mut records: Vec<audit::Record> = self
            .collections
            .get(AUDIT)
            .map(|l| {
                l.data
                    .records()
                    .values()
                    .filter_map(|r| serde_json::from_value(r.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        records.sort_by(|a: &audit::Record, b| {
            (b.entry.at, &b.device, b.seq).cmp(&(a.entry.at, &a.device, a.seq))
        });
        records
    }

    /// Appends `entry` to this device's chain.
    fn record_audit(&mut self, now: Millis, entry: Entry, out: &mut Outputs) {
        let me = self.id().to_string();
        // This device's records are `<device>.<seq, 12 digits>`, so its
        // chain's tail is the last id of its range: one lookup, however long
        // the log (reading every record made each answer cost O(log)).
        let range = format!("{me}.")..format!("{me}/");
        let last: Option<audit::Record> = self.collections.get(AUDIT).and_then(|l| {
            l.data
                .records()
                .range(range)
                .rev()
                .filter(|(_, r)| r["device"] == me.as_str())
                .find_map(|(_, r)| serde_json::from_value::<audit::Record>(r.clone()).ok())
        });
        let record = audit::append(&me, last.as_ref(), entry);
        let id = format!("{me}.{:012}", record.seq);
        let Ok(value) = serde_json::to_value(&record) else {
            return;
        };
        let Ok(loaded) = self.ensure_collection(AUDIT, now) else {
            return;
        };
        if let Ok(written) = loaded
            .data
            .put_many(vec![(id, value)], PutMode::Upsert, now)
        {
            out.extend(self.commit(now, AUDIT, &written));
        }
    }

    /// Today's charges: budgets and repeats are per UTC day, so the days
    /// before are not read (decoding the whole ledger made every answer
    /// cost O(history)).
    fn ledger(&self, now: Millis) -> Ledger {
        let today = budget::day_of(now);
        Ledger::new(
            self.collections
                .get(BUDGET)
                .map(|l| {
                    l.data
                        .records()
                        .values()
                        .filter(|r| r["day"].as_i64() == Some(today))
                        .filter_map(|r| serde_json::from_value::<Charge>(r.clone()).ok())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
    }

    fn charge(&mut self, now: Millis, charge: Charge) -> Result<Outputs, Error> {
        let id = charge.id();
        let value = serde_json::to_value(&charge).unwrap_or(Value::Null);
        let loaded = self.ensure_collection(BUDGET, now)?;
        let written = loaded
            .data
            .put_many(vec![(id, value)], PutMode::Upsert, now)?;
        Ok(self.commit(now, BUDGET, &written))
    }

    // ----- the querier ---------------------------------------------------

    /// Runs a query (the JSON of [`FederatedQuery::parse`]). Its result
    /// comes out as [`Output::Answered`] with the returned id: at once for
    /// `local`, after the fan-out for `devices` and `contacts`.
    pub fn query(
        &mut self,
        now: Millis,
        rng: &mut (impl RngCore + CryptoRng),
        body: &Value,
    ) -> Result<(String, Outputs), Error> {
        let query = FederatedQuery::parse(body)?;
        super::check_doctype(query.collection())?;
        let mut out = Outputs::default();
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if query.scope == Scope::Local {
            let mut result = self.local_result(&query, None)?;
            result["query"] = Value::String(id.clone());
            out.push(Output::Answered {
                query: id.clone(),
                result,
            });
            return Ok((id, out));
        }
        let limits = self.config.queries;
        if self.queries.running.len() >= limits.max_running {
            return Err(QueryError::Busy(limits.max_running).into());
        }
        let mut running = Running {
            query,
            started: now,
            phase: Phase::Ask,
            targets: BTreeMap::new(),
            devices: BTreeMap::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            exact: None,
            records: BTreeMap::new(),
            aggregators: Vec::new(),
            shares: BTreeMap::new(),
            released: Vec::new(),
            min_cohort: 0,
            grid: String::new(),
        };
        let canonical = running.query.canonical.clone();
        if running.query.scope == Scope::Devices {
            let frame = encode(&Request::Gather {
                id: id.clone(),
                canonical,
            });
            let me = self.id();
            for member in self.log.members() {
                if member.device != me {
                    running.devices.insert(member.device, None);
                    running.queue.push_back((
                        member.device,
                        Vec::new(),
                        frame.clone(),
                        Step::Gather(member.device),
                    ));
                }
            }
        } else {
            let accounts: Vec<AccountId> = match &running.query.contacts {
                None => self
                    .contacts()
                    .values()
                    .filter(|c| c.added && c.added_us)
                    .map(|c| c.account)
                    .collect(),
                Some(names) => {
                    let mut accounts = Vec::new();
                    for name in names {
                        let c = self.find_contact(name)?;
                        if !(c.added && c.added_us) {
                            return Err(QueryError::NotEstablished(name.clone()).into());
                        }
                        accounts.push(c.account);
                    }
                    accounts
                }
            };
            if accounts.is_empty() {
                return Err(QueryError::NoContacts.into());
            }
            let frame = encode(&Request::Ask {
                id: id.clone(),
                canonical,
            });
            for account in accounts {
                let c = &self.contacts()[&account];
                let addrs: BTreeMap<DeviceId, Vec<String>> =
                    c.card.addrs().iter().cloned().collect();
                let devices = c.devices();
                for device in &devices {
                    let at = addrs.get(device).cloned().unwrap_or_default();
                    running.queue.push_back((
                        *device,
                        at,
                        frame.clone(),
                        Step::Ask(account, *device),
                    ));
                }
                running.targets.insert(
                    account,
                    Target {
                        name: c.shown_name().to_owned(),
                        addrs,
                        card: c.card.to_bytes(),
                        status: if devices.is_empty() {
                            Status::Unreachable
                        } else {
                            Status::Waiting(devices.len())
                        },
                    },
                );
            }
        }
        self.queries.running.insert(id.clone(), running);
        self.advance(now, &id, &mut out);
        Ok((id, out))
    }

    /// This device's own answer to `query`: the local aggregate, over the
    /// records gathered from the account's other devices too when given.
    fn local_result(
        &self,
        query: &FederatedQuery,
        gathered: Option<&BTreeMap<String, Value>>,
    ) -> Result<Value, Error> {
        let empty = BTreeMap::new();
        let mine = self
            .collection(query.collection())?
            .map_or(&empty, |c| c.data.records());
        let result = match gathered {
            None => query::aggregate(&query.request, mine.values())?,
            Some(more) => {
                let mut union: BTreeMap<&String, &Value> = more.iter().collect();
                for (id, r) in mine {
                    union.insert(id, r);
                }
                query::aggregate(&query.request, union.into_values())?
            }
        };
        Ok(answer::assemble(&query.request, Some(&result), &[]))
    }

    /// The reply (`None`: not delivered) to exchange `exchange`.
    pub fn query_reply(&mut self, now: Millis, exchange: u64, reply: Option<&[u8]>) -> Outputs {
        let mut out = Outputs::default();
        let Some((id, step)) = self.queries.exchanges.remove(&exchange) else {
            return out;
        };
        let max = self.config.queries.max_message_bytes;
        let Some(running) = self.queries.running.get_mut(&id) else {
            return out;
        };
        running.in_flight = running.in_flight.saturating_sub(1);
        let reply = reply.map(|r| decode::<Reply>(r, max));
        match step {
            Step::Dismiss => {}
            Step::Gather(device) => {
                let mut answered = false;
                if let Some(Ok(Reply::Records { json })) = reply
                    && let Ok(Value::Array(records)) = serde_json::from_slice::<Value>(&json)
                {
                    answered = true;
                    for r in records {
                        if let Some(rid) = r.get("_id").and_then(Value::as_str) {
                            running.records.entry(rid.to_owned()).or_insert(r);
                        }
                    }
                }
                running.devices.insert(device, Some(answered));
            }
            Step::Ask(account, device) => running.asked(account, device, reply),
            Step::Contribute(account) => {
                let Some(target) = running.targets.get_mut(&account) else {
                    return out;
                };
                if target.status != Status::Contributing {
                    return out;
                }
                target.status = match reply {
                    Some(Ok(Reply::Shares { shares })) if shares.len() == 2 => {
                        running.shares.insert(account, shares);
                        Status::Contributed
                    }
                    Some(Ok(Reply::Declined { reason, .. })) => Status::Declined(reason),
                    Some(Ok(Reply::Refused { reason })) => {
                        Status::Declined(refusal_reason(&reason))
                    }
                    None => Status::Unreachable,
                    Some(_) => Status::Declined("bad-reply".into()),
                };
            }
            Step::Release(index) => {
                let result = match reply {
                    Some(Ok(Reply::Released {
                        totals,
                        noise,
                        epsilon,
                    })) => Ok(Part {
                        totals,
                        noise,
                        epsilon,
                    }),
                    Some(Ok(Reply::Declined { reason, .. })) => Err(reason),
                    Some(Ok(Reply::Refused { reason })) => Err(refusal_reason(&reason)),
                    None => Err("aggregator-unreachable".into()),
                    Some(_) => Err("bad-reply".into()),
                };
                if let Some(slot) = running.released.get_mut(index) {
                    *slot = Some(result);
                }
            }
        }
        self.advance(now, &id, &mut out);
        out
    }
}

impl Running {
    /// Takes an account's reply to its ask; the first one that is an
    /// answer counts, a device that cannot be reached leaves the others.
    fn asked(
        &mut self,
        account: AccountId,
        device: DeviceId,
        reply: Option<Result<Reply, String>>,
    ) {
        let Some(target) = self.targets.get_mut(&account) else {
            return;
        };
        let Status::Waiting(left) = target.status else {
            return;
        };
        target.status = match reply {
            None if left > 1 => Status::Waiting(left - 1),
            None => Status::Unreachable,
            Some(Err(_)) => Status::Declined("bad-reply".into()),
            Some(Ok(Reply::Refused { reason })) => Status::Declined(refusal_reason(&reason)),
            Some(Ok(Reply::Declined { reason, .. })) => Status::Declined(reason),
            Some(Ok(Reply::Willing { grid, min_cohort })) => Status::Willing {
                device,
                grid,
                min_cohort,
            },
            Some(Ok(Reply::Exact { json })) => {
                let merged = serde_json::from_slice::<Aggregated>(&json)
                    .map_err(|e| e.to_string())
                    .and_then(|partial| match self.exact.take() {
                        None => Ok(partial),
                        Some(mut acc) => match acc.merge(partial) {
                            Ok(()) => Ok(acc),
                            Err(e) => {
                                self.exact = Some(acc);
                                Err(e.to_string())
                            }
                        },
                    });
                match merged {
                    Ok(acc) => {
                        self.exact = Some(acc);
                        Status::Exact(device)
                    }
                    Err(_) => Status::Declined("bad-reply".into()),
                }
            }
            Some(Ok(_)) => Status::Declined("bad-reply".into()),
        };
    }
}

impl Node {
    /// Moves query `id` on: through every phase whose replies are all in
    /// or whose time is up, then sends what its queue allows.
    fn advance(&mut self, now: Millis, id: &str, out: &mut Outputs) {
        loop {
            let Some(running) = self.queries.running.get_mut(id) else {
                return;
            };
            if running.waiting() && now < running.phase_end() {
                break;
            }
            // What the phase still had to send is moot, but dismissals go out.
            running.queue.retain(|q| matches!(q.3, Step::Dismiss));
            match running.phase {
                Phase::Ask => {
                    for t in running.targets.values_mut() {
                        if matches!(t.status, Status::Waiting(_)) {
                            t.status = Status::TimedOut;
                        }
                    }
                    if running.query.scope == Scope::Devices || !self.start_contribute(id) {
                        self.finish(id, out);
                        return;
                    }
                }
                Phase::Contribute => {
                    for t in running.targets.values_mut() {
                        if t.status == Status::Contributing {
                            t.status = Status::TimedOut;
                        }
                    }
                    if !self.start_release(id) {
                        self.finish(id, out);
                        return;
                    }
                }
                Phase::Release => {
                    self.finish(id, out);
                    return;
                }
            }
        }
        let limit = self.config.queries.in_flight;
        let Some(running) = self.queries.running.get_mut(id) else {
            return;
        };
        let end = running.phase_end();
        while running.in_flight < limit {
            let Some((peer, addrs, frame, step)) = running.queue.pop_front() else {
                break;
            };
            running.in_flight += 1;
            let exchange = self.queries.next_exchange;
            self.queries.next_exchange += 1;
            self.queries
                .exchanges
                .insert(exchange, (id.to_owned(), step));
            out.push(Output::Query {
                exchange,
                peer,
                addrs,
                frame,
                timeout_ms: (end - now).max(1),
            });
        }
        self.links.wake_at(end, now, out);
    }

    /// Phase 2: picks the contributors and aggregators and asks for
    /// shares; false when there is nobody to ask.
    fn start_contribute(&mut self, id: &str) -> bool {
        let Some(running) = self.queries.running.get_mut(id) else {
            return false;
        };
        let mut classes: BTreeMap<String, Vec<(AccountId, DeviceId, u32)>> = BTreeMap::new();
        for (account, t) in &running.targets {
            if let Status::Willing {
                device,
                grid,
                min_cohort,
            } = &t.status
            {
                classes
                    .entry(grid.clone())
                    .or_default()
                    .push((*account, *device, *min_cohort));
            }
        }
        let Some(grid) = classes
            .iter()
            .max_by_key(|(g, members)| (members.len(), std::cmp::Reverse((*g).clone())))
            .map(|(g, _)| g.clone())
        else {
            return false;
        };
        let class = classes.remove(&grid).unwrap_or_default();
        let canonical = running.query.canonical.clone();
        let dismiss =
            |running: &mut Running, account: AccountId, device, reason: &str, detail: String| {
                if let Some(t) = running.targets.get_mut(&account) {
                    t.status = Status::Declined(reason.to_owned());
                    let addrs = t.addrs.get(&device).cloned().unwrap_or_default();
                    let frame = encode(&Request::Dismiss {
                        id: id.to_owned(),
                        canonical: canonical.clone(),
                        reason: reason.to_owned(),
                        detail,
                    });
                    running
                        .queue
                        .push_back((device, addrs, frame, Step::Dismiss));
                }
            };
        for (account, device, _) in classes.into_values().flatten() {
            dismiss(
                running,
                account,
                device,
                "policy",
                "its policy's groups differ from those most contributors allow".into(),
            );
        }
        let needed = class.iter().map(|c| c.2).max().unwrap_or(1).max(1);
        // Aggregators: the two smallest account ids among those that answered.
        let answered: Vec<(AccountId, DeviceId)> = running
            .targets
            .iter()
            .filter_map(|(a, t)| match &t.status {
                Status::Exact(d) => Some((*a, *d)),
                Status::Willing { device, .. } => Some((*a, *device)),
                _ => None,
            })
            .take(2)
            .collect();
        let refusal = if class.len() < needed as usize {
            Some(format!(
                "{} accounts would contribute, {needed} are needed",
                class.len()
            ))
        } else if answered.len() < 2 {
            Some("a secure sum needs two accounts to aggregate and only one answered".into())
        } else {
            None
        };
        if let Some(detail) = refusal {
            for (account, device, _) in class {
                dismiss(running, account, device, "cohort", detail.clone());
            }
            // The dismissals still go out.
            running.phase = Phase::Contribute;
            return true;
        }
        let aggregators: Vec<Aggregator> = answered
            .iter()
            .map(|(a, d)| Aggregator {
                device: d.to_string(),
                card: running.targets[a].card.clone(),
            })
            .collect();
        let frame = encode(&Request::Contribute {
            id: id.to_owned(),
            canonical,
            aggregators,
        });
        for (account, device, _) in class {
            if let Some(t) = running.targets.get_mut(&account) {
                t.status = Status::Contributing;
                let addrs = t.addrs.get(&device).cloned().unwrap_or_default();
                running
                    .queue
                    .push_back((device, addrs, frame.clone(), Step::Contribute(account)));
            }
        }
        running.aggregators = answered;
        running.min_cohort = needed;
        running.grid = grid;
        running.phase = Phase::Contribute;
        true
    }

    /// Phase 3: hands each aggregator its shares; false when there is no
    /// sum to release.
    fn start_release(&mut self, id: &str) -> bool {
        let Some(running) = self.queries.running.get_mut(id) else {
            return false;
        };
        if running.aggregators.len() != 2 || running.shares.is_empty() {
            return false;
        }
        let contributed = running.shares.len();
        if contributed < running.min_cohort as usize {
            let accounts: Vec<AccountId> = running.shares.keys().copied().collect();
            for a in accounts {
                if let Some(t) = running.targets.get_mut(&a) {
                    t.status = Status::Declined("cohort".into());
                }
            }
            running.shares.clear();
            return false;
        }
        for (index, (account, device)) in running.aggregators.iter().enumerate() {
            let shares = running
                .shares
                .iter()
                .map(|(a, s)| SealedShare {
                    account: a.to_string(),
                    sealed: s[index].clone(),
                })
                .collect();
            let frame = encode(&Request::Release {
                id: id.to_owned(),
                canonical: running.query.canonical.clone(),
                index: u8::try_from(index).unwrap_or(1),
                shares,
            });
            let addrs = running
                .targets
                .get(account)
                .and_then(|t| t.addrs.get(device).cloned())
                .unwrap_or_default();
            running
                .queue
                .push_back((*device, addrs, frame, Step::Release(index)));
        }
        running.released = vec![None, None];
        running.phase = Phase::Release;
        true
    }

    /// Ends query `id`: its result goes out as [`Output::Answered`].
    fn finish(&mut self, id: &str, out: &mut Outputs) {
        let Some(mut running) = self.queries.running.remove(id) else {
            return;
        };
        self.queries.exchanges.retain(|_, (q, _)| q != id);
        // Dismissals still queued go out unanswered: nothing waits on them.
        for (peer, addrs, frame, _) in running.queue.drain(..) {
            let exchange = self.queries.next_exchange;
            self.queries.next_exchange += 1;
            out.push(Output::Query {
                exchange,
                peer,
                addrs,
                frame,
                timeout_ms: i64::try_from(running.query.deadline_ms).unwrap_or(5_000),
            });
        }
        let result = if running.query.scope == Scope::Devices {
            let names: BTreeMap<DeviceId, String> = self
                .log
                .members()
                .into_iter()
                .map(|m| (m.device, m.name))
                .collect();
            let name = |d: &DeviceId| names.get(d).cloned().unwrap_or_else(|| d.to_string());
            let asked: Vec<String> = running.devices.keys().map(name).collect();
            let answered: Vec<String> = running
                .devices
                .iter()
                .filter(|(_, v)| **v == Some(true))
                .map(|(d, _)| name(d))
                .collect();
            let missing: Vec<String> = running
                .devices
                .iter()
                .filter(|(_, v)| **v != Some(true))
                .map(|(d, _)| name(d))
                .collect();
            self.local_result(&running.query, Some(&running.records))
                .map(|mut r| {
                    r["completeness"] = json!({
                        "asked": asked, "answered": answered, "declined": [],
                        "timed_out": [], "unreachable": missing,
                    });
                    r
                })
                .unwrap_or_else(|e| json!({ "error": e.to_string() }))
        } else {
            let mut releases = Vec::new();
            if !running.shares.is_empty() {
                match self.combine(&running) {
                    Ok(release) => releases.push(release),
                    Err(reason) => {
                        let accounts: Vec<AccountId> = running.shares.keys().copied().collect();
                        for a in accounts {
                            if let Some(t) = running.targets.get_mut(&a) {
                                t.status = Status::Declined(reason.clone());
                            }
                        }
                    }
                }
            }
            let mut result =
                answer::assemble(&running.query.request, running.exact.as_ref(), &releases);
            result["completeness"] = completeness(&running);
            result
        };
        // The id lets the querier match its result to the audit records of
        // those it asked.
        let mut result = result;
        result["query"] = Value::String(id.to_owned());
        out.push(Output::Answered {
            query: id.to_owned(),
            result,
        });
    }

    /// Both aggregators' releases added: the noisy sum over the
    /// contributors, or why there is none.
    fn combine(&self, running: &Running) -> Result<Release, String> {
        let mut parts = Vec::new();
        for slot in &running.released {
            match slot {
                Some(Ok(part)) => parts.push(part),
                Some(Err(reason)) => return Err(reason.clone()),
                None => return Err("aggregator-timed-out".into()),
            }
        }
        let [a, b] = parts.as_slice() else {
            return Err("aggregator-timed-out".into());
        };
        if a.totals.len() != b.totals.len() || a.noise != b.noise {
            return Err("bad-reply".into());
        }
        let grid: Vec<Vec<Value>> =
            serde_json::from_str(&running.grid).map_err(|_| "bad-reply".to_owned())?;
        let totals: Vec<I256> = a
            .totals
            .iter()
            .zip(&b.totals)
            .map(|(x, y)| x.wrapping_add(*y).as_i256())
            .collect();
        Ok(Release {
            grid,
            totals,
            noise: a.noise.clone(),
            accounts: running.shares.len(),
            epsilon: a.epsilon.max(b.epsilon),
        })
    }

    /// The deadline tick: every query whose phase time is up moves on.
    pub(super) fn queries_tick(&mut self, now: Millis, out: &mut Outputs) {
        let due: Vec<String> = self
            .queries
            .running
            .iter()
            .filter(|(_, r)| r.phase_end() <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.advance(now, &id, out);
        }
    }
}

/// Who sent a request, as the answering side knows it.
struct Asker {
    /// The querier's account.
    account: AccountId,
    /// Our name for it (`None` for our own account).
    name: Option<String>,
    /// One of our own devices.
    own: bool,
    /// The device.
    device: DeviceId,
}

impl Node {
    /// A `/hearth/query/1` request from `from`: the reply to send back,
    /// after the outputs' batch is durable.
    pub fn query_request(
        &mut self,
        now: Millis,
        rng: &mut (impl RngCore + CryptoRng),
        from: DeviceId,
        frame: &[u8],
    ) -> (Vec<u8>, Outputs) {
        let mut out = Outputs::default();
        let reply = self.answer_query(now, rng, from, frame, &mut out);
        (encode(&reply), out)
    }

    fn asker(&self, from: DeviceId) -> Option<Asker> {
        if from != self.id() && self.log.is_member(&from) {
            return Some(Asker {
                account: self.log.account_id(),
                name: None,
                own: true,
                device: from,
            });
        }
        self.contacts()
            .values()
            .find(|c| c.added && c.added_us && c.devices().contains(&from))
            .map(|c| Asker {
                account: c.account,
                name: c.name.clone(),
                own: false,
                device: from,
            })
    }

    fn answer_query(
        &mut self,
        now: Millis,
        rng: &mut (impl RngCore + CryptoRng),
        from: DeviceId,
        frame: &[u8],
        out: &mut Outputs,
    ) -> Reply {
        let refused = |reason: String| Reply::Refused { reason };
        let Some(asker) = self.asker(from) else {
            return refused(
                "queries come only from this account's devices and established contacts".into(),
            );
        };
        let limits = self.config.queries;
        let windows = &mut self.queries.windows;
        if let Err(reason) = super::contacts::count_request(
            windows,
            RATE_MAX_DEVICES,
            now,
            from,
            limits.requests_per_minute,
        ) {
            return refused(reason);
        }
        let request: Request = match decode(frame, limits.max_message_bytes) {
            Ok(r) => r,
            Err(reason) => {
                let entry = self.entry(now, &asker, "", "", Decision::Refused, &reason);
                self.record_audit(now, entry, out);
                return refused(reason);
            }
        };
        let seen = (request.id().to_owned(), request.step(), from);
        if self.queries.seen.contains(&seen) {
            return refused("a repeat of a request already answered".into());
        }
        self.queries.seen.insert(seen.clone());
        self.queries.seen_order.push_back(seen);
        while self.queries.seen_order.len() > limits.seen {
            if let Some(old) = self.queries.seen_order.pop_front() {
                self.queries.seen.remove(&old);
            }
        }
        let parsed = if request.canonical().len() > limits.max_query_bytes {
            Err(format!(
                "the query is {} bytes, over the limit of {}",
                request.canonical().len(),
                limits.max_query_bytes
            ))
        } else {
            serde_json::from_str::<Value>(request.canonical())
                .map_err(|e| e.to_string())
                .and_then(|v| FederatedQuery::parse(&v).map_err(|e| e.to_string()))
                .and_then(|q| match q.scope {
                    Scope::Local => Ok(q),
                    _ => Err("a canonical query carries no scope".to_owned()),
                })
        };
        let query = match parsed {
            Ok(q) => q,
            Err(detail) => {
                let entry = self.entry(
                    now,
                    &asker,
                    request.id(),
                    request.canonical(),
                    Decision::Refused,
                    &format!("bad-query: {detail}"),
                );
                self.record_audit(now, entry, out);
                return Reply::Declined {
                    reason: "bad-query".into(),
                    detail,
                };
            }
        };
        match (&request, asker.own) {
            (Request::Gather { id, .. }, true) => self.gather(now, &asker, id, &query, out),
            (Request::Gather { .. }, false) => {
                refused("only this account's own devices gather records".into())
            }
            (_, true) => refused("this account's own devices gather records instead".into()),
            (Request::Ask { id, .. }, false) => self.ask(now, &asker, id, &query, out),
            (
                Request::Contribute {
                    id, aggregators, ..
                },
                false,
            ) => self.contribute(now, rng, &asker, id, &query, aggregators, out),
            (
                Request::Dismiss {
                    id, reason, detail, ..
                },
                false,
            ) => {
                let mut entry = self.entry(
                    now,
                    &asker,
                    id,
                    &query.canonical,
                    Decision::Declined,
                    &format!("{reason}: {detail}"),
                );
                entry.policy = self
                    .policy_for(
                        query.collection(),
                        asker.name.as_deref(),
                        &asker.account.to_string(),
                    )
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                self.record_audit(now, entry, out);
                Reply::Noted
            }
            (
                Request::Release {
                    id, index, shares, ..
                },
                false,
            ) => self.release(now, rng, &asker, id, &query, *index, shares, out),
        }
    }
}

impl Node {
    /// An audit entry for a decision about a request from `asker`.
    fn entry(
        &self,
        now: Millis,
        asker: &Asker,
        id: &str,
        canonical: &str,
        decision: Decision,
        reason: &str,
    ) -> Entry {
        let collection = serde_json::from_str::<Value>(canonical)
            .ok()
            .and_then(|v| {
                v.get("collection")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        Entry {
            at: now,
            query: id.to_owned(),
            querier: asker.account.to_string(),
            querier_device: asker.device.to_string(),
            scope: if asker.own { "devices" } else { "contacts" }.to_owned(),
            collection,
            canonical: canonical.to_owned(),
            decision,
            reason: reason.to_owned(),
            epsilon: 0.0,
            policy: String::new(),
            released: String::new(),
        }
    }

    /// Judges `query` from `asker` by the policy that applies: the terms,
    /// the policy and its version, or the decline (with the version of the
    /// policy that said no, if one did).
    fn judge(
        &self,
        asker: &Asker,
        query: &FederatedQuery,
    ) -> Result<(Terms, Policy, String), (Decline, String)> {
        let account = asker.account.to_string();
        let Some((policy, version)) =
            self.policy_for(query.collection(), asker.name.as_deref(), &account)
        else {
            let any = self
                .consents()
                .iter()
                .any(|c| c["collection"] == query.collection());
            let decline = if any {
                Decline::Querier
            } else {
                Decline::NoPolicy
            };
            return Err((decline, String::new()));
        };
        match policy.judge(&query.request, &query.selector) {
            Ok(terms) => Ok((terms, policy, version)),
            Err(decline) => Err((decline, version)),
        }
    }

    /// Audits a decline and turns it into the reply.
    fn decline(
        &mut self,
        now: Millis,
        asker: &Asker,
        id: &str,
        query: &FederatedQuery,
        (decline, version): (Decline, String),
        out: &mut Outputs,
    ) -> Reply {
        let mut entry = self.entry(
            now,
            asker,
            id,
            &query.canonical,
            Decision::Declined,
            &format!("{}: {decline}", decline.reason()),
        );
        entry.policy = version;
        self.record_audit(now, entry, out);
        Reply::Declined {
            reason: decline.reason().to_owned(),
            detail: decline.to_string(),
        }
    }

    /// The records of `query`'s collection in `_id` order.
    fn query_records(&self, query: &FederatedQuery) -> Vec<&Value> {
        self.collections
            .get(query.collection())
            .map(|l| l.data.records().values().collect())
            .unwrap_or_default()
    }

    /// Scope `devices`: the records that match, for our own device.
    fn gather(
        &mut self,
        now: Millis,
        asker: &Asker,
        id: &str,
        query: &FederatedQuery,
        out: &mut Outputs,
    ) -> Reply {
        let limits = self.config.queries;
        let matching: Vec<&Value> = self
            .query_records(query)
            .into_iter()
            .filter(|r| query.request.selector.matches(r))
            .collect();
        let json = if matching.len() > limits.max_records {
            Err(format!(
                "{} records match, over the limit of {} ([queries] max_records)",
                matching.len(),
                limits.max_records
            ))
        } else {
            let bytes = serde_json::to_vec(&matching).unwrap_or_default();
            if bytes.len() + 64 > limits.max_message_bytes {
                Err(format!(
                    "the matching records are {} bytes, over the limit of {} ([queries] max_message_bytes)",
                    bytes.len(),
                    limits.max_message_bytes
                ))
            } else {
                Ok(bytes)
            }
        };
        let (decision, reason) = match &json {
            Ok(_) => (Decision::Answered, String::new()),
            Err(e) => (Decision::Declined, e.clone()),
        };
        let mut entry = self.entry(now, asker, id, &query.canonical, decision, &reason);
        if let Ok(bytes) = &json {
            entry.released = audit::released_hash(bytes);
        }
        self.record_audit(now, entry, out);
        match json {
            Ok(json) => Reply::Records { json },
            Err(detail) => Reply::Declined {
                reason: "policy".into(),
                detail,
            },
        }
    }

    /// Phase 1 on the answering side.
    fn ask(
        &mut self,
        now: Millis,
        asker: &Asker,
        id: &str,
        query: &FederatedQuery,
        out: &mut Outputs,
    ) -> Reply {
        let (terms, policy, version) = match self.judge(asker, query) {
            Ok(judged) => judged,
            Err(decline) => return self.decline(now, asker, id, query, decline, out),
        };
        if terms.exact {
            let result =
                contribution::contribute(&query.request, &terms, self.query_records(query));
            let json = match result {
                Ok(Contribution::Exact(aggregated)) => {
                    serde_json::to_vec(&aggregated).unwrap_or_default()
                }
                Ok(Contribution::Bounded(_)) | Err(_) => {
                    let decline = Decline::Bad("the query does not run on this collection".into());
                    return self.decline(now, asker, id, query, (decline, version), out);
                }
            };
            let mut entry = self.entry(
                now,
                asker,
                id,
                &query.canonical,
                Decision::Answered,
                "exact",
            );
            entry.policy = version;
            entry.released = audit::released_hash(&json);
            self.record_audit(now, entry, out);
            return Reply::Exact { json };
        }
        let account = asker.account.to_string();
        let ledger = self.ledger(now);
        if ledger
            .prior(query.collection(), &account, &query.key(), now)
            .is_none()
            && let Err(decline) =
                ledger.allows(&policy, query.collection(), &account, now, terms.epsilon)
        {
            return self.decline(now, asker, id, query, (decline, version), out);
        }
        Reply::Willing {
            grid: serde_json::to_string(&terms.grid).unwrap_or_default(),
            min_cohort: terms.min_cohort,
        }
    }

    /// Phase 2 on the answering side: charge, split, seal.
    #[allow(clippy::too_many_arguments)]
    fn contribute(
        &mut self,
        now: Millis,
        rng: &mut (impl RngCore + CryptoRng),
        asker: &Asker,
        id: &str,
        query: &FederatedQuery,
        aggregators: &[Aggregator],
        out: &mut Outputs,
    ) -> Reply {
        let (terms, policy, version) = match self.judge(asker, query) {
            Ok(judged) => judged,
            Err(decline) => return self.decline(now, asker, id, query, decline, out),
        };
        if terms.exact {
            let decline =
                Decline::Policy("this account answers this querier exactly, at the ask".into());
            return self.decline(now, asker, id, query, (decline, version), out);
        }
        let devices = match check_aggregators(aggregators, &asker.account) {
            Ok(devices) => devices,
            Err(detail) => {
                return self.decline(now, asker, id, query, (Decline::Bad(detail), version), out);
            }
        };
        let account = asker.account.to_string();
        let key = query.key();
        let ledger = self.ledger(now);
        let (vector, epsilon) = match ledger.prior(query.collection(), &account, &key, now) {
            Some(prior) => (
                prior
                    .contribution
                    .iter()
                    .filter_map(|v| v.parse::<I256>().ok())
                    .collect::<Vec<_>>(),
                0.0,
            ),
            None => {
                if let Err(decline) =
                    ledger.allows(&policy, query.collection(), &account, now, terms.epsilon)
                {
                    return self.decline(now, asker, id, query, (decline, version), out);
                }
                let vector = match contribution::contribute(
                    &query.request,
                    &terms,
                    self.query_records(query),
                ) {
                    Ok(Contribution::Bounded(v)) => v,
                    Ok(Contribution::Exact(_)) | Err(_) => {
                        let decline =
                            Decline::Bad("the query does not run on this collection".into());
                        return self.decline(now, asker, id, query, (decline, version), out);
                    }
                };
                let charge = Charge {
                    collection: query.collection().to_owned(),
                    querier: account.clone(),
                    key: key.clone(),
                    day: budget::day_of(now),
                    epsilon: terms.epsilon,
                    at: now,
                    device: self.id().to_string(),
                    contribution: vector.iter().map(ToString::to_string).collect(),
                };
                match self.charge(now, charge) {
                    Ok(written) => out.extend(written),
                    Err(e) => {
                        let decline = Decline::Budget {
                            detail: format!("the charge could not be written: {e}"),
                        };
                        return self.decline(now, asker, id, query, (decline, version), out);
                    }
                }
                (vector, terms.epsilon)
            }
        };
        let me = self.log.account_id().to_string();
        let plain_of = |share: Vec<U256>| Plain {
            share,
            grid: serde_json::to_string(&terms.grid).unwrap_or_default(),
            min_cohort: terms.min_cohort,
            noise: terms.noise.clone().unwrap_or_default(),
            epsilon: terms.epsilon,
        };
        let mut sealed_shares = Vec::new();
        for (index, share) in secret::split(&vector, 2, rng).into_iter().enumerate() {
            let plain = postcard::to_allocvec(&plain_of(share)).unwrap_or_default();
            let aad = share_aad(id, &account, &me, index);
            match sealed::seal(&devices[index], SHARE_INFO, &aad, &plain, rng) {
                Ok(s) => sealed_shares.push(s),
                Err(e) => {
                    let decline = Decline::Bad(format!(
                        "a share cannot be sealed to aggregator {index}: {e}"
                    ));
                    return self.decline(now, asker, id, query, (decline, version), out);
                }
            }
        }
        let reason = if epsilon == 0.0 {
            "repeat"
        } else {
            "contributed"
        };
        let mut entry = self.entry(now, asker, id, &query.canonical, Decision::Answered, reason);
        entry.policy = version;
        entry.epsilon = epsilon;
        entry.released = audit::released_hash(&sealed_shares.concat());
        self.record_audit(now, entry, out);
        Reply::Shares {
            shares: sealed_shares,
        }
    }

    /// Phase 3 on an aggregator: open, check the cohort, sum, add noise.
    #[allow(clippy::too_many_arguments)]
    fn release(
        &mut self,
        now: Millis,
        rng: &mut (impl RngCore + CryptoRng),
        asker: &Asker,
        id: &str,
        query: &FederatedQuery,
        index: u8,
        shares: &[SealedShare],
        out: &mut Outputs,
    ) -> Reply {
        let bad = |detail: String| (Decline::Bad(detail), String::new());
        let opened = self.open_shares(id, &asker.account.to_string(), index, shares);
        let (plains, accounts) = match opened {
            Ok(opened) => opened,
            Err(detail) => return self.decline(now, asker, id, query, bad(detail), out),
        };
        let first = &plains[0];
        let width = first.noise.len();
        if width == 0
            || first.share.len() % width != 0
            || plains.iter().any(|p| {
                p.share.len() != first.share.len() || p.grid != first.grid || p.noise.len() != width
            })
        {
            let detail = "the shares are not of one shape".to_owned();
            return self.decline(now, asker, id, query, bad(detail), out);
        }
        let needed = plains
            .iter()
            .map(|p| p.min_cohort)
            .max()
            .unwrap_or(1)
            .max(1) as usize;
        if plains.len() < needed {
            let decline = Decline::Cohort {
                got: plains.len(),
                needed,
            };
            return self.decline(now, asker, id, query, (decline, String::new()), out);
        }
        let noise: Vec<Noise> = (0..width)
            .map(|slot| {
                plains
                    .iter()
                    .map(|p| p.noise[slot])
                    .reduce(Noise::max)
                    .unwrap_or(first.noise[slot])
            })
            .collect();
        let epsilon = plains.iter().map(|p| p.epsilon).fold(0.0, f64::max);
        // One seed per query, querier and day: a repeat over the same
        // accounts gets the same noise, another set gets none.
        let account = asker.account.to_string();
        let set = blake3::hash(accounts.join("\n").as_bytes())
            .to_hex()
            .to_string();
        let key = format!("release:{}", query.key());
        let seed = match self
            .ledger(now)
            .prior(query.collection(), &account, &key, now)
        {
            Some(prior) if prior.contribution.first() == Some(&set) => {
                match prior.contribution.get(1).and_then(|h| seed_of(h)) {
                    Some(seed) => seed,
                    None => {
                        let detail = "the stored noise seed does not read".to_owned();
                        return self.decline(now, asker, id, query, bad(detail), out);
                    }
                }
            }
            Some(_) => {
                let decline = Decline::Budget {
                    detail: "this query was released once today over another set of accounts"
                        .into(),
                };
                return self.decline(now, asker, id, query, (decline, String::new()), out);
            }
            None => {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                let charge = Charge {
                    collection: query.collection().to_owned(),
                    querier: account.clone(),
                    key,
                    day: budget::day_of(now),
                    epsilon: 0.0,
                    at: now,
                    device: self.id().to_string(),
                    contribution: vec![set, seed.iter().map(|b| format!("{b:02x}")).collect()],
                };
                match self.charge(now, charge) {
                    Ok(written) => out.extend(written),
                    Err(e) => {
                        let detail = format!("the noise seed could not be written: {e}");
                        return self.decline(now, asker, id, query, bad(detail), out);
                    }
                }
                seed
            }
        };
        let mut totals = vec![U256::ZERO; first.share.len()];
        for p in &plains {
            secret::add_into(&mut totals, &p.share);
        }
        let mut seeded = Seeded::new(&seed, format!("{}\n{index}", query.key()).as_bytes());
        let half = Half::of(usize::from(index));
        let noise_vector: Vec<I256> = (0..totals.len())
            .map(|i| noise::half(&noise[i % width], half, &mut seeded))
            .collect();
        secret::add_signed(&mut totals, &noise_vector);
        let mut entry = self.entry(
            now,
            asker,
            id,
            &query.canonical,
            Decision::Answered,
            "aggregated",
        );
        let bytes: Vec<u8> = totals.iter().flat_map(|t| t.to_be_bytes()).collect();
        entry.released = audit::released_hash(&bytes);
        self.record_audit(now, entry, out);
        Reply::Released {
            totals,
            noise,
            epsilon,
        }
    }

    /// Opens the shares sealed to this device for aggregator `index`:
    /// their plaintexts and the contributors' accounts, sorted, each once.
    fn open_shares(
        &self,
        id: &str,
        querier: &str,
        index: u8,
        shares: &[SealedShare],
    ) -> Result<(Vec<Plain>, Vec<String>), String> {
        if index > 1 {
            return Err(format!("aggregator index {index}: a secure sum has two"));
        }
        if shares.is_empty() {
            return Err("no shares to sum".into());
        }
        let mut accounts = BTreeSet::new();
        let mut plains = Vec::new();
        for s in shares {
            if !accounts.insert(s.account.clone()) {
                return Err(format!("account {} contributed twice", s.account));
            }
            let aad = share_aad(id, querier, &s.account, usize::from(index));
            let bytes = sealed::open(&self.key, SHARE_INFO, &aad, &s.sealed)
                .map_err(|e| format!("the share of {} does not open: {e}", s.account))?;
            let plain: Plain = postcard::from_bytes(&bytes)
                .map_err(|e| format!("the share of {} does not decode: {e}", s.account))?;
            plains.push(plain);
        }
        Ok((plains, accounts.into_iter().collect()))
    }
}

/// What a sealed share is bound to: the query, the querier, the
/// contributor and the aggregator's place.
fn share_aad(id: &str, querier: &str, contributor: &str, index: usize) -> Vec<u8> {
    format!("{id}\n{querier}\n{contributor}\n{index}").into_bytes()
}

fn seed_of(hex: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// The two aggregators' devices, after checking their cards: two distinct
/// accounts, neither the querier's, each device a member of its account.
fn check_aggregators(
    aggregators: &[Aggregator],
    querier: &AccountId,
) -> Result<Vec<DeviceId>, String> {
    if aggregators.len() != 2 {
        return Err(format!(
            "a secure sum needs two aggregators, the query names {}",
            aggregators.len()
        ));
    }
    let mut accounts = BTreeSet::new();
    let mut devices = Vec::new();
    for a in aggregators {
        let device: DeviceId = a
            .device
            .parse()
            .map_err(|_| format!("aggregator device {:?} is not a device id", a.device))?;
        let card = Card::from_bytes(&a.card).map_err(|e| format!("an aggregator's card: {e}"))?;
        if !card.log().is_member(&device) {
            return Err(format!(
                "device {device} is not a member of its aggregator's account"
            ));
        }
        if card.account() == *querier {
            return Err("the querier cannot aggregate its own query".into());
        }
        if !accounts.insert(card.account()) {
            return Err("the two aggregators are one account".into());
        }
        devices.push(device);
    }
    Ok(devices)
}

/// Who was asked, who answered, and what became of the others, by the
/// querier's names for them.
fn completeness(running: &Running) -> Value {
    let mut c =
        json!({ "asked": [], "answered": [], "declined": [], "timed_out": [], "unreachable": [] });
    for t in running.targets.values() {
        let name = Value::String(t.name.clone());
        push(&mut c["asked"], name.clone());
        match &t.status {
            Status::Exact(_) | Status::Contributed => push(&mut c["answered"], name),
            Status::Declined(reason) => push(
                &mut c["declined"],
                json!({ "contact": t.name, "reason": reason }),
            ),
            Status::Unreachable => push(&mut c["unreachable"], name),
            Status::TimedOut
            | Status::Waiting(_)
            | Status::Contributing
            | Status::Willing { .. } => push(&mut c["timed_out"], name),
        }
    }
    c
}

fn push(list: &mut Value, item: Value) {
    if let Value::Array(items) = list {
        items.push(item);
    }
}

/// The module alias for the policy's querier list.
use crate::federated::policy::Queriers as federated_queriers;

fn refusal_reason(reason: &str) -> String {
    if reason.starts_with("too many") {
        "rate".into()
    } else {
        "refused".into()
    }
}

#[cfg(test)]
mod tests;
