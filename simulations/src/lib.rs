//! A deterministic simulator of the Hearth mesh.
//!
//! A simulated device runs **the node's own core**: one
//! [`hearth_crdt::node::Node`] per device, the very state machine the
//! daemon's engine drives (data rules, one sync session per peer,
//! forwarding, membership, persist before answer, the inviting flow, whom
//! to dial and when). The simulator is only its driver: it feeds the core
//! connection events, frames and timer ticks with the virtual time and the
//! seeded RNG, and performs the outputs in order, each `Persist` batch on a
//! virtual disk whose fsync releases what waited on it, each `Dial` as a
//! connection attempt on the link, each `Timer` as a tick event.
//! So a scenario and a seed give a byte-identical report, and a bug in the
//! core's ordering is a bug the checkers see (see the durable-sends check
//! and its planted-bug test). Pairing runs the inviter core's own flow
//! (`Node::invite`, `Node::inviting`, `Node::admit`) against
//! `hearth_crypto`'s `Joiner`.
//!
//! # The model in one minute
//!
//! - **Event queue and virtual clock.** A `BinaryHeap` of events ordered by
//!   `(time µs, seq)`; `seq` grows with every scheduled event, so ties run in
//!   scheduling order. Nothing reads the wall clock; one seeded `StdRng`
//!   draws every random choice (keys, overlay, latencies, faults, workload).
//!   Nodes live in a `Vec` indexed by `u32`, every map is a `BTreeMap`.
//! - **Node = the sans-IO core + simulated disk.** The disk holds what the
//!   core's batches wrote: each collection's catalog entry and shard chunks
//!   (compactions replace a shard's list), the sync states per peer and the
//!   membership log, plus the heads each batch made durable. Writes first land
//!   in a pending list; an fsync `storage.fsync_ms` later makes everything
//!   pending durable (group commit). Until then the node *holds* every
//!   outgoing frame and every write acknowledgement: persist, then send. A
//!   **crash** drops the pending list, the held frames and acks (those writes
//!   were never acknowledged) and every connection; the node **restarts** as a new core
//!   loaded from its durable disk, with fresh sessions built from its
//!   durable sync states.
//! - **Network.** Each pair of devices that can reach each other (every pair
//!   of an account, or a random overlay of degree `topology.degree`) is a
//!   link that holds at most one connection. We chose the second model the
//!   issue offers: **frames on a connection arrive in order** after a
//!   per-frame latency drawn from `network.latency_ms` (never overtaking the
//!   previous frame), because `Session` is a stream protocol; **loss,
//!   duplication and reordering are the transport's problem** and surface
//!   the way TCP or QUIC surface them, as a broken connection: when a fault
//!   hits a frame, the frame is gone, both sessions close, and each end's
//!   core dials again under its redial policy (exponential backoff with
//!   jitter, `network.backoff_*`). A device that comes up, or a partition
//!   that ends, tells the cores of its links that their peers may be
//!   reachable again (`Input::Reachable`), as a daemon hears of a new
//!   address; they dial at once. At most
//!   `bounds.window_frames` frames are in flight per direction; the rest
//!   wait in the sender's outbox.
//! - **Faults.** Partitions (a random fraction of devices cut off from the
//!   rest between two times), churn (a fraction of devices alternating
//!   online and offline periods), crashes (Poisson per device) and device
//!   removals (the account's first device removes its last ones with
//!   `Log::remove_device`; the log then spreads through the sessions, and
//!   connections from a removed device are refused by admission, as the
//!   node's transport gate does). At `duration_s` the **heal** starts: writes
//!   and faults stop, partitions end, every device comes online; the run
//!   ends when the event queue drains (**quiescence**) — or holds only
//!   timer ticks while no link that is down could connect (cores keep
//!   backing off towards the unreachable) — or fails the quiescence check
//!   at `max_quiescence_s`.
//! - **Accounts, contacts and shares** (`[sharing]`, `sim/sharing.rs`). A
//!   contact graph drawn from the seed; contacts added and accepted, shares
//!   granted, accepted, changed in level and revoked through the cores' own
//!   commands; contact requests carried as request and reply; links between
//!   related accounts connect only while both admission gates let them.
//!   Hostile accounts forge writes (`Node::forge`). Checked by the
//!   revocation, refusal and share convergence checkers.
//! - **Pairing.** A `[[joins]]` entry brings a new device into an account
//!   at a given time through the node's own handshake (the inviter core's
//!   flow and [`hearth_crypto::pairing`]'s `Joiner`, with the message flow
//!   of `node/src/pairing.rs`): the inviter's core opens an
//!   [`Invitation`](hearth_crypto::ticket::Invitation) (seeded RNG, expiry in
//!   virtual time), the ticket is encoded and decoded as a person copying it
//!   would, and the joiner dials the inviter over a pairing connection whose
//!   frames arrive in order after the network's latency: a name frame and
//!   `Hello`, `Challenge`, `Proof`; both derive the check code. After
//!   `human_delay_ms` the person types the code the joiner shows on the
//!   inviter — or, in `wrong_code_probability` of attempts (and the first
//!   `wrong_codes_first`), a wrong one, which burns the invitation and
//!   refuses the joiner. On the right code the inviter's core admits the
//!   device (`Node::admit`: the log entry, persisted and offered to its
//!   sessions), and after the fsync the `Welcome` with the encoded log goes; the joiner adopts
//!   it and from then on dials its links (every device of the account, or the
//!   inviter and `degree − 1` others) and syncs like any member. Its links
//!   connect only once the other end's log admits it (the admission gate);
//!   each membership change tells the cores they are reachable. A transport fault on a pairing
//!   frame, either device going down or a partition between them ends the
//!   attempt; the joiner retries with a fresh invitation after
//!   `retry_delay_ms`. A joined device counts in the convergence and
//!   durability checks; its catch-up on older writes is left out of the
//!   time-to-converge and rounds figures, which measure propagation.
//! - **Checkers** ([`check`]), every run: convergence (identical shard heads
//!   and identical records on every member replica of an account),
//!   durability (every acknowledged write present at its revision or a later
//!   one on every member), bounds (in-flight, outbox and held-until-fsync
//!   queues within their bounds; the maxima are reported), and access (every
//!   frame put on the wire is checked against the sender's membership log;
//!   a collection-data frame to a non-member, or to a device still pairing,
//!   is a violation, as is a welcome sent before the code was confirmed),
//!   durable sends (no sync message announces shard heads that are not in
//!   the causal past of what the sender's disk holds) and, with joins, pairing (every join completed and its device is a member on
//!   every replica of its account's log; a refused attempt left no entry for
//!   the device in the inviter's log); with shares, revocation (no device of
//!   a revoked account ever held a change written after its revocation),
//!   refusal (no forged change reached another account) and share
//!   convergence (every current member device holds the owner's records).
//! - **Report** ([`report`]): `report.json`, `report.md` and SVG plots
//!   (time-to-converge CDF, frames and bytes per node, rounds against
//!   log₃N). Wall time and memory go to `timing.json`, never compared.
//!
//! # Rounds
//!
//! A write's **hop count** at a replica is the number of device-to-device
//! session deliveries along the path by which the write *first* reached
//! that replica: 0 at the writer, and when device B first applies a
//! revision from a frame sent by A, `hops(B) = hops(A) + 1`. A write's
//! **rounds** are its largest hop count over the member replicas, i.e. the
//! number of relay steps until the last replica had it. Flooding over a
//! random overlay where each device forwards to `d − 1` new neighbours
//! reaches everyone in about `log_{d−1} N` rounds, so the `city` scenario
//! uses degree 4 and plots rounds against log₃N (N = replicas per
//! document = devices per account).
//!
//! # Example
//!
//! ```
//! use hearth_sim::scenario::Scenario;
//!
//! let scenario: Scenario = toml::from_str(r#"
//!     name = "doc"
//!     duration_s = 20
//!     [topology]
//!     accounts = 1
//!     devices_per_account = 3
//!     [workload]
//!     writes_per_device_per_min = 12
//! "#)?;
//! scenario.validate()?;
//! let run = hearth_sim::run(&scenario, "doc.toml", 1)?;
//! assert!(run.report.passed, "{}", run.report.markdown());
//! assert!(run.report.writes.acked > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

