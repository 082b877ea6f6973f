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
    public let sampleCount: Int
    public let shardSize: Int

    public init(sampleCount: Int, shardSize: Int) throws {
        guard sampleCount >= 0 else { throw DataError.unsupported("sample count \(sampleCount) is negative") }
        guard shardSize > 0 else { throw DataError.unsupported("shard size must be positive, got \(shardSize)") }
        self.sampleCount = sampleCount
        self.shardSize = shardSize
    }

    /// Number of shards (the last may be shorter).
    public var shardCount: Int { sampleCount == 0 ? 0 : (sampleCount + shardSize - 1) / shardSize }

    /// The index range of shard `shard` (`0 ..< shardCount`).
    public func range(ofShard shard: Int) -> Range<Int> {
        precondition(shard >= 0 && shard < shardCount, "shard \(shard) out of range 0..<\(shardCount)")
        let start = shard * shardSize
        return start ..< min(start + shardSize, sampleCount)
    }

    /// All shard ranges in order.
    public var ranges: [Range<Int>] { (0 ..< shardCount).map(range(ofShard:)) }

    /// The shard holding sample `index`.
    public func shard(containing index: Int) -> Int {
        precondition(index >= 0 && index < sampleCount, "index \(index) out of range 0..<\(sampleCount)")
        return index / shardSize
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
