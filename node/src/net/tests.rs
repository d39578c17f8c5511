//! In-process loopback tests of the network: admission, streams, limits.

use std::time::Duration;

use futures::StreamExt as _;
use hearth_crypto::identity::DeviceKey;
use libp2p::{Multiaddr, PeerId};
use tokio::time::timeout;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn new_key() -> DeviceKey {
    DeviceKey::generate(&mut rand::rngs::OsRng)
}

fn peer_id(key: &DeviceKey) -> PeerId {
    crate::mesh::peer_id(&key.id()).unwrap()
}

fn config(listen: &str) -> Config {
    Config {
        listen: vec![listen.parse().unwrap()],
        mdns: false,
        ..Config::default()
    }
}

const TCP: &str = "/ip4/127.0.0.1/tcp/0";
const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

async fn start(key: &DeviceKey, listen: &str, admission: &Admission) -> Net {
    spawn(key, config(listen), admission.clone()).await.unwrap()
}

async fn first_addr(net: &Net) -> Multiaddr {
    let addrs = net.handle.listen_addrs().await.unwrap();
    addrs.into_iter().next().expect("a listen address")
}

/// Waits for `wanted`, skipping other events; panics after [`WAIT`].
async fn expect_event(net: &mut Net, wanted: Event) {
    let found = timeout(WAIT, async {
        while let Some(event) = net.events.recv().await {
            if event == wanted {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no {wanted:?} within {WAIT:?}");
}

/// Asserts that no event about `peer` other than a disconnection shows up
/// during `quiet`.
async fn expect_no_connection(net: &mut Net, peer: PeerId, quiet: Duration) {
    let got = timeout(quiet, async {
        while let Some(event) = net.events.recv().await {
            if matches!(event, Event::Connected { peer: p, .. } if p == peer) {
                return event;
            }
        }
        std::future::pending().await
    })
    .await;
    assert!(got.is_err(), "unexpected {got:?}");
}

/// Serves one echo of one frame on every admitted SYNC stream.
fn serve_echo(net: &Net, admission: Admission) -> mpsc::Receiver<PeerId> {
    let mut incoming = net.handle.stream_control().accept(SYNC).unwrap();
    let (seen_tx, seen) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Some((peer, mut stream)) = incoming.next().await {
            let _ = seen_tx.try_send(peer);
            if !admission.may_use(&peer, &SYNC) {
                continue;
            }
            if let Ok(Some(frame)) = read_frame(&mut stream, 1024).await {
                let _ = write_frame(&mut stream, &frame).await;
            }
        }
    });
    seen
}

async fn echo(from: &Net, to: PeerId, bytes: &[u8]) -> Vec<u8> {
    let mut control = from.handle.stream_control();
    let mut stream = timeout(WAIT, control.open_stream(to, SYNC))
        .await
        .expect("stream open timed out")
        .expect("stream open failed");
    write_frame(&mut stream, bytes).await.unwrap();
    timeout(WAIT, read_frame(&mut stream, 1024))
        .await
        .expect("echo timed out")
        .unwrap()
        .expect("echo frame")
}

/// Two members, connected by `b` dialling `a`.
async fn connected_pair(listen: &str) -> (Net, Admission, PeerId, Net, Admission, PeerId) {
    let (ka, kb) = (new_key(), new_key());
    let (pa, pb) = (peer_id(&ka), peer_id(&kb));
    let admission_a = Admission::new([pa, pb]);
    let admission_b = Admission::new([pa, pb]);
    let mut a = start(&ka, listen, &admission_a).await;
    let mut b = start(&kb, listen, &admission_b).await;
    b.handle.dial(first_addr(&a).await).await.unwrap();
    expect_event(
        &mut a,
        Event::Connected {
            peer: pb,
            member: true,
        },
    )
    .await;
    expect_event(
        &mut b,
        Event::Connected {
            peer: pa,
            member: true,
        },
    )
    .await;
    // `a` was dialled: it knows how to reach `b` once identify has told it
    // `b`'s listen addresses. Tests that redial from `a` need that first.
    let known = timeout(WAIT, async {
        loop {
            let peers = a.handle.peers().await.unwrap();
            if peers.iter().any(|p| p.id == pb && !p.addrs.is_empty()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(known.is_ok(), "a never learned b's address");
    (a, admission_a, pa, b, admission_b, pb)
}

#[tokio::test]
async fn peer_id_is_the_device_id() {
    let key = new_key();
    let net = start(&key, TCP, &Admission::new([])).await;
    assert_eq!(net.handle.local_peer_id().to_string(), key.id().to_string());
    net.handle.shutdown().await.unwrap();
    assert!(matches!(net.handle.peers().await, Err(Error::Closed)));
}

#[tokio::test]
async fn members_connect_and_exchange_a_frame_over_tcp() {
    let (a, admission_a, pa, b, _, pb) = connected_pair(TCP).await;
    let mut seen = serve_echo(&a, admission_a);
    assert_eq!(echo(&b, pa, b"hello over tcp").await, b"hello over tcp");
    assert_eq!(seen.recv().await, Some(pb));
    let peers = b.handle.peers().await.unwrap();
    let info = peers.iter().find(|p| p.id == pa).expect("a in b's peers");
    assert!(info.connected);
    assert!(!info.addrs.is_empty());
}

#[tokio::test]
async fn members_connect_and_exchange_a_frame_over_quic() {
    let (a, admission_a, pa, b, _, _) = connected_pair(QUIC).await;
    let _seen = serve_echo(&a, admission_a);
    assert_eq!(echo(&b, pa, b"hello over quic").await, b"hello over quic");
}

#[tokio::test]
async fn a_stranger_is_refused_before_any_stream() {
    let (ka, kb, kc) = (new_key(), new_key(), new_key());
    let (pa, pb, pc) = (peer_id(&ka), peer_id(&kb), peer_id(&kc));
    let admission_a = Admission::new([pa, pb]);
    let mut a = start(&ka, TCP, &admission_a).await;
    let mut seen = serve_echo(&a, admission_a);
    // The stranger believes `a` is one of its devices, so only a's gate stands
    // in its way.
    let c = start(&kc, TCP, &Admission::new([pc, pa])).await;
    let addr = first_addr(&a).await;
    c.handle.dial(addr.clone()).await.unwrap();

    let mut control = c.handle.stream_control();
    let attempt = timeout(Duration::from_secs(3), async {
        let mut stream = control.open_stream(pa, SYNC).await.ok()?;
        write_frame(&mut stream, b"let me in").await.ok()?;
        read_frame(&mut stream, 1024).await.ok()?
    })
    .await;
    assert!(
        !matches!(attempt, Ok(Some(_))),
        "the stranger got an answer"
    );
    expect_no_connection(&mut a, pc, Duration::from_millis(300)).await;
    assert!(
        seen.try_recv().is_err(),
        "a stream from the stranger reached the acceptor"
    );
    let peers = a.handle.peers().await.unwrap();
    assert!(!peers.iter().any(|p| p.id == pc && p.connected));
}

#[tokio::test]
async fn with_pairing_open_a_stranger_connects_but_only_as_pending_joiner() {
    let (ka, ks) = (new_key(), new_key());
    let (pa, ps) = (peer_id(&ka), peer_id(&ks));
    let admission_a = Admission::new([pa]);
    admission_a.set_pairing(true);
    let mut a = start(&ka, TCP, &admission_a).await;
    let s = start(&ks, TCP, &Admission::new([ps, pa])).await;
    s.handle.dial(first_addr(&a).await).await.unwrap();
    expect_event(
        &mut a,
        Event::Connected {
            peer: ps,
            member: false,
        },
    )
    .await;
    assert!(!admission_a.is_member(&ps));
    assert_eq!(admission_a.standing(&ps), Some(Standing::PendingJoiner));
    assert!(admission_a.may_use(&ps, &PAIR));
    assert!(!admission_a.may_use(&ps, &SYNC));

    // Closing the pairing window drops the joiner.
    admission_a.set_pairing(false);
    a.handle.refresh_admission().await.unwrap();
    expect_event(&mut a, Event::Disconnected { peer: ps }).await;
}

#[tokio::test]
async fn removing_a_member_disconnects_it_and_a_dial_reconnects_it_once_readmitted() {
    let (mut a, admission_a, pa, b, _, pb) = connected_pair(TCP).await;
    admission_a.set_members([pa]);
    a.handle.refresh_admission().await.unwrap();
    expect_event(&mut a, Event::Disconnected { peer: pb }).await;
    // b still counts a as a member and dials it; a's gate refuses it.
    b.handle.dial_member(pa).await.unwrap();
    expect_no_connection(&mut a, pb, Duration::from_millis(600)).await;
    // A dial a's core would not ask for (b is no member) does nothing.
    a.handle.dial_member(pb).await.unwrap();
    expect_no_connection(&mut a, pb, Duration::from_millis(300)).await;

    // Re-admitted, the member is dialled from its known address.
    admission_a.set_members([pa, pb]);
    a.handle.refresh_admission().await.unwrap();
    a.handle.dial_member(pb).await.unwrap();
    expect_event(
        &mut a,
        Event::Connected {
            peer: pb,
            member: true,
        },
    )
    .await;
}

#[tokio::test]
async fn a_new_address_of_a_member_is_reported_once_and_a_strangers_never() {
    let (ka, kb, kc) = (new_key(), new_key(), new_key());
    let (pa, pb, pc) = (peer_id(&ka), peer_id(&kb), peer_id(&kc));
    let mut a = start(&ka, TCP, &Admission::new([pa, pb])).await;
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/9/p2p/{pb}").parse().unwrap();
    a.handle.add_address(pb, addr.clone()).await.unwrap();
    expect_event(
        &mut a,
        Event::Routable {
            peer: pb,
            address: addr.clone(),
        },
    )
    .await;
    a.handle.add_address(pb, addr).await.unwrap();
    let stranger: Multiaddr = format!("/ip4/127.0.0.1/tcp/9/p2p/{pc}").parse().unwrap();
    a.handle.add_address(pc, stranger).await.unwrap();
    let more = timeout(Duration::from_millis(300), a.events.recv()).await;
    assert!(more.is_err(), "unexpected {more:?}");
}

#[tokio::test]
async fn listen_addrs_are_concrete_and_carry_the_peer_id() {
    let key = new_key();
    let net = spawn(
        &key,
        Config {
            listen: vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()],
            mdns: false,
            ..Config::default()
        },
        Admission::new([]),
    )
    .await
    .unwrap();
    let addrs = net.handle.listen_addrs().await.unwrap();
    assert!(!addrs.is_empty());
    let me = net.handle.local_peer_id();
    for addr in &addrs {
        assert!(!addr.to_string().contains("0.0.0.0"), "{addr}");
        assert_eq!(addr_peer(addr), Some(me), "{addr}");
    }
}

#[tokio::test]
async fn bootstrap_addresses_need_a_peer_id() {
    let config = Config {
        bootstrap: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        ..config(TCP)
    };
    let err = spawn(&new_key(), config, Admission::new([]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MissingPeerId { .. }), "{err:?}");
}

#[tokio::test]
async fn bootstrap_peers_are_admitted_as_infrastructure() {
    let (ka, kb) = (new_key(), new_key());
    let pb = peer_id(&kb);
    let b = start(&kb, TCP, &Admission::new([])).await;
    let admission_a = Admission::new([]);
    let config = Config {
        bootstrap: vec![first_addr(&b).await],
        ..config(TCP)
    };
    let _a = spawn(&ka, config, admission_a.clone()).await.unwrap();
    assert_eq!(admission_a.standing(&pb), Some(Standing::Infrastructure));
    assert!(!admission_a.may_use(&pb, &SYNC));
}

#[tokio::test]
async fn listening_on_an_unsupported_address_is_an_error() {
    let err = spawn(
        &new_key(),
        config("/ip4/127.0.0.1/udp/0"),
        Admission::new([]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Listen { .. }), "{err:?}");
}

#[tokio::test]
async fn a_device_is_reachable_through_an_account_relay() {
    let (kr, ka, kb) = (new_key(), new_key(), new_key());
    let (pr, pa, pb) = (peer_id(&kr), peer_id(&ka), peer_id(&kb));
    // The relay is a device of the account that serves others.
    let relay = spawn(
        &kr,
        Config {
            relay_service: true,
            ..config(TCP)
        },
        Admission::new([pa, pb]),
    )
    .await
    .unwrap();
    let relay_addr = first_addr(&relay).await;
    // A holds a reservation on the relay; B knows A only by its circuit
    // address through the relay.
    let mut a = spawn(
        &ka,
        Config {
            relays: vec![relay_addr.clone()],
            ..config(TCP)
        },
        Admission::new([pb, pr]),
    )
    .await
    .unwrap();
    let mut b = start(&kb, TCP, &Admission::new([pa, pr])).await;
    let circuit = relay_addr
        .with(libp2p::multiaddr::Protocol::P2pCircuit)
        .with(libp2p::multiaddr::Protocol::P2p(pa));
    let seen = serve_echo(&a, Admission::new([pb]));
    // The reservation takes a moment; retry the dial until it lands.
    let connected = timeout(Duration::from_secs(15), async {
        loop {
            let _ = b.handle.dial(circuit.clone()).await;
            let got = timeout(Duration::from_millis(1500), async {
                while let Some(event) = b.events.recv().await {
                    if event
                        == (Event::Connected {
                            peer: pa,
                            member: true,
                        })
                    {
                        return;
                    }
                }
            })
            .await;
            if got.is_ok() {
                return;
            }
        }
    })
    .await;
    assert!(connected.is_ok(), "B never reached A through the relay");
    assert_eq!(echo(&b, pa, b"via relay").await, b"via relay");
    drop(seen);
    let _ = a.events.try_recv();
}