pub mod check;
pub mod report;
pub mod scenario;
pub mod sim;

use report::Report;
use scenario::Scenario;

/// One finished run: its report and every output file, as bytes.
#[derive(Debug)]
pub struct Run {
    /// The report.
    pub report: Report,
    /// `report.json`, `report.md` and the SVG plots, by file name.
    pub files: BTreeMap<&'static str, Vec<u8>>,
}

/// The command that replays `seed` of the scenario at `path`.
pub fn replay_command(path: &str, seed: u64) -> String {
    format!("cargo run -p hearth-sim --release -- run {path} --seed {seed}")
}

/// Simulates `scenario` (read from `path`, which the replay command names)
/// with `seed`, runs the checkers and renders the report.
pub fn run(scenario: &Scenario, path: &str, seed: u64) -> Result<Run, sim::Error> {
    run_with(scenario, path, seed, hearth_crdt::node::Config::default())
}

/// [`run`], with every device's core built from `core` (see
/// [`sim::World::with_core`]).
pub fn run_with(
    scenario: &Scenario,
    path: &str,
    seed: u64,
    core: hearth_crdt::node::Config,
) -> Result<Run, sim::Error> {
    let outcome = sim::World::with_core(scenario, seed, core)?.run();
    let report = Report::new(scenario, seed, replay_command(path, seed), &outcome);
    let files = report.files(&outcome);
    Ok(Run { report, files })
}

/// The process's peak resident memory, in KiB (`VmHWM`), where `/proc`
/// provides it.
pub fn max_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
