//! `hearth up`: the long-running node.
//!
//! It takes the home's daemon lock (so a second `up` is refused), opens the
//! engine, serves the API on loopback, writes `<home>/api.addr`, and on SIGINT
//! or SIGTERM stops taking requests, lets the in-flight ones finish, and closes
//! the store. Every write was durable before it was acknowledged, so a
//! `kill -9` loses nothing acknowledged either; a clean stop only spares redb
//! its repair on the next open.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::RngCore;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::engine::Engine;
use crate::home::Home;
use crate::store::Unlock;

/// Holds `<home>/daemon.lock` for as long as it lives. The OS releases the
/// lock when the process dies, even on `kill -9`.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// Takes the lock or explains who holds it.
    pub fn acquire(home: &Home) -> Result<Self> {
        let path = home.daemon_lock_path();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "hearth is already running on {} ({}); stop it first or use another --home",
                    home.root().display(),
                    holder.trim()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        write!(file, "pid {}", std::process::id())?;
        file.sync_all()?;
        Ok(Self { _file: file })
    }
}

/// The API token of this home, created on first use.
pub fn ensure_token(home: &Home) -> Result<String> {
    let path = home.api_token_path();
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::home::write_atomic(&path, token.as_bytes(), crate::home::SECRET_FILE_MODE)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// What `up` needs.
#[derive(Debug)]
pub struct Options {
    /// API listen address; loopback only.
    pub api: SocketAddr,
    /// Device name if this run initialises the home.
    pub name: Option<String>,
    /// The network.
    pub net: crate::net::Config,
    /// Whether `net`'s listen addresses are the defaults (no `--listen`):
    /// the ports bound are then kept in `<home>/listen.addrs` and reused
    /// at the next start ([`Home::listen_path`]).
    pub keep_ports: bool,
}

/// Runs the node until SIGINT or SIGTERM.
pub async fn run(
    home: &Home,
    unlock: impl FnOnce() -> Result<Unlock>,
    config: Config,
    options: Options,
) -> Result<()> {
    if !options.api.ip().is_loopback() {
        bail!(
            "refusing to serve the API on {}: it must listen on loopback (127.0.0.1 or ::1)",
            options.api
        );
    }
    home.ensure_dirs()
        .with_context(|| format!("cannot create {}", home.root().display()))?;
    let _lock = DaemonLock::acquire(home)?;
    let unlock = unlock()?;
    let started = Instant::now();
    let engine = if home.is_initialised() {
        Engine::open(home, unlock, config.engine.clone())?
    } else {
        let name = options.name.unwrap_or_else(crate::default_device_name);
        let engine = Engine::init(
            home,
            unlock,
            config.kdf.params(),
            &name,
            config.engine.clone(),
        )?;
        let status = engine.status();
        eprintln!(
            "initialised {}: device {} in new account {}",
            home.root().display(),
            status.device_id,
            status.account_id
        );
        engine
    };
    let key = hearth_crypto::identity::DeviceKey::from_bytes(&engine.device_key().to_bytes());
    let known = engine.known_addresses()?;
    let engine = engine.spawn()?;
    let listen = ListenPorts {
        home,
        keep: options.keep_ports,
    };
    let mesh = start_mesh(&engine.handle, &key, options.net, listen, &config, known).await?;
    let token = ensure_token(home)?;
    let listener = tokio::net::TcpListener::bind(options.api)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; pass --api 127.0.0.1:0 to pick a free port",
                options.api
            )
        })?;
    let addr = listener.local_addr()?;
    let addr_file = home.api_addr_path();
    crate::home::write_atomic(
        &addr_file,
        addr.to_string().as_bytes(),
        crate::home::PUBLIC_FILE_MODE,
    )
    .with_context(|| format!("cannot write {}", home.api_addr_path().display()))?;
    let status = engine.handle.status().await?;
    tracing::info!(
        device = %status.device_id,
        records = status.records,
        ready_ms = started.elapsed().as_millis() as u64,
        api = %addr,
        "hearth is up"
    );
    eprintln!(
        "hearth is up: api http://{addr} (token in {})",
        home.api_token_path().display()
    );

    let state = AppState::new(engine.handle.clone(), token, config.api.clone())
        .with_import_batch(config.engine.import_batch)
        .with_mesh(mesh.clone());
    let served = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    let _ = std::fs::remove_file(home.api_addr_path());
    let _ = mesh.net().shutdown().await;
    drop(mesh);
    tokio::task::spawn_blocking(move || engine.stop_before_exit()).await?;
    served.context("the API server failed")?;
    eprintln!("hearth stopped");
    Ok(())
}

