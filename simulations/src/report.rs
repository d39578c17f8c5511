//! The report of one run: `report.json`, `report.md` and SVG plots, all
//! rendered to bytes first so that determinism is a byte comparison.
//!
//! Nothing here reads a clock: wall time and memory go to `timing.json`,
//! which is written separately and never compared.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::check::{QueueMax, Verdict};
use crate::sim::{Counters, FederatedFigures, Outcome, SharingFigures, log3};

/// Percentiles of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Sample size.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// Summarises `sorted` (ascending), each value multiplied by `scale`.
    pub fn of(sorted: &[u64], scale: f64) -> Self {
        if sorted.is_empty() {
            return Self::default();
        }
        let at = |q: f64| {
            let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            round3(sorted[i] as f64 * scale)
        };
        let sum: f64 = sorted.iter().map(|&v| v as f64).sum();
        Self {
            count: sorted.len() as u64,
            mean: round3(sum / sorted.len() as f64 * scale),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// The federated query's lines of `report.md`.
fn federated_summary(s: &mut String, f: &FederatedFigures) {
    let declined: Vec<String> = f
        .declined_by_reason
        .iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    let _ = writeln!(
        s,
        "Federated query: {} records, policies {} noisy, {} exact, {} none; {} contacts at the start ({}).",
        f.records,
        f.noisy_policies,
        f.exact_policies,
        f.no_policies,
        f.contacts_at_start,
        f.started_s
            .map_or_else(|| "never started".to_owned(), |t| format!("at {t:.3} s")),
    );
    match f.latency_ms {
        Some(ms) => {
            let _ = writeln!(
                s,
                "Completeness: asked {}, answered {}, declined {} ({}), timed out {}, unreachable {}{}; answered in {:.1} ms of virtual time, {}, ε = {}.",
                f.asked,
                f.answered_contacts,
                f.declined,
                if declined.is_empty() {
                    "none".to_owned()
                } else {
                    declined.join(", ")
                },
                f.timed_out,
                f.unreachable,
                if f.completeness_adds_up {
                    ""
                } else {
                    " (does not add up)"
                },
                ms,
                if f.exact == Some(true) {
                    "exact"
                } else {
                    "noisy"
                },
                f.epsilon.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            );
            let _ = writeln!(
                s,
                "\n| value | groups | mean abs error | max abs error | mean relative error | mean noise scale | max error (scales) |\n|---|---|---|---|---|---|---|"
            );
            for e in &f.errors {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.3} | {:.3} | {:.5} | {:.3} | {:.2} |",
                    e.name,
                    e.groups,
                    e.mean_abs_error,
                    e.max_abs_error,
                    e.mean_relative_error,
                    e.mean_noise_scale,
                    e.max_error_in_scales
                );
            }
            let _ = writeln!(s);
        }
        None => {
            let _ = writeln!(s, "No result came.");
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1_000.0).round() / 1_000.0
}

/// Write counts.
#[derive(Debug, Clone, Serialize)]
pub struct Writes {
    /// Writes made.
    pub made: u64,
    /// Writes acknowledged (durable).
    pub acked: u64,
    /// Unacknowledged writes a crash dropped (allowed).
    pub lost_unacked: u64,
    /// Writes that reached every member replica.
    pub converged: u64,
    /// Writes that did not (lost ones and removed devices' writes excluded).
    pub unconverged: u64,
}

/// Rounds against log₃ N.
#[derive(Debug, Clone, Serialize)]
pub struct Rounds {
    /// Replicas per document.
    pub replicas: u32,
    /// log₃ of it.
    pub log3_n: f64,
    /// Rounds per converged write.
    pub rounds: Summary,
    /// Arrivals at member replicas by hop count (index = hops).
    pub arrivals_by_hop: Vec<u64>,
}

/// Pairing figures: attempts, outcomes and how long a join took.
#[derive(Debug, Clone, Serialize)]
pub struct Pairing {
    /// Joins in the scenario.
    pub joins: u32,
    /// Attempts started (one invitation each).
    pub attempted: u64,
    /// Attempts that ended with the device welcomed.
    pub succeeded: u64,
    /// Attempts refused for a wrong check code (invitation burned).
    pub refused: u64,
    /// Attempts that ended otherwise (broken connection, device down).
    pub failed: u64,
    /// Per completed join: first attempt to welcome, ms.
    pub duration_ms: Summary,
}

/// The whole report of one run; serialised as `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Whether every check passed.
    pub passed: bool,
    /// The command that replays this run.
    pub replay: String,
    /// Accounts.
    pub accounts: u32,
    /// Devices per account.
    pub devices_per_account: u32,
    /// Devices.
    pub devices: u32,
    /// Devices removed from their account during the run.
    pub removed_devices: u32,
    /// Whether the event queue drained (else the quiescence cap hit).
    pub quiesced: bool,
    /// Virtual time of the last event, s.
    pub virtual_end_s: f64,
    /// Checker verdicts.
    pub checks: Vec<Verdict>,
    /// Write counts.
    pub writes: Writes,
    /// Time from a write to its last member replica, ms.
    pub converge_ms: Summary,
    /// Rounds against log₃ N.
    pub rounds: Rounds,
    /// Frames sent per node.
    pub frames_per_node: Summary,
    /// Copies of each change that reached a node, on average, per node
    /// (P10's "copies of a change per node").
    pub copies_per_node: Summary,
    /// Bytes sent per node.
    pub bytes_per_node: Summary,
    /// All frames sent.
    pub frames_total: u64,
    /// All bytes sent.
    pub bytes_total: u64,
    /// Queue maxima and bounds.
    pub queues: Vec<QueueMax>,
    /// Pairing.
    pub pairing: Pairing,
    /// Contacts and shares.
    pub sharing: Sharing,
    /// The scenario's federated query (`[federated]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federated: Option<FederatedFigures>,
    /// Counters.
    pub counters: Counters,
}

