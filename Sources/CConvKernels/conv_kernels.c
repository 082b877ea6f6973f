/* Depthwise convolution kernels with AVX-512 / AVX2 intrinsics (see include/conv_kernels.h). */
#include "conv_kernels.h"

long shardcal_fetch_add(long *counter, long value) {
    return __atomic_fetch_add(counter, value, __ATOMIC_RELAXED);
}

#if defined(__x86_64__)
#include <immintrin.h>

/* Depthwise conv, one output plane, from the zero-padded phase-split input plane prepared by the
 * Swift side (see Depthwise.swift). Output tile t = (y, 16-column block xb) reads
 * pad[y * rowStep + xb + offsets[k]] for tap k; acc = bias, then acc = fma(w[k], x, acc) per tap. */
__attribute__((target("avx512f")))
void shardcal_dw_plane_avx512(const float *pad, float *dst, const float *w, float bias,
                                            const long *offsets, long taps, long oh, long ow,
                                            long vecsPerRow, long rowStep) {
    const long tiles = oh * vecsPerRow;
    const __m512 b = _mm512_set1_ps(bias);
    const long lastWidth = ow - (vecsPerRow - 1) * 16;
    const __mmask16 lastMask = (__mmask16)((1u << lastWidth) - 1u);
    long t = 0;
    for (; t + 4 <= tiles; t += 4) {
        const float *p[4];
        float *o[4];
        __mmask16 m[4];
        for (int u = 0; u < 4; u++) {
            long y = (t + u) / vecsPerRow, v = (t + u) - y * vecsPerRow;
            p[u] = pad + y * rowStep + v * 16;
            o[u] = dst + y * ow + v * 16;
            m[u] = (v == vecsPerRow - 1) ? lastMask : (__mmask16)0xFFFF;
        }
        __m512 a0 = b, a1 = b, a2 = b, a3 = b;
        for (long k = 0; k < taps; k++) {
            const __m512 wv = _mm512_set1_ps(w[k]);
            const long off = offsets[k];
            a0 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(p[0] + off), a0);
            a1 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(p[1] + off), a1);
            a2 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(p[2] + off), a2);
            a3 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(p[3] + off), a3);
        }
        _mm512_mask_storeu_ps(o[0], m[0], a0);
        _mm512_mask_storeu_ps(o[1], m[1], a1);
        _mm512_mask_storeu_ps(o[2], m[2], a2);
        _mm512_mask_storeu_ps(o[3], m[3], a3);
    }
    for (; t < tiles; t++) {
        long y = t / vecsPerRow, v = t - y * vecsPerRow;
        const float *p0 = pad + y * rowStep + v * 16;
        __m512 a0 = b;
        for (long k = 0; k < taps; k++)
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(w[k]), _mm512_loadu_ps(p0 + offsets[k]), a0);
        _mm512_mask_storeu_ps(dst + y * ow + v * 16, (v == vecsPerRow - 1) ? lastMask : (__mmask16)0xFFFF, a0);
    }
}

/* Bit m (0..15) set when column s + m lies in [0, W). */
static inline unsigned shardcal_span_mask(long s, long W) {
    long first = s < 0 ? -s : 0;          /* first valid lane */
    long end = W - s;                     /* one past the last valid lane */
    if (end > 16) end = 16;
    if (end <= first) return 0;
    unsigned upto = end >= 16 ? 0xFFFFu : ((1u << end) - 1u);
    unsigned from = first >= 16 ? 0xFFFFu : ((1u << first) - 1u);
    return upto & ~from;
}

/* ---- Stride-2 depthwise, square 3×3 / 5×5 kernels, dilation 1 (EfficientNet's and MobileNet's
 * downsampling layers) ----
 * Same per-element arithmetic as shardcal_dw_direct_avx512 (acc = bias, then one FMA per tap in
 * (i, j) order, rows in the padding skipped), so bit-identical to it; only the schedule differs.
 * A tile is 4 output rows × NB (1 or 2) 16-column blocks (8 accumulators). Its input rows are
 * walked once, top to bottom: input row 2y − pt + t serves output row k with kernel row
 * i = t − 2k, so each row's de-interleaved (even-column) vector is loaded and permuted once per tap
 * column and used by every output row that needs it (3×3: 9 input rows for 4 output rows instead
 * of 12). For a fixed output row, t and so i ascend, j ascends within: the order is (i, j). */
#define SHC_S2_R 4
struct shc_dw_block {
    __mmask16 mlo[16], mhi[16];
    long c0[16];
    __mmask16 store;
};

/* Masks and first columns of the 16-column block starting at output column xb (sw 1 or 2): tap
 * column j's lane l reads input column c0[j] + l·sw; mlo/mhi select the lanes of the two 16-column
 * spans from c0[j] that lie in [0, W) (with sw 1, only lanes that reach an output column). */
static inline void shc_dw_block_init(struct shc_dw_block *b, long xb, long ow, long W, long kw, long sw, long dw, long pl) {
    const long lanesOut = ow - xb < 16 ? ow - xb : 16;
    b->store = (__mmask16)((1u << lanesOut) - 1u);
    for (long j = 0; j < kw; j++) {
        b->c0[j] = xb * sw + j * dw - pl;
        unsigned lo = shardcal_span_mask(b->c0[j], W), hi = shardcal_span_mask(b->c0[j] + 16, W);
        if (sw == 1) lo &= b->store;
        b->mlo[j] = (__mmask16)lo; b->mhi[j] = (__mmask16)hi;
    }
}

