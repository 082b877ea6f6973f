#include "histogram_kernel.h"
#include <string.h>

/* Runtime dispatch to an AVX-512/AVX2 build of each loop where the CPU has it (GNU ifunc). */
#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define SHC_MULTIVERSION __attribute__((target_clones("avx512bw", "avx2", "default")))
#else
#define SHC_MULTIVERSION
#endif
/* Helpers are always inlined, so each target clone gets its own vectorised copy (a helper left as
 * a call is compiled once, for the baseline target). */
#define SHC_INLINE static inline __attribute__((always_inline))

SHC_MULTIVERSION
void shc_scan_block(const float *values, size_t n, shc_scan_result *out) {
    const uint32_t *bits = (const uint32_t *)values;
    uint32_t max_mag = 0;
    int32_t min_key = INT32_MAX, max_key = INT32_MIN;
    uint32_t zeros = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b = bits[i];
        uint32_t mag = b & 0x7fffffffu;
        max_mag = mag > max_mag ? mag : max_mag;
        int32_t s = (int32_t)b;
        int32_t key = s ^ ((s >> 31) & 0x7fffffff);
        min_key = key < min_key ? key : min_key;
        max_key = key > max_key ? key : max_key;
        zeros += (mag == 0);
    }
    out->max_magnitude_bits = max_mag;
    out->min_key = min_key;
    out->max_key = max_key;
    out->zeros = zeros;
}

/* Portable binning: indices a chunk at a time (vectorisable), then scattered (scalar). Zeros go to
 * each lane's spare bin SHC_LANE_BINS, which nobody reads. */
SHC_MULTIVERSION
void shc_bin_block_portable(const float *values, size_t n, float scale, uint16_t *lanes) {
    int32_t index[256];
    size_t i = 0;
    while (i < n) {
        size_t m = n - i < 256 ? n - i : 256;
        for (size_t j = 0; j < m; j++) {
            uint32_t b;
            memcpy(&b, &values[i + j], 4);
            b &= 0x7fffffffu;
            float magnitude;
            memcpy(&magnitude, &b, 4);
            index[j] = b == 0 ? SHC_LANE_BINS : (int32_t)(magnitude * scale);
        }
        size_t j = 0;
        for (; j + 4 <= m; j += 4) {
            lanes[index[j]]++;
            lanes[SHC_LANE_STRIDE + index[j + 1]]++;
            lanes[2 * SHC_LANE_STRIDE + index[j + 2]]++;
            lanes[3 * SHC_LANE_STRIDE + index[j + 3]]++;
        }
        for (; j < m; j++) lanes[(j & 3) * SHC_LANE_STRIDE + index[j]]++;
        i += m;
    }
}

/* Running scan statistics, merged block by block. */
SHC_INLINE void shc_scan_merge(shc_scan_result *into, const shc_scan_result *block) {
    into->max_magnitude_bits =
        block->max_magnitude_bits > into->max_magnitude_bits ? block->max_magnitude_bits : into->max_magnitude_bits;
    into->min_key = block->min_key < into->min_key ? block->min_key : into->min_key;
    into->max_key = block->max_key > into->max_key ? block->max_key : into->max_key;
    into->zeros += block->zeros;
}

static const shc_scan_result shc_scan_empty = {0, INT32_MAX, INT32_MIN, 0};

