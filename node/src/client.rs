//! How the CLI reaches the data: always through the HTTP API of
//! [`crate::api`], served by a running daemon or in-process.
//!
//! Each data operation below builds one HTTP request (method, path, JSON or
//! JSON Lines body) and [`Backend`] carries it. [`Backend::connect`] picks
//! how: if `<home>/api.addr` names an API that answers, the request goes over
//! HTTP to that daemon ([`Remote`]; the daemon owns the store, and redb
//! allows one process at a time); otherwise the CLI opens the store, runs an
//! engine and hands the same request to the same [`api::router`] in-process
//! with `tower::ServiceExt::oneshot` ([`Local`]). One function decodes the
//! reply either way, and an error reply's `detail` is the sentence the user
//! reads, so both paths give the same results and the same error messages by
//! construction, not by care.
//!
//! The mesh commands (`pair`, `join`, `devices`) are the exception: they need
//! the daemon's network, or, for `devices` without a daemon, call the engine
//! [`Handle`] directly.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use axum::body::Bytes;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, Request, StatusCode};
use rand::RngCore;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::engine::{CollectionInfo, Engine, ExportFormat, Handle, Running};
use crate::home::Home;
use crate::import;
use crate::store::Unlock;

/// Where the CLI's requests go.
#[derive(Debug)]
pub enum Backend {
    /// A running daemon's API, over HTTP.
    Remote(Remote),
    /// The API served in-process over an engine of this process.
    Local {
        /// The engine and the router over it.
        engine: Local,
        /// The runtime the router and the handle's futures run on.
        runtime: tokio::runtime::Runtime,
    },
}

/// A client of a running daemon's API.
pub struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// The API router over an engine this process runs.
pub struct Local {
    /// The engine's handle, for the mesh commands that have no route without
    /// the network.
    pub handle: Handle,
    running: Running,
    router: axum::Router,
    /// Guards the router as `<home>/api-token` guards the daemon's; nothing
    /// outside this process can reach it, but the request is the same.
    token: String,
}

// By hand, so that no debug output shows a token.
impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// Largest response the CLI reads: 1 GiB, enough for an export of a large
/// collection.
const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// Records per `_all_docs` page of [`Backend::list`].
const LIST_PAGE: usize = 10_000;

