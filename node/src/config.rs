//! Node configuration: plain serde data with defaults, read from
//! `<home>/hearth.toml`, then the environment (`HEARTH_*`), then flags, and
//! validated in one place ([`Config::validate`]).
//!
//! Every limit the node enforces lives here, with its unit and default, so a
//! person can see (and tune) every bound in one file.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The whole node configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The local HTTP API.
    pub api: ApiConfig,
    /// The engine that owns the replica.
    pub engine: EngineConfig,
    /// Store key derivation (used when a passphrase protects the store).
    pub kdf: KdfConfig,
    /// Limits of the libp2p network.
    pub net: NetLimits,
    /// Time-outs of pairing a device.
    pub pairing: PairingConfig,
    /// Contacts and their requests.
    pub contacts: ContactsConfig,
    /// Federated queries, asked and answered.
    pub queries: QueriesConfig,
}

/// Federated queries (`[queries]`): the core's bounds
/// ([`hearth_crdt::node::queries::Limits`]) and the daemon's queue and
/// time-out around `/hearth/query/1`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueriesConfig {
    /// Queries this node runs as querier at once; one more is refused.
    /// Default 16.
    pub max_running: usize,
    /// Requests one query has on their way at once; the rest wait their
    /// turn. Default 64.
    pub in_flight: usize,
    /// Largest canonical query accepted from a querier, in bytes.
    /// Default 65536.
    pub max_query_bytes: usize,
    /// Largest `/hearth/query/1` message either way, in bytes, refused
    /// before it is read. Default 8388608 (8 MiB).
    pub max_message_bytes: usize,
    /// Requests one device may send per minute; more are refused.
    /// Default 120.
    pub requests_per_minute: u32,
    /// (query, step, device) triples remembered to refuse replayed
    /// requests. Default 4096.
    pub seen: usize,
    /// Records a device sends for one `devices` query. Default 100000.
    pub max_records: usize,
    /// Query requests waiting for the network to carry them; one more is
    /// answered at once as undelivered. Default 256.
    pub exchange_queue: usize,
    /// Seconds one inbound `/hearth/query/1` exchange may take, from the
    /// stream opening to the reply written. Default 60.
    pub answer_timeout_secs: u64,
}

impl Default for QueriesConfig {
    fn default() -> Self {
        let d = hearth_crdt::node::queries::Limits::default();
        Self {
            max_running: d.max_running,
            in_flight: d.in_flight,
            max_query_bytes: d.max_query_bytes,
            max_message_bytes: d.max_message_bytes,
            requests_per_minute: d.requests_per_minute,
            seen: d.seen,
            max_records: d.max_records,
            exchange_queue: 256,
            answer_timeout_secs: 60,
        }
    }
}

impl QueriesConfig {
    /// The core's bounds.
    pub fn limits(&self) -> hearth_crdt::node::queries::Limits {
        hearth_crdt::node::queries::Limits {
            max_running: self.max_running,
            in_flight: self.in_flight,
            max_query_bytes: self.max_query_bytes,
            max_message_bytes: self.max_message_bytes,
            requests_per_minute: self.requests_per_minute,
            seen: self.seen,
            max_records: self.max_records,
        }
    }
}

/// Contacts and the requests of other accounts (`[contacts]`). Every
/// request a peer can make is bounded here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ContactsConfig {
    /// Let any peer connect to send a contact request (`/hearth/share/1`
    /// only, nothing else). Off: only the devices of accounts already added
    /// here can reach this node, so a card must be added on both sides.
    /// Default true.
    pub accept_requests: bool,
    /// Pending requests kept from accounts nobody here added; more are
    /// refused. Default 32.
    pub max_pending: usize,
    /// Contacts in all, pending ones included. Default 1000.
    pub max_contacts: usize,
    /// Requests one device may send per minute; more are refused.
    /// Default 10.
    pub requests_per_minute: u32,
    /// Largest `/hearth/share/1` message, in bytes, refused before it is
    /// read. Default 16384.
    pub max_message_bytes: usize,
    /// Seconds before a card that could not be delivered is tried again.
    /// Default 30.
    pub retry_secs: u64,
    /// Share offers kept unanswered; more are refused. Default 64.
    pub max_offers: usize,
    /// Access lists kept that came before their share's offer, in all;
    /// one more drops the oldest share's. Default 16.
    pub max_early_credentials: usize,
    /// Seconds one request-and-reply exchange may take. Default 10.
    pub exchange_timeout_secs: u64,
    /// Cards waiting for the network to carry them; one more is retried
    /// later. Default 256.
    pub deliver_queue: usize,
}

