//! The checkers every run ends with. Each is a pure function over plain data
//! the simulator collected, so a test can hand one a deliberately broken
//! input and see it fail.
//!
//! - [`convergence`]: after heal and quiescence, every member replica of an
//!   account holds identical shard heads and identical materialised records.
//! - [`durability`]: every acknowledged write is still there, at its revision
//!   or a later one, on every member replica of its account.
//! - [`bounds`]: every observed queue maximum is within its bound.
//! - [`access`]: no frame carrying collection data reached a device the
//!   sender's membership log did not admit, and no device that is still
//!   pairing received data or the log before its code was confirmed.
//! - [`pairing`]: every join completed and its device is a member on every
//!   member replica of its account's log; no refused attempt left an entry.
//! - [`revocation`]: no device of a revoked contact ever held a change
//!   written after its revocation (by the writer's list).
//! - [`refusal`]: no change a share's rules refuse (a hostile account's
//!   forgeries) was ever held by a replica of another account.
//! - [`share_convergence`]: after heal, every device of every member still
//!   in a share holds the same records in it as the owner's.

use std::collections::BTreeMap;

use hearth_crypto::identity::DeviceId;
use hearth_crypto::membership::Log;
use serde::Serialize;

/// One checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The checker.
    pub name: &'static str,
    /// Whether the property held.
    pub passed: bool,
    /// What was checked, or the first violation.
    pub detail: String,
}

/// One replica's final state, reduced to fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFingerprint {
    /// The device.
    pub node: u32,
    /// Its account.
    pub account: u32,
    /// BLAKE3 over every collection's name and every shard's sorted heads.
    pub heads: [u8; 32],
    /// BLAKE3 over every collection's name and its records as JSON.
    pub records: [u8; 32],
}

/// Every member replica of an account has the heads and records of the
/// account's first member replica.
pub fn convergence(replicas: &[ReplicaFingerprint]) -> Verdict {
    let mut first: BTreeMap<u32, &ReplicaFingerprint> = BTreeMap::new();
    for r in replicas {
        let reference = *first.entry(r.account).or_insert(r);
        if reference.heads != r.heads || reference.records != r.records {
            let what = if reference.heads != r.heads {
                "shard heads"
            } else {
                "records"
            };
            return Verdict {
                name: "convergence",
                passed: false,
                detail: format!(
                    "account {}: device {} and device {} differ in {what}",
                    r.account, reference.node, r.node
                ),
            };
        }
    }
    Verdict {
        name: "convergence",
        passed: true,
        detail: format!(
            "{} replicas in {} accounts identical (heads and records)",
            replicas.len(),
            first.len()
        ),
    }
}

/// A write whose chunks were durable when it was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedWrite {
    /// The writing device.
    pub node: u32,
    /// Its account.
    pub account: u32,
    /// The collection.
    pub collection: String,
    /// The record id.
    pub id: String,
    /// The acknowledged revision, `N-hash`.
    pub rev: String,
}

/// The generation `N` of a `N-hash` revision.
pub fn rev_generation(rev: &str) -> Option<u64> {
    rev.split_once('-')?.0.parse().ok()
}

/// Every acknowledged write is held, at its revision or a later generation,
/// by every member in `members` of its account; `final_rev(node, collection,
/// id)` gives a replica's final revision of a record.
pub fn durability(
    acked: &[AckedWrite],
    members: &BTreeMap<u32, Vec<u32>>,
    final_rev: impl Fn(u32, &str, &str) -> Option<String>,
) -> Verdict {
    let mut checked = 0u64;
    for w in acked {
        let Some(want) = rev_generation(&w.rev) else {
            return fail_durability(w, "its revision does not parse");
        };
        for &node in members.get(&w.account).map_or(&[][..], Vec::as_slice) {
            checked += 1;
            let held = final_rev(node, &w.collection, &w.id);
            let ok = match held.as_deref() {
                None => false,
                Some(rev) => match rev_generation(rev) {
                    Some(g) if g > want => true,
                    Some(g) if g == want => rev == w.rev,
                    _ => false,
                },
            };
            if !ok {
                let why = format!(
                    "device {node} holds {}",
                    held.as_deref().unwrap_or("nothing")
                );
                return fail_durability(w, &why);
            }
        }
    }
    Verdict {
        name: "durability",
        passed: true,
        detail: format!(
            "{} acknowledged writes held on every member ({checked} replica checks)",
            acked.len()
        ),
    }
}

fn fail_durability(w: &AckedWrite, why: &str) -> Verdict {
    Verdict {
        name: "durability",
        passed: false,
        detail: format!(
            "acknowledged write {}/{} rev {} by device {} lost: {why}",
            w.collection, w.id, w.rev, w.node
        ),
    }
}

/// The largest size one queue reached, and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueMax {
    /// The queue.
    pub queue: &'static str,
    /// The largest size observed.
    pub max: u64,
    /// The configured bound.
    pub bound: u64,
}