__attribute__((target("avx512f"), always_inline))
static inline void shc_dw_s2_tile(const float *src, float *dst, const float *w, float bias, long H, long W, long ow,
                                  long pt, const struct shc_dw_block *blk, long xb, long y, long rows,
                                  const int K, const int NB, float *clip_out, __m512 vlo, __m512 vhi) {
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    __m512 acc[SHC_S2_R][2];
    for (int k = 0; k < SHC_S2_R; k++)
        for (int b = 0; b < NB; b++) acc[k][b] = _mm512_set1_ps(bias);
    const long r0 = 2 * y - pt;
#pragma clang loop unroll(full)
    for (int t = 0; t < 2 * (SHC_S2_R - 1) + K; t++) {
        const long r = r0 + t;
        if (r < 0 || r >= H) continue;
        const float *row = src + r * W;
#pragma clang loop unroll(full)
        for (int j = 0; j < K; j++) {
            __m512 v[2];
            for (int b = 0; b < NB; b++) {
                const long c = blk[b].c0[j];
                v[b] = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(blk[b].mlo[j], row + c), evens,
                                              _mm512_maskz_loadu_ps(blk[b].mhi[j], row + c + 16));
            }
#pragma clang loop unroll(full)
            for (int k = 0; k < SHC_S2_R; k++) {
                const int i = t - 2 * k;
                if (i < 0 || i >= K || k >= rows) continue;
                const __m512 wv = _mm512_set1_ps(w[i * K + j]);
                for (int b = 0; b < NB; b++) acc[k][b] = _mm512_fmadd_ps(wv, v[b], acc[k][b]);
            }
        }
    }
    for (int k = 0; k < SHC_S2_R && k < rows; k++) {
        for (int b = 0; b < NB; b++) {
            const long o = (y + k) * ow + xb + 16 * b;
            if (clip_out != dst) _mm512_mask_storeu_ps(dst + o, blk[b].store, acc[k][b]);
            /* NaN passes through the clip (see shardcal_dw_direct_avx512). */
            if (clip_out) _mm512_mask_storeu_ps(clip_out + o, blk[b].store, _mm512_min_ps(vhi, _mm512_max_ps(vlo, acc[k][b])));
        }
    }
}

/* Returns 0 (nothing done) outside its domain: strides 2, dilations 1, kh == kw ∈ {3, 5}. */
__attribute__((target("avx512f")))
static int shc_dw_s2_avx512(const float *src, float *dst, const float *w, float bias,
                            long H, long W, long oh, long ow, long kh, long kw,
                            long sh, long sw, long dh, long dw, long pt, long pl,
                            float *clip_out, float lo, float hi) {
    if (sh != 2 || sw != 2 || dh != 1 || dw != 1 || kh != kw || (kh != 3 && kh != 5)) return 0;
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    struct shc_dw_block blk[2];
    for (long xb = 0; xb < ow; xb += 32) {
        const int nb = ow - xb > 16 ? 2 : 1;
        for (int b = 0; b < nb; b++) shc_dw_block_init(&blk[b], xb + 16 * b, ow, W, kw, sw, dw, pl);
        for (long y = 0; y < oh; y += SHC_S2_R) {
            const long rows = oh - y < SHC_S2_R ? oh - y : SHC_S2_R;
#define SHC_S2(K, NB) shc_dw_s2_tile(src, dst, w, bias, H, W, ow, pt, blk, xb, y, rows, K, NB, clip_out, vlo, vhi)
            if (kh == 3) { if (nb == 2) SHC_S2(3, 2); else SHC_S2(3, 1); }
            else { if (nb == 2) SHC_S2(5, 2); else SHC_S2(5, 1); }
#undef SHC_S2
        }
    }
    return 1;
}

/* Depthwise conv, one plane, read directly from the unpadded input (no staging copy): AVX-512
 * masked loads zero the taps that fall in the padding (and never touch memory outside the row).
 * Column strides 1 and 2 only (returns 0 otherwise, or when kw > 16). Per output element the
 * accumulation is bias, then taps in (i, j) order, one FMA each, skipping rows in the padding.
 * Four output rows of one 16-column block are computed together. */
