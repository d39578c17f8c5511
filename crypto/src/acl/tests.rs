use proptest::prelude::*;

use super::*;
use crate::membership::Log;

fn key(n: u8) -> DeviceKey {
    DeviceKey::from_bytes(&[n; 32])
}

/// An owner account of three devices (keys 1, 2, 3) and its log.
fn owner() -> (Vec<DeviceKey>, Log) {
    let keys = vec![key(1), key(2), key(3)];
    let mut log = Log::genesis(&keys[0], "laptop", 0);
    log.add_device(&keys[0], keys[1].id(), "phone", 1)
        .unwrap_or_else(|e| panic!("{e}"));
    log.add_device(&keys[0], keys[2].id(), "tablet", 2)
        .unwrap_or_else(|e| panic!("{e}"));
    (keys, log)
}

/// Another account's id (a contact).
fn contact(n: u8) -> AccountId {
    Log::genesis(&key(100 + n), "them", 0).account_id()
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn grants_change_levels_and_a_revocation_takes_them_away() {
    let (keys, log) = owner();
    let bob = contact(1);
    let mut acl = ok(Acl::create(&keys[0], &log, "notes", 10));
    assert_eq!(acl.owner(), log.account_id());
    assert_eq!(acl.collection(), "notes");
    assert_eq!(acl.state(&log).level(&bob), None);
    ok(acl.grant(&keys[0], &log, bob, Level::Read, 11));
    assert_eq!(acl.state(&log).level(&bob), Some(Level::Read));
    ok(acl.grant(&keys[1], &log, bob, Level::Write, 12));
    assert!(acl.state(&log).may_write(&bob));
    ok(acl.revoke(&keys[2], &log, bob, 13));
    let state = acl.state(&log);
    assert!(!state.may_read(&bob) && state.is_revoked(&bob));
    // Granting after seeing the revocation shares again.
    ok(acl.grant(&keys[0], &log, bob, Level::Read, 14));
    assert_eq!(acl.state(&log).level(&bob), Some(Level::Read));
}

#[test]
fn the_list_at_earlier_heads_judges_what_was_known_then() {
    let (keys, log) = owner();
    let bob = contact(1);
    let mut acl = ok(Acl::create(&keys[0], &log, "notes", 10));
    let created = acl.heads();
    ok(acl.grant(&keys[0], &log, bob, Level::Write, 11));
    let granted = acl.heads();
    ok(acl.revoke(&keys[0], &log, bob, 12));
    let at = |heads: &[EntryHash]| acl.at(heads).map(|a| a.state(&log).level(&bob));
    assert_eq!(at(&created), Some(None));
    assert_eq!(at(&granted), Some(Some(Level::Write)));
    assert_eq!(at(&acl.heads()), Some(None));
    assert_eq!(acl.at(&granted).map(|a| a.heads()), Some(granted.clone()));
    // A head this list does not hold gives nothing to judge by.
    let elsewhere = ok(Acl::create(&keys[1], &log, "other", 0)).id();
    assert!(acl.at(&[elsewhere]).is_none());
}

#[test]
fn a_revocation_wins_over_a_concurrent_grant_and_the_lower_of_two_grants_holds() {
    let (keys, log) = owner();
    let (bob, carol) = (contact(1), contact(2));
    let mut base = ok(Acl::create(&keys[0], &log, "notes", 0));
    ok(base.grant(&keys[0], &log, bob, Level::Write, 1));
    let (mut a, mut b) = (base.clone(), base);
    ok(a.revoke(&keys[0], &log, bob, 2));
    ok(b.grant(&keys[1], &log, bob, Level::Write, 3));
    ok(a.grant(&keys[0], &log, carol, Level::Write, 4));
    ok(b.grant(&keys[1], &log, carol, Level::Read, 5));
    ok(a.merge(&b, &log));
    ok(b.merge(&a, &log));
    assert_eq!(a.state(&log), b.state(&log));
    let state = a.state(&log);
    assert!(state.is_revoked(&bob) && !state.may_read(&bob));
    assert_eq!(state.level(&carol), Some(Level::Read));
}

#[test]
fn strangers_contacts_and_the_owner_itself_are_refused() {
    let (keys, log) = owner();
    let bob = contact(1);
    let mut acl = ok(Acl::create(&keys[0], &log, "notes", 0));
    // Bob's own device writes himself in: refused, whatever it signs.
    let forged = ok(AclEntry::sign(
        &key(101),
        AclOp::Grant {
            account: bob,
            level: Level::Write,
        },
        acl.heads(),
        1,
    ));
    assert!(matches!(
        acl.apply(forged, &log),
        Err(Error::NotOwnerDevice { .. })
    ));
    assert!(matches!(
        acl.grant(&key(9), &log, bob, Level::Read, 1),
        Err(Error::NotOwnerDevice { .. })
    ));
    assert!(matches!(
        acl.grant(&keys[0], &log, log.account_id(), Level::Read, 1),
        Err(Error::AboutOwner)
    ));
    let other = Log::genesis(&key(50), "x", 0);
    let entry = ok(AclEntry::sign(
        &keys[0],
        AclOp::Revoke { account: bob },
        acl.heads(),
        2,
    ));
    assert!(matches!(
        acl.apply(entry, &other),
        Err(Error::WrongOwnerLog)
    ));
    assert!(matches!(
        Acl::create(&key(9), &log, "notes", 0),
        Err(Error::NotOwnerDevice { .. })
    ));
    assert!(matches!(
        Acl::create(&keys[0], &log, "", 0),
        Err(Error::CollectionName { len: 0 })
    ));
}

#[test]
fn a_tampered_entry_does_not_verify_and_out_of_order_ones_wait() {
    let (keys, log) = owner();
    let bob = contact(1);
    let mut acl = ok(Acl::create(&keys[0], &log, "notes", 0));
    let first = ok(acl.grant(&keys[0], &log, bob, Level::Read, 1)).clone();
    let second = ok(acl.grant(&keys[0], &log, bob, Level::Write, 2)).clone();
    let mut bytes = second.to_bytes();
    // The level byte sits right before the author: flip Write to Read.
    let at = bytes
        .windows(32)
        .position(|w| w == keys[0].id().as_bytes())
        .unwrap_or_else(|| panic!("author not found"));
    bytes[at - 1] ^= 1;
    assert!(matches!(
        AclEntry::from_bytes(&bytes),
        Err(Error::BadSignature)
    ));
    let mut late = ok(Acl::decode(
        &Acl::encode(&{
            let mut fresh = acl.clone();
            fresh.entries.truncate(1);
            fresh.index.retain(|_, i| *i == 0);
            fresh.heads = BTreeSet::from([fresh.id()]);
            fresh
        }),
        &log,
    ));
    assert!(matches!(
        late.apply(second.clone(), &log),
        Err(Error::MissingParents { missing }) if missing == vec![first.hash()]
    ));
    assert_eq!(ok(late.apply(first.clone(), &log)), Applied::New);
    assert_eq!(ok(late.apply(second, &log)), Applied::New);
    assert_eq!(ok(late.apply(first, &log)), Applied::Known);
    assert_eq!(late.state(&log), acl.state(&log));
}

#[test]
fn a_removed_devices_entries_count_only_where_a_member_built_on_them() {
    let (keys, mut log) = owner();
    let (bob, carol) = (contact(1), contact(2));
    let mut acl = ok(Acl::create(&keys[0], &log, "notes", 0));
    ok(acl.grant(&keys[2], &log, bob, Level::Write, 1));
    // A member builds on the tablet's grant: it stands after the removal.
    ok(acl.grant(&keys[0], &log, carol, Level::Read, 2));
    // The tablet's next grant, which nobody built on, does not.
    let mut stolen = acl.clone();
    ok(stolen.grant(&keys[2], &log, contact(3), Level::Write, 3));
    ok(log.remove_device(&keys[0], keys[2].id(), 4));
    let state = stolen.state(&log);
    assert_eq!(state.level(&bob), Some(Level::Write));
    assert_eq!(state.level(&carol), Some(Level::Read));
    assert_eq!(state.level(&contact(3)), None);
    // Its entries still decode: it was the owner's device when it wrote.
    assert_eq!(ok(Acl::decode(&stolen.encode(), &log)), stolen);
}

#[test]
fn hostile_encodings_are_errors() {
    let (keys, log) = owner();
    let acl = ok(Acl::create(&keys[0], &log, "notes", 0));
    let good = acl.encode();
    assert!(matches!(Acl::decode(&[], &log), Err(Error::Shape)));
    assert!(matches!(Acl::decode(&[9], &log), Err(Error::Version(9))));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        Acl::decode(&trailing, &log),
        Err(Error::TrailingBytes(1))
    ));
    for cut in 0..good.len() {
        assert!(Acl::decode(&good[..cut], &log).is_err(), "cut at {cut}");
    }
    assert!(matches!(
        AclEntry::from_bytes(&vec![0; MAX_ENTRY_BYTES + 1]),
        Err(Error::TooLarge { .. })
    ));
    // A list that claims more entries than it may hold.
    let mut huge = vec![VERSION];
    huge.extend_from_slice(&to_postcard(&vec![Vec::<u8>::new(); MAX_ENTRIES + 1]));
    assert!(matches!(Acl::decode(&huge, &log), Err(Error::Full)));
}