impl Default for ContactsConfig {
    fn default() -> Self {
        let d = hearth_crdt::node::contacts::Limits::default();
        Self {
            accept_requests: true,
            max_pending: d.max_pending,
            max_contacts: d.max_contacts,
            requests_per_minute: d.requests_per_minute,
            max_message_bytes: d.max_message_bytes,
            retry_secs: (d.retry_ms / 1000) as u64,
            max_offers: d.max_offers,
            max_early_credentials: d.max_early_credentials,
            exchange_timeout_secs: 10,
            deliver_queue: 256,
        }
    }
}

impl ContactsConfig {
    /// The core's bounds.
    pub fn limits(&self) -> hearth_crdt::node::contacts::Limits {
        hearth_crdt::node::contacts::Limits {
            max_pending: self.max_pending,
            max_contacts: self.max_contacts,
            requests_per_minute: self.requests_per_minute,
            max_message_bytes: self.max_message_bytes,
            retry_ms: (self.retry_secs.saturating_mul(1000)).min(i64::MAX as u64) as i64,
            max_offers: self.max_offers,
            max_early_credentials: self.max_early_credentials,
        }
    }
}

/// Time-outs of pairing a device (`[pairing]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PairingConfig {
    /// Seconds one handshake step may take on the wire (the join request,
    /// the hello, the challenge, the proof). Default 30.
    pub step_timeout_secs: u64,
    /// Seconds a joining device waits past the invitation's expiry for its
    /// welcome (clock skew, admission). Default 30.
    pub welcome_slack_secs: u64,
}

impl Default for PairingConfig {
    fn default() -> Self {
        let d = crate::pairing::Timeouts::default();
        Self {
            step_timeout_secs: d.step.as_secs(),
            welcome_slack_secs: d.welcome_slack.as_secs(),
        }
    }
}

impl PairingConfig {
    /// The pairing driver's time-outs.
    pub fn timeouts(&self) -> crate::pairing::Timeouts {
        crate::pairing::Timeouts {
            step: std::time::Duration::from_secs(self.step_timeout_secs),
            welcome_slack: std::time::Duration::from_secs(self.welcome_slack_secs),
            ..crate::pairing::Timeouts::default()
        }
    }
}

/// Limits of the libp2p network (`hearth up`'s flags set its addresses).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetLimits {
    /// Established connections in total. Default 64.
    pub max_connections: u32,
    /// Established connections to one peer. Default 4.
    pub max_connections_per_peer: u32,
    /// Connections in their handshake, per direction. Default 16.
    pub max_pending: u32,
    /// New connections are refused while the process uses more than this
    /// many MiB. Default 1024.
    pub memory_limit_mb: usize,
    /// Seconds a connection with no open stream stays up. Default 60.
    pub idle_timeout_secs: u64,
    /// Milliseconds `hearth up` waits at start for its listeners to report
    /// their addresses. Default 5000.
    pub listen_wait_ms: u64,
    /// First redial delay after a failed or lost connection, in ms (also for
    /// reopening a sync stream). Default 1000.
    pub backoff_min_ms: u64,
    /// Longest redial delay, in ms. Default 60000.
    pub backoff_max_ms: u64,
    /// A connection up this many ms resets the redial delay. Default 10000.
    pub stable_connection_ms: u64,
}

impl Default for NetLimits {
    fn default() -> Self {
        let d = crate::net::Config::default();
        let b = hearth_crdt::node::redial::Backoff::default();
        Self {
            max_connections: d.max_connections,
            max_connections_per_peer: d.max_connections_per_peer,
            max_pending: d.max_pending,
            memory_limit_mb: d.memory_limit_mb,
            idle_timeout_secs: d.idle_timeout.as_secs(),
            listen_wait_ms: d.listen_wait.as_millis() as u64,
            backoff_min_ms: b.min_ms,
            backoff_max_ms: b.max_ms,
            stable_connection_ms: b.stable_ms,
        }
    }
}