__attribute__((target("avx512f")))
int shardcal_dw_direct_avx512(const float *src, float *dst, const float *w, float bias,
                              long H, long W, long oh, long ow, long kh, long kw,
                              long sh, long sw, long dh, long dw, long pt, long pl,
                              float *clip_out, float lo, float hi) {
    if ((sw != 1 && sw != 2) || kw > 16) return 0;
    if (shc_dw_s2_avx512(src, dst, w, bias, H, W, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, clip_out, lo, hi)) return 1;
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    struct shc_dw_block blk;
    const __mmask16 *mlo = blk.mlo, *mhi = blk.mhi;
    const long *c0 = blk.c0;
    for (long xb = 0; xb < ow; xb += 16) {
        shc_dw_block_init(&blk, xb, ow, W, kw, sw, dw, pl);
        const __mmask16 storeMask = blk.store;
        for (long y = 0; y < oh; y += 4) {
            const long rows = oh - y < 4 ? oh - y : 4;
            __m512 a0 = _mm512_set1_ps(bias), a1 = a0, a2 = a0, a3 = a0;
            for (long i = 0; i < kh; i++) {
                /* Input rows of the four output rows for kernel row i (scalar code: no arrays,
                 * which the compiler would vectorise into a store-forwarding stall). */
                const long iy0 = y * sh - pt + i * dh;
                const long iy1 = iy0 + sh, iy2 = iy1 + sh, iy3 = iy2 + sh;
                const int v0 = iy0 >= 0 && iy0 < H;
                const int v1 = rows > 1 && iy1 >= 0 && iy1 < H;
                const int v2 = rows > 2 && iy2 >= 0 && iy2 < H;
                const int v3 = rows > 3 && iy3 >= 0 && iy3 < H;
                const unsigned valid = (unsigned)v0 | ((unsigned)v1 << 1) | ((unsigned)v2 << 2) | ((unsigned)v3 << 3);
                if (!valid) continue;
                const float *r0 = v0 ? src + iy0 * W : src;
                const float *r1 = v1 ? src + iy1 * W : src;
                const float *r2 = v2 ? src + iy2 * W : src;
                const float *r3 = v3 ? src + iy3 * W : src;
                const float *wi = w + i * kw;
                if (sw == 1) {
#define SHARDCAL_LD1(row) _mm512_maskz_loadu_ps(m, (row) + c)
                    if (valid == 0xF) {
                        for (long j = 0; j < kw; j++) {
                            const __m512 wv = _mm512_set1_ps(wi[j]);
                            const __mmask16 m = mlo[j];
                            const long c = c0[j];
                            a0 = _mm512_fmadd_ps(wv, SHARDCAL_LD1(r0), a0);
                            a1 = _mm512_fmadd_ps(wv, SHARDCAL_LD1(r1), a1);
                            a2 = _mm512_fmadd_ps(wv, SHARDCAL_LD1(r2), a2);
                            a3 = _mm512_fmadd_ps(wv, SHARDCAL_LD1(r3), a3);
                        }
                    } else {
                        for (long j = 0; j < kw; j++) {
                            const __m512 wv = _mm512_set1_ps(wi[j]);
                            const __mmask16 m = mlo[j];
                            const long c = c0[j];
                            if (valid & 1) a0 = _mm512_fmadd_ps(wv, SHARDCAL_LD1(r0), a0);
                            if (valid & 2) a1 = _mm512_fmadd_ps(wv, SHARDCAL_LD1(r1), a1);
                            if (valid & 4) a2 = _mm512_fmadd_ps(wv, SHARDCAL_LD1(r2), a2);
                            if (valid & 8) a3 = _mm512_fmadd_ps(wv, SHARDCAL_LD1(r3), a3);
                        }
                    }
#undef SHARDCAL_LD1
                } else {
#define SHARDCAL_LD2(row) _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(ml, (row) + c), evens, \
                                                 _mm512_maskz_loadu_ps(mh, (row) + c + 16))
                    if (valid == 0xF) {
                        for (long j = 0; j < kw; j++) {
                            const __m512 wv = _mm512_set1_ps(wi[j]);
                            const __mmask16 ml = mlo[j], mh = mhi[j];
                            const long c = c0[j];
                            a0 = _mm512_fmadd_ps(wv, SHARDCAL_LD2(r0), a0);
                            a1 = _mm512_fmadd_ps(wv, SHARDCAL_LD2(r1), a1);
                            a2 = _mm512_fmadd_ps(wv, SHARDCAL_LD2(r2), a2);
                            a3 = _mm512_fmadd_ps(wv, SHARDCAL_LD2(r3), a3);
                        }
                    } else {
                        for (long j = 0; j < kw; j++) {
                            const __m512 wv = _mm512_set1_ps(wi[j]);
                            const __mmask16 ml = mlo[j], mh = mhi[j];
                            const long c = c0[j];
                            if (valid & 1) a0 = _mm512_fmadd_ps(wv, SHARDCAL_LD2(r0), a0);
                            if (valid & 2) a1 = _mm512_fmadd_ps(wv, SHARDCAL_LD2(r1), a1);
                            if (valid & 4) a2 = _mm512_fmadd_ps(wv, SHARDCAL_LD2(r2), a2);
                            if (valid & 8) a3 = _mm512_fmadd_ps(wv, SHARDCAL_LD2(r3), a3);
                        }
                    }
#undef SHARDCAL_LD2
                }
            }
            /* max/min return their second operand when either is NaN: NaN passes through the
             * clip, as x < lo ? lo : (x > hi ? hi : x) does. */
#define SHARDCAL_DW_STORE(off, a) do { \
                if (clip_out != dst) _mm512_mask_storeu_ps(dst + (off), storeMask, (a)); \
                if (clip_out) _mm512_mask_storeu_ps(clip_out + (off), storeMask, _mm512_min_ps(vhi, _mm512_max_ps(vlo, (a)))); \
            } while (0)
            const long o = y * ow + xb;
            SHARDCAL_DW_STORE(o, a0);
            if (rows > 1) SHARDCAL_DW_STORE(o + ow, a1);
            if (rows > 2) SHARDCAL_DW_STORE(o + 2 * ow, a2);
            if (rows > 3) SHARDCAL_DW_STORE(o + 3 * ow, a3);
#undef SHARDCAL_DW_STORE
        }
    }
    return 1;
}

#define SHC_DW_STORE_Y 0
#define SHC_DW_STORE_CLIP 1
#define SHC_DW_STORE_BOTH 2

/* ---- Flat depthwise (stride 1, ow == W) ----
 * With stride 1 and as many output as input columns, output pixel p = y·W + x reads input pixel
 * p + (i·dh − pt)·W + (j·dw − pl) for tap (i, j): a fixed offset per tap. Vectors of 16
 * consecutive output pixels therefore run across row ends (no lanes wasted on narrow planes), and
 * a lane's load is masked off when its input row or column lies in the padding (masks from the
 * lane's (y, x) coordinates, so nothing outside the plane is read). The masks of a group of G ≤ 8
 * vectors depend on the geometry only: they are computed once and used for every plane. A tile
 * is NP planes × G vectors (NP·G ≤ 8 independent accumulators). Per output element: acc = bias,
 * then one FMA per tap in (i, j) order; a tap in the padding adds w·0 (exact, up to the sign of a
 * zero sum). */
#define SHC_DW_STORE_Y 0
#define SHC_DW_STORE_CLIP 1
#define SHC_DW_STORE_BOTH 2
#define SHC_DW_FLAT_MAX_TAPS 1024

/* Per-tap geometry of the flat kernel: tap t reads row y + ri[t] (valid below rows[t]) and column
 * x + cj[t] (valid below cols[t]) of a plane whose rows are `ow` floats apart, at offset off[t]
 * from the output pixel's index. */
struct shc_dw_taps {
    long ri[SHC_DW_FLAT_MAX_TAPS], rows[SHC_DW_FLAT_MAX_TAPS];
    long cj[SHC_DW_FLAT_MAX_TAPS], cols[SHC_DW_FLAT_MAX_TAPS];
    long off[SHC_DW_FLAT_MAX_TAPS];
};

/* masks[t * 8 + g]: load mask of vector v0 + g for tap t (output pixel p = y·ow + x per lane). */
__attribute__((target("avx512f")))
static void shc_dw_flat_masks(unsigned short *masks, long v0, int G, long ow, long taps, const struct shc_dw_taps *tp) {
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i vW = _mm512_set1_epi32((int)ow), one = _mm512_set1_epi32(1);
    for (int g = 0; g < G; g++) {
        const long p0 = (v0 + g) * 16;
        __m512i x = _mm512_add_epi32(_mm512_set1_epi32((int)(p0 % ow)), lane);
        __m512i y = _mm512_set1_epi32((int)(p0 / ow));
        for (;;) {
            const __mmask16 over = _mm512_cmpge_epi32_mask(x, vW);
            if (!over) break;
            x = _mm512_mask_sub_epi32(x, over, x, vW);
            y = _mm512_mask_add_epi32(y, over, y, one);
        }
        for (long t = 0; t < taps; t++) {
            const __mmask16 rm = _mm512_cmplt_epu32_mask(_mm512_add_epi32(y, _mm512_set1_epi32((int)tp->ri[t])),
                                                         _mm512_set1_epi32((int)tp->rows[t]));
            masks[t * 8 + g] = _mm512_mask_cmplt_epu32_mask(rm, _mm512_add_epi32(x, _mm512_set1_epi32((int)tp->cj[t])),
                                                            _mm512_set1_epi32((int)tp->cols[t]));
        }
    }
}

