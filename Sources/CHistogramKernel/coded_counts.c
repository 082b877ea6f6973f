#include "coded_counts.h"
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define SHC_MULTIVERSION __attribute__((target_clones("avx512bw", "avx2", "default")))
#else
#define SHC_MULTIVERSION
#endif

/* Little-endian loads at any alignment (memcpy compiles to one load; x86 and arm64 are LE). */
static inline uint64_t load1(const uint8_t *p, size_t j) { return p[j]; }
static inline uint64_t load2(const uint8_t *p, size_t j) { uint16_t v; memcpy(&v, p + 2 * j, 2); return v; }
/* Three bytes exactly: a 4-byte load at 3 * j would read one byte past the last count. */
static inline uint64_t load3(const uint8_t *p, size_t j) {
    uint16_t lo; memcpy(&lo, p + 3 * j, 2);
    return (uint64_t)lo | (uint64_t)p[3 * j + 2] << 16;
}
static inline uint64_t load4(const uint8_t *p, size_t j) { uint32_t v; memcpy(&v, p + 4 * j, 4); return v; }
static inline uint64_t load8(const uint8_t *p, size_t j) { uint64_t v; memcpy(&v, p + 8 * j, 8); return v; }

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "coded_counts.c assumes a little-endian host"
#endif

#define SUM_LOOP(LOAD)                              \
    do {                                            \
        for (size_t j = 0; j < n; j++) s += LOAD(src, j); \
    } while (0)

SHC_MULTIVERSION
uint64_t shc_sum_coded_counts(const uint8_t *src, size_t n, int width) {
    uint64_t s = 0;
    switch (width) {
    case 1: SUM_LOOP(load1); break;
    case 2: SUM_LOOP(load2); break;
    case 3: SUM_LOOP(load3); break;
    case 4: SUM_LOOP(load4); break;
    default: SUM_LOOP(load8); break;
    }
    return s;
}

#define ADD_LOOP(LOAD)                                                     \
    do {                                                                   \
        if (shift == 0) {                                                  \
            for (size_t j = 0; j < n; j++) dst[j] += LOAD(src, j);         \
        } else {                                                           \
            for (size_t j = 0; j < n; j++) dst[j >> shift] += LOAD(src, j); \
        }                                                                  \
    } while (0)

SHC_MULTIVERSION
void shc_add_coded_counts(uint64_t *dst, const uint8_t *src, size_t n, int width, unsigned shift) {
    switch (width) {
    case 1: ADD_LOOP(load1); break;
    case 2: ADD_LOOP(load2); break;
    case 3: ADD_LOOP(load3); break;
    case 4: ADD_LOOP(load4); break;
    default: ADD_LOOP(load8); break;
    }
}

/* Element-wise add that also sums the source and records a carry out of any dst element: one pass
 * over the received counts instead of a validation pass (sum) and then a merge pass (add). With
 * 1/2/3/4-byte counts the sum cannot wrap for n < 2^32 (n <= 4096 in practice); it is summed in lanes
 * and the loop vectorises. 8-byte counts check the sum's carry element by element. */
/* shift 0: a count below 2^32 can only carry out of a dst element that was >= 2^64 - 2^32, so the
 * loop ORs the old dst values (one vector OR, where an exact per-element carry costs a compare, a
 * mask expansion and an OR) and only if any of them had its top bit set checks each element
 * afterwards: it wrapped iff the new value is below the count added. */
/* The shift-0 body from count J0 on (uses dst, src, n, s, seen, carry of the caller): add and sum,
 * OR-ing the old dst values into `seen`; then, only if one had its top bit set, the exact check
 * over all n counts. */
#define ADD_CHECKED_SHIFT0_FROM(LOAD, J0)                                  \
    do {                                                                   \
        for (size_t j = (J0); j < n; j++) {                                \
            uint64_t v = LOAD(src, j);                                     \
            uint64_t old = dst[j];                                         \
            seen |= old;                                                   \
            dst[j] = old + v;                                              \
            s += v;                                                        \
        }                                                                  \
        if (seen >> 63) {                                                  \
            for (size_t j = 0; j < n; j++) carry |= dst[j] < LOAD(src, j); \
        }                                                                  \
    } while (0)

