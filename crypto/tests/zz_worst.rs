//! temp
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership::{Entry, Log, Op, MAX_ENTRIES};
use rand::SeedableRng;
#[test]
fn worst() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let k0 = DeviceKey::generate(&mut rng);
    let mut log = Log::genesis(&k0, "a", 0);
    let half = MAX_ENTRIES / 2;
    let mut devs = vec![];
    for t in 0..half { let d = DeviceKey::generate(&mut rng); log.add_device(&k0, d.id(), "d", t as u64).unwrap(); devs.push(d); }
    let heads = log.heads();
    // concurrent removals of distinct devices, all on the same heads
    for (t, d) in devs.iter().enumerate().take(MAX_ENTRIES - half - 1) {
        let e = Entry::sign(&k0, Op::RemoveDevice { device: d.id() }, heads.clone(), t as u64).unwrap();
        log.apply(e).unwrap();
    }
    let bytes = log.encode();
    let t = std::time::Instant::now();
    let back = Log::decode(&bytes).unwrap();
    eprintln!("WORST decode {} entries, {} bytes: {:?}", back.entries().len(), bytes.len(), t.elapsed());
}
