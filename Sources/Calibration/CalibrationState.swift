import Crypto
import Foundation

/// One named tensor histogram, in the order the model produces tensors.
public struct NamedHistogram: Sendable, Equatable {
    public var name: String
    public var histogram: Histogram
    public init(name: String, histogram: Histogram) {
        self.name = name
        self.histogram = histogram
    }
}

public enum StateError: Error, Equatable, CustomStringConvertible {
    case shardAlreadyMerged([Int])
    case modelDigestMismatch(expected: String, found: String)
    case configDigestMismatch(expected: String, found: String)
    case resultRefused(shard: Int, reason: String)

    public var description: String {
        switch self {
        case .shardAlreadyMerged(let ids):
            let shown = ids.prefix(20).map(String.init).joined(separator: ", ")
            return "shard(s) already merged (merging again would double count): \(shown)\(ids.count > 20 ? ", … (\(ids.count) in all)" : "")"
        case let .modelDigestMismatch(expected, found):
            return "model digest mismatch: state has \(expected), other has \(found)"
        case let .configDigestMismatch(expected, found):
            return "config digest mismatch: state has \(expected), other has \(found)"
        case let .resultRefused(shard, reason):
            return "shard \(shard) refused: \(reason)"
        }
    }
}

/// A calibration sample left out under the skip-and-count policy (unreadable, wrong shape...).
public struct SkippedSampleRecord: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Index in the dataset.
    public var index: Int
    /// The file the sample comes from.
    public var file: String
    public var reason: String
    public init(index: Int, file: String, reason: String) {
        self.index = index
        self.file = file
        self.reason = reason
    }
    public var description: String { "sample \(index) (\(file)): \(reason)" }
}

/// Merged histograms of a calibration job plus what is needed to continue or audit it:
/// which shards are in, and digests of the model and of the result-affecting configuration.
public struct CalibrationState: Sendable, Equatable {
    public var toolVersion: String
    public var modelDigest: String
    public var configDigest: String
    /// Free-form metadata (dataset size, shard size, ...); merged by union, first value wins.
    public var info: [String: String]
    public private(set) var shards: Set<Int>
    /// Tensor names in first-seen order (results carry the model's graph order).
    public private(set) var tensorNames: [String]
    public private(set) var histograms: [String: Histogram]
    /// Samples the merged shards left out (skip-and-count policy), by dataset index.
    public private(set) var skippedSamples: [SkippedSampleRecord]

    public init(toolVersion: String, modelDigest: String, configDigest: String, info: [String: String] = [:]) {
        self.toolVersion = toolVersion
        self.modelDigest = modelDigest
        self.configDigest = configDigest
        self.info = info
        shards = []
        tensorNames = []
        histograms = [:]
        skippedSamples = []
    }

    /// Histograms in tensor order.
    public var orderedHistograms: [NamedHistogram] {
        tensorNames.map { NamedHistogram(name: $0, histogram: histograms[$0]!) }
    }

    /// Merges one shard's histograms. Throws (and changes nothing) if the shard is already in.
    public mutating func merge(shard: Int, tensors: [NamedHistogram], skipped: [SkippedSampleRecord] = []) throws(StateError) {
        if shards.contains(shard) { throw .shardAlreadyMerged([shard]) }
        shards.insert(shard)
        addTensors(tensors)
        addSkipped(skipped)
    }

    /// Keeps the list sorted by index whatever order shards arrive in (the outputs must not depend on it).
    private mutating func addSkipped(_ records: [SkippedSampleRecord]) {
        guard !records.isEmpty else { return }
        skippedSamples += records
        skippedSamples.sort { $0.index != $1.index ? $0.index < $1.index : ($0.file, $0.reason) < ($1.file, $1.reason) }
    }

    /// Merges another state (disjoint shards, same model and config). Changes nothing on error.
    public mutating func merge(_ other: CalibrationState) throws(StateError) {
        if other.modelDigest != modelDigest { throw .modelDigestMismatch(expected: modelDigest, found: other.modelDigest) }
        if other.configDigest != configDigest { throw .configDigestMismatch(expected: configDigest, found: other.configDigest) }
        let overlap = shards.intersection(other.shards)
        if !overlap.isEmpty { throw .shardAlreadyMerged(overlap.sorted()) }
        shards.formUnion(other.shards)
        addTensors(other.orderedHistograms)
        addSkipped(other.skippedSamples)
        for (key, value) in other.info where info[key] == nil { info[key] = value }
    }

