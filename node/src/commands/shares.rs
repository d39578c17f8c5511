//! The share commands: `share`, `unshare` and `shares [accept|decline]`.
//!
//! Each goes through the API ([`Backend`]), so it gives the same answer
//! with or without a running daemon; only the daemon carries an offer or an
//! answer to the other side, and without it the message waits in the store.

use anyhow::Result;

use super::{emit, emit_json};
use crate::cli::{Global, SharesAction};
use crate::client::Backend;
use crate::engine::ShareInfo;

/// `hearth share <collection> <contact> --read|--write`.
pub(super) fn share(
    backend: &Backend,
    global: &Global,
    collection: &str,
    contact: &str,
    write: bool,
) -> Result<()> {
    let level = if write { "write" } else { "read" };
    let share = backend.share(collection, contact, level)?;
    emit(&share.id)?;
    if global.json {
        return emit_json(&serde_json::to_value(&share)?);
    }
    eprintln!(
        "{collection} shared with {contact} ({level}); it syncs once they run `hearth shares accept {}`",
        short(&share.id)
    );
    Ok(())
}

/// `hearth unshare <collection> <contact>`.
pub(super) fn unshare(
    backend: &Backend,
    global: &Global,
    collection: &str,
    contact: &str,
) -> Result<()> {
    let share = backend.unshare(collection, contact)?;
    if global.json {
        return emit_json(&serde_json::to_value(&share)?);
    }
    emit(&format!(
        "{contact} no longer has access to {collection}: nothing written from now on reaches its devices"
    ))
}

/// `hearth shares [accept|decline]`.
pub(super) fn shares(
    backend: &Backend,
    global: &Global,
    action: Option<SharesAction>,
) -> Result<()> {
    match action {
        Some(SharesAction::Accept { id, local }) => {
            let share = backend.accept_share(&id, local.as_deref())?;
            if global.json {
                return emit_json(&serde_json::to_value(&share)?);
            }
            emit(&format!(
                "accepted: {}'s {} is the collection {} here",
                share.owner,
                share.collection,
                share.local.as_deref().unwrap_or("?")
            ))
        }
        Some(SharesAction::Decline { id }) => {
            let share = backend.decline_share(&id)?;
            if global.json {
                return emit_json(&serde_json::to_value(&share)?);
            }
            emit(&format!("declined {}'s {}", share.owner, share.collection))
        }
        None => list(backend, global),
    }
}

fn list(backend: &Backend, global: &Global) -> Result<()> {
    let shares = backend.shares()?;
    if global.json {
        return emit_json(&serde_json::to_value(&shares)?);
    }
    if shares.is_empty() {
        return emit("no shares yet: `hearth share <collection> <contact> --read|--write`");
    }
    for s in &shares {
        line(s)?;
    }
    Ok(())
}

fn line(s: &ShareInfo) -> Result<()> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    if s.direction == "outgoing" {
        emit(&format!("{}  outgoing  {}", short(&s.id), s.collection))?;
        for m in &s.members {
            let level = text(&serde_json::to_value(m.level)?);
            let state = text(&serde_json::to_value(m.state)?);
            emit(&format!("    {:<16}  {:<5}  {state}", m.contact, level))?;
        }
        return Ok(());
    }
    let level = text(&serde_json::to_value(s.level)?);
    let state = text(&serde_json::to_value(s.state)?);
    let local = s
        .local
        .as_deref()
        .map(|l| format!("  as {l}"))
        .unwrap_or_default();
    emit(&format!(
        "{}  incoming  {} from {}  {level}  {state}{local}",
        short(&s.id),
        s.collection,
        s.owner
    ))
}

/// The first 12 characters of an id: enough to name a share.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