impl NetLimits {
    /// The network settings with these limits and the default addresses.
    pub fn net_config(&self) -> crate::net::Config {
        crate::net::Config {
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            max_pending: self.max_pending,
            memory_limit_mb: self.memory_limit_mb,
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            listen_wait: std::time::Duration::from_millis(self.listen_wait_ms),
            ..crate::net::Config::default()
        }
    }

    /// The redial policy these fields set; the node's core applies it
    /// ([`EngineConfig::backoff`]).
    pub fn backoff(&self) -> hearth_crdt::node::redial::Backoff {
        hearth_crdt::node::redial::Backoff {
            min_ms: self.backoff_min_ms,
            max_ms: self.backoff_max_ms,
            stable_ms: self.stable_connection_ms,
        }
    }
}

/// Limits of the local HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes. Default 32 MiB.
    pub max_body_bytes: usize,
    /// Most requests served at once; further ones wait. Default 64.
    pub max_concurrent_requests: usize,
    /// Most records one `_find`, `_all_docs` or `_changes` page returns when the
    /// client asks for no limit. Default 100 000.
    pub max_page: usize,
    /// Seconds `hearth pair confirm` (`POST /_hearth/pair/confirm`) waits,
    /// after the right code, for the new device to take its welcome.
    /// Default 30.
    pub pair_confirm_wait_secs: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_concurrent_requests: 64,
            max_page: 100_000,
            pair_confirm_wait_secs: 30,
        }
    }
}

/// Limits and tuning of the engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Commands queued for the engine before callers wait. Default 1024.
    pub queue: usize,
    /// Automerge documents a new collection is sharded across. Default 16.
    pub shards: u16,
    /// Incremental chunks a shard keeps before they are compacted into one
    /// snapshot. Default 128.
    pub compact_after_chunks: u32,
    /// Incremental bytes a shard may gather before it is compacted, when
    /// they are more than its last snapshot. Default 64 KiB.
    pub compact_min_bytes: u64,
    /// Records written per durable commit by `hearth import`. Default 5000.
    pub import_batch: usize,
    /// Largest single record, in bytes of JSON, whether a local write or a
    /// peer's changes make it (a peer's message that would exceed it is
    /// refused whole). Default 1 MiB.
    pub max_record_bytes: usize,
    /// Largest sync frame a peer may send, checked before it is decoded.
    /// Default 16 MiB.
    pub max_frame_bytes: usize,
    /// Most bytes the compressed data of one sync frame may inflate to; a
    /// frame over it (a decompression bomb) is refused before Automerge sees
    /// it. Default 64 MiB.
    pub max_inflated_bytes: usize,
    /// Sync frames one session holds back because their changes to a
    /// shared collection name an access list state not known here yet; one
    /// more closes the session. Default 16.
    pub max_waiting_frames: usize,
    /// Frames queued for one peer before it counts as stalled and is
    /// disconnected (it resyncs when it reconnects). Default 256.
    pub peer_outbox: usize,
    /// Dials the core may have waiting for the network; one more is dropped
    /// with a warning (its member is tried again when its backoff is due).
    /// Default 256.
    pub dial_queue: usize,
    /// The redial policy of the core, from the `[net]` backoff fields
    /// (filled in by [`Config::load`]; not an `[engine]` key).
    #[serde(skip)]
    pub backoff: hearth_crdt::node::redial::Backoff,
    /// The core's contact bounds, from `[contacts]` (filled in by
    /// [`Config::load`]; not an `[engine]` key).
    #[serde(skip)]
    pub contacts: hearth_crdt::node::contacts::Limits,
    /// `[contacts] deliver_queue` (filled in by [`Config::load`]).
    #[serde(skip)]
    pub deliver_queue: usize,
    /// The core's query bounds, from `[queries]` (filled in by
    /// [`Config::load`]; not an `[engine]` key).
    #[serde(skip)]
    pub queries: hearth_crdt::node::queries::Limits,
    /// `[queries] exchange_queue` (filled in by [`Config::load`]).
    #[serde(skip)]
    pub query_queue: usize,
}

impl EngineConfig {
    /// The sync layer's limits.
    pub fn sync_limits(&self) -> hearth_crdt::sync::Limits {
        hearth_crdt::sync::Limits {
            max_frame: self.max_frame_bytes,
            max_inflated: self.max_inflated_bytes,
            max_record: self.max_record_bytes,
            max_waiting: self.max_waiting_frames,
        }
    }

