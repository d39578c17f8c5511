//! `hearth-bench`: Hearth's performance scenarios, each against a baseline
//! measured in the same run.
//!
//! ```text
//! cargo run -p hearth-bench --release -- [p1|p2|p3|p4|p5|p6|p7|p9|p11|p12|p13|p14|all] [--records N] [--out FILE.json]
//! ```
//!
//! | scenario | Hearth | same-run baseline |
//! |---|---|---|
//! | P1 | bulk import through the engine (`put_many`, 5000 per durable commit) | the same Automerge work in a plain redb file |
//! | P2 | one durable `PUT` through the HTTP API of a running node | one durable raw redb commit |
//! | P3 | reopening a 100k-record store until the first `status`, and the node's RSS | `Automerge::load` of the same records |
//! | P4 | indexed `_find` and count/sum/avg aggregates over 100k records | a scan of the Automerge maps |
//! | P5 | cold sync of 10k records to a new device: end to end over libp2p, bytes of the sync frames | raw `automerge::sync` of the same documents |
//! | P6 | reconnect of an in-sync pair: bytes and round trips per collection | `automerge::sync` with persisted sync states |
//! | P7 | one `put` reaching two other online devices, p50/p99 | a loopback TCP round trip |
//! | P9 | a federated aggregate over N = 2, 8, 32 contacts (real processes, 10k records each), exact and through secure sum, p50/p99 and cold | pulling every record of the N contacts to one place and aggregating there |
//! | P11 | an idle node's RSS and CPU, alone and connected to two devices | an idle `sleep` process |
//! | P12 | import and cold sync with every change signed and checked by the share gate | the same without signatures |
//! | P13 | `unshare` until every other online member device refuses the revoked contact | one write's propagation over the same mesh |
//! | P14 | the error of a noisy federated mean through secure sum (noise added once), N = 32 and 1,000 | each contact noising its own answer (local DP) at the same ε |
//!
//! A table goes to stderr, JSON to stdout (or `--out`). Targets come from
//! `design/TARGETS.md`; a miss is reported as a miss. The machines are
//! shared, so ratios matter more than absolute times.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hearth_bench::records;
use serde_json::{Value, json};

/// P14: accuracy of a noisy federated mean.
mod accuracy;
mod baseline;
/// P5: cold sync of 10k records to a new device.
mod cold_sync;
/// Real node cores wired in memory (P12).
mod core_net;
mod daemon;
/// P9: federated aggregates over real processes.
mod federated;
/// P11: an idle node, alone and connected.
mod idle;
/// P1: bulk import through the engine.
mod import;
mod mesh;
mod node;
/// P7: a put on one device readable on two others.
mod propagation;
/// P2: one durable HTTP PUT.
mod put_latency;
/// P4: finds and grouped aggregates.
mod query;
/// P6: reconnect of an in-sync pair.
mod reconnect;
/// P3: reopen to ready, and memory.
mod reopen;
mod report;
/// P13: revocation latency.
mod revocation;
/// P12: the cost of signing and checking every change.
mod signing;
/// The README's tables, generated from `--out` reports.
mod table;
mod wire;

use report::Outcome;

