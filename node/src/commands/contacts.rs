//! The contact commands: `contact card|add|accept|remove` and `contacts`.
//!
//! Each goes through the API ([`Backend`]), so it gives the same answer
//! with or without a running daemon; only the daemon can carry a request
//! to the other side, and without it the card waits in the store until
//! `hearth up` runs.

use std::io::Write;

use anyhow::{Result, anyhow};

use super::{emit, emit_json};
use crate::cli::{ContactAction, Global};
use crate::client::Backend;
use crate::engine::ContactInfo;
use crate::qr;

/// `hearth contact …`.
pub(super) fn contact(backend: &Backend, global: &Global, action: ContactAction) -> Result<()> {
    match action {
        ContactAction::Card { qr: png } => {
            let reply = backend.contact_card()?;
            let card = reply["card"]
                .as_str()
                .ok_or_else(|| anyhow!("the node answered without a card"))?;
            emit(card)?;
            if let Some(path) = &png {
                // The PNG holds the card exactly as printed, so any scanner
                // reads back the same text.
                qr::write_png(card, path)?;
            }
            if global.json {
                return emit_json(&reply);
            }
            emit(&qr::render_terminal(reply["qr"].as_str().unwrap_or(card))?)?;
            let mut err = std::io::stderr();
            if let Some(path) = &png {
                writeln!(err, "QR code written to {}", path.display())?;
            }
            if reply["addrs"].as_array().is_none_or(Vec::is_empty) {
                writeln!(
                    err,
                    "note: this card names no address; made while `hearth up` runs, it says where this device listens"
                )?;
            }
            writeln!(
                err,
                "on the other account: hearth contact add <card> --name NAME  (or --qr FILE.png)"
            )?;
            Ok(())
        }
        ContactAction::Add {
            card,
            qr: png,
            name,
        } => {
            let text = match (card, png) {
                (Some(text), _) => text,
                (None, Some(path)) => qr::read_png(&path)?,
                (None, None) => return Err(anyhow!("give a card or --qr FILE.png")),
            };
            let contact = backend.add_contact(text.trim(), &name)?;
            report(global, &contact, "added")
        }
        ContactAction::Accept { who, name } => {
            let contact = backend.accept_contact(&who, &name)?;
            report(global, &contact, "accepted")
        }
        ContactAction::Remove { who } => {
            let contact = backend.remove_contact(&who)?;
            if global.json {
                return emit_json(&serde_json::to_value(&contact)?);
            }
            emit(&format!(
                "removed {} ({}): its devices are refused from now on",
                contact.name.as_deref().unwrap_or(&contact.card_name),
                contact.account_id
            ))
        }
    }
}

fn report(global: &Global, contact: &ContactInfo, what: &str) -> Result<()> {
    if global.json {
        return emit_json(&serde_json::to_value(contact)?);
    }
    let name = contact.name.as_deref().unwrap_or(&contact.card_name);
    let state = match contact.state {
        hearth_crdt::node::contacts::State::Established => "established".to_string(),
        hearth_crdt::node::contacts::State::Pending => {
            "pending: our card is on its way; the contact is established once they add it".into()
        }
    };
    emit(&format!("{what} {name} ({}): {state}", contact.account_id))
}

/// `hearth contacts`.
pub(super) fn list(backend: &Backend, global: &Global) -> Result<()> {
    let contacts = backend.contacts()?;
    if global.json {
        return emit_json(&serde_json::to_value(&contacts)?);
    }
    if contacts.is_empty() {
        return emit("no contacts yet: `hearth contact card` prints this account's card");
    }
    for c in contacts {
        let state = match (c.state, c.direction) {
            (hearth_crdt::node::contacts::State::Established, _) => "established",
            (_, Some(hearth_crdt::node::contacts::Direction::Incoming)) => {
                "pending (asks to be added: hearth contact accept)"
            }
            _ => "pending (waiting for them to add our card)",
        };
        let name = match &c.name {
            Some(name) => name.clone(),
            None => format!("\"{}\"", c.card_name),
        };
        emit(&format!("{name:<16}  {}  {state}", c.account_id))?;
        for d in &c.devices {
            let online = if d.online { "online" } else { "offline" };
            emit(&format!("    {}  {:<16}  {online}", d.id, d.name))?;
        }
        for s in &c.shares {
            let level = s.level.map_or("no access", |l| {
                if l == hearth_crypto::acl::Level::Write {
                    "write"
                } else {
                    "read"
                }
            });
            let way = if s.direction == "outgoing" {
                "we share"
            } else {
                "shares with us"
            };
            let state = serde_json::to_value(s.state)?;
            emit(&format!(
                "    {way} {} ({level}, {})  {}",
                s.collection,
                state.as_str().unwrap_or_default(),
                &s.id[..12.min(s.id.len())]
            ))?;
        }
    }
    Ok(())
}
