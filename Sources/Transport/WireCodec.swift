import Calibration
import Foundation

/// Why an incoming message was rejected. Each case names what was wrong; `code` is the short
/// machine-readable word sent back in an ERROR message.
public enum WireError: Error, Equatable, CustomStringConvertible, Sendable {
    case empty
    /// Frame 0 is not a shardcal protocol tag at all (shows what it was).
    case notShardcal(found: String)
    /// Frame 0 is a shardcal tag of another protocol version.
    case wrongProtocolVersion(expected: String, found: String)
    case unknownType(String)
    case frameCount(type: String, expected: Int, found: Int)
    case oversized(type: String, what: String, bytes: Int, limit: Int)
    case malformed(type: String, reason: String)

    public var code: String {
        switch self {
        case .empty, .notShardcal: "not_shardcal"
        case .wrongProtocolVersion: "wrong_version"
        case .unknownType: "unknown_type"
        case .frameCount, .malformed: "malformed"
        case .oversized: "oversized"
        }
    }

    public var description: String {
        switch self {
        case .empty: return "empty message (no frames)"
        case .notShardcal(let found): return "not a shardcal message: frame 0 is \(found), expected \(WireCodec.tagString)"
        case let .wrongProtocolVersion(expected, found):
            return "protocol version mismatch: expected \(expected), message has \(found)"
        case .unknownType(let t): return "unknown message type \(t)"
        case let .frameCount(type, expected, found):
            return "\(type) message has \(found) frames, expected \(expected)"
        case let .oversized(type, what, bytes, limit):
            return "\(type) message too large: \(what) is \(bytes) bytes, limit \(limit)"
        case let .malformed(type, reason): return "malformed \(type) message: \(reason)"
        }
    }
}

/// Size limits applied while decoding (the socket's ZMQ_MAXMSGSIZE is the outer fence per frame).
public struct WireLimits: Sendable, Equatable {
    /// Largest JSON control body.
    public var maxControlBytes: Int
    /// Largest RESULT histogram payload.
    public var maxResultBytes: Int
    /// Largest number of tensors in one RESULT.
    public var maxTensors: Int
    /// Largest JOB config + model.
    public var maxJobBytes: Int

    public init(maxControlBytes: Int = 1 << 20, maxResultBytes: Int = 64 << 20, maxTensors: Int = 65_536,
                maxJobBytes: Int = 2 << 30) {
        self.maxControlBytes = maxControlBytes
        self.maxResultBytes = maxResultBytes
        self.maxTensors = maxTensors
        self.maxJobBytes = maxJobBytes
    }

    public static let `default` = WireLimits()

    /// The per-frame ZMQ_MAXMSGSIZE a coordinator's ROUTER should set for these limits.
    public var coordinatorMaxFrameBytes: Int64 { Int64(max(maxControlBytes, maxResultBytes)) }
}

/// Encodes and decodes protocol messages to and from ZeroMQ frames (routing frames excluded).
///
/// Every message is `[tag, TYPE, body...]`: `tag` = "SHC" + protocol version ("SHC2"), `TYPE` an
/// upper-case ASCII word. Control bodies are one UTF-8 JSON frame; RESULT carries a JSON header and
/// one compact binary frame; JOB a JSON header, the config bytes and the model bytes.
public enum WireCodec {
    /// 2: histogram payloads use encoding version 2 (3-byte counts); 1 had widths 1, 2, 4 and 8 only.
    public static let protocolVersion = 2
    public static let tagPrefix = "SHC"
    public static let tagString = "SHC\(protocolVersion)"
    public static let tag: [UInt8] = Array(tagString.utf8)
    public static let publishType = "PUBLISH"

    // MARK: encode

