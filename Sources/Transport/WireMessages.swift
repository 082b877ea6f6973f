import Calibration

// The messages of shardcal's coordinator/worker protocol. The byte layout is in docs/PROTOCOL.md;
// `WireCodec` turns these values into ZeroMQ frames and back.

/// Worker → coordinator, first message after connecting (and again after a reconnect).
public struct Hello: Codable, Sendable, Equatable {
    public var toolVersion: String
    public var protocolVersion: Int
    /// Stable name chosen by the worker (host-pid-n), used in logs and status.
    public var workerID: String
    /// The model digest the worker computes with, once it has one (nil on first contact).
    public var modelDigest: String?
    /// Model digests the worker already holds in its local cache: the coordinator then sends only the digest.
    public var cachedModels: [String]

    public init(toolVersion: String, protocolVersion: Int = WireCodec.protocolVersion, workerID: String,
                modelDigest: String? = nil, cachedModels: [String] = []) {
        self.toolVersion = toolVersion
        self.protocolVersion = protocolVersion
        self.workerID = workerID
        self.modelDigest = modelDigest
        self.cachedModels = cachedModels
    }

    enum CodingKeys: String, CodingKey {
        case toolVersion = "tool_version", protocolVersion = "protocol_version", workerID = "worker_id"
        case modelDigest = "model_digest", cachedModels = "cached_models"
    }
}

/// Coordinator → worker: what to compute. `model` is empty when the worker said it has `modelDigest` cached.
public struct Job: Sendable, Equatable {
    public var jobID: String
    public var toolVersion: String
    public var modelDigest: String
    public var configDigest: String
    /// Heartbeat interval the coordinator expects from the worker (ms).
    public var heartbeatIntervalMs: Int
    /// Silence after which either side gives the other up (ms).
    public var livenessTimeoutMs: Int
    /// The job configuration file as bytes (opaque to the transport).
    public var config: [UInt8]
    /// The model file, or empty if only the digest is sent.
    public var model: [UInt8]
    /// Folder the config's relative paths are resolved against (the coordinator's; workers need the
    /// same layout or shared storage).
    public var configBaseDirectory: String

    public init(jobID: String, toolVersion: String, modelDigest: String, configDigest: String,
                heartbeatIntervalMs: Int, livenessTimeoutMs: Int, config: [UInt8], model: [UInt8],
                configBaseDirectory: String = "") {
        self.configBaseDirectory = configBaseDirectory
        self.jobID = jobID
        self.toolVersion = toolVersion
        self.modelDigest = modelDigest
        self.configDigest = configDigest
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.livenessTimeoutMs = livenessTimeoutMs
        self.config = config
        self.model = model
    }

    struct Header: Codable {
        var job_id: String
        var tool_version: String
        var model_digest: String
        var config_digest: String
        var heartbeat_interval_ms: Int
        var liveness_timeout_ms: Int
        var model_included: Bool
        var config_base_directory: String?
    }
}

/// Worker → coordinator: "I can hold `credits` more leases" (additive). Each RESULT or FAIL hands one
/// credit back implicitly, so a worker only sends READY to start or to widen its window.
public struct Ready: Codable, Sendable, Equatable {
    public var credits: Int
    /// The digest of the model the worker loaded; checked against the job's.
    public var modelDigest: String
    public init(credits: Int, modelDigest: String) {
        self.credits = credits
        self.modelDigest = modelDigest
    }
    enum CodingKeys: String, CodingKey { case credits, modelDigest = "model_digest" }
}

/// Coordinator → worker: compute shard `shard` = samples `start ..< end`.
public struct Lease: Codable, Sendable, Equatable {
    public var shard: Int
    public var start: Int
    public var end: Int
    public init(shard: Int, start: Int, end: Int) {
        self.shard = shard
        self.start = start
        self.end = end
    }
    public var indices: Range<Int> { start ..< end }
}

