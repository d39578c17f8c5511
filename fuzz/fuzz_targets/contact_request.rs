//! `/hearth/share/1` messages a stranger may send: a node answers every one
//! (a refusal for anything but a real card) and never panics.
#![no_main]

use hearth_crdt::node::contacts::Reply;
use hearth_crdt::node::{Config, Node};
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership::Log;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = DeviceKey::from_bytes(&[2; 32]);
    let log = Log::genesis(&key, "bob", 0);
    let mut node = Node::new(key, "bob", log, Config::default());
    let from = DeviceKey::from_bytes(&[3; 32]).id();
    let _ = node.share_request(0, from, data);
    let _ = node.share_reply(0, from, Some(data));
    let _ = Reply::decode(data, 16 * 1024);
});
