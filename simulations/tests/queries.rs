//! Federated queries over the simulator's virtual network: a `devices`
//! query started on one device is carried to the account's other devices
//! and back (`Output::Query` routed like a contact request), and its result
//! reaches the run's outcome; a `local` one answers at once.

use std::path::Path;

use hearth_sim::scenario::Scenario;
use hearth_sim::sim::World;
use serde_json::json;

fn office() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/small-office.toml");
    let s = Scenario::load(&path)
        .expect("a valid scenario")
        .shrunk(3, 30.0);
    s.validate().expect("the shrunk scenario is valid");
    s
}

#[test]
fn a_devices_query_is_carried_to_every_other_device_and_answered() {
    let s = office();
    let mut world = World::new(&s, 3).unwrap();
    let local = world
        .query(
            0,
            &json!({ "collection": "io.cozy.notes", "aggregate": { "n": { "$count": true } } }),
        )
        .unwrap();
    assert_eq!(
        world.answers()[&local]["exact"],
        true,
        "a local query answers in the same call"
    );
    let err = world
        .query(
            0,
            &json!({ "collection": "io.cozy.notes", "aggregate": { "n": { "$count": true } },
                     "scope": "contacts" }),
        )
        .unwrap_err();
    assert!(err.to_string().contains("no established contacts"), "{err}");

    let id = world
        .query(
            0,
            &json!({ "collection": "io.cozy.notes", "aggregate": { "n": { "$count": true } },
                     "scope": "devices", "deadline_ms": 4000 }),
        )
        .unwrap();
    assert!(
        !world.answers().contains_key(&id),
        "a devices query waits for the network"
    );
    let outcome = world.run();
    let result = &outcome.answers[&id];
    let answered = result["completeness"]["answered"].as_array().unwrap();
    assert_eq!(answered.len(), 2, "{result}");
    assert_eq!(result["completeness"]["unreachable"], json!([]), "{result}");
}
