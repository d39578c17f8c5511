//! One bridge between the core's RNG and the crates that take a newer one.
//!
//! The core passes `rand_core` 0.6 RNGs everywhere (the callers' `OsRng`,
//! the simulator's seeded RNG). `hpke` (sealing, [`crate::sealed`]) and
//! `prio` (noise, in the data crate) take `rand_core` 0.10 ones. [`Bridge`]
//! lends the one to the other without copying its state, so every random
//! byte still comes from the RNG the caller passed in.

use std::convert::Infallible;

use rand_core::{CryptoRng, RngCore};

/// A `rand_core` 0.6 RNG seen as a `rand_core` 0.10 one.
pub struct Bridge<'a, R>(pub &'a mut R);

impl<R: RngCore> hpke::rand_core::TryRng for Bridge<'_, R> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl<R: RngCore + CryptoRng> hpke::rand_core::TryCryptoRng for Bridge<'_, R> {}
