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

    /// Four 1-sample shards; a (credit 1) finishes shards 0, 2 and 3 in 0.1 s each (10 samples/s),
    /// while b (credit 1) still holds shard 1, leased at time 0 and not finished.
    func stragglerScenario(backupLeases: Bool) -> Scheduler {
        var s = Scheduler(shards: ShardSpec.plan(sampleCount: 4, shardSize: 1), livenessTimeout: 5, backupLeases: backupLeases)
        s.admit(a, name: "a", now: 0)
        s.admit(b, name: "b", now: 0)
        s.setWindow(a, credits: 1, now: 0)
        s.setWindow(b, credits: 1, now: 0)
        #expect(s.assign(now: 0).map(\.shard.id) == [0, 1])
        #expect(s.complete(shard: 0, from: a, samples: 1, computeSeconds: 0.1, now: 0.1) == .merge)
        #expect(s.assign(now: 0.1).map(\.shard.id) == [2])
        #expect(s.complete(shard: 2, from: a, samples: 1, computeSeconds: 0.1, now: 0.2) == .merge)
        #expect(s.assign(now: 0.2).map(\.shard.id) == [3])
        #expect(s.complete(shard: 3, from: a, samples: 1, computeSeconds: 0.1, now: 0.3) == .merge)
        return s
    }

    @Test("backup leases: an idle worker gets a copy of a straggler's shard only when it would clearly finish first; the first copy merges, the other is dropped")
    func backupLeases() {
        var s = stragglerScenario(backupLeases: true)
        // At 0.3 s b has run 0.3 s without a result: it is expected to need >= 0.3 s more; a needs
        // 0.1 s. 0.3 > 1.25 x 0.1 but the gain (0.2 s) is only just the minimum: nudge time past it.
        #expect(s.assign(now: 0.29).isEmpty, "gain 0.19 s < 0.2 s")
        let backup = s.assign(now: 0.35)
        #expect(backup.count == 1 && backup.first?.worker == a && backup.first?.shard.id == 1)
        #expect(s.backups[1]?.worker == a && s.leases[1]?.worker == b)
        #expect(s.assign(now: 0.4).isEmpty, "one backup per shard, one lease per credit")
        #expect(s.complete(shard: 1, from: a, samples: 1, computeSeconds: 0.1, now: 0.45) == .merge)
        #expect(s.isFinished && s.backups.isEmpty && s.leases.isEmpty)
        #expect(s.workers[a]!.leased.isEmpty && s.workers[b]!.leased.isEmpty)
        // b's copy arrives later: expected, not a duplicate; a third copy would be one.
        #expect(s.complete(shard: 1, from: b, samples: 1, computeSeconds: 2, now: 2) == .backupLost)
        #expect(s.complete(shard: 1, from: b, samples: 1, computeSeconds: 2, now: 2) == .duplicate)
        // Off: the same history gives no backup.
        var off = stragglerScenario(backupLeases: false)
        #expect(off.assign(now: 5).isEmpty)
    }

    @Test("backup leases follow the holders' recent speed: a holder slower by little keeps its shard alone")
    func backupLeasesUseRecentRates() {
        // Shards of 4 samples. a: 40 samples/s (0.1 s per shard). b's last shard ran at rate r_b.
        func scenario(bSecondsPerShard: Double) -> Scheduler {
            var s = Scheduler(shards: ShardSpec.plan(sampleCount: 16, shardSize: 4), livenessTimeout: 5, backupLeases: true)
            s.admit(a, name: "a", now: 0)
            s.admit(b, name: "b", now: 0)
            s.setWindow(a, credits: 1, now: 0)
            s.setWindow(b, credits: 1, now: 0)
            #expect(s.assign(now: 0).map(\.shard.id) == [0, 1])
            #expect(s.complete(shard: 1, from: b, samples: 4, computeSeconds: bSecondsPerShard, now: 1) == .merge)
            #expect(s.assign(now: 1).map(\.shard.id) == [2])  // b: shard 2 from t = 1
            #expect(s.complete(shard: 0, from: a, samples: 4, computeSeconds: 0.1, now: 1.05) == .merge)
            #expect(s.assign(now: 1.05).map(\.shard.id) == [3])
            #expect(s.complete(shard: 3, from: a, samples: 4, computeSeconds: 0.1, now: 1.1) == .merge)
            return s
        }
        // b needs 1 s per shard: 0.9 s left at t = 1.1, against a's 0.1 s.
        var slow = scenario(bSecondsPerShard: 1)
        #expect(slow.assign(now: 1.1).map { [$0.worker == a ? "a" : "b": $0.shard.id] } == [["a": 2]])
        // b needs 0.3 s per shard: 0.2 s left, a gain of 0.1 s: not worth a backup.
        var close = scenario(bSecondsPerShard: 0.3)
        #expect(close.assign(now: 1.1).isEmpty)
    }

    @Test("a straggler that dies or fails leaves its shard to the backup, not to the queue; losing the backup's worker leaves the original")
    func backupSurvivesItsOriginal() {
        var s = stragglerScenario(backupLeases: true)
        #expect(s.assign(now: 0.5).map(\.shard.id) == [1])
        #expect(s.remove(b) == [], "nothing goes back to the queue: a computes shard 1")
        #expect(s.pendingCount == 0 && s.leases[1]?.worker == a && s.backups.isEmpty)
        #expect(s.complete(shard: 1, from: a, samples: 1, computeSeconds: 0.1, now: 0.6) == .merge)
        #expect(s.isFinished)

        var f = stragglerScenario(backupLeases: true)
        #expect(f.assign(now: 0.5).map(\.shard.id) == [1])
        #expect(f.fail(shard: 1, from: b, now: 0.55) == .retry(attempts: 1))
        #expect(f.pendingCount == 0 && f.leases[1]?.worker == a)

        var g = stragglerScenario(backupLeases: true)
        #expect(g.assign(now: 0.5).map(\.shard.id) == [1])
        #expect(g.remove(a) == [])
        #expect(g.pendingCount == 0 && g.leases[1]?.worker == b && g.backups.isEmpty)
        #expect(g.complete(shard: 1, from: b, samples: 1, computeSeconds: 1, now: 1) == .merge)
    }

    @Test("a shard leased ahead is timed from its holder's previous report, not from its lease")
    func backupTimesQueuedLeases() {
        // Eight 4-sample shards; a (credit 1) takes 0.1 s per shard, b (credit 2) 1 s.
        var s = Scheduler(shards: ShardSpec.plan(sampleCount: 32, shardSize: 4), livenessTimeout: 5, backupLeases: true)
        s.admit(a, name: "a", now: 0)
        s.admit(b, name: "b", now: 0)
        s.setWindow(a, credits: 1, now: 0)
        s.setWindow(b, credits: 2, now: 0)
        #expect(s.assign(now: 0).map(\.shard.id) == [0, 1, 2])   // a: 0; b: 1, and 2 waiting behind it
        #expect(s.complete(shard: 1, from: b, samples: 4, computeSeconds: 1, now: 1) == .merge)
        #expect(s.complete(shard: 0, from: a, samples: 4, computeSeconds: 0.1, now: 1) == .merge)
        #expect(s.assign(now: 1).map(\.shard.id) == [3, 4])      // a: 3; b: 4, behind 2, which starts now
        var t = 1.0
        for (shard, next) in [(3, 5), (5, 6), (6, 7), (7, 4)] {
            t += 0.1
            #expect(s.complete(shard: shard, from: a, samples: 4, computeSeconds: 0.1, now: t) == .merge)
            #expect(s.assign(now: t).map(\.shard.id) == [next], "at \(t)")
        }
        // At 1.4 s a ran dry and took a backup of shard 4 (b starts it at 2 s, done at 3 s).
        #expect(s.backups[4]?.worker == a)
        #expect(s.complete(shard: 4, from: a, samples: 4, computeSeconds: 0.1, now: 1.5) == .merge)
        // Shard 2 started at 1.0 (b's report), not at its lease (0): 0.5 s left against a's 0.1 s.
        #expect(s.assign(now: 1.5).map { [$0.worker == a ? "a" : "b": $0.shard.id] } == [["a": 2]])
    }

    @Test("a holder overdue on its shard (stalled, stopped) is estimated late by as much again: a backup follows")
    func backupForOverdueHolder() {
        // Shards of 4 samples. b: 1 s per shard; a: 0.9 s, too close to b for a backup while b is on time.
        var s = Scheduler(shards: ShardSpec.plan(sampleCount: 12, shardSize: 4), livenessTimeout: 60, backupLeases: true)
        s.admit(a, name: "a", now: 0)
        s.admit(b, name: "b", now: 0)
        s.setWindow(a, credits: 1, now: 0)
        s.setWindow(b, credits: 1, now: 0)
        #expect(s.assign(now: 0).map(\.shard.id) == [0, 1])
        #expect(s.complete(shard: 1, from: b, samples: 4, computeSeconds: 1, now: 1) == .merge)
        #expect(s.assign(now: 1).map(\.shard.id) == [2])         // b: shard 2, due at t = 2
        #expect(s.complete(shard: 0, from: a, samples: 4, computeSeconds: 0.9, now: 1) == .merge)
        #expect(s.assign(now: 1).isEmpty, "1 s left against a's 0.9 s")
        #expect(s.assign(now: 2).isEmpty, "due now")
        #expect(s.assign(now: 3).isEmpty, "1 s late: estimated 1 s more, against 0.9 s")
        // 1.2 s late: estimated 1.2 s more > 1.25 x 0.9 s, and 0.3 s gained.
        #expect(s.assign(now: 3.2).map { [$0.worker == a ? "a" : "b": $0.shard.id] } == [["a": 2]])
    }
}
