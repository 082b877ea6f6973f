import CConvKernels
import Dispatch

// Parallel loops for the kernels. Callers only split independent outputs, never a reduction, and
// each index is processed by the same code whatever the thread count, so results are bit-identical
// for any `threads` value.

/// Splits `0..<count` into at most `threads` contiguous chunks and runs `body` on each chunk,
/// concurrently when `threads > 1`.
@inline(__always)
func parallelChunks(_ count: Int, threads: Int, _ body: (Range<Int>) -> Void) {
    let t = min(max(threads, 1), count)
    if t <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    runWorkers(t) { i in
        let lo = count * i / t
        let hi = count * (i + 1) / t
        if lo < hi { body(lo..<hi) }
    }
}

/// Runs `body(task)` for every task in `0..<count` on up to `threads` workers, which take tasks in
/// order from a shared counter. `parallelTasksWithWorker` also passes the worker index (for
/// per-worker scratch).
@inline(__always)
func parallelTasks(_ count: Int, threads: Int, _ body: (_ task: Int) -> Void) {
    parallelTasksWithWorker(count, threads: threads) { task, _ in body(task) }
}

@inline(__always)
func parallelTasksWithWorker(_ count: Int, threads: Int, _ body: (_ task: Int, _ worker: Int) -> Void) {
    let t = min(max(threads, 1), count)
    if t <= 1 {
        for i in 0..<count { body(i, 0) }
        return
    }
    // Workers take the next task from a shared counter, so a worker slowed down by other load on
    // its core does not hold the others back. Tasks themselves are fixed, so results are too.
    let next = UnsafeMutablePointer<Int>.allocate(capacity: 1)
    next.initialize(to: 0)
    defer { next.deallocate() }
    let counter = UncheckedSendableBox(next)
    runWorkers(t) { w in
        while true {
            let i = shardcal_fetch_add(counter.value, 1)
            if i >= count { break }
            body(i, w)
        }
    }
}

/// Runs `body(0..<workers)` concurrently on Dispatch's pool and waits for all of them.
@inline(__always)
func runWorkers(_ workers: Int, _ body: (Int) -> Void) {
    // Each worker only touches disjoint outputs (callers' contract), so handing the non-Sendable
    // closure to the pool threads is safe.
    withoutActuallyEscaping(body) { escapable in
        let box = UncheckedSendableBox(escapable)
        DispatchQueue.concurrentPerform(iterations: workers) { w in box.value(w) }
    }
}

struct UncheckedSendableBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