#define ADD_CHECKED_LOOP(LOAD)                                             \
    do {                                                                   \
        if (shift == 0) {                                                  \
            uint64_t seen = 0;                                             \
            ADD_CHECKED_SHIFT0_FROM(LOAD, 0);                              \
        } else {                                                           \
            for (size_t j = 0; j < n; j++) {                               \
                uint64_t v = LOAD(src, j);                                 \
                uint64_t d = dst[j >> shift] + v;                          \
                carry |= d < v;                                            \
                dst[j >> shift] = d;                                       \
                s += v;                                                    \
            }                                                              \
        }                                                                  \
    } while (0)

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define SHC_HAVE_WIDTH3_X86 1
/* Bytes ahead of the 3-byte counts being added that the VBMI loop prefetches. The coordinator adds
 * each tensor's counts from several received results in turn (CalibrationState.mergeChecking), so
 * every source is a short run (about 12 KB) of bytes the libzmq I/O thread wrote, usually no longer
 * in this core's caches. Measured with `shardcal bench-coordinator` (perf): this loop went from
 * 24% to 19% of the process' samples; results/s rose 2-10% on the noisy host. */
#ifndef SHC_ADD3_PREFETCH
#define SHC_ADD3_PREFETCH 1024
#endif
#define SHC_VBMI __attribute__((target("avx512f,avx512bw,avx512vbmi")))

static inline int shc_cpu_has_vbmi(void) {
    return __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bw");
}

/* vpermb indices taking 8 three-byte counts (from byte 0, resp. 24, of a 48-byte block) to 8 u64
 * lanes: lane i gets bytes 3i, 3i+1, 3i+2; its other five bytes are zeroed by the mask below. */
#define SHC_LANE3(i) 3 * (i), 3 * (i) + 1, 3 * (i) + 2, 0, 0, 0, 0, 0
static const uint8_t shc_expand3_lo[64] = {SHC_LANE3(0), SHC_LANE3(1), SHC_LANE3(2), SHC_LANE3(3),
                                           SHC_LANE3(4), SHC_LANE3(5), SHC_LANE3(6), SHC_LANE3(7)};
static const uint8_t shc_expand3_hi[64] = {SHC_LANE3(8),  SHC_LANE3(9),  SHC_LANE3(10), SHC_LANE3(11),
                                           SHC_LANE3(12), SHC_LANE3(13), SHC_LANE3(14), SHC_LANE3(15)};
#undef SHC_LANE3

/* 16 three-byte counts (48 bytes at x) added into dst[0..<16]: two vpermb to u64 lanes. */
SHC_VBMI __attribute__((always_inline)) static inline void shc_add3_block(uint64_t *dst, __m512i x, __m512i lo_index,
                                                                        __m512i hi_index, __m512i *sum, __m512i *any) {
    const __mmask64 keep = 0x0707070707070707ull;
    __m512i a = _mm512_maskz_permutexvar_epi8(keep, lo_index, x);
    __m512i b = _mm512_maskz_permutexvar_epi8(keep, hi_index, x);
    __m512i d0 = _mm512_loadu_si512((const void *)dst);
    __m512i d1 = _mm512_loadu_si512((const void *)(dst + 8));
    *any = _mm512_or_si512(*any, _mm512_or_si512(d0, d1));
    _mm512_storeu_si512((void *)dst, _mm512_add_epi64(d0, a));
    _mm512_storeu_si512((void *)(dst + 8), _mm512_add_epi64(d1, b));
    *sum = _mm512_add_epi64(*sum, _mm512_add_epi64(a, b));
}

