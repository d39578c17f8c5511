//! `hearth-sim`: runs a scenario file and writes its report.
//!
//! ```text
//! hearth-sim run simulations/scenarios/NAME.toml [--seed N | --seeds K] [--out DIR] [--check-determinism]
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hearth_sim::scenario::Scenario;

#[derive(Parser)]
#[command(
    name = "hearth-sim",
    about = "Deterministic simulator of the Hearth mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario and writes report.json, report.md, SVG plots and timing.json.
    Run {
        /// The scenario TOML file.
        scenario: PathBuf,
        /// The seed (with --seeds: the first seed).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Runs this many consecutive seeds, each into DIR/seed-N.
        #[arg(long)]
        seeds: Option<u64>,
        /// Output directory [default: target/hearth-sim/NAME].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Runs every seed twice and fails unless the reports are byte-identical.
        #[arg(long)]
        check_determinism: bool,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("hearth-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let Command::Run {
        scenario: path,
        seed,
        seeds,
        out,
        check_determinism,
    } = Cli::parse().command;
    let scenario = Scenario::load(&path)?;
    let shown = path.display().to_string();
    let out = out.unwrap_or_else(|| Path::new("target/hearth-sim").join(&scenario.name));
    let count = seeds.unwrap_or(1).max(1);
    let mut all_passed = true;
    let mut summary = String::from(
        "| seed | passed | converge p50 ms | p99 ms | rounds p50 | p99 | log3 N | frames/node p50 | bytes/node p50 | wall s |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for seed in seed..seed + count {
        let dir = if seeds.is_some() {
            out.join(format!("seed-{seed}"))
        } else {
            out.clone()
        };
        let started = Instant::now();
        let run = hearth_sim::run(&scenario, &shown, seed)?;
        let wall = started.elapsed().as_secs_f64();
        if check_determinism {
            let again = hearth_sim::run(&scenario, &shown, seed)?;
            if again.files != run.files {
                let differing: Vec<&str> = run
                    .files
                    .iter()
                    .filter(|(name, bytes)| again.files.get(*name) != Some(*bytes))
                    .map(|(name, _)| *name)
                    .collect();
                bail!(
                    "seed {seed} is not deterministic: {} differ between two runs; replay: {}",
                    differing.join(", "),
                    hearth_sim::replay_command(&shown, seed)
                );
            }
            println!("seed {seed}: two runs byte-identical");
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, bytes) in &run.files {
            let file = dir.join(name);
            std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
        }
        let timing = serde_json::json!({
            "wall_s": wall,
            "max_rss_kib": hearth_sim::max_rss_kib(),
            "check_determinism": check_determinism,
        });
        std::fs::write(
            dir.join("timing.json"),
            serde_json::to_vec_pretty(&timing).unwrap_or_default(),
        )
        .with_context(|| format!("writing timing.json in {}", dir.display()))?;
        let r = &run.report;
        print!("{}", r.markdown());
        println!("wall {wall:.2} s, report in {}\n", dir.display());
        let _ = writeln!(
            summary,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
            seed,
            r.passed,
            r.converge_ms.p50,
            r.converge_ms.p99,
            r.rounds.rounds.p50,
            r.rounds.rounds.p99,
            r.rounds.log3_n,
            r.frames_per_node.p50,
            r.bytes_per_node.p50,
            wall
        );
        if !r.passed {
            all_passed = false;
            for v in r.checks.iter().filter(|v| !v.passed) {
                eprintln!("check {} FAILED: {}", v.name, v.detail);
            }
            eprintln!("replay: {}", r.replay);
        }
    }
    if seeds.is_some() {
        std::fs::write(out.join("summary.md"), &summary)
            .with_context(|| format!("writing summary.md in {}", out.display()))?;
        print!("{summary}");
    }
    Ok(all_passed)
}
