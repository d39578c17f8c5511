//! Shared pieces of Hearth's benchmarks.
//!
//! The `hearth-bench` binary (scenarios P1–P7 and P11–P13 of
//! `design/TARGETS.md`) and the criterion micro-benchmarks in `benches/`
//! draw their data and their arithmetic from here, so that both measure the
//! same records the same way:
//!
//! - [`records`]: the deterministic bank-operation records every scenario
//!   imports (seeded RNG, five fields plus a fixed `_id`).
//! - [`stats`]: percentiles over samples of durations.
//! - [`procfs`]: resident memory and CPU time of a process, from `/proc`.
//!
//! Every figure the binary prints is a ratio against a baseline measured in
//! the same run: the machines these run on are shared and noisy, so an
//! absolute time is only a rough guide.

pub mod procfs;
pub mod records;
pub mod stats;