/* The shift-0 body of ADD_CHECKED_LOOP for 3-byte counts, 16 counts (48 bytes) per step: one load
 * and two vpermb, as many instructions per count as the 4-byte loop's zero-extending loads. Does
 * the whole blocks of 16 and returns how many counts it did; adds their sum to *s and ORs the old
 * dst values into *seen. Never reads past src + 3 * n: full 64-byte loads only while at least 64
 * bytes remain (j + 22 <= n), then at most one masked 48-byte load (faults suppressed). */
SHC_VBMI static size_t shc_add3_checked_vbmi(uint64_t *dst, const uint8_t *src, size_t n, uint64_t *s,
                                             uint64_t *seen) {
    const __m512i lo_index = _mm512_loadu_si512((const void *)shc_expand3_lo);
    const __m512i hi_index = _mm512_loadu_si512((const void *)shc_expand3_hi);
    __m512i sum = _mm512_setzero_si512(), any = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 22 <= n; j += 16) {
        _mm_prefetch((const char *)(src + 3 * j + SHC_ADD3_PREFETCH), _MM_HINT_T0);
        shc_add3_block(dst + j, _mm512_loadu_si512((const void *)(src + 3 * j)), lo_index, hi_index, &sum, &any);
    }
    for (; j + 16 <= n; j += 16) {
        __m512i x = _mm512_maskz_loadu_epi8(0xFFFFFFFFFFFFull, (const void *)(src + 3 * j));
        shc_add3_block(dst + j, x, lo_index, hi_index, &sum, &any);
    }
    *s += (uint64_t)_mm512_reduce_add_epi64(sum);
    *seen |= (uint64_t)_mm512_reduce_or_epi64(any);
    return j;
}

#define SHC_AVX2 __attribute__((target("avx2")))

static inline int shc_cpu_has_avx2(void) { return __builtin_cpu_supports("avx2"); }

/* The same for AVX2 (no vpermb, and vpshufb stays within 128-bit lanes), 8 counts (24 bytes) per
 * step: each 128-bit lane is loaded from where its two counts start, then one vpshufb per 4 counts
 * widens them to u64 in dst order. The last 16-byte load of a step reads bytes 18..33 of it, so
 * steps run while j + 12 <= n (3j + 34 <= 3n); the caller does the rest. Without it the portable
 * loop (a 2- and a 1-byte load per count) is ~10x slower than the 4-byte loop the compiler
 * vectorises. */
SHC_AVX2 static size_t shc_add3_checked_avx2(uint64_t *dst, const uint8_t *src, size_t n, uint64_t *s,
                                             uint64_t *seen) {
    const __m256i index = _mm256_setr_epi8(0, 1, 2, -1, -1, -1, -1, -1, 3, 4, 5, -1, -1, -1, -1, -1,
                                           0, 1, 2, -1, -1, -1, -1, -1, 3, 4, 5, -1, -1, -1, -1, -1);
    __m256i sum = _mm256_setzero_si256(), any = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + 12 <= n; j += 8) {
        const uint8_t *p = src + 3 * j;
        __m256i x0 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)p)),
                                             _mm_loadu_si128((const __m128i *)(const void *)(p + 6)), 1);
        __m256i x1 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(p + 12))),
                                             _mm_loadu_si128((const __m128i *)(const void *)(p + 18)), 1);
        __m256i a = _mm256_shuffle_epi8(x0, index);   /* counts j .. j+3 */
        __m256i b = _mm256_shuffle_epi8(x1, index);   /* counts j+4 .. j+7 */
        __m256i d0 = _mm256_loadu_si256((const __m256i *)(const void *)(dst + j));
        __m256i d1 = _mm256_loadu_si256((const __m256i *)(const void *)(dst + j + 4));
        any = _mm256_or_si256(any, _mm256_or_si256(d0, d1));
        _mm256_storeu_si256((__m256i *)(void *)(dst + j), _mm256_add_epi64(d0, a));
        _mm256_storeu_si256((__m256i *)(void *)(dst + j + 4), _mm256_add_epi64(d1, b));
        sum = _mm256_add_epi64(sum, _mm256_add_epi64(a, b));
    }
    uint64_t lanes[4], ors[4];
    _mm256_storeu_si256((__m256i *)(void *)lanes, sum);
    _mm256_storeu_si256((__m256i *)(void *)ors, any);
    *s += lanes[0] + lanes[1] + lanes[2] + lanes[3];
    *seen |= ors[0] | ors[1] | ors[2] | ors[3];
    return j;
}
#endif

