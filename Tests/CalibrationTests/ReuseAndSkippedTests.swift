import Foundation
import Testing
@testable import Calibration
@testable import CalibrationIO

@Suite struct SkippedSampleStateTests {
    static func record(_ i: Int) -> SkippedSampleRecord {
        SkippedSampleRecord(index: i, file: "/data/img_\(i).jpg", reason: "not a JPEG or PNG file")
    }

    @Test func skippedSamplesRoundTripAndMergeInIndexOrder() throws {
        var a = sampleState(shards: [])
        try a.merge(shard: 3, tensors: [], skipped: [Self.record(31), Self.record(30)])
        var b = sampleState(shards: [])
        try b.merge(shard: 0, tensors: [], skipped: [Self.record(2)])
        try b.merge(a)
        #expect(b.skippedSamples.map(\.index) == [2, 30, 31])
        let decoded = try CalibrationState(decoding: b.encoded())
        #expect(decoded.skippedSamples == b.skippedSamples)
        // Merge order does not change the bytes.
        var c = sampleState(shards: [])
        try c.merge(shard: 0, tensors: [], skipped: [Self.record(2)])
        var d = a
        try d.merge(c)
        #expect(d.encoded() == b.encoded())
        // A state without skipped samples carries no "skipped" key (files stay as before).
        let plain = sampleState(shards: [1])
        #expect(!String(decoding: plain.encoded(), as: UTF8.self).contains("\"skipped\""))
    }

    @Test func tableListsSkippedSamples() throws {
        var state = sampleState(shards: [0])
        try state.merge(shard: 1, tensors: [], skipped: [Self.record(7)])
        let table = CalibrationTable.compute(state: state, method: .entropy)
        let json = try JSONSerialization.jsonObject(with: Data(table.json(skippedSamples: state.skippedSamples))) as! [String: Any]
        let skipped = json["skipped_samples"] as! [[String: Any]]
        #expect(skipped.count == 1)
        #expect(skipped[0]["index"] as? Int == 7)
        #expect(skipped[0]["file"] as? String == "/data/img_7.jpg")
        #expect(skipped[0]["reason"] as? String == "not a JPEG or PNG file")
    }
}

@Suite struct ReuseDecisionTests {
    let dir: String = {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("shardcal-reuse-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }()

    func decide(_ state: String?, _ cache: String?, _ table: String?, model: String, config: String,
                shards: Set<Int>) throws -> ReuseDecision {
        try CalibrationReuse.decide(statePath: state, cachePath: cache, tablePath: table,
                                    modelDigest: model, configDigest: config, shardIDs: shards)
    }

    @Test func statesAreReusedOnlyForTheSameDigestsAndShards() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = sampleState(shards: [0, 1, 2])
        let path = dir + "/s.state"
        try StateFile.write(state, to: path)
        let m = state.modelDigest, c = state.configDigest
        guard case .completeState(let s, _) = try decide(path, nil, nil, model: m, config: c, shards: [0, 1, 2]) else {
            Issue.record("complete state not reused"); return
        }
        #expect(s == state)
        guard case .partialState = try decide(path, nil, nil, model: m, config: c, shards: [0, 1, 2, 3]) else {
            Issue.record("partial state not continued"); return
        }
        guard case .compute(let r1) = try decide(path, nil, nil, model: "other", config: c, shards: [0, 1, 2]) else {
            Issue.record("another model reused"); return
        }
        #expect(r1.contains("another model"))
        guard case .compute(let r2) = try decide(path, nil, nil, model: m, config: "other", shards: [0, 1, 2]) else {
            Issue.record("another config reused"); return
        }
        #expect(r2.contains("another configuration"))
        guard case .compute(let r3) = try decide(path, nil, nil, model: m, config: c, shards: [0, 1]) else {
            Issue.record("a state with foreign shards reused"); return
        }
        #expect(r3.contains("does not have (2)"))
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[40] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: FileError.self) { try decide(path, nil, nil, model: m, config: c, shards: [0, 1, 2]) }
    }

    @Test func aCacheIsReusedOnlyWithATableProvingItsDigests() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = sampleState(shards: [0])
        let table = CalibrationTable.compute(state: state, method: .entropy)
        let cache = dir + "/c.cache", json = dir + "/c.json"
        try AtomicFile.write(table.tensorRTCache().text(), to: cache)
        guard case .compute(let r0) = try decide(dir + "/none.state", cache, json, model: "m", config: "c", shards: [0]) else {
            Issue.record("a cache without a table reused"); return
        }
        #expect(r0.contains("no JSON table"))
        try AtomicFile.write(table.json(extra: ["model_digest": "m", "config_digest": "c"]), to: json)
        guard case .cache = try decide(dir + "/none.state", cache, json, model: "m", config: "c", shards: [0]) else {
            Issue.record("matching cache not reused"); return
        }
        guard case .compute = try decide(nil, cache, json, model: "m2", config: "c", shards: [0]) else {
            Issue.record("cache of another model reused"); return
        }
        guard case .compute(let r1) = try CalibrationReuse.decide(statePath: nil, cachePath: cache, tablePath: json, modelDigest: "m",
                                                                 configDigest: "c", shardIDs: [0], cacheVersion: "1001") else {
            Issue.record("cache with another header reused"); return
        }
        #expect(r1.contains("1001"))
        guard case .compute = try decide(nil, dir + "/absent.cache", json, model: "m", config: "c", shards: [0]) else {
            Issue.record("absent cache reused"); return
        }
    }
}
