#include "histogram_kernel.h"
#include <string.h>

/* Runtime dispatch to an AVX-512/AVX2 build of each loop where the CPU has it (GNU ifunc). */
#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define SHC_MULTIVERSION __attribute__((target_clones("avx512bw", "avx2", "default")))
#else
#define SHC_MULTIVERSION
#endif

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

SHC_MULTIVERSION
void shc_bin_block(const float *values, size_t n, float scale, uint16_t *lanes) {
    /* Indices are computed a chunk at a time (vectorisable), then scattered (scalar). */
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
            index[j] = (int32_t)(magnitude * scale);
        }
        size_t j = 0;
        for (; j + 4 <= m; j += 4) {
            lanes[index[j]]++;
            lanes[SHC_LANE_BINS + index[j + 1]]++;
            lanes[2 * SHC_LANE_BINS + index[j + 2]]++;
            lanes[3 * SHC_LANE_BINS + index[j + 3]]++;
        }
        for (; j < m; j++) lanes[index[j]]++;
        i += m;
    }
}
