//! P11: an idle node.
//!
//! A node runs as a child process on a freshly initialised, empty home. After
//! 2 s of idleness its VmRSS is read, then its CPU time (utime + stime from
//! `/proc/PID/stat`) over a 3 s idle window. For scale, the same figures are
//! read from an idle `sleep` process started alongside: the floor any
//! process pays on this machine.
//!
//! Targets: RSS ≤ 40 MiB; CPU about 0 (here: at most one clock tick, 10 ms,
//! in the 3 s window).

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use hearth_bench::procfs;

use crate::Ctx;
use crate::daemon::Daemon;
use crate::node;
use crate::report::{Outcome, mib};

const SETTLE: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(3);

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
        anyhow::Ok((mem, mem_after, floor, after.saturating_sub(before)))
    })();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let (mem, mem_after, floor, ticks) = result?;
    let hz = procfs::ticks_per_second();
    let cpu_ms = ticks as f64 * 1000.0 / hz as f64;

    let mut o = Outcome::new("P11", "idle node");
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
    o.note(format!(
        "node: {}; empty initialised home; CPU resolution one clock tick ({tick_ms:.0} ms)",
        ctx.launcher.describe()
    ));
    Ok(o)
}
