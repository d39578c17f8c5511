//! P11: an idle node, alone and connected to two devices.
//!
//! - **Alone.** A node runs as a child process on a freshly initialised,
//!   empty home (default network: TCP and QUIC, mDNS). After 2 s of
//!   idleness its VmRSS is read, then its CPU time (utime + stime from
//!   `/proc/PID/stat`) over a 3 s idle window.
//! - **Connected.** Three nodes of one account (homes made as a pairing
//!   leaves them, see [`crate::mesh`], each remembering the others' fixed
//!   loopback addresses) run as child processes with `--listen
//!   /ip4/127.0.0.1/tcp/PORT --no-mdns`. Once every node's
//!   `/_hearth/status` lists the two others under `network.connected`, they
//!   idle 3 s; then the first node's VmRSS is read and its CPU time over a
//!   further 3 s.
//!
//! For scale, the same figures are read from an idle `sleep` process started
//! alongside: the floor any process pays on this machine.
//!
//! Targets: RSS ≤ 40 MiB; CPU about 0 (here: at most one clock tick, 10 ms,
//! in the 3 s window).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearth_bench::procfs;

use crate::Ctx;
use crate::daemon::Daemon;
use crate::mesh::Account;
use crate::node;
use crate::report::{Outcome, mib};

const SETTLE: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(3);
/// Devices in the connected part: the measured node and two peers.
const DEVICES: usize = 3;
/// How long the three nodes may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the connected part measured on the first node.
struct Connected {
    mem: procfs::Memory,
    ticks: u64,
    connect: Duration,
    /// VmRSS of every node, the measured one first.
    all_rss: Vec<u64>,
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    let dir = ctx.fresh_dir("p11-home")?;
    let home = node::init_home(&dir)?;
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start `sleep` for the floor")?;
    let result = (|| {
        let daemon = Daemon::start(&ctx.launcher, &home, &dir.join("node.log"))?;
        std::thread::sleep(SETTLE);
        let pid = daemon.pid();
        let mem = procfs::memory(Some(pid))?;
        let floor = procfs::memory(Some(sleeper.id()))?;
        let before = procfs::cpu_ticks(pid)?;
        std::thread::sleep(WINDOW);
        let after = procfs::cpu_ticks(pid)?;
        let mem_after = procfs::memory(Some(pid))?;
        daemon.stop()?;
        let connected = connected(ctx)?;
        anyhow::Ok((
            mem,
            mem_after,
            floor,
            after.saturating_sub(before),
            connected,
        ))
    })();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let (mem, mem_after, floor, ticks, connected) = result?;
    let hz = procfs::ticks_per_second();
    let cpu_ms = ticks as f64 * 1000.0 / hz as f64;

    let mut o = Outcome::new("P11", "idle node, alone and connected to 2 devices");
    o.figure("hearth idle VmRSS after 2 s", mib(mem.rss), "MiB");
    o.figure("hearth idle VmRSS after 5 s", mib(mem_after.rss), "MiB");
    o.figure("hearth VmHWM (peak RSS)", mib(mem.peak_rss), "MiB");
    o.figure("hearth threads", mem.threads as f64, "");
    o.figure("hearth CPU over 3 s idle", cpu_ms, "ms");
    o.figure("floor: idle `sleep` VmRSS", mib(floor.rss), "MiB");
    o.at_most("idle RSS", mib(mem_after.rss), 40.0, "≤ 40 MiB".into());
    let tick_ms = 1000.0 / hz as f64;
    o.at_most(
        "idle CPU over 3 s",
        cpu_ms,
        tick_ms,
        format!("≤ {tick_ms:.0} ms"),
    );
    let conn_cpu_ms = connected.ticks as f64 * 1000.0 / hz as f64;
    o.figure(
        "connected to 2: VmRSS 3 s after connecting",
        mib(connected.mem.rss),
        "MiB",
    );
    o.figure(
        "connected to 2: VmRSS of the 3 nodes, max",
        mib(connected.all_rss.iter().copied().max().unwrap_or(0)),
        "MiB",
    );
    o.figure("connected to 2: threads", connected.mem.threads as f64, "");
    o.figure("connected to 2: CPU over 3 s idle", conn_cpu_ms, "ms");
    o.figure(
        "connected to 2: 3 nodes spawned → all connected",
        connected.connect.as_secs_f64() * 1000.0,
        "ms",
    );
    o.at_most(
        "idle RSS, connected to 2",
        mib(connected.mem.rss),
        40.0,
        "≤ 40 MiB".into(),
    );
    o.at_most(
        "idle CPU over 3 s, connected to 2",
        conn_cpu_ms,
        tick_ms,
        format!("≤ {tick_ms:.0} ms"),
    );
    o.note(format!(
        "node: {}; alone: empty initialised home, default network; connected: 3 nodes of one \
         account on 127.0.0.1 TCP, no mDNS, homes created on the account log a pairing gives \
         (pairing handshake skipped); CPU resolution one clock tick ({tick_ms:.0} ms)",
        ctx.launcher.describe()
    ));
    Ok(o)
}

/// Three nodes of one account, connected to each other: the first one's
/// idle figures.
fn connected(ctx: &mut Ctx) -> Result<Connected> {
    let account = Account::new(DEVICES)?;
    let ports = free_ports(DEVICES)?;
    let listen: Vec<String> = ports
        .iter()
        .map(|p| format!("/ip4/127.0.0.1/tcp/{p}"))
        .collect();
    let mut homes = Vec::new();
    for i in 0..DEVICES {
        let dir = ctx.fresh_dir(&format!("p11-dev{i}"))?;
        let (home, mut engine) = account.create(i, &dir)?;
        for (j, addr) in listen.iter().enumerate() {
            if j != i {
                engine.remember_address(account.id(j), addr.clone())?;
            }
        }
        drop(engine);
        homes.push((home, dir));
    }
    let started = Instant::now();
    let mut daemons = Vec::new();
    for ((home, dir), addr) in homes.iter().zip(&listen) {
        daemons.push(Daemon::start_listening(
            &ctx.launcher,
            home,
            &dir.join("node.log"),
            Some(addr),
        )?);
    }
    loop {
        let mut all = true;
        for d in &daemons {
            let status = d.get("/_hearth/status")?;
            let peers = status["network"]["connected"]
                .as_array()
                .map_or(0, Vec::len);
            all &= peers == DEVICES - 1;
        }
        if all {
            break;
        }
        if started.elapsed() > CONNECT_TIMEOUT {
            bail!("the {DEVICES} nodes did not all connect within {CONNECT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect = started.elapsed();
    std::thread::sleep(WINDOW);
    let pid = daemons[0].pid();
    let mem = procfs::memory(Some(pid))?;
    let all_rss = daemons
        .iter()
        .map(|d| procfs::memory(Some(d.pid())).map(|m| m.rss))
        .collect::<Result<Vec<_>, _>>()?;
    let before = procfs::cpu_ticks(pid)?;
    std::thread::sleep(WINDOW);
    let ticks = procfs::cpu_ticks(pid)?.saturating_sub(before);
    for d in daemons {
        d.stop()?;
    }
    Ok(Connected {
        mem,
        ticks,
        connect,
        all_rss,
    })
}

/// `count` distinct loopback TCP ports free right now.
pub(crate) fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free loopback ports")?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?)
}
