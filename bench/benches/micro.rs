//! Micro-benchmarks, each beside its raw baseline in the same run:
//!
//! - `seal/*`, `open/*`: `hearth_crypto::seal` of 100 B and 64 KiB values
//!   vs XChaCha20-Poly1305 from `chacha20poly1305` used directly (cipher
//!   built once, random nonce from the same RNG, no version byte, no bound
//!   associated data).
//! - `selector/*`: `Selector::matches` over one record vs the same test
//!   written by hand against the `serde_json::Value`.
//! - `ed25519/*`: `DeviceKey::sign` and `DeviceId::verify` vs
//!   `ed25519_dalek` with the keys already decoded, and the cost of decoding
//!   a public key alone (which `DeviceId::verify` does on every call).
//!
//! Kept short (10 samples, 1 s each): `cargo bench -p hearth-bench`.

use std::hint::black_box;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use hearth_bench::records;
use hearth_crdt::query::Selector;
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::seal::{self, SecretKey};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::{Value, json};

const SIZES: [(usize, &str); 2] = [(100, "100B"), (64 * 1024, "64KiB")];

fn seal_open(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let key_bytes = [7u8; 32];
    let key = SecretKey::from_bytes(&key_bytes);
    let raw = XChaCha20Poly1305::new((&key_bytes).into());
    let aad = seal::aad("chunks-1", b"bank.operations\0\0\x01");
    for (size, label) in SIZES {
        let plaintext = vec![0x5au8; size];
        let mut group = c.benchmark_group(format!("seal/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function("hearth", |b| {
            b.iter(|| seal::seal(&key, black_box(&aad), black_box(&plaintext), &mut rng))
        });
        group.bench_function("raw-xchacha20poly1305", |b| {
            b.iter(|| {
                let mut nonce = [0u8; 24];
                rng.fill_bytes(&mut nonce);
                raw.encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: black_box(&plaintext),
                        aad: black_box(&aad),
                    },
                )
            })
        });
        group.finish();

        let sealed = seal::seal(&key, &aad, &plaintext, &mut rng);
        let nonce = [3u8; 24];
        let raw_sealed = raw
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut group = c.benchmark_group(format!("open/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function("hearth", |b| {
            b.iter(|| seal::open(&key, black_box(&aad), black_box(&sealed)))
        });
        group.bench_function("raw-xchacha20poly1305", |b| {
            b.iter(|| {
                raw.decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: black_box(&raw_sealed),
                        aad: black_box(&aad),
                    },
                )
            })
        });
        group.finish();
    }
}

/// The same test as a selector, written by hand against the record.
type ByHand = Box<dyn Fn(&Value) -> bool>;

fn selector(c: &mut Criterion) {
    let record = records::generate(1, records::DEFAULT_SEED)
        .pop()
        .unwrap_or(Value::Null);
    let month = record["month"].as_i64().unwrap_or(0);
    let account = record["account"].clone();
    let cases: [(&str, Value, ByHand); 3] = [
        (
            "eq",
            json!({"month": month}),
            Box::new(move |r: &Value| r.get("month").and_then(Value::as_i64) == Some(month)),
        ),
        (
            "range-and-eq",
            json!({"amount": {"$lt": 1000000}, "account": account.clone()}),
            Box::new(move |r: &Value| {
                r.get("amount")
                    .and_then(Value::as_f64)
                    .is_some_and(|a| a < 1_000_000.0)
                    && r.get("account") == Some(&account)
            }),
        ),
        (
            "regex",
            json!({"label": {"$regex": "^[A-Z]+ "}}),
            Box::new(|r: &Value| {
                r.get("label").and_then(Value::as_str).is_some_and(|l| {
                    let upper = l.bytes().take_while(u8::is_ascii_uppercase).count();
                    upper > 0 && l.as_bytes().get(upper) == Some(&b' ')
                })
            }),
        ),
    ];
    for (name, body, by_hand) in cases {
        let parsed = Selector::parse(&body);
        let Ok(selector) = parsed else {
            panic!("selector {body} does not parse: {parsed:?}");
        };
        assert!(
            selector.matches(&record) && by_hand(&record),
            "{name} must match"
        );
        let mut group = c.benchmark_group(format!("selector/{name}"));
        group.bench_function("hearth-matches", |b| {
            b.iter(|| selector.matches(black_box(&record)))
        });
        group.bench_function("by-hand", |b| b.iter(|| by_hand(black_box(&record))));
        group.finish();
    }
}

fn ed25519(c: &mut Criterion) {
    let seed = [11u8; 32];
    let device = DeviceKey::from_bytes(&seed);
    let id = device.id();
    let raw = SigningKey::from_bytes(&seed);
    let raw_public = raw.verifying_key();
    let msg = [0x42u8; 200];
    let signature = device.sign(&msg);
    let raw_signature = raw.sign(&msg);

    let mut group = c.benchmark_group("ed25519/sign");
    group.bench_function("hearth", |b| b.iter(|| device.sign(black_box(&msg))));
    group.bench_function("raw-dalek", |b| b.iter(|| raw.sign(black_box(&msg))));
    group.finish();

    let mut group = c.benchmark_group("ed25519/verify");
    group.bench_function("hearth", |b| {
        b.iter(|| id.verify(black_box(&msg), black_box(&signature)))
    });
    group.bench_function("raw-dalek-strict", |b| {
        b.iter(|| raw_public.verify_strict(black_box(&msg), black_box(&raw_signature)))
    });
    group.bench_function("raw-dalek", |b| {
        b.iter(|| raw_public.verify(black_box(&msg), black_box(&raw_signature)))
    });
    // What `DeviceId::verify` pays on every call before verifying: decoding
    // the 32-byte public key into a curve point.
    let public_bytes = raw_public.to_bytes();
    group.bench_function("raw-dalek-decode-key-only", |b| {
        b.iter(|| ed25519_dalek::VerifyingKey::from_bytes(black_box(&public_bytes)))
    });
    group.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
}

criterion_group! {
    name = micro;
    config = quick();
    targets = seal_open, selector, ed25519
}
criterion_main!(micro);
