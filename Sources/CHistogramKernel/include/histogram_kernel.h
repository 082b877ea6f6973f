#ifndef SHARDCAL_HISTOGRAM_KERNEL_H
#define SHARDCAL_HISTOGRAM_KERNEL_H
/*
 * The hot loops of Histogram.accumulate and of the entropy threshold search, in C because Swift
 * does not vectorise them (measured: scripts/bench-core). The Swift versions in
 * HistogramAccumulator.Reference and ThresholdSearch are the references these are tested against.
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
 * Entropy (KL) threshold search over counts c[0..n-1] (bin 0 already replaced by bin 1), from
 * prefix sums. See ThresholdSearch.entropy, which drives these and re-evaluates near-best
 * candidates exactly.
 *   prefix_hi[j] + prefix_lo[j] = sum of c[0..j-1] (n + 1 entries; kept as two parts so the sum is
 *                                 exact even past 2^53); prefix_lo may be NULL when every
 *                                 prefix_hi[j] is exact
 *   prefix_nonzero[j]           = number of non-zero c[0..j-1]
 *   prefix_clogc[j]             = sum of c*log(c) over c[0..j-1]
 */
typedef struct {
    const double *prefix_hi;
    const double *prefix_lo;
    const int32_t *prefix_nonzero;
    const double *prefix_clogc;
    const double *c;
    size_t n;
} shc_entropy_input;

/*
 * For every candidate i in [first, n], out[i - first] = a lower bound on KL(P_i || Q_i): the
 * divergence of P and Q merged into three cells (bins of levels 0..126; the last level without its
 * last bin; bin i-1, which carries the outliers). Merging cells never increases a KL divergence
 * (data-processing inequality), so a candidate whose bound exceeds a divergence already found
 * cannot win. +inf exactly where the divergence is +inf.
 */
void shc_entropy_bounds(const shc_entropy_input *in, size_t first, double *out);

/*
 * KL(P_i || Q_i) for one candidate i in [128, n] from the prefix sums (ThresholdSearch.fastDivergence
 * is the Swift reference), with a vectorisable logarithm (within a few ulps of libm's).
 */
double shc_entropy_divergence(const shc_entropy_input *in, size_t i);

#endif
