import Logging

/// A calibration data source, in the spirit of TensorRT's `IInt8Calibrator`
/// (`getBatchSize` / `getBatch`): it knows how many samples it has and their
/// shape, and fills a float32 buffer with any run of sample indices.
///
/// Contract:
/// - Deterministic: the same indices always produce the same bits, on every
///   machine, in any order and with any batching.
/// - `buffer` must hold at least `indices.count * sampleElementCount` floats.
/// - Samples that load are written **contiguously from the start of `buffer`,
///   in index order**; the report says which indices they are
///   (`report.loadedIndices`). With fail-fast (the default) every index loads
///   or the call throws a ``DataError`` naming the file and index; with
///   skip-and-count, unreadable samples are left out and listed in
///   `report.skipped`.
/// - Implementations must be safe to call from several threads at once.
public protocol CalibrationDataset: Sendable {
    /// Number of samples (indices `0 ..< sampleCount`).
    var sampleCount: Int { get }
    /// Shape of one sample, without the batch axis, e.g. `[1, 28, 28]` or `[3, 224, 224]`.
    var sampleShape: [Int] { get }
    /// Loads `indices` into `buffer`; see the protocol's contract.
    func loadSamples(_ indices: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>) throws -> SampleLoadReport
}

extension CalibrationDataset {
    /// Number of floats in one sample (product of `sampleShape`).
    public var sampleElementCount: Int { sampleShape.reduce(1, *) }

    /// Convenience: loads `indices` into a new array (packed as in `loadSamples`).
    public func loadSamples(_ indices: Range<Int>) throws -> ([Float], SampleLoadReport) {
        var out = [Float](repeating: 0, count: indices.count * sampleElementCount)
        let report = try out.withUnsafeMutableBufferPointer { try loadSamples(indices, into: $0) }
        out.removeLast(out.count - report.loadedIndices.count * sampleElementCount)
        return (out, report)
    }
}

/// A dataset that also carries integer class labels (IDX label files), for evaluation.
public protocol LabeledCalibrationDataset: CalibrationDataset {
    /// The label of sample `index`.
    func label(at index: Int) throws -> Int
}

/// What to do with a sample that cannot be read (missing, truncated, not an image, wrong shape).
public enum CorruptSamplePolicy: String, Sendable, Hashable, CaseIterable, Codable {
    /// Throw a ``DataError`` naming the file and index (default).
    case failFast = "fail-fast"
    /// Leave the sample out, list it in ``SampleLoadReport/skipped`` and go on.
    case skipAndCount = "skip-and-count"
}

/// A sample left out under ``CorruptSamplePolicy/skipAndCount``.
public struct SkippedSample: Sendable, Hashable, Codable, CustomStringConvertible {
    public var index: Int
    public var path: String
    public var reason: String
    public init(index: Int, path: String, reason: String) {
        self.index = index
        self.path = path
        self.reason = reason
    }
    public var description: String { "sample \(index) (\(path)): \(reason)" }
}

/// The outcome of one ``CalibrationDataset/loadSamples(_:into:)`` call.
public struct SampleLoadReport: Sendable, Hashable, Codable {
    /// Indices whose data were written, in order, packed from the start of the buffer.
    public var loadedIndices: [Int]
    /// Indices left out under skip-and-count, with reasons.
    public var skipped: [SkippedSample]
    public init(loadedIndices: [Int] = [], skipped: [SkippedSample] = []) {
        self.loadedIndices = loadedIndices
        self.skipped = skipped
    }
    public var loadedCount: Int { loadedIndices.count }
    /// Merges reports of consecutive calls.
    public mutating func append(_ other: SampleLoadReport) {
        loadedIndices += other.loadedIndices
        skipped += other.skipped
    }
}

