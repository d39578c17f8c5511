//! `/_hearth/query`, `/_hearth/consent*` and `/_hearth/audit`: federated
//! queries asked from this node, the consent policies that say what it
//! answers, and the audit log of what it answered.
//!
//! | route | what |
//! |---|---|
//! | `POST /_hearth/query` (the query JSON) | runs it; the result JSON (`groups`, `exact`, `completeness`, `noise`) |
//! | `GET /_hearth/consent` | every consent policy: `collection`, `policy`, `version`, `set_at`, `id` |
//! | `GET /_hearth/consent/{collection}` | the policies of one collection |
//! | `PUT /_hearth/consent/{collection}` (the policy JSON) | stores it, replacing the one for the same queriers |
//! | `DELETE /_hearth/consent/{collection}` | removes the collection's policies: `{ok, removed}` |
//! | `GET /_hearth/audit` | every audit record of the account's devices, newest first |
//!
//! A query whose scope is not `local` needs the network of a running
//! `hearth up` (503 without it). A malformed query or policy is a 400 with
//! the core's sentence, a query that names a contact not established yet
//! a 409, a policy to remove that does not exist a 404.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use hearth_crdt::federated::FederatedQuery;
use hearth_crdt::node::QueryError;
use hearth_crdt::query::Scope;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, parse_json};
use crate::engine;

pub(super) async fn query(State(state): State<AppState>, body: Bytes) -> ApiResult {
    let body = parse_json(&body)?;
    let parsed = FederatedQuery::parse(&body).map_err(engine::Error::from)?;
    if parsed.scope != Scope::Local && state.mesh.is_none() {
        return Err(ApiError::NoNetwork);
    }
    Ok(Json(state.handle.query(body).await?).into_response())
}

pub(super) async fn consents(State(state): State<AppState>) -> ApiResult {
    Ok(Json(state.handle.consents().await?).into_response())
}

pub(super) async fn consent(
    State(state): State<AppState>,
    Path(collection): Path<String>,
) -> ApiResult {
    let of: Vec<Value> = state
        .handle
        .consents()
        .await?
        .into_iter()
        .filter(|c| c["collection"] == collection.as_str())
        .collect();
    if of.is_empty() {
        let e = hearth_crdt::node::Error::from(QueryError::NoConsent(collection));
        return Err(engine::Error::from(e).into());
    }
    Ok(Json(of).into_response())
}

pub(super) async fn set_consent(
    State(state): State<AppState>,
    Path(collection): Path<String>,
    body: Bytes,
) -> ApiResult {
    let policy = parse_json(&body)?;
    Ok(Json(state.handle.set_consent(collection, policy).await?).into_response())
}

pub(super) async fn remove_consent(
    State(state): State<AppState>,
    Path(collection): Path<String>,
) -> ApiResult {
    let removed = state.handle.remove_consent(collection.clone()).await?;
    Ok(Json(json!({ "ok": true, "collection": collection, "removed": removed })).into_response())
}

pub(super) async fn audit(State(state): State<AppState>) -> ApiResult {
    Ok(Json(state.handle.audit().await?).into_response())
}
