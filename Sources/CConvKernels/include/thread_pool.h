#ifndef SHARDCAL_THREAD_POOL_H
#define SHARDCAL_THREAD_POOL_H
/*
 * Primitives for Engine's worker pool (Kernels/Parallel.swift): atomics on plain 32/64-bit words
 * (so the same word can be a futex), a spin-wait hint and futex wait/wake. The pool logic itself
 * is in Swift.
 */
#include <stdint.h>

static inline uint32_t shardcal_load_acquire_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t shardcal_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint32_t shardcal_load_seqcst_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void shardcal_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void shardcal_store_release_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void shardcal_store_seqcst_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
/* Returns the new value. */
static inline uint32_t shardcal_add_fetch_u32(uint32_t *p, uint32_t v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t shardcal_sub_fetch_u32(uint32_t *p, uint32_t v) { return __atomic_sub_fetch(p, v, __ATOMIC_SEQ_CST); }
/* Replaces *p by desired when it equals expected; returns whether it did. */
static inline int shardcal_cas_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* Spin-wait hint (x86 PAUSE / arm YIELD). */
static inline void shardcal_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Blocks while *word == expected (may return spuriously; callers re-check). Linux: futex;
 * elsewhere a short sleep. */
void shardcal_futex_wait(uint32_t *word, uint32_t expected);
/* Wakes up to `count` threads blocked in shardcal_futex_wait on `word`. */
void shardcal_futex_wake(uint32_t *word, int count);

/* Per-thread nesting depth of parallel regions: > 0 on pool threads and on a caller thread while
 * it runs a parallel loop, so nested loops run serially instead of waiting on the pool. */
int shardcal_parallel_depth(void);
void shardcal_parallel_enter(void);
void shardcal_parallel_leave(void);

#endif