/// Worker → coordinator: the histograms of one shard, tensors in graph order.
///
/// A result built in memory holds its histograms as values; one decoded off the wire keeps them in
/// their validated coding (`encoded`), which the coordinator merges without widening the counts.
/// `tensors` reads the same either way; equality compares the decoded histograms.
public struct ShardResult: Sendable, Equatable {
    public var shard: Int
    public var sampleCount: Int
    /// Seconds the worker spent computing (for throughput figures).
    public var computeSeconds: Double
    var storage: Storage
    /// Samples of the shard left out under the skip-and-count policy.
    public var skipped: [SkippedSampleRecord]

    enum Storage: Sendable {
        case values([NamedHistogram])
        case encoded(EncodedHistograms)
    }

    public init(shard: Int, sampleCount: Int, computeSeconds: Double, tensors: [NamedHistogram],
                skipped: [SkippedSampleRecord] = []) {
        self.shard = shard
        self.sampleCount = sampleCount
        self.computeSeconds = computeSeconds
        self.storage = .values(tensors)
        self.skipped = skipped
    }

    public init(shard: Int, sampleCount: Int, computeSeconds: Double, encoded: EncodedHistograms,
                skipped: [SkippedSampleRecord] = []) {
        self.shard = shard
        self.sampleCount = sampleCount
        self.computeSeconds = computeSeconds
        self.storage = .encoded(encoded)
        self.skipped = skipped
    }

    /// The histograms (decoded on each read when the result came off the wire).
    public var tensors: [NamedHistogram] {
        get {
            switch storage {
            case .values(let t): return t
            case .encoded(let e): return e.decoded()
            }
        }
        set { storage = .values(newValue) }
    }

    /// The tensor names, in order, without decoding any histogram.
    public var tensorNames: [String] {
        switch storage {
        case .values(let t): return t.map(\.name)
        case .encoded(let e): return e.names
        }
    }

    public var tensorCount: Int {
        switch storage {
        case .values(let t): return t.count
        case .encoded(let e): return e.count
        }
    }

    /// The histograms in their received coding, when this result was decoded from a message.
    public var encoded: EncodedHistograms? {
        if case .encoded(let e) = storage { return e }
        return nil
    }

    public static func == (a: ShardResult, b: ShardResult) -> Bool {
        a.shard == b.shard && a.sampleCount == b.sampleCount && a.computeSeconds == b.computeSeconds && a.skipped == b.skipped
            && a.tensors == b.tensors
    }

    struct Header: Codable {
        var shard: Int
        var sample_count: Int
        var compute_seconds: Double
        var tensor_count: Int
        /// Absent when no sample was skipped.
        var skipped: [SkippedSampleRecord]?
    }
}

/// Coordinator → worker: the result of `shard` was received. `duplicate` = it was already merged and was dropped.
public struct Ack: Codable, Sendable, Equatable {
    public var shard: Int
    public var duplicate: Bool
    public init(shard: Int, duplicate: Bool) {
        self.shard = shard
        self.duplicate = duplicate
    }
}

/// Worker → coordinator: shard `shard` could not be computed.
public struct Fail: Codable, Sendable, Equatable {
    public var shard: Int
    /// The file that failed (e.g. an unreadable image), when known.
    public var file: String?
    public var reason: String
    public init(shard: Int, file: String?, reason: String) {
        self.shard = shard
        self.file = file
        self.reason = reason
    }
}

/// Coordinator → worker: you are not admitted. Names the field and both values.
public struct Refuse: Codable, Sendable, Equatable {
    /// "tool_version", "protocol_version" or "model_digest".
    public var field: String
    public var expected: String
    public var found: String
    public var reason: String
    public init(field: String, expected: String, found: String) {
        self.field = field
        self.expected = expected
        self.found = found
        self.reason = "\(field.replacingOccurrences(of: "_", with: " ")) mismatch: coordinator has \(expected), worker has \(found)"
    }
}

/// Either direction: your last message was dropped, and why.
public struct ErrorReport: Codable, Sendable, Equatable {
    /// Short machine-readable code: "malformed", "oversized", "wrong_version", "unknown_worker", ...
    public var code: String
    public var reason: String
    public init(code: String, reason: String) {
        self.code = code
        self.reason = reason
    }
}

/// Coordinator → worker: the run is over (finished, failed or stopped); the worker may exit.
public struct Done: Codable, Sendable, Equatable {
    public var outcome: String
    public var reason: String?
    public init(outcome: String, reason: String? = nil) {
        self.outcome = outcome
        self.reason = reason
    }
}

