//! A collection's access list and its entries, as another member sends
//! them: decoded against the owner's log, verified or refused.
#![no_main]

use hearth_crypto::acl::{Acl, AclEntry};
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership::Log;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let owner = DeviceKey::from_bytes(&[1; 32]);
    let log = Log::genesis(&owner, "owner", 0);
    if let Ok(acl) = Acl::decode(data, &log) {
        let _ = acl.state(&log);
    }
    let _ = AclEntry::from_bytes(data);
});
