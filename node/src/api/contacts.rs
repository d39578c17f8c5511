//! `/_hearth/contacts*` routes: this account's card, the contact list, and
//! adding, accepting and removing contacts.
//!
//! | route | what |
//! |---|---|
//! | `GET /_hearth/contacts/card` | `{card, qr, account_id, name, addrs}` |
//! | `GET /_hearth/contacts` | every contact, with its devices and whether each is online |
//! | `POST /_hearth/contacts` `{card, name}` | verify and add a card (or accept its request) |
//! | `GET /_hearth/contacts/{name or account}` | one contact |
//! | `POST /_hearth/contacts/{name or account}/accept` `{name}` | accept a pending request |
//! | `DELETE /_hearth/contacts/{name or account}` | remove a contact |

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hearth_crypto::card::Card;
use serde::Deserialize;
use serde_json::json;

use super::mesh::json_body;
use super::{ApiError, ApiResult, AppState};
use crate::engine::ContactInfo;

/// This account's contact card.
pub(super) async fn card(State(state): State<AppState>) -> ApiResult {
    let card = state.handle.card().await?;
    let addrs: Vec<_> = card
        .addrs()
        .iter()
        .map(|(d, a)| json!({ "device": d.to_string(), "addrs": a }))
        .collect();
    Ok(Json(json!({
        "card": card.encode(),
        "qr": card.qr_payload(),
        "account_id": card.account().to_string(),
        "name": card.name(),
        "addrs": addrs,
    }))
    .into_response())
}

/// The devices this node is connected to now.
async fn online(state: &AppState) -> HashSet<String> {
    match &state.mesh {
        Some(mesh) => mesh
            .net()
            .peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.connected)
            .map(|p| p.id.to_string())
            .collect(),
        None => HashSet::new(),
    }
}

fn mark_online(contact: &mut ContactInfo, online: &HashSet<String>) {
    for device in &mut contact.devices {
        device.online = online.contains(&device.id);
    }
}

pub(super) async fn list(State(state): State<AppState>) -> ApiResult {
    let mut contacts = state.handle.contacts().await?;
    let online = online(&state).await;
    for c in &mut contacts {
        mark_online(c, &online);
    }
    Ok(Json(contacts).into_response())
}

pub(super) async fn show(State(state): State<AppState>, Path(who): Path<String>) -> ApiResult {
    let mut contact = state.handle.contact(who).await?;
    mark_online(&mut contact, &online(&state).await);
    Ok(Json(contact).into_response())
}

#[derive(Deserialize)]
struct AddRequest {
    card: String,
    name: String,
}

pub(super) async fn add(State(state): State<AppState>, body: Bytes) -> ApiResult {
    let request: AddRequest = json_body(&body)?;
    let card = Card::decode(&request.card).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let contact = state.handle.add_contact(card, request.name).await?;
    Ok((StatusCode::CREATED, Json(contact)).into_response())
}

#[derive(Deserialize)]
struct AcceptRequest {
    name: String,
}

pub(super) async fn accept(
    State(state): State<AppState>,
    Path(who): Path<String>,
    body: Bytes,
) -> ApiResult {
    let request: AcceptRequest = json_body(&body)?;
    let contact = state.handle.accept_contact(who, request.name).await?;
    Ok(Json(contact).into_response())
}

pub(super) async fn remove(State(state): State<AppState>, Path(who): Path<String>) -> ApiResult {
    let contact = state.handle.remove_contact(who).await?;
    Ok(Json(json!({ "ok": true, "removed": contact })).into_response())
}