/// Starts the network and the mesh tasks over the running engine, and dials
/// the addresses remembered for the account's devices.
async fn start_mesh(
    engine: &crate::engine::Handle,
    key: &hearth_crypto::identity::DeviceKey,
    net_config: crate::net::Config,
    ports: ListenPorts<'_>,
    config: &Config,
    known: Vec<(hearth_crypto::identity::DeviceId, Vec<String>)>,
) -> Result<crate::mesh::Mesh> {
    use crate::mesh::{Mesh, peer_id};
    let members = engine.members().borrow().clone();
    let admission = crate::net::Admission::new(
        members
            .devices
            .iter()
            .filter(|d| **d != members.me)
            .filter_map(peer_id),
    );
    let mdns = net_config.mdns;
    let net = ports.spawn(key, net_config, &admission).await?;
    for addr in net.handle.listen_addrs().await.unwrap_or_default() {
        tracing::info!(%addr, "listening");
    }
    // The card this account hands out names where its devices listen: this
    // one's addresses now, the others' as last remembered.
    let mut card_addrs = vec![(
        members.me,
        net.handle
            .listen_addrs()
            .await
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
    )];
    card_addrs.extend(known.iter().cloned());
    engine.set_card_addrs(card_addrs).await?;
    for (device, addrs) in known {
        let Some(peer) = peer_id(&device) else {
            continue;
        };
        for addr in addrs {
            match addr.parse() {
                Ok(addr) => {
                    let _ = net.handle.add_address(peer, addr).await;
                }
                Err(e) => tracing::debug!(%addr, error = %e, "skipping a remembered address"),
            }
        }
    }
    Ok(Mesh::start(
        engine.clone(),
        net,
        admission,
        crate::mesh::Settings::of(config, mdns),
    ))
}

/// Keeping a device's ports across restarts: with the default listen
/// addresses (port 0, the OS picks), the first start records the ports it
/// got and later starts ask for the same ones, so devices that saw it at
/// an address find it there again. A remembered port that is taken now is
/// given up for a new one, with a warning.
struct ListenPorts<'h> {
    home: &'h Home,
    keep: bool,
}

impl ListenPorts<'_> {
    async fn spawn(
        &self,
        key: &hearth_crypto::identity::DeviceKey,
        mut net_config: crate::net::Config,
        admission: &crate::net::Admission,
    ) -> Result<crate::net::Net> {
        let asked = net_config.listen.clone();
        if self.keep
            && let Some(remembered) = self.remembered()
        {
            let mut tried = net_config.clone();
            tried.listen = remembered;
            match crate::net::spawn(key, tried, admission.clone()).await {
                Ok(net) => return Ok(net),
                Err(
                    e @ (crate::net::Error::Listen { .. } | crate::net::Error::Listener { .. }),
                ) => {
                    tracing::warn!(error = %e, "the ports this device used before are taken; listening on new ones");
                }
                Err(e) => return Err(anyhow::Error::new(e).context("cannot start the network")),
            }
        }
        net_config.listen = asked.clone();
        let net = crate::net::spawn(key, net_config, admission.clone())
            .await
            .context("cannot start the network")?;
        if self.keep {
            let bound = net.handle.listen_addrs().await.unwrap_or_default();
            self.remember(&concrete_ports(&asked, &bound));
        }
        Ok(net)
    }

    fn remembered(&self) -> Option<Vec<libp2p::Multiaddr>> {
        let text = std::fs::read_to_string(self.home.listen_path()).ok()?;
        let addrs: Vec<libp2p::Multiaddr> = text
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect();
        (!addrs.is_empty()).then_some(addrs)
    }

    fn remember(&self, addrs: &[libp2p::Multiaddr]) {
        let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        let path = self.home.listen_path();
        if let Err(e) =
            crate::home::write_atomic(&path, text.as_bytes(), crate::home::PUBLIC_FILE_MODE)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the listen ports; the next start picks new ones");
        }
    }
}

/// `asked` with each port 0 replaced by the port the same transport got in
/// `bound` (TCP's for a TCP address, QUIC's for a QUIC one).
fn concrete_ports(
    asked: &[libp2p::Multiaddr],
    bound: &[libp2p::Multiaddr],
) -> Vec<libp2p::Multiaddr> {
    use libp2p::multiaddr::Protocol;
    let is_quic = |a: &libp2p::Multiaddr| a.iter().any(|p| p == Protocol::QuicV1);
    let port = |a: &libp2p::Multiaddr| {
        a.iter().find_map(|p| match p {
            Protocol::Tcp(port) | Protocol::Udp(port) => Some(port),
            _ => None,
        })
    };
    asked
        .iter()
        .filter_map(|addr| {
            if port(addr) != Some(0) {
                return Some(addr.clone());
            }
            let got = bound
                .iter()
                .filter(|b| is_quic(b) == is_quic(addr))
                .find_map(port)?;
            Some(
                addr.iter()
                    .map(|p| match p {
                        Protocol::Tcp(0) => Protocol::Tcp(got),
                        Protocol::Udp(0) => Protocol::Udp(got),
                        other => other,
                    })
                    .collect(),
            )
        })
        .collect()
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only SIGINT stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    // Not biased: order does not matter, either signal stops the node the same way.
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::concrete_ports;

    #[test]
    fn port_zero_takes_the_bound_port_of_its_own_transport() {
        let asked: Vec<libp2p::Multiaddr> = vec![
            "/ip4/0.0.0.0/tcp/0".parse().unwrap(),
            "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap(),
            "/ip4/127.0.0.1/tcp/7465".parse().unwrap(),
        ];
        let bound: Vec<libp2p::Multiaddr> = vec![
            "/ip4/127.0.0.1/udp/5000/quic-v1/p2p/12D3KooWSLsod1vcdqJhRZujHA37dhjxAPEpxqAfuatqZVe4MFsQ"
                .parse()
                .unwrap(),
            "/ip4/127.0.0.1/tcp/4000".parse().unwrap(),
        ];
        let kept: Vec<String> = concrete_ports(&asked, &bound)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            kept,
            [
                "/ip4/0.0.0.0/tcp/4000",
                "/ip4/0.0.0.0/udp/5000/quic-v1",
                "/ip4/127.0.0.1/tcp/7465"
            ]
        );
    }
}
