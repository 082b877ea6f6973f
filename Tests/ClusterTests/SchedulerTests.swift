@testable import Cluster
import Testing

@Suite("scheduler bookkeeping (no sockets)")
struct SchedulerTests {
    let a: [UInt8] = Array("a".utf8), b: [UInt8] = Array("b".utf8)

    /// `sampleCount` samples in shards of `shardSize`, workers a and b admitted at time 0 with
    /// these credit windows.
    func twoWorkers(sampleCount: Int, shardSize: Int = 1, credits: (a: Int, b: Int)) -> Scheduler {
        var s = Scheduler(shards: ShardSpec.plan(sampleCount: sampleCount, shardSize: shardSize), livenessTimeout: 5)
        s.admit(a, name: "a", now: 0)
        s.admit(b, name: "b", now: 0)
        s.setWindow(a, credits: credits.a, now: 0)
        s.setWindow(b, credits: credits.b, now: 0)
        return s
    }

    @Test("credit windows bound the leases per worker; results free credit")
    func credits() {
        var s = twoWorkers(sampleCount: 20, shardSize: 2, credits: (2, 1))
        let first = s.assign(now: 0)
        #expect(first.count == 3)
        #expect(s.workers[a]!.leased.count == 2 && s.workers[b]!.leased.count == 1)
        #expect(s.assign(now: 0).isEmpty)
        #expect(s.complete(shard: first[0].shard.id, from: first[0].worker, samples: 2, computeSeconds: 0, now: 1) == .merge)
        #expect(s.assign(now: 1).count == 1)
        #expect(s.pendingCount == 6)
    }

    @Test("near the end of the queue no worker is leased ahead: the last shards go to workers that run dry")
    func tail() {
        var s = twoWorkers(sampleCount: 7, credits: (2, 2))
        // 7 pending >= 4 credits: both fill their windows (least loaded first, ties by name).
        #expect(s.assign(now: 0).map { [$0.worker == a ? "a" : "b": $0.shard.id] } == [["a": 0], ["b": 1], ["a": 2], ["b": 3]])
        // a finishes shard 0 with 3 pending (< 4 credits): a still holds shard 2, so nothing more.
        #expect(s.complete(shard: 0, from: a, samples: 1, computeSeconds: 0, now: 1) == .merge)
        #expect(s.assign(now: 1).isEmpty)
        // a runs dry: one shard, not two.
        #expect(s.complete(shard: 2, from: a, samples: 1, computeSeconds: 0, now: 2) == .merge)
        #expect(s.assign(now: 2).map(\.shard.id) == [4])
        #expect(s.workers[a]!.leased == [4] && s.workers[b]!.leased == [1, 3])
        // b finishes one: it still holds another, so shards 5 and 6 wait for whoever runs dry.
        #expect(s.complete(shard: 1, from: b, samples: 1, computeSeconds: 0, now: 3) == .merge)
        #expect(s.assign(now: 3).isEmpty)
        #expect(s.complete(shard: 4, from: a, samples: 1, computeSeconds: 0, now: 4) == .merge)
        #expect(s.assign(now: 4).map(\.shard.id) == [5])
        #expect(s.complete(shard: 3, from: b, samples: 1, computeSeconds: 0, now: 5) == .merge)
        #expect(s.assign(now: 5).map(\.shard.id) == [6])
        #expect(s.pendingCount == 0 && s.workers[b]!.leased == [6])
    }

    @Test("liveness expiry returns the silent worker's shards first in line; late result still merges once")
    func expiry() {
        var s = Scheduler(shards: ShardSpec.plan(sampleCount: 6, shardSize: 2), livenessTimeout: 1)
        s.admit(a, name: "a", now: 0)
        s.setWindow(a, credits: 2, now: 0)
        #expect(s.assign(now: 0).map(\.shard.id) == [0, 1])
        let expired = s.expire(now: 1.5)
        #expect(expired.workers.map(\.name) == ["a"])
        #expect(expired.workers[0].shards == [0, 1])
        #expect(s.pending == [0, 1, 2])
        // A's result arrives late: still counts, exactly once.
        #expect(s.complete(shard: 0, from: a, samples: 2, computeSeconds: 0, now: 2) == .merge)
        #expect(s.pending == [1, 2])
        #expect(s.complete(shard: 0, from: a, samples: 2, computeSeconds: 0, now: 2) == .duplicate)
        #expect(s.complete(shard: 99, from: a, samples: 2, computeSeconds: 0, now: 2) == .unknownShard)
    }

    @Test("a failed shard goes to another worker; after maxFailures the run gives up")
    func failures() {
        var s = Scheduler(shards: ShardSpec.plan(sampleCount: 2, shardSize: 1), maxFailures: 2, livenessTimeout: 5)
        s.admit(a, name: "a", now: 0)
        s.setWindow(a, credits: 1, now: 0)
        #expect(s.assign(now: 0).map(\.shard.id) == [0])
        #expect(s.fail(shard: 0, from: a, now: 0) == .retry(attempts: 1))
        // a is the only worker: shard 1 is preferred for a, shard 0 waits for someone else.
        #expect(s.assign(now: 0).map(\.shard.id) == [1])
        s.admit(b, name: "b", now: 0)
        s.setWindow(b, credits: 1, now: 0)
        let next = s.assign(now: 0)
        #expect(next.count == 1 && next[0].worker == b && next[0].shard.id == 0)
        #expect(s.fail(shard: 0, from: b, now: 0) == .giveUp(attempts: 2))
    }

    @Test("resume: already merged shards are never scheduled")
    func resume() {
        var s = Scheduler(shards: ShardSpec.plan(sampleCount: 10, shardSize: 2), alreadyDone: [0, 2, 4], livenessTimeout: 5)
        #expect(s.pending == [1, 3])
        s.admit(a, name: "a", now: 0)
        s.setWindow(a, credits: 10, now: 0)
        #expect(s.assign(now: 0).map(\.shard.id) == [1, 3])
        #expect(ShardSpec.plan(sampleCount: 5, shardSize: 2).map(\.indices) == [0..<2, 2..<4, 4..<5])
    }
}
