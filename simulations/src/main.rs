//! `hearth-sim`: runs a scenario file and writes its report, and turns
//! reports into the figures table of `simulations/README.md`.
//!
//! ```text
//! hearth-sim run simulations/scenarios/NAME.toml [--seed N | --seeds K] [--out DIR] [--check-determinism]
//! hearth-sim table DIR...
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hearth_sim::scenario::Scenario;
use serde_json::Value;

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
    /// Prints the markdown figures table of simulations/README.md from the
    /// reports of earlier runs: one row per directory, each figure the range
    /// over that run's seeds.
    Table {
        /// Output directories of `run`: each holds report.json (one seed) or
        /// seed-N/report.json (a `--seeds` run). timing.json beside a report
        /// gives the wall and peak RSS columns.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
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
    match Cli::parse().command {
        Command::Run {
            scenario,
            seed,
            seeds,
            out,
            check_determinism,
        } => run(&scenario, seed, seeds, out, check_determinism),
        Command::Table { dirs } => {
            let runs = dirs
                .iter()
                .map(|dir| load_reports(dir))
                .collect::<anyhow::Result<Vec<_>>>()?;
            print!("{}", table(&runs)?);
            Ok(true)
        }
    }
}

fn run(
    path: &Path,
    seed: u64,
    seeds: Option<u64>,
    out: Option<PathBuf>,
    check_determinism: bool,
) -> anyhow::Result<bool> {
    let scenario = Scenario::load(path)?;
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

/// One run's `report.json`, and its `timing.json` when there is one.
struct Loaded {
    /// Where the report was read, for error messages.
    path: PathBuf,
    report: Value,
    timing: Option<Value>,
}

/// The reports under `dir`: its own `report.json`, else every
/// `seed-N/report.json` in seed order.
fn load_reports(dir: &Path) -> anyhow::Result<Vec<Loaded>> {
    let read = |run: &Path| -> anyhow::Result<Loaded> {
        let path = run.join("report.json");
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let report =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        // Timing is optional: a report copied without it still gives a row.
        let timing = std::fs::read(run.join("timing.json"))
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok());
        Ok(Loaded {
            path,
            report,
            timing,
        })
    };
    if dir.join("report.json").is_file() {
        return Ok(vec![read(dir)?]);
    }
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let seed = name
            .to_str()
            .and_then(|n| n.strip_prefix("seed-"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seed) = seed
            && entry.path().join("report.json").is_file()
        {
            seeds.push((seed, entry.path()));
        }
    }
    if seeds.is_empty() {
        bail!(
            "{} holds no report.json and no seed-N/report.json: give an output directory of `hearth-sim run`",
            dir.display()
        );
    }
    seeds.sort();
    seeds.iter().map(|(_, run)| read(run)).collect()
}

/// The header of the figures table; the README's table starts with it.
const TABLE_HEADER: &str = "| scenario | converge p50 / p99 (ms) | rounds p50 / p99 | log₃N | frames / bytes per node (p50) | wall | peak RSS |\n|---|---|---|---|---|---|---|\n";

/// The figures table: one row per directory given (one `run`), each figure
/// the range over that run's seeds.
fn table(dirs: &[Vec<Loaded>]) -> anyhow::Result<String> {
    let mut out = String::from(TABLE_HEADER);
    for runs in dirs {
        let mut name = None;
        for r in runs {
            let this = r.report["scenario"]
                .as_str()
                .with_context(|| format!("{}: no scenario name", r.path.display()))?;
            match name {
                None => name = Some(this),
                Some(first) if first != this => bail!(
                    "{}: scenario {this:?} beside reports of {first:?}; give each run's directory on its own",
                    r.path.display()
                ),
                Some(_) => {}
            }
        }
        let name = name.context("no report to put in a row")?;
        let _ = writeln!(out, "{}", row(name, runs)?);
    }
    Ok(out)
}

/// One scenario's row.
fn row(name: &str, runs: &[Loaded]) -> anyhow::Result<String> {
    let figure = |path: &str| -> anyhow::Result<Vec<f64>> {
        runs.iter()
            .map(|r| {
                field(&r.report, path)
                    .with_context(|| format!("{}: no number at {path}", r.path.display()))
            })
            .collect()
    };
    let timing = |key: &str| -> Option<Vec<f64>> {
        runs.iter()
            .map(|r| r.timing.as_ref().and_then(|t| t[key].as_f64()))
            .collect()
    };
    let seeds: Vec<u64> = figure("seed")?.iter().map(|&s| s as u64).collect();
    let mut label = match seeds.as_slice() {
        [1] => name.to_string(),
        [seed] => format!("{name} (seed {seed})"),
        [first, .., last] if seeds.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("{name} (seeds {first}–{last})")
        }
        _ => format!(
            "{name} (seeds {})",
            seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let failed: Vec<String> = runs
        .iter()
        .zip(&seeds)
        .filter(|(r, _)| r.report["passed"] != Value::Bool(true))
        .map(|(_, s)| s.to_string())
        .collect();
    if !failed.is_empty() {
        let _ = write!(label, " **FAILED** (seed {})", failed.join(", "));
    }
    let cell = |values: &[f64], show: fn(f64) -> String| -> String {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = (show(lo), show(hi));
        if lo == hi {
            return lo;
        }
        // "0.20–0.24 s", not "0.20 s–0.24 s".
        let lo = match (lo.rsplit_once(' '), hi.rsplit_once(' ')) {
            (Some((n, u)), Some((_, v))) if u == v => n.to_string(),
            _ => lo,
        };
        format!("{lo}–{hi}")
    };
    let wall = timing("wall_s").map_or("—".to_string(), |v| cell(&v, seconds));
    let rss = timing("max_rss_kib").map_or("—".to_string(), |v| cell(&v, kib));
    Ok(format!(
        "| {label} | {} / {} | {} / {} | {} | {} / {} | {wall} | {rss} |",
        cell(&figure("converge_ms.p50")?, count),
        cell(&figure("converge_ms.p99")?, count),
        cell(&figure("rounds.rounds.p50")?, count),
        cell(&figure("rounds.rounds.p99")?, count),
        cell(&figure("rounds.log3_n")?, |v| format!("{v:.2}")),
        cell(&figure("frames_per_node.p50")?, count),
        cell(&figure("bytes_per_node.p50")?, bytes),
    ))
}

/// The number at a dotted `path` of `value`.
fn field(value: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_f64)
}

