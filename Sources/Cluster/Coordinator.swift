import Calibration
import CalibrationIO
import Foundation
import Logging
import Transport

/// Everything the coordinator needs to run one job.
public struct CoordinatorConfig: Sendable {
    /// ROUTER endpoint, e.g. `tcp://*:5555` or `tcp://127.0.0.1:*` (OS-chosen port).
    public var endpoint: String
    /// PUB endpoint for the final result (nil: do not publish).
    public var publishEndpoint: String?
    public var jobID: String
    public var toolVersion: String
    public var modelDigest: String
    public var configDigest: String
    /// Job configuration file bytes, sent to workers as-is.
    public var config: [UInt8]
    /// Model file bytes, sent to workers that do not have `modelDigest` cached.
    public var model: [UInt8]
    /// Folder the config's relative paths resolve against (sent to workers).
    public var configBaseDirectory: String = ""
    public var shards: [ShardSpec]
    /// Heartbeat period, both directions (seconds).
    public var heartbeatInterval: Double = 1.0
    /// Silence after which a worker is dropped and its leases return to the queue (seconds).
    public var livenessTimeout: Double = 5.0
    /// Optional cap on the age of one lease even while its worker heartbeats (seconds).
    public var leaseTimeout: Double? = nil
    /// Failures of one shard (on any workers) before the run stops.
    public var maxFailures: Int = 3
    /// Backup leases for stragglers once the queue is empty (see `Scheduler.assign`).
    public var backupLeases: Bool = true
    /// Where checkpoints go (atomic state file); nil disables checkpoints.
    public var checkpointPath: String? = nil
    /// Checkpoint after this many merged results...
    public var checkpointEveryResults: Int = 100
    /// ...or this many seconds since the last checkpoint, whichever comes first.
    public var checkpointEverySeconds: Double = 30
    /// Previously merged state to continue from: only shards missing from it are scheduled.
    public var resume: CalibrationState? = nil
    public var method: CalibrationMethod = .entropy
    /// Final outputs (cache, JSON table, state); nil writes nothing (the result is still returned and published).
    public var outputs: CalibrationOutputs? = nil
    /// Extra metadata stored in the state file.
    public var stateInfo: [String: String] = [:]
    public var publishTopic: String = "shardcal.result"
    /// After finishing, keep re-publishing the result (every 0.5 s) and answering STATUS this long, for late subscribers.
    public var publishHoldSeconds: Double = 0
    public var limits: WireLimits = .default
    /// Stop (checkpointing, as on SIGINT) if the run takes longer than this (seconds); nil = no limit.
    public var runTimeout: Double? = nil

    public init(endpoint: String, publishEndpoint: String? = nil, jobID: String, toolVersion: String,
                modelDigest: String, configDigest: String, config: [UInt8], model: [UInt8], shards: [ShardSpec]) {
        self.endpoint = endpoint
        self.publishEndpoint = publishEndpoint
        self.jobID = jobID
        self.toolVersion = toolVersion
        self.modelDigest = modelDigest
        self.configDigest = configDigest
        self.config = config
        self.model = model
        self.shards = shards
    }
}

public enum CoordinatorError: Error, CustomStringConvertible, Equatable {
    /// A shard failed `attempts` times; the run stopped.
    case shardFailed(shard: Int, file: String?, reason: String, attempts: Int)
    /// SIGINT/SIGTERM or `requestStop()`: the merged state was checkpointed (if a path was set).
    case interrupted(shardsDone: Int, shardsTotal: Int, checkpoint: String?)
    /// The resume state belongs to another model or configuration.
    case resumeMismatch(field: String, expected: String, found: String)
    case resumeHasUnknownShards([Int])
    case socket(ZMQError)
    case output(String)

    public var description: String {
        switch self {
        case let .shardFailed(shard, file, reason, attempts):
            return "shard \(shard) failed \(attempts) times\(file.map { " on file \($0)" } ?? ""): \(reason)"
        case let .interrupted(done, total, checkpoint):
            return "stopped with \(done) of \(total) shards merged" +
                (checkpoint.map { "; state saved to \($0) (continue with --resume \($0))" } ?? "")
        case let .resumeMismatch(field, expected, found):
            return "cannot resume: \(field) differs (this job has \(expected), the state file has \(found))"
        case .resumeHasUnknownShards(let ids):
            return "cannot resume: state holds shards this job does not have: \(ids.prefix(10).map(String.init).joined(separator: ", "))"
        case .socket(let e): return "coordinator socket error: \(e)"
        case .output(let why): return "writing outputs failed: \(why)"
        }
    }
}

