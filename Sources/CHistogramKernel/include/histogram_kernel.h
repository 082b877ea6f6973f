#ifndef SHARDCAL_HISTOGRAM_KERNEL_H
#define SHARDCAL_HISTOGRAM_KERNEL_H
/*
 * The hot loops of Histogram.accumulate and of the entropy threshold search, in C because Swift
 * does not vectorise them (measured: scripts/bench-core). The Swift versions in
 * HistogramAccumulator.Reference and ThresholdSearch are the references these are tested against.
 */
#include <stddef.h>
#include <stdint.h>

/* Bins per lane, lanes, and the distance between lanes in the lane buffer (SHC_LANES *
 * SHC_LANE_STRIDE counters): bin SHC_LANE_BINS of each lane is a spare that may take anything and
 * is never read (the portable path sends zeros there); the padding also keeps lanes off 4 KiB
 * address aliasing. */
#define SHC_LANE_BINS 4096
#define SHC_LANES 4
#define SHC_LANE_STRIDE (SHC_LANE_BINS + 64)
/* Block length of shc_scan_bin_run (its index buffers and the lanes stay in L1 together). */
#define SHC_BLOCK 2048

typedef struct {
    uint32_t max_magnitude_bits; /* max over (bits & 0x7fffffff); >= 0x7f800000 means NaN/Inf present */
    int32_t min_key;             /* min of the total-order key of each value (see Histogram.orderKey) */
    int32_t max_key;
    uint32_t zeros;              /* values equal to +0 or -0 */
} shc_scan_result;

/* One pass over n values' bit patterns: max |x| bits, total-order min/max keys, zero count. */
void shc_scan_block(const float *values, size_t n, shc_scan_result *out);

/*
 * Adds each NON-ZERO value to lanes[lane * SHC_LANE_STRIDE + (int)(|x| * scale)], lanes taken in
 * turn; zeros (+0, -0) are left out: the caller counts them (shc_scan_result.zeros) into bin 0.
 * All values must be finite and (int)(|x| * scale) < SHC_LANE_BINS. Lanes are 16-bit: the caller
 * flushes them before any lane bin can exceed 65535 (a lane takes at most a quarter of the values
 * of each SHC_BLOCK, rounded up).
 */
void shc_bin_block(const float *values, size_t n, float scale, uint16_t *lanes);

/*
 * Scans and bins values[0..n) (n < 2^32) block by block (SHC_BLOCK values each) in one pass over
 * memory, and stops before the first block that does not fit the layout: one holding a
 * non-finite value or a magnitude not below the limit (limit_bits <= 0x7f800000, and |x| < limit
 * must imply (int)(|x| * scale) < SHC_LANE_BINS). Zeros are left out as in shc_bin_block. Returns how many
 * values were binned (whole blocks, or all n); *out holds the scan of exactly those values. The
 * caller flushes the lanes often enough (a lane takes at most a quarter of each block's values,
 * rounded up). The AVX-512 path is software-pipelined (a block is scanned while the previous one
 * is scattered) and prefetches ahead, so it may prefetch past values + n (prefetches never fault).
 */
size_t shc_scan_bin_run(const float *values, size_t n, float scale, uint32_t limit_bits, uint16_t *lanes,
                        shc_scan_result *out);

/* The same without AVX-512 (what other CPUs run; exposed so tests cover it on any CPU). */
void shc_bin_block_portable(const float *values, size_t n, float scale, uint16_t *lanes);
size_t shc_scan_bin_run_portable(const float *values, size_t n, float scale, uint32_t limit_bits, uint16_t *lanes,
                                 shc_scan_result *out);

/* counts[j] += sum of the lanes' bin j for j < bins, and those lane bins are reset to 0. */
void shc_flush_lanes(uint16_t *lanes, size_t bins, uint64_t *counts);

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
