//! What a scenario reports: figures, ratios against its same-run baseline,
//! and pass/miss checks against `design/TARGETS.md`; printed as a table for
//! people (stderr) and as JSON for tools (stdout or `--out`).

use std::fmt::Write as _;

use serde_json::{Value, json};

/// One measured number.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    /// What was measured, e.g. `hearth put_many (engine)`.
    pub(crate) name: String,
    /// The value.
    pub(crate) value: f64,
    /// Its unit, e.g. `records/s`, `µs`, `MB`.
    pub(crate) unit: &'static str,
}

/// One target of `TARGETS.md`, checked.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    /// What is checked, e.g. `throughput vs baseline`.
    pub(crate) what: String,
    /// The measured value, in the unit of `target`.
    pub(crate) measured: f64,
    /// The target as written for people, e.g. `≥ 0.80×`.
    pub(crate) target: String,
    /// Whether the target is met.
    pub(crate) pass: bool,
}

/// Everything one scenario found.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// `P1`, `P2`, …
    pub(crate) id: &'static str,
    /// A one-line title.
    pub(crate) title: &'static str,
    /// Measured figures, Hearth's and the baselines'.
    pub(crate) figures: Vec<Figure>,
    /// Targets checked.
    pub(crate) checks: Vec<Check>,
    /// How it was measured and what the reader should know.
    pub(crate) notes: Vec<String>,
}

impl Outcome {
    pub(crate) fn new(id: &'static str, title: &'static str) -> Self {
        Self {
            id,
            title,
            figures: Vec::new(),
            checks: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Records a figure and returns its value.
    pub(crate) fn figure(
        &mut self,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> f64 {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit,
        });
        value
    }

    /// Records a check that passes when `measured <= limit`.
    pub(crate) fn at_most(
        &mut self,
        what: impl Into<String>,
        measured: f64,
        limit: f64,
        shown: String,
    ) {
        self.check(what.into(), measured, shown, measured <= limit);
    }

    /// Records a check that passes when `measured >= limit`.
    pub(crate) fn at_least(
        &mut self,
        what: impl Into<String>,
        measured: f64,
        limit: f64,
        shown: String,
    ) {
        self.check(what.into(), measured, shown, measured >= limit);
    }

    fn check(&mut self, what: String, measured: f64, target: String, pass: bool) {
        self.checks.push(Check {
            what,
            measured,
            target,
            pass,
        });
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Whether every check passed.
    pub(crate) fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "passed": self.passed(),
            "figures": self.figures.iter().map(|f| json!({
                "name": f.name, "value": round(f.value), "unit": f.unit,
            })).collect::<Vec<_>>(),
            "checks": self.checks.iter().map(|c| json!({
                "what": c.what, "measured": round(c.measured), "target": c.target, "pass": c.pass,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    /// The human table of this outcome.
    pub(crate) fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n== {} — {}", self.id, self.title);
        let width = self
            .figures
            .iter()
            .map(|f| f.name.chars().count())
            .chain(self.checks.iter().map(|c| c.what.chars().count()))
            .max()
            .unwrap_or(0);
        for f in &self.figures {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>14} {}",
                f.name,
                human(f.value),
                f.unit
            );
        }
        if !self.checks.is_empty() {
            let _ = writeln!(out, "  {}", "-".repeat(width + 40));
        }
        for c in &self.checks {
            let verdict = if c.pass { "PASS" } else { "MISS" };
            let _ = writeln!(
                out,
                "  {:<width$}  {:>14}   target {:<14} {verdict}",
                c.what,
                human(c.measured),
                c.target
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }
}

/// A number with a precision that suits its size.
pub(crate) fn human(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 10_000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Rounds to 4 significant decimals for JSON, keeping integers whole.
fn round(v: f64) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    let r = (v * 10_000.0).round() / 10_000.0;
    json!(r)
}

/// Bytes to MiB.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_pass_and_miss_on_the_right_side() {
        let mut o = Outcome::new("PX", "test");
        o.at_most("latency", 4.0, 5.0, "≤ 5 ms".into());
        assert!(o.passed());
        o.at_least("throughput", 0.7, 0.8, "≥ 0.80×".into());
        assert!(!o.passed());
        let table = o.to_table();
        assert!(table.contains("PASS") && table.contains("MISS"), "{table}");
        let j = o.to_json();
        assert_eq!(j["passed"], json!(false));
        assert_eq!(j["checks"][1]["pass"], json!(false));
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(123_456.7), "123457");
        assert_eq!(human(150.26), "150.3");
        assert_eq!(human(1.5), "1.50");
        assert_eq!(human(0.1234), "0.123");
        assert_eq!(round(f64::NAN), Value::Null);
    }
}
