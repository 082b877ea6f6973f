#ifndef SHARDCAL_CODED_COUNTS_H
#define SHARDCAL_CODED_COUNTS_H
/*
 * Loops over histogram counts in their compact coding (n little-endian unsigned integers of
 * `width` bytes each, width 1, 2, 3, 4 or 8, at any alignment;
 * width 3 is read three bytes at a time, never past byte 3n): the coordinator validates and merges
 * every RESULT straight from the received bytes with these, without first widening the counts
 * into a [UInt64]. Sums wrap modulo 2^64, like Histogram's own arithmetic.
 */
#include <stddef.h>
#include <stdint.h>

/* Sum of the n counts (mod 2^64). */
uint64_t shc_sum_coded_counts(const uint8_t *src, size_t n, int width);

/* dst[j >> shift] += count j, for j in 0..<n (shift 0: a plain element-wise add). shift < 64. */
void shc_add_coded_counts(uint64_t *dst, const uint8_t *src, size_t n, int width, unsigned shift);

/* The coordinator's one pass over a received tensor: dst[j >> shift] += count j like
 * shc_add_coded_counts, and returns the exact sum of the n counts (what validation compares with
 * the value count). Sets *overflow to 1 if that sum or any dst element exceeded 2^64 - 1 (the
 * wrapped values are then in dst; shc_sub_coded_counts with the same arguments restores it
 * exactly); leaves it untouched otherwise. shift < 64. */
uint64_t shc_add_coded_counts_checked(uint64_t *dst, const uint8_t *src, size_t n, int width, unsigned shift,
                                      int *overflow);

/* Test hook: shc_add_coded_counts_checked for width 3 and shift 0 (returning the sum in *sum)
 * through one implementation: 0 portable, 1 AVX2, 2 AVX-512 VBMI (the fastest this CPU has is what
 * shc_add_coded_counts_checked uses). Returns 0, touching nothing, if this CPU lacks it; 1 otherwise. */
int shc_add3_coded_counts_checked_variant(int variant, uint64_t *dst, const uint8_t *src, size_t n, uint64_t *sum,
                                          int *overflow);

/* dst[j >> shift] -= count j (mod 2^64): undoes shc_add_coded_counts(_checked). shift < 64. */
void shc_sub_coded_counts(uint64_t *dst, const uint8_t *src, size_t n, int width, unsigned shift);

#endif
