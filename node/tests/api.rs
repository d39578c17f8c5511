//! The HTTP API in-process: a router over a real engine on a temporary home,
//! driven with `tower::ServiceExt::oneshot`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hearth_node::api::{self, AppState};
use hearth_node::config::Config;
use hearth_node::engine::{Engine, Running};
use hearth_node::home::Home;
use hearth_node::store::Unlock;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "test-token";

struct Fixture {
    _dir: tempfile::TempDir,
    router: Router,
    engine: Option<Running>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            drop(std::mem::replace(&mut self.router, Router::new()));
            engine.stop();
        }
    }
}

fn fixture() -> Fixture {
    fixture_with(Config::default())
}

fn fixture_with(config: Config) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::resolve(Some(dir.path())).unwrap();
    home.ensure_dirs().unwrap();
    let kdf = hearth_crypto::wrap::KdfParams::default();
    Engine::init(&home, Unlock::KeyFile, kdf, "test", config.engine.clone()).unwrap();
    let engine = Engine::open(&home, Unlock::KeyFile, config.engine.clone())
        .unwrap()
        .spawn()
        .unwrap();
    let state = AppState::new(engine.handle.clone(), TOKEN.into(), config.api.clone())
        .with_import_batch(config.engine.import_batch);
    Fixture {
        _dir: dir,
        router: api::router(state),
        engine: Some(engine),
    }
}

impl Fixture {
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_raw(method, uri, body.map(|b| b.to_string()), Some(TOKEN))
            .await
    }

    async fn call_raw(
        &self,
        method: &str,
        uri: &str,
        body: Option<String>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        self.send(method, uri, Some("application/json"), body, token)
            .await
    }

    /// POSTs `body` to `uri` as `content_type` (none when `None`).
    async fn post_as(
        &self,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        self.send(
            "POST",
            uri,
            content_type,
            Some(body.to_string()),
            Some(TOKEN),
        )
        .await
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: Option<String>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let request = request
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }
}

