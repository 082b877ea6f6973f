#include "include/thread_pool.h"
#include <limits.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

void shardcal_futex_wait(uint32_t *word, uint32_t expected) {
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

void shardcal_futex_wake(uint32_t *word, int count) {
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}
#else
#include <time.h>

void shardcal_futex_wait(uint32_t *word, uint32_t expected) {
    if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected) return;
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
}

void shardcal_futex_wake(uint32_t *word, int count) { (void)word; (void)count; }
#endif

static _Thread_local int parallel_depth;

int shardcal_parallel_depth(void) { return parallel_depth; }
void shardcal_parallel_enter(void) { parallel_depth++; }
void shardcal_parallel_leave(void) { parallel_depth--; }
