//! Dropout masks as a function of position: element `i` of a call is kept when a hash of
//! `(seed, i)` falls below the keep probability. The backward pass regenerates the mask
//! from the seed instead of storing it, and the result does not depend on how the work was
//! split between threads.
//!
//! The seed of each call is drawn from the backend's own generator, so `B::seed` makes a
//! run repeatable exactly as it does for burn's `Dropout` (the masks differ from burn's:
//! the same distribution, not the same draws).

use burn::prelude::*;
use burn::tensor::Distribution;

/// A seed for one call, from `B`'s generator (48 random bits).
pub(crate) fn draw_seed<B: Backend>(device: &B::Device) -> u64 {
    #[cfg(test)]
    if let Some(seed) = FIXED_SEED.get() {
        return seed;
    }
    let bits = Tensor::<B, 1>::random([2], Distribution::Uniform(0.0, 16_777_216.0), device)
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .unwrap_or_default();
    bits.iter()
        .fold(0u64, |seed, &v| (seed << 24) | (v as u64 & 0xFF_FFFF))
}

#[cfg(test)]
thread_local! {
    /// The seed every call on this thread uses (tests: the backend's generator is one for
    /// the whole process, shared with the tests running beside).
    static FIXED_SEED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every dropout seed drawn on this thread fixed to `seed`.
#[cfg(test)]
pub(crate) fn with_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    FIXED_SEED.set(Some(seed));
    let out = f();
    FIXED_SEED.set(None);
    out
}

/// Which elements one dropout call keeps, and the factor kept elements are scaled by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropMask {
    seed: u64,
    /// Kept when the hash's high 32 bits are below this.
    threshold: u64,
    /// `1 / (1 − p)`.
    pub scale: f32,
}

impl DropMask {
    /// Drops with probability `prob` (in `(0, 1)`).
    pub fn new(seed: u64, prob: f64) -> Self {
        let keep = 1.0 - prob;
        Self {
            seed,
            threshold: (keep * 4_294_967_296.0) as u64,
            scale: (1.0 / keep) as f32,
        }
    }

    /// Whether element `index` is kept (SplitMix64's output for that position).
    #[inline]
    pub fn keeps(&self, index: u64) -> bool {
        let mut z = self
            .seed
            .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 32) < self.threshold
    }

    /// The factor for element `index`: `scale` when kept, 0 when dropped.
    #[inline]
    pub fn factor(&self, index: u64) -> f32 {
        if self.keeps(index) { self.scale } else { 0.0 }
    }

    /// `values[i] *= factor(first + i)`.
    pub fn apply(&self, values: &mut [f32], first: u64) {
        for (i, v) in values.iter_mut().enumerate() {
            *v *= self.factor(first + i as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept fraction is `1 − p` (to sampling error), and one seed gives one mask.
    #[test]
    fn keeps_the_right_fraction_repeatably() {
        for p in [0.1, 0.5, 0.9] {
            let mask = DropMask::new(12345, p);
            let n = 200_000u64;
            let kept = (0..n).filter(|&i| mask.keeps(i)).count() as f64 / n as f64;
            assert!((kept - (1.0 - p)).abs() < 0.005, "p = {p}: kept {kept}");
            let again = DropMask::new(12345, p);
            assert!((0..1000).all(|i| mask.keeps(i) == again.keeps(i)));
        }
        let other = DropMask::new(54321, 0.5);
        let mask = DropMask::new(12345, 0.5);
        assert!((0..1000).any(|i| mask.keeps(i) != other.keeps(i)));
    }
}
