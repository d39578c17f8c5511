use hearth_crypto::identity::DeviceKey;
use rand_core::OsRng;
use serde_json::json;

use super::*;
use crate::node::{Config, Output};

/// A one-device account named `name`, its device seeded with `seed`.
pub(in crate::node) fn account(seed: u8, name: &str, config: Config) -> Node {
    let key = DeviceKey::from_bytes(&[seed; 32]);
    let log = Log::genesis(&key, name, 0);
    let mut node = Node::new(key, name, log, config);
    let id = node.id();
    node.set_card_addrs(vec![(
        id,
        vec![format!("/ip4/127.0.0.1/tcp/{}", 4000 + u16::from(seed))],
    )]);
    node
}

fn deliveries(out: &Outputs) -> Vec<(DeviceId, Vec<u8>)> {
    out.items
        .iter()
        .filter_map(|o| match o {
            Output::Deliver { peer, frame, .. } => Some((*peer, frame.clone())),
            _ => None,
        })
        .collect()
}

/// Carries every delivery in `out` from `from` to `to` and its answer
/// back; returns the answers.
fn carry(from: &mut Node, to: &mut Node, out: &Outputs) -> Vec<Reply> {
    let mut replies = Vec::new();
    for (peer, frame) in deliveries(out) {
        assert_eq!(peer, to.id());
        let (reply, bytes, _) = to.share_request(10, from.id(), &frame);
        let (problem, _) = from.share_reply(10, peer, Some(&bytes));
        if !matches!(reply, Reply::Refused { .. }) {
            assert_eq!(problem, None);
        }
        replies.push(reply);
    }
    replies
}

fn state(node: &Node, of: &Node) -> (State, Option<Direction>) {
    let c = &node.contacts()[&of.log().account_id()];
    (c.state(), c.direction())
}

#[test]
fn two_accounts_become_contacts_by_card_request_and_acceptance() {
    let mut alice = account(1, "alice", Config::default());
    let mut bob = account(2, "bob", Config::default());
    let bob_card = Card::decode(&bob.card().unwrap().encode()).unwrap();

    let (_, out) = alice.add_contact(0, bob_card, "Bob").unwrap();
    assert!(
        matches!(out.items[0], Output::Persist(_)),
        "stored before it is sent"
    );
    assert_eq!(carry(&mut alice, &mut bob, &out), vec![Reply::Pending]);
    assert_eq!(
        state(&alice, &bob),
        (State::Pending, Some(Direction::Outgoing))
    );
    assert_eq!(
        state(&bob, &alice),
        (State::Pending, Some(Direction::Incoming))
    );
    assert!(
        !alice.contacts()[&bob.log().account_id()].deliver,
        "delivered once"
    );
    // Bob's node admits Alice's device to ask, and Alice's admits Bob's.
    assert!(bob.members().contacts.contains(&alice.id()));
    assert!(alice.members().contacts.contains(&bob.id()));

    // Bob accepts the request by Alice's card name.
    let (_, out) = bob.accept_contact(20, "alice", "Alice").unwrap();
    let replies = carry(&mut bob, &mut alice, &out);
    assert!(matches!(replies[..], [Reply::Known { .. }]));
    assert_eq!(state(&alice, &bob), (State::Established, None));
    assert_eq!(state(&bob, &alice), (State::Established, None));
    assert_eq!(
        bob.find_contact("Alice").unwrap().account,
        alice.log().account_id()
    );
}

#[test]
fn a_contact_follows_the_other_accounts_new_devices() {
    let mut alice = account(1, "alice", Config::default());
    let mut bob = account(2, "bob", Config::default());
    let (_, out) = alice.add_contact(0, bob.card().unwrap(), "Bob").unwrap();
    carry(&mut alice, &mut bob, &out);
    let (_, out) = bob.accept_contact(0, "alice", "Alice").unwrap();
    carry(&mut bob, &mut alice, &out);

    // Bob pairs a phone: his node owes Alice his card again.
    let phone = DeviceKey::from_bytes(&[9; 32]).id();
    let (_, out) = bob.add_device(30, phone, "bob-phone").unwrap();
    let sent = deliveries(&out);
    assert_eq!(sent.len(), 1, "to Alice's one device: {out:?}");
    carry(&mut bob, &mut alice, &out);
    let known = &alice.contacts()[&bob.log().account_id()];
    assert!(known.devices().contains(&phone));
    assert!(alice.members().contacts.contains(&phone));

    // Bob removes it again: Alice's node refuses it from then on.
    let out = bob.remove_device(40, phone).unwrap();
    carry(&mut bob, &mut alice, &out);
    assert!(!alice.members().contacts.contains(&phone));
}

#[test]
fn a_card_from_a_device_outside_its_account_is_refused() {
    let alice = account(1, "alice", Config::default());
    let mut bob = account(2, "bob", Config::default());
    let mallory = DeviceKey::from_bytes(&[7; 32]).id();
    let frame = encode(&Request::Card {
        card: alice.card().unwrap().to_bytes(),
    });
    let (reply, _, out) = bob.share_request(0, mallory, &frame);
    assert!(
        matches!(reply, Reply::Refused { ref reason } if reason.contains("not a member")),
        "{reply:?}"
    );
    assert!(out.items.is_empty());
    assert!(bob.contacts().is_empty());
    // Bytes that are no message at all.
    let (reply, _, _) = bob.share_request(0, alice.id(), b"\x01garbage");
    assert!(matches!(reply, Reply::Refused { .. }));
}