/// Counters of notable events, reported in status and in the result.
public struct CoordinatorStats: Sendable, Equatable {
    public var resultsMerged = 0
    public var duplicates = 0
    public var malformed = 0
    public var refused = 0
    public var expiredWorkers = 0
    public var expiredLeases = 0
    public var failures = 0
    public var checkpoints = 0
    public var unknownWorker = 0
    /// Backup leases issued to idle workers for a straggler's shard, and the copies that finished
    /// second (acknowledged and dropped; not counted as duplicates).
    public var backupLeases = 0
    public var backupResultsDropped = 0
    /// One line per notable event, in order (bounded to the last 1000).
    public var events: [String] = []

    public var counters: [String: Int] {
        ["results": resultsMerged, "duplicate": duplicates, "malformed": malformed, "refused": refused,
         "expired_workers": expiredWorkers, "expired_leases": expiredLeases, "failures": failures,
         "checkpoints": checkpoints, "unknown_worker": unknownWorker,
         "backup_leases": backupLeases, "backup_results_dropped": backupResultsDropped]
    }
}

public struct CoordinatorResult: Sendable {
    public var state: CalibrationState
    public var table: CalibrationTable
    public var cacheText: String
    public var stats: CoordinatorStats
    public var elapsedSeconds: Double
}

/// The coordinator: one thread owns a ROUTER (workers, status clients) and a PUB socket (result).
/// It schedules leases with per-worker credit windows, merges each shard's histograms exactly once,
/// checkpoints, and at the end runs the threshold search, writes the outputs and publishes them.
public final class Coordinator: @unchecked Sendable {
    public let config: CoordinatorConfig
    let context: ZMQContext
    let logger: Logger
    private let lock = NSLock()
    private var stopRequested = false
    private var _status: StatusReport?
    private var thread: Thread?
    private var outcome: Result<CoordinatorResult, any Error>?
    private let finished = DispatchSemaphore(value: 0)
    /// Called (on the coordinator thread, at most twice a second) with fresh progress.
    public var onProgress: (@Sendable (StatusReport) -> Void)?

    public init(config: CoordinatorConfig, context: ZMQContext, logger: Logger) {
        self.config = config
        self.context = context
        self.logger = logger
    }

    /// Asks the loop to checkpoint and stop (safe from any thread or a signal source).
    public func requestStop() {
        lock.withLock { stopRequested = true }
    }

    var isStopRequested: Bool { lock.withLock { stopRequested } }

    /// The latest progress snapshot.
    public var status: StatusReport? { lock.withLock { _status } }

    func publishStatus(_ s: StatusReport) { lock.withLock { _status = s } }

    /// Keeps freed message-sized blocks in the process. Every RESULT arrives in a fresh ~1 MB
    /// buffer; with glibc's defaults such blocks go back to the kernel when freed and are faulted
    /// in again, page by page, for the next message (about a sixth of the CPU per result in
    /// bench-coordinator). Process-wide, set once, only by processes that run a coordinator.
    static let tuneAllocator: Void = {
        #if os(Linux)
        // glibc's mallopt (not in Swift's Glibc module). <malloc.h>: M_TRIM_THRESHOLD = -1,
        // M_MMAP_THRESHOLD = -3. Other C libraries lack the symbol: nothing is changed then.
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") {
            let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
            _ = mallopt(-3, 64 << 20)
            _ = mallopt(-1, 256 << 20)
        }
        #endif
    }()

    /// Runs on a new thread; returns once the sockets are bound, with the resolved endpoints.
    public func start() throws -> (endpoint: String, publishEndpoint: String?) {
        Coordinator.tuneAllocator
        let bound = DispatchSemaphore(value: 0)
        let box = BoundBox()
        let t = Thread { [self] in
            let r = Result { try self.run(onBound: { ep, pub in box.set(.success((ep, pub))); bound.signal() }) }
            if case .failure(let e) = r, box.get() == nil {
                box.set(.failure(e))
                bound.signal()
            }
            self.lock.withLock { self.outcome = r }
            self.finished.signal()
        }
        t.name = "shardcal-coordinator"
        t.stackSize = 4 << 20
        thread = t
        t.start()
        bound.wait()
        return try box.get()!.get()
    }

    /// Waits for a coordinator started with `start()`.
    public func wait() throws -> CoordinatorResult {
        finished.wait()
        finished.signal()
        return try lock.withLock { outcome! }.get()
    }

    /// Binds, runs the job to the end on the calling thread and returns the merged result.
    public func run(onBound: (String, String?) -> Void = { _, _ in }) throws -> CoordinatorResult {
        var loop = try CoordinatorLoop(owner: self)
        defer { loop.close() }
        onBound(loop.endpoint, loop.publishEndpoint)
        return try loop.run()
    }
}

private final class BoundBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Result<(String, String?), any Error>?
    func set(_ v: Result<(String, String?), any Error>) { lock.withLock { value = v } }
    func get() -> Result<(String, String?), any Error>? { lock.withLock { value } }
}

