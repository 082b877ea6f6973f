import Calibration

/// A calibration job, as described by one YAML file (see `Config/demo.yaml` and
/// `Config/example-imagenet.yaml` for every key). Load with ``JobConfig/load(path:overrides:checkFiles:)``;
/// every problem in the file is reported at once as ``JobConfigError/invalid(_:)``.
///
/// Paths in the file are relative to the file's folder; after loading, the `path` fields hold
/// resolved paths (the text as written stays in ``JobConfig/rawPaths`` for the digest).
public struct JobConfig: Sendable {
    public var model: ModelConfig
    public var dataset: DatasetConfig
    /// Samples per shard (fixed index ranges, see ``ShardPlan``).
    public var shardSize: Int
    /// Samples per forward pass.
    public var batchSize: Int
    /// Threshold methods to compute; the first one is the primary (cache) result.
    public var methods: [CalibrationMethod]
    public var tensors: TensorSelection
    public var outputs: OutputConfig
    public var cluster: ClusterConfig
    /// Folder of the config file; relative paths are resolved against it.
    public var baseDirectory: String
    /// The YAML file, if loaded from one.
    public var sourcePath: String?
    /// Where each key path was written (line, column), for messages of later checks.
    public var locations: [String: ConfigLocation]
    /// Paths exactly as written (key path -> text), e.g. `"dataset.path"`.
    public var rawPaths: [String: String]
    var sourceTree: SourceTree?
    /// The tree after overrides (what ``effectiveYAML`` writes).
    var effectiveTree: SourceTree?

    /// The plan of fixed shards for `sampleCount` samples.
    init(model: ModelConfig, dataset: DatasetConfig, shardSize: Int, batchSize: Int, methods: [CalibrationMethod],
         tensors: TensorSelection, outputs: OutputConfig, cluster: ClusterConfig, baseDirectory: String,
         sourcePath: String?, locations: [String: ConfigLocation], rawPaths: [String: String]) {
        self.model = model
        self.dataset = dataset
        self.shardSize = shardSize
        self.batchSize = batchSize
        self.methods = methods
        self.tensors = tensors
        self.outputs = outputs
        self.cluster = cluster
        self.baseDirectory = baseDirectory
        self.sourcePath = sourcePath
        self.locations = locations
        self.rawPaths = rawPaths
    }

    public func shardPlan(sampleCount: Int) throws -> ShardPlan {
        try ShardPlan(sampleCount: sampleCount, shardSize: shardSize)
    }
}

public struct ModelConfig: Sendable, Hashable {
    /// Resolved path of the ONNX file.
    public var path: String
    /// Expected sha256 (lower-case hex) of the model file, checked before any work when set.
    public var sha256: String?
    /// Graph input(s) fed with the dataset's samples (empty: the model's single input).
    public var inputs: [String]
}

public enum DatasetKind: String, Sendable, Hashable, CaseIterable, Codable {
    case imageFolder = "image-folder"
    case imageList = "image-list"
    case npy
    case idx
}

public struct DatasetConfig: Sendable, Hashable {
    public var kind: DatasetKind
    /// Resolved path: folder, list file, .npy or IDX file.
    public var path: String
    /// IDX label file (resolved), optional.
    public var labels: String?
    /// Use only the first `limit` samples.
    public var limit: Int?
    public var onCorrupt: CorruptSamplePolicy
    /// File extensions an image folder is searched for.
    public var extensions: [String]
    /// Whether an image folder is searched recursively.
    public var recursive: Bool
    public var preprocessing: Preprocessing

    public init(kind: DatasetKind, path: String, labels: String? = nil, limit: Int? = nil,
                onCorrupt: CorruptSamplePolicy = .failFast, extensions: [String] = ["jpg", "jpeg", "png"],
                recursive: Bool = true, preprocessing: Preprocessing = Preprocessing()) {
        self.kind = kind
        self.path = path
        self.labels = labels
        self.limit = limit
        self.onCorrupt = onCorrupt
        self.extensions = extensions
        self.recursive = recursive
        self.preprocessing = preprocessing
    }
}

/// Which activation tensors to calibrate: all, or those matching `include` (when non-empty),
/// minus those matching `exclude`. Names may use `*` as a wildcard; op types match exactly.
public struct TensorSelection: Sendable, Hashable {
    public var includeNames: [String] = []
    public var includeOpTypes: [String] = []
    public var excludeNames: [String] = []
    public var excludeOpTypes: [String] = []

    public init(includeNames: [String] = [], includeOpTypes: [String] = [],
                excludeNames: [String] = [], excludeOpTypes: [String] = []) {
        self.includeNames = includeNames
        self.includeOpTypes = includeOpTypes
        self.excludeNames = excludeNames
        self.excludeOpTypes = excludeOpTypes
    }

    /// Whether the tensor `name`, produced by an op of type `opType` (nil for graph inputs), is calibrated.
    public func selects(name: String, opType: String?) -> Bool {
        let included = (includeNames.isEmpty && includeOpTypes.isEmpty)
            || includeNames.contains { wildcardMatch($0, name) }
            || (opType.map { includeOpTypes.contains($0) } ?? false)
        guard included else { return false }
        if excludeNames.contains(where: { wildcardMatch($0, name) }) { return false }
        if let opType, excludeOpTypes.contains(opType) { return false }
        return true
    }
}