#[test]
fn requests_are_bounded_per_device_per_minute_and_in_number() {
    let limits = Limits {
        requests_per_minute: 3,
        max_pending: 2,
        ..Limits::default()
    };
    let config = Config {
        contacts: limits,
        ..Config::default()
    };
    let mut bob = account(2, "bob", config);
    let alice = account(1, "alice", Config::default());
    let frame = encode(&Request::Card {
        card: alice.card().unwrap().to_bytes(),
    });
    for _ in 0..3 {
        let (reply, _, _) = bob.share_request(0, alice.id(), &frame);
        assert_eq!(reply, Reply::Pending);
    }
    let (reply, _, _) = bob.share_request(1, alice.id(), &frame);
    assert!(
        matches!(reply, Reply::Refused { ref reason } if reason.contains("too many")),
        "{reply:?}"
    );
    // A minute later the window opens again.
    let (reply, _, _) = bob.share_request(60_001, alice.id(), &frame);
    assert_eq!(reply, Reply::Pending);

    // Pending requests: at most two kept.
    for seed in [11, 12] {
        let other = account(seed, "other", Config::default());
        let f = encode(&Request::Card {
            card: other.card().unwrap().to_bytes(),
        });
        let (reply, _, _) = bob.share_request(0, other.id(), &f);
        if seed == 11 {
            assert_eq!(reply, Reply::Pending);
        } else {
            assert!(
                matches!(reply, Reply::Refused { ref reason } if reason.contains("unanswered")),
                "{reply:?}"
            );
        }
    }
    assert_eq!(bob.contacts().len(), 2);

    // A message over the size limit is refused before it is decoded.
    let big = vec![1u8; limits.max_message_bytes + 1];
    let (reply, _, _) = bob.share_request(120_000, alice.id(), &big);
    assert!(
        matches!(reply, Reply::Refused { ref reason } if reason.contains("over the limit")),
        "{reply:?}"
    );
}

#[test]
fn an_undelivered_card_is_tried_again_after_the_retry_time() {
    let mut alice = account(1, "alice", Config::default());
    let bob = account(2, "bob", Config::default());
    let (_, out) = alice.add_contact(0, bob.card().unwrap(), "Bob").unwrap();
    let timer = out.items.iter().find_map(|o| match o {
        Output::Timer { at } => Some(*at),
        _ => None,
    });
    assert_eq!(timer, Some(Limits::default().retry_ms));
    let (problem, _) = alice.share_reply(5, bob.id(), None);
    assert!(problem.is_some());
    let early = alice.handle(10, &mut OsRng, crate::node::Input::Tick);
    assert!(deliveries(&early).is_empty());
    let due = alice.handle(
        Limits::default().retry_ms + 5,
        &mut OsRng,
        crate::node::Input::Tick,
    );
    assert_eq!(deliveries(&due).len(), 1);
}

#[test]
fn users_cannot_write_the_contacts_collection_and_own_cards_are_refused() {
    let mut alice = account(1, "alice", Config::default());
    let err = alice
        .put(
            0,
            &mut OsRng,
            COLLECTION,
            None,
            json!({"x": 1}),
            PutMode::Create,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Reserved(_)), "{err}");
    let own = alice.card().unwrap();
    let err = alice.add_contact(0, own, "me").unwrap_err();
    assert!(matches!(err, Error::Contact(ContactError::Own)), "{err}");
}

#[test]
fn contacts_reload_from_their_collection() {
    let mut alice = account(1, "alice", Config::default());
    let bob = account(2, "bob", Config::default());
    let (_, out) = alice.add_contact(0, bob.card().unwrap(), "Bob").unwrap();
    let mut chunks: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut catalog = None;
    for item in out.items {
        if let Output::Persist(batch) = item {
            for w in batch.writes {
                match w {
                    crate::node::Write::Catalog { collection, entry }
                        if collection == COLLECTION =>
                    {
                        if chunks.is_empty() {
                            chunks = vec![Vec::new(); usize::from(entry.shards)];
                        }
                        catalog = Some(entry);
                    }
                    crate::node::Write::Chunk {
                        collection,
                        shard,
                        bytes,
                        ..
                    } if collection == COLLECTION => {
                        chunks[usize::from(shard)].push(bytes);
                    }
                    _ => {}
                }
            }
        }
    }
    let key = DeviceKey::from_bytes(&[1; 32]);
    let mut reopened = Node::new(key, "alice", (**alice.log()).clone(), Config::default());
    reopened.load(COLLECTION, catalog.unwrap(), chunks).unwrap();
    let c = reopened.find_contact("Bob").unwrap();
    assert_eq!(c.account, bob.log().account_id());
    assert!(reopened.members().contacts.contains(&bob.id()));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever a peer sends, the node answers (a refusal) without storing
    /// anything, and stays able to take a real request afterwards.
    #[test]
    fn any_bytes_from_a_peer_are_refused_without_a_trace(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        replies in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
    ) {
        let mut bob = account(2, "bob", Config::default());
        let alice = account(1, "alice", Config::default());
        let (reply, _, out) = bob.share_request(0, alice.id(), &bytes);
        let is_refused = matches!(reply, Reply::Refused { .. });
        proptest::prop_assert!(is_refused);
        proptest::prop_assert!(out.items.is_empty());
        // A reply nobody asked for changes nothing either.
        let (_, out) = bob.share_reply(0, alice.id(), Some(&replies));
        proptest::prop_assert!(out.items.is_empty());
        let frame = encode(&Request::Card { card: alice.card().unwrap().to_bytes() });
        let (reply, _, _) = bob.share_request(1, alice.id(), &frame);
        proptest::prop_assert_eq!(reply, Reply::Pending);
    }
}
