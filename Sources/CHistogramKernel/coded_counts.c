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
    case 4: ADD_LOOP(load4); break;
    default: ADD_LOOP(load8); break;
    }
}

/* Element-wise add that also sums the source and records a carry out of any dst element: one pass
 * over the received counts instead of a validation pass (sum) and then a merge pass (add). With
 * 1/2/4-byte counts the sum cannot wrap for n < 2^32 (n <= 4096 in practice); it is summed in lanes
 * and the loop vectorises. 8-byte counts check the sum's carry element by element. */
/* shift 0: a count below 2^32 can only carry out of a dst element that was >= 2^64 - 2^32, so the
 * loop ORs the old dst values (one vector OR, where an exact per-element carry costs a compare, a
 * mask expansion and an OR) and only if any of them had its top bit set checks each element
 * afterwards: it wrapped iff the new value is below the count added. */
#define ADD_CHECKED_LOOP(LOAD)                                             \
    do {                                                                   \
        if (shift == 0) {                                                  \
            uint64_t seen = 0;                                             \
            for (size_t j = 0; j < n; j++) {                               \
                uint64_t v = LOAD(src, j);                                 \
                uint64_t old = dst[j];                                     \
                seen |= old;                                               \
                dst[j] = old + v;                                          \
                s += v;                                                    \
            }                                                              \
            if (seen >> 63) {                                              \
                for (size_t j = 0; j < n; j++) carry |= dst[j] < LOAD(src, j); \
            }                                                              \
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

SHC_MULTIVERSION
uint64_t shc_add_coded_counts_checked(uint64_t *dst, const uint8_t *src, size_t n, int width, unsigned shift,
                                      int *overflow) {
    uint64_t s = 0, carry = 0;
    switch (width) {
    case 1: ADD_CHECKED_LOOP(load1); break;
    case 2: ADD_CHECKED_LOOP(load2); break;
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
    case 4: SUB_LOOP(load4); break;
    default: SUB_LOOP(load8); break;
    }
}