/// Hearth's macro benchmarks (TARGETS.md P1–P7, P9, P11–P14), each with a same-run baseline.
#[derive(Debug, Parser)]
#[command(name = "hearth-bench", version)]
struct Cli {
    /// Records per scenario (P1, P3, P4).
    #[arg(long, global = true, default_value_t = 100_000)]
    records: usize,
    /// Write the JSON report here instead of stdout.
    #[arg(long, global = true, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Repetitions of the whole-run measurements (P1 imports, P3 opens); the
    /// median is reported.
    #[arg(long, global = true, default_value_t = 3)]
    rounds: usize,
    /// Where scratch homes and databases go (a fresh directory is made and
    /// removed inside it). It must be a real disk for fsync to mean anything.
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Seed of the generated records.
    #[arg(long, global = true, default_value_t = records::DEFAULT_SEED)]
    seed: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bulk import: engine `put_many` vs Automerge + plain redb.
    P1,
    /// Single durable PUT over HTTP vs a raw redb commit.
    P2,
    /// Reopen a 100k-record store: time to ready and RSS vs Automerge::load.
    P3,
    /// Indexed find and aggregates vs an Automerge map scan.
    P4,
    /// Cold sync of 10k records to a new device vs raw Automerge sync.
    P5,
    /// Reconnect of an in-sync pair vs Automerge with persisted sync states.
    P6,
    /// Live propagation of a put to two online devices vs a TCP round trip.
    P7,
    /// Federated aggregate over N = 2, 8, 32 contacts (real processes, 10k
    /// records each), exact and through secure sum, vs pulling every record.
    P9,
    /// Idle node, alone and connected to two devices: RSS and CPU.
    P11,
    /// Import and cold sync with every change signed and checked vs not.
    P12,
    /// Revocation latency: unshare until every other member device refuses
    /// the revoked contact (real processes, 3 accounts, 5 devices).
    P13,
    /// Accuracy of a noisy federated mean at ε = 1: secure sum vs each
    /// contact noising its own answer (N = 32 and 1,000).
    P14,
    /// Every scenario, in order (the default).
    All,
    /// Print the markdown tables of `bench/README.md` from JSON reports
    /// written with `--out`.
    Table {
        /// The reports.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Internal: run a node as `hearth up` does (used when target/release/hearth is absent).
    #[command(hide = true)]
    Daemon {
        /// The node's home.
        #[arg(long)]
        home: PathBuf,
        /// API address.
        #[arg(long, default_value = "127.0.0.1:0")]
        api: SocketAddr,
        /// Network listen multiaddr (repeatable); a free loopback TCP port
        /// when absent.
        #[arg(long)]
        listen: Vec<String>,
    },
    /// Internal: load a prepared home's collection and print the RSS it takes (P3).
    #[command(hide = true)]
    Probe {
        /// The prepared home.
        #[arg(long)]
        home: PathBuf,
        /// What to load.
        #[arg(long, value_enum)]
        what: reopen::Probe,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    P1,
    P2,
    P3,
    P4,
    P5,
    P6,
    P7,
    P9,
    P11,
    P12,
    P13,
    P14,
}

/// What every scenario shares within one run.
pub(crate) struct Ctx {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) records: Vec<Value>,
    pub(crate) batch: usize,
    pub(crate) rounds: usize,
    /// `--seed`.
    pub(crate) seed: u64,
    pub(crate) launcher: daemon::Launcher,
    scratch: tempfile::TempDir,
    next_dir: usize,
    /// A 100k-record home and its baseline shards, made by P1 (or on demand)
    /// and reused by P3 and P4.
    pub(crate) prepared: Option<import::Prepared>,
}

impl Ctx {
    /// A fresh, empty directory under the scratch dir.
    pub(crate) fn fresh_dir(&mut self, what: &str) -> Result<PathBuf> {
        self.next_dir += 1;
        let dir = self
            .scratch
            .path()
            .join(format!("{what}-{}", self.next_dir));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Runs the chosen scenarios; `Ok(false)` when one of them failed to run
/// (a missed target is not a failure).
fn run(cli: Cli) -> Result<bool> {
    let scenarios = match cli.command {
        Some(Command::Daemon { home, api, listen }) => {
            daemon::run_self_daemon(&home, api, &listen)?;
            return Ok(true);
        }
        Some(Command::Probe { home, what }) => {
            reopen::probe(&home, what)?;
            return Ok(true);
        }
        Some(Command::Table { files }) => {
            print!("{}", table::render(&files)?);
            return Ok(true);
        }
        Some(Command::P1) => vec![Scenario::P1],
        Some(Command::P2) => vec![Scenario::P2],
        Some(Command::P3) => vec![Scenario::P3],
        Some(Command::P4) => vec![Scenario::P4],
        Some(Command::P5) => vec![Scenario::P5],
        Some(Command::P6) => vec![Scenario::P6],
        Some(Command::P7) => vec![Scenario::P7],
        Some(Command::P9) => vec![Scenario::P9],
        Some(Command::P11) => vec![Scenario::P11],
        Some(Command::P12) => vec![Scenario::P12],
        Some(Command::P13) => vec![Scenario::P13],
        Some(Command::P14) => vec![Scenario::P14],
        Some(Command::All) | None => vec![
            Scenario::P1,
            Scenario::P2,
            Scenario::P3,
            Scenario::P4,
            Scenario::P5,
            Scenario::P6,
            Scenario::P7,
            Scenario::P9,
            Scenario::P11,
            Scenario::P12,
            Scenario::P13,
            Scenario::P14,
        ],
    };
    anyhow::ensure!(cli.records > 0, "--records must be at least 1");
    anyhow::ensure!(cli.rounds > 0, "--rounds must be at least 1");
    let base = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("hearth-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot make a scratch directory in {}", base.display()))?;
    let launcher = daemon::Launcher::find()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    eprintln!(
        "hearth-bench: {} records (seed {:#x}), {} round(s), scratch {}, node via {}",
        cli.records,
        cli.seed,
        cli.rounds,
        scratch.path().display(),
        launcher.describe()
    );
    let mut ctx = Ctx {
        rt,
        records: records::generate(cli.records, cli.seed),
        batch: hearth_node::config::EngineConfig::default().import_batch,
        rounds: cli.rounds,
        seed: cli.seed,
        launcher,
        scratch,
        next_dir: 0,
        prepared: None,
    };
    let mut outcomes: Vec<Value> = Vec::new();
    let mut all_ran = true;
    for scenario in scenarios {
        let result: Result<Outcome> = match scenario {
            Scenario::P1 => import::run(&mut ctx),
            Scenario::P2 => put_latency::run(&mut ctx),
            Scenario::P3 => reopen::run(&mut ctx),
            Scenario::P4 => query::run(&mut ctx),
            Scenario::P5 => cold_sync::run(&mut ctx),
            Scenario::P6 => reconnect::run(&mut ctx),
            Scenario::P7 => propagation::run(&mut ctx),
            Scenario::P9 => federated::run(&mut ctx),
            Scenario::P11 => idle::run(&mut ctx),
            Scenario::P12 => signing::run(&mut ctx),
            Scenario::P13 => revocation::run(&mut ctx),
            Scenario::P14 => accuracy::run(ctx.seed),
        };
        match result {
            Ok(outcome) => {
                eprint!("{}", outcome.to_table());
                outcomes.push(outcome.to_json());
            }
            Err(e) => {
                all_ran = false;
                let id = format!("{scenario:?}");
                eprintln!("\n== {id} — FAILED TO RUN: {e:#}");
                outcomes.push(json!({ "id": id, "error": format!("{e:#}") }));
            }
        }
    }
    let report = json!({
        "date_utc": now_utc(),
        "records": cli.records,
        "batch": ctx.batch,
        "rounds": cli.rounds,
        "seed": cli.seed,
        "cores": std::thread::available_parallelism().map_or(1, usize::from),
        "node": ctx.launcher.describe(),
        "scenarios": outcomes,
    });
    let text = serde_json::to_string_pretty(&report)?;
    match &cli.out {
        Some(path) => std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(all_ran)
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn now_utc() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    hearth_node::utc::format(ms, 'T')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_parses_scenarios_and_global_options() {
        let cli = Cli::try_parse_from(["hearth-bench", "p1", "--records", "10", "--out", "x.json"])
            .expect("parses");
        assert!(matches!(cli.command, Some(Command::P1)));
        assert_eq!(cli.records, 10);
        let cli = Cli::try_parse_from(["hearth-bench"]).expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.records, 100_000);
    }
}
