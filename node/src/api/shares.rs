//! `/_hearth/shares*` routes: collections shared with contacts, granted,
//! revoked, accepted and declined.
//!
//! | route | what |
//! |---|---|
//! | `GET /_hearth/shares` | every share, outgoing and incoming, with its members |
//! | `POST /_hearth/shares` `{collection, contact, level}` | grant `read` or `write` (again: change the level) |
//! | `DELETE /_hearth/shares/{collection}/{contact}` | revoke |
//! | `POST /_hearth/shares/{id}/accept` `{as}` | accept an offer, under a local name (`as` optional) |
//! | `POST /_hearth/shares/{id}/decline` | decline an offer |

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hearth_crypto::acl::Level;
use serde::Deserialize;

use super::mesh::json_body;
use super::{ApiResult, AppState};

pub(super) async fn list(State(state): State<AppState>) -> ApiResult {
    Ok(Json(state.handle.shares().await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    collection: String,
    contact: String,
    level: Level,
}

pub(super) async fn grant(State(state): State<AppState>, body: Bytes) -> ApiResult {
    let request: GrantRequest = json_body(&body)?;
    let share = state
        .handle
        .share(request.collection, request.contact, request.level)
        .await?;
    Ok((StatusCode::CREATED, Json(share)).into_response())
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    Path((collection, contact)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(state.handle.unshare(collection, contact).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AcceptRequest {
    #[serde(default, rename = "as")]
    local: Option<String>,
}

pub(super) async fn accept(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let request: AcceptRequest = if body.iter().all(u8::is_ascii_whitespace) {
        AcceptRequest::default()
    } else {
        json_body(&body)?
    };
    Ok(Json(state.handle.accept_share(id, request.local).await?).into_response())
}

pub(super) async fn decline(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(state.handle.decline_share(id).await?).into_response())
}
