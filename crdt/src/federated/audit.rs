//! The audit log: one record for every query a device answered, declined or
//! refused, hash-chained per device.
//!
//! Each device appends to its own chain (`seq` 0, 1, 2, … with each record
//! naming the hash of the one before), so devices never contend for the
//! head of one chain while they are apart; the node keeps the records in a
//! reserved collection and they replicate to every device of the account.
//! [`verify`] checks one device's chain: a record altered, dropped or
//! reordered breaks it. A record keeps a hash of what was released, never
//! the released numbers or the noise.

use serde::{Deserialize, Serialize};

use crate::node::Millis;

/// What became of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// A contribution or an aggregate left the device.
    Answered,
    /// The policy (or its absence, or the budget) said no.
    Declined,
    /// The query itself was bad, too large, too frequent or from a stranger.
    Refused,
}

/// One audit record: the decision's [`Entry`], chained. See the
/// [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The device that decided, and the record's place in its chain.
    pub device: String,
    /// 0 for a device's first record.
    pub seq: u64,
    /// What was decided.
    #[serde(flatten)]
    pub entry: Entry,
    /// The hash of the device's previous record (empty for `seq` 0).
    pub prev: String,
    /// The hash of this record's other fields.
    pub hash: String,
}

/// What one device decided about one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When, in the node's time.
    pub at: Millis,
    /// The query's id (the querier's).
    pub query: String,
    /// The querier's account id.
    pub querier: String,
    /// The querier's device.
    pub querier_device: String,
    /// `devices` or `contacts`.
    pub scope: String,
    /// The collection asked about.
    pub collection: String,
    /// The canonical query.
    pub canonical: String,
    /// What became of it.
    pub decision: Decision,
    /// Why, for declined and refused queries (and "repeat" for a repeat).
    pub reason: String,
    /// The ε charged (0 for exact answers, repeats and refusals).
    pub epsilon: f64,
    /// A hash of the policy that judged it ([`policy_hash`]; empty without
    /// one).
    pub policy: String,
    /// A hash of what was released ([`released_hash`]; empty when nothing
    /// was).
    pub released: String,
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// A record's hash is not the hash of its fields.
    #[error("audit record {device}/{seq} was altered: its hash does not match")]
    Altered {
        /// The device.
        device: String,
        /// The record.
        seq: u64,
    },
    /// A record does not follow the one before it.
    #[error("audit chain of {device} is broken at {seq}: a record is missing or out of place")]
    Broken {
        /// The device.
        device: String,
        /// The record.
        seq: u64,
    },
}

fn digest(record: &Record) -> String {
    let mut unhashed = record.clone();
    unhashed.hash = String::new();
    let bytes = serde_json::to_vec(&unhashed).unwrap_or_default();
    blake3::hash(&bytes).to_hex().to_string()
}

/// The hash a policy is recorded by (its version).
pub fn policy_hash(policy_json: &str) -> String {
    blake3::hash(policy_json.as_bytes()).to_hex()[..32].to_owned()
}

/// The hash an [`Entry`] keeps of the bytes released, never the bytes.
pub fn released_hash(released: &[u8]) -> String {
    blake3::hash(released).to_hex().to_string()
}

/// Appends `entry` to `device`'s chain, whose last record is `last`.
pub fn append(device: &str, last: Option<&Record>, entry: Entry) -> Record {
    let mut record = Record {
        device: device.to_owned(),
        seq: last.map_or(0, |l| l.seq + 1),
        entry,
        prev: last.map(|l| l.hash.clone()).unwrap_or_default(),
        hash: String::new(),
    };
    record.hash = digest(&record);
    record
}

/// Checks one device's chain, given in `seq` order from 0.
pub fn verify(chain: &[Record]) -> Result<(), AuditError> {
    let mut prev: Option<&Record> = None;
    for (i, record) in chain.iter().enumerate() {
        if record.hash != digest(record) {
            return Err(AuditError::Altered {
                device: record.device.clone(),
                seq: record.seq,
            });
        }
        let follows = record.seq == i as u64
            && record.prev == prev.map(|p| p.hash.clone()).unwrap_or_default()
            && prev.is_none_or(|p| p.device == record.device);
        if !follows {
            return Err(AuditError::Broken {
                device: record.device.clone(),
                seq: record.seq,
            });
        }
        prev = Some(record);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(query: &str, decision: Decision) -> Entry {
        Entry {
            at: 5,
            query: query.into(),
            querier: "alice".into(),
            querier_device: "a1".into(),
            scope: "contacts".into(),
            collection: "energy".into(),
            canonical: "{}".into(),
            decision,
            reason: String::new(),
            epsilon: 1.0,
            policy: policy_hash("{}"),
            released: released_hash(b"[1,2]"),
        }
    }

    fn chain() -> Vec<Record> {
        let mut chain: Vec<Record> = Vec::new();
        for (q, d) in [
            ("q1", Decision::Answered),
            ("q2", Decision::Declined),
            ("q3", Decision::Refused),
        ] {
            let next = append("d1", chain.last(), entry(q, d));
            chain.push(next);
        }
        chain
    }

    #[test]
    fn a_chain_verifies_and_keeps_no_released_numbers() {
        let chain = chain();
        verify(&chain).unwrap();
        assert_eq!(chain[2].seq, 2);
        assert_eq!(chain[1].prev, chain[0].hash);
        assert_ne!(chain[0].entry.released, "[1,2]");
        assert_eq!(chain[0].entry.released.len(), 64);
    }

    #[test]
    fn altered_dropped_or_reordered_records_are_found() {
        let mut altered = chain();
        altered[1].entry.decision = Decision::Answered;
        assert!(matches!(
            verify(&altered),
            Err(AuditError::Altered { seq: 1, .. })
        ));
        let mut dropped = chain();
        dropped.remove(1);
        assert!(matches!(verify(&dropped), Err(AuditError::Broken { .. })));
        let mut swapped = chain();
        swapped.swap(0, 1);
        assert!(verify(&swapped).is_err());
    }
}
