//! The x86-64 micro-kernels (AVX-512 and AVX2), compiled for their instruction sets and chosen
//! at run time.

use std::arch::x86_64::*;

/// The AVX-512 micro-kernel: 8 rows x 32 columns (two registers a row).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn micro_8x32(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    c: *mut f32,
    c_rs: usize,
    m: usize,
    n: usize,
    accumulate: bool,
) {
    // SAFETY: the caller's contract (see `super::micro`).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; 8];
        let rows: [*const f32; 8] = std::array::from_fn(|i| a.add(i.min(m - 1) * a_rs));
        let mut bp = b;
        let mut off = 0;
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for i in 0..8 {
                let av = _mm512_set1_ps(*rows[i].add(off));
                acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
            }
            bp = bp.add(32);
            off += a_cs;
        }
        let mask = |w: usize| if w >= 16 { 0xffff } else { ((1u32 << w) - 1) as __mmask16 };
        let (k0, k1) = (mask(n), mask(n.saturating_sub(16)));
        for (i, acc) in acc.iter().enumerate() {
            if i >= m {
                break;
            }
            let row = c.add(i * c_rs);
            // Past a short row the masked lanes are neither read nor written, but the address
            // of the second half may lie past the buffer: computed without `add`'s contract.
            let row1 = row.wrapping_add(16);
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(k0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(k1, row1));
            }
            _mm512_mask_storeu_ps(row, k0, v0);
            _mm512_mask_storeu_ps(row1, k1, v1);
        }
    }
}

/// The AVX2 micro-kernel: 6 rows x 16 columns (two registers a row).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn micro_6x16(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    c: *mut f32,
    c_rs: usize,
    m: usize,
    n: usize,
    accumulate: bool,
) {
    // SAFETY: the caller's contract (see `super::micro`).
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
        let rows: [*const f32; 6] = std::array::from_fn(|i| a.add(i.min(m - 1) * a_rs));
        let mut bp = b;
        let mut off = 0;
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for i in 0..6 {
                let av = _mm256_set1_ps(*rows[i].add(off));
                acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
            }
            bp = bp.add(16);
            off += a_cs;
        }
        for (i, acc) in acc.iter().enumerate() {
            if i >= m {
                break;
            }
            let row = c.add(i * c_rs);
            if n == 16 {
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
                }
                _mm256_storeu_ps(row, v0);
                _mm256_storeu_ps(row.add(8), v1);
            } else {
                let mut tile = [0.0f32; 16];
                _mm256_storeu_ps(tile.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(tile.as_mut_ptr().add(8), acc[1]);
                for (j, &x) in tile.iter().enumerate().take(n) {
                    let v = row.add(j);
                    *v = if accumulate { *v + x } else { x };
                }
            }
        }
    }
}
