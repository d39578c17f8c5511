//! The local HTTP API.
//!
//! It serves on loopback with a bearer token (`<home>/api-token`). The
//! `/data/{doctype}/…` routes follow cozy-stack's data-system API (JSON shapes,
//! `_id`/`_rev` semantics and status codes), so a client written for
//! cozy-stack works against `hearth up` unchanged. `/_hearth/…` routes carry
//! what the `hearth` CLI needs beyond that (status, bulk import, export,
//! contacts, shares, federated queries, consent and audit).
//!
//! The CLI speaks only this API, to the daemon over HTTP or, with no daemon,
//! to a [`router`] it serves in-process (see [`crate::client`]), so a route is
//! the one place where each operation is written.
//!
//! Every handler is a thin translation onto the engine [`Handle`]; errors go
//! through one [`ApiError`], which says what was wrong for client errors and
//! logs internal ones behind a plain 500.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hearth_crdt::collection::{self, PutMode};
use hearth_crdt::node;
use hearth_crdt::query::{AggregateRequest, FindRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{ApiConfig, EngineConfig};
use crate::engine::{self, ExportFormat, Handle};
use crate::import;

/// Shared state of every request.
#[derive(Debug, Clone)]
pub struct AppState {
    handle: Handle,
    token: Arc<str>,
    config: ApiConfig,
    /// Records per engine write of `POST /_hearth/import/…`.
    import_batch: usize,
    mesh: Option<crate::mesh::Mesh>,
}

impl AppState {
    /// A page size as asked (else the largest), capped at `api.max_page`.
    fn page(&self, asked: Option<usize>) -> usize {
        asked.map_or(self.config.max_page, |n| n.min(self.config.max_page))
    }

    /// State for a router serving `handle`, guarded by `token`.
    pub fn new(handle: Handle, token: String, config: ApiConfig) -> Self {
        Self {
            handle,
            token: token.into(),
            config,
            import_batch: EngineConfig::default().import_batch,
            mesh: None,
        }
    }

    /// The same, writing imports `n` records per durable commit
    /// (`engine.import_batch`; without this call, its default), at least one
    /// and at most the core's [`collection::MAX_BATCH_RECORDS`].
    pub fn with_import_batch(mut self, n: usize) -> Self {
        self.import_batch = n.clamp(1, collection::MAX_BATCH_RECORDS);
        self
    }

    /// The same, with the mesh (network and pairing) that `hearth up` runs.
    pub fn with_mesh(mut self, mesh: crate::mesh::Mesh) -> Self {
        self.mesh = Some(mesh);
        self
    }
}

mod contacts;
mod mesh;
mod queries;
mod shares;

/// The one error type of every handler.
#[derive(Debug)]
pub enum ApiError {
    /// No or wrong bearer token.
    Unauthorized,
    /// The request body or a parameter is malformed.
    BadRequest(String),
    /// The engine refused or failed.
    Engine(engine::Error),
    /// The request needs the network, which this server does not run.
    NoNetwork,
    /// Pairing refused the request.
    Pairing(crate::pairing::Error),
    /// An import body that cannot be read as records.
    Import(import::Error),
    /// An import body of a type the route does not read; the type sent.
    UnsupportedMediaType(Option<String>),
}

impl From<engine::Error> for ApiError {
    fn from(e: engine::Error) -> Self {
        ApiError::Engine(e)
    }
}

/// A CouchDB-style error body (`error`, `reason`, as cozy-stack relays them)
/// plus `detail`, the full sentence the CLI shows.
fn error_body(status: StatusCode, error: &str, reason: &str, detail: &str) -> Response {
    let body = json!({
        "status": status.as_u16().to_string(),
        "error": error,
        "reason": reason,
        "detail": detail,
    });
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized => {
                let why = "missing or wrong bearer token (see <home>/api-token)";
                error_body(StatusCode::UNAUTHORIZED, "unauthorized", why, why)
            }
            ApiError::BadRequest(reason) => {
                error_body(StatusCode::BAD_REQUEST, "bad_request", &reason, &reason)
            }
            ApiError::NoNetwork => {
                let why = "this needs the network of a running `hearth up`";
                error_body(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why, why)
            }
            ApiError::Pairing(e) => {
                let d = e.to_string();
                error_body(StatusCode::CONFLICT, "pairing_refused", &d, &d)
            }
            ApiError::Import(e) => {
                let d = e.to_string();
                error_body(StatusCode::BAD_REQUEST, "bad_request", &d, &d)
            }
            ApiError::UnsupportedMediaType(sent) => {
                let d = format!(
                    "import reads a body of Content-Type application/x-ndjson, application/jsonl, \
                     application/json or text/csv; got {}",
                    sent.as_deref().unwrap_or("none")
                );
                error_body(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    &d,
                    &d,
                )
            }
            ApiError::Engine(engine::Error::Node(e)) => node_error(&e),
            ApiError::Engine(e @ engine::Error::NoAnswer { .. }) => {
                let d = e.to_string();
                error_body(StatusCode::GATEWAY_TIMEOUT, "timeout", &d, &d)
            }
            ApiError::Engine(e) => {
                tracing::error!(error = %e, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }
}

/// The response to a refusal of the node's core: always the client's doing.
fn node_error(e: &node::Error) -> Response {
    use node::Error as E;
    let d = e.to_string();
    match e {
        E::NotFound { .. } | E::NoCollection(_) | E::NotAMember(_) => {
            error_body(StatusCode::NOT_FOUND, "not_found", "missing", &d)
        }
        E::Record(collection::Error::Conflict { .. }) => error_body(
            StatusCode::CONFLICT,
            "conflict",
            "Document update conflict.",
            &d,
        ),
        E::TooLarge { .. } => error_body(StatusCode::PAYLOAD_TOO_LARGE, "too_large", &d, &d),
        E::Contact(node::ContactError::Unknown(_)) | E::Share(node::ShareError::Unknown(_)) => {
            error_body(StatusCode::NOT_FOUND, "not_found", "missing", &d)
        }
        E::Reserved(_) | E::Share(node::ShareError::ReadOnly { .. }) => {
            error_body(StatusCode::FORBIDDEN, "forbidden", &d, &d)
        }
        E::Share(node::ShareError::NameInUse(_)) => {
            error_body(StatusCode::CONFLICT, "conflict", &d, &d)
        }
        E::Queries(q) => {
            use node::QueryError as Q;
            match q {
                Q::NoConsent(_) => error_body(StatusCode::NOT_FOUND, "not_found", "missing", &d),
                Q::ReservedCollection(_) => error_body(StatusCode::FORBIDDEN, "forbidden", &d, &d),
                Q::NotEstablished(_) | Q::NoContacts => {
                    error_body(StatusCode::CONFLICT, "conflict", &d, &d)
                }
                Q::Busy(_) => {
                    error_body(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", &d, &d)
                }
                Q::Policy(_) => error_body(StatusCode::BAD_REQUEST, "bad_request", &d, &d),
            }
        }
        E::RemoveSelf
        | E::NotEmpty
        | E::Membership(_)
        | E::Contact(node::ContactError::NameTaken(_) | node::ContactError::Full(_)) => {
            error_body(StatusCode::CONFLICT, "conflict", &d, &d)
        }
        E::BadDoctype(_)
        | E::Record(_)
        | E::Query(_)
        | E::IndexExists { .. }
        | E::TooManyIndexes { .. }
        | E::Invite(_)
        | E::Contact(_)
        | E::Share(_)
        | E::Pairing(_) => error_body(StatusCode::BAD_REQUEST, "bad_request", &d, &d),
        E::Damaged { .. } => {
            tracing::error!(error = %e, "internal error");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let data = Router::new()
        .route("/data/{doctype}/", post(create))
        .route("/data/{doctype}", post(create))
        .route("/data/{doctype}/_find", post(find))
        .route("/data/{doctype}/_index", post(define_index))
        .route("/data/{doctype}/_aggregate", post(aggregate))
        .route(
            "/data/{doctype}/_all_docs",
            get(all_docs).post(all_docs_keys),
        )
        .route("/data/{doctype}/_normal_docs", get(normal_docs))
        .route("/data/{doctype}/_changes", get(changes))
        .route("/data/{doctype}/_bulk_docs", post(bulk_docs))
        .route("/data/{doctype}/_design_docs", get(design_docs))
        .route("/data/{doctype}/{id}", get(read).put(update).delete(remove))
        .route("/_hearth/status", get(mesh::status))
        .route("/_hearth/devices", get(mesh::devices))
        .route(
            "/_hearth/devices/{id}",
            axum::routing::delete(mesh::remove_device),
        )
        .route(
            "/_hearth/pair",
            post(mesh::pair_open).get(mesh::pair_status),
        )
        .route("/_hearth/pair/confirm", post(mesh::pair_confirm))
        .route("/_hearth/contacts", get(contacts::list).post(contacts::add))
        .route("/_hearth/contacts/card", get(contacts::card))
        .route(
            "/_hearth/contacts/{who}",
            get(contacts::show).delete(contacts::remove),
        )
        .route("/_hearth/contacts/{who}/accept", post(contacts::accept))
        .route("/_hearth/shares", get(shares::list).post(shares::grant))
        .route(
            "/_hearth/shares/{collection}/{contact}",
            axum::routing::delete(shares::revoke),
        )
        .route("/_hearth/shares/{id}/accept", post(shares::accept))
        .route("/_hearth/shares/{id}/decline", post(shares::decline))
        .route("/_hearth/query", post(queries::query))
        .route("/_hearth/consent", get(queries::consents))
        .route(
            "/_hearth/consent/{collection}",
            get(queries::consent)
                .put(queries::set_consent)
                .delete(queries::remove_consent),
        )
        .route("/_hearth/audit", get(queries::audit))
        .route("/_hearth/collections", get(collections))
        .route("/_hearth/import/{doctype}", post(import_records))
        .route("/_hearth/export/{doctype}", get(export));
    data.layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            state.config.max_concurrent_requests,
        ))
        .with_state(state)
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if same_secret(token.as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::Unauthorized.into_response(),
    }
}

fn parse_json(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad json: {e}")))
}

fn parse_object(body: &Bytes) -> ApiResult<Value> {
    let mut value = parse_json(body)?;
    let Some(map) = value.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "bad json: a record must be a JSON object".into(),
        ));
    };
    // Cozy clients send the doctype back as `_type`; cozy-stack never stores it.
    map.remove("_type");
    Ok(value)
}