#[tokio::test]
async fn requests_without_the_right_token_get_401() {
    let f = fixture();
    let (status, body) = f
        .call_raw("GET", "/data/io.cozy.notes/_all_docs", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = f
        .call_raw("GET", "/data/io.cozy.notes/_all_docs", None, Some("wrong"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn create_read_update_delete_follow_cozy_semantics() {
    let f = fixture();
    let (status, created) = f
        .call(
            "POST",
            "/data/io.cozy.notes/",
            Some(json!({"title": "a", "n": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["ok"], true);
    assert_eq!(created["type"], "io.cozy.notes");
    let id = created["id"].as_str().unwrap().to_string();
    let rev = created["rev"].as_str().unwrap().to_string();
    assert_eq!(created["data"]["_id"], id.as_str());
    assert_eq!(created["data"]["_rev"], rev.as_str());

    let (status, doc) = f
        .call("GET", &format!("/data/io.cozy.notes/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, json!({"_id": id, "_rev": rev, "title": "a", "n": 1}));

    // Update needs the current rev; a stale one gets 409.
    let (status, updated) = f
        .call(
            "PUT",
            &format!("/data/io.cozy.notes/{id}"),
            Some(json!({"_id": id, "_rev": rev, "title": "b"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let rev2 = updated["rev"].as_str().unwrap().to_string();
    assert_ne!(rev2, rev);
    assert!(rev2.starts_with("2-"));
    let (status, conflict) = f
        .call(
            "PUT",
            &format!("/data/io.cozy.notes/{id}"),
            Some(json!({"_id": id, "_rev": rev, "title": "c"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["error"], "conflict");
    // PUT without a rev on an existing record is a conflict, like CouchDB.
    let (status, _) = f
        .call(
            "PUT",
            &format!("/data/io.cozy.notes/{id}"),
            Some(json!({"title": "d"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // PUT without a rev on a new id creates it.
    let (status, fixed) = f
        .call(
            "PUT",
            "/data/io.cozy.notes/fixed-id",
            Some(json!({"title": "e"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fixed}");
    assert_eq!(fixed["id"], "fixed-id");

    // Delete with a stale rev is refused; with the current one it works.
    let (status, _) = f
        .call(
            "DELETE",
            &format!("/data/io.cozy.notes/{id}?rev={rev}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, deleted) = f
        .call(
            "DELETE",
            &format!("/data/io.cozy.notes/{id}?rev={rev2}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["ok"], true);
    let (status, missing) = f
        .call("GET", &format!("/data/io.cozy.notes/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"], "not_found");
    let (status, _) = f.call("DELETE", "/data/io.cozy.notes/fixed-id", None).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "delete without a rev says so"
    );
}

#[tokio::test]
async fn malformed_bodies_get_400_with_the_reason() {
    let f = fixture();
    let (status, body) = f
        .call_raw(
            "POST",
            "/data/io.cozy.notes/",
            Some("{\"a\":".into()),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["reason"].as_str().unwrap().starts_with("bad json"),
        "{body}"
    );
    let (status, body) = f
        .call("POST", "/data/io.cozy.notes/", Some(json!([1, 2])))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["reason"].as_str().unwrap().contains("object"),
        "{body}"
    );
    let (status, body) = f
        .call(
            "POST",
            "/data/io.cozy.notes/_find",
            Some(json!({"selector": {"a": {"$bogus": 1}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["reason"].as_str().unwrap().contains("$bogus"),
        "{body}"
    );
    let (status, _) = f
        .call("POST", "/data/Not%20A%20Doctype/", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let mut config = Config::default();
    config.api.max_body_bytes = 4096;
    let f = fixture_with(config);
    let big = json!({ "blob": "x".repeat(10_000) });
    let (status, _) = f.call("POST", "/data/io.cozy.notes/", Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn find_uses_a_declared_index_and_pages_with_next() {
    let f = fixture();
    for i in 0..30 {
        let (status, _) = f
            .call(
                "PUT",
                &format!("/data/energy.readings/r{i:02}"),
                Some(json!({"month": i % 12, "kwh": i})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, index) = f
        .call(
            "POST",
            "/data/energy.readings/_index",
            Some(json!({"index": {"fields": ["month"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(index["result"], "created");
    let (_, again) = f
        .call(
            "POST",
            "/data/energy.readings/_index",
            Some(json!({"index": {"fields": ["month"]}})),
        )
        .await;
    assert_eq!(again["result"], "exists");

    let (status, found) = f
        .call(
            "POST",
            "/data/energy.readings/_find",
            Some(json!({"selector": {"month": 3}, "fields": ["_id", "kwh"], "sort": ["kwh"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        found["docs"],
        json!([{"_id": "r03", "kwh": 3}, {"_id": "r15", "kwh": 15}, {"_id": "r27", "kwh": 27}])
    );
    assert_eq!(found["next"], false);
    assert_eq!(found["execution_stats"]["total_docs_examined"], 3);

    let (_, page) = f
        .call(
            "POST",
            "/data/energy.readings/_find",
            Some(json!({"selector": {"kwh": {"$gte": 0}}, "limit": 10})),
        )
        .await;
    assert_eq!(page["docs"].as_array().unwrap().len(), 10);
    assert_eq!(page["next"], true);
}

#[tokio::test]
async fn all_docs_normal_docs_and_changes() {
    let f = fixture();
    for id in ["b", "a", "c"] {
        f.call(
            "PUT",
            &format!("/data/io.cozy.contacts/{id}"),
            Some(json!({"name": id})),
        )
        .await;
    }
    let (_, all) = f
        .call(
            "GET",
            "/data/io.cozy.contacts/_all_docs?include_docs=true",
            None,
        )
        .await;
    assert_eq!(all["total_rows"], 3);
    let ids: Vec<&str> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(all["rows"][0]["doc"]["name"], "a");
    assert!(all["rows"][0]["value"]["rev"].is_string());

    let (_, keyed) = f
        .call(
            "POST",
            "/data/io.cozy.contacts/_all_docs?include_docs=true",
            Some(json!({"keys": ["c", "zz"]})),
        )
        .await;
    assert_eq!(keyed["rows"][0]["doc"]["name"], "c");
    assert_eq!(keyed["rows"][1]["error"], "not_found");

    let (_, normal) = f
        .call("GET", "/data/io.cozy.contacts/_normal_docs?limit=2", None)
        .await;
    assert_eq!(normal["total_rows"], 3);
    assert_eq!(normal["rows"].as_array().unwrap().len(), 2);
    assert_eq!(normal["rows"][0]["_id"], "a");

    let (_, changes) = f.call("GET", "/data/io.cozy.contacts/_changes", None).await;
    let results = changes["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["id"], "b");
    let last = changes["last_seq"].as_str().unwrap().to_string();

    // Edit one and delete another: only those two show after `last`.
    let rev_a = f.call("GET", "/data/io.cozy.contacts/a", None).await.1["_rev"]
        .as_str()
        .unwrap()
        .to_string();
    f.call(
        "PUT",
        "/data/io.cozy.contacts/a",
        Some(json!({"_rev": rev_a, "name": "A"})),
    )
    .await;
    let rev_c = f.call("GET", "/data/io.cozy.contacts/c", None).await.1["_rev"]
        .as_str()
        .unwrap()
        .to_string();
    f.call(
        "DELETE",
        &format!("/data/io.cozy.contacts/c?rev={rev_c}"),
        None,
    )
    .await;
    let (_, since) = f
        .call(
            "GET",
            &format!("/data/io.cozy.contacts/_changes?since={last}&include_docs=true"),
            None,
        )
        .await;
    let results = since["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{since}");
    assert_eq!(results[0]["id"], "a");
    assert_eq!(results[0]["doc"]["name"], "A");
    assert_eq!(results[1]["id"], "c");
    assert_eq!(results[1]["deleted"], true);
}

#[tokio::test]
async fn aggregate_groups_and_merges() {
    let f = fixture();
    let records: Vec<Value> = (0..12)
        .map(|i| json!({"_id": format!("r{i}"), "month": i % 3, "kwh": i}))
        .collect();
    let (status, _) = f
        .call(
            "POST",
            "/_hearth/import/energy.readings",
            Some(Value::Array(records)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, agg) = f
        .call(
            "POST",
            "/data/energy.readings/_aggregate",
            Some(json!({
                "group_by": ["month"],
                "aggregate": {"n": {"$count": true}, "total": {"$sum": "kwh"}}
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{agg}");
    let groups = agg["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0]["key"], json!({"month": 0}));
    assert_eq!(groups[0]["values"]["n"], 4);
    assert_eq!(groups[0]["values"]["total"], 3 + 6 + 9);
}

#[tokio::test]
async fn import_reads_jsonl_json_and_csv_bodies() {
    let mut config = Config::default();
    // Smaller than the bodies below, so each is written in several commits.
    config.engine.import_batch = 2;
    let f = fixture_with(config);
    let uri = "/_hearth/import/bank.operations";

    let jsonl =
        "{\"_id\":\"a\",\"amount\":-12.5}\n\n{\"_id\":\"b\",\"amount\":100}\n{\"_id\":\"c\"}\n";
    let (status, reply) = f.post_as(uri, Some("application/x-ndjson"), jsonl).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        reply,
        json!({"ok": true, "imported": 3, "collection": "bank.operations"})
    );

    let csv = "_id,amount,label,ok\ne,7,rent,true\nf,1.5,,false\n";
    let (status, reply) = f.post_as(uri, Some("text/csv; charset=utf-8"), csv).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["imported"], 2);

    // A JSON array, with the ids asked for: the given one and a fresh one, in order.
    let (status, reply) = f
        .post_as(
            &format!("{uri}?ids=true"),
            Some("application/json"),
            r#"[{"_id": "g", "amount": 1}, {"amount": 2}]"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["imported"], 2);
    let ids = reply["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "g");
    let fresh = ids[1].as_str().unwrap().to_string();

    let (_, jsonl_too) = f
        .post_as(uri, Some("application/jsonl"), "{\"_id\":\"h\"}")
        .await;
    assert_eq!(jsonl_too["imported"], 1);

    let (_, all) = f.call("GET", "/data/bank.operations/_all_docs", None).await;
    assert_eq!(all["total_rows"], 8, "{all}");
    let (_, a) = f.call("GET", "/data/bank.operations/a", None).await;
    assert_eq!(a["amount"], json!(-12.5));
    let (_, e) = f.call("GET", "/data/bank.operations/e", None).await;
    assert_eq!(e["amount"], json!(7));
    assert_eq!(e["ok"], json!(true));
    let (_, f_) = f.call("GET", "/data/bank.operations/f", None).await;
    assert_eq!(f_["amount"], json!(1.5));
    assert!(
        f_.get("label").is_none(),
        "empty CSV cells are left out: {f_}"
    );
    let (status, _) = f
        .call("GET", &format!("/data/bank.operations/{fresh}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Importing again upserts: same ids, new revs, no new records.
    let (_, again) = f.post_as(uri, Some("application/x-ndjson"), jsonl).await;
    assert_eq!(again["imported"], 3);
    let (_, b) = f.call("GET", "/data/bank.operations/b", None).await;
    assert!(b["_rev"].as_str().unwrap().starts_with("2-"), "{b}");
}

#[tokio::test]
async fn a_bad_import_body_gets_400_naming_the_line_and_writes_nothing() {
    let mut config = Config::default();
    config.engine.import_batch = 1;
    let f = fixture_with(config);
    let uri = "/_hearth/import/notes";

    let jsonl = "{\"_id\":\"a\"}\n{\"_id\":\"b\"}\n{broken\n{\"_id\":\"d\"}\n";
    let (status, body) = f.post_as(uri, Some("application/x-ndjson"), jsonl).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "bad_request");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.starts_with("body:3: bad JSON: "), "{detail}");
    // The records before the bad line were not written either.
    let (status, _) = f.call("GET", "/data/notes/a", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = f
        .post_as(uri, Some("application/json"), "[\n{\"a\": 1},\n\"text\"\n]")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "body:3: a record must be a JSON object, got a string"
    );

    let (status, body) = f.post_as(uri, Some("text/csv"), "a,b\n1,2\n3\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "body:3: 1 field(s), but the header row has 2"
    );

    // A body of another type, or of none, is refused before it is read.
    for content_type in [Some("text/plain"), None] {
        let (status, body) = f.post_as(uri, content_type, "{\"a\":1}").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("application/x-ndjson"), "{detail}");
        assert!(detail.ends_with(content_type.unwrap_or("none")), "{detail}");
    }

    let (status, body) = f
        .post_as(
            "/_hearth/import/Bad%20Name",
            Some("application/x-ndjson"),
            "{}",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("bad collection name"),
        "{body}"
    );
    let (_, collections) = f.call("GET", "/_hearth/collections", None).await;
    assert_eq!(collections, json!([]), "no import created a collection");
}

#[tokio::test]
async fn an_import_body_over_the_limit_is_refused_and_one_at_it_is_read() {
    let mut config = Config::default();
    config.api.max_body_bytes = 4096;
    let f = fixture_with(config);
    let line = |n: usize| format!("{{\"blob\":\"{}\"}}\n", "x".repeat(n));
    let overhead = line(0).len();
    let at = line(4096 - overhead);
    assert_eq!(at.len(), 4096);
    let (status, reply) = f
        .post_as("/_hearth/import/notes", Some("application/x-ndjson"), &at)
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["imported"], 1);
    let over = line(4096 - overhead + 1);
    let (status, _) = f
        .post_as("/_hearth/import/notes", Some("application/x-ndjson"), &over)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn every_page_is_capped_at_max_page_and_one_key_more_is_refused() {
    let mut config = Config::default();
    config.api.max_page = 3;
    let fx = fixture_with(config);
    let docs: Vec<Value> = (0..5)
        .map(|n| json!({ "_id": format!("r{n}"), "n": n }))
        .collect();
    let (status, _) = fx
        .call(
            "POST",
            "/data/notes/_bulk_docs",
            Some(json!({ "docs": docs })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, all) = fx.call("GET", "/data/notes/_all_docs?limit=10", None).await;
    assert_eq!(all["rows"].as_array().unwrap().len(), 3, "{all}");
    let (_, unasked) = fx.call("GET", "/data/notes/_all_docs", None).await;
    assert_eq!(unasked["rows"].as_array().unwrap().len(), 3, "{unasked}");
    let (_, found) = fx
        .call(
            "POST",
            "/data/notes/_find",
            Some(json!({ "selector": { "n": { "$gte": 0 } }, "limit": 10 })),
        )
        .await;
    assert_eq!(found["docs"].as_array().unwrap().len(), 3, "{found}");
    let (_, changes) = fx.call("GET", "/data/notes/_changes?limit=10", None).await;
    assert_eq!(changes["results"].as_array().unwrap().len(), 3, "{changes}");

    // Keys: the limit itself is served, one more is refused with its reason.
    let keys = |n: usize| json!({ "keys": (0..n).map(|i| format!("r{i}")).collect::<Vec<_>>() });
    let (status, rows) = fx
        .call("POST", "/data/notes/_all_docs", Some(keys(3)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows["rows"].as_array().unwrap().len(), 3);
    let (status, refused) = fx
        .call("POST", "/data/notes/_all_docs", Some(keys(4)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("at most 3 keys"),
        "{refused}"
    );
}

#[tokio::test]
async fn query_consent_and_audit_routes_answer_with_the_right_status() {
    let f = fixture();
    let count =
        json!({ "collection": "energy.readings", "aggregate": { "n": { "$count": true } } });
    let (status, _) = f
        .call("POST", "/data/energy.readings/", Some(json!({ "kwh": 3 })))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, result) = f.call("POST", "/_hearth/query", Some(count.clone())).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["groups"][0]["values"]["n"], 1, "{result}");
    assert_eq!(result["exact"], true, "{result}");

    let mut bad = count.clone();
    bad["scope"] = json!("world");
    let (status, body) = f.call("POST", "/_hearth/query", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("scope"), "{body}");
    let (status, body) = f
        .call_raw("POST", "/_hearth/query", Some("{".into()), Some(TOKEN))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // This router runs no network: a query beyond this device cannot run.
    let mut contacts = count.clone();
    contacts["scope"] = json!("contacts");
    let (status, body) = f.call("POST", "/_hearth/query", Some(contacts)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    let policy = json!({ "queriers": "contacts", "aggregates": ["$count"] });
    let (status, body) = f
        .call("GET", "/_hearth/consent/energy.readings", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, stored) = f
        .call(
            "PUT",
            "/_hearth/consent/energy.readings",
            Some(policy.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["policy"], policy, "{stored}");
    let (status, list) = f.call("GET", "/_hearth/consent", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (_, one) = f
        .call("GET", "/_hearth/consent/energy.readings", None)
        .await;
    assert_eq!(one[0]["id"], stored["id"], "{one}");
    let (status, body) = f
        .call(
            "PUT",
            "/_hearth/consent/energy.readings",
            Some(json!({ "queriers": "contacts", "aggregates": ["$count"], "typo": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = f
        .call("PUT", "/_hearth/consent/hearth.audit", Some(policy))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = f
        .call("DELETE", "/_hearth/consent/energy.readings", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["removed"], 1, "{body}");
    let (status, body) = f
        .call("DELETE", "/_hearth/consent/energy.readings", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, records) = f.call("GET", "/_hearth/audit", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(records, json!([]), "nobody asked this node anything");
}