__attribute__((target("avx512f"), always_inline))
static inline void shc_dw_flat_tile(const float *src, float *dst, const float *w, const float *bias,
                                    long P, long HW, long taps, const long *offs, const unsigned short *masks,
                                    long v0, const int NP, const int G,
                                    const int mode, float *clip_out, float lo, float hi) {
    __m512 acc[4][8];
    for (int q = 0; q < NP; q++) {
        const __m512 b = _mm512_set1_ps(bias ? bias[q] : 0.0f);
        for (int g = 0; g < G; g++) acc[q][g] = b;
    }
    const float *s0 = src + v0 * 16;
    for (long t = 0; t < taps; t++) {
        const float *s = s0 + offs[t];
        const unsigned short *m = masks + t * 8;
        __m512 wv[4];
        for (int q = 0; q < NP; q++) wv[q] = _mm512_set1_ps(w[q * taps + t]);
        for (int g = 0; g < G; g++)
            for (int q = 0; q < NP; q++)
                acc[q][g] = _mm512_fmadd_ps(wv[q], _mm512_maskz_loadu_ps((__mmask16)m[g], s + g * 16 + q * HW), acc[q][g]);
    }
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    for (int g = 0; g < G; g++) {
        const long left = P - (v0 + g) * 16;
        const __mmask16 sm = (__mmask16)(left >= 16 ? 0xFFFFu : ((1u << left) - 1u));
        for (int q = 0; q < NP; q++) {
            const long o = q * P + (v0 + g) * 16;
            if (mode != SHC_DW_STORE_CLIP) _mm512_mask_storeu_ps(dst + o, sm, acc[q][g]);
            if (mode != SHC_DW_STORE_Y)
                _mm512_mask_storeu_ps(clip_out + o, sm, _mm512_min_ps(vhi, _mm512_max_ps(vlo, acc[q][g])));
        }
    }
}

/* Tiles of planes [0, np) (np ∈ {1, 2, 4}) for vector groups [g0, g1); masks of group gi at
 * masks + (gi − g0)·taps·8. */
__attribute__((target("avx512f"), always_inline))
static inline void shc_dw_flat_tiles(const float *src, float *dst, const float *w, const float *bias,
                                     long P, long srcPlane, long V, long taps, const long *offs, const unsigned short *masks,
                                     long g0, long g1, int np, const int mode, float *clip_out, float lo, float hi) {
    for (long gi = g0; gi < g1; gi++) {
        const long v0 = gi * 8;
        const int G = V - v0 < 8 ? (int)(V - v0) : 8;
        const unsigned short *m = masks + (gi - g0) * taps * 8;
#define SHC_T(GG, NN) shc_dw_flat_tile(src, dst, w, bias, P, srcPlane, taps, offs, m, v0, NN, GG, mode, clip_out, lo, hi)
        if (np == 1) {
            switch (G) {
            case 8: SHC_T(8, 1); break;
            case 7: SHC_T(7, 1); break;
            case 6: SHC_T(6, 1); break;
            case 5: SHC_T(5, 1); break;
            case 4: SHC_T(4, 1); break;
            case 3: SHC_T(3, 1); break;
            case 2: SHC_T(2, 1); break;
            default: SHC_T(1, 1); break;
            }
        } else if (np == 2) {
            switch (G) {
            case 4: SHC_T(4, 2); break;
            case 3: SHC_T(3, 2); break;
            case 2: SHC_T(2, 2); break;
            default: SHC_T(1, 2); break;
            }
        } else {
            switch (G) {
            case 2: SHC_T(2, 4); break;
            default: SHC_T(1, 4); break;
            }
        }
#undef SHC_T
    }
}

#define SHC_DW_FLAT_MASKS 16384

__attribute__((target("avx512f")))
static void shc_dw_phase_split(const float *src, float *dst, long H, long W, long ow, long sh, long sw, long Hs);

/* Masks for as many vector groups as fit SHC_DW_FLAT_MASKS (all of them on EfficientNet's planes),
 * then plane by plane (np at a time) over those groups, so one plane's data stays in cache; strided
 * convs split a plane into its phases just before it is computed. */
__attribute__((target("avx512f"), always_inline))
static inline void shc_dw_flat_mode(const float *src, long H, long W, long sh, long sw, long Hs, float *scratch,
                                    float *dst, const float *w, const float *bias, long planes,
                                    long oh, long ow, long taps, const struct shc_dw_taps *tp, unsigned short *masks,
                                    const int mode, float *clip_out, float lo, float hi) {
    const long P = oh * ow, V = (P + 15) / 16, groups = (V + 7) / 8;
    const int split = !(sh == 1 && sw == 1);
    const long srcPlane = split ? sh * sw * Hs * ow : H * W;
    /* Planes with at most 4 (2) vectors are paired (grouped by 4) for 8 accumulators. */
    const int NP = V <= 2 ? 4 : (V <= 4 ? 2 : 1);
    long gpc = SHC_DW_FLAT_MASKS / (taps * 8);
    if (gpc < 1) gpc = 1;
    const int whole = gpc >= groups;
    if (split && !whole)
        for (long q = 0; q < planes; q++) shc_dw_phase_split(src + q * H * W, scratch + q * srcPlane, H, W, ow, sh, sw, Hs);
    for (long g0 = 0; g0 < groups; g0 += gpc) {
        const long g1 = g0 + gpc < groups ? g0 + gpc : groups;
        for (long gi = g0; gi < g1; gi++) {
            const long v0 = gi * 8;
            shc_dw_flat_masks(masks + (gi - g0) * taps * 8, v0, V - v0 < 8 ? (int)(V - v0) : 8, ow, taps, tp);
        }
        for (long q = 0; q < planes;) {
            const int np = q + NP <= planes ? NP : 1;
            const float *s;
            if (!split) s = src + q * srcPlane;
            else if (!whole) s = scratch + q * srcPlane;
            else {
                for (int k = 0; k < np; k++) shc_dw_phase_split(src + (q + k) * H * W, scratch + k * srcPlane, H, W, ow, sh, sw, Hs);
                s = scratch;
            }
            shc_dw_flat_tiles(s, dst + q * P, w + q * taps, bias ? bias + q : 0, P, srcPlane, V, taps, tp->off, masks,
                              g0, g1, np, mode, clip_out ? clip_out + q * P : 0, lo, hi);
            q += np;
        }
    }
}