/// Contacts, shares and the writes to shared collections.
#[derive(Debug, Clone, Serialize)]
pub struct Sharing {
    /// Counts of the plan's steps and of the writes.
    pub figures: SharingFigures,
    /// Time from a shared write to the last device of its share's final
    /// members, ms (for a write made before a member accepted, this
    /// includes the acceptance).
    pub converge_ms: Summary,
    /// Rounds per shared write, against log₃ of the member devices.
    pub rounds: Summary,
    /// log₃ of the mean member devices per share.
    pub log3_n: f64,
}

impl Report {
    /// Builds the report of `outcome`.
    pub fn new(
        scenario: &crate::scenario::Scenario,
        seed: u64,
        replay: String,
        outcome: &Outcome,
    ) -> Self {
        let mut frames = outcome.frames_per_node.clone();
        frames.sort_unstable();
        let mut bytes = outcome.bytes_per_node.clone();
        bytes.sort_unstable();
        let mut copies = outcome.copies_per_node.clone();
        copies.sort_unstable();
        let rounds: Vec<u64> = outcome.rounds.iter().map(|&r| u64::from(r)).collect();
        let c = &outcome.counters;
        Self {
            scenario: scenario.name.clone(),
            seed,
            passed: outcome.verdicts.iter().all(|v| v.passed),
            replay,
            accounts: scenario.topology.accounts,
            devices_per_account: scenario.topology.devices_per_account,
            devices: scenario.devices(),
            removed_devices: outcome.removed_devices,
            quiesced: outcome.quiesced,
            virtual_end_s: round3(outcome.end_us as f64 / 1e6),
            checks: outcome.verdicts.clone(),
            writes: Writes {
                made: c.writes,
                acked: c.acked,
                lost_unacked: c.lost_unacked_writes,
                converged: outcome.converge_us.len() as u64,
                unconverged: outcome.unconverged_writes,
            },
            converge_ms: Summary::of(&outcome.converge_us, 1e-3),
            rounds: Rounds {
                replicas: outcome.replicas_per_document,
                log3_n: round3(log3(outcome.replicas_per_document)),
                rounds: Summary::of(&rounds, 1.0),
                arrivals_by_hop: outcome.hop_histogram.clone(),
            },
            frames_per_node: Summary::of(&frames, 1.0),
            copies_per_node: Summary::of(&copies, 1e-3),
            bytes_per_node: Summary::of(&bytes, 1.0),
            frames_total: frames.iter().sum(),
            bytes_total: bytes.iter().sum(),
            queues: outcome.queues.clone(),
            pairing: Pairing {
                joins: scenario.joins.len() as u32,
                attempted: c.pairing_attempts,
                succeeded: c.pairings_succeeded,
                refused: c.pairings_refused,
                failed: c.pairings_failed,
                duration_ms: Summary::of(&outcome.pairing_us, 1e-3),
            },
            sharing: Sharing {
                figures: outcome.sharing.clone(),
                converge_ms: Summary::of(&outcome.sharing.converge_us, 1e-3),
                rounds: Summary::of(
                    &outcome
                        .sharing
                        .rounds
                        .iter()
                        .map(|&r| u64::from(r))
                        .collect::<Vec<_>>(),
                    1.0,
                ),
                log3_n: round3(outcome.sharing.replicas_per_share.max(1.0).log(3.0)),
            },
            federated: outcome.federated.clone(),
            counters: outcome.counters.clone(),
        }
    }

