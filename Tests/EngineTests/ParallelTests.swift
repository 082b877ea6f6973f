import Foundation
import Testing
@testable import Engine
#if canImport(Glibc)
import Glibc
#endif

/// Per-index counters that threads bump at disjoint indices (each index by one thread at a time).
private final class Counts: @unchecked Sendable {
    let p: UnsafeMutablePointer<Int>
    let n: Int
    init(_ n: Int) { self.n = n; p = .allocate(capacity: max(n, 1)); p.initialize(repeating: 0, count: max(n, 1)) }
    deinit { p.deallocate() }
    var all: [Int] { Array(UnsafeBufferPointer(start: p, count: n)) }
}

@Suite("Worker pool")
struct ParallelTests {
    @Test("every task and every worker slot runs exactly once, for any thread count")
    func exactlyOnce() {
        for threads in [1, 2, 3, 4, 7] {
            for count in [0, 1, 2, 3, 5, 64, 1000] {
                let tasks = Counts(count)
                parallelTasks(count, threads: threads) { i in tasks.p[i] += 1 }
                #expect(tasks.all == [Int](repeating: 1, count: count), "tasks: \(count) on \(threads) threads")

                let chunks = Counts(count)
                parallelChunks(count, threads: threads) { r in for i in r { chunks.p[i] += 1 } }
                #expect(chunks.all == [Int](repeating: 1, count: count), "chunks: \(count) on \(threads) threads")
            }
            let slots = Counts(threads)
            runWorkers(threads) { w in slots.p[w] += 1 }
            #expect(slots.all == [Int](repeating: 1, count: threads))
        }
    }

    @Test("affineTasksWithWorker: every task once; a worker runs its own share in order, then takes over a slow one's")
    func affineShares() {
        for threads in [1, 2, 3, 4, 7] {
            for count in [0, 1, 2, 3, 5, 64, 1000] {
                let tasks = Counts(count)
                affineTasksWithWorker(count, threads: threads) { i, _ in tasks.p[i] += 1 }
                #expect(tasks.all == [Int](repeating: 1, count: count), "\(count) on \(threads) threads")
            }
        }
        // Worker 1's share is slow (1 ms a task): worker 0 finishes its own share, in order, and
        // then runs tasks of share 1 (or all of them, if the pool thread never started).
        let count = 40
        let ranBy = Counts(count), order = Counts(count + 1)
        affineTasksWithWorker(count, threads: 2) { task, worker in
            ranBy.p[task] = worker + 1
            if worker == 0 { order.p[order.p[count]] = task; order.p[count] += 1 }
            if worker == 1 { usleep(1000) }
        }
        let byWorker0 = Array(order.all.prefix(order.p[count]))
        let own = byWorker0.filter { $0 < count / 2 }
        #expect(own == own.sorted() && byWorker0.prefix(own.count) == own[...], "worker 0 runs its own share first, in order")
        #expect((count / 2..<count).contains { ranBy.p[$0] == 1 }, "worker 0 took over part of the slow share")
        #expect(ranBy.all.allSatisfy { $0 == 1 || $0 == 2 })
    }

    @Test("parallelTasksWithWorker: worker indices are in range and never run concurrently on two threads")
    func workerIndices() {
        let threads = 3, count = 500
        let owner = Counts(threads)   // 0 = free, else a marker of the thread using the index
        let bad = Counts(1)
        let seen = Counts(count)
        parallelTasksWithWorker(count, threads: threads) { task, worker in
            guard worker >= 0 && worker < threads else { bad.p[0] = 1; return }
            let me = Int(bitPattern: UInt(pthread_self()))
            if owner.p[worker] != 0 { bad.p[0] = 1 }
            owner.p[worker] = me
            seen.p[task] += 1
            for _ in 0..<100 { if owner.p[worker] != me { bad.p[0] = 1 } }
            owner.p[worker] = 0
        }
        #expect(bad.p[0] == 0)
        #expect(seen.all == [Int](repeating: 1, count: count))
    }

    @Test("threads = 1 (or one task) runs on the calling thread")
    func serialFastPath() {
        let me = pthread_self()
        let other = Counts(1)
        parallelTasks(100, threads: 1) { _ in if pthread_self() != me { other.p[0] += 1 } }
        parallelChunks(100, threads: 1) { _ in if pthread_self() != me { other.p[0] += 1 } }
        parallelTasks(1, threads: 8) { _ in if pthread_self() != me { other.p[0] += 1 } }
        #expect(other.p[0] == 0)
    }

    @Test("nested parallel loops run serially inside the outer one, without deadlock")
    func nested() {
        let outer = 6, inner = 50
        let c = Counts(outer * inner)
        parallelTasks(outer, threads: 2) { i in
            parallelTasks(inner, threads: 2) { j in c.p[i * inner + j] += 1 }
            parallelChunks(inner, threads: 3) { r in for j in r { c.p[i * inner + j] += 1 } }
        }
        #expect(c.all == [Int](repeating: 2, count: outer * inner))
    }

    @Test("many consecutive small loops (the batch-1 pattern), with pauses long enough for pool threads to block")
    func manySmallCalls() {
        let c = Counts(4)
        for k in 0..<20_000 {
            parallelTasks(2 + k % 3, threads: 2) { i in c.p[i] += 1 }
            if k % 5_000 == 4_999 { usleep(20_000) }   // helpers go from spinning to the futex and back
        }
        var expected = [0, 0, 0, 0]
        for k in 0..<20_000 { for i in 0..<(2 + k % 3) { expected[i] += 1 } }
        #expect(c.all == expected)
    }

    @Test("concurrent callers each get their own pool and correct results")
    func concurrentCallers() {
        let callers = 4, count = 300, rounds = 200
        let c = Counts(callers * count)
        DispatchQueue.concurrentPerform(iterations: callers) { k in
            for _ in 0..<rounds {
                parallelTasks(count, threads: 2) { i in c.p[k * count + i] += 1 }
            }
        }
        #expect(c.all == [Int](repeating: rounds, count: callers * count))
    }

    @Test("pools are reused across loops and sessions; dropping a session while its pool spins does not deadlock",
          .enabled(if: EnginePaths.exists(EnginePaths.fmnistModel), "../shared absent"))
    func reuseAcrossSessions() throws {
        let x = Tensor(shape: [4, 1, 28, 28], data: (0..<(4 * 784)).map { Float(($0 * 37) % 255) / 255 })
        let reference = try InferenceSession(modelPath: EnginePaths.fmnistModel.path, options: SessionOptions(threads: 1))
            .run(["input": x])["logits"]!
        let before = WorkerPool.statistics.pools
        for i in 0..<30 {
            // A new session each time, dropped right after its run, while its pool's threads still spin.
            let s = try InferenceSession(modelPath: EnginePaths.fmnistModel.path, options: SessionOptions(threads: 2 + i % 2))
            #expect(try s.run(["input": x])["logits"]!.data == reference.data)
        }
        for _ in 0..<100 { runWorkers(2) { _ in } }
        // Without reuse every loop would make a pool; other tests running at the same time may take
        // a few of their own.
        #expect(WorkerPool.statistics.pools - before <= 8)
    }
}
