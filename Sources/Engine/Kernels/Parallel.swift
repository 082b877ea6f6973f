import CConvKernels
import Foundation

// Parallel loops for the kernels. Callers only split independent outputs, never a reduction, and
// each index is processed by the same code whatever the thread count, so results are bit-identical
// for any `threads` value.
//
// The loops run on `WorkerPool`s: threads created once per process and kept, the calling thread
// taking part as one of the workers. A batch-1 op lasts 100–300 µs, too short for
// DispatchQueue.concurrentPerform on Linux (measured: no gain from a second thread), so idle pool
// threads spin briefly on the pool's epoch word before blocking on it (futex), as ONNX Runtime's
// and Eigen's pools do.

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

/// Runs `body(task, worker)` for every task in `0..<count`. Worker w first runs its own contiguous
/// share [count·w/t, count·(w+1)/t), t = min(threads, count), in order; a worker done with its
/// share then takes the remaining tasks of the other shares (from a counter per share), so a thread
/// slowed down by other load on its core does not hold the loop back.
/// Used by the convolution kernels whose outputs are large: with threads of equal speed, the same
/// thread (the caller runs worker 0) writes the same part of a buffer on every run, and a depthwise
/// Conv's thread reads back mostly what its own thread's pointwise Conv wrote, so cache lines stay
/// in one core's L2 instead of moving between cores on each write. Measured at batch 1 on 2
/// threads (EfficientNet-Lite0, per-node minima, order-alternated runs): pointwise layers on
/// 112×112…28×28 planes 10–25% faster than with every task taken from one shared counter,
/// depthwise layers 5–12%.
@inline(__always)
func affineTasksWithWorker(_ count: Int, threads: Int, _ body: (_ task: Int, _ worker: Int) -> Void) {
    let t = min(max(threads, 1), count)
    if t <= 1 {
        for i in 0..<count { body(i, 0) }
        return
    }
    // One counter per share, each on a cache line of its own: the next task of share c.
    let line = 64 / MemoryLayout<Int>.stride
    let raw = UnsafeMutablePointer<Int>.allocate(capacity: t * line)
    defer { raw.deallocate() }
    for c in 0..<t { (raw + c * line).initialize(to: count * c / t) }
    let counters = UncheckedSendableBox(raw)
    runWorkers(t) { w in
        for k in 0..<t {
            let c = (w + k) % t
            let end = count * (c + 1) / t
            while true {
                let i = shardcal_fetch_add(counters.value + c * line, 1)
                if i >= end { break }
                body(i, w)
            }
        }
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
    // Workers take the next tasks from a shared counter, so a worker slowed down by other load on
    // its core does not hold the others back. Tasks themselves are fixed, so results are too.
    // Tasks are taken `grain` at a time (about 16 takes per worker): a depthwise plane at 7×7 is a
    // task of well under a microsecond, and one atomic per task on a counter whose cache line
    // bounces between the cores cost ~5% of a 2-thread batch-1 run. The counter has a cache line
    // of its own.
    let grain = max(1, count / (t * 16))
    let raw = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
    defer { raw.deallocate() }
    let next = raw.bindMemory(to: Int.self, capacity: 1)
    next.initialize(to: 0)
    let counter = UncheckedSendableBox(next)
    runWorkers(t) { w in
        while true {
            let i0 = shardcal_fetch_add(counter.value, grain)
            if i0 >= count { break }
            for i in i0..<min(count, i0 + grain) { body(i, w) }
        }
    }
}

/// Runs `body(w)` once for every `w` in `0..<workers`, concurrently on a worker pool, and returns
/// when all have returned. Each `w` runs on exactly one thread, and no two threads run the same
/// `w` (so `w` can index per-worker scratch); the caller runs some (possibly all) of them itself.
/// Called from inside a parallel loop (nested), it runs serially on the calling thread.
func runWorkers(_ workers: Int, _ body: (Int) -> Void) {
    if workers <= 1 || workers > WorkerPool.maxSlots || shardcal_parallel_depth() > 0 {
        for w in 0..<workers { body(w) }
        return
    }
    let pool = WorkerPool.acquire(helpers: min(workers - 1, WorkerPool.maxHelpers))
    defer { WorkerPool.release(pool) }
    // Each worker only touches disjoint outputs (callers' contract), so handing the non-Sendable
    // closure to the pool threads is safe; the pool drops every reference to it before returning.
    withoutActuallyEscaping(body) { escapable in pool.run(slots: workers, escapable) }
}

/// A set of threads that run the slots of one parallel loop at a time, owned by one caller at a
/// time (see `acquire`). Pools are process-wide and never shut down: their threads block on a
/// futex when idle, so a pool outlives any session that used it and is reused by the next one.
///
/// Protocol (all words on separate cache lines):
/// - `claim` = epoch << 32 | slots << 16 | next. The owner publishes a loop by storing a new epoch
///   with next = 0 (release), then the same epoch into `epochWord`, which idle threads watch.
/// - Every thread, owner included, takes slots by compare-and-swap on `claim` while its epoch is
///   the loop's and next < slots; each finished slot by a pool thread increments `done`.
/// - The owner, out of slots, waits until `done` counts every slot it did not run itself. A pool
///   thread that wakes late finds the epoch changed or no slot left and takes nothing, so the
///   owner never waits on a thread that is not running one of its slots.
final class WorkerPool: @unchecked Sendable {
    static let maxSlots = 0xFFFF
    static let maxHelpers = 255
    /// Spin iterations (each a load and a PAUSE, ~30 ns on the Xeon this was tuned on) before
    /// blocking: pool threads waiting for the next loop (~60 µs), and the owner waiting for the
    /// last slots (~120 µs). Longer than the gap between two ops of a run, much shorter than the
    /// gap between runs. (Yielding the core inside the spin was tried: 10–15% slower at batch 1
    /// on the loaded 2-core machine.)
    static let helperSpins = 2_000
    static let ownerSpins = 4_000

    private let memory: UnsafeMutableRawPointer
    private let epochWord: UnsafeMutablePointer<UInt32>
    private let sleepers: UnsafeMutablePointer<UInt32>
    private let claimWord: UnsafeMutablePointer<UInt64>
    private let done: UnsafeMutablePointer<UInt32>
    private let ownerWaiting: UnsafeMutablePointer<UInt32>
    /// The running loop's body; set by the owner before publishing a loop, cleared after it.
    private let job: UnsafeMutablePointer<((Int) -> Void)?>
    /// Owner-only state.
    private var epoch: UInt32 = 0
    private(set) var helperCount = 0

    private init() {
        let line = 64
        memory = UnsafeMutableRawPointer.allocate(byteCount: 5 * line, alignment: line)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: 5 * line)
        epochWord = (memory + 0 * line).assumingMemoryBound(to: UInt32.self)
        sleepers = (memory + 1 * line).assumingMemoryBound(to: UInt32.self)
        claimWord = (memory + 2 * line).assumingMemoryBound(to: UInt64.self)
        done = (memory + 3 * line).assumingMemoryBound(to: UInt32.self)
        ownerWaiting = (memory + 4 * line).assumingMemoryBound(to: UInt32.self)
        job = .allocate(capacity: 1)
        job.initialize(to: nil)
    }

    // MARK: process-wide registry

    private final class Registry: @unchecked Sendable {
        let lock = NSLock()
        var idle: [WorkerPool] = []
        var created = 0
    }
    private static let registry = Registry()

    /// Takes an idle pool (the most recently used, whose threads are likeliest still spinning) or
    /// makes one, with at least `helpers` threads. Concurrent callers get different pools.
    static func acquire(helpers: Int) -> WorkerPool {
        registry.lock.lock()
        let idle = registry.idle.popLast()
        if idle == nil { registry.created += 1 }
        registry.lock.unlock()
        let pool = idle ?? WorkerPool()
        pool.grow(to: helpers)
        return pool
    }

    static func release(_ pool: WorkerPool) {
        registry.lock.lock()
        registry.idle.append(pool)
        registry.lock.unlock()
    }

    /// Pools made so far and threads they hold (for tests).
    static var statistics: (pools: Int, threads: Int) {
        registry.lock.lock(); defer { registry.lock.unlock() }
        return (registry.created, registry.idle.reduce(0) { $0 + $1.helperCount })
    }

    private func grow(to helpers: Int) {
        while helperCount < helpers {
            let start = epoch
            let thread = Thread { [self] in helperLoop(seen: start) }
            thread.name = "shardcal-pool"
            thread.start()
            helperCount += 1
        }
    }

    // MARK: running a loop (owner)

    func run(slots: Int, _ body: @escaping (Int) -> Void) {
        epoch &+= 1
        let e = epoch
        job.pointee = body
        done.pointee = 0
        shardcal_store_release_u64(claimWord, UInt64(e) << 32 | UInt64(slots) << 16)
        shardcal_store_seqcst_u32(epochWord, e)
        if shardcal_load_seqcst_u32(sleepers) > 0 {
            shardcal_futex_wake(epochWord, Int32(min(slots - 1, helperCount)))
        }
        shardcal_parallel_enter()
        var mine = 0
        while let s = claim(e) {
            body(s)
            mine += 1
        }
        shardcal_parallel_leave()
        let target = UInt32(slots - mine)
        if target > 0 {
            var spins = 0
            while shardcal_load_acquire_u32(done) != target && spins < WorkerPool.ownerSpins {
                shardcal_cpu_relax()
                spins += 1
            }
            if shardcal_load_acquire_u32(done) != target {
                shardcal_store_seqcst_u32(ownerWaiting, 1)
                while true {
                    let d = shardcal_load_seqcst_u32(done)
                    if d == target { break }
                    shardcal_futex_wait(done, d)
                }
                shardcal_store_seqcst_u32(ownerWaiting, 0)
            }
        }
        job.pointee = nil
    }

    /// Takes the next slot of the loop with epoch `e`, or nil when that loop has none left (or is over).
    @inline(__always)
    private func claim(_ e: UInt32) -> Int? {
        while true {
            let w = shardcal_load_acquire_u64(claimWord)
            if UInt32(truncatingIfNeeded: w >> 32) != e { return nil }
            let slots = Int((w >> 16) & 0xFFFF), next = Int(w & 0xFFFF)
            if next >= slots { return nil }
            if shardcal_cas_u64(claimWord, w, w + 1) != 0 { return next }
        }
    }

    // MARK: pool threads

    private func helperLoop(seen start: UInt32) {
        shardcal_parallel_enter()
        var seen = start
        while true {
            var e = shardcal_load_acquire_u32(epochWord)
            var spins = 0
            while e == seen && spins < WorkerPool.helperSpins {
                shardcal_cpu_relax()
                spins += 1
                e = shardcal_load_acquire_u32(epochWord)
            }
            while e == seen {
                _ = shardcal_add_fetch_u32(sleepers, 1)
                shardcal_futex_wait(epochWord, seen)
                _ = shardcal_sub_fetch_u32(sleepers, 1)
                e = shardcal_load_acquire_u32(epochWord)
            }
            seen = e
            while let s = claim(e) {
                runSlot(s)
                _ = shardcal_add_fetch_u32(done, 1)
                if shardcal_load_seqcst_u32(ownerWaiting) != 0 { shardcal_futex_wake(done, 1) }
            }
        }
    }

    /// Runs one slot of the current loop. Not inlined, so that this thread's reference to the body
    /// is gone before `done` tells the owner (which then checks the body did not escape).
    @inline(never)
    private func runSlot(_ s: Int) {
        job.pointee!(s)
    }
}

struct UncheckedSendableBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