    private mutating func addTensors(_ tensors: [NamedHistogram]) {
        for t in tensors {
            if histograms[t.name] == nil {
                tensorNames.append(t.name)
                histograms[t.name] = t.histogram
            } else {
                histograms[t.name]!.merge(t.histogram)
            }
        }
    }

    /// Merges one shard's histograms straight from their coding: the same state, bit for bit, as
    /// `merge(shard:tensors: encoded.decoded())`, without materialising the counts. Throws (and
    /// changes nothing) if the shard is already in, or if its counts do not sum to its value counts
    /// or would exceed UInt64 (`mergeChecking`).
    public mutating func merge(shard: Int, encoded: EncodedHistograms) throws(StateError) {
        if let why = try mergeChecking(encodedShards: [(shard, encoded)])[0] {
            throw .resultRefused(shard: shard, reason: why)
        }
    }

    /// The coordinator's merge of several shards at once, straight from their coding and tensor by
    /// tensor: each tensor's merged counts stay in cache while every shard's counts for it are
    /// added, instead of the whole state (tensors × bins × 8 bytes) streaming through memory once
    /// per shard; the same state, bit for bit, as merging the shards one after the other. It also
    /// checks what `EncodedHistograms(checkingCountSums: false)` left out, while it adds the counts
    /// (one pass over them), and refuses any count that would exceed UInt64. Returns the shards it refused, by index into `encodedShards`, with the reason; none of
    /// them leaves a trace in the state (a tensor whose layout they would widen is restored from a
    /// copy, the others have the counts taken out again), and the rest are merged. Throws (and
    /// changes nothing) if any shard is already in or listed twice.
    public mutating func mergeChecking(encodedShards: [(shard: Int, histograms: EncodedHistograms)]) throws(StateError) -> [Int: String] {
        var incoming = Set<Int>()
        var again: [Int] = []
        for (shard, _) in encodedShards where shards.contains(shard) || !incoming.insert(shard).inserted { again.append(shard) }
        if !again.isEmpty { throw .shardAlreadyMerged(again.sorted()) }
        var refused: [Int: String] = [:]
        // Each failed attempt refuses one more shard and leaves the state as it was: retry without it.
        while let (index, why) = mergeOrRollBack(encodedShards, skipping: refused) { refused[index] = why }
        for (i, entry) in encodedShards.enumerated() where refused[i] == nil { shards.insert(entry.shard) }
        return refused
    }

    private static func sameNames(_ entries: [EncodedHistograms.Entry], _ names: [String]) -> Bool {
        entries.count == names.count && zip(entries, names).allSatisfy { $0.name == $1 }
    }

    private enum Undo {
        /// The tensor was not in the state.
        case remove(String)
        /// The tensor's layout changed: the histogram before.
        case restore(String, Histogram)
        /// Same layout throughout: take these (shard index, entry index) counts out, restore the scalars.
        case subtract(String, Histogram.Scalars, [(Int, Int)])
    }