static long shc_floor_div(long a, long b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Rows of the phase-split copy: ceil(H / sh) per phase. */
long shardcal_dw_flat_scratch_floats(long planes, long H, long W, long oh, long ow, long sh, long sw) {
    (void)W; (void)oh;
    if (sh == 1 && sw == 1) return 0;
    return planes * sh * sw * ((H + sh - 1) / sh) * ow;
}

/* Phase (a, b) of plane q: S[u][v] = X[u·sh + a][v·sw + b] for v < min(ow, columns of the phase). */
__attribute__((target("avx512f")))
static void shc_dw_phase_split(const float *src, float *dst, long H, long W, long ow, long sh, long sw, long Hs) {
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odds = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    for (long a = 0; a < sh; a++) {
        const long Ha = (H - a + sh - 1) / sh;
        for (long u = 0; u < Ha; u++) {
            const float *row = src + (u * sh + a) * W;
            if (sw == 2) {
                float *d0 = dst + (a * 2 * Hs + u) * ow, *d1 = dst + ((a * 2 + 1) * Hs + u) * ow;
                const long W0 = (W + 1) / 2 < ow ? (W + 1) / 2 : ow, W1 = W / 2 < ow ? W / 2 : ow;
                for (long v = 0; v < W0; v += 16) {
                    const long c = 2 * v, left = W - c;
                    const __mmask16 ml = (__mmask16)(left >= 16 ? 0xFFFFu : ((1u << left) - 1u));
                    const __mmask16 mh = (__mmask16)(left >= 32 ? 0xFFFFu : (left <= 16 ? 0u : ((1u << (left - 16)) - 1u)));
                    const __m512 lo16 = _mm512_maskz_loadu_ps(ml, row + c), hi16 = _mm512_maskz_loadu_ps(mh, row + c + 16);
                    const long n0 = W0 - v, n1 = W1 - v;
                    _mm512_mask_storeu_ps(d0 + v, (__mmask16)(n0 >= 16 ? 0xFFFFu : ((1u << n0) - 1u)),
                                          _mm512_permutex2var_ps(lo16, evens, hi16));
                    if (n1 > 0)
                        _mm512_mask_storeu_ps(d1 + v, (__mmask16)(n1 >= 16 ? 0xFFFFu : ((1u << n1) - 1u)),
                                              _mm512_permutex2var_ps(lo16, odds, hi16));
                }
            } else {
                for (long b = 0; b < sw; b++) {
                    float *d = dst + ((a * sw + b) * Hs + u) * ow;
                    for (long v = 0; v < ow && v * sw + b < W; v++) d[v] = row[v * sw + b];
                }
            }
        }
    }
}

/* Measured on every depthwise layer of EfficientNet-Lite0 (planes 112² … 7², 3×3 and 5×5, strides 1
 * and 2, single thread, time relative to shardcal_dw_direct_avx512's generic loop). Stride 1:
 * 0.36–0.39 on 7×7, 0.63–0.83 on 14×14, 0.70 on 28×28, 0.44 on 56×56, 0.57 on 112×112. Stride 2
 * (phase split): 5×5 0.84 on 56→28 and 0.70 on 14→7, 3×3 1.29 on 112→56 and 1.17 on 28→14; but
 * the direct kernel's stride-2 path (shc_dw_s2_avx512, 3×3 and 5×5, dilation 1) measures 0.72 on
 * 112→56, 0.71 on 28→14, 0.66 on 56→28 and 0.50 on 14→7 (best of 6 alternating runs), so those
 * shapes go there. */
int shardcal_dw_flat_preferred(long H, long W, long kh, long kw, long sh, long sw, long dh, long dw) {
    (void)H; (void)W;
    if (sh == 1 && sw == 1) return 1;
    if (sh == 2 && sw == 2 && dh == 1 && dw == 1 && kh == kw && (kh == 3 || kh == 5)) return 0;
    /* Stride 2 pays for the phase-split copy only with enough taps per output. */
    return sh <= 2 && sw <= 2 && kh * kw >= 25;
}

__attribute__((target("avx512f")))
int shardcal_dw_flat_avx512(const float *src, float *dst, const float *w, const float *bias, long planes,
                            long H, long W, long oh, long ow, long kh, long kw, long sh, long sw,
                            long dh, long dw, long pt, long pl, float *scratch,
                            float *clip_out, float lo, float hi) {
    const long lim = 1L << 30;
    if (kh > 32 || kw > 32 || sh < 1 || sw < 1 || sh > 16 || sw > 16 || H <= 0 || W <= 0 || oh <= 0 || ow <= 0
        || H > lim || W > lim || oh > lim || ow > lim || H * W > lim || oh * ow > lim) return 0;
    const int split = !(sh == 1 && sw == 1);
    const long Hs = (H + sh - 1) / sh;
    /* Rows of the phase planes are ow floats apart: every column of a phase must fit in ow. */
    if (split ? ((W + sw - 1) / sw > ow || sh * sw * Hs * ow > lim || !scratch) : ow != W) return 0;
    struct shc_dw_taps tp;
    unsigned short masks[SHC_DW_FLAT_MASKS];
    const long taps = kh * kw;
    for (long i = 0; i < kh; i++) {
        const long r = i * dh - pt;
        if (r < -lim || r > lim) return 0;
        const long a = r - shc_floor_div(r, sh) * sh, ri = shc_floor_div(r, sh);
        for (long j = 0; j < kw; j++) {
            const long c = j * dw - pl;
            if (c < -lim || c > lim) return 0;
            const long b = c - shc_floor_div(c, sw) * sw, cj = shc_floor_div(c, sw);
            const long t = i * kw + j;
            tp.ri[t] = ri; tp.rows[t] = (H - a + sh - 1) / sh;
            tp.cj[t] = cj; tp.cols[t] = (W - b + sw - 1) / sw;
            tp.off[t] = (a * sw + b) * Hs * ow + ri * ow + cj;
            if (tp.off[t] < -lim || tp.off[t] > lim) return 0;
        }
    }
#define SHC_FLAT_MODE(M) shc_dw_flat_mode(src, H, W, sh, sw, Hs, scratch, dst, w, bias, planes, oh, ow, taps, &tp, masks, M, clip_out, lo, hi)
    if (!clip_out) SHC_FLAT_MODE(SHC_DW_STORE_Y);
    else if (clip_out == dst) SHC_FLAT_MODE(SHC_DW_STORE_CLIP);
    else SHC_FLAT_MODE(SHC_DW_STORE_BOTH);
#undef SHC_FLAT_MODE
    return 1;
}

/* Same with AVX2 + FMA, 8-column tiles. */
__attribute__((target("avx2,fma")))
void shardcal_dw_plane_avx2(const float *pad, float *dst, const float *w, float bias,
                                          const long *offsets, long taps, long oh, long ow,
                                          long vecsPerRow, long rowStep) {
    const long tiles = oh * vecsPerRow;
    const __m256 b = _mm256_set1_ps(bias);
    const long lastWidth = ow - (vecsPerRow - 1) * 8;
    int maskBits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    const __m256i lastMask = _mm256_loadu_si256((const __m256i *)(maskBits + 8 - lastWidth));
    const __m256i fullMask = _mm256_set1_epi32(-1);
    long t = 0;
    for (; t + 4 <= tiles; t += 4) {
        const float *p[4];
        float *o[4];
        int last[4];
        for (int u = 0; u < 4; u++) {
            long y = (t + u) / vecsPerRow, v = (t + u) - y * vecsPerRow;
            p[u] = pad + y * rowStep + v * 8;
            o[u] = dst + y * ow + v * 8;
            last[u] = (v == vecsPerRow - 1);
        }
        __m256 a0 = b, a1 = b, a2 = b, a3 = b;
        for (long k = 0; k < taps; k++) {
            const __m256 wv = _mm256_set1_ps(w[k]);
            const long off = offsets[k];
            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p[0] + off), a0);
            a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p[1] + off), a1);
            a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p[2] + off), a2);
            a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p[3] + off), a3);
        }
        _mm256_maskstore_ps(o[0], last[0] ? lastMask : fullMask, a0);
        _mm256_maskstore_ps(o[1], last[1] ? lastMask : fullMask, a1);
        _mm256_maskstore_ps(o[2], last[2] ? lastMask : fullMask, a2);
        _mm256_maskstore_ps(o[3], last[3] ? lastMask : fullMask, a3);
    }
    for (; t < tiles; t++) {
        long y = t / vecsPerRow, v = t - y * vecsPerRow;
        const float *p0 = pad + y * rowStep + v * 8;
        __m256 a0 = b;
        for (long k = 0; k < taps; k++)
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(w[k]), _mm256_loadu_ps(p0 + offsets[k]), a0);
        _mm256_maskstore_ps(dst + y * ow + v * 8, (v == vecsPerRow - 1) ? lastMask : fullMask, a0);
    }
}
#endif /* __x86_64__ */

