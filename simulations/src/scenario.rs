//! Scenarios: what a run simulates, read from a TOML file.
//!
//! A scenario names the population (accounts × devices and who can reach
//! whom), the workload (writes per device per minute into which collections),
//! the network (latency, transport faults, reconnect backoff), the disk
//! (fsync latency), the faults (partitions, churn, crashes, device removals),
//! the queue bounds the checkers enforce, and how long the write phase and
//! the heal-and-quiesce phase last. Every field but the name, the duration,
//! the topology and the workload has a default, so a new scenario is one
//! short TOML file; see `simulations/scenarios/` for the shipped ones.
//!
//! Times are in seconds (`*_s`) or milliseconds (`*_ms`) of virtual time.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most devices one run may hold.
pub const MAX_DEVICES: u32 = 100_000;

/// Most devices one account may hold: the membership log holds at most
/// [`hearth_crypto::membership::MAX_ENTRIES`] entries, one per device added.
pub const MAX_DEVICES_PER_ACCOUNT: u32 = 4_000;

/// Largest record padding, in bytes.
pub const MAX_RECORD_BYTES: u32 = 64 * 1024;

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid scenario document.
    #[error("cannot parse scenario {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error.
        #[source]
        source: toml::de::Error,
    },
    /// A field holds a value the simulator cannot use.
    #[error("scenario field `{field}`: {reason}")]
    Invalid {
        /// The field, as a TOML path.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A closed range `[min, max]`, sampled uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Range {
    /// A range holding one value.
    pub const fn exactly(v: f64) -> Self {
        Self { min: v, max: v }
    }

    fn validate(&self, field: &'static str) -> Result<(), Error> {
        if !(self.min.is_finite()
            && self.max.is_finite()
            && 0.0 <= self.min
            && self.min <= self.max)
        {
            return Err(invalid(field, "expected 0 <= min <= max, both finite"));
        }
        Ok(())
    }
}

/// A whole simulation run's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used for the output directory.
    pub name: String,
    /// One line saying what the scenario exercises.
    #[serde(default)]
    pub description: String,
    /// Length of the write phase (faults active), in seconds.
    pub duration_s: f64,
    /// Upper bound on the heal-and-quiesce phase that follows, in seconds.
    /// The run normally ends earlier, when no event is left.
    #[serde(default = "default_quiescence")]
    pub max_quiescence_s: f64,
    /// Who exists and who can reach whom.
    pub topology: Topology,
    /// What the devices write.
    pub workload: Workload,
    /// The simulated network.
    #[serde(default)]
    pub network: Network,
    /// The simulated disk.
    #[serde(default)]
    pub storage: Storage,
    /// Injected faults.
    #[serde(default)]
    pub faults: Faults,
    /// Queue bounds the bounds checker enforces.
    #[serde(default)]
    pub bounds: Bounds,
    /// New devices that join an account by pairing during the run.
    #[serde(default)]
    pub joins: Vec<Join>,
    /// Contacts between accounts and the collections they share.
    #[serde(default)]
    pub sharing: Sharing,
    /// One federated query over the querier's contacts (absent: none).
    #[serde(default)]
    pub federated: Option<Federated>,
}

/// One federated query: account `querier` adds every other account as a
/// contact (at `sharing.contacts_at_s`, accepted after
/// `sharing.accept_delay_s`, on top of any random contacts of
/// `[sharing]`); every other account holds `records_per_account` records
/// of `collection` (`{"year", "month", "kwh"}`, distinct months drawn at
/// random, `kwh` a whole number drawn uniformly from `kwh`) and consents
/// under `policy` (noisy), `exact_policy` (probability `exact_fraction`)
/// or not at all (probability `no_policy_fraction`). At `query_at_s` a
/// device of the querier runs `query` (the JSON of
/// `hearth_crdt::federated::FederatedQuery::parse`, scope `contacts`). The
/// querier's devices neither churn nor crash; everyone else does as
/// `[faults]` says, and query messages are lost with `network.loss` (the
/// stream breaks: the exchange fails).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Federated {
    /// The querying account (index).
    #[serde(default)]
    pub querier: u32,
    /// The collection the records go to and the query reads.
    #[serde(default = "default_federated_collection")]
    pub collection: String,
    /// The year field of every record.
    #[serde(default = "default_year")]
    pub year: i64,
    /// Records per answering account, 1 to 12 (one per month at most).
    #[serde(default = "default_records_per_account")]
    pub records_per_account: u32,
    /// The range `kwh` is drawn from (rounded to a whole number).
    #[serde(default = "default_kwh")]
    pub kwh: Range,
    /// The noisy consent policy (`Node::set_consent`'s JSON).
    pub policy: serde_json::Value,
    /// The exact policy of the accounts drawn with `exact_fraction`.
    #[serde(default)]
    pub exact_policy: Option<serde_json::Value>,
    /// Probability that an account consents under `exact_policy`.
    #[serde(default)]
    pub exact_fraction: f64,
    /// Probability that an account sets no policy at all.
    #[serde(default)]
    pub no_policy_fraction: f64,
    /// When the querier starts the query, s (after the contacts are made,
    /// within the write phase).
    pub query_at_s: f64,
    /// The query.
    pub query: serde_json::Value,
}