    /// Merges the shards not in `skipping`; on the first refused one, undoes everything and returns it.
    private mutating func mergeOrRollBack(_ batch: [(shard: Int, histograms: EncodedHistograms)],
                                          skipping: [Int: String]) -> (Int, String)? {
        let active = batch.indices.filter { skipping[$0] == nil }
        if active.isEmpty { return nil }
        // Tensor order as sequential merges would give: first-seen order across the shards.
        var order: [String] = []
        if tensorNames.isEmpty || !active.allSatisfy({ Self.sameNames(batch[$0].histograms.entries, tensorNames) }) {
            var known = Set(tensorNames)
            for r in active { for e in batch[r].histograms.entries where known.insert(e.name).inserted { order.append(e.name) } }
        }
        let all = tensorNames + order
        // Where each tensor sits in each shard: nil when at its position in `all` (the usual case:
        // every result lists the tensors in graph order), else by name.
        let lookups: [[String: Int]?] = batch.indices.map { r in
            skipping[r] != nil || Self.sameNames(batch[r].histograms.entries, all) ? nil
                : Dictionary(batch[r].histograms.names.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        }
        var undo: [Undo] = []
        undo.reserveCapacity(all.count)
        var failure: (Int, String)? = nil
        var items: [(Int, Int)] = []
        tensors: for (position, name) in all.enumerated() {
            items.removeAll(keepingCapacity: true)
            for r in active {
                if let lookup = lookups[r] {
                    if let i = lookup[name] { items.append((r, i)) }
                } else {
                    items.append((r, position))
                }
            }
            if items.isEmpty { continue }
            let before = histograms.removeValue(forKey: name)
            var merged = before ?? Histogram()
            // A copy only when the layout changes (rare once the run is under way): otherwise an
            // undo subtracts the counts again, and nothing is copied.
            let widens = before == nil || items.contains { merged.layoutChanges(for: batch[$0.0].histograms.entries[$0.1]) }
            let step: Undo = before == nil ? .remove(name) : widens ? .restore(name, before!) : .subtract(name, merged.scalars, [])
            var added: [(Int, Int)] = []
            for (r, i) in items {
                let h = batch[r].histograms
                let why = h.bytes.withUnsafeBytes { merged.mergeChecking(h.entries[i], bytes: $0) }
                if let why {
                    failure = (r, "tensor \(name): \(why)")
                    break
                }
                added.append((r, i))
            }
            if case .subtract(let n, let scalars, _) = step {
                undo.append(.subtract(n, scalars, added))
            } else {
                undo.append(step)
            }
            histograms[name] = merged
            if failure != nil { break tensors }
        }
        guard let failure else {
            tensorNames += order
            return nil
        }
        for step in undo.reversed() {
            switch step {
            case .remove(let name):
                histograms[name] = nil
            case .restore(let name, let h):
                histograms[name] = h
            case .subtract(let name, let scalars, let added):
                var h = histograms.removeValue(forKey: name)!
                for (r, i) in added {
                    let e = batch[r].histograms
                    e.bytes.withUnsafeBytes { h.unmergeCounts(e.entries[i], bytes: $0) }
                }
                h.restoreScalars(scalars)
                histograms[name] = h
            }
        }
        return failure
    }

    // MARK: - File format

    /// ```
    /// 8    magic "SHCSTATE"
    /// u16  format version (1)
    /// u64  total length of the file in bytes (checksum included)
    /// u32  header length, header (UTF-8 JSON: tool_version, model_digest, config_digest,
    ///      shards as [[first, last], ...] inclusive runs, tensor_count, info, and `skipped`
    ///      [{index, file, reason}] when samples were skipped)
    /// per tensor: u32 name length, name (UTF-8), u32 histogram length, histogram (see Histogram coding)
    /// 32   SHA-256 of every byte before it
    /// ```
    public static let magic: [UInt8] = Array("SHCSTATE".utf8)
    public static let formatVersion: UInt16 = 1

    struct Header: Codable {
        var tool_version: String
        var model_digest: String
        var config_digest: String
        var shards: [[Int]]
        var tensor_count: Int
        var info: [String: String]
        /// Absent when no sample was skipped (and in files written before it existed).
        var skipped: [SkippedSampleRecord]?
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 1024 + histograms.count * 8192)
        w.write(CalibrationState.magic)
        w.write(CalibrationState.formatVersion)
        let lengthOffset = w.bytes.count
        w.write(UInt64(0))
        let header = Header(tool_version: toolVersion, model_digest: modelDigest, config_digest: configDigest,
                            shards: CalibrationState.runs(of: shards).map { [$0.lowerBound, $0.upperBound] },
                            tensor_count: tensorNames.count, info: info,
                            skipped: skippedSamples.isEmpty ? nil : skippedSamples)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        w.writeBlob(Array(try! encoder.encode(header)))
        for name in tensorNames {
            w.writeString(name)
            w.writeBlob(histograms[name]!.encoded())
        }
        var bytes = w.bytes
        let total = UInt64(bytes.count + 32)
        withUnsafeBytes(of: total.littleEndian) { raw in
            for i in 0..<8 { bytes[lengthOffset + i] = raw[i] }
        }
        bytes.append(contentsOf: SHA256.hash(data: bytes))
        return bytes
    }

