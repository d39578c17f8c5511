//! Every CLI command on a real `hearth` binary, with and without a daemon.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use hearth_tests::{Api, Home};
use serde_json::{Value, json};

fn init(home: &Home) {
    home.run(&["init", "--name", "laptop"]).ok();
}

/// Runs the same data-command scenario; `daemon` says whether one runs.
fn exercise_every_data_command(home: &Home, daemon: bool) {
    // put: from the argument, with an explicit id, and from stdin.
    let id = home
        .run(&[
            "put",
            "io.cozy.notes",
            r#"{"title":"groceries","n":1,"tags":["a","b"]}"#,
        ])
        .ok()
        .trim()
        .to_string();
    assert_eq!(id.len(), 32, "a generated id is 32 hex chars: {id}");
    assert_eq!(
        home.run(&[
            "put",
            "io.cozy.notes",
            r#"{"title":"todo","n":2}"#,
            "--id",
            "note-2"
        ])
        .ok()
        .trim(),
        "note-2"
    );
    assert_eq!(
        home.run_with_stdin(
            &["put", "io.cozy.notes"],
            r#"{"_id":"note-3","title":"zoë 🎉","n":3.5}"#
        )
        .ok()
        .trim(),
        "note-3"
    );

    // get: exact round trip, with _id and _rev.
    let got = home.run(&["get", "io.cozy.notes", "note-3"]).json();
    assert_eq!(got["title"], "zoë 🎉");
    assert_eq!(got["n"], json!(3.5));
    assert_eq!(got["_id"], "note-3");
    let rev1 = got["_rev"].as_str().unwrap().to_string();
    assert!(rev1.starts_with("1-"), "{rev1}");

    // put again on the same id replaces the record and bumps _rev.
    home.run(&[
        "put",
        "io.cozy.notes",
        r#"{"title":"zoë 🎉","n":4}"#,
        "--id",
        "note-3",
    ])
    .ok();
    let got = home.run(&["get", "io.cozy.notes", "note-3"]).json();
    assert_eq!(got["n"], json!(4));
    assert!(got["_rev"].as_str().unwrap().starts_with("2-"));

    // list: JSON Lines ordered by id.
    let all = home.run(&["list", "io.cozy.notes"]).json_lines();
    assert_eq!(all.len(), 3);
    assert!(all.iter().any(|r| r["_id"] == id.as_str()));

    // find with fields, sort, limit and skip.
    let found = home
        .run(&[
            "find",
            "io.cozy.notes",
            r#"{"n":{"$gte":2}}"#,
            "--fields",
            "title,n",
            "--sort",
            "-n",
        ])
        .json_lines();
    assert_eq!(
        found,
        vec![
            json!({"title":"zoë 🎉","n":4}),
            json!({"title":"todo","n":2})
        ]
    );
    let page = home
        .run(&[
            "find",
            "io.cozy.notes",
            "{}",
            "--sort",
            "n",
            "--skip",
            "1",
            "--limit",
            "1",
            "--fields",
            "n",
        ])
        .json_lines();
    assert_eq!(page, vec![json!({"n":2})]);

    // index, then an indexed find gives the same answer.
    let idx = home.run(&["index", "io.cozy.notes", "n"]).json();
    assert_eq!(idx["result"], "created");
    let found = home
        .run(&["find", "io.cozy.notes", r#"{"n":2}"#, "--fields", "_id"])
        .json_lines();
    assert_eq!(found, vec![json!({"_id":"note-2"})]);

    // aggregate.
    let agg = home
        .run(&[
            "aggregate",
            "io.cozy.notes",
            r#"{"aggregate":{"n":{"$count":true},"total":{"$sum":"n"},"top":{"$max":"n"}}}"#,
        ])
        .json();
    let values = &agg["groups"][0]["values"];
    assert_eq!(values["n"], json!(3));
    assert_eq!(values["total"], json!(7));
    assert_eq!(values["top"], json!(4));

    // collections.
    let cols = home.run(&["collections"]).json_lines();
    assert_eq!(cols.len(), 1);
    assert_eq!(cols[0]["name"], "io.cozy.notes");
    assert_eq!(cols[0]["records"], json!(3));

    // delete, then get says exactly what is missing.
    home.run(&["delete", "io.cozy.notes", "note-2"]).ok();
    let err = home
        .run(&["get", "io.cozy.notes", "note-2"])
        .err()
        .to_string();
    assert!(
        err.contains("no record \"note-2\" in io.cozy.notes"),
        "{err}"
    );

    // export of a collection that never existed says so.
    let err = home.run(&["export", "never.written"]).err().to_string();
    assert!(err.contains("no collection \"never.written\""), "{err}");

    // export jsonl round trips what list shows.
    let exported = home.run(&["export", "io.cozy.notes"]).json_lines();
    assert_eq!(exported, home.run(&["list", "io.cozy.notes"]).json_lines());

    // status knows whether the daemon runs.
    let status = home.run(&["status", "--json"]).json();
    assert_eq!(status["daemon"]["running"], json!(daemon));
    assert_eq!(status["records"], json!(2));
}

#[test]
fn every_data_command_works_without_a_daemon() {
    let home = Home::new();
    init(&home);
    exercise_every_data_command(&home, false);
}

#[test]
fn every_data_command_works_through_a_running_daemon() {
    let home = Home::new();
    init(&home);
    let daemon = home.up().unwrap();
    exercise_every_data_command(&home, true);
    let (code, _) = daemon.stop().unwrap();
    assert_eq!(code, 0);
}

#[test]
fn init_refuses_an_existing_home() {
    let home = Home::new();
    let first = home.run(&["init", "--name", "laptop"]);
    assert!(first.ok().contains("device"));
    let err = home.run(&["init"]).err().to_string();
    assert!(err.contains("already holds a hearth store"), "{err}");
    assert!(err.contains(&home.path().display().to_string()), "{err}");
    // Still the same identity.
    let status = home.run(&["status", "--json"]).json();
    assert!(first.stdout.contains(status["device_id"].as_str().unwrap()));
}

#[test]
fn data_commands_on_an_empty_home_say_to_init() {
    let home = Home::new();
    let err = home.run(&["list", "io.cozy.notes"]).err().to_string();
    assert!(err.contains("hearth init"), "{err}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let home = Home::new();
    init(&home);
    let err = home
        .run(&["put", "io.cozy.notes", "{not json"])
        .err()
        .to_string();
    assert!(err.contains("bad JSON in the record"), "{err}");
    let err = home
        .run(&["put", "io.cozy.notes", "[1,2]"])
        .err()
        .to_string();
    assert!(err.contains("must be a JSON object"), "{err}");
    let err = home
        .run(&["find", "io.cozy.notes", r#"{"a":{"$nope":1}}"#])
        .err()
        .to_string();
    assert!(err.contains("$nope"), "{err}");
    let err = home
        .run(&["find", "io.cozy.notes", "{oops"])
        .err()
        .to_string();
    assert!(err.contains("bad JSON in the selector"), "{err}");
    let err = home.run(&["put", "Bad Name", "{}"]).err().to_string();
    assert!(err.contains("bad collection name"), "{err}");
    let err = home
        .run(&["get", "io.cozy.notes", "nope"])
        .err()
        .to_string();
    assert!(err.contains("no record \"nope\""), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let home = Home::new();
    let run = home.run(&["put"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = home.run(&["frobnicate"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn import_reads_json_jsonl_and_csv() {
    let home = Home::new();
    init(&home);
    let dir = tempfile::tempdir().unwrap();
    let json_file = dir.path().join("ops.json");
    std::fs::write(
        &json_file,
        r#"[{"_id":"a","amount":-12.5},{"_id":"b","amount":100}]"#,
    )
    .unwrap();
    let jsonl_file = dir.path().join("ops.jsonl");
    std::fs::write(
        &jsonl_file,
        "{\"_id\":\"c\",\"amount\":3}\n\n{\"_id\":\"d\",\"amount\":4}\n",
    )
    .unwrap();
    let csv_file = dir.path().join("ops.csv");
    std::fs::write(
        &csv_file,
        "_id,amount,label,ok\ne,7,rent,true\nf,1.5,,false\n",
    )
    .unwrap();
    for f in [&json_file, &jsonl_file, &csv_file] {
        let run = home.run(&["import", "bank.operations", f.to_str().unwrap()]);
        run.ok();
        assert!(run.stderr.contains("imported"), "{}", run.stderr);
    }
    let all = home.run(&["list", "bank.operations"]).json_lines();
    assert_eq!(all.len(), 6);
    let f = home.run(&["get", "bank.operations", "f"]).json();
    assert_eq!(f["amount"], json!(1.5));
    assert_eq!(f["ok"], json!(false));
    assert!(f.get("label").is_none(), "empty CSV cells are left out");
    let e = home.run(&["get", "bank.operations", "e"]).json();
    assert_eq!(e["amount"], json!(7));

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"a\":1}\n{broken\n").unwrap();
    let err = home
        .run(&["import", "x", bad.to_str().unwrap()])
        .err()
        .to_string();
    assert!(err.contains("bad.jsonl:2"), "{err}");
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "hello").unwrap();
    let err = home
        .run(&["import", "x", txt.to_str().unwrap()])
        .err()
        .to_string();
    assert!(err.contains("unknown file type"), "{err}");
}

#[test]
fn export_automerge_is_one_loadable_document() {
    let home = Home::new();
    init(&home);
    for i in 0..20 {
        home.run(&[
            "put",
            "c",
            &format!(r#"{{"i":{i}}}"#),
            "--id",
            &format!("r{i}"),
        ])
        .ok();
    }
    let run = home
        .command(&["export", "c", "--format", "automerge"])
        .output()
        .unwrap();
    assert!(run.status.success());
    use automerge::ReadDoc;
    let doc =
        automerge::Automerge::load(&run.stdout).expect("export loads as one Automerge document");
    assert_eq!(doc.keys(automerge::ROOT).count(), 20);
}

#[test]
fn second_up_on_the_same_home_is_refused() {
    let home = Home::new();
    init(&home);
    let daemon = home.up().unwrap();
    let second = home.run(&["up", "--api", "127.0.0.1:0"]);
    let err = second.err();
    assert!(err.contains("already running"), "{err}");
    assert!(err.contains(&format!("pid {}", daemon.pid())), "{err}");
    daemon.stop().unwrap();
}

#[test]
fn up_refuses_a_non_loopback_api_address() {
    let home = Home::new();
    init(&home);
    let err = home.run(&["up", "--api", "0.0.0.0:0"]).err().to_string();
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn records_survive_a_daemon_restart() {
    let home = Home::new();
    init(&home);
    let daemon = home.up().unwrap();
    for i in 0..50 {
        home.run(&[
            "put",
            "energy.readings",
            &format!(r#"{{"kwh":{i}}}"#),
            "--id",
            &format!("m{i:02}"),
        ])
        .ok();
    }
    let (code, stderr) = daemon.stop().unwrap();
    assert_eq!(code, 0, "{stderr}");
    let daemon = home.up().unwrap();
    let all = home.run(&["list", "energy.readings"]).json_lines();
    assert_eq!(all.len(), 50);
    assert_eq!(all[7]["kwh"], json!(7));
    daemon.stop().unwrap();
    // And without a daemon.
    assert_eq!(
        home.run(&["list", "energy.readings"]).json_lines().len(),
        50
    );
}

#[test]
fn the_api_needs_the_token_and_speaks_cozy() {
    let home = Home::new();
    init(&home);
    let daemon = home.up().unwrap();
    let api = Api::new(&daemon, &home.token());
    let wrong = Api::new(&daemon, "not-the-token");
    assert_eq!(
        wrong
            .call("GET", "/data/io.cozy.notes/_all_docs", None)
            .status,
        401
    );

    let created = api.call("POST", "/data/io.cozy.notes/", Some(r#"{"title":"a"}"#));
    assert_eq!(created.status, 201, "{:?}", created.json);
    let id = created.json["id"].as_str().unwrap().to_string();
    let rev = created.json["rev"].as_str().unwrap().to_string();
    assert_eq!(created.json["data"]["_id"], id.as_str());

    let got = api.call("GET", &format!("/data/io.cozy.notes/{id}"), None);
    assert_eq!(got.json["title"], "a");

    let body = json!({"_id": id, "_rev": rev, "title": "b"}).to_string();
    let updated = api.call("PUT", &format!("/data/io.cozy.notes/{id}"), Some(&body));
    assert_eq!(updated.status, 200, "{:?}", updated.json);
    let stale = api.call("PUT", &format!("/data/io.cozy.notes/{id}"), Some(&body));
    assert_eq!(stale.status, 409);

    let bad = api.call("POST", "/data/io.cozy.notes/", Some("{nope"));
    assert_eq!(bad.status, 400);
    assert!(bad.json["reason"].as_str().unwrap().contains("bad json"));
    assert_eq!(
        api.call("GET", "/data/io.cozy.notes/missing", None).status,
        404
    );

    // And the CLI sees what the API wrote.
    let seen = home.run(&["get", "io.cozy.notes", &id]).json();
    assert_eq!(seen["title"], "b");
    let _: Value = seen;
    daemon.stop().unwrap();
}
