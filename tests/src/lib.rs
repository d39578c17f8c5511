//! End-to-end test harness: real `hearth` processes on temporary homes.
//!
//! [`Home`] is a temporary home directory; [`Home::run`] runs one CLI command
//! and captures its exit code and output; [`Home::up`] starts a daemon on a
//! free loopback port and waits until its API answers; [`Daemon`] stops it
//! with SIGTERM or kills it with SIGKILL.
//!
//! The binary is found next to the test executable (`target/<profile>/hearth`,
//! which `cargo test --workspace` builds because `hearth-node` has integration
//! tests), or at `$HEARTH_BIN`. [`device`] adds devices with fixed ports
//! and pairing through the QR PNG.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod device;
use serde_json::Value;

/// Path of the `hearth` binary under test.
pub fn hearth_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HEARTH_BIN") {
        return PathBuf::from(bin);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/hearth
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("hearth");
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --workspace` (which builds it) or set HEARTH_BIN",
        bin.display()
    );
    bin
}

/// The outcome of one CLI run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from_output(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success, got {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts success and returns the first line of stdout (a ticket, a
    /// card, an id).
    pub fn first_line(&self) -> String {
        self.ok().lines().next().unwrap_or_default().to_string()
    }

    /// Asserts exit code 1 with exactly one line on stderr, and returns it.
    pub fn err(&self) -> &str {
        assert_eq!(
            self.code, 1,
            "expected exit 1, got {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one error line, got: {}",
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "a panic is never an answer: {}",
            self.stderr
        );
        lines[0]
    }

    /// Parses stdout as one JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok().trim()).expect("stdout is JSON")
    }

    /// Parses stdout as JSON Lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.ok()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("each stdout line is JSON"))
            .collect()
    }
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A temporary home directory for one test node.
#[derive(Debug)]
pub struct Home {
    dir: tempfile::TempDir,
    envs: Vec<(String, String)>,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Home {
    /// A new, empty home.
    pub fn new() -> Self {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
            envs: vec![
                // Cheap Argon2id so passphrase tests stay fast; the default
                // parameters are covered by hearth-crypto's own tests.
                ("HEARTH_KDF_MEMORY_KIB".into(), "1024".into()),
                ("HEARTH_KDF_ITERATIONS".into(), "1".into()),
            ],
        }
    }

    /// Sets an environment variable for every command run on this home.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `hearth` command on this home, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(hearth_bin());
        cmd.arg("--home").arg(self.path()).args(args);
        cmd.env_remove("HEARTH_PASSPHRASE")
            .env_remove("HEARTH_HOME");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `hearth --home <home> args…` with no stdin.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run hearth");
        Run::from_output(out)
    }

    /// Runs with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hearth");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        Run::from_output(child.wait_with_output().expect("wait hearth"))
    }

    /// Starts `hearth up --api 127.0.0.1:0`, its network on loopback only
    /// and without mDNS, and waits until the API answers.
    pub fn up(&self) -> Result<Daemon> {
        self.up_with(&["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
    }

    /// Starts `hearth up --api 127.0.0.1:0 args…` and waits until the API
    /// answers.
    pub fn up_with(&self, args: &[&str]) -> Result<Daemon> {
        let _ = std::fs::remove_file(self.path().join("api.addr"));
        let mut full = vec!["up", "--api", "127.0.0.1:0"];
        full.extend_from_slice(args);
        let child = self
            .command(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn hearth up")?;
        let mut daemon = Daemon {
            child,
            home: self.path().to_path_buf(),
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = daemon.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = daemon.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                bail!("hearth up exited with {status}: {err}");
            }
            if let Ok(addr) = std::fs::read_to_string(self.path().join("api.addr"))
                && std::net::TcpStream::connect(addr.trim()).is_ok()
            {
                daemon.addr = addr.trim().to_string();
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                bail!("hearth up did not become ready in 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The API token of this home.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.path().join("api-token"))
            .expect("api-token")
            .trim()
            .to_string()
    }
}

/// A running `hearth up`.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    home: PathBuf,
    addr: String,
}

impl Daemon {
    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit code and stderr.
    pub fn stop(mut self) -> Result<(i32, String)> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let out = wait_with_timeout(&mut self.child, Duration::from_secs(30))?;
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        Ok((out, err))
    }

    /// Kills with SIGKILL (no chance to clean up) and reaps the process.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// The home this daemon serves.
    pub fn home(&self) -> &Path {
        &self.home
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small blocking HTTP client for the API, with the home's token.
#[derive(Debug)]
pub struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// An HTTP reply: status and parsed JSON (Null if the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body as JSON.
    pub json: Value,
}

impl Api {
    /// A client of `daemon` using `token`.
    pub fn new(daemon: &Daemon, token: &str) -> Self {
        Api {
            base: daemon.url(),
            token: token.to_string(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into(),
        }
    }

    /// Sends a request; `body` None sends none. Panics if the daemon cannot
    /// be reached.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.try_call(method, path, body).expect("http request")
    }

    /// Sends a request; `None` if the daemon cannot be reached (e.g. killed).
    pub fn try_call(&self, method: &str, path: &str, body: Option<&str>) -> Option<Reply> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("PUT", b) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or("")),
            (_, b) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or("")),
        }
        .ok()?;
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().ok()?;
        Some(Reply {
            status,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }
}
