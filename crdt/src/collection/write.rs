//! Turning a record write into Automerge operations.
//!
//! A create builds the record map in one batch. An update writes the minimal
//! diff between the record the view holds and the new one: changed keys are
//! set, removed keys deleted, nested maps recursed into, and lists replaced
//! whole when they differ. Touching only what changed is what lets two
//! replicas that edit different fields of one record keep both edits.
//!
//! The view is an exact image of the document (see `view`), which is why
//! diffing against it instead of walking Automerge is sound. The one place the
//! document is consulted is a string that changed: if another client stored it
//! as an Automerge text object, it is updated in place and stays text.
//!
//! A record created concurrently on two replicas is two maps under one root
//! key (see `view::versions`). An update writes the new content into every
//! one of them, diffing each against what it holds, so the versions become
//! equal: none is left behind with older content for a reader to merge,
//! and no edit made concurrently inside any of them is overwritten.

use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjId, ObjType, ROOT, ReadDoc, Value as AmValue, hydrate};
use serde_json::{Map, Value};

use super::view;
use crate::record::{self, ID_KEY, REV_KEY, is_meta_key};

/// Writes the record `id` (a full view record: `_id`, `_rev`, fields) as a new map.
pub(crate) fn create<T: Transactable>(
    tx: &mut T,
    id: &str,
    after: &Map<String, Value>,
) -> Result<(), AutomergeError> {
    let map = record::to_hydrate_map(after, |k| k != ID_KEY);
    tx.batch_create_object(ROOT, id, &hydrate::Value::Map(map), false)?;
    Ok(())
}

/// Writes the difference from `before` to `after` (both full view records)
/// into the record `id`, and `after` into each concurrent version of it.
pub(crate) fn update<T: Transactable + ReadDoc>(
    tx: &mut T,
    id: &str,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Result<(), AutomergeError> {
    // The view had the record, so a missing map cannot happen; rewriting
    // the whole record is still the right outcome if it ever does.
    let Some((winner, others)) = view::version_objs(tx, id) else {
        return create(tx, id, after);
    };
    diff_into(tx, &winner, before, after)?;
    for obj in others {
        // A version too deep to read stays as it is: the view never shows it.
        if let Ok(stored) = record::read_record(tx, &obj) {
            diff_into(tx, &obj, &stored.fields, after)?;
        }
    }
    Ok(())
}

/// Writes `after`'s fields and revision into the record map `obj`, which
/// holds `before`.
fn diff_into<T: Transactable + ReadDoc>(
    tx: &mut T,
    obj: &ObjId,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Result<(), AutomergeError> {
    diff_map(tx, obj, before, after, true)?;
    if let Some(rev) = after.get(REV_KEY) {
        tx.put(obj, REV_KEY, record::to_scalar(rev))?;
    }
    Ok(())
}

/// Removes the record `id`.
pub(crate) fn delete<T: Transactable>(tx: &mut T, id: &str) -> Result<(), AutomergeError> {
    tx.delete(ROOT, id)
}

fn diff_map<T: Transactable + ReadDoc>(
    tx: &mut T,
    obj: &ObjId,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    top: bool,
) -> Result<(), AutomergeError> {
    let skip = |key: &str| top && is_meta_key(key);
    for key in before.keys() {
        if !skip(key) && !after.contains_key(key) {
            tx.delete(obj, key.as_str())?;
        }
    }
    for (key, new) in after {
        if skip(key) {
            continue;
        }
        match (before.get(key), new) {
            (Some(old), _) if record::exact_eq(old, new) => continue,
            (Some(old), _)
                if is_scalar(old) && record::to_scalar(old) == record::to_scalar(new) =>
            {
                // Automerge skips a put of a value equal to the current one,
                // and `0.0 == -0.0`: delete first so the sign is written.
                tx.delete(obj, key.as_str())?;
            }
            (Some(Value::Object(old_fields)), Value::Object(new_fields)) => {
                if let Some((AmValue::Object(ObjType::Map | ObjType::Table), child)) =
                    tx.get(obj, key.as_str())?
                {
                    diff_map(tx, &child, old_fields, new_fields, false)?;
                    continue;
                }
            }
            (Some(Value::String(_)), Value::String(text)) => {
                if let Some((AmValue::Object(ObjType::Text), child)) = tx.get(obj, key.as_str())? {
                    tx.update_text(&child, text)?;
                    continue;
                }
            }
            _ => {}
        }
        put_value(tx, obj, key, new)?;
    }
    Ok(())
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Object(_) | Value::Array(_))
}

fn put_value<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Value,
) -> Result<(), AutomergeError> {
    match value {
        Value::Object(_) | Value::Array(_) => {
            tx.batch_create_object(obj, key, &record::to_hydrate(value), false)?;
        }
        scalar => tx.put(obj, key, record::to_scalar(scalar))?,
    }
    Ok(())
}