/// Errors of the data layer. Every case names the file and, where there is one, the sample index.
public enum DataError: Error, Sendable, Hashable, CustomStringConvertible {
    case fileNotFound(path: String, index: Int?)
    case unreadable(path: String, index: Int?, reason: String)
    case corruptSample(path: String, index: Int, reason: String)
    case wrongShape(path: String, index: Int, expected: [Int], actual: [Int])
    case invalidFormat(path: String, reason: String)
    case indexOutOfRange(index: Int, sampleCount: Int)
    case bufferTooSmall(needed: Int, available: Int)
    case emptyDataset(path: String)
    case unsupported(String)

    public var description: String {
        switch self {
        case let .fileNotFound(path, index):
            return "\(path): file not found" + (index.map { " (sample \($0))" } ?? "")
        case let .unreadable(path, index, reason):
            return "\(path): cannot read" + (index.map { " sample \($0)" } ?? "") + ": \(reason)"
        case let .corruptSample(path, index, reason):
            return "\(path): sample \(index) is corrupt: \(reason)"
        case let .wrongShape(path, index, expected, actual):
            return "\(path): sample \(index) has shape \(actual), expected \(expected)"
        case let .invalidFormat(path, reason):
            return "\(path): \(reason)"
        case let .indexOutOfRange(index, count):
            return "sample index \(index) out of range 0..<\(count)"
        case let .bufferTooSmall(needed, available):
            return "buffer holds \(available) floats, \(needed) needed"
        case let .emptyDataset(path):
            return "\(path): dataset has no samples"
        case let .unsupported(what):
            return what
        }
    }

    /// The same error, attributed to sample `index` where the case carries one.
    func withIndex(_ index: Int) -> DataError {
        switch self {
        case let .fileNotFound(path, _): return .fileNotFound(path: path, index: index)
        case let .unreadable(path, _, reason): return .unreadable(path: path, index: index, reason: reason)
        case let .invalidFormat(path, reason): return .corruptSample(path: path, index: index, reason: reason)
        default: return self
        }
    }

    /// The sample index this error is about, if any (used for skip-and-count reports).
    var sampleIndex: Int? {
        switch self {
        case let .fileNotFound(_, i): return i
        case let .unreadable(_, i, _): return i
        case let .corruptSample(_, i, _), let .wrongShape(_, i, _, _): return i
        default: return nil
        }
    }
}

/// Fixed shards of a dataset: shard `k` is indices `k*shardSize ..< min((k+1)*shardSize, sampleCount)`.
/// Computed from two integers only, so every machine derives the same plan.
public struct ShardPlan: Sendable, Hashable, Codable {
    public let shardSize: Int
    /// Sample counts of the plan's segments, in index order. A first run has one segment; each
    /// resume with a larger dataset appends one for the new samples, so the shards an earlier
    /// state merged keep their ids and index ranges (even a short last shard), and new shards
    /// only cover new samples.
    public let segments: [Int]

    public init(sampleCount: Int, shardSize: Int) throws {
        try self.init(segments: sampleCount == 0 ? [] : [sampleCount], shardSize: shardSize)
    }

    /// A plan of several segments (see ``segments``).
    public init(segments: [Int], shardSize: Int) throws {
        if let bad = segments.first(where: { $0 <= 0 }) {
            throw DataError.unsupported(bad < 0 ? "sample count \(bad) is negative" : "a plan segment cannot be empty")
        }
        guard shardSize > 0 else { throw DataError.unsupported("shard size must be positive, got \(shardSize)") }
        self.segments = segments
        self.shardSize = shardSize
    }

    public var sampleCount: Int { segments.reduce(0, +) }

    /// Shards of a segment of `count` samples (the last may be shorter).
    private func shards(in count: Int) -> Int { (count + shardSize - 1) / shardSize }

    /// First shard id and first sample of each segment (derived: segments are few).
    private var segmentStarts: [(shard: Int, sample: Int)] {
        var starts: [(shard: Int, sample: Int)] = []
        var shard = 0, sample = 0
        for count in segments {
            starts.append((shard, sample))
            shard += shards(in: count)
            sample += count
        }
        return starts
    }

