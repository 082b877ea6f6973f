import Dispatch

/// Splits `0..<count` into at most `threads` contiguous chunks and runs `body` on each chunk,
/// concurrently when `threads > 1`. The split is static, so each index is always processed by the
/// same code path whatever the thread count; callers only split independent outputs, never a
/// reduction, which keeps results bit-identical across thread counts.
@inline(__always)
func parallelChunks(_ count: Int, threads: Int, _ body: (Range<Int>) -> Void) {
    let t = min(max(threads, 1), count)
    if t <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    // The body only touches disjoint outputs per chunk (caller's contract), so handing it to the
    // worker threads is safe even though the closure type is not Sendable.
    withoutActuallyEscaping(body) { escapable in
        let box = UncheckedSendableBox(escapable)
        DispatchQueue.concurrentPerform(iterations: t) { i in
            let lo = count * i / t
            let hi = count * (i + 1) / t
            if lo < hi { box.value(lo..<hi) }
        }
    }
}

struct UncheckedSendableBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