#[derive(Debug, Clone)]
enum Step {
    /// Device `device` of the owner, on replica `replica`, grants or revokes
    /// contact `who`.
    Write {
        replica: usize,
        device: usize,
        who: u8,
        op: u8,
    },
    /// Replica `from`'s entries reach replica `to`.
    Sync { from: usize, to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize, 0..3usize, 0..3u8, 0..3u8).prop_map(|(replica, device, who, op)| Step::Write { replica, device, who, op }),
        1 => (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Three replicas write and sync at random; then the union of their
    /// entries, delivered in any order, gives one state everywhere, and
    /// every account whose latest entries include a revocation holds
    /// nothing.
    #[test]
    fn any_delivery_order_gives_one_state_and_revocations_win(
        steps in proptest::collection::vec(step(), 1..40),
        order in proptest::collection::vec(any::<u32>(), 0..64),
    ) {
        let (keys, log) = owner();
        let base = ok(Acl::create(&keys[0], &log, "notes", 0));
        let mut replicas = vec![base.clone(), base.clone(), base];
        for (t, s) in steps.iter().enumerate() {
            match *s {
                Step::Write { replica, device, who, op } => {
                    let account = contact(who);
                    let acl = &mut replicas[replica];
                    let at = t as u64 + 1;
                    match op {
                        0 => ok(acl.grant(&keys[device], &log, account, Level::Read, at)),
                        1 => ok(acl.grant(&keys[device], &log, account, Level::Write, at)),
                        _ => ok(acl.revoke(&keys[device], &log, account, at)),
                    };
                }
                Step::Sync { from, to } if from != to => {
                    let source = replicas[from].clone();
                    ok(replicas[to].merge(&source, &log));
                }
                Step::Sync { .. } => {}
            }
        }
        // Everything everyone wrote, shuffled, delivered one by one; an
        // entry whose parents have not come yet waits for the next pass.
        let mut all: Vec<AclEntry> = Vec::new();
        for r in &replicas {
            for e in &r.entries()[1..] {
                if !all.iter().any(|x| x.hash() == e.hash()) {
                    all.push(e.clone());
                }
            }
        }
        for (i, k) in order.iter().enumerate() {
            if !all.is_empty() {
                let a = i % all.len();
                let b = (*k as usize) % all.len();
                all.swap(a, b);
            }
        }
        let mut fresh = Acl::decode(&{
            let mut only = replicas[0].clone();
            only.entries.truncate(1);
            only.index.retain(|_, i| *i == 0);
            only.heads = BTreeSet::from([only.id()]);
            only
        }.encode(), &log).unwrap_or_else(|e| panic!("{e}"));
        let mut pending = all;
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|e| match fresh.apply(e.clone(), &log) {
                Ok(_) => false,
                Err(Error::MissingParents { .. }) => true,
                Err(e) => panic!("{e}"),
            });
            prop_assert!(pending.len() < before, "delivery made no progress");
        }
        let mut merged = replicas[0].clone();
        ok(merged.merge(&replicas[1], &log));
        ok(merged.merge(&replicas[2], &log));
        let state = fresh.state(&log);
        prop_assert_eq!(&state, &merged.state(&log));
        prop_assert_eq!(fresh.heads(), merged.heads());

