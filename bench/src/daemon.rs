//! Running a node as a child process, to measure it from outside.
//!
//! The real `hearth` binary (`target/release/hearth`, built by `cargo build
//! --release -p hearth-node`) is preferred: its resident memory and start-up
//! time are what a user gets. When it is absent, this binary re-executes
//! itself as `hearth-bench daemon --home DIR`, which runs the same
//! `hearth_node::daemon::run` the `hearth up` command runs, so the node code
//! is identical; only the executable differs.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearth_node::home::Home;

/// How long a node may take to come up before the scenario gives up.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// Which executable runs the node.
#[derive(Debug, Clone)]
pub(crate) enum Launcher {
    /// `hearth up`, the real binary.
    Hearth(PathBuf),
    /// `hearth-bench daemon`, this binary running the same daemon code.
    SelfDaemon(PathBuf),
}

impl Launcher {
    /// The real binary beside this one (same target profile directory), else
    /// this binary.
    pub(crate) fn find() -> Result<Self> {
        let me = std::env::current_exe().context("cannot locate the hearth-bench executable")?;
        let beside = me.with_file_name("hearth");
        if beside.is_file() {
            Ok(Launcher::Hearth(beside))
        } else {
            Ok(Launcher::SelfDaemon(me))
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Launcher::Hearth(p) => format!("real binary `{} up`", p.display()),
            Launcher::SelfDaemon(p) => format!(
                "`{} daemon` (hearth_node::daemon::run; target/release/hearth not built)",
                p.display()
            ),
        }
    }

    /// The command running a node on `home`; with `listen`, its network
    /// listens there only, without mDNS. It logs at `log` (`HEARTH_LOG`).
    fn command(&self, home: &Home, listen: Option<&str>, log: &str) -> Command {
        let (exe, sub) = match self {
            Launcher::Hearth(p) => (p, "up"),
            Launcher::SelfDaemon(p) => (p, "daemon"),
        };
        let mut cmd = Command::new(exe);
        cmd.arg(sub)
            .arg("--home")
            .arg(home.root())
            .args(["--api", "127.0.0.1:0"]);
        if let Some(addr) = listen {
            cmd.args(["--listen", addr]);
            if matches!(self, Launcher::Hearth(_)) {
                // The self-daemon never runs mDNS.
                cmd.arg("--no-mdns");
            }
        }
        cmd.env_remove("HEARTH_PASSPHRASE")
            .env_remove("HEARTH_HOME")
            .env("HEARTH_LOG", log);
        cmd
    }
}

/// A node running as a child process, answering on its API.
pub(crate) struct Daemon {
    child: Option<Child>,
    base: String,
    token: String,
    agent: ureq::Agent,
    /// From spawn to the first `/_hearth/status` answer.
    pub(crate) ready_after: Duration,
}

impl Daemon {
    /// Starts a node on `home` and waits until `/_hearth/status` answers.
    /// Its stderr goes to `log`.
    pub(crate) fn start(launcher: &Launcher, home: &Home, log: &Path) -> Result<Self> {
        Self::start_listening(launcher, home, log, None)
    }

    /// [`Daemon::start`] with the network listening on `listen` only (a
    /// multiaddr), without mDNS.
    pub(crate) fn start_listening(
        launcher: &Launcher,
        home: &Home,
        log: &Path,
        listen: Option<&str>,
    ) -> Result<Self> {
        Self::start_logging(launcher, home, log, listen, "warn")
    }

    /// [`Daemon::start_listening`], logging at `level` (`HEARTH_LOG`'s
    /// syntax) to `log`.
    pub(crate) fn start_logging(
        launcher: &Launcher,
        home: &Home,
        log: &Path,
        listen: Option<&str>,
        level: &str,
    ) -> Result<Self> {
        // A node killed earlier leaves its address behind; it must not be read
        // as the new one's.
        let _ = std::fs::remove_file(home.api_addr_path());
        let log_file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let started = Instant::now();
        let child = launcher
            .command(home, listen, level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", launcher.describe()))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut daemon = Daemon {
            child: Some(child),
            base: String::new(),
            token: String::new(),
            agent,
            ready_after: Duration::ZERO,
        };
        loop {
            daemon.check_alive(log)?;
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "the node did not come up within {START_TIMEOUT:?}; see {}",
                    log.display()
                );
            }
            if daemon.base.is_empty() {
                if let Some(addr) = read_addr(home) {
                    daemon.base = format!("http://{addr}");
                    daemon.token = std::fs::read_to_string(home.api_token_path())
                        .context("cannot read the node's api-token")?
                        .trim()
                        .to_string();
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
            match daemon.get("/_hearth/status") {
                Ok(status) if status.get("device_id").is_some() => break,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        daemon.ready_after = started.elapsed();
        Ok(daemon)
    }

    fn check_alive(&mut self, log: &Path) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            bail!("the node exited with {status} before it was ready: {tail}");
        }
        Ok(())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The API agent (keep-alive) and the pieces of a request.
    pub(crate) fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// GETs `path` and parses the JSON answer; errors on a non-2xx status.
    pub(crate) fn get(&self, path: &str) -> Result<serde_json::Value> {
        let mut response = self
            .agent
            .get(self.url(path))
            .header("Authorization", &self.auth())
            .call()?;
        let status = response.status();
        let body = response.body_mut().read_to_string()?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Sends `method` to `path` with an optional JSON body; the status and
    /// the answer (JSON, or `null` when empty or not JSON).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        let url = self.url(path);
        let auth = self.auth();
        let mut response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call()?,
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call()?,
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b)?,
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty()?,
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(b)?,
            _ => bail!("unsupported request {method} {path}"),
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }

    /// [`Daemon::call`] that errors unless the status is 2xx.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let (status, value) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status}: {value}");
        }
        Ok(value)
    }

    /// Stops the node with SIGTERM (a clean stop, as Ctrl-C), waiting up to
    /// 30 s before killing it.
    pub(crate) fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        if term.is_ok_and(|s| s.success()) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        child.kill()?;
        child.wait()?;
        bail!("the node did not stop on SIGTERM and was killed")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only on an error path: never leave our child running.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_addr(home: &Home) -> Option<SocketAddr> {
    std::fs::read_to_string(home.api_addr_path())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Body of `hearth-bench daemon --home DIR --api ADDR`: the node, as `hearth
/// up` runs it, with the store unlocked by its key file.
/// The network listens on `listen` (multiaddrs), or on a free loopback TCP
/// port when none is given; never with mDNS.
pub(crate) fn run_self_daemon(home: &Path, api: SocketAddr, listen: &[String]) -> Result<()> {
    let listen = if listen.is_empty() {
        vec!["/ip4/127.0.0.1/tcp/0".parse()?]
    } else {
        listen
            .iter()
            .map(|a| a.parse())
            .collect::<Result<Vec<_>, _>>()
            .context("bad --listen multiaddr")?
    };
    let home = Home::at(home)?;
    let config = hearth_node::config::Config::load(&home.config_path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(hearth_node::daemon::run(
        &home,
        || Ok(hearth_node::store::Unlock::KeyFile),
        config,
        hearth_node::daemon::Options {
            api,
            name: Some("bench".into()),
            net: hearth_node::net::Config {
                listen,
                mdns: false,
                ..hearth_node::net::Config::default()
            },
            keep_ports: false,
        },
    ))
}

/// Polls `check` every 5 ms until it holds; an error naming `what` once
/// `timeout` has passed.
pub(crate) fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
