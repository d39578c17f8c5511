//! `/_hearth/*` routes of the mesh: status with the network, devices, and
//! pairing invitations.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use hearth_crdt::node::pairing;
use hearth_crypto::identity::DeviceId;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, AppState};
use crate::mesh::Mesh;

pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad json: {e}")))
}

/// The node's dialable listen addresses, as text.
async fn listen_addrs(mesh: &Mesh) -> Vec<String> {
    mesh.net()
        .listen_addrs()
        .await
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn mesh(state: &AppState) -> Result<&Mesh, ApiError> {
    state.mesh.as_ref().ok_or(ApiError::NoNetwork)
}

/// The engine's status plus, when the network runs, its listen addresses,
/// connected devices and any open invitation.
pub(super) async fn status(State(state): State<AppState>) -> ApiResult {
    let mut status = serde_json::to_value(state.handle.status().await?)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let Some(mesh) = &state.mesh {
        let listen = listen_addrs(mesh).await;
        let connected: Vec<String> = mesh
            .net()
            .peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.connected && mesh.admission().is_member(&p.id))
            .map(|p| p.id.to_string())
            .collect();
        status["network"] = json!({
            "listen": listen,
            "connected": connected,
            "mdns": mesh.mdns(),
        });
        if let Some(pending) = mesh.invitations().status().await {
            status["pairing"] = json!({
                "joiner": pending.joiner.map(|d| d.to_string()),
                "name": pending.name,
                "code_needed": pending.code_needed,
                "expires_at_ms": pending.expires_at_ms,
            });
        }
    }
    Ok(Json(status).into_response())
}

pub(super) async fn devices(State(state): State<AppState>) -> ApiResult {
    Ok(Json(state.handle.devices().await?).into_response())
}

fn parse_device(id: &str) -> Result<DeviceId, ApiError> {
    id.parse()
        .map_err(|e| ApiError::BadRequest(format!("bad device id {id:?}: {e}")))
}

pub(super) async fn remove_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    let device = parse_device(&id)?;
    state.handle.remove_device(device).await?;
    Ok(Json(json!({ "ok": true, "removed": id })).into_response())
}

#[derive(Deserialize)]
struct OpenRequest {
    ttl_secs: Option<u64>,
}

/// Opens a one-time invitation and returns its ticket.
pub(super) async fn pair_open(State(state): State<AppState>, body: Bytes) -> ApiResult {
    let mesh = mesh(&state)?;
    let request: OpenRequest = if body.is_empty() {
        OpenRequest { ttl_secs: None }
    } else {
        json_body(&body)?
    };
    let ttl = request.ttl_secs.unwrap_or(pairing::DEFAULT_TTL_S);
    let addrs = listen_addrs(mesh).await;
    let invitation = state.handle.invite(ttl, addrs).await?;
    let expires_at_ms = invitation.expires_at_ms();
    let body = json!({
        "ticket": invitation.encode(),
        "qr": invitation.qr_payload(),
        "expires_at_ms": expires_at_ms,
        "addrs": invitation.addrs(),
    });
    mesh.open_invitation(&invitation);
    Ok(Json(body).into_response())
}

/// The open invitation, if any: who is pairing and whether a code is awaited.
pub(super) async fn pair_status(State(state): State<AppState>) -> ApiResult {
    let mesh = mesh(&state)?;
    let body = match mesh.invitations().status().await {
        Some(p) => json!({
            "open": true,
            "joiner": p.joiner.map(|d| d.to_string()),
            "name": p.name,
            "code_needed": p.code_needed,
            "expires_at_ms": p.expires_at_ms,
        }),
        None => json!({ "open": false, "outcome": mesh.last_outcome().await }),
    };
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
struct ConfirmRequest {
    code: String,
}

/// Confirms the check code, then waits until the new device has its welcome.
pub(super) async fn pair_confirm(State(state): State<AppState>, body: Bytes) -> ApiResult {
    let mesh = mesh(&state)?;
    let request: ConfirmRequest = json_body(&body)?;
    mesh.invitations()
        .confirm(request.code.trim())
        .await
        .map_err(ApiError::Pairing)?;
    let wait = Duration::from_secs(state.config.pair_confirm_wait_secs);
    let outcome = tokio::time::timeout(wait, mesh.invitations().wait())
        .await
        .ok()
        .flatten();
    let response: Response = match outcome {
        Some(crate::pairing::Outcome::Joined(joined)) => Json(json!({
            "ok": true,
            "device": joined.device.to_string(),
            "name": joined.name,
        }))
        .into_response(),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "the code was right, but pairing did not finish: {}",
                crate::mesh::describe(&other)
            )));
        }
        None => {
            return Err(ApiError::BadRequest(
                "the code was right, but the new device did not take its welcome in time".into(),
            ));
        }
    };
    Ok(response)
}
