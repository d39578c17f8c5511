//! `hearth-bench table FILE.json...`: the markdown tables of
//! `bench/README.md`, printed from the JSON reports that `--out` writes, so
//! the figures there are generated rather than copied by hand.
//!
//! For every report: one line naming when and how it was measured, a table
//! of its checks (measured against target), and a table of every figure with
//! its unit, same-run baselines included.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// The tables for the reports at `paths`, in order.
pub(crate) fn render(paths: &[impl AsRef<Path>]) -> Result<String> {
    let mut out = String::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a hearth-bench JSON report", path.display()))?;
        render_one(&report, &mut out)
            .with_context(|| format!("{} is not a hearth-bench JSON report", path.display()))?;
    }
    Ok(out)
}

fn text<'v>(v: &'v Value, key: &str) -> Result<&'v str> {
    v.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("no text field {key:?}"))
}

fn number(v: &Value, key: &str) -> Result<f64> {
    v.get(key)
        .and_then(Value::as_f64)
        .with_context(|| format!("no number field {key:?}"))
}

/// Three significant decimals at most, no trailing zeros.
fn shown(x: f64) -> String {
    let s = if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn render_one(report: &Value, out: &mut String) -> Result<()> {
    let scenarios = report
        .get("scenarios")
        .and_then(Value::as_array)
        .context("no scenarios")?;
    let _ = writeln!(
        out,
        "Measured {} on {} cores, {} records, node: {}.\n",
        text(report, "date_utc")?,
        report.get("cores").and_then(Value::as_u64).unwrap_or(0),
        report.get("records").and_then(Value::as_u64).unwrap_or(0),
        text(report, "node")?
    );
    let _ = writeln!(
        out,
        "| # | check | measured | target | |\n|---|---|---|---|---|"
    );
    for s in scenarios {
        let id = text(s, "id")?;
        for c in s
            .get("checks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let pass = c.get("pass").and_then(Value::as_bool).unwrap_or(false);
            let _ = writeln!(
                out,
                "| {id} | {} | {} | {} | {} |",
                text(c, "what")?,
                shown(number(c, "measured")?),
                text(c, "target")?,
                if pass { "PASS" } else { "MISS" }
            );
        }
    }
    for s in scenarios {
        let _ = writeln!(
            out,
            "\n{} — {}\n\n| figure | value |\n|---|---|",
            text(s, "id")?,
            text(s, "title")?
        );
        for f in s
            .get("figures")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                out,
                "| {} | {} {} |",
                text(f, "name")?,
                shown(number(f, "value")?),
                text(f, "unit")?
            );
        }
    }
    out.push('\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_renders_its_checks_and_figures() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p7.json");
        std::fs::write(
            &path,
            r#"{"date_utc":"2026-12-02T04:53:31Z","cores":2,"records":10,"node":"x",
               "scenarios":[{"id":"P7","title":"live propagation","passed":true,
                 "checks":[{"what":"propagation p50","measured":2.4426,"target":"≤ 10 ms","pass":true}],
                 "figures":[{"name":"tcp loopback round trip, p50","unit":"ms","value":0.1056}]}]}"#,
        )?;
        let md = render(&[&path])?;
        assert!(
            md.contains("| P7 | propagation p50 | 2.443 | ≤ 10 ms | PASS |"),
            "{md}"
        );
        assert!(
            md.contains("| tcp loopback round trip, p50 | 0.106 ms |"),
            "{md}"
        );
        std::fs::write(&path, "{}")?;
        let e = render(&[&path]).unwrap_err();
        assert!(
            format!("{e:#}").contains("not a hearth-bench JSON report"),
            "{e:#}"
        );
        Ok(())
    }
}