/// `*` matches any run of characters; everything else literally.
func wildcardMatch(_ pattern: String, _ text: String) -> Bool {
    let p = Array(pattern.unicodeScalars), t = Array(text.unicodeScalars)
    var pi = 0, ti = 0, star = -1, mark = 0
    while ti < t.count {
        if pi < p.count, p[pi] != "*", p[pi] == t[ti] { pi += 1; ti += 1 }
        else if pi < p.count, p[pi] == "*" { star = pi; mark = ti; pi += 1 }
        else if star >= 0 { pi = star + 1; mark += 1; ti = mark }
        else { return false }
    }
    while pi < p.count, p[pi] == "*" { pi += 1 }
    return pi == p.count
}

public struct CacheHeaderConfig: Sendable, Hashable {
    /// TensorRT version number in the header, e.g. 8601 for `TRT-8601-EntropyCalibration2` (default 8601, as the Calibration module).
    public var tensorRTVersion: Int = 8601
    /// Algorithm name in the header.
    public var algorithm: String = "EntropyCalibration2"
    public static let knownAlgorithms = ["EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration"]
    /// The cache's first line, e.g. `TRT-8601-EntropyCalibration2`.
    public var headerLine: String { "TRT-\(tensorRTVersion)-\(algorithm)" }
    public init(tensorRTVersion: Int = 8601, algorithm: String = "EntropyCalibration2") {
        self.tensorRTVersion = tensorRTVersion
        self.algorithm = algorithm
    }
}

public struct OutputConfig: Sendable, Hashable {
    /// TensorRT calibration cache (resolved path), if wanted.
    public var cachePath: String?
    public var cacheHeader: CacheHeaderConfig = CacheHeaderConfig()
    /// JSON table of thresholds per tensor and method (also lists skipped samples).
    public var tablePath: String?
    /// Coordinator state file (merged histograms, completed shards) for resume and reuse.
    public var statePath: String?
    /// Skip calibration when a cache/state with the same model and config digests exists.
    public var reuse: Bool = false
}

public struct ClusterConfig: Sendable, Hashable {
    /// Coordinator's bind endpoint (e.g. `tcp://*:5555`).
    public var bind: String = "tcp://*:5555"
    /// Endpoint workers connect to (e.g. `tcp://coordinator-host:5555`).
    public var publish: String = "tcp://127.0.0.1:5555"
    /// Number of local worker processes to start (0: only remote workers).
    public var workers: Int = 2
    /// Shards in flight per worker.
    public var creditsPerWorker: Int = 2
    /// Seconds between heartbeats.
    public var heartbeatInterval: Double = 1
    /// Seconds of silence after which a worker is presumed dead and its shards re-leased.
    public var workerTimeout: Double = 10
    /// Checkpoint the merged state every K shard results...
    public var checkpointEveryResults: Int = 16
    /// ...or every T seconds, whichever comes first.
    public var checkpointEverySeconds: Double = 30
    /// A shard failing this many times aborts the job.
    public var maxShardFailures: Int = 3
    /// Once no shard is left to lease, an idle worker computes a copy of a shard that a slower
    /// worker holds, when it is expected to finish it clearly sooner; the first copy merges.
    public var backupLeases: Bool = true
    /// Largest accepted message, in bytes.
    public var maxMessageBytes: Int = 256 << 20
    public init() {}
}

/// A position in the config file (1-based), or the command line for overridden values.
public struct ConfigLocation: Sendable, Hashable, CustomStringConvertible {
    public var line: Int?
    public var column: Int?
    public var fromCommandLine: Bool
    public init(line: Int?, column: Int?, fromCommandLine: Bool = false) {
        self.line = line
        self.column = column
        self.fromCommandLine = fromCommandLine
    }
    public var description: String {
        if fromCommandLine { return "command line" }
        guard let line else { return "?" }
        return column.map { "line \(line), column \($0)" } ?? "line \(line)"
    }
}

/// One problem found while validating a job config.
public struct ConfigIssue: Sendable, Hashable, CustomStringConvertible {
    /// Dotted key path, e.g. `dataset.preprocessing.mean` or `methods[1].percentile`.
    public var keyPath: String
    public var location: ConfigLocation
    public var message: String
    public var file: String?
    public init(keyPath: String, location: ConfigLocation, message: String, file: String? = nil) {
        self.keyPath = keyPath
        self.location = location
        self.message = message
        self.file = file
    }
    public var line: Int? { location.line }
    public var description: String {
        let place: String
        if location.fromCommandLine { place = "command line" }
        else if let line = location.line { place = "\(file ?? "config"):\(line):\(location.column ?? 1)" }
        else { place = file ?? "config" }
        return "\(place): \(keyPath.isEmpty ? "(document)" : keyPath): \(message)"
    }
}

public enum JobConfigError: Error, Sendable, CustomStringConvertible {
    /// Every problem found, in file order.
    case invalid([ConfigIssue])
    case cannotRead(path: String, reason: String)
    case badOverride(String)

    public var description: String {
        switch self {
        case let .invalid(issues):
            return "invalid job config (\(issues.count) problem\(issues.count == 1 ? "" : "s")):\n"
                + issues.map { "  " + $0.description }.joined(separator: "\n")
        case let .cannotRead(path, reason): return "\(path): cannot read job config: \(reason)"
        case let .badOverride(text): return "override '\(text)' must look like key.path=value"
        }
    }

    public var issues: [ConfigIssue] {
        if case let .invalid(list) = self { return list }
        return []
    }
}