    /// The rules of the node's core.
    // The update fills the test-only field that the simulator's tests switch
    // on through a cargo feature; without that feature there is none.
    #[allow(clippy::needless_update)]
    pub fn node_config(&self) -> hearth_crdt::node::Config {
        hearth_crdt::node::Config {
            shards: self.shards,
            max_record_bytes: self.max_record_bytes,
            compact_after_chunks: self.compact_after_chunks,
            compact_min_bytes: self.compact_min_bytes,
            limits: self.sync_limits(),
            backoff: self.backoff,
            contacts: self.contacts,
            queries: self.queries,
            ..hearth_crdt::node::Config::default()
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            queue: 1024,
            shards: 16,
            compact_after_chunks: 128,
            compact_min_bytes: 64 * 1024,
            import_batch: 5000,
            max_record_bytes: 1024 * 1024,
            max_frame_bytes: 16 * 1024 * 1024,
            max_inflated_bytes: 64 * 1024 * 1024,
            max_waiting_frames: hearth_crdt::sync::DEFAULT_MAX_WAITING,
            peer_outbox: 256,
            dial_queue: 256,
            backoff: hearth_crdt::node::redial::Backoff::default(),
            contacts: hearth_crdt::node::contacts::Limits::default(),
            deliver_queue: 256,
            queries: hearth_crdt::node::queries::Limits::default(),
            query_queue: 256,
        }
    }
}

/// Argon2id parameters for a passphrase-protected store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KdfConfig {
    /// Memory cost in KiB. Default 65536 (64 MiB).
    pub memory_kib: u32,
    /// Iterations. Default 3.
    pub iterations: u32,
    /// Lanes. Default 1.
    pub lanes: u32,
}

impl Default for KdfConfig {
    fn default() -> Self {
        let d = hearth_crypto::wrap::KdfParams::default();
        Self {
            memory_kib: d.m_cost_kib,
            iterations: d.t_cost,
            lanes: d.p_cost,
        }
    }
}