#if defined(__x86_64__)
/* ---- Pointwise (1×1) convolution, AVX-512 ----
 * Register tile: MR output channels × NV 16-pixel vectors (MR·NV ≤ 24 accumulators). Per output
 * element: acc = bias, then acc = fma(w[o][i], x[i][p], acc) for i = 0, 1, …, ic−1; one store
 * (or two with a fused clip). Nothing depends on how the caller cuts [o0, o1) × [p0, p1). */

#ifndef SHC_PW_CHUNK_BYTES
#define SHC_PW_CHUNK_BYTES (512 * 1024)
#endif
#define SHC_PW_MR 6
#define SHC_PW_NV 4
/* Store modes of a tile: y only; clip(y) only (in place); y and clip(y). */
#define SHC_STORE_Y 0
#define SHC_STORE_CLIP 1
#define SHC_STORE_BOTH 2
/* With a residual addend r (a following Add): y + r only (in place over y); y and y + r. */
#define SHC_STORE_SUM 3
#define SHC_STORE_Y_SUM 4

__attribute__((target("avx512f"), always_inline))
static inline void shc_pw_tile(const float *x, const float *w, const float *bias, float *y,
                               long ic, long ldx, long ldy, long o, long p, const int MR, const int NV, __mmask16 last,
                               const int mode, float *clip_out, float lo, float hi, const float *addend, float *sum_out) {
    __m512 acc[SHC_PW_MR][SHC_PW_NV];
    for (int r = 0; r < MR; r++) {
        const __m512 b = _mm512_set1_ps(bias ? bias[o + r] : 0.0f);
        for (int v = 0; v < NV; v++) acc[r][v] = b;
    }
    const float *xp = x + p;
    const float *wp = w + o * ic;
    for (long i = 0; i < ic; i++) {
        __m512 xv[SHC_PW_NV];
        for (int v = 0; v < NV; v++)
            xv[v] = (v == NV - 1) ? _mm512_maskz_loadu_ps(last, xp + v * 16) : _mm512_loadu_ps(xp + v * 16);
        for (int r = 0; r < MR; r++) {
            const __m512 wv = _mm512_set1_ps(wp[r * ic + i]);
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(wv, xv[v], acc[r][v]);
        }
        xp += ldx;
    }
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    for (int r = 0; r < MR; r++) {
        for (int v = 0; v < NV; v++) {
            const __mmask16 m = (v == NV - 1) ? last : (__mmask16)0xFFFF;
            const long off = (o + r) * ldy + p + v * 16;
            if (mode == SHC_STORE_Y || mode == SHC_STORE_BOTH || mode == SHC_STORE_Y_SUM)
                _mm512_mask_storeu_ps(y + off, m, acc[r][v]);
            if (mode == SHC_STORE_CLIP || mode == SHC_STORE_BOTH)
                /* max/min return their second operand when either is NaN: NaN passes through,
                 * as x < lo ? lo : (x > hi ? hi : x) does. */
                _mm512_mask_storeu_ps(clip_out + off, m, _mm512_min_ps(vhi, _mm512_max_ps(vlo, acc[r][v])));
            if (mode == SHC_STORE_SUM || mode == SHC_STORE_Y_SUM)
                /* One rounded addition per element, as the Add kernel does (a + b == b + a). */
                _mm512_mask_storeu_ps(sum_out + off, m, _mm512_add_ps(acc[r][v], _mm512_maskz_loadu_ps(m, addend + off)));
        }
    }
}