/// The coordinator's state, owned by its thread.
struct CoordinatorLoop {
    let owner: Coordinator
    let cfg: CoordinatorConfig
    var logger: Logger
    let router: ZMQSocket
    let pub: ZMQSocket?
    let endpoint: String
    let publishEndpoint: String?
    var scheduler: Scheduler
    var state: CalibrationState
    var stats = CoordinatorStats()
    let startTime = monotonicSeconds()
    var lastHeartbeat = 0.0
    var lastProgress = 0.0
    var lastCheckpointTime = monotonicSeconds()
    var resultsSinceCheckpoint = 0
    var samplesThisRun = 0
    let resumedShards: Int
    /// Results taken (the scheduler counts their shards as done) but not yet added to `state`:
    /// merged together, tensor by tensor, at the end of each drained batch and before any
    /// checkpoint or output. Their count sums are checked by that merge, in the same pass over the
    /// counts, so they are acknowledged (or refused) only then.
    var pendingMerges: [PendingMerge] = []

    struct PendingMerge {
        var result: ShardResult
        var histograms: EncodedHistograms
        var key: [UInt8]
    }

    init(owner: Coordinator) throws {
        self.owner = owner
        cfg = owner.config
        logger = owner.logger
        logger[metadataKey: "job"] = .string(cfg.jobID)

        var initial = CalibrationState(toolVersion: cfg.toolVersion, modelDigest: cfg.modelDigest,
                                       configDigest: cfg.configDigest, info: cfg.stateInfo)
        if let resume = cfg.resume {
            if resume.modelDigest != cfg.modelDigest {
                throw CoordinatorError.resumeMismatch(field: "model digest", expected: cfg.modelDigest, found: resume.modelDigest)
            }
            if resume.configDigest != cfg.configDigest {
                throw CoordinatorError.resumeMismatch(field: "config digest", expected: cfg.configDigest, found: resume.configDigest)
            }
            let known = Set(cfg.shards.map(\.id))
            let unknown = resume.shards.subtracting(known)
            if !unknown.isEmpty { throw CoordinatorError.resumeHasUnknownShards(unknown.sorted()) }
            initial = resume
            initial.toolVersion = cfg.toolVersion
            for (k, v) in cfg.stateInfo { initial.info[k] = v }
        }
        state = initial
        resumedShards = initial.shards.count
        scheduler = Scheduler(shards: cfg.shards, alreadyDone: initial.shards, maxFailures: cfg.maxFailures,
                              leaseTimeout: cfg.leaseTimeout, livenessTimeout: cfg.livenessTimeout,
                              backupLeases: cfg.backupLeases)
        do {
            let r = try ZMQSocket(owner.context, type: .router)
            try r.setLinger(0)
            try r.setMaxMessageSize(cfg.limits.coordinatorMaxFrameBytes)
            try r.setRouterHandover(true)
            try r.setSendHighWaterMark(10_000)
            try r.setReceiveHighWaterMark(10_000)
            try r.bind(cfg.endpoint)
            router = r
            endpoint = try r.lastEndpoint
            if let pe = cfg.publishEndpoint {
                let p = try ZMQSocket(owner.context, type: .pub)
                try p.setLinger(1000)
                try p.bind(pe)
                pub = p
                publishEndpoint = try p.lastEndpoint
            } else {
                pub = nil
                publishEndpoint = nil
            }
        } catch let e as ZMQError {
            throw CoordinatorError.socket(e)
        }
        logger.info("coordinator listening", metadata: [
            "endpoint": .string(endpoint), "publish": .string(publishEndpoint ?? "-"),
            "shards": .stringConvertible(cfg.shards.count), "already_merged": .stringConvertible(resumedShards),
        ])
    }

    func close() {
        router.close()
        pub?.close()
    }

    // MARK: main loop