fn default_federated_collection() -> String {
    "energy.readings".to_owned()
}
fn default_year() -> i64 {
    2024
}
fn default_records_per_account() -> u32 {
    3
}
fn default_kwh() -> Range {
    Range {
        min: 0.0,
        max: 300.0,
    }
}

/// The contact graph and the shares over it. Each account adds
/// `contacts_per_account` other accounts at random (the other side accepts
/// the request after `accept_delay_s`); each account shares its collection
/// [`Sharing::collection`] with probability `share_fraction`, granting
/// `members_per_share` of its contacts `write` (probability
/// `write_fraction`) or `read`, each recipient accepting after
/// `accept_delay_s`. Later a grant may change level once
/// (`level_change_fraction`) and may be revoked for good
/// (`revoke_fraction`), at a time drawn from `change_at_s`. A fraction of
/// each device's writes (`shared_writes`) go to a shared collection its
/// account holds. Accounts drawn as hostile (`hostile_fraction`) write
/// past the share rules wherever they may not (`Node::forge`), so every
/// other replica must refuse them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sharing {
    /// Contacts each account adds (0: no contacts, no shares).
    pub contacts_per_account: u32,
    /// When contact requests are made, s.
    pub contacts_at_s: Range,
    /// Delay before a request or an offer is accepted, s.
    pub accept_delay_s: Range,
    /// The collection each sharing account shares.
    pub collection: String,
    /// Probability that an account shares its collection.
    pub share_fraction: f64,
    /// Contacts each share is granted to (at most the account's contacts).
    pub members_per_share: u32,
    /// Probability that a grant is `write` (else `read`).
    pub write_fraction: f64,
    /// When the grants are made, s.
    pub grant_at_s: Range,
    /// Probability that a grant changes level once.
    pub level_change_fraction: f64,
    /// Probability that a grant is revoked (for good).
    pub revoke_fraction: f64,
    /// When level changes and revocations happen, s.
    pub change_at_s: Range,
    /// Fraction of a device's writes that go to a shared collection.
    pub shared_writes: f64,
    /// Probability that an account is hostile.
    pub hostile_fraction: f64,
}

impl Default for Sharing {
    fn default() -> Self {
        Self {
            contacts_per_account: 0,
            contacts_at_s: Range { min: 0.0, max: 5.0 },
            accept_delay_s: Range {
                min: 1.0,
                max: 10.0,
            },
            collection: "trip.notes".to_owned(),
            share_fraction: 1.0,
            members_per_share: 2,
            write_fraction: 0.5,
            grant_at_s: Range {
                min: 10.0,
                max: 20.0,
            },
            level_change_fraction: 0.0,
            revoke_fraction: 0.0,
            change_at_s: Range {
                min: 40.0,
                max: 80.0,
            },
            shared_writes: 0.5,
            hostile_fraction: 0.0,
        }
    }
}

