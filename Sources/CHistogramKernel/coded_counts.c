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
