import Calibration
import Transport

/// Computes the per-tensor histograms of one shard. Lives on the worker's compute thread only
/// (created there by a `ShardComputerFactory`), so it need not be `Sendable`.
///
/// Tensors must come back in a stable order (the model's graph order): the coordinator keeps the
/// first-seen order for the cache and table.
public protocol ShardComputer {
    func computeShard(id: Int, indices: Range<Int>) throws -> [NamedHistogram]
    /// The histograms plus the samples left out under the skip-and-count policy. The default
    /// implementation skips nothing.
    func computeShardReport(id: Int, indices: Range<Int>) throws -> ShardOutput
}

/// What a worker sends for one shard.
public struct ShardOutput {
    public var tensors: [NamedHistogram]
    public var skipped: [SkippedSampleRecord]
    public init(tensors: [NamedHistogram], skipped: [SkippedSampleRecord] = []) {
        self.tensors = tensors
        self.skipped = skipped
    }
}

extension ShardComputer {
    public func computeShardReport(id: Int, indices: Range<Int>) throws -> ShardOutput {
        ShardOutput(tensors: try computeShard(id: id, indices: indices))
    }
}

/// Builds a `ShardComputer` from the job the coordinator sent (config bytes and model bytes).
public protocol ShardComputerFactory: Sendable {
    func makeComputer(job: ReceivedJob) throws -> any ShardComputer
}

/// The job as a worker holds it after receiving it (model bytes resolved from the local cache if needed).
public struct ReceivedJob: Sendable {
    public var jobID: String
    public var modelDigest: String
    public var configDigest: String
    public var config: [UInt8]
    public var model: [UInt8]
    /// Path of the model in the worker's cache directory, when it has one.
    public var modelPath: String?
    /// Folder the config's relative paths resolve against.
    public var configBaseDirectory: String

    public init(jobID: String, modelDigest: String, configDigest: String, config: [UInt8], model: [UInt8], modelPath: String?,
                configBaseDirectory: String = "") {
        self.configBaseDirectory = configBaseDirectory
        self.jobID = jobID
        self.modelDigest = modelDigest
        self.configDigest = configDigest
        self.config = config
        self.model = model
        self.modelPath = modelPath
    }
}

/// An error that knows which input file caused it (e.g. an unreadable image). A worker reports
/// `failingFile` in its FAIL message, so the run's final error names the file.
public protocol FileNamingError: Error {
    var failingFile: String? { get }
}

/// A plain shard failure with an optional file name.
public struct ShardFailure: FileNamingError, CustomStringConvertible, Equatable {
    public var failingFile: String?
    public var reason: String
    public init(file: String?, reason: String) {
        self.failingFile = file
        self.reason = reason
    }
    public var description: String { failingFile.map { "\($0): \(reason)" } ?? reason }
}

/// A factory from a closure (handy in tests and for the CLI's wiring).
public struct ClosureShardComputerFactory: ShardComputerFactory {
    let body: @Sendable (ReceivedJob) throws -> any ShardComputer
    public init(_ body: @escaping @Sendable (ReceivedJob) throws -> any ShardComputer) { self.body = body }
    public func makeComputer(job: ReceivedJob) throws -> any ShardComputer { try body(job) }
}
