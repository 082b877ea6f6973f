#ifndef SHARDCAL_CONV_KERNELS_H
#define SHARDCAL_CONV_KERNELS_H
/*
 * Small x86 SIMD kernels for Engine's convolutions that the Swift compiler cannot generate (Swift
 * code is built for baseline x86-64, i.e. SSE2). Each function is compiled for its own ISA
 * (target attribute) and is only called after the Swift side has checked the CPU flags
 * (Kernels.VectorISA); the plain Swift kernels remain the reference these are tested against.
 */

/* Atomic counter for dynamic task distribution in the Swift kernels (tasks are fixed by the
 * problem shape; only which worker runs a task varies, so results do not). */
long shardcal_fetch_add(long *counter, long value);

#if defined(__x86_64__)
/* Depthwise conv, one output plane, from the zero-padded phase-split input plane prepared by the
 * Swift side (see Depthwise.swift). Output tile t = (y, 16-column block xb) reads
 * pad[y * rowStep + xb + offsets[k]] for tap k; acc = bias, then acc = fma(w[k], x, acc) per tap. */
void shardcal_dw_plane_avx512(const float *pad, float *dst, const float *w, float bias,
                              const long *offsets, long taps, long oh, long ow,
                              long vecsPerRow, long rowStep);

/* Depthwise conv of `planes` consecutive planes (weights kh·kw per plane, bias[q] or 0 when NULL),
 * output vectors of 16 consecutive pixels running across row ends. Stride 1 with ow == W reads the
 * input directly; other strides first split each plane into sh·sw phases (rows ow floats apart) in
 * `scratch` (shardcal_dw_flat_scratch_floats floats), so that every tap is a fixed offset from the
 * output pixel. Masked loads zero the taps in the padding. Per output element: acc = bias, then one
 * FMA per tap in (i, j) order. Returns 0 (nothing done) when the shape is outside the kernel's
 * domain (stride 1 with ow != W, a phase wider than ow, kh or kw > 32, 32-bit lane overflow).
 * clip_out as in shardcal_dw_direct_avx512, relative to dst. */
int shardcal_dw_flat_avx512(const float *src, float *dst, const float *w, const float *bias, long planes,
                            long H, long W, long oh, long ow, long kh, long kw, long sh, long sw,
                            long dh, long dw, long pt, long pl, float *scratch,
                            float *clip_out, float lo, float hi);

/* Scratch floats shardcal_dw_flat_avx512 needs for `planes` planes (0 for stride 1). */
long shardcal_dw_flat_scratch_floats(long planes, long H, long W, long oh, long ow, long sh, long sw);

/* Whether shardcal_dw_flat_avx512 is the faster kernel for this shape (depends on the shape only). */
int shardcal_dw_flat_preferred(long H, long W, long kh, long kw, long sh, long sw, long dh, long dw);

/* Same with AVX2 + FMA, 8-column tiles. */
void shardcal_dw_plane_avx2(const float *pad, float *dst, const float *w, float bias,
                            const long *offsets, long taps, long oh, long ow,
                            long vecsPerRow, long rowStep);

/* Depthwise conv, one plane, read directly from the unpadded input (no staging copy): AVX-512
 * masked loads zero the taps that fall in the padding (and never touch memory outside the row).
 * Column strides 1 and 2 only (returns 0 otherwise, or when kw > 16). Per output element the
 * accumulation is bias, then taps in (i, j) order, one FMA each, skipping rows in the padding.
 * Strides 2 with 3×3 or 5×5 kernels and dilation 1 take a faster schedule of the same arithmetic.
 * clip_out: NULL, or where clip(y) is stored at the same offsets as dst (see
 * shardcal_pointwise_avx512); equal to dst for a clip in place. */
int shardcal_dw_direct_avx512(const float *src, float *dst, const float *w, float bias,
                              long H, long W, long oh, long ow, long kh, long kw,
                              long sh, long sw, long dh, long dw, long pt, long pl,
                              float *clip_out, float lo, float hi);

/* Pointwise (1×1, stride 1, unpadded) conv of one image, output channels [o0, o1) × pixels
 * [p0, p1): y[o][p] = bias[o] + Σ_i w[o][i]·x[i][p], accumulated as acc = bias (0 when bias is
 * NULL), then one FMA per input channel in ascending order. x has ic rows of stride ldx, y has
 * rows of stride ldy (both the plane size for NCHW), w is row-major with ic columns.
 * clip_out: NULL, or where clip(y) = (y < lo ? lo : (y > hi ? hi : y)) is stored, at the same
 * offsets as y; when it equals y only the clipped values are stored (in place), otherwise both.
 * addend, sum_out: both NULL, or a residual Add fused into the store (then clip_out is ignored):
 * sum_out receives y + addend (one rounded addition, as a separate Add computes it), both at the
 * same offsets as y; when sum_out equals y only the sums are stored (in place), otherwise y too.
 * sum_out may equal addend (each element is read before it is overwritten). */
void shardcal_pointwise_avx512(const float *x, const float *w, const float *bias, float *y,
                               long ic, long ldx, long ldy, long o0, long o1, long p0, long p1,
                               float *clip_out, float lo, float hi, const float *addend, float *sum_out);

/* sums[j - j0] = Σ_p x[p]·w[j·ldw + p] for rows j in [j0, j1) (AVX-512F; 16 FMA lanes, fixed lane
 * reduction, then the tail in order: a row's sum does not depend on j0, j1 or the other rows). */
void shardcal_dot_rows_avx512(const float *x, const float *w, long ldw, long k, long j0, long j1, float *sums);
#endif

#endif