/* Which implementation of the width-3, shift-0 checked add this CPU runs: 2 AVX-512 VBMI, 1 AVX2,
 * 0 portable. */
static int shc_add3_best_variant(void) {
#ifdef SHC_HAVE_WIDTH3_X86
    if (shc_cpu_has_vbmi()) return 2;
    if (shc_cpu_has_avx2()) return 1;
#endif
    return 0;
}

static int shc_add3_has_variant(int variant) {
    switch (variant) {
    case 0: return 1;
#ifdef SHC_HAVE_WIDTH3_X86
    case 1: return shc_cpu_has_avx2();
    case 2: return shc_cpu_has_vbmi();
#endif
    default: return 0;
    }
}

/* ADD_CHECKED_LOOP(load3) with shift 0: the whole vector blocks through `variant` (available on
 * this CPU), then the portable loop for the rest; ORs 1 into *carry_out on a carry out of dst. */
static uint64_t shc_add3_checked(uint64_t *dst, const uint8_t *src, size_t n, int variant, uint64_t *carry_out) {
    uint64_t s = 0, seen = 0, carry = 0;
    size_t done = 0;
#ifdef SHC_HAVE_WIDTH3_X86
    if (variant == 2) done = shc_add3_checked_vbmi(dst, src, n, &s, &seen);
    if (variant == 1) done = shc_add3_checked_avx2(dst, src, n, &s, &seen);
#else
    (void)variant;
#endif
    ADD_CHECKED_SHIFT0_FROM(load3, done);
    *carry_out |= carry;
    return s;
}

int shc_add3_coded_counts_checked_variant(int variant, uint64_t *dst, const uint8_t *src, size_t n, uint64_t *sum,
                                          int *overflow) {
    if (!shc_add3_has_variant(variant)) return 0;
    uint64_t carry = 0;
    *sum = shc_add3_checked(dst, src, n, variant, &carry);
    if (carry) *overflow = 1;
    return 1;
}

SHC_MULTIVERSION
uint64_t shc_add_coded_counts_checked(uint64_t *dst, const uint8_t *src, size_t n, int width, unsigned shift,
                                      int *overflow) {
    uint64_t s = 0, carry = 0;
    switch (width) {
    case 1: ADD_CHECKED_LOOP(load1); break;
    case 2: ADD_CHECKED_LOOP(load2); break;
    case 3:
        if (shift == 0) {
            s = shc_add3_checked(dst, src, n, shc_add3_best_variant(), &carry);
            break;
        }
        ADD_CHECKED_LOOP(load3);
        break;
    case 4: ADD_CHECKED_LOOP(load4); break;
    default:
        for (size_t j = 0; j < n; j++) {
            uint64_t v = load8(src, j);
            uint64_t d = dst[j >> shift] + v;
            carry |= d < v;
            dst[j >> shift] = d;
            carry |= __builtin_add_overflow(s, v, &s);
        }
        break;
    }
    if (width != 8 && (uint64_t)n >= ((uint64_t)1 << 32)) carry = 1; /* cannot happen (n <= 4096); stay exact anyway */
    if (carry) *overflow = 1;
    return s;
}

#define SUB_LOOP(LOAD)                                                     \
    do {                                                                   \
        for (size_t j = 0; j < n; j++) dst[j >> shift] -= LOAD(src, j);    \
    } while (0)

void shc_sub_coded_counts(uint64_t *dst, const uint8_t *src, size_t n, int width, unsigned shift) {
    switch (width) {
    case 1: SUB_LOOP(load1); break;
    case 2: SUB_LOOP(load2); break;
    case 3: SUB_LOOP(load3); break;
    case 4: SUB_LOOP(load4); break;
    default: SUB_LOOP(load8); break;
    }
}