    mutating func run() throws -> CoordinatorResult {
        var poller = ZMQPoller()
        poller.add(router)
        let tick = max(1, min(100, Int(cfg.heartbeatInterval * 1000 / 2)))
        while true {
            let now = monotonicSeconds()
            if scheduler.isFinished {
                // A pending result refused by the merge puts its shard back in the queue.
                try flushMerges()
                if scheduler.isFinished { return try finish() }
            }
            if owner.isStopRequested { try stop(reason: "stop requested") }
            if let limit = cfg.runTimeout, now - startTime > limit { try stop(reason: "run timeout of \(limit) s reached") }

            sendLeases(now: now)
            // Heartbeats to every admitted worker.
            if now - lastHeartbeat >= cfg.heartbeatInterval {
                lastHeartbeat = now
                for key in scheduler.workers.keys { send(.heartbeat, to: key) }
            }
            // Silent workers and stale leases.
            let expired = scheduler.expire(now: now)
            for w in expired.workers {
                stats.expiredWorkers += 1
                note("worker \(w.name) silent for more than \(cfg.livenessTimeout) s: dropped, shards \(w.shards) back to the queue", level: .warning)
            }
            if !expired.leases.isEmpty {
                stats.expiredLeases += expired.leases.count
                note("leases expired after \(cfg.leaseTimeout ?? 0) s: shards \(expired.leases) back to the queue", level: .warning)
            }
            try checkpointIfDue(now: now)
            if now - lastProgress >= 0.5 {
                lastProgress = now
                let s = statusReport(phase: "running", now: now)
                owner.publishStatus(s)
                owner.onProgress?(s)
            }

            let ready: [ZMQPoller.Events]
            do { ready = try poller.poll(timeoutMs: tick) } catch let e as ZMQError { throw CoordinatorError.socket(e) }
            if ready[0].contains(.readable) {
                // Drain bounded batches so timers keep running under load. Decoding (the costly,
                // pure part) runs in parallel; handling and merging stay in arrival order on this thread.
                for _ in 0..<40 {
                    var batch: [Received] = []
                    for _ in 0..<64 {
                        let received: Received?
                        do {
                            received = try router.receive(dontWait: true, largeFrameBytes: Self.largeFrameBytes)
                                .map { Received(frames: $0.frames, large: $0.large) }
                        } catch let e as ZMQError { throw CoordinatorError.socket(e) }
                        guard let received else { break }
                        batch.append(received)
                    }
                    if batch.isEmpty { break }
                    let decoded = Self.decodeBatch(batch, limits: cfg.limits)
                    for (frames, message) in zip(batch.map(\.frames), decoded) {
                        try handle(frames, decoded: message)
                        if scheduler.isFinished { break }
                        // A RESULT or FAIL handed a credit back: lease the next shard at once, so
                        // the worker is busy again while the rest of the batch is merged.
                        if case .success(let m) = message, m.returnsCredit { sendLeases(now: monotonicSeconds()) }
                    }
                    try flushMerges()
                    if scheduler.isFinished { break }
                }
            }
        }
    }

    /// Adds the pending results to the state, checking their count sums on the way; acknowledges
    /// the merged ones and refuses the others (nothing of them is in the state).
    mutating func flushMerges() throws {
        guard !pendingMerges.isEmpty else { return }
        let batch = pendingMerges
        pendingMerges.removeAll(keepingCapacity: true)
        var refused: [Int: String] = [:]
        do {
            refused = try state.mergeChecking(encodedShards: batch.map { ($0.result.shard, $0.histograms) })
        } catch {
            // The scheduler admits each shard once, so this cannot happen; keep the run safe anyway.
            note("internal: state refused shards \(batch.map(\.result.shard)): \(error)", level: .error)
            return
        }
        for (i, p) in batch.enumerated() where refused[i] == nil { merged(p.result, from: p.key) }
        // After every acknowledgement: a refusal can stop the run.
        for (i, p) in batch.enumerated() {
            if let why = refused[i] { try refuseAfterMerge(p.result, from: p.key, why: why) }
        }
    }

    /// Books a result that is in the state and acknowledges it.
    mutating func merged(_ result: ShardResult, from key: [UInt8]) {
        stats.resultsMerged += 1
        samplesThisRun += result.sampleCount
        resultsSinceCheckpoint += 1
        logger.trace("shard merged", metadata: ["shard": .stringConvertible(result.shard), "worker": .string(name(of: key)),
                                                "compute_seconds": .stringConvertible(result.computeSeconds)])
        send(.ack(Ack(shard: result.shard, duplicate: false)), to: key)
    }

    /// A result the scheduler had taken was refused by the merge: the shard is not done after all.
    mutating func refuseAfterMerge(_ result: ShardResult, from key: [UInt8], why: String) throws {
        scheduler.revoke(shard: result.shard, from: key, samples: result.sampleCount, computeSeconds: result.computeSeconds)
        try reject(result, from: key, now: monotonicSeconds(), why: "RESULT for shard \(result.shard): \(why)")
    }

    /// Leases to workers with free credit.
    mutating func sendLeases(now: Double) {
        for (key, shard) in scheduler.assign(now: now) {
            if scheduler.backups[shard.id]?.worker == key {
                stats.backupLeases += 1
                logger.debug("backup lease", metadata: ["shard": .stringConvertible(shard.id), "worker": .string(name(of: key)),
                                                        "holder": .string(scheduler.leases[shard.id].map { name(of: $0.worker) } ?? "-")])
            } else {
                logger.trace("shard leased", metadata: ["shard": .stringConvertible(shard.id), "worker": .string(name(of: key))])
            }
            send(.lease(Lease(shard: shard.id, start: shard.indices.lowerBound, end: shard.indices.upperBound)), to: key)
        }
    }

    // MARK: messages

    /// Frames at least this large are received without a copy (RESULT histogram payloads).
    static let largeFrameBytes = 64 << 10

    /// A ROUTER message as received: routing id first; large frames in `large`, by index.
    struct Received: Sendable {
        var frames: [[UInt8]]
        var large: [Int: Data] = [:]
    }