fn written_body(doctype: &str, w: &collection::Written) -> Value {
    json!({
        "id": w.id,
        "rev": w.rev,
        "type": doctype,
        "ok": true,
        "data": w.after,
    })
}

async fn create(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut record = parse_object(&body)?;
    if let Some(map) = record.as_object_mut() {
        map.remove("_rev");
    }
    let w = state
        .handle
        .put(&doctype, None, record, PutMode::Create)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(written_body(&doctype, &w))).into_response())
}

async fn read(
    State(state): State<AppState>,
    Path((doctype, id)): Path<(String, String)>,
) -> ApiResult {
    let record = state.handle.get(&doctype, &id).await?;
    Ok(axum::Json(record).into_response())
}

async fn update(
    State(state): State<AppState>,
    Path((doctype, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let record = parse_object(&body)?;
    if let Some(body_id) = record.get("_id").and_then(Value::as_str)
        && body_id != id
    {
        return Err(ApiError::BadRequest(format!(
            "the body's _id {body_id:?} does not match the path's {id:?}"
        )));
    }
    let mode = match record.get("_rev").and_then(Value::as_str) {
        Some(rev) => PutMode::Update {
            expected_rev: rev.to_string(),
        },
        None => PutMode::Create,
    };
    let w = state.handle.put(&doctype, Some(id), record, mode).await?;
    Ok(axum::Json(written_body(&doctype, &w)).into_response())
}

#[derive(Debug, Deserialize)]
struct RevQuery {
    rev: Option<String>,
}

async fn remove(
    State(state): State<AppState>,
    Path((doctype, id)): Path<(String, String)>,
    Query(q): Query<RevQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let rev = q.rev.or_else(|| {
        headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim_matches('"').to_string())
    });
    let Some(rev) = rev else {
        return Err(ApiError::BadRequest(
            "delete needs the current revision: ?rev=… or an If-Match header".into(),
        ));
    };
    let w = state.handle.delete(&doctype, &id, Some(rev)).await?;
    Ok(axum::Json(json!({
        "id": w.id,
        "rev": w.rev,
        "type": doctype,
        "ok": true,
        "deleted": true,
    }))
    .into_response())
}

async fn find(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    body: Bytes,
) -> ApiResult {
    let value = parse_json(&body)?;
    let mut request = FindRequest::parse(&value).map_err(engine::Error::from)?;
    let limit = state.page(request.limit);
    request.limit = Some(limit);
    let found = state.handle.find(&doctype, request).await?;
    // As cozy-stack does: a full page may have a successor; the client asks
    // again with the bookmark and gets an empty page at the end.
    let next = found.docs.len() >= limit;
    Ok(axum::Json(json!({
        "docs": found.docs,
        "limit": limit,
        "next": next,
        "bookmark": found.bookmark,
        "execution_stats": {
            "total_docs_examined": found.examined,
            "index": found.index,
        },
    }))
    .into_response())
}

async fn aggregate(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    body: Bytes,
) -> ApiResult {
    let value = parse_json(&body)?;
    let request = AggregateRequest::parse(&value).map_err(engine::Error::from)?;
    let result = state.handle.aggregate(&doctype, request).await?;
    Ok(axum::Json(result).into_response())
}

async fn define_index(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    body: Bytes,
) -> ApiResult {
    let value = parse_json(&body)?;
    let fields = value
        .pointer("/index/fields")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::BadRequest("_index needs {\"index\": {\"fields\": [...]}}".into())
        })?
        .iter()
        .map(|f| match f {
            Value::String(s) => Ok(s.clone()),
            // CouchDB also accepts [{"field": "asc"}].
            Value::Object(m) if m.len() == 1 => Ok(m.keys().next().cloned().unwrap_or_default()),
            _ => Err(ApiError::BadRequest(format!(
                "_index fields must be strings, got {f}"
            ))),
        })
        .collect::<ApiResult<Vec<String>>>()?;
    if fields.is_empty() {
        return Err(ApiError::BadRequest(
            "_index needs at least one field".into(),
        ));
    }
    let name = value
        .get("name")
        .or_else(|| value.get("ddoc"))
        .and_then(Value::as_str)
        .map(String::from);
    let (name, created) = state.handle.define_index(&doctype, name, fields).await?;
    Ok(axum::Json(json!({
        "result": if created { "created" } else { "exists" },
        "id": format!("_design/{name}"),
        "name": name,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    include_docs: Option<bool>,
    limit: Option<usize>,
    skip: Option<usize>,
    /// A JSON array of ids, as CouchDB accepts on GET.
    keys: Option<String>,
}

async fn all_docs(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    if let Some(keys) = &q.keys {
        let keys: Value = serde_json::from_str(keys)
            .map_err(|e| ApiError::BadRequest(format!("bad keys parameter: {e}")))?;
        return rows_for_keys(&state, &doctype, &keys, q.include_docs.unwrap_or(false)).await;
    }
    let limit = state.page(q.limit);
    let skip = q.skip.unwrap_or(0);
    let (docs, total) = state.handle.list(&doctype, skip, limit).await?;
    let include = q.include_docs.unwrap_or(false);
    Ok(axum::Json(json!({
        "total_rows": total,
        "offset": skip,
        "rows": docs.iter().map(|d| row(d, include)).collect::<Vec<_>>(),
    }))
    .into_response())
}

fn row(doc: &Value, include: bool) -> Value {
    let id = doc.get("_id").cloned().unwrap_or(Value::Null);
    let rev = doc.get("_rev").cloned().unwrap_or(Value::Null);
    let mut row = json!({ "id": id, "key": id, "value": { "rev": rev } });
    if include && let Some(map) = row.as_object_mut() {
        map.insert("doc".into(), doc.clone());
    }
    row
}

async fn all_docs_keys(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    Query(q): Query<PageQuery>,
    body: Bytes,
) -> ApiResult {
    let value = parse_json(&body)?;
    let keys = value.get("keys").cloned().unwrap_or(Value::Null);
    rows_for_keys(&state, &doctype, &keys, q.include_docs.unwrap_or(false)).await
}

/// `_all_docs` rows for the given ids, in their order; a missing id gets an
/// error row, as CouchDB answers.
async fn rows_for_keys(state: &AppState, doctype: &str, keys: &Value, include: bool) -> ApiResult {
    let keys = keys
        .as_array()
        .ok_or_else(|| ApiError::BadRequest("_all_docs keys must be a JSON array of ids".into()))?;
    if keys.len() > state.config.max_page {
        return Err(ApiError::BadRequest(format!(
            "_all_docs takes at most {} keys",
            state.config.max_page
        )));
    }
    let ids = keys
        .iter()
        .map(|key| match key {
            Value::String(id) => Ok(id.clone()),
            other => Err(ApiError::BadRequest(format!(
                "keys must be strings, got {other}"
            ))),
        })
        .collect::<ApiResult<Vec<String>>>()?;
    let docs = state.handle.get_many(doctype, ids.clone()).await?;
    let rows: Vec<Value> = ids
        .iter()
        .zip(docs)
        .map(|(id, doc)| match doc {
            Some(doc) => row(&doc, include),
            None => json!({ "key": id, "error": "not_found" }),
        })
        .collect();
    Ok(axum::Json(json!({ "total_rows": rows.len(), "offset": 0, "rows": rows })).into_response())
}

async fn normal_docs(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    let limit = state.page(Some(q.limit.unwrap_or(100)));
    let skip = q.skip.unwrap_or(0);
    let (docs, total) = state.handle.list(&doctype, skip, limit).await?;
    Ok(axum::Json(json!({
        "rows": docs,
        "total_rows": total,
        "bookmark": "",
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    since: Option<String>,
    limit: Option<usize>,
    include_docs: Option<bool>,
}

async fn changes(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    Query(q): Query<ChangesQuery>,
) -> ApiResult {
    let limit = state.page(q.limit);
    let since = match q.since.as_deref().map(|s| s.trim_matches('"')) {
        None | Some("") | Some("0") => 0,
        Some("now") => u64::MAX,
        Some(s) => s
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "bad since {s:?}: expected a sequence from last_seq"
                ))
            })?,
    };
    let include_docs = q.include_docs.unwrap_or(false);
    let feed = if since == u64::MAX {
        let c = state.handle.changes(&doctype, 0, 0, false).await?;
        engine::Changes {
            results: Vec::new(),
            last_seq: c.last_seq,
            pending: 0,
        }
    } else {
        state
            .handle
            .changes(&doctype, since, limit, include_docs)
            .await?
    };
    let results: Vec<Value> = feed
        .results
        .iter()
        .map(|c| {
            let mut v = json!({
                "seq": c.seq.to_string(),
                "id": c.id,
                "changes": [{ "rev": c.rev }],
            });
            if let Some(map) = v.as_object_mut() {
                if c.deleted {
                    map.insert("deleted".into(), Value::Bool(true));
                    if include_docs {
                        map.insert(
                            "doc".into(),
                            json!({ "_id": c.id, "_rev": c.rev, "_deleted": true }),
                        );
                    }
                }
                if let Some(doc) = &c.doc {
                    map.insert("doc".into(), doc.clone());
                }
            }
            v
        })
        .collect();
    Ok(axum::Json(json!({
        "results": results,
        "last_seq": feed.last_seq.to_string(),
        "pending": feed.pending,
    }))
    .into_response())
}

async fn bulk_docs(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    body: Bytes,
) -> ApiResult {
    let value = parse_json(&body)?;
    let Some(Value::Array(docs)) = value.get("docs").cloned() else {
        return Err(ApiError::BadRequest(
            "_bulk_docs needs {\"docs\": [...]}".into(),
        ));
    };
    let mut cleaned = Vec::with_capacity(docs.len());
    for (n, mut doc) in docs.into_iter().enumerate() {
        let Some(map) = doc.as_object_mut() else {
            return Err(ApiError::BadRequest(format!(
                "doc {n} of _bulk_docs is not a JSON object"
            )));
        };
        map.remove("_type");
        cleaned.push(doc);
    }
    let results = state.handle.bulk(&doctype, cleaned).await?;
    let body: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(w) => json!({ "ok": true, "id": w.id, "rev": w.rev }),
            Err(engine::BulkError { id, error }) => {
                let (kind, reason) = match &error {
                    node::Error::Record(collection::Error::Conflict { .. }) => {
                        ("conflict", "Document update conflict.".to_string())
                    }
                    node::Error::NotFound { .. } => ("not_found", "missing".to_string()),
                    other => ("bad_request", other.to_string()),
                };
                json!({ "id": id, "error": kind, "reason": reason })
            }
        })
        .collect();
    Ok((StatusCode::CREATED, axum::Json(Value::Array(body))).into_response())
}

/// Declared indexes as CouchDB design documents of language "query", the
/// shape Cozy clients read to find an index for a query.
async fn design_docs(State(state): State<AppState>, Path(doctype): Path<String>) -> ApiResult {
    engine::check_doctype(&doctype).map_err(engine::Error::from)?;
    let collections = state.handle.collections().await?;
    let indexes = collections
        .into_iter()
        .find(|c| c.name == doctype)
        .map(|c| c.indexes)
        .unwrap_or_default();
    let rows: Vec<Value> = indexes
        .iter()
        .map(|index| {
            let id = format!("_design/{}", index.name);
            let fields: serde_json::Map<String, Value> = index
                .fields
                .iter()
                .map(|f| (f.clone(), Value::String("asc".into())))
                .collect();
            let rev = "1-0";
            json!({
                "id": id,
                "key": id,
                "value": { "rev": rev },
                "doc": {
                    "_id": id,
                    "_rev": rev,
                    "language": "query",
                    "views": {
                        index.name.clone(): {
                            "map": { "fields": fields, "partial_filter_selector": {} },
                            "reduce": "_count",
                            "options": { "def": { "fields": index.fields } },
                        }
                    }
                }
            })
        })
        .collect();
    Ok(axum::Json(json!({ "total_rows": rows.len(), "offset": 0, "rows": rows })).into_response())
}

async fn collections(State(state): State<AppState>) -> ApiResult {
    Ok(axum::Json(state.handle.collections().await?).into_response())
}

impl From<import::Error> for ApiError {
    fn from(e: import::Error) -> Self {
        ApiError::Import(e)
    }
}

#[derive(Debug, Deserialize)]
struct ImportQuery {
    /// Also answer the written ids, in the body's order.
    ids: Option<bool>,
}

/// `POST /_hearth/import/{doctype}`: upserts the records of a JSON Lines,
/// JSON or CSV body (by its Content-Type; see [`mod@crate::import`]), `import_batch`
/// records per durable commit, and answers `{"ok", "imported",
/// "collection"}`, plus `"ids"` with `?ids=true`.
///
/// The whole body is read once before anything is written, so a bad line
/// gets 400 naming it (`body:LINE: …`) and writes nothing. A refusal by the
/// engine (a record over `engine.max_record_bytes`) stops the import at its
/// batch; the batches before it stay written.
async fn import_records(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    engine::check_doctype(&doctype).map_err(engine::Error::from)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let Some(format) = content_type
        .as_deref()
        .and_then(import::Format::from_content_type)
    else {
        return Err(ApiError::UnsupportedMediaType(content_type));
    };
    let records = || import::Reader::new("body", format, &body[..], state.config.max_body_bytes);
    for record in records() {
        record?;
    }
    let with_ids = q.ids.unwrap_or(false);
    let mut ids = Vec::new();
    let mut imported = 0usize;
    let mut reader = records();
    loop {
        let batch = reader.next_batch(state.import_batch)?;
        if batch.is_empty() {
            break;
        }
        let written = state.handle.put_many(&doctype, batch).await?;
        imported += written.len();
        if with_ids {
            ids.extend(written.into_iter().map(|(id, _)| id));
        }
    }
    let mut reply = json!({ "ok": true, "imported": imported, "collection": doctype });
    if with_ids {
        reply["ids"] = json!(ids);
    }
    Ok(axum::Json(reply).into_response())
}

#[derive(Debug, Deserialize)]
struct ExportQuery {
    format: Option<ExportFormat>,
}

async fn export(
    State(state): State<AppState>,
    Path(doctype): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult {
    let bytes = state
        .handle
        .export(&doctype, q.format.unwrap_or(ExportFormat::Jsonl))
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
