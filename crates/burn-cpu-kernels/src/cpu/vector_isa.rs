//! Runs a hot loop compiled for the widest vector instructions the processor has.
//!
//! Why: the crate is built for baseline x86-64 so that one binary runs everywhere, and
//! there LLVM vectorizes a loop to 4 lanes of SSE2. The element-wise passes this crate
//! writes itself (the fused AdamW update) are bound by arithmetic such as `sqrt` and
//! division, which AVX-512 does 16 lanes at a time. [`widest`] compiles the closure it is
//! given a second and third time with AVX-512 and AVX2 enabled and picks one at run time,
//! the way the `gemm` crate picks its kernels. The instructions differ, not the arithmetic:
//! Rust never fuses a multiply and an add on its own, and vector `sqrt` and division round
//! exactly like the scalar ones, so every copy gives the same bits.

/// Calls `f`, compiled for AVX-512 or AVX2 when the processor has them. Give it an
/// `#[inline(always)]` closure over `#[inline(always)]` code, so that the body is compiled
/// inside the function that enables the instructions.
#[inline(always)]
pub(crate) fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor was just found to have AVX-512F.
            return unsafe { with_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor was just found to have AVX2.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bits as the baseline loop, on every instruction set this machine has.
    #[test]
    fn gives_the_baseline_results() {
        let x: Vec<f32> = (0..1000)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + 3.5)
            .collect();
        let formula = |a: f32| (a * 0.9 + 0.1 * a * a) / (a.sqrt() + 1e-8);
        let baseline: Vec<f32> = x.iter().map(|&a| formula(a)).collect();
        let mut out = vec![0.0f32; x.len()];
        widest(
            #[inline(always)]
            || {
                for (o, &a) in out.iter_mut().zip(&x) {
                    *o = formula(a);
                }
            },
        );
        assert_eq!(out, baseline);
    }
}