size_t shc_scan_bin_run_portable(const float *values, size_t n, float scale, uint32_t limit_bits, uint16_t *lanes,
                                 shc_scan_result *out) {
    *out = shc_scan_empty;
    size_t done = 0;
    while (done < n) {
        size_t m = n - done < SHC_BLOCK ? n - done : SHC_BLOCK;
        shc_scan_result block;
        shc_scan_block(values + done, m, &block);
        if (block.max_magnitude_bits >= limit_bits) break;
        shc_bin_block_portable(values + done, m, scale, lanes);
        shc_scan_merge(out, &block);
        done += m;
    }
    return done;
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define SHC_HAVE_AVX512 1
#define SHC_AVX512 __attribute__((target("avx512f")))

SHC_INLINE int shc_cpu_has_avx512(void) { return __builtin_cpu_supports("avx512f"); }

/* Scan state of one block in vector registers. */
typedef struct {
    __m512i max_mag, min_key, max_key;
    size_t zeros;
} shc_scan_vectors;

/* Scans 16 values and appends the 16-bit bin indices of the non-zero ones (compressed) at
 * index[count]; returns the new count. Indices of values outside the layout are meaningless (the
 * block is then discarded). */
SHC_AVX512 SHC_INLINE size_t shc_scan_index16(const float *values, __m512 scale, uint16_t *index, size_t count,
                                              shc_scan_vectors *st) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    __m512i v = _mm512_loadu_si512((const void *)values);
    __m512i mag = _mm512_and_si512(v, abs_mask);
    st->max_mag = _mm512_max_epu32(st->max_mag, mag);
    __m512i key = _mm512_xor_si512(v, _mm512_and_si512(_mm512_srai_epi32(v, 31), abs_mask));
    st->min_key = _mm512_min_epi32(st->min_key, key);
    st->max_key = _mm512_max_epi32(st->max_key, key);
    __mmask16 nonzero = _mm512_test_epi32_mask(mag, mag);
    __m512i bin = _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_castsi512_ps(mag), scale));
    _mm256_storeu_si256((__m256i *)(void *)(index + count),
                        _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(nonzero, bin)));
    unsigned kept = (unsigned)__builtin_popcount((unsigned)nonzero);
    st->zeros += 16 - kept;
    return count + kept;
}

/* Adds index[k..end) to the lanes, lane = k mod 4. */
SHC_INLINE void shc_scatter(const uint16_t *index, size_t k, size_t end, uint16_t *lanes) {
    for (; k < end && (k & 3) != 0; k++) lanes[(k & 3) * SHC_LANE_STRIDE + index[k]]++;
    for (; k + 4 <= end; k += 4) {
        lanes[index[k]]++;
        lanes[SHC_LANE_STRIDE + index[k + 1]]++;
        lanes[2 * SHC_LANE_STRIDE + index[k + 2]]++;
        lanes[3 * SHC_LANE_STRIDE + index[k + 3]]++;
    }
    for (; k < end; k++) lanes[(k & 3) * SHC_LANE_STRIDE + index[k]]++;
}

/* Scans block [values, values + m) into index (returns the count) while it scatters the previous
 * block's indices prev[k..prev_count), 16 per 16 values scanned, and prefetches 4 KiB ahead
 * into L2: memory keeps streaming while the scatter (about one store per value) runs. */
SHC_AVX512 SHC_INLINE size_t shc_scan_block_scattering(const float *values, size_t m, __m512 scale, uint16_t *index,
                                                       shc_scan_result *out, const uint16_t *prev,
                                                       size_t prev_count, uint16_t *lanes) {
    shc_scan_vectors st = {_mm512_setzero_si512(), _mm512_set1_epi32(INT32_MAX), _mm512_set1_epi32(INT32_MIN), 0};
    size_t count = 0, k = 0, j = 0;
    for (; j + 16 <= m; j += 16) {
        __builtin_prefetch((const char *)(values + j) + 4096, 0, 2);
        count = shc_scan_index16(values + j, scale, index, count, &st);
        if (k + 16 <= prev_count) {
            shc_scatter(prev, k, k + 16, lanes);
            k += 16;
        }
    }
    shc_scatter(prev, k, prev_count, lanes);
    uint32_t max_mag = _mm512_reduce_max_epu32(st.max_mag);
    int32_t lo = _mm512_reduce_min_epi32(st.min_key), hi = _mm512_reduce_max_epi32(st.max_key);
    size_t zeros = st.zeros;
    const float scale1 = _mm512_cvtss_f32(scale);
    for (; j < m; j++) {
        uint32_t b;
        memcpy(&b, &values[j], 4);
        uint32_t mag = b & 0x7fffffffu;
        max_mag = mag > max_mag ? mag : max_mag;
        int32_t s = (int32_t)b;
        int32_t key = s ^ ((s >> 31) & 0x7fffffff);
        lo = key < lo ? key : lo;
        hi = key > hi ? key : hi;
        float magnitude;
        memcpy(&magnitude, &mag, 4);
        index[count] = (uint16_t)(int32_t)(magnitude * scale1);
        count += mag != 0;
        zeros += mag == 0;
    }
    out->max_magnitude_bits = max_mag;
    out->min_key = lo;
    out->max_key = hi;
    out->zeros = (uint32_t)zeros;
    return count;
}

