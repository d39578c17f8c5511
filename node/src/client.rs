//! How the CLI reaches the data: through a running daemon's API, or by opening
//! the store itself when no daemon runs.
//!
//! [`Backend::connect`] picks: if `<home>/api.addr` names an API that answers,
//! the CLI is a [`Remote`] client of it (the daemon owns the store and redb
//! allows one process at a time); otherwise it opens the store and runs an
//! engine in-process ([`Backend::Local`]). Both paths give the same results
//! and the same error messages.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hearth_crdt::collection::PutMode;
use hearth_crdt::query::{AggregateRequest, FindRequest};
use serde_json::{Value, json};

use crate::config::Config;
use crate::engine::{self, CollectionInfo, Engine, ExportFormat, Running, Status};
use crate::home::Home;
use crate::store::Unlock;

/// Where the CLI's commands go.
#[derive(Debug)]
pub enum Backend {
    /// A running daemon.
    Remote(Remote),
    /// An in-process engine over the store.
    Local {
        /// The engine.
        engine: Running,
        /// The runtime the handle's futures run on.
        runtime: tokio::runtime::Runtime,
    },
}

/// A client of a running daemon's API.
#[derive(Debug)]
pub struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// Largest response the CLI reads from the daemon: 1 GiB, enough for an
/// export of a large collection.
const MAX_RESPONSE_BYTES: u64 = 1 << 30;

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
        let engine = Engine::open(home, unlock()?, config.engine.clone())?.spawn()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Backend::Local { engine, runtime })
    }

    /// Closes the backend; for a local engine, waits until the store is closed.
    pub fn close(self) {
        if let Backend::Local { engine, runtime } = self {
            drop(runtime);
            engine.stop_before_exit();
        }
    }

    /// The daemon's API address, when going through one.
    pub fn api(&self) -> Option<&str> {
        match self {
            Backend::Remote(r) => Some(&r.base),
            Backend::Local { .. } => None,
        }
    }

    /// Node status.
    pub fn status(&self) -> Result<Status> {
        match self {
            Backend::Local { engine, runtime } => Ok(runtime.block_on(engine.handle.status())?),
            Backend::Remote(r) => Ok(serde_json::from_value(r.get("/_hearth/status")?)?),
        }
    }

    /// Upserts one record; returns its id.
    pub fn put(&self, doctype: &str, id: Option<String>, mut body: Value) -> Result<String> {
        match self {
            Backend::Local { engine, runtime } => {
                let put = engine.handle.put(doctype, id, body, PutMode::Upsert);
                Ok(runtime.block_on(put)?.id)
            }
            Backend::Remote(_) => {
                if let (Some(id), Some(map)) = (id, body.as_object_mut()) {
                    map.insert("_id".into(), Value::String(id));
                }
                self.put_many(doctype, vec![body])?
                    .into_iter()
                    .next()
                    .ok_or_else(|| anyhow!("the daemon wrote nothing"))
            }
        }
    }

    /// Upserts many records in one durable commit; returns their ids.
    pub fn put_many(&self, doctype: &str, records: Vec<Value>) -> Result<Vec<String>> {
        match self {
            Backend::Local { engine, runtime } => {
                let written = runtime.block_on(engine.handle.put_many(doctype, records))?;
                Ok(written.into_iter().map(|(id, _)| id).collect())
            }
            Backend::Remote(r) => {
                let path = format!("/_hearth/import/{doctype}");
                let reply = r.send("POST", &path, &Value::Array(records))?;
                let ids = reply
                    .as_array()
                    .ok_or_else(|| anyhow!("unexpected reply from the daemon"))?
                    .iter()
                    .filter_map(|w| w.get("id").and_then(Value::as_str).map(String::from))
                    .collect();
                Ok(ids)
            }
        }
    }

    /// One record.
    pub fn get(&self, doctype: &str, id: &str) -> Result<Value> {
        match self {
            Backend::Local { engine, runtime } => {
                Ok(runtime.block_on(engine.handle.get(doctype, id))?)
            }
            Backend::Remote(r) => r.get(&format!("/data/{doctype}/{}", encode(id))),
        }
    }

    /// Every record, ordered by id.
    pub fn list(&self, doctype: &str) -> Result<Vec<Value>> {
        match self {
            Backend::Local { engine, runtime } => {
                let list = engine.handle.list(doctype, 0, usize::MAX);
                Ok(runtime.block_on(list)?.0)
            }
            Backend::Remote(r) => {
                let mut docs = Vec::new();
                loop {
                    let mut page = r.get(&format!(
                        "/data/{doctype}/_all_docs?include_docs=true&skip={}&limit=10000",
                        docs.len()
                    ))?;
                    let Value::Array(rows) = page["rows"].take() else {
                        bail!("unexpected reply from the daemon");
                    };
                    if rows.is_empty() {
                        return Ok(docs);
                    }
                    docs.extend(rows.into_iter().map(|mut r| r["doc"].take()));
                }
            }
        }
    }

    /// Deletes a record; returns the deletion's rev.
    pub fn delete(&self, doctype: &str, id: &str, rev: Option<String>) -> Result<String> {
        match self {
            Backend::Local { engine, runtime } => Ok(runtime
                .block_on(engine.handle.delete(doctype, id, rev))?
                .rev),
            Backend::Remote(r) => {
                // The cozy route needs the current rev; without one given,
                // delete whatever is current, as the local path does.
                let rev = match rev {
                    Some(rev) => rev,
                    None => {
                        let current = self.get(doctype, id)?;
                        current["_rev"].as_str().unwrap_or_default().to_string()
                    }
                };
                let path = format!("/data/{doctype}/{}?rev={}", encode(id), encode(&rev));
                let reply = r.send("DELETE", &path, &Value::Null)?;
                Ok(reply["rev"].as_str().unwrap_or_default().to_string())
            }
        }
    }

    /// Mango find; `request` is a `_find` body.
    pub fn find(&self, doctype: &str, request: Value) -> Result<Vec<Value>> {
        // Parsed on both paths, so a bad selector reads the same either way.
        let parsed = FindRequest::parse(&request).map_err(engine::Error::from)?;
        match self {
            Backend::Local { engine, runtime } => {
                Ok(runtime.block_on(engine.handle.find(doctype, parsed))?.docs)
            }
            Backend::Remote(r) => {
                let mut reply = r.send("POST", &format!("/data/{doctype}/_find"), &request)?;
                match reply["docs"].take() {
                    Value::Array(docs) => Ok(docs),
                    _ => bail!("unexpected reply from the daemon"),
                }
            }
        }
    }

    /// Grouped aggregate.
    pub fn aggregate(&self, doctype: &str, request: Value) -> Result<Value> {
        let parsed = AggregateRequest::parse(&request).map_err(engine::Error::from)?;
        match self {
            Backend::Local { engine, runtime } => {
                Ok(runtime.block_on(engine.handle.aggregate(doctype, parsed))?)
            }
            Backend::Remote(r) => r.send("POST", &format!("/data/{doctype}/_aggregate"), &request),
        }
    }

    /// Declares an index; returns its name and whether it was created.
    pub fn index(
        &self,
        doctype: &str,
        name: Option<String>,
        fields: Vec<String>,
    ) -> Result<(String, bool)> {
        match self {
            Backend::Local { engine, runtime } => {
                Ok(runtime.block_on(engine.handle.define_index(doctype, name, fields))?)
            }
            Backend::Remote(r) => {
                let mut body = json!({ "index": { "fields": fields } });
                if let Some(name) = name {
                    body["name"] = Value::String(name);
                }
                let reply = r.send("POST", &format!("/data/{doctype}/_index"), &body)?;
                Ok((
                    reply["name"].as_str().unwrap_or_default().to_string(),
                    reply["result"] == "created",
                ))
            }
        }
    }

    /// Every collection.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        match self {
            Backend::Local { engine, runtime } => {
                Ok(runtime.block_on(engine.handle.collections())?)
            }
            Backend::Remote(r) => Ok(serde_json::from_value(r.get("/_hearth/collections")?)?),
        }
    }

    /// A collection's export.
    pub fn export(&self, doctype: &str, format: ExportFormat) -> Result<Vec<u8>> {
        match self {
            Backend::Local { engine, runtime } => {
                Ok(runtime.block_on(engine.handle.export(doctype, format))?)
            }
            Backend::Remote(r) => {
                let format = match format {
                    ExportFormat::Jsonl => "jsonl",
                    ExportFormat::Automerge => "automerge",
                };
                r.get_bytes(&format!("/_hearth/export/{doctype}?format={format}"))
            }
        }
    }
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

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub(crate) fn get(&self, path: &str) -> Result<Value> {
        let bytes = self.get_bytes(path)?;
        serde_json::from_slice(&bytes).context("the daemon sent malformed JSON")
    }

    fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", &self.auth())
            .call()
            .with_context(|| format!("cannot reach the daemon at {}", self.base))?;
        read(response)
    }

    /// Sends `body` with `method` (`POST`, `PUT` or `DELETE`, which sends no
    /// body) and returns the JSON reply. Any other method is refused before
    /// anything is sent.
    pub(crate) fn send(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = self.auth();
        let response = match method {
            "DELETE" => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            "PUT" => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(body),
            "POST" => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(body),
            // Refused before any IO: a typo or a GET must not become a POST.
            other => bail!(
                "unsupported HTTP method {other:?} for the daemon's API; expected POST, PUT or DELETE"
            ),
        }
        .with_context(|| format!("cannot reach the daemon at {}", self.base))?;
        let bytes = read(response)?;
        serde_json::from_slice(&bytes).context("the daemon sent malformed JSON")
    }
}

fn read(mut response: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>> {
    let status = response.status();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .context("cannot read the daemon's reply")?;
    if status.is_success() {
        return Ok(bytes);
    }
    let detail = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("detail")
                .or_else(|| v.get("reason"))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    bail!("{detail}")
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
}
