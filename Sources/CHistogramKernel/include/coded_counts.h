#ifndef SHARDCAL_CODED_COUNTS_H
#define SHARDCAL_CODED_COUNTS_H
/*
 * Loops over histogram counts in their compact coding (n little-endian unsigned integers of
 * `width` bytes each, width 1, 2, 4 or 8, at any alignment): the coordinator validates and merges
 * every RESULT straight from the received bytes with these, without first widening the counts
 * into a [UInt64]. Sums wrap modulo 2^64, like Histogram's own arithmetic.
 */
#include <stddef.h>
#include <stdint.h>

/* Sum of the n counts (mod 2^64). */
uint64_t shc_sum_coded_counts(const uint8_t *src, size_t n, int width);

/* dst[j >> shift] += count j, for j in 0..<n (shift 0: a plain element-wise add). shift < 64. */
void shc_add_coded_counts(uint64_t *dst, const uint8_t *src, size_t n, int width, unsigned shift);

#endif
