//! Sync frames (Hello, shard digests, logs, Automerge messages) as a peer
//! sends them: decoding never panics and never allocates past the limits.
#![no_main]

use hearth_crdt::sync::{Frame, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_frame: 1 << 20,
        max_inflated: 4 << 20,
        ..Limits::default()
    };
    if let Ok(frame) = Frame::decode(data, &limits) {
        // What decodes encodes again.
        let _ = frame.encode(&limits);
    }
});