impl Backend {
    /// Connects to the daemon if one answers, else opens the store.
    pub fn connect(
        home: &Home,
        unlock: impl FnOnce() -> Result<Unlock>,
        config: &Config,
    ) -> Result<Self> {
        if let Some(remote) = Remote::find(home)? {
            return Ok(Backend::Remote(remote));
        }
        let running = Engine::open(home, unlock()?, config.engine.clone())?.spawn()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Backend::Local {
            engine: Local::new(running, config),
            runtime,
        })
    }

    /// Closes the backend; for a local engine, waits until the store is closed.
    pub fn close(self) {
        if let Backend::Local { engine, runtime } = self {
            let Local {
                handle,
                running,
                router,
                ..
            } = engine;
            drop((router, handle, runtime));
            running.stop_before_exit();
        }
    }

    /// The daemon's API address, when going through one.
    pub fn api(&self) -> Option<&str> {
        match self {
            Backend::Remote(r) => Some(&r.base),
            Backend::Local { .. } => None,
        }
    }

    /// Sends `request` wherever the API runs; the reply's body, or the
    /// error the API answered.
    fn call(&self, request: Request<Vec<u8>>) -> Result<Bytes> {
        let (status, body) = match self {
            Backend::Remote(r) => r.transport(request)?,
            Backend::Local { engine, runtime } => engine.transport(runtime, request)?,
        };
        decode(status, body)
    }

    fn call_json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = body
            .map(|b| Ok::<_, serde_json::Error>(("application/json", serde_json::to_vec(b)?)))
            .transpose()?;
        json_reply(&self.call(request(method, path, body)?)?)
    }

    fn get_json(&self, path: &str) -> Result<Value> {
        self.call_json(Method::GET, path, None)
    }

    fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        self.call_json(Method::POST, path, Some(body))
    }

    /// The node's status as the API answers it: [`crate::engine::Status`]'s
    /// fields, plus `network` and `pairing` from a daemon that runs the mesh.
    pub fn status(&self) -> Result<Value> {
        self.get_json("/_hearth/status")
    }

    /// Upserts one record; returns its id.
    pub fn put(&self, doctype: &str, id: Option<String>, mut body: Value) -> Result<String> {
        if let (Some(id), Some(map)) = (id, body.as_object_mut()) {
            map.insert("_id".into(), Value::String(id));
        }
        let body = serde_json::to_vec(&[body])?;
        let path = format!("/_hearth/import/{}?ids=true", encode(doctype));
        let reply = json_reply(&self.call(request(
            Method::POST,
            &path,
            Some((import::Format::Json.content_type(), body)),
        )?)?)?;
        reply["ids"][0]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("the API answered without the record's id"))
    }

    /// Upserts the records of `jsonl`, a JSON Lines body, in durable commits
    /// of `engine.import_batch` records; returns how many were written.
    pub fn import(&self, doctype: &str, jsonl: Vec<u8>) -> Result<u64> {
        let path = format!("/_hearth/import/{}", encode(doctype));
        let reply = json_reply(&self.call(request(
            Method::POST,
            &path,
            Some((import::Format::Jsonl.content_type(), jsonl)),
        )?)?)?;
        reply["imported"]
            .as_u64()
            .ok_or_else(|| anyhow!("the API answered without the number imported"))
    }

    /// One record.
    pub fn get(&self, doctype: &str, id: &str) -> Result<Value> {
        self.get_json(&format!("/data/{}/{}", encode(doctype), encode(id)))
    }

    /// Every record, ordered by id.
    pub fn list(&self, doctype: &str) -> Result<Vec<Value>> {
        let mut docs = Vec::new();
        loop {
            let mut page = self.get_json(&format!(
                "/data/{}/_all_docs?include_docs=true&skip={}&limit={LIST_PAGE}",
                encode(doctype),
                docs.len()
            ))?;
            let Value::Array(rows) = page["rows"].take() else {
                bail!("unexpected reply from the API: no rows");
            };
            if rows.is_empty() {
                return Ok(docs);
            }
            docs.extend(rows.into_iter().map(|mut r| r["doc"].take()));
        }
    }

    /// Deletes a record; returns the deletion's rev. Without `rev`, deletes
    /// whatever is current.
    pub fn delete(&self, doctype: &str, id: &str, rev: Option<String>) -> Result<String> {
        // The cozy route needs the current rev.
        let rev = match rev {
            Some(rev) => rev,
            None => {
                let current = self.get(doctype, id)?;
                current["_rev"].as_str().unwrap_or_default().to_string()
            }
        };
        let path = format!(
            "/data/{}/{}?rev={}",
            encode(doctype),
            encode(id),
            encode(&rev)
        );
        let reply = self.call_json(Method::DELETE, &path, None)?;
        Ok(reply["rev"].as_str().unwrap_or_default().to_string())
    }

    /// Mango find; `request` is a `_find` body. Follows the bookmark from
    /// page to page (each at most `api.max_page`) until the request's
    /// `limit`, or the last match, is reached.
    pub fn find(&self, doctype: &str, mut request: Value) -> Result<Vec<Value>> {
        let path = format!("/data/{}/_find", encode(doctype));
        let wanted = request.get("limit").and_then(Value::as_u64);
        let mut docs: Vec<Value> = Vec::new();
        loop {
            if let Some(wanted) = wanted {
                let got = u64::try_from(docs.len()).unwrap_or(u64::MAX);
                request["limit"] = json!(wanted.saturating_sub(got));
            }
            let mut page = self.post_json(&path, &request)?;
            let Value::Array(found) = page["docs"].take() else {
                bail!("unexpected reply from the API: no docs");
            };
            let last = found.is_empty() || page["next"] != true;
            docs.extend(found);
            let enough = wanted.is_some_and(|w| u64::try_from(docs.len()).unwrap_or(u64::MAX) >= w);
            if last || enough {
                return Ok(docs);
            }
            // The bookmark counts from the first match, skipped ones included.
            if let Some(map) = request.as_object_mut() {
                map.remove("skip");
                map.insert("bookmark".into(), page["bookmark"].take());
            }
        }
    }

    /// Grouped aggregate; `request` is an `_aggregate` body.
    pub fn aggregate(&self, doctype: &str, request: &Value) -> Result<Value> {
        self.post_json(&format!("/data/{}/_aggregate", encode(doctype)), request)
    }

    /// Declares an index; returns its name and whether it was created.
    pub fn index(
        &self,
        doctype: &str,
        name: Option<String>,
        fields: Vec<String>,
    ) -> Result<(String, bool)> {
        let mut body = json!({ "index": { "fields": fields } });
        if let Some(name) = name {
            body["name"] = Value::String(name);
        }
        let reply = self.post_json(&format!("/data/{}/_index", encode(doctype)), &body)?;
        Ok((
            reply["name"].as_str().unwrap_or_default().to_string(),
            reply["result"] == "created",
        ))
    }

    /// The account's devices.
    pub fn devices(&self) -> Result<Vec<crate::engine::Device>> {
        Ok(serde_json::from_value(self.get_json("/_hearth/devices")?)?)
    }

    /// Removes a device from the account for good.
    pub fn remove_device(&self, id: &str) -> Result<()> {
        self.call_json(
            Method::DELETE,
            &format!("/_hearth/devices/{}", encode(id)),
            None,
        )?;
        Ok(())
    }

    /// This account's contact card: `{card, qr, account_id, name, addrs}`.
    pub fn contact_card(&self) -> Result<Value> {
        self.get_json("/_hearth/contacts/card")
    }

    /// Every contact.
    pub fn contacts(&self) -> Result<Vec<crate::engine::ContactInfo>> {
        Ok(serde_json::from_value(self.get_json("/_hearth/contacts")?)?)
    }

    /// Adds a contact from its card.
    pub fn add_contact(&self, card: &str, name: &str) -> Result<crate::engine::ContactInfo> {
        let body = json!({ "card": card, "name": name });
        Ok(serde_json::from_value(
            self.post_json("/_hearth/contacts", &body)?,
        )?)
    }

    /// Accepts the pending request of `who`.
    pub fn accept_contact(&self, who: &str, name: &str) -> Result<crate::engine::ContactInfo> {
        let path = format!("/_hearth/contacts/{}/accept", encode(who));
        Ok(serde_json::from_value(
            self.post_json(&path, &json!({ "name": name }))?,
        )?)
    }

    /// Removes the contact `who`.
    pub fn remove_contact(&self, who: &str) -> Result<crate::engine::ContactInfo> {
        let path = format!("/_hearth/contacts/{}", encode(who));
        let reply = self.call_json(Method::DELETE, &path, None)?;
        Ok(serde_json::from_value(reply["removed"].clone())?)
    }

    /// Every share, outgoing and incoming.
    pub fn shares(&self) -> Result<Vec<crate::engine::ShareInfo>> {
        Ok(serde_json::from_value(self.get_json("/_hearth/shares")?)?)
    }

    /// Grants `contact` `level` (`read` or `write`) on `collection`.
    pub fn share(
        &self,
        collection: &str,
        contact: &str,
        level: &str,
    ) -> Result<crate::engine::ShareInfo> {
        let body = json!({ "collection": collection, "contact": contact, "level": level });
        Ok(serde_json::from_value(
            self.post_json("/_hearth/shares", &body)?,
        )?)
    }

    /// Revokes `contact` on `collection`.
    pub fn unshare(&self, collection: &str, contact: &str) -> Result<crate::engine::ShareInfo> {
        let path = format!("/_hearth/shares/{}/{}", encode(collection), encode(contact));
        Ok(serde_json::from_value(self.call_json(
            Method::DELETE,
            &path,
            None,
        )?)?)
    }

    /// Accepts the share `id` under `local` (or the default name).
    pub fn accept_share(&self, id: &str, local: Option<&str>) -> Result<crate::engine::ShareInfo> {
        let path = format!("/_hearth/shares/{}/accept", encode(id));
        Ok(serde_json::from_value(
            self.post_json(&path, &json!({ "as": local }))?,
        )?)
    }

    /// Declines the share `id`.
    pub fn decline_share(&self, id: &str) -> Result<crate::engine::ShareInfo> {
        let path = format!("/_hearth/shares/{}/decline", encode(id));
        Ok(serde_json::from_value(self.post_json(&path, &json!({}))?)?)
    }

    /// Runs a federated query (its JSON, as `hearth query` takes it) and
    /// returns its result as the API answers it.
    pub fn query(&self, body: &Value) -> Result<Value> {
        self.post_json("/_hearth/query", body)
    }

    /// Every consent policy.
    pub fn consents(&self) -> Result<Vec<Value>> {
        Ok(serde_json::from_value(self.get_json("/_hearth/consent")?)?)
    }

    /// Stores `policy` for `collection`; the stored consent.
    pub fn set_consent(&self, collection: &str, policy: &Value) -> Result<Value> {
        let path = format!("/_hearth/consent/{}", encode(collection));
        self.call_json(Method::PUT, &path, Some(policy))
    }

    /// Removes the consent policies of `collection`; how many there were.
    pub fn remove_consent(&self, collection: &str) -> Result<u64> {
        let path = format!("/_hearth/consent/{}", encode(collection));
        let reply = self.call_json(Method::DELETE, &path, None)?;
        reply["removed"]
            .as_u64()
            .ok_or_else(|| anyhow!("the API answered without the number removed"))
    }

    /// Every audit record, newest first.
    pub fn audit(&self) -> Result<Vec<Value>> {
        Ok(serde_json::from_value(self.get_json("/_hearth/audit")?)?)
    }

    /// Every collection.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        Ok(serde_json::from_value(
            self.get_json("/_hearth/collections")?,
        )?)
    }

    /// A collection's export.
    pub fn export(&self, doctype: &str, format: ExportFormat) -> Result<Bytes> {
        let format = match format {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Automerge => "automerge",
        };
        let path = format!("/_hearth/export/{}?format={format}", encode(doctype));
        self.call(request(Method::GET, &path, None)?)
    }
}