/// A count or a time in ms: one decimal below 10, else a whole number with
/// thousands separators.
fn count(v: f64) -> String {
    if v.abs() < 10.0 && v.fract() != 0.0 {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// Bytes in decimal units, as the README writes them.
fn bytes(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1} MB", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} kB", v / 1e3)
    } else {
        format!("{v:.0} B")
    }
}

/// Seconds of wall time.
fn seconds(v: f64) -> String {
    match v {
        v if v < 1.0 => format!("{v:.2} s"),
        v if v < 100.0 => format!("{v:.1} s"),
        v => format!("{v:.0} s"),
    }
}

/// Peak RSS given in KiB (the kernel's `VmHWM`).
fn kib(v: f64) -> String {
    let mib = v / 1024.0;
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(seed: u64, report: &[u8], timing: Option<Value>) -> Loaded {
        let mut report: Value = serde_json::from_slice(report).unwrap();
        report["seed"] = seed.into();
        Loaded {
            path: PathBuf::from(format!("seed-{seed}/report.json")),
            report,
            timing,
        }
    }

    /// Reads a real report, so a renamed field in `Report` fails here rather
    /// than in the README's table.
    #[test]
    fn table_rows_come_from_the_fields_a_run_writes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/small-office.toml");
        let scenario = Scenario::load(Path::new(path)).unwrap();
        let run = hearth_sim::run(&scenario, path, 1).unwrap();
        let json = &run.files["report.json"];
        let r = &run.report;
        let one = table(&[vec![loaded(1, json, None)]]).unwrap();
        let expected = format!(
            "| small-office | {} / {} | {} / {} | {:.2} | {} / {} | — | — |\n",
            count(r.converge_ms.p50),
            count(r.converge_ms.p99),
            count(r.rounds.rounds.p50),
            count(r.rounds.rounds.p99),
            r.rounds.log3_n,
            count(r.frames_per_node.p50),
            bytes(r.bytes_per_node.p50),
        );
        assert_eq!(one, format!("{TABLE_HEADER}{expected}"));
        assert!(r.passed, "small-office seed 1 passes");
    }

    #[test]
    fn seeds_of_one_scenario_make_one_row_of_ranges() {
        let report = |p50: f64, passed: bool| {
            serde_json::to_vec(&serde_json::json!({
                "scenario": "family", "passed": passed,
                "converge_ms": { "p50": p50, "p99": 157000.4 },
                "rounds": { "log3_n": 0.631, "rounds": { "p50": 1.0, "p99": 2.0 } },
                "frames_per_node": { "p50": 150.0 }, "bytes_per_node": { "p50": 34100.0 },
            }))
            .unwrap()
        };
        let timing = |wall: f64| Some(serde_json::json!({ "wall_s": wall, "max_rss_kib": 31744 }));
        let rows = table(&[vec![
            loaded(1, &report(100.2, true), timing(0.21)),
            loaded(2, &report(117.0, false), timing(0.24)),
            loaded(3, &report(104.0, true), timing(0.2)),
        ]])
        .unwrap();
        assert_eq!(
            rows.lines().nth(2).unwrap(),
            "| family (seeds 1–3) **FAILED** (seed 2) | 100–117 / 157,000 | 1 / 2 | 0.63 | 150 / 34 kB | 0.20–0.24 s | 31 MiB |"
        );
    }

    #[test]
    fn figures_are_written_as_the_readme_writes_them() {
        assert_eq!(count(7.84), "7.8");
        assert_eq!(count(22.6), "23");
        assert_eq!(count(50319.0), "50,319");
        assert_eq!(count(1234567.0), "1,234,567");
        assert_eq!(bytes(1_940_000.0), "1.9 MB");
        assert_eq!(bytes(82_400.0), "82 kB");
        assert_eq!(seconds(184.2), "184 s");
        assert_eq!(kib(2_050_000.0), "1.96 GiB");
        assert_eq!(kib(8_300.0), "8 MiB");
    }

    #[test]
    fn a_directory_without_reports_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("hearth-sim-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = load_reports(&dir).err().unwrap().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("no report.json"), "{e}");
    }
}
