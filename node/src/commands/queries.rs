//! The federated query commands: `query`, `consent set|list|remove` and
//! `audit`.
//!
//! Each goes through the API ([`Backend`]), so it gives the same answer
//! with or without a running daemon; only a query whose scope is not
//! `local` needs the daemon, whose network carries it.

use anyhow::{Result, bail};
use serde_json::Value;

use super::{emit, emit_json, parse_arg};
use crate::cli::{ConsentAction, Global};
use crate::client::Backend;

/// `hearth query '<json>'`.
pub(super) fn query(backend: &Backend, global: &Global, text: &str) -> Result<()> {
    let body = parse_arg("the query", text)?;
    if !body.is_object() {
        bail!(
            "the query must be a JSON object, got {}; see `hearth query --help`",
            super::kind(&body)
        );
    }
    let result = backend.query(&body)?;
    if global.json {
        return emit_json(&result);
    }
    for line in result_lines(&result) {
        emit(&line)?;
    }
    Ok(())
}

/// The result as a person reads it: one line per group, then whether it
/// is exact, who was asked and what became of them, and the noise.
fn result_lines(result: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(error) = result.get("error").and_then(Value::as_str) {
        lines.push(format!("error: {error}"));
    }
    let groups = result["groups"].as_array().cloned().unwrap_or_default();
    let intervals = result["noise"]["intervals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if groups.is_empty() {
        lines.push("no groups: nothing matched, or nobody answered".to_owned());
    }
    for (i, group) in groups.iter().enumerate() {
        let key = match group["key"].as_object() {
            Some(key) if !key.is_empty() => key
                .iter()
                .map(|(k, v)| format!("{k}={}", compact(v)))
                .collect::<Vec<_>>()
                .join(" "),
            _ => "(all)".to_owned(),
        };
        let ranges = intervals.get(i).map(|g| &g["values"]);
        let values = group["values"]
            .as_object()
            .map(|values| {
                values
                    .iter()
                    .map(|(name, v)| {
                        let range = ranges
                            .and_then(|r| r.get(name))
                            .filter(|r| !r.is_null())
                            .map(|r| format!(" {}", compact(r)))
                            .unwrap_or_default();
                        format!("{name}={}{range}", compact(v))
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
            })
            .unwrap_or_default();
        lines.push(format!("{key}  {values}"));
    }
    let exact = match result["exact"].as_bool() {
        Some(true) => "yes",
        Some(false) => "no (noisy)",
        None => "-",
    };
    lines.push(format!("exact        {exact}"));
    let c = &result["completeness"];
    if c.is_object() {
        let names = |key: &str| {
            let list: Vec<String> = c[key]
                .as_array()
                .map(|items| items.iter().map(name_of).collect())
                .unwrap_or_default();
            if list.is_empty() {
                "-".to_owned()
            } else {
                list.join(", ")
            }
        };
        lines.push(format!("asked        {}", names("asked")));
        lines.push(format!("answered     {}", names("answered")));
        lines.push(format!("declined     {}", names("declined")));
        lines.push(format!("timed out    {}", names("timed_out")));
        lines.push(format!("unreachable  {}", names("unreachable")));
    }
    let noise = &result["noise"];
    if noise.is_object() {
        lines.push(format!(
            "noise        {}; ε {} over {} account(s); [lo, hi] after a value is its {} interval",
            noise["mechanism"].as_str().unwrap_or("-"),
            compact(&noise["epsilon"]),
            compact(&noise["accounts"]),
            match noise["interval"].as_f64() {
                Some(p) => format!("{:.0} %", p * 100.0),
                None => "-".to_owned(),
            }
        ));
    }
    lines
}

/// A completeness entry: a name, or `{contact, reason}` as `name (reason)`.
fn name_of(item: &Value) -> String {
    match (item.as_str(), item["contact"].as_str()) {
        (Some(name), _) => name.to_owned(),
        (None, Some(name)) => format!("{name} ({})", item["reason"].as_str().unwrap_or("?")),
        (None, None) => compact(item),
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `hearth consent set|list|remove`.
pub(super) fn consent(backend: &Backend, global: &Global, action: ConsentAction) -> Result<()> {
    match action {
        ConsentAction::Set { collection, policy } => {
            let policy = parse_arg("the policy", &policy)?;
            let stored = backend.set_consent(&collection, &policy)?;
            if global.json {
                return emit_json(&stored);
            }
            emit(&consent_line(&stored))
        }
        ConsentAction::List => {
            let consents = backend.consents()?;
            if global.json {
                return emit_json(&Value::Array(consents));
            }
            if consents.is_empty() {
                return emit(
                    "no consent policies: no query is answered (`hearth consent --help` shows how to set one)",
                );
            }
            for c in &consents {
                emit(&consent_line(c))?;
            }
            Ok(())
        }
        ConsentAction::Remove { collection } => {
            let removed = backend.remove_consent(&collection)?;
            if global.json {
                return emit_json(
                    &serde_json::json!({ "collection": collection, "removed": removed }),
                );
            }
            emit(&format!(
                "removed {removed} consent polic{} of {collection}: it answers no query now",
                if removed == 1 { "y" } else { "ies" }
            ))
        }
    }
}

/// One stored consent: collection, queriers, exact or noisy terms.
fn consent_line(c: &Value) -> String {
    let p = &c["policy"];
    let queriers = match &p["queriers"] {
        Value::String(all) => format!("all {all}"),
        Value::Array(names) => names.iter().map(compact).collect::<Vec<_>>().join(", "),
        other => compact(other),
    };
    let terms = if p["exact"] == true {
        "exact".to_owned()
    } else {
        let budget = &p["budget"];
        format!(
            "noisy, ε {} per query, cohort {}{}",
            p.get("epsilon_per_query").map_or("1".to_owned(), compact),
            p.get("min_cohort").map_or("3".to_owned(), compact),
            if budget.is_object() {
                format!(
                    ", budget {} per querier and {} in all per day",
                    compact(&budget["per_querier_per_day"]),
                    compact(&budget["per_day"])
                )
            } else {
                String::new()
            }
        )
    };
    format!(
        "{}  for {queriers}  {terms}  (version {})",
        compact(&c["collection"]),
        c["version"]
            .as_str()
            .map_or("-", |v| v.get(..12).unwrap_or(v))
    )
}

/// `hearth audit`.
pub(super) fn audit(backend: &Backend, global: &Global) -> Result<()> {
    let records = backend.audit()?;
    if global.json {
        return emit_json(&Value::Array(records));
    }
    if records.is_empty() {
        return emit("no query was answered, declined or refused yet");
    }
    // Queriers by our names for them, where they are contacts.
    let names: std::collections::BTreeMap<String, String> = backend
        .contacts()
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.account_id.clone(), c.name.unwrap_or(c.card_name)))
        .collect();
    for r in &records {
        let querier = r["querier"].as_str().unwrap_or("-");
        let who = names
            .get(querier)
            .cloned()
            .unwrap_or_else(|| querier.get(..12).unwrap_or(querier).to_owned());
        let reason = r["reason"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("-");
        emit(&format!(
            "{}  {who:<16}  {:<8}  {reason}  ε {}  {}",
            utc(r["at"].as_i64().unwrap_or(0)),
            compact(&r["decision"]),
            compact(&r["epsilon"]),
            r["collection"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("-"),
        ))?;
    }
    Ok(())
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SSZ`.
fn utc(ms: i64) -> String {
    crate::utc::format(ms, ' ')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn utc_dates_are_civil_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_780_000_000_000), "2026-05-28 20:26:40Z");
    }

    #[test]
    fn a_noisy_result_reads_with_its_intervals_and_who_declined() {
        let result = json!({
            "groups": [{ "key": { "month": 1 }, "values": { "kwh": 120.5, "n": 3 } }],
            "exact": false,
            "completeness": { "asked": ["A", "D"], "answered": ["A"],
                "declined": [{ "contact": "D", "reason": "no-policy" }],
                "timed_out": [], "unreachable": [] },
            "noise": { "mechanism": "discrete Laplace", "epsilon": 1.0, "accounts": 2,
                "interval": 0.95,
                "intervals": [{ "key": { "month": 1 }, "values": { "kwh": [20.0, 220.0], "n": [0, 6] } }] }
        });
        let lines = result_lines(&result);
        assert_eq!(lines[0], "month=1  kwh=120.5 [20.0,220.0]  n=3 [0,6]");
        assert!(
            lines.contains(&"exact        no (noisy)".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"declined     D (no-policy)".to_owned()),
            "{lines:?}"
        );
        assert!(lines.contains(&"timed out    -".to_owned()), "{lines:?}");
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("noise        discrete Laplace; ε 1.0 over 2"),
            "{lines:?}"
        );
    }
}
