import Calibration
import Foundation
import Testing
@testable import Transport

private func histogram(_ values: [Float]) -> Histogram {
    var h = Histogram()
    h.accumulate(values)
    return h
}

private let sampleTensors = [
    NamedHistogram(name: "conv1/out", histogram: histogram([0, 0.5, -1.25, 3, 7.5, -0.001])),
    NamedHistogram(name: "relu_2", histogram: histogram((0..<5000).map { Float($0 % 97) * 0.37 - 11 })),
    NamedHistogram(name: "empty", histogram: Histogram()),
    NamedHistogram(name: "nonfinite", histogram: histogram([.nan, .infinity, -.infinity, 2])),
]

@Suite("wire codec")
struct WireCodecTests {
    @Test("frame layout is the documented one: tag SHC2, type word, sorted-key JSON")
    func documentedLayout() throws {
        #expect(WireCodec.encode(.heartbeat) == [[0x53, 0x48, 0x43, 0x32], Array("HEARTBEAT".utf8)])
        let lease = WireCodec.encode(.lease(Lease(shard: 2, start: 10, end: 20)))
        #expect(lease.count == 3)
        #expect(String(decoding: lease[1], as: UTF8.self) == "LEASE")
        #expect(String(decoding: lease[2], as: UTF8.self) == #"{"end":20,"shard":2,"start":10}"#)
        let ack = WireCodec.encode(.ack(Ack(shard: 7, duplicate: true)))
        #expect(String(decoding: ack[2], as: UTF8.self) == #"{"duplicate":true,"shard":7}"#)
    }

    @Test("every message type round-trips")
    func roundTrips() throws {
        let messages: [WireMessage] = [
            .hello(Hello(toolVersion: "0.1.0", workerID: "host-12-0", modelDigest: nil, cachedModels: ["abc"])),
            .hello(Hello(toolVersion: "0.1.0", workerID: "w", modelDigest: String(repeating: "f", count: 64))),
            .job(Job(jobID: "j1", toolVersion: "0.1.0", modelDigest: "d", configDigest: "c", heartbeatIntervalMs: 500,
                     livenessTimeoutMs: 3000, config: Array("shard_size: 8\n".utf8), model: [1, 2, 3, 0, 255])),
            .job(Job(jobID: "j1", toolVersion: "0.1.0", modelDigest: "d", configDigest: "c", heartbeatIntervalMs: 500,
                     livenessTimeoutMs: 3000, config: [], model: [])),
            .ready(Ready(credits: 2, modelDigest: "d")),
            .lease(Lease(shard: 3, start: 24, end: 32)),
            .result(ShardResult(shard: 3, sampleCount: 8, computeSeconds: 0.25, tensors: sampleTensors)),
            .result(ShardResult(shard: 0, sampleCount: 0, computeSeconds: 0, tensors: [])),
            .result(ShardResult(shard: 2, sampleCount: 8, computeSeconds: 0.5, tensors: sampleTensors,
                                skipped: [SkippedSampleRecord(index: 17, file: "/data/a \"b\".jpg", reason: "truncated")])),
            .ack(Ack(shard: 3, duplicate: false)),
            .fail(Fail(shard: 4, file: "/data/img_0042.jpg", reason: "JPEG header truncated")),
            .fail(Fail(shard: 4, file: nil, reason: "out of memory")),
            .heartbeat,
            .refuse(Refuse(field: "model_digest", expected: "aaa", found: "bbb")),
            .error(ErrorReport(code: "malformed", reason: "x")),
            .done(Done(outcome: "finished")),
            .statusRequest,
            .statusReply(StatusReport(jobID: "j", phase: "running", shardsTotal: 10, shardsDone: 4, shardsLeased: 2,
                                      shardsPending: 4, samplesDone: 32, elapsedSeconds: 1.5, samplesPerSecond: 21.25,
                                      etaSeconds: nil,
                                      workers: [.init(id: "w1", leased: [4, 5], done: 4, samplesPerSecond: 21.25,
                                                      lastSeenSecondsAgo: 0.1)],
                                      counters: ["malformed": 1])),
        ]
        for m in messages {
            let frames = WireCodec.encode(m)
            #expect(frames[0] == Array("SHC2".utf8))
            #expect(try WireCodec.decode(frames) == m, "\(m.typeName)")
        }
    }

    @Test("RESULT keeps tensor order and every histogram exactly, counts included")
    func resultPayloadExact() throws {
        let frames = WireCodec.encode(.result(ShardResult(shard: 9, sampleCount: 3, computeSeconds: 1, tensors: sampleTensors)))
        guard case .result(let r) = try WireCodec.decode(frames) else { Issue.record("not a result"); return }
        #expect(r.tensors.map(\.name) == ["conv1/out", "relu_2", "empty", "nonfinite"])
        // Hand-known facts about the inputs, independent of the codec.
        #expect(r.tensors[0].histogram.valueCount == 6)
        #expect(r.tensors[0].histogram.zeroCount == 1)
        #expect(r.tensors[1].histogram.counts.reduce(0, +) == 5000)
        #expect(r.tensors[2].histogram.isEmpty)
        #expect(r.tensors[3].histogram.nanCount == 1)
        #expect(r.tensors[3].histogram.positiveInfinityCount == 1)
        #expect(r.tensors[3].histogram.negativeInfinityCount == 1)
        #expect(r.tensors == sampleTensors)
    }