/* Software pipeline over blocks: block b is scanned while block b-1 (known to fit) is scattered. */
SHC_AVX512
static size_t shc_scan_bin_run_avx512(const float *values, size_t n, float scale, uint32_t limit_bits,
                                      uint16_t *lanes, shc_scan_result *out) {
    uint16_t index[2][SHC_BLOCK + 16];
    const __m512 vscale = _mm512_set1_ps(scale);
    *out = shc_scan_empty;
    size_t done = 0, prev_count = 0;
    int current = 0;
    while (done < n) {
        size_t m = n - done < SHC_BLOCK ? n - done : SHC_BLOCK;
        shc_scan_result block;
        size_t count = shc_scan_block_scattering(values + done, m, vscale, index[current], &block,
                                                 index[current ^ 1], prev_count, lanes);
        prev_count = 0;
        if (block.max_magnitude_bits >= limit_bits) break;
        shc_scan_merge(out, &block);
        prev_count = count;
        current ^= 1;
        done += m;
    }
    shc_scatter(index[current ^ 1], 0, prev_count, lanes);
    return done;
}

/* Binning alone (after a layout change): the same scan-and-compress, then the scatter. */
SHC_AVX512
static void shc_bin_block_avx512(const float *values, size_t n, float scale, uint16_t *lanes) {
    uint16_t index[SHC_BLOCK + 16];
    const __m512 vscale = _mm512_set1_ps(scale);
    while (n > 0) {
        size_t m = n < SHC_BLOCK ? n : SHC_BLOCK;
        shc_scan_result ignored;
        size_t count = shc_scan_block_scattering(values, m, vscale, index, &ignored, NULL, 0, lanes);
        shc_scatter(index, 0, count, lanes);
        values += m;
        n -= m;
    }
}
#endif

void shc_bin_block(const float *values, size_t n, float scale, uint16_t *lanes) {
#ifdef SHC_HAVE_AVX512
    if (shc_cpu_has_avx512()) {
        shc_bin_block_avx512(values, n, scale, lanes);
        return;
    }
#endif
    shc_bin_block_portable(values, n, scale, lanes);
}

size_t shc_scan_bin_run(const float *values, size_t n, float scale, uint32_t limit_bits, uint16_t *lanes,
                        shc_scan_result *out) {
#ifdef SHC_HAVE_AVX512
    if (shc_cpu_has_avx512()) return shc_scan_bin_run_avx512(values, n, scale, limit_bits, lanes, out);
#endif
    return shc_scan_bin_run_portable(values, n, scale, limit_bits, lanes, out);
}

void shc_flush_lanes(uint16_t *lanes, size_t bins, uint64_t *counts) {
    for (size_t j = 0; j < bins; j++) {
        uint64_t sum = 0;
        for (size_t lane = 0; lane < SHC_LANES; lane++) {
            sum += lanes[lane * SHC_LANE_STRIDE + j];
            lanes[lane * SHC_LANE_STRIDE + j] = 0;
        }
        counts[j] += sum;
    }
}