impl KdfConfig {
    /// The crypto crate's parameters.
    pub fn params(&self) -> hearth_crypto::wrap::KdfParams {
        hearth_crypto::wrap::KdfParams {
            m_cost_kib: self.memory_kib,
            t_cost: self.iterations,
            p_cost: self.lanes,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("bad config {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        source: toml::de::Error,
    },
    /// An environment variable holds a value that does not parse.
    #[error("bad value for {name}: {value:?} is not a whole number")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A value is outside its allowed range.
    #[error("bad config: {field} must be {rule}")]
    Invalid {
        /// The field, dotted.
        field: &'static str,
        /// What it must be.
        rule: &'static str,
    },
}

impl Config {
    /// Reads `<home>/hearth.toml` if present, then applies `HEARTH_*`
    /// environment overrides, then validates.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|source| Error::Parse {
                path: path.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => {
                return Err(Error::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        config.engine.backoff = config.net.backoff();
        config.engine.contacts = config.contacts.limits();
        config.engine.deliver_queue = config.contacts.deliver_queue;
        config.engine.queries = config.queries.limits();
        config.engine.query_queue = config.queries.exchange_queue;
        Ok(config)
    }

    /// Applies the environment overrides through `get` (a seam for tests).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        fn num<T: std::str::FromStr>(
            get: &impl Fn(&str) -> Option<String>,
            name: &'static str,
            slot: &mut T,
        ) -> Result<(), Error> {
            if let Some(value) = get(name) {
                *slot = value
                    .trim()
                    .parse()
                    .map_err(|_| Error::Env { name, value })?;
            }
            Ok(())
        }
        num(&get, "HEARTH_KDF_MEMORY_KIB", &mut self.kdf.memory_kib)?;
        num(&get, "HEARTH_KDF_ITERATIONS", &mut self.kdf.iterations)?;
        num(&get, "HEARTH_SHARDS", &mut self.engine.shards)?;
        num(&get, "HEARTH_IMPORT_BATCH", &mut self.engine.import_batch)?;
        Ok(())
    }

    /// Checks every bound in one place.
    pub fn validate(&self) -> Result<(), Error> {
        let e = &self.engine;
        let n = &self.net;
        let p = &self.pairing;
        let c = &self.contacts;
        let q = &self.queries;
        let rules: [(bool, &'static str, &'static str); 25] = [
            (
                q.max_running >= 1
                    && q.in_flight >= 1
                    && q.requests_per_minute >= 1
                    && q.seen >= 1
                    && q.max_records >= 1
                    && (1..=1 << 16).contains(&q.exchange_queue),
                "queries.max_running, queries.in_flight, queries.requests_per_minute, queries.seen, queries.max_records and queries.exchange_queue",
                "at least 1 (exchange_queue at most 65536)",
            ),
            (
                (64 * 1024..=1 << 30).contains(&q.max_message_bytes)
                    && (1024..=q.max_message_bytes).contains(&q.max_query_bytes),
                "queries.max_message_bytes and queries.max_query_bytes",
                "65536 to 1073741824 bytes, and 1024 bytes to queries.max_message_bytes",
            ),
            (
                (1..=3600).contains(&q.answer_timeout_secs),
                "queries.answer_timeout_secs",
                "between 1 and 3600 seconds",
            ),
            (
                c.max_contacts >= 1
                    && c.max_pending <= c.max_contacts
                    && c.requests_per_minute >= 1
                    && c.deliver_queue >= 1,
                "contacts.max_contacts, contacts.max_pending, contacts.requests_per_minute and contacts.deliver_queue",
                "at least 1, with max_pending at most max_contacts",
            ),
            (
                (1024..=1 << 20).contains(&c.max_message_bytes)
                    && (1..=86_400).contains(&c.retry_secs)
                    && (1..=3600).contains(&c.exchange_timeout_secs),
                "contacts.max_message_bytes, contacts.retry_secs and contacts.exchange_timeout_secs",
                "1024 to 1048576 bytes, 1 to 86400 s and 1 to 3600 s",
            ),
            (
                (1..=3600).contains(&self.api.pair_confirm_wait_secs),
                "api.pair_confirm_wait_secs",
                "between 1 and 3600 seconds",
            ),
            (
                (1..=3600).contains(&p.step_timeout_secs)
                    && (1..=3600).contains(&p.welcome_slack_secs),
                "pairing.step_timeout_secs and pairing.welcome_slack_secs",
                "between 1 and 3600 seconds",
            ),
            (
                n.backoff_min_ms >= 10
                    && n.backoff_max_ms >= n.backoff_min_ms
                    && n.listen_wait_ms >= 100,
                "net.backoff_min_ms, net.backoff_max_ms and net.listen_wait_ms",
                "at least 10 ms (listen wait 100 ms), with backoff_max_ms at least backoff_min_ms",
            ),
            (n.max_connections >= 2, "net.max_connections", "at least 2"),
            (
                n.max_connections_per_peer >= 1,
                "net.max_connections_per_peer",
                "at least 1",
            ),
            (n.max_pending >= 1, "net.max_pending", "at least 1"),
            (
                n.memory_limit_mb >= 64 && n.idle_timeout_secs >= 1,
                "net.memory_limit_mb and net.idle_timeout_secs",
                "at least 64 MiB and 1 s",
            ),
            (
                e.max_frame_bytes >= 64 * 1024 && e.max_frame_bytes <= 1 << 30,
                "engine.max_frame_bytes",
                "between 65536 and 1073741824",
            ),
            (
                e.max_inflated_bytes >= e.max_frame_bytes && e.max_inflated_bytes <= 4 << 30,
                "engine.max_inflated_bytes",
                "at least engine.max_frame_bytes and at most 4 GiB",
            ),
            (
                e.max_waiting_frames >= 1 && e.max_waiting_frames <= 1024,
                "engine.max_waiting_frames",
                "between 1 and 1024",
            ),
            (
                e.peer_outbox >= 1 && e.peer_outbox <= 1 << 16,
                "engine.peer_outbox",
                "between 1 and 65536",
            ),
            (
                e.queue >= 1 && e.queue <= 1 << 20,
                "engine.queue",
                "between 1 and 1048576",
            ),
            (
                e.dial_queue >= 1 && e.dial_queue <= 1 << 16,
                "engine.dial_queue",
                "between 1 and 65536",
            ),
            (
                e.shards >= 1 && e.shards <= 1024,
                "engine.shards",
                "between 1 and 1024",
            ),
            (
                e.compact_after_chunks >= 1,
                "engine.compact_after_chunks",
                "at least 1",
            ),
            (
                e.import_batch >= 1 && e.import_batch <= 1_000_000,
                "engine.import_batch",
                "between 1 and 1000000",
            ),
            (
                e.max_record_bytes >= 1024,
                "engine.max_record_bytes",
                "at least 1024",
            ),
            (
                self.api.max_body_bytes >= 1024,
                "api.max_body_bytes",
                "at least 1024",
            ),
            (
                self.api.max_concurrent_requests >= 1,
                "api.max_concurrent_requests",
                "at least 1",
            ),
            (self.api.max_page >= 1, "api.max_page", "at least 1"),
        ];
        for (ok, field, rule) in rules {
            if !ok {
                return Err(Error::Invalid { field, rule });
            }
        }
        if self.kdf.params().validate().is_err() {
            return Err(Error::Invalid {
                field: "kdf",
                rule: "within Argon2id's limits (memory_kib 8..=4194304, iterations >= 1, lanes >= 1)",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_overrides_defaults_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.toml");
        std::fs::write(&path, "[engine]\nshards = 4\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().engine.shards, 4);
        std::fs::write(&path, "[engine]\nshardz = 4\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `shardz`"), "{err}");
    }

    #[test]
    fn env_overrides_and_bad_env_is_named() {
        let mut c = Config::default();
        c.apply_env(|n| (n == "HEARTH_SHARDS").then(|| "8".into()))
            .unwrap();
        assert_eq!(c.engine.shards, 8);
        let err = c
            .apply_env(|n| (n == "HEARTH_SHARDS").then(|| "many".into()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad value for HEARTH_SHARDS: \"many\" is not a whole number"
        );
    }

    #[test]
    fn out_of_range_is_refused_with_the_field_name() {
        let mut c = Config::default();
        c.engine.shards = 0;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "bad config: engine.shards must be between 1 and 1024"
        );
    }

    #[test]
    fn the_readme_shows_every_default() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").unwrap()];
        let shown: Config = toml::from_str(block).unwrap();
        assert_eq!(
            shown,
            Config::default(),
            "README's hearth.toml differs from the defaults"
        );
    }

    #[test]
    fn query_limits_reach_the_core_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.toml");
        std::fs::write(
            &path,
            "[queries]\nmax_running = 2\nin_flight = 3\nmax_query_bytes = 2048\n\
             max_message_bytes = 70000\nrequests_per_minute = 5\nseen = 7\nmax_records = 11\n\
             exchange_queue = 13\nanswer_timeout_secs = 17\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        let limits = config.engine.node_config().queries;
        assert_eq!(
            limits,
            hearth_crdt::node::queries::Limits {
                max_running: 2,
                in_flight: 3,
                max_query_bytes: 2048,
                max_message_bytes: 70000,
                requests_per_minute: 5,
                seen: 7,
                max_records: 11,
            }
        );
        assert_eq!(config.engine.query_queue, 13);
        assert_eq!(config.queries.answer_timeout_secs, 17);
        std::fs::write(&path, "[queries]\nmax_runing = 2\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `max_runing`"), "{err}");
        let mut c = Config::default();
        c.queries.max_query_bytes = c.queries.max_message_bytes + 1;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("queries.max_query_bytes")
        );
        let mut c = Config::default();
        c.queries.max_running = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("queries.max_running")
        );
        let mut c = Config::default();
        c.queries.answer_timeout_secs = 3601;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("queries.answer_timeout_secs")
        );
    }

    #[test]
    fn contact_limits_reach_the_core_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.toml");
        std::fs::write(&path, "[contacts]\nmax_pending = 3\nretry_secs = 5\n").unwrap();
        let config = Config::load(&path).unwrap();
        let limits = config.engine.node_config().contacts;
        assert_eq!((limits.max_pending, limits.retry_ms), (3, 5000));
        let mut c = Config::default();
        c.contacts.max_pending = c.contacts.max_contacts + 1;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("contacts.max_pending")
        );
        let mut c = Config::default();
        c.contacts.max_message_bytes = 1023;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("contacts.max_message_bytes")
        );
    }
}