/// The request for `method` on `path` (with its query), carrying `body`
/// with its Content-Type. The transport adds where it goes and the token.
fn request(
    method: Method,
    path: &str,
    body: Option<(&'static str, Vec<u8>)>,
) -> Result<Request<Vec<u8>>> {
    let mut builder = Request::builder().method(method).uri(path);
    let body = match body {
        Some((content_type, bytes)) => {
            builder = builder.header(CONTENT_TYPE, content_type);
            bytes
        }
        None => Vec::new(),
    };
    builder
        .body(body)
        .with_context(|| format!("cannot build the API request for {path:?}"))
}

fn bearer(token: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the API token is not a valid header value")
}

/// The reply's body if the status is a success; else the error the API
/// gave: `detail` (then `reason`) of its error body, or its text.
fn decode(status: StatusCode, body: Bytes) -> Result<Bytes> {
    if status.is_success() {
        return Ok(body);
    }
    let detail = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("detail")
                .or_else(|| v.get("reason"))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    bail!("{detail}")
}

fn json_reply(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).context("the API sent malformed JSON")
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Local {
    fn new(running: Running, config: &Config) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let state = AppState::new(running.handle.clone(), token.clone(), config.api.clone())
            .with_import_batch(config.engine.import_batch);
        Self {
            handle: running.handle.clone(),
            running,
            router: api::router(state),
            token,
        }
    }

    /// Runs `request` through the router on `runtime`.
    fn transport(
        &self,
        runtime: &tokio::runtime::Runtime,
        request: Request<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(AUTHORIZATION, bearer(&self.token)?);
        let request = Request::from_parts(parts, axum::body::Body::from(body));
        runtime.block_on(async {
            let response = match self.router.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), MAX_RESPONSE_BYTES)
                .await
                .context("cannot read the API's reply")?;
            Ok((status, body))
        })
    }
}