/// Coordinator → anyone who asked: progress of the run.
public struct StatusReport: Codable, Sendable, Equatable {
    public struct Worker: Codable, Sendable, Equatable {
        public var id: String
        public var leased: [Int]
        public var done: Int
        public var samplesPerSecond: Double
        public var lastSeenSecondsAgo: Double
        public init(id: String, leased: [Int], done: Int, samplesPerSecond: Double, lastSeenSecondsAgo: Double) {
            self.id = id
            self.leased = leased
            self.done = done
            self.samplesPerSecond = samplesPerSecond
            self.lastSeenSecondsAgo = lastSeenSecondsAgo
        }
        enum CodingKeys: String, CodingKey {
            case id, leased, done, samplesPerSecond = "samples_per_second", lastSeenSecondsAgo = "last_seen_seconds_ago"
        }
    }
    public var jobID: String
    /// "running", "finished", "failed", "stopped".
    public var phase: String
    public var shardsTotal: Int
    public var shardsDone: Int
    public var shardsLeased: Int
    public var shardsPending: Int
    public var samplesDone: Int
    public var elapsedSeconds: Double
    public var samplesPerSecond: Double
    public var etaSeconds: Double?
    public var workers: [Worker]
    /// Events reported by the coordinator: "malformed", "duplicate", "refused", "expired_leases", "failures".
    public var counters: [String: Int]

    public init(jobID: String, phase: String, shardsTotal: Int, shardsDone: Int, shardsLeased: Int, shardsPending: Int,
                samplesDone: Int, elapsedSeconds: Double, samplesPerSecond: Double, etaSeconds: Double?,
                workers: [Worker], counters: [String: Int]) {
        self.jobID = jobID
        self.phase = phase
        self.shardsTotal = shardsTotal
        self.shardsDone = shardsDone
        self.shardsLeased = shardsLeased
        self.shardsPending = shardsPending
        self.samplesDone = samplesDone
        self.elapsedSeconds = elapsedSeconds
        self.samplesPerSecond = samplesPerSecond
        self.etaSeconds = etaSeconds
        self.workers = workers
        self.counters = counters
    }

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id", phase, shardsTotal = "shards_total", shardsDone = "shards_done"
        case shardsLeased = "shards_leased", shardsPending = "shards_pending", samplesDone = "samples_done"
        case elapsedSeconds = "elapsed_seconds", samplesPerSecond = "samples_per_second", etaSeconds = "eta_seconds"
        case workers, counters
    }
}

/// Published on the PUB socket when the run ends successfully (topic frame first, for SUB filtering).
public struct Publication: Sendable, Equatable {
    public var topic: String
    /// UTF-8 JSON summary: job id, digests, shard count, tensor count, method, file names.
    public var summary: [UInt8]
    /// The TensorRT calibration cache (text, as bytes).
    public var cache: [UInt8]
    /// The JSON calibration table.
    public var table: [UInt8]
    public init(topic: String, summary: [UInt8], cache: [UInt8], table: [UInt8]) {
        self.topic = topic
        self.summary = summary
        self.cache = cache
        self.table = table
    }
}

/// Every message of the protocol.
public enum WireMessage: Sendable, Equatable {
    case hello(Hello)
    case job(Job)
    case ready(Ready)
    case lease(Lease)
    case result(ShardResult)
    case ack(Ack)
    case fail(Fail)
    case heartbeat
    case refuse(Refuse)
    case error(ErrorReport)
    case done(Done)
    case statusRequest
    case statusReply(StatusReport)

    /// The message type word carried in frame 1.
    public var typeName: String {
        switch self {
        case .hello: "HELLO"
        case .job: "JOB"
        case .ready: "READY"
        case .lease: "LEASE"
        case .result: "RESULT"
        case .ack: "ACK"
        case .fail: "FAIL"
        case .heartbeat: "HEARTBEAT"
        case .refuse: "REFUSE"
        case .error: "ERROR"
        case .done: "DONE"
        case .statusRequest: "STATUS"
        case .statusReply: "STATUS-REPLY"
        }
    }
}