    public static func encode(_ message: WireMessage) -> [[UInt8]] {
        let type = Array(message.typeName.utf8)
        switch message {
        case .hello(let m): return [tag, type, json(m)]
        case .ready(let m): return [tag, type, json(m)]
        // The two messages sent once per shard, written directly (same bytes as JSONEncoder with sorted keys).
        case .lease(let m): return [tag, type, Array(#"{"end":\#(m.end),"shard":\#(m.shard),"start":\#(m.start)}"#.utf8)]
        case .ack(let m): return [tag, type, Array(#"{"duplicate":\#(m.duplicate),"shard":\#(m.shard)}"#.utf8)]
        case .fail(let m): return [tag, type, json(m)]
        case .refuse(let m): return [tag, type, json(m)]
        case .error(let m): return [tag, type, json(m)]
        case .done(let m): return [tag, type, json(m)]
        case .statusReply(let m): return [tag, type, json(m)]
        case .heartbeat, .statusRequest: return [tag, type]
        case .job(let j):
            let header = Job.Header(job_id: j.jobID, tool_version: j.toolVersion, model_digest: j.modelDigest,
                                    config_digest: j.configDigest, heartbeat_interval_ms: j.heartbeatIntervalMs,
                                    liveness_timeout_ms: j.livenessTimeoutMs, model_included: !j.model.isEmpty,
                                    config_base_directory: j.configBaseDirectory)
            return [tag, type, json(header), j.config, j.model]
        case .result(let r):
            let header = ShardResult.Header(shard: r.shard, sample_count: r.sampleCount,
                                            compute_seconds: r.computeSeconds, tensor_count: r.tensorCount,
                                            skipped: r.skipped.isEmpty ? nil : r.skipped)
            return [tag, type, json(header), r.encoded.map { Array($0.bytes) } ?? encodeTensors(r.tensors)]
        }
    }

    /// Binary RESULT payload: per tensor, u32 name length, UTF-8 name, then the histogram's compact coding.
    public static func encodeTensors(_ tensors: [NamedHistogram]) -> [UInt8] {
        var w = ByteWriter(capacity: tensors.reduce(0) { $0 + 96 + $1.name.utf8.count + $1.histogram.counts.count * 4 })
        for t in tensors {
            w.writeString(t.name)
            t.histogram.encode(into: &w)
        }
        return w.bytes
    }

    /// `[topic, tag, "PUBLISH", summary JSON, cache, table]`: topic first so SUB sockets can filter on it.
    public static func encode(_ p: Publication) -> [[UInt8]] {
        [Array(p.topic.utf8), tag, Array(publishType.utf8), p.summary, p.cache, p.table]
    }

    // MARK: decode

    /// Checks frame 0 and returns the type word.
    public static func checkTag(_ frames: [[UInt8]], tagIndex: Int = 0) throws(WireError) -> String {
        guard frames.count > tagIndex else { throw .empty }
        let t = frames[tagIndex]
        if t != tag {
            let prefix = Array(tagPrefix.utf8)
            if t.count > prefix.count, t.count <= 8, Array(t.prefix(prefix.count)) == prefix {
                throw .wrongProtocolVersion(expected: tagString, found: preview(t))
            }
            throw .notShardcal(found: preview(t))
        }
        guard frames.count > tagIndex + 1 else { throw .frameCount(type: "(untyped)", expected: 2, found: frames.count - tagIndex) }
        let typeFrame = frames[tagIndex + 1]
        guard typeFrame.count <= 32, let type = String(bytes: typeFrame, encoding: .utf8),
              type.allSatisfy({ $0.isASCII && ($0.isUppercase || $0 == "-") }) else {
            throw .unknownType(preview(typeFrame))
        }
        return type
    }

    /// Decodes a message received with `ZMQSocket.receive(dontWait:largeFrameBytes:)`: frames kept
    /// in libzmq's buffers are in `large` (their slot in `frames` is empty). A RESULT's histogram
    /// payload is validated and kept where it is; any other large frame is copied in first.
    /// `checkingCountSums: false` leaves one check of a RESULT to the merge (see
    /// `EncodedHistograms.countSumsChecked`): a coordinator checks it while adding the counts.
    public static func decode(_ frames: [[UInt8]], large: [Int: Data], limits: WireLimits = .default,
                              checkingCountSums: Bool = true) throws(WireError) -> WireMessage {
        if large.isEmpty { return try decode(frames, limits: limits, resultPayload: nil, checkingCountSums: checkingCountSums) }
        var all = frames
        var payload: Data? = nil
        let isResult = large[0] == nil && large[1] == nil && (try? checkTag(frames)) == "RESULT"
        for (i, data) in large where i < all.count {
            if isResult && i == 3 { payload = data } else { all[i] = Array(data) }
        }
        return try decode(all, limits: limits, resultPayload: payload, checkingCountSums: checkingCountSums)
    }

    public static func decode(_ frames: [[UInt8]], limits: WireLimits = .default) throws(WireError) -> WireMessage {
        try decode(frames, limits: limits, resultPayload: nil)
    }

    static func decode(_ frames: [[UInt8]], limits: WireLimits, resultPayload: Data?,
                       checkingCountSums: Bool = true) throws(WireError) -> WireMessage {
        let type = try checkTag(frames)
        func expectFrames(_ n: Int) throws(WireError) {
            if frames.count != n { throw .frameCount(type: type, expected: n, found: frames.count) }
        }
        func body<T: Decodable>(_: T.Type) throws(WireError) -> T {
            try expectFrames(3)
            return try decodeJSON(T.self, frames[2], type: type, limits: limits)
        }
        switch type {
        case "HELLO": return .hello(try body(Hello.self))
        case "READY":
            let r = try body(Ready.self)
            if r.credits < 0 || r.credits > 1024 { throw .malformed(type: type, reason: "credits \(r.credits) outside 0...1024") }
            return .ready(r)
        case "LEASE":
            let l = try body(Lease.self)
            if l.shard < 0 || l.start < 0 || l.end < l.start {
                throw .malformed(type: type, reason: "shard \(l.shard) range \(l.start)..<\(l.end) is invalid")
            }
            return .lease(l)
        case "ACK": return .ack(try body(Ack.self))
        case "FAIL": return .fail(try body(Fail.self))
        case "REFUSE": return .refuse(try body(Refuse.self))
        case "ERROR": return .error(try body(ErrorReport.self))
        case "DONE": return .done(try body(Done.self))
        case "STATUS-REPLY": return .statusReply(try body(StatusReport.self))
        case "HEARTBEAT":
            try expectFrames(2)
            return .heartbeat
        case "STATUS":
            try expectFrames(2)
            return .statusRequest
        case "JOB":
            try expectFrames(5)
            let h = try decodeJSON(Job.Header.self, frames[2], type: type, limits: limits)
            let size = frames[3].count + frames[4].count
            if size > limits.maxJobBytes { throw .oversized(type: type, what: "config + model", bytes: size, limit: limits.maxJobBytes) }
            if h.model_included == frames[4].isEmpty {
                throw .malformed(type: type, reason: "header says model_included=\(h.model_included) but the model frame has \(frames[4].count) bytes")
            }
            return .job(Job(jobID: h.job_id, toolVersion: h.tool_version, modelDigest: h.model_digest,
                            configDigest: h.config_digest, heartbeatIntervalMs: h.heartbeat_interval_ms,
                            livenessTimeoutMs: h.liveness_timeout_ms, config: frames[3], model: frames[4],
                            configBaseDirectory: h.config_base_directory ?? ""))
        case "RESULT":
            try expectFrames(4)
            let h = try decodeJSON(ShardResult.Header.self, frames[2], type: type, limits: limits)
            if h.shard < 0 { throw .malformed(type: type, reason: "negative shard id \(h.shard)") }
            if h.tensor_count < 0 || h.tensor_count > limits.maxTensors {
                throw .oversized(type: type, what: "tensor count", bytes: h.tensor_count, limit: limits.maxTensors)
            }
            let payload = resultPayload ?? Data(frames[3])
            if payload.count > limits.maxResultBytes {
                throw .oversized(type: type, what: "histogram payload", bytes: payload.count, limit: limits.maxResultBytes)
            }
            let tensors: EncodedHistograms
            do { tensors = try EncodedHistograms(validating: payload, count: h.tensor_count, checkingCountSums: checkingCountSums) } catch {
                throw .malformed(type: type, reason: error.description)
            }
            let skipped = h.skipped ?? []
            if skipped.count > h.sample_count {
                throw .malformed(type: type, reason: "\(skipped.count) skipped samples in a shard of \(h.sample_count)")
            }
            return .result(ShardResult(shard: h.shard, sampleCount: h.sample_count, computeSeconds: h.compute_seconds,
                                       encoded: tensors, skipped: skipped))
        default:
            throw .unknownType(type)
        }
    }

    /// Decodes a RESULT payload of exactly `count` tensors into values; every histogram is validated.
    /// (`decode` keeps RESULT payloads encoded instead: see `EncodedHistograms`.)
    public static func decodeTensors(_ bytes: [UInt8], count: Int) throws(WireError) -> [NamedHistogram] {
        do { return try EncodedHistograms(validating: bytes, count: count).decoded() } catch {
            throw .malformed(type: "RESULT", reason: error.description)
        }
    }

    public static func decodePublication(_ frames: [[UInt8]]) throws(WireError) -> Publication {
        guard !frames.isEmpty else { throw .empty }
        let type = try checkTag(frames, tagIndex: 1)
        guard type == publishType else { throw .unknownType(type) }
        if frames.count != 6 { throw .frameCount(type: type, expected: 6, found: frames.count) }
        guard let topic = String(bytes: frames[0], encoding: .utf8) else {
            throw .malformed(type: type, reason: "topic is not UTF-8")
        }
        return Publication(topic: topic, summary: frames[3], cache: frames[4], table: frames[5])
    }

    // MARK: helpers

    static func json<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding our own plain structs cannot fail (no floats that are NaN are produced here).
        return (try? Array(encoder.encode(value))) ?? Array("{}".utf8)
    }

    static func decodeJSON<T: Decodable>(_: T.Type, _ bytes: [UInt8], type: String, limits: WireLimits) throws(WireError) -> T {
        if bytes.count > limits.maxControlBytes {
            throw .oversized(type: type, what: "JSON body", bytes: bytes.count, limit: limits.maxControlBytes)
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch let Swift.DecodingError.keyNotFound(key, _) {
            throw .malformed(type: type, reason: "missing field \(key.stringValue)")
        } catch let Swift.DecodingError.typeMismatch(_, ctx) {
            throw .malformed(type: type, reason: "wrong type at \(ctx.codingPath.map(\.stringValue).joined(separator: "."))")
        } catch {
            throw .malformed(type: type, reason: "body is not valid JSON (\(bytes.count) bytes)")
        }
    }

    /// A short printable rendering of untrusted bytes for error messages.
    public static func preview(_ bytes: [UInt8]) -> String {
        let head = bytes.prefix(16)
        if !head.isEmpty, head.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) {
            return "\"\(String(decoding: head, as: UTF8.self))\"" + (bytes.count > 16 ? "… (\(bytes.count) bytes)" : "")
        }
        return "0x" + head.map { String(format: "%02x", $0) }.joined() + (bytes.count > 16 ? "… (\(bytes.count) bytes)" : "") +
            (bytes.isEmpty ? " (empty)" : "")
    }
}