/// Every queue stayed within its bound.
pub fn bounds(queues: &[QueueMax]) -> Verdict {
    let over: Vec<String> = queues
        .iter()
        .filter(|q| q.max > q.bound)
        .map(|q| format!("{} reached {} (bound {})", q.queue, q.max, q.bound))
        .collect();
    let all: Vec<String> = queues
        .iter()
        .map(|q| format!("{} {}/{}", q.queue, q.max, q.bound))
        .collect();
    Verdict {
        name: "bounds",
        passed: over.is_empty(),
        detail: if over.is_empty() {
            all.join(", ")
        } else {
            over.join("; ")
        },
    }
}

/// A data frame delivered to a device its sender's log did not admit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessViolation {
    /// Virtual time, µs.
    pub at_us: u64,
    /// The sender.
    pub from: u32,
    /// The receiver.
    pub to: u32,
    /// The collection whose data it carried.
    pub collection: String,
}

/// No data frame reached a non-member. `to_non_members` counts the frames
/// (Hellos, logs) that did reach non-members legitimately, which shows the
/// check was exercised.
pub fn access(violations: &[AccessViolation], checked: u64, to_non_members: u64) -> Verdict {
    match violations.first() {
        Some(v) => Verdict {
            name: "access",
            passed: false,
            detail: format!(
                "{} data frames reached non-members; first: device {} sent {:?} to device {} at {} µs",
                violations.len(),
                v.from,
                v.collection,
                v.to,
                v.at_us
            ),
        },
        None => Verdict {
            name: "access",
            passed: true,
            detail: format!(
                "{checked} frames checked, {to_non_members} non-data frames to non-members, no data leaked"
            ),
        },
    }
}

/// A sync message that announced heads its sender had not made durable.
#[derive(Debug, Clone)]
pub struct UndurableSend {
    /// Virtual time, µs.
    pub at_us: u64,
    /// The sender.
    pub from: u32,
    /// The receiver.
    pub to: u32,
    /// The collection.
    pub collection: String,
    /// The shard.
    pub shard: u16,
    /// The announced heads the sender's disk did not cover.
    pub heads: Vec<automerge::ChangeHash>,
}

/// Persist before send: no sync message left a device announcing changes
/// its disk did not yet hold, so no peer is told of (and no forwarded copy
/// rests on) state a crash could lose.
pub fn durable_sends(undurable: &[UndurableSend], checked: u64) -> Verdict {
    match undurable.first() {
        Some(u) => Verdict {
            name: "durable sends",
            passed: false,
            detail: format!(
                "{} sync messages announced heads not yet durable; first: device {} to device {} at {} µs, {:?} shard {}, {} heads",
                undurable.len(),
                u.from,
                u.to,
                u.at_us,
                u.collection,
                u.shard,
                u.heads.len()
            ),
        },
        None => Verdict {
            name: "durable sends",
            passed: true,
            detail: format!("{checked} frames checked; every announced head was durable"),
        },
    }
}