    /// Decodes ROUTER messages (routing id first); several at once on all cores.
    static func decodeBatch(_ batch: [Received], limits: WireLimits) -> [Result<WireMessage, WireError>] {
        @Sendable func one(_ r: Received) -> Result<WireMessage, WireError> {
            guard r.frames.count >= 2 else { return .failure(.empty) }
            var large: [Int: Data] = [:]
            for (i, data) in r.large where i > 0 { large[i - 1] = data }
            // Count sums are left to the merge, which checks them in its one pass over the counts.
            do {
                return .success(try WireCodec.decode(Array(r.frames.dropFirst()), large: large, limits: limits,
                                                     checkingCountSums: false))
            } catch {
                return .failure(error)
            }
        }
        if batch.count < 2 { return batch.map(one) }
        let slots = DecodeSlots(count: batch.count)
        DispatchQueue.concurrentPerform(iterations: batch.count) { i in slots.set(i, one(batch[i])) }
        return slots.values()
    }

    mutating func handle(_ frames: [[UInt8]]) throws {
        try handle(frames, decoded: Self.decodeBatch([Received(frames: frames)], limits: cfg.limits)[0])
    }

    mutating func handle(_ frames: [[UInt8]], decoded: Result<WireMessage, WireError>) throws {
        let now = monotonicSeconds()
        guard frames.count >= 2 else {
            stats.malformed += 1
            note("dropped a message without routing id or body (\(frames.count) frames)", level: .warning)
            return
        }
        let key = frames[0]
        let message: WireMessage
        do {
            message = try decoded.get()
        } catch {
            stats.malformed += 1
            note("dropped \(error.code) message from \(name(of: key)): \(error)", level: .warning)
            send(.error(ErrorReport(code: error.code, reason: error.description)), to: key)
            return
        }
        scheduler.touch(key, now: now)
        switch message {
        case .hello(let hello):
            admit(key, hello: hello, now: now)
        case .ready(let ready):
            guard scheduler.workers[key] != nil else { return unknownWorker(key, "READY") }
            if ready.modelDigest != cfg.modelDigest {
                refuse(key, name: name(of: key), Refuse(field: "model_digest", expected: cfg.modelDigest, found: ready.modelDigest))
                return
            }
            scheduler.setWindow(key, credits: ready.credits, now: now)
            logger.debug("worker ready", metadata: ["worker": .string(name(of: key)), "credits": .stringConvertible(ready.credits)])
        case .result(let result):
            try accept(result, from: key, now: now)
        case .fail(let fail):
            guard scheduler.everAdmitted.contains(key) else { return unknownWorker(key, "FAIL") }
            stats.failures += 1
            let verdict = scheduler.fail(shard: fail.shard, from: key, now: now)
            let what = "shard \(fail.shard) failed on \(name(of: key))\(fail.file.map { " (file \($0))" } ?? ""): \(fail.reason)"
            switch verdict {
            case .retry(let attempts):
                note("\(what); attempt \(attempts) of \(cfg.maxFailures), retrying elsewhere", level: .warning)
            case .giveUp(let attempts):
                note("\(what); giving up after \(attempts) attempts", level: .error)
                try checkpoint(reason: "shard failure")
                broadcastDone(Done(outcome: "failed", reason: what))
                throw CoordinatorError.shardFailed(shard: fail.shard, file: fail.file, reason: fail.reason, attempts: attempts)
            case .ignored:
                logger.debug("ignored stale FAIL", metadata: ["shard": .stringConvertible(fail.shard)])
            }
        case .heartbeat:
            // A worker we dropped (or never met): ask it to introduce itself again.
            if scheduler.workers[key] == nil { unknownWorker(key, "HEARTBEAT") }
        case .statusRequest:
            send(.statusReply(statusReport(phase: "running", now: now)), to: key)
        case .job, .lease, .ack, .refuse, .done, .statusReply, .error:
            if case .error(let report) = message {
                note("\(name(of: key)) reported an error: \(report.code): \(report.reason)", level: .warning)
                return
            }
            stats.malformed += 1
            note("dropped unexpected \(message.typeName) from \(name(of: key))", level: .warning)
            send(.error(ErrorReport(code: "unexpected", reason: "a coordinator does not accept \(message.typeName) messages")), to: key)
        }
    }

