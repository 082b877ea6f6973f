#ifndef SHARDCAL_HISTOGRAM_KERNEL_H
#define SHARDCAL_HISTOGRAM_KERNEL_H
/*
 * The two hot loops of Histogram.accumulate, in C because Swift does not vectorise the scan
 * (measured: scripts/bench-core). The Swift versions in HistogramAccumulator are the reference
 * these are tested against.
 */
#include <stddef.h>
#include <stdint.h>

/* Number of bins per lane and number of interleaved lanes used by shc_bin_block. */
#define SHC_LANE_BINS 4096
#define SHC_LANES 4

typedef struct {
    uint32_t max_magnitude_bits; /* max over (bits & 0x7fffffff); >= 0x7f800000 means NaN/Inf present */
    int32_t min_key;             /* min of the total-order key of each value (see Histogram.orderKey) */
    int32_t max_key;
    uint32_t zeros;              /* values equal to +0 or -0 */
} shc_scan_result;

/* One pass over n values' bit patterns: max |x| bits, total-order min/max keys, zero count. */
void shc_scan_block(const float *values, size_t n, shc_scan_result *out);

/*
 * Adds each value to lanes[lane * SHC_LANE_BINS + (int)(|x| * scale)], lane = position % 4 in
 * groups of four. All values must be finite and (int)(|x| * scale) < SHC_LANE_BINS.
 * Lanes are 16-bit: the caller flushes them before any lane bin can exceed 65535.
 */
void shc_bin_block(const float *values, size_t n, float scale, uint16_t *lanes);

/*
 * Screening pass of the entropy (KL) threshold search: for every candidate i in [first, n],
 * out[i - first] = KL divergence computed from prefix sums (see ThresholdSearch.fastDivergence,
 * the Swift reference), with a vectorisable logarithm accurate to about 1e-15 relative. The
 * caller re-evaluates the candidates near the minimum exactly.
 *   prefix_count[j]    = sum of c[0..j-1] (n + 1 entries)
 *   prefix_nonzero[j]  = number of non-zero c[0..j-1]
 *   prefix_clogc[j]    = sum of c*log(c) over c[0..j-1]
 *   c                  = the counts (bin 0 already replaced by bin 1)
 */
void shc_entropy_screen(const double *prefix_count, const int32_t *prefix_nonzero, const double *prefix_clogc,
                        const double *c, size_t n, size_t first, double *out);

#endif
