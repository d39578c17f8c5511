//! P7: live propagation of one `put` to the other online devices.
//!
//! Three in-process nodes of one account (see [`crate::mesh`]) run on
//! loopback TCP, each connected to the other two. After a warm-up that
//! proves the sync sessions are open, A writes small new records one at a
//! time with `Handle::put`; from the moment the put is acknowledged (durable
//! on A) the benchmark polls `get` on B's and C's engines every 0.2 ms until
//! both return the record. That interval (the later of B and C) is one
//! sample: A's frame to each peer, their merge and durable commit, and the
//! view update that makes it readable.
//!
//! Baseline: the round trip of a 64-byte message over a plain loopback TCP
//! connection (`TCP_NODELAY`, an echo thread), in the same run: the floor of
//! any one-hop exchange on this machine.
//!
//! Targets: p50 ≤ 10 ms; p99 ≤ 50 ms.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearth_bench::stats::Summary;
use hearth_crdt::collection::PutMode;
use hearth_node::engine::Handle;
use serde_json::json;

use crate::Ctx;
use crate::mesh::{Account, Node, stop_all};
use crate::report::Outcome;

const DOCTYPE: &str = "bench.notes";
const PUTS: usize = 200;
const WARMUP: usize = 10;
const POLL: Duration = Duration::from_micros(200);
const TIMEOUT: Duration = Duration::from_secs(10);
const ECHOES: usize = 1000;

/// One put's figures.
struct Sample {
    ack: Duration,
    b: Duration,
    c: Duration,
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    let account = Account::new(3)?;
    let mut engines = Vec::new();
    for i in 0..3 {
        let (_, engine) = account.create(i, &ctx.fresh_dir(&format!("p7-dev{i}"))?)?;
        engines.push(engine);
    }
    let mut nodes = Vec::new();
    let result = (|| {
        for engine in engines {
            nodes.push(ctx.rt.block_on(Node::start(engine))?);
        }
        let connect_started = Instant::now();
        ctx.rt.block_on(async {
            for x in &nodes {
                for y in &nodes {
                    if x.id != y.id {
                        x.learn(y).await?;
                    }
                }
            }
            for x in &nodes {
                x.wait_connected(2, Duration::from_secs(30)).await?;
            }
            anyhow::Ok(())
        })?;
        let connect = connect_started.elapsed();
        let handles: Vec<Handle> = nodes.iter().map(|n| n.handle().clone()).collect();
        for i in 0..WARMUP {
            one_put(ctx, &handles, &format!("warm-{i:04}"))?;
        }
        let mut samples = Vec::with_capacity(PUTS);
        for i in 0..PUTS {
            samples.push(one_put(ctx, &handles, &format!("note-{i:05}"))?);
        }
        anyhow::Ok((samples, connect))
    })();
    stop_all(nodes, &ctx.rt);
    let (samples, connect) = result?;
    let echo = tcp_echo(ECHOES)?;

    let both: Vec<Duration> = samples.iter().map(|s| s.b.max(s.c)).collect();
    let sum = |v: Vec<Duration>| Summary::of(&v).context("no samples");
    let both = sum(both)?;
    let b = sum(samples.iter().map(|s| s.b).collect())?;
    let c = sum(samples.iter().map(|s| s.c).collect())?;
    let ack = sum(samples.iter().map(|s| s.ack).collect())?;
    let echo = sum(echo)?;

    let mut o = Outcome::new("P7", "live propagation of one put to 2 online devices");
    let p50 = o.figure("hearth ack → on B and C, p50", both.p50_us / 1000.0, "ms");
    let p99 = o.figure("hearth ack → on B and C, p99", both.p99_us / 1000.0, "ms");
    o.figure("hearth ack → on B and C, max", both.max_us / 1000.0, "ms");
    o.figure("hearth ack → on B, p50", b.p50_us / 1000.0, "ms");
    o.figure("hearth ack → on C, p50", c.p50_us / 1000.0, "ms");
    o.figure(
        "put on A until acknowledged, p50",
        ack.p50_us / 1000.0,
        "ms",
    );
    o.figure("tcp loopback round trip, p50", echo.p50_us / 1000.0, "ms");
    o.figure("tcp loopback round trip, p99", echo.p99_us / 1000.0, "ms");
    o.figure(
        "p50 propagation / tcp round trip",
        both.p50_us / echo.p50_us,
        "×",
    );
    o.figure(
        "3 nodes start → fully connected",
        connect.as_secs_f64() * 1000.0,
        "ms",
    );
    o.at_most("propagation p50", p50, 10.0, "≤ 10 ms".into());
    o.at_most("propagation p99", p99, 50.0, "≤ 50 ms".into());
    o.note(format!(
        "{PUTS} sequential puts of ~40-byte records on A after {WARMUP} warm-up puts; 3 in-process \
         nodes (engine threads + libp2p TCP/Noise/Yamux on 127.0.0.1) in this process; B and C \
         polled with Handle::get every {} µs, so a sample can read up to that much late",
        POLL.as_micros()
    ));
    Ok(o)
}

/// Writes one record on the first node and waits until the two others can
/// read it.
fn one_put(ctx: &Ctx, handles: &[Handle], id: &str) -> Result<Sample> {
    let body = json!({"title": format!("note {id}"), "done": false});
    let started = Instant::now();
    ctx.rt
        .block_on(handles[0].put(DOCTYPE, Some(id.to_owned()), body, PutMode::Create))?;
    let acked = Instant::now();
    let (mut on_b, mut on_c) = (None, None);
    loop {
        for (seen, handle) in [(&mut on_b, &handles[1]), (&mut on_c, &handles[2])] {
            if seen.is_none() && ctx.rt.block_on(handle.get(DOCTYPE, id)).is_ok() {
                *seen = Some(acked.elapsed());
            }
        }
        if let (Some(b), Some(c)) = (on_b, on_c) {
            return Ok(Sample {
                ack: acked - started,
                b,
                c,
            });
        }
        if acked.elapsed() > TIMEOUT {
            bail!("record {id} did not reach both devices within {TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Round trips of a 64-byte message over loopback TCP to an echo thread.
fn tcp_echo(count: usize) -> Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            s.write_all(&buf)?;
        }
    });
    let mut client = TcpStream::connect(addr)?;
    client.set_nodelay(true)?;
    let mut buf = [7u8; 64];
    let mut out = Vec::with_capacity(count);
    for i in 0..count + 50 {
        let started = Instant::now();
        client.write_all(&buf)?;
        client.read_exact(&mut buf)?;
        if i >= 50 {
            out.push(started.elapsed());
        }
    }
    drop(client);
    let _ = server.join();
    Ok(out)
}
