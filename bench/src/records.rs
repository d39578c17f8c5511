//! Deterministic benchmark records: bank operations over ten years.
//!
//! Record `i` of seed `s` is always the same, so Hearth and every baseline
//! store byte-identical data, shard it identically (the `_id` decides the
//! shard) and two runs of the benchmark compare like with like.
//!
//! ```json
//! {"_id": "3f0c…(32 hex)", "date": "2021-03-14", "amount": -42.17,
//!  "label": "CARD GROCERY 4821", "month": 202103, "account": "acc-checking"}
//! ```
//!
//! `month` is `yyyymm` over 2016-01..=2025-12, so 120 distinct values: an
//! equality on it selects about 1/120 of the records, like a month's
//! statement.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The seed every scenario uses unless told otherwise.
pub const DEFAULT_SEED: u64 = 0x4845_4152_5448; // "HEARTH"

/// First year of the generated dates.
pub const FIRST_YEAR: i64 = 2016;

/// Number of years covered; months run over `FIRST_YEAR * 100 + 1 ..`.
pub const YEARS: i64 = 10;

/// Distinct `month` values.
pub const MONTHS: i64 = YEARS * 12;

const LABELS: [&str; 16] = [
    "CARD GROCERY",
    "CARD BAKERY",
    "CARD PHARMACY",
    "CARD RESTAURANT",
    "CARD FUEL",
    "CARD BOOKSHOP",
    "TRANSFER RENT",
    "TRANSFER SAVINGS",
    "DIRECT DEBIT ELECTRICITY",
    "DIRECT DEBIT INTERNET",
    "DIRECT DEBIT INSURANCE",
    "SALARY",
    "REFUND",
    "CASH WITHDRAWAL",
    "SUBSCRIPTION MUSIC",
    "TRAIN TICKET",
];

const ACCOUNTS: [&str; 4] = ["acc-checking", "acc-savings", "acc-joint", "acc-card"];

/// The `i`-th `month` value, `yyyymm`, for `i` in `0..MONTHS`.
pub fn month_value(i: i64) -> i64 {
    let i = i.rem_euclid(MONTHS);
    (FIRST_YEAR + i / 12) * 100 + i % 12 + 1
}

/// Generates `count` records from `seed`. Ids are 32 lowercase hex
/// characters, like the ids Hearth generates itself.
pub fn generate(count: usize, seed: u64) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|_| one(&mut rng)).collect()
}

fn one(rng: &mut StdRng) -> Value {
    let id: String = (0..16)
        .map(|_| format!("{:02x}", rng.r#gen::<u8>()))
        .collect();
    let month_index = rng.gen_range(0..MONTHS);
    let month = month_value(month_index);
    let day = rng.gen_range(1..=28);
    let cents: i64 = rng.gen_range(-200_000..=200_000);
    let label = LABELS[rng.gen_range(0..LABELS.len())];
    let account = ACCOUNTS[rng.gen_range(0..ACCOUNTS.len())];
    json!({
        "_id": id,
        "date": format!("{}-{:02}-{day:02}", month / 100, month % 100),
        "amount": cents as f64 / 100.0,
        "label": format!("{label} {}", rng.gen_range(1000..10_000)),
        "month": month,
        "account": account,
    })
}

/// Splits records into batches of `size` (the last one may be shorter).
pub fn batches(records: &[Value], size: usize) -> Vec<Vec<Value>> {
    records.chunks(size.max(1)).map(<[Value]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_seed_dependent() {
        assert_eq!(generate(50, 7), generate(50, 7));
        assert_ne!(generate(50, 7), generate(50, 8));
    }

    #[test]
    fn records_have_the_five_fields_and_a_hex_id() {
        for r in generate(200, DEFAULT_SEED) {
            let map = r.as_object().expect("an object");
            assert_eq!(map.len(), 6, "{r}");
            let id = map["_id"].as_str().expect("string id");
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
            let month = map["month"].as_i64().expect("integer month");
            assert!((201601..=202512).contains(&month), "{month}");
            assert!((1..=12).contains(&(month % 100)));
            let date = map["date"].as_str().expect("date");
            assert!(date.starts_with(&format!("{}-{:02}-", month / 100, month % 100)));
            assert!(map["amount"].is_f64());
        }
    }

    #[test]
    fn month_values_cover_ten_years() {
        assert_eq!(month_value(0), 201601);
        assert_eq!(month_value(11), 201612);
        assert_eq!(month_value(12), 201701);
        assert_eq!(month_value(MONTHS - 1), 202512);
        assert_eq!(month_value(MONTHS), 201601);
    }

    #[test]
    fn batches_cover_every_record_in_order() {
        let records = generate(12, 1);
        let b = batches(&records, 5);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![5, 5, 2]);
        assert_eq!(b.concat(), records);
    }
}
