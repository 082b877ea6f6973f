import Calibration
import CalibrationIO
@testable import Cluster
import Foundation
import Testing
import Transport

@Suite("coordinator + workers in-process over loopback", .serialized)
struct ClusterRunTests {
    static let samples = 61 // 16 shards of 4, the last one short
    static let shardSize = 4
    static let oracle = FakeModel.wholeDataset(sampleCount: samples)
    static let allShards = Set(0..<16)

    func expectMatchesOracle(_ r: CoordinatorResult) {
        #expect(r.state.shards == Self.allShards)
        #expect(r.state.tensorNames == FakeModel.tensorNames)
        for name in FakeModel.tensorNames {
            #expect(r.state.histograms[name] == Self.oracle[name], "tensor \(name)")
        }
        // The all-zero tensor: every value counted as an exact zero.
        #expect(r.state.histograms["all_zero"]?.zeroCount == UInt64(Self.samples * FakeModel.valuesPerSample))
        let oracleState = { () -> CalibrationState in
            var s = CalibrationState(toolVersion: "0.1.0-test", modelDigest: testDigest, configDigest: "cfg-1")
            try! s.merge(shard: 0, tensors: FakeModel.tensorNames.map { NamedHistogram(name: $0, histogram: Self.oracle[$0]!) })
            return s
        }()
        #expect(r.cacheText == CalibrationTable.compute(state: oracleState, method: .entropy).tensorRTCache().text())
    }