/// A new device joining an account through the pairing handshake: at `at_s`
/// the person opens an invitation on the inviting device and reads it on
/// the new one, which dials the inviter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// When the first attempt starts, in s (within the write phase).
    pub at_s: f64,
    /// The account joined (index).
    pub account: u32,
    /// The inviting device, as an index within the account; it must not be
    /// one of the devices the scenario removes.
    #[serde(default)]
    pub inviter: u32,
    /// Time the person takes to read the code off the new device and type
    /// it on the inviter, in ms.
    #[serde(default = "default_human_delay")]
    pub human_delay_ms: Range,
    /// Probability that the person types a wrong code in an attempt; a wrong
    /// code burns the invitation and the joiner starts over.
    #[serde(default)]
    pub wrong_code_probability: f64,
    /// The first attempts in which the person types a wrong code for sure
    /// (before `wrong_code_probability` applies).
    #[serde(default)]
    pub wrong_codes_first: u32,
    /// Delay before a failed attempt is retried with a fresh invitation, in ms.
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: f64,
    /// Lifetime of each invitation, in s.
    #[serde(default = "default_invitation_ttl")]
    pub invitation_ttl_s: f64,
    /// Attempts after which the join is abandoned (the pairing check fails).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_human_delay() -> Range {
    Range {
        min: 3_000.0,
        max: 15_000.0,
    }
}
fn default_retry_delay() -> f64 {
    5_000.0
}
fn default_invitation_ttl() -> f64 {
    600.0
}
fn default_max_attempts() -> u32 {
    20
}

/// Most joins one scenario may hold.
pub const MAX_JOINS: usize = 1_000;

fn default_quiescence() -> f64 {
    3_600.0
}

/// Accounts, devices, and the reachability graph within each account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Number of accounts.
    pub accounts: u32,
    /// Devices in every account.
    pub devices_per_account: u32,
    /// Degree of the random overlay within an account; absent means every
    /// device of an account can reach every other ("full").
    #[serde(default)]
    pub degree: Option<u32>,
}

/// The write workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Mean writes per device per minute during the write phase (Poisson).
    pub writes_per_device_per_min: f64,
    /// The collections written, chosen uniformly per write.
    #[serde(default = "default_collections")]
    pub collections: Vec<String>,
    /// Shards per collection.
    #[serde(default = "default_shards")]
    pub shards: u16,
    /// Bytes of padding in each record.
    #[serde(default = "default_record_bytes")]
    pub record_bytes: u32,
    /// Distinct record ids each device writes (later writes update them).
    #[serde(default = "default_ids")]
    pub ids_per_device: u32,
}

fn default_collections() -> Vec<String> {
    vec!["io.cozy.notes".to_owned()]
}
fn default_shards() -> u16 {
    4
}
fn default_record_bytes() -> u32 {
    64
}
fn default_ids() -> u32 {
    16
}

/// The network model. Frames on one connection arrive in order after a
/// latency drawn per frame; transport faults break the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// One-way latency per frame, in ms.
    pub latency_ms: Range,
    /// Probability that a frame is lost (the connection breaks).
    pub loss: f64,
    /// Probability that a frame is duplicated (the connection breaks).
    pub duplication: f64,
    /// Probability that a frame overtakes another (the connection breaks).
    pub reorder: f64,
    /// Delay before a newly possible connection is up, in ms.
    pub connect_ms: Range,
    /// First reconnect delay after a break, in ms; doubles per failure.
    pub backoff_base_ms: f64,
    /// Largest reconnect delay, in ms.
    pub backoff_max_ms: f64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            latency_ms: Range {
                min: 5.0,
                max: 40.0,
            },
            loss: 0.0,
            duplication: 0.0,
            reorder: 0.0,
            connect_ms: Range {
                min: 20.0,
                max: 200.0,
            },
            backoff_base_ms: 500.0,
            backoff_max_ms: 30_000.0,
        }
    }
}

/// The disk model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Time from the first unsynced write to the fsync that makes it
    /// durable (group commit), in ms.
    pub fsync_ms: f64,
}

impl Default for Storage {
    fn default() -> Self {
        Self { fsync_ms: 4.0 }
    }
}

/// Injected faults; all stop at the end of the write phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Network partitions, in time order, not overlapping.
    pub partitions: Vec<Partition>,
    /// Devices going offline and coming back.
    pub churn: Option<Churn>,
    /// Mean crashes per device per hour (Poisson). A crash drops every
    /// unsynced disk write and all connections.
    pub crashes_per_device_per_hour: f64,
    /// Time a crashed device stays down, in s.
    pub restart_s: Range,
    /// Devices removed from each account (the last ones), by its first device.
    pub removals_per_account: u32,
    /// When the removals happen, in s.
    pub removal_at_s: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            partitions: Vec::new(),
            churn: None,
            crashes_per_device_per_hour: 0.0,
            restart_s: Range {
                min: 1.0,
                max: 10.0,
            },
            removals_per_account: 0,
            removal_at_s: 0.0,
        }
    }
}