    @Test("every truncation of a RESULT payload is rejected as malformed, never a crash")
    func truncation() throws {
        var frames = WireCodec.encode(.result(ShardResult(shard: 1, sampleCount: 1, computeSeconds: 0, tensors: sampleTensors)))
        let payload = frames[3]
        for cut in stride(from: 0, to: payload.count, by: max(1, payload.count / 200)) {
            frames[3] = Array(payload.prefix(cut))
            #expect(throws: WireError.self) { try WireCodec.decode(frames) }
            do { _ = try WireCodec.decode(frames) } catch { #expect(error.code == "malformed") }
        }
        // One extra byte is also wrong.
        frames[3] = payload + [0]
        #expect(throws: WireError.malformed(type: "RESULT", reason: "1 bytes after the last of 4 tensors")) {
            try WireCodec.decode(frames)
        }
    }

    @Test("wrong protocol version names both versions (a version-1 peer, whose histograms have no 3-byte counts)")
    func wrongVersion() throws {
        #expect(WireCodec.protocolVersion == 2)
        var frames = WireCodec.encode(.heartbeat)
        frames[0] = Array("SHC1".utf8)
        #expect(throws: WireError.wrongProtocolVersion(expected: "SHC2", found: "\"SHC1\"")) { try WireCodec.decode(frames) }
        do { _ = try WireCodec.decode(frames) } catch {
            #expect(error.description == "protocol version mismatch: expected SHC2, message has \"SHC1\"")
            #expect(error.code == "wrong_version")
        }
    }

    @Test("garbage, empty, unknown types, wrong frame counts and bad JSON get specific errors")
    func garbage() throws {
        #expect(throws: WireError.empty) { try WireCodec.decode([]) }
        #expect(throws: WireError.notShardcal(found: "0xdeadbeef")) { try WireCodec.decode([[0xde, 0xad, 0xbe, 0xef]]) }
        #expect(throws: WireError.notShardcal(found: "\"GET / HTTP/1.1\"")) { try WireCodec.decode([Array("GET / HTTP/1.1".utf8)]) }
        #expect(throws: WireError.unknownType("NOPE")) { try WireCodec.decode([WireCodec.tag, Array("NOPE".utf8)]) }
        #expect(throws: WireError.frameCount(type: "HEARTBEAT", expected: 2, found: 3)) {
            try WireCodec.decode([WireCodec.tag, Array("HEARTBEAT".utf8), []])
        }
        #expect(throws: WireError.malformed(type: "LEASE", reason: "missing field end")) {
            try WireCodec.decode([WireCodec.tag, Array("LEASE".utf8), Array(#"{"shard":1,"start":0}"#.utf8)])
        }
        #expect(throws: WireError.malformed(type: "LEASE", reason: "shard 1 range 5..<2 is invalid")) {
            try WireCodec.decode([WireCodec.tag, Array("LEASE".utf8), Array(#"{"shard":1,"start":5,"end":2}"#.utf8)])
        }
        #expect(throws: WireError.self) { try WireCodec.decode([WireCodec.tag, Array("ACK".utf8), [0xff, 0x00]]) }
    }

    @Test("oversized bodies are refused with the size and the limit")
    func oversized() throws {
        let limits = WireLimits(maxControlBytes: 64, maxResultBytes: 100, maxTensors: 2, maxJobBytes: 10)
        let fail = WireCodec.encode(.fail(Fail(shard: 1, file: nil, reason: String(repeating: "x", count: 100))))
        #expect(throws: WireError.oversized(type: "FAIL", what: "JSON body", bytes: fail[2].count, limit: 64)) {
            try WireCodec.decode(fail, limits: limits)
        }
        let result = WireCodec.encode(.result(ShardResult(shard: 1, sampleCount: 1, computeSeconds: 0, tensors: sampleTensors)))
        let headerRoom = WireLimits(maxControlBytes: 1024, maxResultBytes: 100, maxTensors: 2, maxJobBytes: 10)
        #expect(throws: WireError.oversized(type: "RESULT", what: "tensor count", bytes: 4, limit: 2)) {
            try WireCodec.decode(result, limits: headerRoom)
        }
        let fewTensors = WireLimits(maxControlBytes: 1024, maxResultBytes: 100, maxTensors: 100, maxJobBytes: 10)
        #expect(throws: WireError.oversized(type: "RESULT", what: "histogram payload", bytes: result[3].count, limit: 100)) {
            try WireCodec.decode(result, limits: fewTensors)
        }
        let job = WireCodec.encode(.job(Job(jobID: "j", toolVersion: "t", modelDigest: "m", configDigest: "c",
                                             heartbeatIntervalMs: 1, livenessTimeoutMs: 1, config: [1, 2, 3], model: Array(repeating: 7, count: 8))))
        #expect(throws: WireError.oversized(type: "JOB", what: "config + model", bytes: 11, limit: 10)) {
            try WireCodec.decode(job, limits: headerRoom)
        }
    }

    @Test("publication: topic first, then tag, round trip")
    func publication() throws {
        let p = Publication(topic: "shardcal.result.job1", summary: Array(#"{"tensors":2}"#.utf8),
                            cache: Array("TRT-8601-EntropyCalibration2\na: 3c010204\n".utf8), table: Array("{}".utf8))
        let frames = WireCodec.encode(p)
        #expect(frames[0] == Array("shardcal.result.job1".utf8))
        #expect(frames[1] == Array("SHC2".utf8))
        #expect(try WireCodec.decodePublication(frames) == p)
        var bad = frames
        bad[1] = Array("SHC9".utf8)
        #expect(throws: WireError.wrongProtocolVersion(expected: "SHC2", found: "\"SHC9\"")) { try WireCodec.decodePublication(bad) }
    }
}
