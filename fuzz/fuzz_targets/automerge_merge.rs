//! Automerge sync messages through Hearth's guards: a peer's message is
//! applied to a real collection with the inflate bound; nothing panics and
//! nothing allocates without bound.
#![no_main]

use automerge::ActorId;
use automerge::sync::{Message, State};
use hearth_crdt::collection::{Bounds, Candidate, Collection, PutMode, Refusal};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    let Ok(mut notes) = Collection::new("notes", 1, ActorId::from([1u8; 16])) else {
        return;
    };
    let _ = notes.put("n1", json!({"title": "kept"}), PutMode::Create, 0);
    let mut state = State::new();
    // Half the inputs go through a share gate as well, which refuses any
    // change without a message and holds back any change without a
    // signature: the refusal and waiting paths must be as safe as merge.
    let gate = |candidate: &Candidate<'_>| match (candidate.change.message(), candidate.authorship)
    {
        (None, _) => Err(Refusal::Refused("no note".to_string())),
        (Some(_), None) => Err(Refusal::Waiting("unsigned".to_string())),
        (Some(_), Some(_)) => Ok(()),
    };
    let gated: Option<hearth_crdt::collection::ChangeGate> = if data.len() % 2 == 0 {
        Some(&gate)
    } else {
        None
    };
    let bounds = Bounds {
        max_inflated: 4 << 20,
        max_record: 1 << 20,
    };
    let _ = notes.sync_receive(0, &mut state, message, &[], bounds, gated);
    // The view still answers whatever happened.
    let _ = notes.records().len();
});