/* Natural log for x > 0 (finite, normal), pure arithmetic so loops over it vectorise; used only to
 * screen candidates, which are then re-evaluated with libm. x = m * 2^e with m in [sqrt(1/2), sqrt(2));
 * log(m) = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.1716, summed as an odd series to s^19 (truncation
 * below 1e-17 absolute; the result is within a few ulps of log x). */
SHC_INLINE double shc_log(double x) {
    uint64_t bits;
    memcpy(&bits, &x, 8);
    int64_t e = (int64_t)((bits >> 52) & 0x7ff) - 1023;
    uint64_t mbits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double m;
    memcpy(&m, &mbits, 8);
    /* Move m into [sqrt(1/2), sqrt(2)). */
    double adjust = m > 1.4142135623730951 ? 1.0 : 0.0;
    m = adjust > 0 ? m * 0.5 : m;
    double ed = (double)e + adjust;
    double s = (m - 1.0) / (m + 1.0);
    double s2 = s * s;
    double p = 1.0 / 19;
    p = p * s2 + 1.0 / 17;
    p = p * s2 + 1.0 / 15;
    p = p * s2 + 1.0 / 13;
    p = p * s2 + 1.0 / 11;
    p = p * s2 + 1.0 / 9;
    p = p * s2 + 1.0 / 7;
    p = p * s2 + 1.0 / 5;
    p = p * s2 + 1.0 / 3;
    p = p * s2 + 1.0;
    return ed * 0.6931471805599453 + 2.0 * s * p;
}

/* log(k) for k = 0...32 (entry 0 unused): the number of non-empty bins in one level. */
static const double shc_log_small[33] = {
    0.0, 0.0, 0.6931471805599453, 1.0986122886681098,
    1.3862943611198906, 1.6094379124341003, 1.791759469228055, 1.9459101490553132,
    2.0794415416798357, 2.1972245773362196, 2.302585092994046, 2.3978952727983707,
    2.4849066497880004, 2.5649493574615367, 2.6390573296152584, 2.70805020110221,
    2.772588722239781, 2.833213344056216, 2.8903717578961645, 2.9444389791664403,
    2.995732273553991, 3.044522437723423, 3.091042453358316, 3.1354942159291497,
    3.1780538303479458, 3.2188758248682006, 3.258096538021482, 3.295836866004329,
    3.332204510175204, 3.367295829986474, 3.4011973816621555, 3.4339872044851463,
    3.4657359027997265,
};

/* Sum of c[s..e-1] from the prefix sums: exact when the prefix sums are (prefix_lo == NULL), else
 * hi and lo parts differenced apart (relative error a few ulps, and never <= 0 for a positive sum). */
SHC_INLINE double shc_range(const shc_entropy_input *in, size_t s, size_t e) {
    double d = in->prefix_hi[e] - in->prefix_hi[s];
    if (in->prefix_lo) d += in->prefix_lo[e] - in->prefix_lo[s];
    return d;
}

/* The bound of shc_entropy_bounds for candidates first..n, written without branches so it
 * vectorises (every log gets a harmless argument where its term is zero or the candidate is
 * infinite). `exact` selects the prefix_lo-free path. */
