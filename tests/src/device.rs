//! Devices under test with fixed ports, and pairing them through the QR
//! PNG as a person would.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Daemon, Home, free_port};

/// A device under test: its home and the fixed port it listens on, so that
/// its address stays the same across restarts.
pub struct Device {
    /// Its home.
    pub home: Home,
    /// Its fixed port.
    pub port: u16,
}

impl Device {
    /// An initialised device named `name`.
    pub fn new(name: &str) -> Device {
        let device = Device {
            home: Home::new(),
            port: free_port(),
        };
        device.home.run(&["init", "--name", name]).ok();
        device
    }

    /// A device whose home is still empty (for `hearth join`).
    pub fn fresh() -> Device {
        Device {
            home: Home::new(),
            port: free_port(),
        }
    }

    /// Its listen address.
    pub fn listen(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}", self.port)
    }

    /// Starts its daemon on its port, without mDNS.
    pub fn up(&self) -> Daemon {
        self.home
            .up_with(&["--listen", &self.listen(), "--no-mdns"])
            .unwrap()
    }

    /// Its device id.
    pub fn id(&self) -> String {
        self.home.run(&["status", "--json"]).json()["device_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A record, if it exists.
    pub fn get(&self, collection: &str, id: &str) -> Option<Value> {
        let run = self.home.run(&["get", collection, id]);
        run.success()
            .then(|| serde_json::from_str(run.ok()).unwrap())
    }

    /// Waits until `check` holds for the record, or fails naming it.
    pub fn wait_for(
        &self,
        collection: &str,
        id: &str,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.get(collection, id);
            if check(got.as_ref()) {
                return got.unwrap_or(Value::Null);
            }
            assert!(
                Instant::now() < deadline,
                "record {collection}/{id} never reached the expected state on {}: last seen {got:?}",
                self.home.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A `hearth join` in progress.
pub struct Joining {
    child: Child,
    /// The check code it shows.
    pub code: String,
}

/// Starts `hearth join` on `joiner` with `args` and waits for its check code.
pub fn start_join(joiner: &Device, args: &[&str]) -> Joining {
    let mut full = vec!["join"];
    full.extend_from_slice(args);
    let mut child = joiner
        .home
        .command(&full)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let code = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(code) = line.strip_prefix("check code: ") {
                    break code.trim().to_string();
                }
            }
            _ => {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "hearth join ended without a check code: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };
    assert_eq!(code.len(), 6, "a check code is 6 digits: {code}");
    Joining { child, code }
}

impl Joining {
    /// Waits for `hearth join` to end; returns whether it succeeded, and its stderr.
    pub fn finish(self) -> (bool, String) {
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Pairs `joiner` into `inviter`'s account through the QR PNG.
pub fn pair(inviter: &Device, joiner: &Device) {
    pair_naming(inviter, joiner, &["--name", "joiner"]);
}

/// [`pair`], with `name` as the joiner's naming flags (none: its default).
pub fn pair_naming(inviter: &Device, joiner: &Device, name: &[&str]) {
    let png = inviter.home.path().join("invite.png");
    let run = inviter.home.run(&["pair", "--qr", png.to_str().unwrap()]);
    let ticket = run.first_line();
    assert!(
        ticket.starts_with("hearth1"),
        "first line is the ticket: {ticket}"
    );
    let mut args = vec!["--qr", png.to_str().unwrap()];
    args.extend_from_slice(name);
    let joining = start_join(joiner, &args);
    inviter.home.run(&["pair", "confirm", &joining.code]).ok();
    let (ok, err) = joining.finish();
    assert!(ok, "hearth join failed: {err}");
}