/* Rows [o, o + MR) × pixels [p0, p1), MR ≤ SHC_PW_MR: full 64-pixel tiles, then a masked last one. */
__attribute__((target("avx512f"), always_inline))
static inline void shc_pw_rows(const float *x, const float *w, const float *bias, float *y,
                               long ic, long ldx, long ldy, long o, const int MR, long p0, long p1,
                               const int mode, float *clip_out, float lo, float hi, const float *addend, float *sum_out) {
    long p = p0;
    for (; p + 16 * SHC_PW_NV <= p1; p += 16 * SHC_PW_NV)
        shc_pw_tile(x, w, bias, y, ic, ldx, ldy, o, p, MR, SHC_PW_NV, 0xFFFF, mode, clip_out, lo, hi, addend, sum_out);
    const long rest = p1 - p;
    if (rest <= 0) return;
    const long nv = (rest + 15) / 16;
    const long lastLanes = rest - (nv - 1) * 16;
    const __mmask16 last = (__mmask16)(lastLanes >= 16 ? 0xFFFFu : ((1u << lastLanes) - 1u));
    switch (nv) {
    case 1: shc_pw_tile(x, w, bias, y, ic, ldx, ldy, o, p, MR, 1, last, mode, clip_out, lo, hi, addend, sum_out); break;
    case 2: shc_pw_tile(x, w, bias, y, ic, ldx, ldy, o, p, MR, 2, last, mode, clip_out, lo, hi, addend, sum_out); break;
    case 3: shc_pw_tile(x, w, bias, y, ic, ldx, ldy, o, p, MR, 3, last, mode, clip_out, lo, hi, addend, sum_out); break;
    default: shc_pw_tile(x, w, bias, y, ic, ldx, ldy, o, p, MR, 4, last, mode, clip_out, lo, hi, addend, sum_out); break;
    }
}

__attribute__((target("avx512f"), always_inline))
static inline void shc_pw_block(const float *x, const float *w, const float *bias, float *y,
                                long ic, long ldx, long ldy, long o0, long o1, long p0, long p1,
                                const int mode, float *clip_out, float lo, float hi, const float *addend, float *sum_out) {
    long o = o0;
    for (; o + SHC_PW_MR <= o1; o += SHC_PW_MR)
        shc_pw_rows(x, w, bias, y, ic, ldx, ldy, o, SHC_PW_MR, p0, p1, mode, clip_out, lo, hi, addend, sum_out);
    switch (o1 - o) {
    case 5: shc_pw_rows(x, w, bias, y, ic, ldx, ldy, o, 5, p0, p1, mode, clip_out, lo, hi, addend, sum_out); break;
    case 4: shc_pw_rows(x, w, bias, y, ic, ldx, ldy, o, 4, p0, p1, mode, clip_out, lo, hi, addend, sum_out); break;
    case 3: shc_pw_rows(x, w, bias, y, ic, ldx, ldy, o, 3, p0, p1, mode, clip_out, lo, hi, addend, sum_out); break;
    case 2: shc_pw_rows(x, w, bias, y, ic, ldx, ldy, o, 2, p0, p1, mode, clip_out, lo, hi, addend, sum_out); break;
    case 1: shc_pw_rows(x, w, bias, y, ic, ldx, ldy, o, 1, p0, p1, mode, clip_out, lo, hi, addend, sum_out); break;
    default: break;
    }
}

#define SHC_PW_DOT_COLS 4
#define SHC_PW_DOT_MAX_IC 2048
static void shc_pw_dot_tail(const float *x, const float *w, const float *bias, float *y,
                            long ic, long ldx, long ldy, long o0, long o1, long q0, long q1,
                            const int mode, float *clip_out, float lo, float hi, const float *addend, float *sum_out);

/* Pixel chunks whose input columns (ic × chunk floats) stay in L2 while every row tile of
 * [o0, o1) sweeps them; row tiles outer, so each output row is written as one stream.
 * When [p0, p1) ends in a partial 16-pixel vector of at most SHC_PW_DOT_COLS pixels (7×7 planes:
 * 49 = 3·16 + 1), those pixels are not computed as a mostly masked vector (a 6×64 tile spends a
 * quarter of its FMAs on one pixel there) but as dot products of each weight row with the
 * pixel's input column (shc_pw_dot_tail). Which pixels take that path depends on p1 − p0 only. */
__attribute__((target("avx512f")))
void shardcal_pointwise_avx512(const float *x, const float *w, const float *bias, float *y,
                               long ic, long ldx, long ldy, long o0, long o1, long p0, long p1,
                               float *clip_out, float lo, float hi, const float *addend, float *sum_out) {
    long chunk = (SHC_PW_CHUNK_BYTES / 4 / (ic > 0 ? ic : 1)) / 64 * 64;
    if (chunk < 64) chunk = 64;
    const int mode = addend && sum_out ? (sum_out == y ? SHC_STORE_SUM : SHC_STORE_Y_SUM)
                   : !clip_out ? SHC_STORE_Y : (clip_out == y ? SHC_STORE_CLIP : SHC_STORE_BOTH);
    const long rem = (p1 - p0) % 16;
    const long q1 = rem > 0 && rem <= SHC_PW_DOT_COLS && ic <= SHC_PW_DOT_MAX_IC ? p1 - rem : p1;
    for (long c0 = p0; c0 < q1; c0 += chunk) {
        const long c1 = c0 + chunk < q1 ? c0 + chunk : q1;
#define SHC_PW_BLOCK(M) shc_pw_block(x, w, bias, y, ic, ldx, ldy, o0, o1, c0, c1, M, clip_out, lo, hi, addend, sum_out)
        switch (mode) {
        case SHC_STORE_SUM: SHC_PW_BLOCK(SHC_STORE_SUM); break;
        case SHC_STORE_Y_SUM: SHC_PW_BLOCK(SHC_STORE_Y_SUM); break;
        case SHC_STORE_Y: SHC_PW_BLOCK(SHC_STORE_Y); break;
        case SHC_STORE_CLIP: SHC_PW_BLOCK(SHC_STORE_CLIP); break;
        default: SHC_PW_BLOCK(SHC_STORE_BOTH); break;
        }
#undef SHC_PW_BLOCK
    }
    if (q1 < p1) shc_pw_dot_tail(x, w, bias, y, ic, ldx, ldy, o0, o1, q1, p1, mode, clip_out, lo, hi, addend, sum_out);
}
#endif /* __x86_64__ */