/// Every device in `joined` (account, id, node) is a member on every replica
/// in `replicas` (node, account, log) of its account, and `problems` (what
/// the simulator saw go wrong during pairing: a join never completed, a
/// refused attempt that changed the log) is empty.
pub fn pairing(
    joined: &[(u32, DeviceId, u32)],
    replicas: &[(u32, u32, &Log)],
    problems: &[String],
    attempts: u64,
) -> Verdict {
    if let Some(p) = problems.first() {
        return Verdict {
            name: "pairing",
            passed: false,
            detail: p.clone(),
        };
    }
    let mut checked = 0u64;
    for &(account, id, device) in joined {
        for &(node, a, log) in replicas {
            if a != account {
                continue;
            }
            checked += 1;
            if !log.is_member(&id) {
                return Verdict {
                    name: "pairing",
                    passed: false,
                    detail: format!(
                        "joined device {device} is not a member in device {node}'s log"
                    ),
                };
            }
        }
    }
    Verdict {
        name: "pairing",
        passed: true,
        detail: format!(
            "{} joins completed in {attempts} attempts, each a member on every replica ({checked} log checks)",
            joined.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(rev: &str) -> AckedWrite {
        AckedWrite {
            node: 0,
            account: 0,
            collection: "io.cozy.notes".into(),
            id: "d0-1".into(),
            rev: rev.into(),
        }
    }

    fn members() -> BTreeMap<u32, Vec<u32>> {
        BTreeMap::from([(0, vec![0, 1])])
    }

    #[test]
    fn durability_accepts_the_same_or_a_later_revision() {
        let v = durability(&[write("3-abc")], &members(), |_, _, _| {
            Some("3-abc".into())
        });
        assert!(v.passed, "{v:?}");
        let v = durability(&[write("3-abc")], &members(), |_, _, _| {
            Some("4-def".into())
        });
        assert!(v.passed, "{v:?}");
    }

    #[test]
    fn durability_flags_a_dropped_acknowledged_write() {
        // Device 1 lost the write entirely.
        let v = durability(&[write("3-abc")], &members(), |node, _, _| {
            (node == 0).then(|| "3-abc".to_owned())
        });
        assert!(!v.passed);
        assert!(v.detail.contains("device 1 holds nothing"), "{}", v.detail);
        // An older revision, or a different one of the same generation.
        let v = durability(&[write("3-abc")], &members(), |_, _, _| {
            Some("2-abc".into())
        });
        assert!(!v.passed);
        let v = durability(&[write("3-abc")], &members(), |_, _, _| {
            Some("3-zzz".into())
        });
        assert!(!v.passed);
    }

    fn fp(node: u32, account: u32, heads: u8, records: u8) -> ReplicaFingerprint {
        ReplicaFingerprint {
            node,
            account,
            heads: [heads; 32],
            records: [records; 32],
        }
    }

    #[test]
    fn convergence_compares_within_an_account() {
        assert!(convergence(&[fp(0, 0, 1, 1), fp(1, 0, 1, 1), fp(2, 1, 2, 2)]).passed);
        let v = convergence(&[fp(0, 0, 1, 1), fp(1, 0, 1, 2)]);
        assert!(!v.passed);
        assert!(v.detail.contains("records"));
        assert!(!convergence(&[fp(0, 0, 1, 1), fp(1, 0, 3, 1)]).passed);
    }

    #[test]
    fn bounds_and_access_fail_on_violations() {
        let ok = QueueMax {
            queue: "outbox",
            max: 3,
            bound: 3,
        };
        assert!(bounds(&[ok]).passed);
        assert!(!bounds(&[QueueMax { max: 4, ..ok }]).passed);
        assert!(access(&[], 10, 1).passed);
        let leak = AccessViolation {
            at_us: 5,
            from: 0,
            to: 2,
            collection: "io.cozy.notes".into(),
        };
        assert!(!access(&[leak], 10, 1).passed);
    }
}

/// No device of a revoked account held a change written after its
/// revocation. `violations` name each such holding; `checked` counts the
/// records looked at (every arrival and every record at the end).
pub fn revocation(violations: &[String], checked: u64) -> Verdict {
    Verdict {
        name: "revocation",
        passed: violations.is_empty(),
        detail: match violations.first() {
            Some(v) => format!("{} violations; first: {v}", violations.len()),
            None => format!(
                "{checked} shared records checked on arrival and at the end; none written after a revocation reached the revoked account"
            ),
        },
    }
}

/// No forged change reached a replica of another account. `forged` and
/// `gate_refusals` show the check was exercised.
pub fn refusal(violations: &[String], forged: u64, gate_refusals: u64) -> Verdict {
    Verdict {
        name: "refusal",
        passed: violations.is_empty(),
        detail: match violations.first() {
            Some(v) => format!("{} violations; first: {v}", violations.len()),
            None => format!(
                "{forged} forged writes, {gate_refusals} sessions refused by the share gate; no forged record on any replica of another account"
            ),
        },
    }
}

/// One member device's records of one share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareReplica {
    /// The share (index in the plan).
    pub share: u32,
    /// The device.
    pub node: u32,
    /// Its account.
    pub account: u32,
    /// BLAKE3 over the share's records as JSON.
    pub records: [u8; 32],
}

/// Every member device of a share holds the records of its first replica
/// (the owner's), and no step of the plan was abandoned.
pub fn share_convergence(replicas: &[ShareReplica], abandoned: u64) -> Verdict {
    let name = "share convergence";
    if abandoned > 0 {
        return Verdict {
            name,
            passed: false,
            detail: format!("{abandoned} contact or share steps were abandoned"),
        };
    }
    let mut first: BTreeMap<u32, &ShareReplica> = BTreeMap::new();
    for r in replicas {
        let reference = *first.entry(r.share).or_insert(r);
        if reference.records != r.records {
            return Verdict {
                name,
                passed: false,
                detail: format!(
                    "share {}: device {} (account {}) and device {} (account {}) differ in records",
                    r.share, reference.node, reference.account, r.node, r.account
                ),
            };
        }
    }
    Verdict {
        name,
        passed: true,
        detail: format!(
            "{} member replicas of {} shares identical",
            replicas.len(),
            first.len()
        ),
    }
}

#[cfg(test)]
mod sharing_tests {
    use super::*;

    fn replica(share: u32, node: u32, records: u8) -> ShareReplica {
        ShareReplica {
            share,
            node,
            account: node / 3,
            records: [records; 32],
        }
    }

    #[test]
    fn share_checkers_fail_on_what_they_guard() {
        assert!(revocation(&[], 10).passed);
        assert!(!revocation(&["device 4 holds s1-0".into()], 10).passed);
        assert!(refusal(&[], 3, 2).passed);
        assert!(!refusal(&["device 4 holds f7-1".into()], 3, 2).passed);
        let same = [replica(0, 0, 1), replica(0, 3, 1), replica(1, 6, 2)];
        assert!(share_convergence(&same, 0).passed);
        assert!(
            !share_convergence(&same, 1).passed,
            "an abandoned step fails it"
        );
        let differ = [replica(0, 0, 1), replica(0, 3, 2)];
        let v = share_convergence(&differ, 0);
        assert!(!v.passed && v.detail.contains("device 3"), "{}", v.detail);
    }
}
