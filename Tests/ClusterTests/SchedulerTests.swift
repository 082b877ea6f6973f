@testable import Cluster
import Testing

@Suite("scheduler bookkeeping (no sockets)")
struct SchedulerTests {
    let a: [UInt8] = Array("a".utf8), b: [UInt8] = Array("b".utf8)

    @Test("credit windows bound the leases per worker; results free credit")
    func credits() {
        var s = Scheduler(shards: ShardSpec.plan(sampleCount: 10, shardSize: 2), livenessTimeout: 5)
        s.admit(a, name: "a", now: 0)
        s.admit(b, name: "b", now: 0)
        s.setWindow(a, credits: 2, now: 0)
        s.setWindow(b, credits: 1, now: 0)
        let first = s.assign(now: 0)
        #expect(first.count == 3)
        #expect(s.workers[a]!.leased.count == 2 && s.workers[b]!.leased.count == 1)
        #expect(s.assign(now: 0).isEmpty)
        #expect(s.complete(shard: first[0].shard.id, from: first[0].worker, samples: 2, computeSeconds: 0, now: 1) == .merge)
        #expect(s.assign(now: 1).count == 1)
        #expect(s.pendingCount == 1)
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