    @Test("merged state equals the whole-dataset histograms for 1, 2 and 4 workers, any completion order",
          arguments: [1, 2, 4])
    func workersGiveIdenticalResults(workers: Int) throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let (coordinator, endpoint, _) = try startCoordinator(makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize), context: ctx)
        var behaviours: [FakeComputer.Behaviour] = []
        var threads: [WorkerThread] = []
        for w in 0..<workers {
            let b = FakeComputer.Behaviour()
            // Seeded, shard-dependent delays: results arrive in a shuffled order.
            b.delayMicroseconds = { id in UInt32(((id &* 7919 &+ w &* 31) % 9) * 1500) }
            behaviours.append(b)
            threads.append(WorkerThread(context: ctx, endpoint: endpoint, name: "w\(w)", behaviour: b))
        }
        let result = try coordinator.wait()
        for t in threads {
            guard case .success(.finished)? = t.join() else { Issue.record("worker did not finish"); continue }
        }
        expectMatchesOracle(result)
        // Every shard computed (no failures, no expiries here); more than once only as a backup lease.
        let computed = behaviours.flatMap(\.computedIDs)
        #expect(Set(computed) == Set(0..<16))
        #expect(computed.count >= 16 && computed.count <= 16 + result.stats.backupLeases)
        #expect(result.stats.resultsMerged == 16)
        #expect(result.stats.duplicates == 0 && result.stats.malformed == 0)
    }

    @Test("a worker dying mid-shard: its lease expires, another worker takes the shard, same result")
    func workerDiesMidShard() throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        var cfg = makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize)
        cfg.backupLeases = false // the liveness path; `stragglerOvertakenByBackup` covers the other
        let (coordinator, endpoint, _) = try startCoordinator(cfg, context: ctx)
        let dying = FakeComputer.Behaviour()
        let blocked = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        dying.blockFirst = (blocked, release)
        let victim = WorkerThread(context: ctx, endpoint: endpoint, name: "victim", behaviour: dying, credits: 1)
        #expect(blocked.wait(timeout: .now() + 10) == .success)
        // Crash the victim while it holds a lease: no result, no more heartbeats.
        victim.worker.abandon()
        victim.join()
        let healthy = FakeComputer.Behaviour()
        let survivor = WorkerThread(context: ctx, endpoint: endpoint, name: "survivor", behaviour: healthy)
        let result = try coordinator.wait()
        release.signal()
        survivor.join()
        expectMatchesOracle(result)
        #expect(result.stats.expiredWorkers == 1)
        #expect(result.stats.events.contains { $0.contains("worker victim silent") })
        #expect(healthy.computedIDs.sorted() == Array(0..<16))
    }

    @Test("a worker stuck on its shard: once the queue is empty, an idle worker computes a backup copy and the run ends without waiting")
    func stragglerOvertakenByBackup() throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        var cfg = makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize)
        cfg.livenessTimeout = 30 // the straggler keeps heartbeating: only a backup can end this run in time
        let (coordinator, endpoint, _) = try startCoordinator(cfg, context: ctx, limit: 20)
        let stuck = FakeComputer.Behaviour()
        let blocked = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        stuck.blockFirst = (blocked, release)
        let straggler = WorkerThread(context: ctx, endpoint: endpoint, name: "straggler", behaviour: stuck, credits: 1)
        #expect(blocked.wait(timeout: .now() + 10) == .success)
        let fast = FakeComputer.Behaviour()
        fast.delayMicroseconds = { _ in 2000 }
        let helper = WorkerThread(context: ctx, endpoint: endpoint, name: "fast", behaviour: fast)
        let result = try coordinator.wait()
        release.signal()
        straggler.join()
        helper.join()
        expectMatchesOracle(result)
        #expect(result.stats.backupLeases == 1)
        #expect(result.stats.expiredWorkers == 0 && result.stats.duplicates == 0)
        #expect(stuck.computedIDs.isEmpty)
        #expect(fast.computedIDs.sorted() == Array(0..<16), "the fast worker computed every shard, the straggler's as a backup")
    }

    @Test("a duplicated result is acknowledged as duplicate and merged once")
    func duplicateResultDropped() throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        var cfg = makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize)
        cfg.livenessTimeout = 5
        let (coordinator, endpoint, _) = try startCoordinator(cfg, context: ctx)
        let peer = try RawPeer(context: ctx, endpoint: endpoint, id: "hand-driven")
        try peer.send(.hello(Hello(toolVersion: "0.1.0-test", workerID: "hand-driven")))
        guard case .job(let job)? = try peer.next() else { Issue.record("expected JOB"); return }
        #expect(job.modelDigest == testDigest)
        #expect(job.model == Array("fake model bytes".utf8))
        try peer.send(.ready(Ready(credits: 1, modelDigest: testDigest)))
        var acks: [Ack] = []
        var sentDuplicate = false
        loop: for _ in 0..<100 {
            guard let m = try peer.next() else { break }
            switch m {
            case .lease(let lease):
                let result = WireMessage.result(ShardResult(shard: lease.shard, sampleCount: lease.indices.count, computeSeconds: 0,
                                                            tensors: FakeModel.histograms(lease.indices)))
                try peer.send(result)
                if !sentDuplicate {
                    try peer.send(result)
                    sentDuplicate = true
                }
            case .ack(let a): acks.append(a)
            case .done: break loop
            default: break
            }
        }
        peer.close()
        let result = try coordinator.wait()
        expectMatchesOracle(result)
        #expect(result.stats.duplicates == 1)
        #expect(acks.filter(\.duplicate).count == 1)
        #expect(acks.filter { !$0.duplicate }.count == 16)
        #expect(acks.first(where: \.duplicate)?.shard == acks.first?.shard)
    }

    @Test("a result whose last counts do not sum to its value count is refused by the merge, nothing of it kept; the retry merges")
    func countSumCheckedByTheMerge() throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let (coordinator, endpoint, _) = try startCoordinator(makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize), context: ctx)
        let peer = try RawPeer(context: ctx, endpoint: endpoint, id: "hand-driven")
        try peer.send(.hello(Hello(toolVersion: "0.1.0-test", workerID: "hand-driven")))
        guard case .job? = try peer.next() else { Issue.record("expected JOB"); return }
        try peer.send(.ready(Ready(credits: 1, modelDigest: testDigest)))
        var leases = 0
        var corrupted: Int? = nil
        var errors: [ErrorReport] = []
        var acked: [Int] = []
        loop: for _ in 0..<200 {
            guard let m = try peer.next() else { break }
            switch m {
            case .lease(let lease):
                leases += 1
                let tensors = FakeModel.histograms(lease.indices)
                var payload = WireCodec.encodeTensors(tensors)
                if leases == 3 {
                    // The last count of the last tensor with bins ("all_zero" after it has none), one
                    // more: only the count sum is wrong, and it is the last count a merge reaches.
                    let end = WireCodec.encodeTensors(Array(tensors.prefix(4))).count
                    payload[end - 1] &+= 1
                    corrupted = lease.shard
                }
                let header = #"{"compute_seconds":0,"sample_count":\#(lease.indices.count),"shard":\#(lease.shard),"tensor_count":\#(tensors.count)}"#
                try peer.sendRaw([WireCodec.tag, Array("RESULT".utf8), Array(header.utf8), payload])
            case .ack(let a): acked.append(a.shard)
            case .error(let e): errors.append(e)
            case .done: break loop
            default: break
            }
        }
        peer.close()
        let result = try coordinator.wait()
        expectMatchesOracle(result)
        #expect(result.stats.malformed == 1)
        #expect(errors.count == 1)
        #expect(errors.first?.code == "malformed")
        #expect(errors.first?.reason.contains("shard \(corrupted ?? -1)") == true, "\(errors)")
        #expect(errors.first?.reason.contains("bins sum to") == true, "\(errors)")
        // Acknowledged once, after the retry merged.
        #expect(acked.filter { $0 == corrupted }.count == 1)
        #expect(Set(acked).count == 16)
    }

    @Test("a worker with another model digest is refused with both digests named; the run completes")
    func wrongModelRefused() throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let (coordinator, endpoint, _) = try startCoordinator(makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize), context: ctx)
        let impostor = try RawPeer(context: ctx, endpoint: endpoint, id: "impostor")
        try impostor.send(.hello(Hello(toolVersion: "0.1.0-test", workerID: "impostor", modelDigest: "sha256:other")))
        guard case .refuse(let refusal)? = try impostor.next() else { Issue.record("expected REFUSE"); return }
        #expect(refusal.field == "model_digest")
        #expect(refusal.expected == testDigest)
        #expect(refusal.found == "sha256:other")
        #expect(refusal.reason == "model digest mismatch: coordinator has \(testDigest), worker has sha256:other")

        // Another tool version through the real worker: refused, and the worker reports it.
        let old = WorkerThread(context: ctx, endpoint: endpoint, name: "old", behaviour: .init(), toolVersion: "0.0.9")
        guard case .success(.refused(let r))? = old.join() else { Issue.record("old worker not refused"); return }
        #expect(r.field == "tool_version" && r.expected == "0.1.0-test" && r.found == "0.0.9")

        impostor.close()
        let good = WorkerThread(context: ctx, endpoint: endpoint, name: "good", behaviour: .init())
        let result = try coordinator.wait()
        good.join()
        expectMatchesOracle(result)
        #expect(result.stats.refused == 2)
    }

    @Test("garbage frames are counted, answered with the reason, and the run still completes")
    func garbageFrames() throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let (coordinator, endpoint, _) = try startCoordinator(makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize), context: ctx)
        let vandal = try RawPeer(context: ctx, endpoint: endpoint, id: "vandal")
        try vandal.sendRaw([[0xde, 0xad, 0xbe, 0xef], [1, 2, 3]])
        guard case .error(let e1)? = try vandal.next() else { Issue.record("expected ERROR"); return }
        #expect(e1.code == "not_shardcal")
        #expect(e1.reason.contains("0xdeadbeef"))
        try vandal.sendRaw([Array("SHC9".utf8), Array("HELLO".utf8), Array("{}".utf8)])
        guard case .error(let e2)? = try vandal.next() else { Issue.record("expected ERROR"); return }
        #expect(e2.code == "wrong_version")
        #expect(e2.reason == "protocol version mismatch: expected SHC2, message has \"SHC9\"")
        try vandal.sendRaw([WireCodec.tag, Array("RESULT".utf8), Array(#"{"shard":1,"sample_count":4,"compute_seconds":0,"tensor_count":2}"#.utf8), [1, 2, 3]])
        guard case .error(let e3)? = try vandal.next() else { Issue.record("expected ERROR"); return }
        #expect(e3.code == "malformed")

        vandal.close()
        let worker = WorkerThread(context: ctx, endpoint: endpoint, name: "worker", behaviour: .init())
        let result = try coordinator.wait()
        worker.join()
        expectMatchesOracle(result)
        #expect(result.stats.malformed == 3)
    }

    @Test("a shard failing once is retried elsewhere; failing every time stops the run naming file and reason")
    func failures() throws {
        // Transient: completes, identical.
        do {
            let ctx = try ZMQContext()
            defer { ctx.terminate() }
            let (coordinator, endpoint, _) = try startCoordinator(makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize), context: ctx)
            let flaky = FakeComputer.Behaviour()
            flaky.failOnce = [5]
            // Both workers share the behaviour: whichever gets shard 5 first fails it once.
            let a = WorkerThread(context: ctx, endpoint: endpoint, name: "a", behaviour: flaky)
            let b = WorkerThread(context: ctx, endpoint: endpoint, name: "b", behaviour: flaky)
            let result = try coordinator.wait()
            a.join(); b.join()
            expectMatchesOracle(result)
            #expect(result.stats.failures == 1)
            #expect(Set(flaky.computedIDs) == Set(0..<16))
            #expect(flaky.computedIDs.count <= 16 + result.stats.backupLeases)
            #expect(result.stats.events.contains { $0.contains("shard 5 failed") && $0.contains("/data/flaky.png") && $0.contains("retrying elsewhere") })
        }
        // Permanent: the run stops with the file and reason.
        do {
            let ctx = try ZMQContext()
            defer { ctx.terminate() }
            var cfg = makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize)
            cfg.maxFailures = 3
            let (coordinator, endpoint, _) = try startCoordinator(cfg, context: ctx)
            let bad = FakeComputer.Behaviour()
            bad.alwaysFail = [7]
            let a = WorkerThread(context: ctx, endpoint: endpoint, name: "a", behaviour: bad)
            let b = WorkerThread(context: ctx, endpoint: endpoint, name: "b", behaviour: bad)
            #expect(throws: CoordinatorError.shardFailed(shard: 7, file: "/data/sample_28.jpg", reason: "JPEG data is truncated", attempts: 3)) {
                try coordinator.wait()
            }
            a.join(); b.join()
        }
    }

    @Test("a shard whose samples were all skipped merges as nothing, whenever it arrives; its samples are listed")
    func allSkippedShard() throws {
        for lastShard in [0, 15] {
            let ctx = try ZMQContext()
            defer { ctx.terminate() }
            let (coordinator, endpoint, _) = try startCoordinator(makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize), context: ctx)
            let b = FakeComputer.Behaviour()
            b.allSkipped = [3]
            // Shard 3 arrives first (no tensors merged yet) or after the others.
            b.delayMicroseconds = { id in id == 3 && lastShard == 15 ? 200_000 : 0 }
            let w = WorkerThread(context: ctx, endpoint: endpoint, name: "w", behaviour: b)
            let result = try coordinator.wait()
            w.join()
            #expect(result.state.shards == Self.allShards)
            #expect(result.stats.malformed == 0)
            #expect(result.state.skippedSamples.map(\.index) == Array(12..<16))
            // The oracle: every sample but 12..<16, built at once.
            var expected: [String: Histogram] = [:]
            for range in [0 ..< 12, 16 ..< Self.samples] {
                for t in FakeModel.histograms(range) { expected[t.name, default: Histogram()].merge(t.histogram) }
            }
            for name in FakeModel.tensorNames { #expect(result.state.histograms[name] == expected[name], "tensor \(name)") }
        }
    }

    @Test("a result with other tensors is dropped and counted as a failed attempt; repeated, the run stops naming it")
    func inconsistentResultsStopTheRun() throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        var cfg = makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize)
        cfg.maxFailures = 3
        let (coordinator, endpoint, _) = try startCoordinator(cfg, context: ctx)
        let b = FakeComputer.Behaviour()
        b.wrongTensors = [6]
        b.delayMicroseconds = { id in id == 6 ? 50_000 : 0 }  // shard 6 after some tensors are known
        let w1 = WorkerThread(context: ctx, endpoint: endpoint, name: "a", behaviour: b)
        let w2 = WorkerThread(context: ctx, endpoint: endpoint, name: "b", behaviour: b)
        do {
            _ = try coordinator.wait()
            Issue.record("the run must stop")
        } catch let CoordinatorError.shardFailed(shard, _, reason, attempts) {
            #expect(shard == 6 && attempts == 3)
            #expect(reason.contains("has other tensors") && reason.contains("not_in_the_model"), "\(reason)")
        }
        w1.join(); w2.join()
    }

    @Test("stop checkpoints atomically; --resume computes only the missing shards and gives the same result")
    func checkpointAndResume() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("shardcal-resume-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let statePath = dir + "/state.shcstate"
        let firstRun: Set<Int>
        do {
            let ctx = try ZMQContext()
            defer { ctx.terminate() }
            var cfg = makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize)
            cfg.checkpointPath = statePath
            cfg.checkpointEveryResults = 1
            let (coordinator, endpoint, _) = try startCoordinator(cfg, context: ctx)
            let slow = FakeComputer.Behaviour()
            slow.delayMicroseconds = { _ in 30_000 }
            let w = WorkerThread(context: ctx, endpoint: endpoint, name: "w", behaviour: slow, credits: 1)
            // Stop once a few shards are in (bounded wait).
            for _ in 0..<400 where (coordinator.status?.shardsDone ?? 0) < 5 { usleep(10_000) }
            coordinator.requestStop()
            do {
                _ = try coordinator.wait()
                Issue.record("expected an interruption")
            } catch let CoordinatorError.interrupted(done, total, checkpoint) {
                #expect(done >= 5 && done < 16)
                #expect(total == 16)
                #expect(checkpoint == statePath)
            }
            w.join()
            let saved = try StateFile.read(statePath)
            firstRun = saved.shards
            #expect(firstRun.count >= 5 && firstRun.count < 16)
        }
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        var cfg = makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize)
        cfg.resume = try StateFile.read(statePath)
        cfg.checkpointPath = statePath
        let (coordinator, endpoint, _) = try startCoordinator(cfg, context: ctx)
        let b = FakeComputer.Behaviour()
        let w = WorkerThread(context: ctx, endpoint: endpoint, name: "w2", behaviour: b)
        let result = try coordinator.wait()
        w.join()
        expectMatchesOracle(result)
        #expect(Set(b.computedIDs) == Self.allShards.subtracting(firstRun))
        #expect(b.computedIDs.count == 16 - firstRun.count)

        // A state from another model is refused, naming both digests.
        var other = cfg
        var foreign = CalibrationState(toolVersion: "x", modelDigest: "sha256:zzz", configDigest: "cfg-1")
        try foreign.merge(shard: 0, tensors: [])
        other.resume = foreign
        #expect(throws: CoordinatorError.resumeMismatch(field: "model digest", expected: testDigest, found: "sha256:zzz")) {
            _ = try Coordinator(config: other, context: ctx, logger: testLogger("c")).run()
        }
    }

    @Test("the result is published on PUB (topic, cache, table) and STATUS is answered")
    func publishAndStatus() throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        var cfg = makeCoordinatorConfig(sampleCount: Self.samples, shardSize: Self.shardSize)
        cfg.publishEndpoint = "tcp://127.0.0.1:*"
        cfg.publishTopic = "shardcal.result.test-job"
        cfg.publishHoldSeconds = 1.0
        let (coordinator, endpoint, pubEndpoint) = try startCoordinator(cfg, context: ctx)
        let sub = try ZMQSocket(ctx, type: .sub)
        try sub.setLinger(0)
        try sub.setReceiveTimeout(10_000)
        try sub.subscribe("shardcal.result.")
        try sub.connect(try #require(pubEndpoint))
        let client = try RawPeer(context: ctx, endpoint: endpoint, id: "status-client")
        try client.send(.statusRequest)
        guard case .statusReply(let s)? = try client.next() else { Issue.record("expected STATUS-REPLY"); return }
        #expect(s.shardsTotal == 16 && s.shardsDone == 0 && s.shardsPending == 16 && s.phase == "running")
        let w = WorkerThread(context: ctx, endpoint: endpoint, name: "w", behaviour: .init())
        let frames = try #require(try sub.receive())
        let publication = try WireCodec.decodePublication(frames)
        sub.close()
        client.close()
        let result = try coordinator.wait()
        w.join()
        #expect(publication.topic == "shardcal.result.test-job")
        #expect(String(decoding: publication.cache, as: UTF8.self) == result.cacheText)
        #expect(publication.table == result.table.json(extra: ["job_id": "test-job", "model_digest": testDigest, "config_digest": "cfg-1"]))
        let summary = try JSONSerialization.jsonObject(with: Data(publication.summary)) as? [String: Any]
        #expect(summary?["shards"] as? Int == 16)
        #expect(summary?["tensors"] as? Int == 5)
        expectMatchesOracle(result)
    }
}
