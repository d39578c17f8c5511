//! The encrypted store as a user meets it: secrecy on disk, tampering,
//! wrong keys, and `kill -9` during writes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use hearth_tests::{Api, Home};
use serde_json::json;

const MARKER: &str = "hearth-plaintext-marker-7f3a9c";

fn init_with_records(home: &Home) {
    home.run(&["init", "--name", "laptop"]).ok();
    for i in 0..40 {
        let body = json!({ "secret": format!("{MARKER}-{i}"), "i": i }).to_string();
        home.run(&["put", "io.cozy.notes", &body, "--id", &format!("n{i:02}")])
            .ok();
    }
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn record_values_appear_in_plaintext_in_no_file_under_the_home() {
    let home = Home::new();
    init_with_records(&home);
    // Also through a daemon, and after it stopped (logs, api files).
    let daemon = home.up().unwrap();
    home.run(&[
        "put",
        "io.cozy.notes",
        &json!({ "secret": MARKER }).to_string(),
    ])
    .ok();
    daemon.stop().unwrap();
    let files = files_under(home.path());
    assert!(files.iter().any(|f| f.ends_with("store.redb")));
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let found = bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes());
        assert!(
            !found,
            "{} holds a record value in plaintext",
            file.display()
        );
    }
}

#[test]
fn a_wrong_passphrase_is_refused_with_one_line_naming_the_store() {
    let home = Home::new().env("HEARTH_PASSPHRASE", "correct horse battery staple");
    home.run(&["init"]).ok();
    home.run(&["put", "c", r#"{"a":1}"#, "--id", "x"]).ok();
    assert!(
        !home.path().join("keys/store.key").exists(),
        "a passphrase store has no key file"
    );

    let run = home
        .command(&["get", "c", "x"])
        .env("HEARTH_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("passphrase"), "{err}");
    assert!(err.contains("store.redb"), "{err}");

    // No passphrase at all says how to give one.
    let run = home
        .command(&["get", "c", "x"])
        .env_remove("HEARTH_PASSPHRASE")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("HEARTH_PASSPHRASE"), "{err}");

    // A passphrase file works too.
    let pass = home.path().join("pass.txt");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let run = home
        .command(&["--passphrase-file", pass.to_str().unwrap(), "get", "c", "x"])
        .env_remove("HEARTH_PASSPHRASE")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn a_missing_key_file_is_named() {
    let home = Home::new();
    init_with_records(&home);
    std::fs::remove_file(home.path().join("keys/store.key")).unwrap();
    let run = home.run(&["list", "io.cozy.notes"]);
    let err = run.err();
    assert!(err.contains("keys/store.key"), "{err}");
    assert!(run.stdout.is_empty());
}

#[test]
fn the_key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    home.run(&["init"]).ok();
    let mode = std::fs::metadata(home.path().join("keys/store.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn assert_tamper_detected(home: &Home) {
    let run = home.run(&["list", "io.cozy.notes"]);
    let err = run.err();
    assert!(
        err.contains("store.redb"),
        "the error names the file: {err}"
    );
    assert!(
        run.stdout.is_empty(),
        "no data is printed from a damaged store"
    );
}

#[test]
fn a_truncated_store_is_refused() {
    let home = Home::new();
    init_with_records(&home);
    let path = home.path().join("store.redb");
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    assert_tamper_detected(&home);
}

#[test]
fn a_store_with_flipped_bytes_is_refused() {
    let home = Home::new();
    init_with_records(&home);
    let path = home.path().join("store.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip one byte in every 64 past the first page: every live page is hit.
    for i in (4096..bytes.len()).step_by(64) {
        bytes[i] ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    assert_tamper_detected(&home);
}

#[test]
fn values_swapped_between_keys_are_refused() {
    let home = Home::new();
    init_with_records(&home);
    // Swap two sealed chunk values in place through redb itself, the way an
    // attacker with write access to the file would.
    assert!(swap_first_two_chunks(&home), "could swap two values");
    assert_tamper_detected(&home);
}

/// Swaps the values of the first two rows of the chunks table with raw redb.
fn swap_first_two_chunks(home: &Home) -> bool {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    const CHUNKS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("chunks-1");
    let db = redb::Database::open(home.path().join("store.redb")).unwrap();
    let rows: Vec<(Vec<u8>, Vec<u8>)> = {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(CHUNKS).unwrap();
        table
            .iter()
            .unwrap()
            .take(2)
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value().to_vec(), v.value().to_vec())
            })
            .collect()
    };
    if rows.len() < 2 {
        return false;
    }
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(CHUNKS).unwrap();
        table
            .insert(rows[0].0.as_slice(), rows[1].1.as_slice())
            .unwrap();
        table
            .insert(rows[1].0.as_slice(), rows[0].1.as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
    true
}

/// Writes through the API as fast as it can, remembering every acknowledged
/// write, then kills the daemon with SIGKILL at a random moment; after each
/// restart every acknowledged write must be there with its value.
#[test]
fn kill_9_during_writes_loses_no_acknowledged_write() {
    let home = Home::new();
    home.run(&["init"]).ok();
    let mut acknowledged: BTreeMap<String, i64> = BTreeMap::new();
    let rounds = 12;
    for round in 0..rounds {
        let daemon = home.up().unwrap();
        let api = Api::new(&daemon, &home.token());
        // A writer thread acknowledges writes until the process disappears.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(String, i64)>(100_000);
        let writer = std::thread::spawn(move || {
            let mut i = 0i64;
            loop {
                let id = format!("r{round}-{i}");
                let body = json!({ "_id": id, "v": i }).to_string();
                let reply = api.try_call("PUT", &format!("/data/crash.test/{id}"), Some(&body));
                match reply {
                    Some(r) if r.status == 200 => {
                        if tx.send((id, i)).is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
                i += 1;
            }
        });
        // Let some writes through, then kill at a varying moment.
        std::thread::sleep(std::time::Duration::from_millis(
            150 + 97 * round as u64 % 400,
        ));
        daemon.kill9().unwrap();
        writer.join().unwrap();
        acknowledged.extend(rx.try_iter());
        // Every acknowledged write is present after the crash, with no daemon.
        let run = home.run(&["list", "crash.test"]);
        let present: BTreeMap<String, i64> = run
            .json_lines()
            .into_iter()
            .map(|r| {
                (
                    r["_id"].as_str().unwrap().to_string(),
                    r["v"].as_i64().unwrap(),
                )
            })
            .collect();
        for (id, v) in &acknowledged {
            assert_eq!(
                present.get(id),
                Some(v),
                "acknowledged write {id} lost in round {round}"
            );
        }
    }
    assert!(
        acknowledged.len() > 50,
        "the test wrote too little to mean anything: {}",
        acknowledged.len()
    );
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let home = Home::new();
    home.run(&["init"]).ok();
    let daemon = home.up().unwrap();
    home.run(&["put", "c", r#"{"a":1}"#, "--id", "x"]).ok();
    let (code, stderr) = daemon.stop().unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("hearth stopped"), "{stderr}");
    assert!(!home.path().join("api.addr").exists());
    assert_eq!(home.run(&["get", "c", "x"]).json()["a"], json!(1));
}

#[test]
fn a_daemon_logs_no_record_contents() {
    let home = Home::new();
    home.run(&["init"]).ok();
    let mut child = home
        .command(&["up", "--api", "127.0.0.1:0"])
        .env("HEARTH_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    // Wait for readiness.
    for line in lines.by_ref() {
        if line.unwrap().contains("hearth is up") {
            break;
        }
    }
    home.run(&["put", "c", &json!({ "secret": MARKER }).to_string()])
        .ok();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    child.wait().unwrap();
    let _ = std::io::stderr().flush();
    assert!(!rest.iter().any(|l| l.contains(MARKER)), "{rest:?}");
}