    mutating func admit(_ key: [UInt8], hello: Hello, now: Double) {
        let who = hello.workerID
        if hello.toolVersion != cfg.toolVersion {
            return refuse(key, name: who, Refuse(field: "tool_version", expected: cfg.toolVersion, found: hello.toolVersion))
        }
        if hello.protocolVersion != WireCodec.protocolVersion {
            return refuse(key, name: who, Refuse(field: "protocol_version", expected: String(WireCodec.protocolVersion),
                                                 found: String(hello.protocolVersion)))
        }
        if let digest = hello.modelDigest, digest != cfg.modelDigest {
            return refuse(key, name: who, Refuse(field: "model_digest", expected: cfg.modelDigest, found: digest))
        }
        let returned = scheduler.workers[key]?.leased.sorted() ?? []
        scheduler.admit(key, name: who, now: now)
        if !returned.isEmpty { note("worker \(who) reconnected; its shards \(returned) back to the queue", level: .info) }
        logger.info("worker joined", metadata: ["worker": .string(who)])
        let includeModel = !hello.cachedModels.contains(cfg.modelDigest)
        send(.job(Job(jobID: cfg.jobID, toolVersion: cfg.toolVersion, modelDigest: cfg.modelDigest,
                      configDigest: cfg.configDigest, heartbeatIntervalMs: Int(cfg.heartbeatInterval * 1000),
                      livenessTimeoutMs: Int(cfg.livenessTimeout * 1000), config: cfg.config,
                      model: includeModel ? cfg.model : [], configBaseDirectory: cfg.configBaseDirectory)), to: key)
    }

    mutating func refuse(_ key: [UInt8], name who: String, _ refusal: Refuse) {
        stats.refused += 1
        let returned = scheduler.remove(key)
        note("refused worker \(who): \(refusal.reason)" + (returned.isEmpty ? "" : "; shards \(returned) back to the queue"), level: .error)
        send(.refuse(refusal), to: key)
    }

    mutating func unknownWorker(_ key: [UInt8], _ type: String) {
        stats.unknownWorker += 1
        logger.info("message from unknown worker; asking it to say HELLO", metadata: ["type": .string(type), "peer": .string(name(of: key))])
        send(.error(ErrorReport(code: "unknown_worker", reason: "\(type) from a worker that has not been admitted; send HELLO")), to: key)
    }

    /// Drops an inconsistent result: counted as malformed, the sender is told why, and the shard
    /// counts one failed attempt (so a worker that keeps sending the same bad result cannot spin
    /// the run forever: after `maxFailures` attempts the run stops naming the reason).
    mutating func reject(_ result: ShardResult, from key: [UInt8], now: Double, why: String) throws {
        stats.malformed += 1
        note("dropped \(why) from \(name(of: key))", level: .warning)
        send(.error(ErrorReport(code: "malformed", reason: why)), to: key)
        switch scheduler.fail(shard: result.shard, from: key, now: now) {
        case .retry, .ignored:
            break
        case .giveUp(let attempts):
            note("shard \(result.shard): giving up after \(attempts) inconsistent results", level: .error)
            try checkpoint(reason: "shard failure")
            broadcastDone(Done(outcome: "failed", reason: why))
            throw CoordinatorError.shardFailed(shard: result.shard, file: nil, reason: why, attempts: attempts)
        }
    }

    mutating func accept(_ result: ShardResult, from key: [UInt8], now: Double) throws {
        guard scheduler.everAdmitted.contains(key) else { return unknownWorker(key, "RESULT") }
        var result = result
        if let encoded = result.encoded, !encoded.countSumsChecked, !result.skipped.isEmpty {
            // Rare path (skip-and-count) decodes the histograms: check the count sums first.
            do { result = ShardResult(shard: result.shard, sampleCount: result.sampleCount, computeSeconds: result.computeSeconds,
                                      encoded: try encoded.checkingCountSums(), skipped: result.skipped) } catch {
                return try reject(result, from: key, now: now, why: "RESULT for shard \(result.shard): \(error)")
            }
        }
        // Every result must carry the same tensors as the ones merged before it; a shard whose
        // samples were all skipped (skip-and-count) carries none.
        let allSkipped = result.tensorCount == 0 && result.sampleCount > 0 && result.skipped.count == result.sampleCount
        if !state.tensorNames.isEmpty && !allSkipped {
            let names = result.tensorNames
            if names != state.tensorNames && Set(names) != Set(state.tensorNames) {
                let missing = Set(state.tensorNames).subtracting(names).sorted().prefix(5)
                let extra = Set(names).subtracting(state.tensorNames).sorted().prefix(5)
                return try reject(result, from: key, now: now,
                                  why: "result for shard \(result.shard) has other tensors (missing \(Array(missing)), extra \(Array(extra)))")
            }
        }
        if !result.skipped.isEmpty, let spec = cfg.shards.first(where: { $0.id == result.shard }),
           let outside = result.skipped.first(where: { !spec.indices.contains($0.index) }) {
            return try reject(result, from: key, now: now,
                              why: "result for shard \(result.shard) (samples \(spec.indices)) lists skipped sample \(outside.index) outside it")
        }
        switch scheduler.complete(shard: result.shard, from: key, samples: result.sampleCount,
                                  computeSeconds: result.computeSeconds, now: now) {
        case .merge:
            do {
                if !result.skipped.isEmpty {
                    // Rare (skip-and-count): merged on its own, with its list of skipped samples.
                    try state.merge(shard: result.shard, tensors: result.tensors, skipped: result.skipped)
                    for s in result.skipped { note("shard \(result.shard) skipped \(s)", level: .warning) }
                } else if let encoded = result.encoded, !state.tensorNames.isEmpty {
                    // Merged with the rest of the batch, and acknowledged then (see flushMerges); the
                    // scheduler already counts the shard as done, so a duplicate arriving meanwhile
                    // is still caught.
                    pendingMerges.append(PendingMerge(result: result, histograms: encoded, key: key))
                    return
                } else if let encoded = result.encoded {
                    // The first result sets the tensor set the others are compared with: merged at once.
                    if let why = try state.mergeChecking(encodedShards: [(result.shard, encoded)])[0] {
                        return try refuseAfterMerge(result, from: key, why: why)
                    }
                } else {
                    try state.merge(shard: result.shard, tensors: result.tensors)
                }
            } catch let error as StateError {
                // The scheduler and the state agree on merged shards, so this cannot happen; keep the run safe anyway.
                note("internal: state refused shard \(result.shard): \(error)", level: .error)
            }
            merged(result, from: key)
        case .backupLost:
            stats.backupResultsDropped += 1
            logger.debug("backup copy finished second: dropped", metadata: ["shard": .stringConvertible(result.shard), "worker": .string(name(of: key))])
            send(.ack(Ack(shard: result.shard, duplicate: true)), to: key)
        case .duplicate:
            stats.duplicates += 1
            note("duplicate result for shard \(result.shard) from \(name(of: key)): acknowledged and dropped", level: .info)
            send(.ack(Ack(shard: result.shard, duplicate: true)), to: key)
        case .unknownShard:
            stats.malformed += 1
            note("result for unknown shard \(result.shard) from \(name(of: key)) dropped", level: .warning)
            send(.error(ErrorReport(code: "unknown_shard", reason: "shard \(result.shard) is not part of job \(cfg.jobID)")), to: key)
        }
    }

