//! The mesh commands: `pair`, `pair confirm`, `join`, `devices`, and the
//! network flags of `up`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hearth_crypto::identity::{DeviceId, DeviceKey};
use hearth_crypto::membership;
use hearth_crypto::ticket::Invitation;
use libp2p::Multiaddr;
use serde_json::json;

use super::{emit, emit_json};
use crate::cli::{DevicesAction, Global, PairAction};
use crate::client::Backend;
use crate::config::Config;
use crate::daemon::DaemonLock;
use crate::engine::{Engine, now_ms};
use crate::home::Home;
use crate::store::Unlock;
use crate::{net, pairing, qr};

/// How long `hearth join` tries to reach the inviting device.
const DIAL_WAIT: Duration = Duration::from_secs(20);

/// The network settings of `hearth up` from its flags.
pub(super) fn net_config(
    mut config: net::Config,
    listen: &[String],
    no_mdns: bool,
    bootstrap: &[String],
    relay: bool,
    via_relay: &[String],
) -> Result<net::Config> {
    let parse = |flag: &str, text: &String| -> Result<Multiaddr> {
        text.parse().map_err(|e| {
            anyhow!(
                "bad {flag} address {text:?}: {e} (a multiaddr looks like /ip4/0.0.0.0/tcp/7465)"
            )
        })
    };
    if !listen.is_empty() {
        config.listen = listen
            .iter()
            .map(|t| parse("--listen", t))
            .collect::<Result<_>>()?;
    }
    config.mdns = !no_mdns;
    config.bootstrap = bootstrap
        .iter()
        .map(|t| parse("--bootstrap", t))
        .collect::<Result<_>>()?;
    config.relays = via_relay
        .iter()
        .map(|t| parse("--via-relay", t))
        .collect::<Result<_>>()?;
    for addr in config.bootstrap.iter().chain(&config.relays) {
        net::check_peer_addr(addr)?;
    }
    config.relay_service = relay;
    Ok(config)
}

fn remote(backend: &Backend) -> Result<&crate::client::Remote> {
    match backend {
        Backend::Remote(r) => Ok(r),
        Backend::Local { .. } => {
            bail!("pairing needs the running node: start `hearth up` on this device first")
        }
    }
}