#if defined(__x86_64__)
/* ---- Dot products of one vector with rows of a matrix (Gemm/MatMul heads, transB), AVX-512 ----
 * sums[j - j0] = Σ_p x[p]·w[j][p] for rows j in [j0, j1). Per row: 16 lane sums (lane l takes
 * p ≡ l mod 16, p ascending, one FMA each), a fixed pairwise reduction of the lanes
 * (256-bit halves, 128-bit halves, pairs, then the last pair), plus the tail p ≥ 16·⌊k/16⌋ summed in
 * ascending order. Four rows run side by side (four independent load streams keep more of the
 * memory system busy: these weights are read once per image); each row gets the same operations
 * whichever group it is in, so a row's sum depends on x, its weights and k only. */
__attribute__((target("avx512f"), always_inline))
static inline float shc_lane_sum(__m512 a) {
    const __m256 h8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    const __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
    const __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
    return _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1)));
}

__attribute__((target("avx512f"), always_inline))
static inline float shc_dot_tail(const float *x, const float *w, long p, long k) {
    float t = 0.0f;
    for (; p < k; p++) t = __builtin_fmaf(x[p], w[p], t);
    return t;
}

__attribute__((target("avx512f")))
void shardcal_dot_rows_avx512(const float *x, const float *w, long ldw, long k, long j0, long j1, float *sums) {
    const long body = k / 16 * 16;
    long j = j0;
    for (; j + 4 <= j1; j += 4) {
        const float *w0 = w + j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (long p = 0; p < body; p += 16) {
            const __m512 xv = _mm512_loadu_ps(x + p);
            a0 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w0 + p), a0);
            a1 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w1 + p), a1);
            a2 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w2 + p), a2);
            a3 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w3 + p), a3);
        }
        sums[j - j0] = shc_lane_sum(a0) + shc_dot_tail(x, w0, body, k);
        sums[j - j0 + 1] = shc_lane_sum(a1) + shc_dot_tail(x, w1, body, k);
        sums[j - j0 + 2] = shc_lane_sum(a2) + shc_dot_tail(x, w2, body, k);
        sums[j - j0 + 3] = shc_lane_sum(a3) + shc_dot_tail(x, w3, body, k);
    }
    for (; j < j1; j++) {
        const float *w0 = w + j * ldw;
        __m512 a0 = _mm512_setzero_ps();
        for (long p = 0; p < body; p += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + p), _mm512_loadu_ps(w0 + p), a0);
        sums[j - j0] = shc_lane_sum(a0) + shc_dot_tail(x, w0, body, k);
    }
}

/* Pixels [q0, q1) (at most SHC_PW_DOT_COLS) of the pointwise product as dot products: the pixels'
 * input columns are copied to contiguous memory, then per output row o and pixel: 16 lane sums
 * (lane l takes channels i ≡ l mod 16 in ascending order, one FMA each), the fixed lane reduction
 * of shc_lane_sum, plus the channels past 16·⌊ic/16⌋ in ascending order, then bias + that sum;
 * stored as shc_pw_tile stores (same modes, NaN passing through the clip). */
__attribute__((target("avx512f"), always_inline))
static inline void shc_pw_dot_cols(const float *cols, const float *w, long ic, long o, const int NC, float *sums) {
    const long body = ic / 16 * 16;
    const float *wr = w + o * ic;
    __m512 acc[SHC_PW_DOT_COLS];
    for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_ps();
    for (long i = 0; i < body; i += 16) {
        const __m512 wv = _mm512_loadu_ps(wr + i);
        for (int c = 0; c < NC; c++) acc[c] = _mm512_fmadd_ps(_mm512_loadu_ps(cols + c * ic + i), wv, acc[c]);
    }
    for (int c = 0; c < NC; c++) sums[c] = shc_lane_sum(acc[c]) + shc_dot_tail(cols + c * ic, wr, body, ic);
}

__attribute__((target("avx512f")))
static void shc_pw_dot_tail(const float *x, const float *w, const float *bias, float *y,
                            long ic, long ldx, long ldy, long o0, long o1, long q0, long q1,
                            const int mode, float *clip_out, float lo, float hi, const float *addend, float *sum_out) {
    float cols[SHC_PW_DOT_COLS * SHC_PW_DOT_MAX_IC];
    const int nc = (int)(q1 - q0);
    for (int c = 0; c < nc; c++)
        for (long i = 0; i < ic; i++) cols[c * ic + i] = x[i * ldx + q0 + c];
    for (long o = o0; o < o1; o++) {
        float sums[SHC_PW_DOT_COLS];
        switch (nc) {
        case 1: shc_pw_dot_cols(cols, w, ic, o, 1, sums); break;
        case 2: shc_pw_dot_cols(cols, w, ic, o, 2, sums); break;
        case 3: shc_pw_dot_cols(cols, w, ic, o, 3, sums); break;
        default: shc_pw_dot_cols(cols, w, ic, o, 4, sums); break;
        }
        for (int c = 0; c < nc; c++) {
            const float v = (bias ? bias[o] : 0.0f) + sums[c];
            const long off = o * ldy + q0 + c;
            if (mode == SHC_STORE_Y || mode == SHC_STORE_BOTH || mode == SHC_STORE_Y_SUM) y[off] = v;
            if (mode == SHC_STORE_CLIP || mode == SHC_STORE_BOTH) clip_out[off] = v < lo ? lo : (v > hi ? hi : v);
            if (mode == SHC_STORE_SUM || mode == SHC_STORE_Y_SUM) sum_out[off] = v + addend[off];
        }
    }
}
#endif /* __x86_64__ */