impl Remote {
    /// The daemon of this home, if its API answers.
    pub fn find(home: &Home) -> Result<Option<Remote>> {
        let Ok(addr) = std::fs::read_to_string(home.api_addr_path()) else {
            return Ok(None);
        };
        let Ok(addr) = addr.trim().parse::<SocketAddr>() else {
            return Ok(None);
        };
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
            // A daemon killed with -9 leaves its address file behind.
            return Ok(None);
        }
        let token = std::fs::read_to_string(home.api_token_path()).with_context(|| {
            format!(
                "a daemon answers at {addr} but its token {} cannot be read",
                home.api_token_path().display()
            )
        })?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Ok(Some(Remote {
            base: format!("http://{addr}"),
            token: token.trim().to_string(),
            agent,
        }))
    }

    /// Sends `request` to the daemon; its status and body.
    fn transport(&self, request: Request<Vec<u8>>) -> Result<(StatusCode, Bytes)> {
        let (mut parts, body) = request.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = format!("{}{target}", self.base)
            .parse()
            .with_context(|| format!("cannot address {target:?} at {}", self.base))?;
        parts.headers.insert(AUTHORIZATION, bearer(&self.token)?);
        let sent = if body.is_empty() && matches!(parts.method, Method::GET | Method::DELETE) {
            self.agent.run(Request::from_parts(parts, ()))
        } else {
            self.agent.run(Request::from_parts(parts, body))
        };
        let mut response =
            sent.with_context(|| format!("cannot reach the daemon at {}", self.base))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(u64::try_from(MAX_RESPONSE_BYTES).unwrap_or(u64::MAX))
            .read_to_vec()
            .context("cannot read the daemon's reply")?;
        Ok((status, Bytes::from(body)))
    }

    /// The JSON reply to a GET of `path`.
    pub(crate) fn get(&self, path: &str) -> Result<Value> {
        let (status, body) = self.transport(request(Method::GET, path, None)?)?;
        json_reply(&decode(status, body)?)
    }

    /// Sends `body` with `method` (`POST`, `PUT` or `DELETE`, which sends no
    /// body) and returns the JSON reply. Any other method is refused before
    /// anything is sent.
    pub(crate) fn send(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        let (method, body) = match method {
            "DELETE" => (Method::DELETE, None),
            "PUT" => (
                Method::PUT,
                Some(("application/json", serde_json::to_vec(body)?)),
            ),
            "POST" => (
                Method::POST,
                Some(("application/json", serde_json::to_vec(body)?)),
            ),
            // Refused before any IO: a typo or a GET must not become a POST.
            other => bail!(
                "unsupported HTTP method {other:?} for the daemon's API; expected POST, PUT or DELETE"
            ),
        };
        let (status, body) = self.transport(request(method, path, body)?)?;
        json_reply(&decode(status, body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_refuses_an_unknown_method_before_any_io() {
        // A listener that never answers: a request sent to it would connect
        // (the kernel completes the handshake) and then time out.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let remote = Remote {
            base: format!("http://{}", listener.local_addr().unwrap()),
            token: "token".into(),
            agent,
        };
        for method in ["PATCH", "GET", "post", ""] {
            let err = remote
                .send(method, "/data/notes/_find", &json!({"selector": {}}))
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "unsupported HTTP method {method:?} for the daemon's API; expected POST, PUT or DELETE"
                )
            );
        }
        // Nothing connected, so nothing was sent.
        let accepted = listener.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "send opened a connection: {accepted:?}"
        );
    }

    #[test]
    fn an_error_reply_reads_as_its_detail() {
        let body = Bytes::from_static(
            br#"{"status":"404","error":"not_found","reason":"missing","detail":"no record \"x\" in c"}"#,
        );
        let err = decode(StatusCode::NOT_FOUND, body).unwrap_err();
        assert_eq!(err.to_string(), "no record \"x\" in c");
        let err = decode(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"internal error"),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "internal error");
        assert_eq!(
            decode(StatusCode::OK, Bytes::from_static(b"{}")).unwrap(),
            "{}"
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("io.cozy.notes"), "io.cozy.notes");
        assert_eq!(encode("Bad Name/é"), "Bad%20Name%2F%C3%A9");
    }
}