/// `hearth pair [confirm CODE]`.
pub(super) fn pair(
    backend: &Backend,
    global: &Global,
    action: Option<PairAction>,
    png: Option<PathBuf>,
    ttl: u64,
) -> Result<()> {
    let api = remote(backend)?;
    if let Some(PairAction::Confirm { code }) = action {
        let reply = api.send("POST", "/_hearth/pair/confirm", &json!({ "code": code }))?;
        if global.json {
            return emit_json(&reply);
        }
        return emit(&format!(
            "confirmed: device {} ({}) joined the account",
            reply["device"].as_str().unwrap_or("?"),
            reply["name"].as_str().unwrap_or("?")
        ));
    }
    let reply = api.send("POST", "/_hearth/pair", &json!({ "ttl_secs": ttl }))?;
    let ticket = reply["ticket"]
        .as_str()
        .ok_or_else(|| anyhow!("the node answered without a ticket"))?;
    let qr_text = reply["qr"].as_str().unwrap_or(ticket);
    emit(ticket)?;
    if let Some(path) = &png {
        // The PNG holds the ticket exactly as printed, so any scanner reads
        // back the same text; the terminal drawing uses the shorter
        // upper-case form, which `hearth join` accepts too.
        qr::write_png(ticket, path)?;
    }
    if global.json {
        return emit_json(&reply);
    }
    emit(&qr::render_terminal(qr_text)?)?;
    let mut err = std::io::stderr();
    if let Some(path) = &png {
        writeln!(err, "QR code written to {}", path.display())?;
    }
    writeln!(
        err,
        "on the new device: hearth join <ticket>  (or hearth join --qr FILE.png); valid {ttl} s"
    )?;
    if !std::io::stdin().is_terminal() {
        writeln!(
            err,
            "the invitation stays open in the node; confirm with `hearth pair confirm <code>`"
        )?;
        return Ok(());
    }
    // On a terminal: wait for the joiner, then ask for its code.
    writeln!(err, "waiting for the new device…")?;
    loop {
        let status = api.get("/_hearth/pair")?;
        if status["open"] != true {
            bail!(
                "{}",
                status["outcome"]
                    .as_str()
                    .unwrap_or("the invitation closed before a device joined")
            );
        }
        if status["code_needed"] == true {
            write!(
                err,
                "device {} ({}) is pairing; type the check code it shows: ",
                status["joiner"].as_str().unwrap_or("?"),
                status["name"].as_str().unwrap_or("?")
            )?;
            err.flush()?;
            let mut code = String::new();
            std::io::stdin().lock().read_line(&mut code)?;
            let reply = api.send(
                "POST",
                "/_hearth/pair/confirm",
                &json!({ "code": code.trim() }),
            )?;
            return emit(&format!(
                "device {} ({}) joined the account",
                reply["device"].as_str().unwrap_or("?"),
                reply["name"].as_str().unwrap_or("?")
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `hearth devices [remove ID]`.
pub(super) fn devices(
    backend: &Backend,
    global: &Global,
    action: Option<DevicesAction>,
) -> Result<()> {
    if let Some(DevicesAction::Remove { id }) = action {
        let _: DeviceId = id
            .parse()
            .map_err(|e| anyhow!("bad device id {id:?}: {e}"))?;
        backend.remove_device(&id)?;
        return emit(&format!(
            "removed {id}: every device of the account refuses it from now on"
        ));
    }
    let devices = backend.devices()?;
    if global.json {
        return emit_json(&serde_json::to_value(&devices)?);
    }
    for d in devices {
        let seen = match (d.this_device, d.online, d.last_seen_ms) {
            (true, _, _) => "this device".to_string(),
            (_, true, _) => "online".to_string(),
            (_, _, Some(ms)) => format!("last seen {}", ago(ms)),
            _ => "never seen".to_string(),
        };
        emit(&format!(
            "{}  {:<16}  added {}  {}",
            d.id,
            d.name,
            ago(d.added_at_ms as i64),
            seen
        ))?;
    }
    Ok(())
}

fn ago(ms: i64) -> String {
    let secs = (now_ms() - ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// `hearth join <ticket>|--qr FILE`.
pub(super) fn join(
    home: &Home,
    global: &Global,
    config: &Config,
    ticket: Option<String>,
    png: Option<PathBuf>,
    name: Option<String>,
    unlock: impl Fn() -> Result<Unlock>,
) -> Result<()> {
    let text = match (ticket, png) {
        (Some(t), _) => t,
        (None, Some(path)) => qr::read_png(&path)?,
        (None, None) => bail!("give a ticket, or --qr FILE.png"),
    };
    let invitation =
        Invitation::decode(text.trim()).context("this is not a valid hearth ticket")?;
    if invitation.is_expired(now_ms().max(0) as u64) {
        bail!(
            "the invitation has expired; create a new one with `hearth pair` on the inviting device"
        );
    }
    home.ensure_dirs()
        .with_context(|| format!("cannot create {}", home.root().display()))?;
    let _lock = DaemonLock::acquire(home)?;
    // An initialised home may join only while it holds nothing of its own.
    let mut existing = None;
    let mut existing_name = None;
    let key = if home.is_initialised() {
        let engine = Engine::open(home, unlock()?, config.engine.clone())?;
        engine.check_may_join().with_context(|| {
            format!(
                "{} cannot join: use a fresh home (--home)",
                home.root().display()
            )
        })?;
        let key = DeviceKey::from_bytes(&engine.device_key().to_bytes());
        existing_name = Some(engine.status().device_name);
        existing = Some(engine);
        key
    } else {
        DeviceKey::generate(&mut rand::rngs::OsRng)
    };
    // An initialised home keeps the name `hearth init --name` gave it.
    let name = name
        .or(existing_name)
        .unwrap_or_else(crate::default_device_name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let timeouts = config.pairing.timeouts();
    let payload = runtime.block_on(pair_with(&key, &invitation, &name, timeouts))?;
    let log =
        membership::Log::decode(&payload).context("the inviting device sent a bad account log")?;
    if log.account_id() != invitation.account() {
        bail!("the inviting device sent the log of another account");
    }
    if !log.is_member(&key.id()) {
        bail!("the inviting device's account log does not list this device");
    }
    let mut engine = match existing {
        Some(mut engine) => {
            engine.adopt_account(log)?;
            engine
        }
        None => {
            let unlock = unlock()?;
            Engine::init_joined(
                home,
                unlock,
                config.kdf.params(),
                key,
                log,
                config.engine.clone(),
            )?
        }
    };
    for addr in invitation.addrs() {
        engine.remember_address(invitation.inviter(), addr.clone())?;
    }
    let status = engine.status();
    drop(engine);
    if global.json {
        return emit_json(&json!({
            "joined": status.account_id,
            "device_id": status.device_id,
            "device_name": status.device_name,
        }));
    }
    emit(&format!(
        "joined account {} as device {} ({}); run `hearth up` to sync",
        status.account_id, status.device_id, status.device_name
    ))
}

/// Dials the inviter named in `invitation`, runs the pairing handshake, and
/// returns the welcome payload.
async fn pair_with(
    key: &DeviceKey,
    invitation: &Invitation,
    name: &str,
    timeouts: pairing::Timeouts,
) -> Result<Vec<u8>> {
    let inviter = invitation.inviter();
    let inviter_peer = crate::mesh::peer_id(&inviter)
        .ok_or_else(|| anyhow!("the ticket's device id is not a libp2p peer id"))?;
    // The joiner only dials out; it listens on loopback because the
    // network needs one listener.
    let config = net::Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        mdns: false,
        ..net::Config::default()
    };
    let admission = net::Admission::new([inviter_peer]);
    let mut network = net::spawn(key, config, admission)
        .await
        .context("cannot start the network")?;
    let mut reached = false;
    for addr in invitation.addrs() {
        let Ok(addr) = addr.parse::<Multiaddr>() else {
            continue;
        };
        if network
            .handle
            .add_address(inviter_peer, addr.clone())
            .await
            .is_ok()
            && network.handle.dial(addr).await.is_ok()
        {
            reached = true;
        }
    }
    if !reached {
        bail!(
            "none of the ticket's addresses could be dialled: {:?}",
            invitation.addrs()
        );
    }
    let deadline = Instant::now() + DIAL_WAIT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            bail!(
                "could not reach the inviting device at {:?} within {} s; is `hearth up` running there?",
                invitation.addrs(),
                DIAL_WAIT.as_secs()
            );
        }
        match tokio::time::timeout(remaining, network.events.recv()).await {
            Ok(Some(net::Event::Connected { peer, .. })) if peer == inviter_peer => {
                // The inviter's gate closes refused connections right away.
                tokio::time::sleep(Duration::from_millis(50)).await;
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the network stopped"),
            Err(_) => {}
        }
    }
    let mut control = network.handle.stream_control();
    let stream = control
        .open_stream(inviter_peer, net::PAIR)
        .await
        .map_err(|e| {
            anyhow!(
                "the inviting device refused to pair ({e}): its invitation is no longer open (used, expired or cancelled); create a new one with `hearth pair`"
            )
        })?;
    let payload = pairing::join(
        stream,
        key.id(),
        invitation.clone(),
        name,
        now_ms().max(0) as u64,
        timeouts,
        |code| {
            println!("check code: {code}");
            let _ = std::io::stdout().flush();
            eprintln!("type this code on the inviting device (its `hearth pair` prompt, or `hearth pair confirm {code}`)");
        },
    )
    .await?;
    let _ = network.handle.shutdown().await;
    Ok(payload)
}