    public init(decoding bytes: [UInt8]) throws(StateFormatError) {
        let fixed = CalibrationState.magic.count + 2 + 8
        if bytes.count < fixed + 32 {
            if bytes.count >= CalibrationState.magic.count, Array(bytes.prefix(8)) != CalibrationState.magic {
                throw .notAStateFile
            }
            throw .truncated(expected: nil, actual: bytes.count)
        }
        if Array(bytes.prefix(8)) != CalibrationState.magic { throw .notAStateFile }
        var reader = ByteReader(bytes, offset: 8)
        do {
            let version = try reader.read(UInt16.self, "format version")
            if version != CalibrationState.formatVersion {
                throw StateFormatError.unsupportedVersion(found: Int(version), supported: Int(CalibrationState.formatVersion))
            }
            let declared = try reader.read(UInt64.self, "file length")
            if declared != UInt64(bytes.count) {
                if declared > UInt64(bytes.count) { throw StateFormatError.truncated(expected: Int(clamping: declared), actual: bytes.count) }
                throw StateFormatError.damaged("file is \(bytes.count) bytes but its header says \(declared)")
            }
            let body = bytes[0..<(bytes.count - 32)]
            let stored = Array(bytes.suffix(32))
            let computed = Array(SHA256.hash(data: body))
            if stored != computed {
                throw StateFormatError.checksumMismatch(stored: hex(stored), computed: hex(computed))
            }
            let headerBytes = try reader.readBlob("header")
            let header: Header
            do {
                header = try JSONDecoder().decode(Header.self, from: Data(headerBytes))
            } catch {
                throw StateFormatError.damaged("header is not valid: \(error)")
            }
            self.init(toolVersion: header.tool_version, modelDigest: header.model_digest,
                      configDigest: header.config_digest, info: header.info)
            for run in header.shards {
                guard run.count == 2, run[0] <= run[1], run[0] >= 0 else {
                    throw StateFormatError.damaged("shard run \(run) is not [first, last]")
                }
                shards.formUnion(run[0]...run[1])
            }
            addSkipped(header.skipped ?? [])
            for index in 0..<header.tensor_count {
                let name = try reader.readString("name of tensor \(index)")
                let blob = try reader.readBlob("histogram of tensor '\(name)'")
                let histogram: Histogram
                do {
                    histogram = try Histogram(decoding: blob)
                } catch {
                    throw StateFormatError.damaged("histogram of tensor '\(name)': \(error)")
                }
                if histograms[name] != nil { throw StateFormatError.damaged("tensor '\(name)' appears twice") }
                tensorNames.append(name)
                histograms[name] = histogram
            }
            if reader.remaining != 32 {
                throw StateFormatError.damaged("\(reader.remaining - 32) unexpected bytes after the last tensor")
            }
        } catch let error as StateFormatError {
            throw error
        } catch {
            throw .damaged("\(error)")
        }
    }

    /// Inclusive runs of consecutive ids, ascending.
    public static func runs(of ids: Set<Int>) -> [ClosedRange<Int>] {
        var result: [ClosedRange<Int>] = []
        for id in ids.sorted() {
            if let last = result.last, last.upperBound + 1 == id {
                result[result.count - 1] = last.lowerBound...id
            } else {
                result.append(id...id)
            }
        }
        return result
    }
}

public enum StateFormatError: Error, Equatable, CustomStringConvertible {
    case notAStateFile
    case unsupportedVersion(found: Int, supported: Int)
    case truncated(expected: Int?, actual: Int)
    case checksumMismatch(stored: String, computed: String)
    case damaged(String)

    public var description: String {
        switch self {
        case .notAStateFile:
            return "not a shardcal state file (magic bytes 'SHCSTATE' missing)"
        case let .unsupportedVersion(found, supported):
            return "state file format version \(found) is not supported (this shardcal reads version \(supported))"
        case let .truncated(expected, actual):
            if let expected { return "state file is truncated: \(actual) of \(expected) bytes present" }
            return "state file is truncated: only \(actual) bytes"
        case let .checksumMismatch(stored, computed):
            return "state file is damaged: SHA-256 checksum mismatch (stored \(stored.prefix(16))…, computed \(computed.prefix(16))…)"
        case .damaged(let why):
            return "state file is damaged: \(why)"
        }
    }
}

/// Lowercase hex of bytes.
public func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}
