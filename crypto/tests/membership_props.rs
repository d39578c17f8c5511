//! Property tests of the membership log through its public API: random
//! histories of adds, removes and syncs across several replicas.

use hearth_crypto::identity::{DeviceId, DeviceKey};
use hearth_crypto::membership::{Applied, Entry, Error, Log, Op};
use proptest::prelude::*;
use proptest::sample::Index;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

const REPLICAS: usize = 3;
/// Devices that take part; one more key is kept as an outsider.
const DEVICES: usize = 6;

#[derive(Debug, Clone)]
enum Action {
    Add {
        replica: usize,
        author: Index,
        device: usize,
    },
    Remove {
        replica: usize,
        author: Index,
        device: Index,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let r = 0..REPLICAS;
    prop_oneof![
        4 => (r.clone(), any::<Index>(), 0..DEVICES).prop_map(|(replica, author, device)| {
            Action::Add { replica, author, device }
        }),
        2 => (r.clone(), any::<Index>(), any::<Index>()).prop_map(|(replica, author, device)| {
            Action::Remove { replica, author, device }
        }),
        3 => (r.clone(), r).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

fn history() -> impl Strategy<Value = Vec<Action>> {
    proptest::collection::vec(action(), 8..60)
}

fn keys() -> Vec<DeviceKey> {
    let mut rng = StdRng::seed_from_u64(2024);
    (0..=DEVICES)
        .map(|_| DeviceKey::generate(&mut rng))
        .collect()
}

/// Mostly a current member of `log`, sometimes any participating device, so
/// refused operations happen too.
fn pick(log: &Log, keys: &[DeviceKey], index: &Index) -> usize {
    let members = log.members();
    match members.get(index.index(members.len() + 1)) {
        Some(m) => keys
            .iter()
            .position(|k| k.id() == m.device)
            .expect("members are participating devices"),
        None => index.index(DEVICES),
    }
}

/// Runs a history and returns the replicas.
fn run(keys: &[DeviceKey], actions: &[Action]) -> Vec<Log> {
    let mut replicas = vec![Log::genesis(&keys[0], "founder", 0); REPLICAS];
    for (t, action) in actions.iter().enumerate() {
        let t = t as u64 + 1;
        match action {
            Action::Add {
                replica,
                author,
                device,
            } => {
                let log = &mut replicas[*replica];
                let author = pick(log, keys, author);
                let was_member = log.is_member(&keys[author].id());
                let result = log.add_device(&keys[author], keys[*device].id(), "dev", t);
                if result.is_ok() {
                    assert!(was_member);
                    assert!(log.is_member(&keys[*device].id()));
                }
            }
            Action::Remove {
                replica,
                author,
                device,
            } => {
                let log = &mut replicas[*replica];
                let author = pick(log, keys, author);
                let device = pick(log, keys, device);
                let result = log.remove_device(&keys[author], keys[device].id(), t);
                if result.is_ok() {
                    assert!(!log.is_member(&keys[device].id()));
                    assert!(log.is_removed(&keys[device].id()));
                }
            }
            Action::Sync { from, to } => {
                let other = replicas[*from].clone();
                replicas[*to]
                    .merge(&other)
                    .expect("replicas of one account merge");
            }
        }
    }
    replicas
}

fn merged(replicas: &[Log]) -> Log {
    let mut all = replicas[0].clone();
    for other in &replicas[1..] {
        all.merge(other).expect("replicas of one account merge");
    }
    all
}

fn fingerprint(
    log: &Log,
    keys: &[DeviceKey],
) -> (Vec<hearth_crypto::membership::Member>, Vec<bool>) {
    let removed = keys.iter().map(|k| log.is_removed(&k.id())).collect();
    (log.members(), removed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn encode_decode_round_trips_for_any_history(actions in history()) {
        let keys = keys();
        let replicas = run(&keys, &actions);
        let all = merged(&replicas);
        for log in replicas.iter().chain([&all]) {
            let bytes = log.encode();
            let back = Log::decode(&bytes).unwrap();
            prop_assert_eq!(back.encode(), bytes);
            prop_assert_eq!(back.account_id(), log.account_id());
            prop_assert_eq!(back.heads(), log.heads());
            prop_assert_eq!(fingerprint(&back, &keys), fingerprint(log, &keys));
        }
    }

    /// Entries delivered one by one in a random order, with duplicates and
    /// with entries whose parents have not arrived yet retried later, give
    /// the same members as the replica that made them.
    #[test]
    fn members_do_not_depend_on_arrival_order(actions in history(), seed in any::<u64>()) {
        let keys = keys();
        let replicas = run(&keys, &actions);
        let all = merged(&replicas);

        let mut pending: Vec<Entry> = all.entries()[1..].to_vec();
        let mut rng = StdRng::seed_from_u64(seed);
        pending.shuffle(&mut rng);
        let mut log = Log::from_genesis(all.entries()[0].clone()).unwrap();
        let mut delivered = Vec::new();
        while !pending.is_empty() {
            let mut waiting = Vec::new();
            for entry in pending {
                match log.apply(entry.clone()) {
                    Ok(Applied::Added) => delivered.push(entry),
                    Ok(Applied::Duplicate) => prop_assert!(false, "delivered once only"),
                    Err(Error::MissingParents { missing }) => {
                        prop_assert!(missing.iter().all(|h| !log.contains(h)));
                        waiting.push(entry);
                    }
                    Err(e) => prop_assert!(false, "entry refused: {e}"),
                }
            }
            prop_assert!(waiting.len() < all.entries().len(), "no progress");
            pending = waiting;
        }
        for entry in delivered.choose_multiple(&mut rng, 3) {
            prop_assert_eq!(log.apply(entry.clone()).unwrap(), Applied::Duplicate);
        }
        prop_assert_eq!(log.heads(), all.heads());
        prop_assert_eq!(fingerprint(&log, &keys), fingerprint(&all, &keys));

        // Every replica converges after syncing with every other.
        for mut replica in replicas {
            replica.merge(&all).unwrap();
            prop_assert_eq!(fingerprint(&replica, &keys), fingerprint(&all, &keys));
        }
    }

    #[test]
    fn entries_from_non_members_and_removed_devices_are_refused(actions in history()) {
        let keys = keys();
        let mut all = merged(&run(&keys, &actions));
        let outsider = &keys[DEVICES];
        let newcomer = DeviceKey::generate(&mut StdRng::seed_from_u64(7)).id();
        let add = |author: &DeviceKey, heads| {
            Entry::sign(author, Op::AddDevice { device: newcomer, name: "x".into() }, heads, 99)
                .unwrap()
        };

        let forged = add(outsider, all.heads());
        let result = all.apply(forged);
        prop_assert!(
            matches!(&result, Err(Error::NotMember { author }) if *author == outsider.id()),
            "outsider entry gave {:?}", result
        );
        for key in &keys[..DEVICES] {
            let id: DeviceId = key.id();
            let entry = add(key, all.heads());
            let removal = Entry::sign(
                key,
                Op::RemoveDevice { device: keys[0].id() },
                all.heads(),
                99,
            )
            .unwrap();
            if all.is_removed(&id) {
                let result = all.clone().apply(entry);
                prop_assert!(
                    matches!(&result, Err(Error::AuthorRemoved { author }) if *author == id),
                    "add by removed device gave {:?}", result
                );
                let result = all.clone().apply(removal);
                prop_assert!(
                    matches!(&result, Err(Error::AuthorRemoved { .. })),
                    "removal by removed device gave {:?}", result
                );
            } else if !all.is_member(&id) {
                let result = all.clone().apply(entry);
                prop_assert!(
                    matches!(&result, Err(Error::NotMember { author }) if *author == id),
                    "entry by non-member gave {:?}", result
                );
            } else {
                let mut copy = all.clone();
                prop_assert!(copy.apply(entry).is_ok());
                prop_assert!(copy.is_member(&newcomer));
            }
        }
    }

    #[test]
    fn decode_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Log::decode(&bytes);
        // Also past the version byte, where the structure is parsed.
        let mut versioned = vec![1u8];
        versioned.extend_from_slice(&bytes);
        let _ = Log::decode(&versioned);
        let _ = Entry::from_bytes(&bytes);
    }

    #[test]
    fn any_bit_flip_in_an_encoded_log_is_refused(
        actions in proptest::collection::vec(action(), 1..12),
        at in any::<Index>(),
        bit in 0u8..8,
    ) {
        let keys = keys();
        let bytes = merged(&run(&keys, &actions)).encode();
        let mut bad = bytes.clone();
        bad[at.index(bytes.len())] ^= 1 << bit;
        prop_assert!(Log::decode(&bad).is_err());
    }
}