    /// `report.md`.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {} (seed {})\n", self.scenario, self.seed);
        let _ = writeln!(
            s,
            "{} — {} accounts × {} devices ({} removed), virtual end {:.1} s, quiesced: {}\n",
            if self.passed {
                "**PASSED**"
            } else {
                "**FAILED**"
            },
            self.accounts,
            self.devices_per_account,
            self.removed_devices,
            self.virtual_end_s,
            self.quiesced
        );
        let _ = writeln!(s, "Replay: `{}`\n", self.replay);
        let _ = writeln!(s, "| check | result | detail |\n|---|---|---|");
        for v in &self.checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                v.name,
                if v.passed { "pass" } else { "FAIL" },
                v.detail
            );
        }
        let _ = writeln!(s, "\n| metric | count | mean | p50 | p90 | p99 | max |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for (name, m) in [
            ("time to converge (ms)", &self.converge_ms),
            ("rounds per write", &self.rounds.rounds),
            ("frames sent per node", &self.frames_per_node),
            ("copies of a change per node", &self.copies_per_node),
            ("bytes sent per node", &self.bytes_per_node),
            ("pairing duration (ms)", &self.pairing.duration_ms),
            (
                "shared write to last member (ms)",
                &self.sharing.converge_ms,
            ),
            ("rounds per shared write", &self.sharing.rounds),
        ] {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {} |",
                m.count, m.mean, m.p50, m.p90, m.p99, m.max
            );
        }
        let w = &self.writes;
        let _ = writeln!(
            s,
            "\nWrites: {} made, {} acknowledged, {} unacknowledged lost in crashes, {} converged, {} not.  \nRounds: N = {} replicas per document, log₃N = {}.  \nTraffic: {} frames, {} bytes.",
            w.made,
            w.acked,
            w.lost_unacked,
            w.converged,
            w.unconverged,
            self.rounds.replicas,
            self.rounds.log3_n,
            self.frames_total,
            self.bytes_total
        );
        if let Some(f) = &self.federated {
            federated_summary(&mut s, f);
        }
        let p = &self.pairing;
        let _ = writeln!(
            s,
            "Pairing: {} joins, {} attempts, {} succeeded, {} refused (wrong code), {} failed.",
            p.joins, p.attempted, p.succeeded, p.refused, p.failed
        );
        let g = &self.sharing.figures;
        if g.shares > 0 {
            let _ = writeln!(
                s,
                "Sharing: {} contacts, {} shares ({:.1} member devices each, log₃N = {}), {} grants, {} accepted, {} level changes, {} revocations; {} shared writes ({} converged, {} not), {} refused locally, {} forged, {} sessions refused by the gate; {} requests carried, {} steps abandoned.",
                g.contacts,
                g.shares,
                g.replicas_per_share,
                self.sharing.log3_n,
                g.grants,
                g.accepted,
                g.level_changes,
                g.revocations,
                g.shared_writes,
                g.converge_us.len(),
                g.unconverged,
                g.refused_locally,
                g.forged,
                g.refused_by_gate,
                g.requests,
                g.abandoned
            );
        }
        let _ = writeln!(s, "\n| queue | max | bound |\n|---|---|---|");
        for q in &self.queues {
            let _ = writeln!(s, "| {} | {} | {} |", q.queue, q.max, q.bound);
        }
        let c = &self.counters;
        let _ = writeln!(
            s,
            "\nEvents {}, connections {}, breaks (loss/dup/reorder) {}/{}/{}, session errors {}, refused {}, crashes {}, fsyncs {}.",
            c.events,
            c.connections,
            c.breaks_loss,
            c.breaks_duplication,
            c.breaks_reorder,
            c.session_errors,
            c.refused,
            c.crashes,
            c.fsyncs
        );
        s
    }

    /// Every output file of the run, by name, as bytes (timing excluded).
    pub fn files(&self, outcome: &Outcome) -> BTreeMap<&'static str, Vec<u8>> {
        let mut files = BTreeMap::new();
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        files.insert("report.json", json);
        files.insert("report.md", self.markdown().into_bytes());
        // Time-to-converge CDF.
        let n = outcome.converge_us.len().max(1) as f64;
        let cdf: Vec<(f64, f64)> = outcome
            .converge_us
            .iter()
            .enumerate()
            .map(|(i, &t)| (t as f64 / 1e3, (i + 1) as f64 / n))
            .collect();
        files.insert(
            "converge_cdf.svg",
            chart(
                &format!(
                    "{} seed {}: time to converge (CDF over writes)",
                    self.scenario, self.seed
                ),
                "ms from write to last member replica",
                "fraction of writes",
                &[("writes", cdf)],
                None,
            )
            .into_bytes(),
        );
        // Per node traffic, nodes ranked.
        let ranked = |v: &[u64]| -> Vec<(f64, f64)> {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.iter()
                .enumerate()
                .map(|(i, &x)| (i as f64, x as f64))
                .collect()
        };
        files.insert(
            "messages_per_node.svg",
            chart(
                &format!("{} seed {}: frames sent per node", self.scenario, self.seed),
                "node (ranked)",
                "frames",
                &[("frames", ranked(&outcome.frames_per_node))],
                None,
            )
            .into_bytes(),
        );
        files.insert(
            "bytes_per_node.svg",
            chart(
                &format!("{} seed {}: bytes sent per node", self.scenario, self.seed),
                "node (ranked)",
                "bytes",
                &[("bytes", ranked(&outcome.bytes_per_node))],
                None,
            )
            .into_bytes(),
        );
        // Rounds: share of arrivals reached within h hops, and log₃N.
        let total: u64 = outcome.hop_histogram.iter().sum();
        let mut acc = 0u64;
        let mut reach = vec![(0.0, 0.0)];
        for (h, &count) in outcome.hop_histogram.iter().enumerate() {
            acc += count;
            reach.push((h as f64, acc as f64 / total.max(1) as f64));
        }
        let mut per_write = Vec::new();
        let writes = outcome.rounds.len().max(1) as f64;
        for (i, &r) in outcome.rounds.iter().enumerate() {
            per_write.push((f64::from(r), (i + 1) as f64 / writes));
        }
        files.insert(
            "rounds.svg",
            chart(
                &format!(
                    "{} seed {}: sync rounds (hops) vs log3 N = {:.2}",
                    self.scenario, self.seed, self.rounds.log3_n
                ),
                "rounds (hops)",
                "fraction",
                &[
                    ("replica arrivals within h hops", reach),
                    ("writes fully converged within h rounds", per_write),
                ],
                Some(("log3 N", self.rounds.log3_n)),
            )
            .into_bytes(),
        );
        files
    }
}

