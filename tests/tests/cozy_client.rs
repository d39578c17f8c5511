//! Cozy's own JavaScript client against a real `hearth up`.
//!
//! `tests/cozy/` is a small npm project that pins `cozy-stack-client` (the
//! library Cozy apps use to reach cozy-stack's data API) and runs
//! `compat.mjs`: create, get, update with `_rev`, a stale update that must
//! conflict, `all()`, `find` with an index, `getAll`, `destroy`, the changes
//! feed and the bulk routes, each checked for exact results. This test starts
//! a daemon on a fresh home and runs that script against it, so "a client
//! written for cozy-stack works against `hearth up` unchanged" is checked
//! with the real client, not with our reading of its protocol.
//!
//! The npm dependencies are installed by `npm ci --prefix tests/cozy`. Without
//! Node.js or without them the test is skipped with a message, except under
//! CI (`CI` set), where either is an error: CI must never skip this silently.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hearth_tests::Home;

/// The npm project holding the client and the script.
fn cozy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cozy")
}

/// The `node --version` output, or `None` if Node.js is not on PATH.
fn node_version() -> Option<String> {
    let out = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the test can run here; panics under CI when it cannot.
fn prerequisites_met(dir: &Path) -> bool {
    let in_ci = std::env::var_os("CI").is_some();
    let install = format!(
        "install them with `npm ci --prefix {} --no-audit --no-fund`",
        dir.display()
    );
    if node_version().is_none() {
        assert!(!in_ci, "CI is set but `node` (Node.js 20) is not on PATH");
        eprintln!("skipping cozy_client: `node` is not on PATH");
        return false;
    }
    if !dir.join("node_modules").join("cozy-stack-client").is_dir() {
        assert!(
            !in_ci,
            "CI is set but {} has no node_modules/cozy-stack-client; {install}",
            dir.display()
        );
        eprintln!("skipping cozy_client: the npm dependencies are missing; {install}");
        return false;
    }
    true
}

#[test]
fn cozy_stack_client_works_against_hearth_unchanged() {
    let dir = cozy_dir();
    if !prerequisites_met(&dir) {
        return;
    }
    let home = Home::new();
    home.run(&["init"]).ok();
    let daemon = home.up().unwrap();

    let out = Command::new("node")
        .arg("compat.mjs")
        .current_dir(&dir)
        .env("HEARTH_URL", daemon.url())
        .env("HEARTH_TOKEN", home.token())
        .stdin(Stdio::null())
        .output()
        .expect("run node compat.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cozy-stack-client failed against hearth ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("all checks passed"),
        "compat.mjs exited 0 without finishing its checks:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");

    // Whatever the client sent, the daemon must still shut down cleanly.
    let (code, daemon_stderr) = daemon.stop().unwrap();
    assert_eq!(code, 0, "hearth up did not stop cleanly: {daemon_stderr}");
    assert!(
        !daemon_stderr.contains("panicked"),
        "hearth up panicked while serving the client: {daemon_stderr}"
    );
}