    // MARK: checkpoints, end of run

    mutating func checkpointIfDue(now: Double) throws {
        guard cfg.checkpointPath != nil, resultsSinceCheckpoint > 0 else { return }
        if resultsSinceCheckpoint >= cfg.checkpointEveryResults || now - lastCheckpointTime >= cfg.checkpointEverySeconds {
            try checkpoint(reason: "periodic")
        }
    }

    mutating func checkpoint(reason: String) throws {
        try flushMerges()
        guard let path = cfg.checkpointPath else { return }
        do {
            try StateFile.write(state, to: path)
        } catch {
            throw CoordinatorError.output("checkpoint \(path): \(error)")
        }
        stats.checkpoints += 1
        resultsSinceCheckpoint = 0
        lastCheckpointTime = monotonicSeconds()
        logger.debug("checkpoint written", metadata: ["path": .string(path), "reason": .string(reason),
                                                     "shards": .stringConvertible(state.shards.count)])
    }

    mutating func stop(reason: String) throws -> Never {
        try checkpoint(reason: reason)
        broadcastDone(Done(outcome: "stopped", reason: reason))
        note("stopping (\(reason)) with \(state.shards.count) of \(cfg.shards.count) shards merged", level: .warning)
        throw CoordinatorError.interrupted(shardsDone: state.shards.count, shardsTotal: cfg.shards.count, checkpoint: cfg.checkpointPath)
    }

    mutating func finish() throws -> CoordinatorResult {
        try flushMerges()
        let now = monotonicSeconds()
        logger.info("all shards merged; searching thresholds", metadata: ["tensors": .stringConvertible(state.tensorNames.count)])
        broadcastDone(Done(outcome: "finished"))
        let table = CalibrationTable.compute(state: state, method: cfg.method)
        let version = cfg.outputs?.cacheVersion ?? TensorRTCache.defaultVersion
        let algorithm = cfg.outputs?.cacheAlgorithm ?? TensorRTCache.defaultAlgorithm
        let cacheText = table.tensorRTCache(version: version, algorithm: algorithm).text()
        var info = ["job_id": cfg.jobID, "model_digest": cfg.modelDigest, "config_digest": cfg.configDigest]
        if let samples = cfg.stateInfo["samples"] { info["samples"] = samples }
        if let outputs = cfg.outputs {
            do { try outputs.write(table: table, state: state, info: info) } catch { throw CoordinatorError.output("\(error)") }
        }
        if cfg.checkpointPath != nil && cfg.checkpointPath != cfg.outputs?.statePath { try checkpoint(reason: "final") }
        let elapsed = now - startTime
        let final = statusReport(phase: "finished", now: now)
        owner.publishStatus(final)
        owner.onProgress?(final)
        if let pub {
            let publication = Publication(topic: cfg.publishTopic, summary: summary(table: table, elapsed: elapsed),
                                          cache: Array(cacheText.utf8), table: table.json(extra: info))
            let frames = WireCodec.encode(publication)
            _ = try? pub.send(frames, dontWait: true)
            logger.info("result published", metadata: ["topic": .string(cfg.publishTopic), "endpoint": .string(publishEndpoint ?? "")])
            // Hold: late subscribers and status clients still get answers.
            let until = monotonicSeconds() + cfg.publishHoldSeconds
            var lastSent = monotonicSeconds()
            while monotonicSeconds() < until && !owner.isStopRequested {
                if let frames = try? router.receive(dontWait: true), frames.count >= 2 {
                    if case .statusRequest? = try? WireCodec.decode(Array(frames.dropFirst())) {
                        send(.statusReply(final), to: frames[0])
                    } else {
                        send(.done(Done(outcome: "finished")), to: frames[0])
                    }
                    continue
                }
                if monotonicSeconds() - lastSent >= 0.5 {
                    _ = try? pub.send(frames, dontWait: true)
                    lastSent = monotonicSeconds()
                }
                usleep(20_000)
            }
        }
        logger.info("run finished", metadata: [
            "shards": .stringConvertible(state.shards.count), "seconds": .string(String(format: "%.2f", elapsed)),
            "duplicates": .stringConvertible(stats.duplicates), "malformed": .stringConvertible(stats.malformed),
            "refused": .stringConvertible(stats.refused), "expired_workers": .stringConvertible(stats.expiredWorkers),
        ])
        return CoordinatorResult(state: state, table: table, cacheText: cacheText, stats: stats, elapsedSeconds: elapsed)
    }

