//! The x86-64 micro-kernels (AVX-512 and AVX2), compiled for their instruction sets and chosen
//! at run time.

use std::arch::x86_64::*;

use super::Tile;

/// The k loop of a micro-kernel of `$mr` rows and two registers of `$lanes` columns: row i of A
/// broadcast against a row of the packed panel each step. Expanded inside each kernel, so that
/// its intrinsics compile for that kernel's instruction set.
macro_rules! k_loop {
    ($t:expr, $mr:literal, $lanes:literal, $zero:ident, $load:ident, $set1:ident, $fma:ident) => {{
        let t: Tile = $t;
        let mut acc = [[$zero(); 2]; $mr];
        let rows: [*const f32; $mr] = std::array::from_fn(|i| t.a.add(i.min(t.m - 1) * t.a_rs));
        let mut bp = t.b;
        let mut off = 0;
        for _ in 0..t.kc {
            let b0 = $load(bp);
            let b1 = $load(bp.add($lanes));
            for i in 0..$mr {
                let av = $set1(*rows[i].add(off));
                acc[i][0] = $fma(av, b0, acc[i][0]);
                acc[i][1] = $fma(av, b1, acc[i][1]);
            }
            bp = bp.add(2 * $lanes);
            off += t.a_cs;
        }
        acc
    }};
}

/// The AVX-512 micro-kernel: 8 rows x 32 columns (two registers a row).
#[target_feature(enable = "avx512f")]
pub unsafe fn micro_8x32(t: Tile) {
    // SAFETY: the caller's contract (see `super::micro`).
    unsafe {
        let acc = k_loop!(t, 8, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps);
        let mask = |w: usize| if w >= 16 { 0xffff } else { ((1u32 << w) - 1) as __mmask16 };
        let (k0, k1) = (mask(t.n), mask(t.n.saturating_sub(16)));
        for (i, acc) in acc.iter().enumerate().take(t.m) {
            let row = t.c.add(i * t.c_rs);
            // Past a short row the masked lanes are neither read nor written, but the address
            // of the second half may lie past the buffer: computed without `add`'s contract.
            let row1 = row.wrapping_add(16);
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if t.accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(k0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(k1, row1));
            }
            _mm512_mask_storeu_ps(row, k0, v0);
            _mm512_mask_storeu_ps(row1, k1, v1);
        }
    }
}

/// The AVX2 micro-kernel: 6 rows x 16 columns (two registers a row).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn micro_6x16(t: Tile) {
    // SAFETY: the caller's contract (see `super::micro`).
    unsafe {
        let acc = k_loop!(t, 6, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps);
        for (i, acc) in acc.iter().enumerate().take(t.m) {
            let row = t.c.add(i * t.c_rs);
            if t.n == 16 {
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if t.accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
                }
                _mm256_storeu_ps(row, v0);
                _mm256_storeu_ps(row.add(8), v1);
            } else {
                let mut tile = [0.0f32; 16];
                _mm256_storeu_ps(tile.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(tile.as_mut_ptr().add(8), acc[1]);
                for (j, &x) in tile.iter().enumerate().take(t.n) {
                    let v = row.add(j);
                    *v = if t.accumulate { *v + x } else { x };
                }
            }
        }
    }
}