/// A partition: a random `fraction` of the devices cannot reach the rest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Start, in s.
    pub start_s: f64,
    /// End (heal), in s.
    pub end_s: f64,
    /// Share of devices on the minority side, in (0, 1).
    pub fraction: f64,
}

/// Churn: a `fraction` of the devices alternate online and offline periods.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Share of devices that churn, in [0, 1].
    pub fraction: f64,
    /// Length of an online period, in s.
    pub online_s: Range,
    /// Length of an offline period, in s.
    pub offline_s: Range,
}

/// Queue bounds. In-flight frames per connection direction are capped by
/// the window (frames beyond it wait in the sender's outbox); the outbox and
/// the frames held until an fsync are checked against their bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bounds {
    /// Frames in flight per connection direction (the transport window).
    pub window_frames: u32,
    /// Frames waiting for the window, summed over a node's connections.
    pub max_outbox_frames: u32,
    /// Frames and acknowledgements a node holds until its next fsync.
    pub max_held: u32,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            window_frames: 32,
            max_outbox_frames: 4_096,
            max_held: 4_096,
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field,
        reason: reason.into(),
    }
}

fn probability(field: &'static str, p: f64) -> Result<(), Error> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{p} is not a probability in [0, 1]"),
        ))
    }
}

fn positive(field: &'static str, v: f64) -> Result<(), Error> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, format!("{v} must be positive and finite")))
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let scenario: Scenario = toml::from_str(&text).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Total devices: the accounts' initial devices plus one per join.
    pub fn devices(&self) -> u32 {
        self.topology.accounts * self.topology.devices_per_account + self.joins.len() as u32
    }

    /// Checks every field; the simulator relies on it.
    pub fn validate(&self) -> Result<(), Error> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid("name", "1 to 64 of [A-Za-z0-9_-]"));
        }
        positive("duration_s", self.duration_s)?;
        positive("max_quiescence_s", self.max_quiescence_s)?;
        let t = &self.topology;
        if t.accounts == 0 || t.devices_per_account == 0 {
            return Err(invalid("topology", "at least one account of one device"));
        }
        if t.devices_per_account > MAX_DEVICES_PER_ACCOUNT {
            return Err(invalid(
                "topology.devices_per_account",
                format!("at most {MAX_DEVICES_PER_ACCOUNT} (the membership log's bound)"),
            ));
        }
        if u64::from(t.accounts) * u64::from(t.devices_per_account) + self.joins.len() as u64
            > u64::from(MAX_DEVICES)
        {
            return Err(invalid(
                "topology",
                format!("at most {MAX_DEVICES} devices"),
            ));
        }
        if let Some(d) = t.degree
            && (d == 0 || d >= t.devices_per_account)
        {
            return Err(invalid(
                "topology.degree",
                "between 1 and devices_per_account - 1",
            ));
        }
        let w = &self.workload;
        if !(w.writes_per_device_per_min.is_finite() && w.writes_per_device_per_min >= 0.0) {
            return Err(invalid("workload.writes_per_device_per_min", "a rate >= 0"));
        }
        if w.collections.is_empty() || w.collections.len() > 16 {
            return Err(invalid("workload.collections", "1 to 16 collections"));
        }
        for name in &w.collections {
            hearth_crdt::collection::Collection::new(name, 1, automerge::ActorId::from([1u8; 16]))
                .map_err(|e| invalid("workload.collections", e.to_string()))?;
        }
        let mut sorted = w.collections.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != w.collections.len() {
            return Err(invalid("workload.collections", "names repeat"));
        }
        if w.shards == 0 || w.shards > 64 {
            return Err(invalid("workload.shards", "1 to 64"));
        }
        if w.record_bytes > MAX_RECORD_BYTES {
            return Err(invalid(
                "workload.record_bytes",
                format!("at most {MAX_RECORD_BYTES}"),
            ));
        }
        if w.ids_per_device == 0 || w.ids_per_device > 100_000 {
            return Err(invalid("workload.ids_per_device", "1 to 100000"));
        }
        let n = &self.network;
        n.latency_ms.validate("network.latency_ms")?;
        n.connect_ms.validate("network.connect_ms")?;
        probability("network.loss", n.loss)?;
        probability("network.duplication", n.duplication)?;
        probability("network.reorder", n.reorder)?;
        positive("network.backoff_base_ms", n.backoff_base_ms)?;
        positive("network.backoff_max_ms", n.backoff_max_ms)?;
        if n.backoff_max_ms < n.backoff_base_ms {
            return Err(invalid("network.backoff_max_ms", "below backoff_base_ms"));
        }
        positive("storage.fsync_ms", self.storage.fsync_ms)?;
        let f = &self.faults;
        let mut last_end = 0.0;
        for p in &f.partitions {
            if !(p.start_s >= last_end && p.start_s < p.end_s && p.end_s <= self.duration_s) {
                return Err(invalid(
                    "faults.partitions",
                    "in time order, not overlapping, start < end <= duration_s",
                ));
            }
            if !(p.fraction > 0.0 && p.fraction < 1.0) {
                return Err(invalid("faults.partitions.fraction", "in (0, 1)"));
            }
            last_end = p.end_s;
        }
        if let Some(c) = &f.churn {
            probability("faults.churn.fraction", c.fraction)?;
            c.online_s.validate("faults.churn.online_s")?;
            c.offline_s.validate("faults.churn.offline_s")?;
            positive("faults.churn.online_s.max", c.online_s.max)?;
            positive("faults.churn.offline_s.max", c.offline_s.max)?;
        }
        if !(f.crashes_per_device_per_hour.is_finite() && f.crashes_per_device_per_hour >= 0.0) {
            return Err(invalid("faults.crashes_per_device_per_hour", "a rate >= 0"));
        }
        f.restart_s.validate("faults.restart_s")?;
        if f.removals_per_account > 0 {
            if f.removals_per_account >= t.devices_per_account {
                return Err(invalid(
                    "faults.removals_per_account",
                    "must leave the first device of each account",
                ));
            }
            if !(f.removal_at_s >= 0.0 && f.removal_at_s < self.duration_s) {
                return Err(invalid("faults.removal_at_s", "within the write phase"));
            }
        }
        if self.joins.len() > MAX_JOINS {
            return Err(invalid("joins", format!("at most {MAX_JOINS}")));
        }
        for j in &self.joins {
            if !(j.at_s >= 0.0 && j.at_s < self.duration_s) {
                return Err(invalid("joins.at_s", "within the write phase"));
            }
            if j.account >= t.accounts {
                return Err(invalid("joins.account", "an existing account index"));
            }
            if j.inviter >= t.devices_per_account - f.removals_per_account {
                return Err(invalid(
                    "joins.inviter",
                    "a device index of the account that is not removed",
                ));
            }
            j.human_delay_ms.validate("joins.human_delay_ms")?;
            probability("joins.wrong_code_probability", j.wrong_code_probability)?;
            positive("joins.retry_delay_ms", j.retry_delay_ms)?;
            positive("joins.invitation_ttl_s", j.invitation_ttl_s)?;
            if j.max_attempts == 0
                || j.max_attempts > 1_000
                || j.wrong_codes_first >= j.max_attempts
            {
                return Err(invalid(
                    "joins.max_attempts",
                    "1 to 1000, above wrong_codes_first",
                ));
            }
        }
        if u64::from(t.devices_per_account) + self.joins.len() as u64
            > u64::from(MAX_DEVICES_PER_ACCOUNT)
        {
            return Err(invalid(
                "joins",
                format!("at most {MAX_DEVICES_PER_ACCOUNT} devices per account"),
            ));
        }
        self.validate_sharing()?;
        self.validate_federated()?;
        let b = &self.bounds;
        if b.window_frames == 0 || b.max_outbox_frames == 0 || b.max_held == 0 {
            return Err(invalid("bounds", "every bound must be at least 1"));
        }
        Ok(())
    }

    fn validate_sharing(&self) -> Result<(), Error> {
        let g = &self.sharing;
        if g.contacts_per_account == 0 {
            return Ok(());
        }
        if g.contacts_per_account >= self.topology.accounts {
            return Err(invalid(
                "sharing.contacts_per_account",
                "below the number of accounts",
            ));
        }
        if g.members_per_share == 0 {
            return Err(invalid("sharing.members_per_share", "at least 1"));
        }
        hearth_crdt::node::check_doctype(&g.collection)
            .map_err(|e| invalid("sharing.collection", e.to_string()))?;
        if self.workload.collections.contains(&g.collection) {
            return Err(invalid(
                "sharing.collection",
                "must differ from the workload's collections",
            ));
        }
        for (field, r) in [
            ("sharing.contacts_at_s", g.contacts_at_s),
            ("sharing.accept_delay_s", g.accept_delay_s),
            ("sharing.grant_at_s", g.grant_at_s),
            ("sharing.change_at_s", g.change_at_s),
        ] {
            r.validate(field)?;
        }
        for (field, at) in [
            ("sharing.contacts_at_s", g.contacts_at_s),
            ("sharing.grant_at_s", g.grant_at_s),
            ("sharing.change_at_s", g.change_at_s),
        ] {
            if at.max >= self.duration_s {
                return Err(invalid(field, "within the write phase"));
            }
        }
        for (field, p) in [
            ("sharing.share_fraction", g.share_fraction),
            ("sharing.write_fraction", g.write_fraction),
            ("sharing.level_change_fraction", g.level_change_fraction),
            ("sharing.revoke_fraction", g.revoke_fraction),
            ("sharing.shared_writes", g.shared_writes),
            ("sharing.hostile_fraction", g.hostile_fraction),
        ] {
            probability(field, p)?;
        }
        Ok(())
    }

    fn validate_federated(&self) -> Result<(), Error> {
        use hearth_crdt::federated::{FederatedQuery, Policy};
        let Some(f) = &self.federated else {
            return Ok(());
        };
        if self.topology.accounts < 2 {
            return Err(invalid("federated", "needs at least two accounts"));
        }
        if f.querier >= self.topology.accounts {
            return Err(invalid("federated.querier", "an existing account index"));
        }
        hearth_crdt::node::check_doctype(&f.collection)
            .map_err(|e| invalid("federated.collection", e.to_string()))?;
        if self.workload.collections.contains(&f.collection)
            || (self.sharing.contacts_per_account > 0 && self.sharing.collection == f.collection)
        {
            return Err(invalid(
                "federated.collection",
                "must differ from the workload's and the sharing's collections",
            ));
        }
        if f.records_per_account == 0 || f.records_per_account > 12 {
            return Err(invalid("federated.records_per_account", "1 to 12"));
        }
        f.kwh.validate("federated.kwh")?;
        probability("federated.exact_fraction", f.exact_fraction)?;
        probability("federated.no_policy_fraction", f.no_policy_fraction)?;
        if f.exact_fraction + f.no_policy_fraction > 1.0 {
            return Err(invalid(
                "federated.exact_fraction",
                "exact_fraction + no_policy_fraction must be at most 1",
            ));
        }
        let noisy =
            Policy::parse(&f.policy).map_err(|e| invalid("federated.policy", e.to_string()))?;
        if noisy.exact {
            return Err(invalid(
                "federated.policy",
                "must be a noisy policy (exact = false)",
            ));
        }
        match &f.exact_policy {
            Some(p) => {
                let exact = Policy::parse(p)
                    .map_err(|e| invalid("federated.exact_policy", e.to_string()))?;
                if !exact.exact {
                    return Err(invalid("federated.exact_policy", "must have exact = true"));
                }
            }
            None if f.exact_fraction > 0.0 => {
                return Err(invalid(
                    "federated.exact_policy",
                    "required when exact_fraction > 0",
                ));
            }
            None => {}
        }
        let query = FederatedQuery::parse(&f.query)
            .map_err(|e| invalid("federated.query", e.to_string()))?;
        if query.scope != hearth_crdt::query::Scope::Contacts {
            return Err(invalid("federated.query", "scope must be \"contacts\""));
        }
        if query.collection() != f.collection {
            return Err(invalid(
                "federated.query",
                format!("must read federated.collection ({})", f.collection),
            ));
        }
        let g = &self.sharing;
        for (field, r) in [
            ("sharing.contacts_at_s", g.contacts_at_s),
            ("sharing.accept_delay_s", g.accept_delay_s),
        ] {
            r.validate(field)?;
        }
        let made = g.contacts_at_s.max + g.accept_delay_s.max;
        if !(f.query_at_s.is_finite() && f.query_at_s > made && f.query_at_s < self.duration_s) {
            return Err(invalid(
                "federated.query_at_s",
                format!(
                    "after the contacts are made (sharing.contacts_at_s.max + accept_delay_s.max = {made}) and within the write phase"
                ),
            ));
        }
        Ok(())
    }

    /// A smaller copy for fast tests: at most `max_devices` devices (fewer
    /// accounts first, then fewer devices per account) and a write phase of
    /// at most `max_duration_s`, with fault times scaled to match.
    pub fn shrunk(&self, max_devices: u32, max_duration_s: f64) -> Self {
        let mut s = self.clone();
        let t = &mut s.topology;
        while t.accounts > 1 && t.accounts * t.devices_per_account > max_devices {
            t.accounts -= 1;
        }
        if t.accounts * t.devices_per_account > max_devices {
            t.devices_per_account = max_devices.max(2);
        }
        if let Some(d) = t.degree {
            t.degree = Some(d.min(t.devices_per_account - 1));
        }
        s.faults.removals_per_account =
            s.faults.removals_per_account.min(t.devices_per_account - 1);
        let (accounts, kept) = (
            t.accounts,
            t.devices_per_account - s.faults.removals_per_account,
        );
        s.joins.retain(|j| j.account < accounts);
        if accounts <= s.sharing.contacts_per_account {
            s.sharing.contacts_per_account = accounts - 1;
        }
        for j in &mut s.joins {
            j.inviter = j.inviter.min(kept - 1);
        }
        if let Some(f) = &mut s.federated {
            f.querier = f.querier.min(accounts - 1);
        }
        if s.duration_s > max_duration_s {
            let k = max_duration_s / s.duration_s;
            s.duration_s = max_duration_s;
            for p in &mut s.faults.partitions {
                p.start_s *= k;
                p.end_s *= k;
            }
            s.faults.removal_at_s *= k;
            let g = &mut s.sharing;
            for r in [
                &mut g.contacts_at_s,
                &mut g.accept_delay_s,
                &mut g.grant_at_s,
                &mut g.change_at_s,
            ] {
                r.min *= k;
                r.max *= k;
            }
            for j in &mut s.joins {
                j.at_s *= k;
            }
            if let Some(f) = &mut s.federated {
                f.query_at_s *= k;
            }
            if let Some(c) = &mut s.faults.churn {
                for r in [&mut c.online_s, &mut c.offline_s] {
                    r.min *= k;
                    r.max *= k;
                }
            }
            // Keep the expected number of crashes per device.
            s.faults.crashes_per_device_per_hour /= k;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> &'static str {
        r#"
name = "t"
duration_s = 10
[topology]
accounts = 1
devices_per_account = 3
[workload]
writes_per_device_per_min = 6
"#
    }

    #[test]
    fn defaults_fill_a_minimal_file() {
        let s: Scenario = toml::from_str(minimal()).unwrap();
        s.validate().unwrap();
        assert_eq!(s.workload.shards, 4);
        assert_eq!(s.bounds, Bounds::default());
        assert_eq!(s.devices(), 3);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let text = format!("{}\nbogus = 1\n", minimal());
        assert!(toml::from_str::<Scenario>(&text).is_err());
        let mut s: Scenario = toml::from_str(minimal()).unwrap();
        s.network.loss = 1.5;
        assert!(matches!(
            s.validate(),
            Err(Error::Invalid {
                field: "network.loss",
                ..
            })
        ));
        let mut s: Scenario = toml::from_str(minimal()).unwrap();
        s.topology.degree = Some(3);
        assert!(s.validate().is_err());
        let mut s: Scenario = toml::from_str(minimal()).unwrap();
        s.faults.partitions = vec![Partition {
            start_s: 5.0,
            end_s: 4.0,
            fraction: 0.5,
        }];
        assert!(s.validate().is_err());
    }

    #[test]
    fn shrinking_keeps_the_scenario_valid() {
        let mut s: Scenario = toml::from_str(minimal()).unwrap();
        s.topology.accounts = 10;
        s.topology.devices_per_account = 100;
        s.topology.degree = Some(4);
        s.faults.removals_per_account = 1;
        s.faults.removal_at_s = 5.0;
        let small = s.shrunk(40, 5.0);
        small.validate().unwrap();
        assert!(small.devices() <= 40);
        assert_eq!(small.duration_s, 5.0);
        assert_eq!(small.faults.removal_at_s, 2.5);
    }
}