    func summary(table: CalibrationTable, elapsed: Double) -> [UInt8] {
        struct Summary: Encodable {
            var job_id: String
            var model_digest: String
            var config_digest: String
            var method: String
            var shards: Int
            var tensors: Int
            var elapsed_seconds: Double
            var counters: [String: Int]
        }
        let s = Summary(job_id: cfg.jobID, model_digest: cfg.modelDigest, config_digest: cfg.configDigest,
                        method: cfg.method.description, shards: state.shards.count, tensors: state.tensorNames.count,
                        elapsed_seconds: elapsed, counters: stats.counters)
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return (try? Array(enc.encode(s))) ?? []
    }

    func statusReport(phase: String, now: Double) -> StatusReport {
        let elapsed = now - startTime
        let rate = elapsed > 0 ? Double(samplesThisRun) / elapsed : 0
        let remainingSamples = scheduler.shards.values.filter { !scheduler.done.contains($0.id) }.reduce(0) { $0 + $1.indices.count }
        let samplesDone = scheduler.shards.values.filter { scheduler.done.contains($0.id) }.reduce(0) { $0 + $1.indices.count }
        let workers = scheduler.workers.values.sorted { $0.name < $1.name }.map { w in
            StatusReport.Worker(id: w.name, leased: w.leased.sorted(), done: w.done,
                                samplesPerSecond: now > w.admittedAt ? Double(w.samplesDone) / (now - w.admittedAt) : 0,
                                lastSeenSecondsAgo: now - w.lastSeen)
        }
        return StatusReport(jobID: cfg.jobID, phase: phase, shardsTotal: cfg.shards.count, shardsDone: scheduler.done.count,
                            shardsLeased: scheduler.leasedCount, shardsPending: scheduler.pendingCount,
                            samplesDone: samplesDone, elapsedSeconds: elapsed, samplesPerSecond: rate,
                            etaSeconds: rate > 0 ? Double(remainingSamples) / rate : nil,
                            workers: workers, counters: stats.counters)
    }

    // MARK: helpers

    func send(_ message: WireMessage, to key: [UInt8]) {
        do {
            try router.send([key] + WireCodec.encode(message), dontWait: true)
        } catch {
            logger.debug("send failed", metadata: ["type": .string(message.typeName), "error": .string("\(error)")])
        }
    }

    /// Tells every worker ever admitted (also those dropped as silent but perhaps alive) that the run is over.
    func broadcastDone(_ done: Done) {
        for key in scheduler.everAdmitted { send(.done(done), to: key) }
    }

    func name(of key: [UInt8]) -> String {
        if let w = scheduler.workers[key] { return w.name }
        return WireCodec.preview(key)
    }

    mutating func note(_ event: String, level: Logger.Level) {
        logger.log(level: level, "\(event)")
        stats.events.append(event)
        if stats.events.count > 1000 { stats.events.removeFirst(stats.events.count - 1000) }
    }
}

extension WireMessage {
    /// Messages after which a worker may have free credit (a shard came back, or a window opened).
    var returnsCredit: Bool {
        switch self {
        case .result, .fail, .ready: return true
        default: return false
        }
    }
}

/// Results of a parallel decode, one slot per message (each slot written by exactly one iteration).
private final class DecodeSlots: @unchecked Sendable {
    private var slots: [Result<WireMessage, WireError>?]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ value: Result<WireMessage, WireError>) { lock.withLock { slots[i] = value } }
    func values() -> [Result<WireMessage, WireError>] { lock.withLock { slots.map { $0! } } }
}