const COLOURS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];

/// A line chart as SVG text: axes with min/max labels, one polyline per
/// series, an optional labelled vertical marker.
fn chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    marker: Option<(&str, f64)>,
) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 400.0, 70.0, 20.0, 40.0, 50.0);
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (0.0f64, 1.0f64, 0.0f64, 1.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if let Some((_, m)) = marker {
        x1 = x1.max(m * 1.1);
    }
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r#"<path d="M{l},{t} L{l},{b} L{r},{b}" fill="none" stroke="black"/>"#,
        l = left,
        t = top,
        b = h - bottom,
        r = w - right
    );
    for (x, anchor, v) in [(left, "start", x0), (w - right, "end", x1)] {
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="{anchor}">{}</text>"#,
            h - bottom + 16.0,
            num(v)
        );
    }
    for (y, v) in [(h - bottom, y0), (top + 4.0, y1)] {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{y}" text-anchor="end">{}</text>"#,
            left - 6.0,
            num(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + w - right) / 2.0,
        h - 12.0,
        escape(xlabel)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0,
        escape(ylabel)
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
            path.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
            left + 10.0,
            top + 16.0 + 16.0 * i as f64,
            escape(name)
        );
    }
    if let Some((label, m)) = marker {
        let x = px(m);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="gray" stroke-dasharray="4 3"/>"#,
            h - bottom
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" fill="gray">{} = {}</text>"#,
            x + 4.0,
            h - bottom - 8.0,
            escape(label),
            num(m)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn num(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.2e}", v)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        let s = Summary::of(&v, 1.0);
        assert_eq!((s.p50, s.p90, s.p99, s.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Summary::of(&[], 1.0), Summary::default());
    }

    #[test]
    fn charts_are_well_formed_text() {
        let svg = chart(
            "a <b>",
            "x",
            "y",
            &[("s", vec![(0.0, 0.0), (2.0, 1.0)])],
            Some(("m", 1.0)),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;b&gt;"));
        assert!(svg.contains("<polyline"));
    }
}