SHC_INLINE void shc_bounds_loop(const shc_entropy_input *in, size_t first, double *restrict out,
                                int exact) {
    const double *restrict hi = in->prefix_hi, *restrict lo = in->prefix_lo, *restrict c = in->c;
    const int32_t *restrict pnz = in->prefix_nonzero;
    const size_t n = in->n;
    const double total = exact ? hi[n] : hi[n] + lo[n];
    for (size_t i = first; i <= n; i++) {
        /* Cells: A = levels 0..126, B = the last level without its last bin, C = bin i-1. In
         * counts, P(A) = Q(A); P(B) = sum of B, Q(B) = t/nz per non-empty bin of B;
         * P(C) = last + outliers, Q(C) = t/nz (last != 0 unless P(C) = 0 or the KL is +inf). */
        const size_t s = (127 * i + 127) >> 7;
        double sum_q = hi[i], outliers = hi[n] - hi[i], t = hi[i] - hi[s], p_b = hi[i - 1] - hi[s];
        if (!exact) {
            sum_q += lo[i];
            outliers += lo[n] - lo[i];
            t += lo[i] - lo[s];
            p_b += lo[i - 1] - lo[s];
        }
        const double last = c[i - 1];
        const double nz = (double)(pnz[i] - pnz[s]);
        const double nz_b = nz - (last != 0 ? 1.0 : 0.0);
        p_b = nz_b > 0 ? p_b : 0.0;
        const int infinite = (last == 0 && outliers > 0) || sum_q == 0;
        const double p_c = infinite ? 0.0 : last + outliers;
        const double ratio_b = p_b > 0 ? (p_b * nz) / (t * nz_b) : 1.0;
        const double ratio_c = p_c > 0 ? (p_c * nz) / t : 1.0;
        const double ratio_q = sum_q > 0 ? sum_q / total : 1.0;
        const double bound = (p_b * shc_log(ratio_b) + p_c * shc_log(ratio_c)) / total + shc_log(ratio_q);
        out[i - first] = infinite ? __builtin_inf() : bound;
    }
}

SHC_MULTIVERSION
void shc_entropy_bounds(const shc_entropy_input *in, size_t first, double *out) {
    if (in->prefix_lo)
        shc_bounds_loop(in, first, out, 0);
    else
        shc_bounds_loop(in, first, out, 1);
}

/* Sum over the 128 levels of t * log(t / nz), level l covering [ceil(l*i/128), ceil((l+1)*i/128)).
 * The terms go to an array first so the loop vectorises (a running floating-point sum would pin
 * the order), then they are added in a fixed order. `exact` selects the prefix_lo-free path. */
SHC_INLINE double shc_level_sum(const shc_entropy_input *in, size_t i, int exact) {
    const double *hi = in->prefix_hi, *lo = in->prefix_lo;
    const int32_t *pnz = in->prefix_nonzero;
    double terms[128];
    for (size_t l = 0; l < 128; l++) {
        size_t start = (l * i + 127) >> 7;
        size_t end = ((l + 1) * i + 127) >> 7;
        double t = hi[end] - hi[start];
        if (!exact) t += lo[end] - lo[start];
        int32_t nz = pnz[end] - pnz[start];
        /* log(t / nz) = log t - log nz; a level spans at most 32 bins, so log nz is a table look-up. */
        terms[l] = t > 0 ? t * (shc_log(t) - shc_log_small[nz]) : 0.0;
    }
    double sum = 0.0;
    for (size_t l = 0; l < 128; l++) sum += terms[l];
    return sum;
}

SHC_MULTIVERSION
double shc_entropy_divergence(const shc_entropy_input *in, size_t i) {
    const size_t n = in->n;
    const double total = shc_range(in, 0, n);
    const double sum_q = shc_range(in, 0, i);
    const double outliers = shc_range(in, i, n);
    const double last = in->c[i - 1];
    if ((last == 0 && outliers > 0) || sum_q == 0) return __builtin_inf();
    const double p_last = last + outliers;
    const double p_log_p = in->prefix_clogc[i - 1] + (p_last > 0 ? p_last * shc_log(p_last) : 0.0);
    double p_log_q = in->prefix_lo ? shc_level_sum(in, i, 0) : shc_level_sum(in, i, 1);
    /* The outliers sit on the last level's last bin. */
    const size_t start = (127 * i + 127) >> 7;
    const double t = shc_range(in, start, i);
    const double nz = (double)(in->prefix_nonzero[i] - in->prefix_nonzero[start]);
    if (t > 0) p_log_q += outliers * shc_log(t / nz);
    return (p_log_p - p_log_q) / total + shc_log(sum_q / total);
}