        // A revocation among an account's latest entries always wins.
        for who in 0..3u8 {
            let account = contact(who);
            let about: Vec<&AclEntry> = fresh
                .entries()
                .iter()
                .filter(|e| e.op().account() == Some(account))
                .collect();
            let is_ancestor = |a: &AclEntry, b: &AclEntry| {
                let mut stack = b.parents().to_vec();
                let mut seen = BTreeSet::new();
                while let Some(h) = stack.pop() {
                    if h == a.hash() {
                        return true;
                    }
                    if seen.insert(h) {
                        let i = fresh.index[&h];
                        stack.extend_from_slice(fresh.entries()[i].parents());
                    }
                }
                false
            };
            let latest: Vec<&&AclEntry> = about
                .iter()
                .filter(|a| !about.iter().any(|b| b.hash() != a.hash() && is_ancestor(a, b)))
                .collect();
            let any_revoke = latest.iter().any(|e| matches!(e.op(), AclOp::Revoke { .. }));
            if any_revoke {
                prop_assert!(!state.may_read(&account));
            } else if let Some(lowest) = latest
                .iter()
                .filter_map(|e| match e.op() {
                    AclOp::Grant { level, .. } => Some(*level),
                    _ => None,
                })
                .min()
            {
                prop_assert_eq!(state.level(&account), Some(lowest));
            } else {
                prop_assert_eq!(state.level(&account), None);
            }
        }
    }
}
