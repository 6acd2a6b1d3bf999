//! `exp` and `erf` for `f32` as straight-line arithmetic, so that the loops calling them
//! (softmax, GELU) vectorise.
//!
//! Why: `f32::exp` and `libm::erff` are calls into scalar library code; a loop with a call
//! in it runs one element at a time. In BERT's forward pass the two were an eighth of the
//! time. These use no calls, no tables and no branches (selects only), and stay within a
//! few units in the last place: [`exp`] within 2 ulp over its domain, [`erf`] within
//! 6·10⁻⁷ of the exact value (tested against `f64`).

/// `2^23 + 2^22`: adding and subtracting it rounds an `f32` of magnitude below `2^22` to
/// the nearest integer (ties to even), in any vector width, without SSE4's `round`.
const ROUND: f32 = 12_582_912.0;

/// `e^x` for `x ≤ 88` (the results a softmax or a Gaussian needs: at most 1.6·10³⁸); below
/// about −87.3 the result is 0, where the exact one is below `f32`'s normal range. NaN gives
/// NaN, −∞ gives 0.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // x = n·ln 2 + r with |r| ≤ ln 2 / 2, ln 2 in two parts (Cody and Waite) so that n·ln 2
    // is exact to beyond f32's precision.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // (A comparison, not `max`, so that NaN stays NaN.)
    let x = if x < -88.0 { -88.0 } else { x };
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r by its Taylor series to r⁷ (the next term is below 6·10⁻⁹ of the result here).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    // 2ⁿ from its exponent bits; n = −127 (x below about −87.3) gives the bits of 0. n + 127
    // (a whole number in 0..=254 here) is read from the low bits of n + 127 + 2²³, whose
    // unit in the last place is 1: `n as i32` would be a conversion that saturates, which
    // the compiler does lane by lane, and that made the vectorised loops half scalar.
    const EXPONENT_BITS: f32 = 8_388_608.0;
    let biased = (n + 127.0) + EXPONENT_BITS;
    let scale = f32::from_bits((biased.to_bits() & 0xFF) << 23);
    p * scale
}

/// The error function, by Abramowitz and Stegun's 7.1.26 on `|x|` (the formula's error is
/// below 1.5·10⁻⁷, evaluated in `f32` below 6·10⁻⁷), with erf's odd symmetry.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let magnitude = 1.0 - poly * exp(-a * a);
    magnitude.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 2 ulp of the exact value from −87 to 88, 0 below the normal range, and the
    /// special values.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let exact = (x as f64).exp();
            let ulp = (exact as f32).abs() as f64 * f32::EPSILON as f64;
            worst = worst.max((exp(x) as f64 - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "{worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn erf_is_within_its_bound() {
        let mut worst = 0.0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let exact = libm::erf(x as f64);
            worst = worst.max((erf(x) as f64 - exact).abs());
        }
        assert!(worst < 6e-7, "{worst}");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }
}