    /// This plan with a segment for samples `sampleCount ..< newCount` appended (itself when equal).
    public func extended(to newCount: Int) throws -> ShardPlan {
        guard newCount >= sampleCount else {
            throw DataError.unsupported("the dataset has \(newCount) samples, fewer than the \(sampleCount) already planned")
        }
        return newCount == sampleCount ? self : try ShardPlan(segments: segments + [newCount - sampleCount], shardSize: shardSize)
    }

    /// Number of shards (the last of each segment may be shorter).
    public var shardCount: Int { segments.reduce(0) { $0 + shards(in: $1) } }

    /// The index range of shard `shard` (`0 ..< shardCount`).
    public func range(ofShard shard: Int) -> Range<Int> {
        precondition(shard >= 0 && shard < shardCount, "shard \(shard) out of range 0..<\(shardCount)")
        let starts = segmentStarts
        let s = starts.lastIndex { $0.shard <= shard }!
        let start = starts[s].sample + (shard - starts[s].shard) * shardSize
        return start ..< min(start + shardSize, starts[s].sample + segments[s])
    }

    /// All shard ranges in order.
    public var ranges: [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(shardCount)
        var start = 0
        for count in segments {
            let end = start + count
            for lo in stride(from: start, to: end, by: shardSize) { out.append(lo ..< min(lo + shardSize, end)) }
            start = end
        }
        return out
    }

    /// The shard holding sample `index`.
    public func shard(containing index: Int) -> Int {
        precondition(index >= 0 && index < sampleCount, "index \(index) out of range 0..<\(sampleCount)")
        let s = segmentStarts.last { $0.sample <= index }!
        return s.shard + (index - s.sample) / shardSize
    }

    /// The segments as text for a state file's info (`"1000,500"`), and back.
    public var segmentsText: String { segments.map(String.init).joined(separator: ",") }
    public init(segmentsText: String, shardSize: Int) throws {
        let parts = segmentsText.split(separator: ",").map { Int(String($0)) }
        guard !parts.isEmpty, parts.allSatisfy({ $0 != nil }) else {
            throw DataError.unsupported("plan segments '\(segmentsText)' are not a list of sample counts")
        }
        try self.init(segments: parts.map { $0! }, shardSize: shardSize)
    }

    enum CodingKeys: String, CodingKey { case segments, shardSize = "shard_size" }
    /// Decoding validates like ``init(segments:shardSize:)``.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(segments: try c.decode([Int].self, forKey: .segments), shardSize: try c.decode(Int.self, forKey: .shardSize))
    }
}

/// Shared helper: runs `body` per index under a corrupt-sample policy, packing successful samples.
func loadPacked(
    _ indices: Range<Int>,
    sampleCount: Int,
    elementCount: Int,
    policy: CorruptSamplePolicy,
    buffer: UnsafeMutableBufferPointer<Float>,
    logger: Logger?,
    pathOf: (Int) -> String,
    body: (Int, UnsafeMutableBufferPointer<Float>) throws -> Void
) throws -> SampleLoadReport {
    let needed = indices.count * elementCount
    guard buffer.count >= needed else { throw DataError.bufferTooSmall(needed: needed, available: buffer.count) }
    guard indices.lowerBound >= 0 else { throw DataError.indexOutOfRange(index: indices.lowerBound, sampleCount: sampleCount) }
    guard indices.upperBound <= sampleCount else {
        throw DataError.indexOutOfRange(index: indices.upperBound - 1, sampleCount: sampleCount)
    }
    var report = SampleLoadReport()
    report.loadedIndices.reserveCapacity(indices.count)
    var slot = 0
    for index in indices {
        let dst = UnsafeMutableBufferPointer(rebasing: buffer[slot * elementCount ..< (slot + 1) * elementCount])
        do {
            try body(index, dst)
            report.loadedIndices.append(index)
            slot += 1
        } catch let error as DataError {
            guard policy == .skipAndCount, error.sampleIndex != nil else { throw error }
            logger?.warning("skipping sample", metadata: ["index": "\(index)", "error": "\(error)"])
            report.skipped.append(SkippedSample(index: index, path: pathOf(index), reason: "\(error)"))
        }
    }
    return report
}
