//! Request bodies of the API: Mango find requests and aggregate requests,
//! parsed and run over a few records.
#![no_main]

use hearth_crdt::query::{self, AggregateRequest, FindRequest, Indexes};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let records: std::collections::BTreeMap<String, Value> = (0..4)
        .map(|n| {
            (
                format!("r{n}"),
                json!({"_id": format!("r{n}"), "n": n, "tags": ["a", n], "o": {"x": n * 2}}),
            )
        })
        .collect();
    if let Ok(find) = FindRequest::parse(&body) {
        let _ = query::find(&find, &records, &Indexes::default());
    }
    if let Ok(aggregate) = AggregateRequest::parse(&body) {
        let _ = query::aggregate(&aggregate, records.values());
    }
});
