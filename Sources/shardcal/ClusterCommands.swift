import ArgumentParser
import Calibration
import CalibrationIO
import Cluster
import Data
import Foundation
import Logging
import Transport

// Commands of the distributed form: `run` (coordinator + local worker processes), `coordinator`,
// `worker`, `status`, `subscribe`. Registered in the root command by the lead.

// MARK: - wiring the real engine

/// Builds the ShardComputer workers use for real jobs: the FP32 engine over the job's dataset,
/// one thread per worker process (run one worker per core).
enum ClusterWiring {
    static func shardComputerFactory(logger: Logger) -> any ShardComputerFactory {
        ClosureShardComputerFactory { job in
            try EngineShardComputer.make(job: job, threads: 1, logger: logger)
        }
    }
}

// MARK: - shared pieces

/// The config's primary method as the Calibration module's type (both modules name it CalibrationMethod).
func primaryMethod(of job: JobConfig) -> Calibration.CalibrationMethod {
    guard let m = job.methods.first else { return .entropy }
    switch m {
    case .entropy: return .entropy
    case .percentile(let p): return .percentile(p)
    case .mse: return .mse
    case .max: return .max
    }
}

struct CoordinatorOptions: ParsableArguments {
    @Option(name: .long, help: "Job file (YAML).")
    var config: String

    @Option(name: .long, help: "Continue from this state file: only shards missing from it are computed.")
    var resume: String?

    @Option(name: .long, help: "Write calibration.cache, calibration.json and calibration.state into this folder (overrides the config's outputs).")
    var out: String?

    @Option(name: .long, help: "Checkpoint file (default: the state output path).")
    var checkpoint: String?

    @Option(name: .long, help: "PUB endpoint for the final result, e.g. tcp://*:5556.")
    var publish: String?

    @Option(name: .long, help: "Topic of the published result.")
    var topic: String = "shardcal.result"

    @Option(name: .long, help: "After finishing, keep publishing and answering status this many seconds.")
    var publishHold: Double = 0

    @Option(name: .long, help: "Heartbeat interval in seconds (default: the config's cluster.heartbeat_interval).")
    var heartbeat: Double?

    @Option(name: .long, help: "Seconds of silence before a worker's shards are re-leased (default: the config's cluster.worker_timeout).")
    var workerTimeout: Double?

    @Option(name: .customLong("set"), parsing: .singleValue,
            help: ArgumentHelp("Override a config value, in YAML syntax (repeatable), e.g. --set shard_size=32 --set 'dataset.preprocessing.mean=[0.5]'. Workers receive the overridden config.",
                               valueName: "key.path=value"))
    var overrides: [String] = []

    @Flag(name: .long, inversion: .prefixedNo,
          help: "Reuse earlier outputs of the same model and config digests instead of calibrating again (default: the config's outputs.reuse).")
    var reuse: Bool?

    /// The job file with the `--set` overrides applied.
    func loadJob() throws -> JobConfig {
        let parsed = try overrides.map { try ConfigOverride($0) }
        return try JobConfig.load(path: config, overrides: parsed)
    }

    /// What a coordinator will do: run (possibly continuing an earlier state), or nothing because
    /// an earlier cache stands as it is.
    enum Prepared {
        case run(CoordinatorConfig)
        case reusedCache(cache: String, table: String)
    }

    /// Everything the coordinator needs, from the config file and the command line: the shard
    /// plan (extended from the state being continued, if any), outputs, and the reuse decision.
    func prepare(job: JobConfig, endpoint: String, logger: Logger) throws -> Prepared {
        let dataset = try DatasetFactory.make(config: job.dataset, baseDirectory: job.baseDirectory, logger: logger)
        guard let modelData = FileManager.default.contents(atPath: job.model.path) else {
            throw CLIError("cannot read model \(job.model.path)")
        }
        guard let effective = job.effectiveYAML else { throw CLIError("cannot re-serialise \(config)") }
        let modelDigest = try JobConfig.modelDigest(path: job.model.path)
        var c = CoordinatorConfig(
            endpoint: endpoint, publishEndpoint: publish, jobID: "\(String(job.configDigest.prefix(12)))-\(getpid())",
            toolVersion: ToolInfo.version, modelDigest: modelDigest, configDigest: job.configDigest,
            config: Array(effective.utf8), model: Array(modelData), shards: [])
        c.configBaseDirectory = job.baseDirectory
        c.heartbeatInterval = heartbeat ?? job.cluster.heartbeatInterval
        c.livenessTimeout = workerTimeout ?? job.cluster.workerTimeout
        c.maxFailures = job.cluster.maxShardFailures
        c.backupLeases = job.cluster.backupLeases
        c.checkpointEveryResults = job.cluster.checkpointEveryResults
        c.checkpointEverySeconds = job.cluster.checkpointEverySeconds
        c.limits.maxResultBytes = min(job.cluster.maxMessageBytes, 1 << 30)
        c.method = primaryMethod(of: job)
        c.publishTopic = topic
        c.publishHoldSeconds = publishHold
        let header = job.outputs.cacheHeader
        var outputs = CalibrationOutputs(cachePath: job.outputs.cachePath, tablePath: job.outputs.tablePath,
                                         statePath: job.outputs.statePath,
                                         cacheVersion: String(header.tensorRTVersion), cacheAlgorithm: header.algorithm)
        if let out {
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            outputs.cachePath = out + "/calibration.cache"
            outputs.tablePath = out + "/calibration.json"
            outputs.statePath = out + "/calibration.state"
        }
        c.outputs = outputs
        c.checkpointPath = checkpoint ?? outputs.statePath

        let datasetRoot = job.dataset.kind == .imageList ? (job.dataset.path as NSString).deletingLastPathComponent : job.dataset.path
        let planner = ShardPlanner(job: job, modelDigest: modelDigest, sampleCount: dataset.sampleCount) { count in
            JobConfig.sampleNamesDigest(dataset, count: count, root: datasetRoot)
        }
        var plan = try job.shardPlan(sampleCount: dataset.sampleCount)
        if let resume {
            let state = try StateFile.read(resume)
            c.resume = state
            plan = try planner.plan(continuing: state, path: resume)
        } else if reuse ?? job.outputs.reuse {
            switch try reuseDecision(planner: planner, outputs: outputs, modelDigest: modelDigest, job: job, logger: logger) {
            case let .state(state, plan: continued): c.resume = state; plan = continued
            case let .cache(cache, table): return .reusedCache(cache: cache, table: table)
            case .none: break
            }
        }
        c.shards = plan.ranges.enumerated().map { ShardSpec(id: $0.offset, indices: $0.element) }
        c.stateInfo = ["samples": String(dataset.sampleCount), "shard_size": String(job.shardSize), "segments": plan.segmentsText]
        if let names = JobConfig.sampleNamesDigest(dataset, count: dataset.sampleCount, root: datasetRoot) { c.stateInfo["sample_names"] = names }
        if plan.segments.count > 1, let base = c.resume {
            logger.notice("continuing a state of \(plan.sampleCount - plan.segments.last!) samples with \(plan.segments.last!) new ones: \(c.shards.count - base.shards.count) shards to compute")
        }
        return .run(c)
    }

    /// ``prepare(job:endpoint:logger:)``, or nil after saying that an earlier cache stands as it is.
    func prepareUnlessReused(job: JobConfig, endpoint: String, logger: Logger) throws -> CoordinatorConfig? {
        switch try prepare(job: job, endpoint: endpoint, logger: logger) {
        case .run(let c):
            return c
        case let .reusedCache(cache, table):
            print("reused \(cache) and \(table) (same model and config digests); nothing calibrated")
            return nil
        }
    }

    enum ReuseFound {
        case state(CalibrationState, plan: ShardPlan)
        case cache(String, String)
    }

    /// Applies `outputs.reuse` (or `--reuse`), as TensorRT's `readCalibrationCache` does, but only
    /// for outputs that carry this model's and this configuration's digests.
    func reuseDecision(planner: ShardPlanner, outputs: CalibrationOutputs, modelDigest: String, job: JobConfig,
                       logger: Logger) throws -> ReuseFound? {
        // The plan the earlier state implies, grown to this dataset (nil: that state cannot be continued).
        var continued: (CalibrationState, ShardPlan)?
        var why: String?
        if let path = outputs.statePath, FileManager.default.fileExists(atPath: path) {
            let state: CalibrationState
            do { state = try StateFile.read(path) } catch { throw CLIError("outputs.reuse: \(error)") }
            do { continued = (state, try planner.plan(continuing: state, path: path)) } catch { why = "\(error)" }
        }
        let plan = try continued?.1 ?? job.shardPlan(sampleCount: planner.sampleCount)
        let decision = try CalibrationReuse.decide(
            statePath: continued == nil ? nil : outputs.statePath, cachePath: outputs.cachePath, tablePath: outputs.tablePath,
            modelDigest: modelDigest, configDigest: job.configDigest, shardIDs: Set(0 ..< plan.shardCount),
            sampleCount: planner.sampleCount, cacheVersion: outputs.cacheVersion, cacheAlgorithm: outputs.cacheAlgorithm)
        if let why { logger.notice("not continuing \(outputs.statePath!): \(why)") }
        switch decision {
        case let .completeState(state, path):
            logger.notice("reusing \(path): every shard of this model and config is merged; searching it again, no workers needed")
            return .state(state, plan: plan)
        case let .partialState(state, path):
            logger.notice("reusing \(path): continuing with the \(plan.shardCount - state.shards.count) shards it lacks")
            return .state(state, plan: plan)
        case let .cache(cache, table):
            logger.notice("reusing \(cache): its table \(table) names this model, config digest and sample count; nothing to compute")
            return .cache(cache, table)
        case let .compute(reason):
            logger.notice("nothing to reuse: \(reason)")
            return nil
        }
    }
}

/// The shard plan of a job, possibly continuing an earlier state (see ``ShardPlan/segments``).
struct ShardPlanner {
    let job: JobConfig
    let modelDigest: String
    let sampleCount: Int
    /// Digest of the names of the dataset's first `n` samples (nil for array datasets).
    let sampleNames: (Int) -> String?

    /// The plan that continues `state`: its own shards as they were, plus new shards for any samples
    /// the dataset has beyond them. A state of another model or configuration gets the plain plan
    /// (the coordinator then refuses it, naming both digests).
    func plan(continuing state: CalibrationState, path: String) throws -> ShardPlan {
        let fresh = try job.shardPlan(sampleCount: sampleCount)
        guard state.modelDigest == modelDigest, state.configDigest == job.configDigest else { return fresh }
        let old: ShardPlan
        if let text = state.info["segments"] {
            old = try ShardPlan(segmentsText: text, shardSize: job.shardSize)
        } else if let samples = state.info["samples"].flatMap({ Int($0) }) {
            old = try ShardPlan(sampleCount: samples, shardSize: job.shardSize)
        } else {
            return fresh
        }
        guard sampleCount >= old.sampleCount else {
            throw CLIError("cannot continue \(path): it covers \(old.sampleCount) samples but the dataset now has only \(sampleCount) (dataset.limit or files removed?)")
        }
        if sampleCount > old.sampleCount, let recorded = state.info["sample_names"], let now = sampleNames(old.sampleCount), recorded != now {
            throw CLIError("cannot continue \(path) with a larger dataset: its first \(old.sampleCount) samples are no longer the ones the state merged " +
                           "(images inserted, renamed or reordered); new samples must come after them (e.g. a list file with lines appended)")
        }
        return try old.extended(to: sampleCount)
    }
}

/// Routes SIGINT/SIGTERM to `action` (once each) instead of killing the process.
final class SignalTrap: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    init(_ action: @escaping @Sendable (Int32) -> Void) {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { action(sig) }
            s.resume()
            sources.append(s)
        }
    }
    func cancel() {
        for s in sources { s.cancel() }
        for sig in [SIGINT, SIGTERM] { signal(sig, SIG_DFL) }
    }
}

/// A one-line progress display: a bar on a TTY, a log line every few seconds otherwise.
final class ProgressPrinter: @unchecked Sendable {
    private let tty = isatty(2) != 0
    private let lock = NSLock()
    private var lastLine = 0.0
    func update(_ s: StatusReport) {
        let fraction = s.shardsTotal > 0 ? Double(s.shardsDone) / Double(s.shardsTotal) : 1
        let eta = s.etaSeconds.map { String(format: "%.0fs", $0) } ?? "?"
        let text = String(format: "%d/%d shards  %.1f img/s  ETA %@  workers %d", s.shardsDone, s.shardsTotal,
                          s.samplesPerSecond, eta, s.workers.count)
        lock.withLock {
            if tty {
                let width = 30
                let filled = Int(fraction * Double(width))
                let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
                FileHandle.standardError.write(Foundation.Data("\r\(bar) \(text)\u{1B}[K".utf8))
                if s.phase != "running" { FileHandle.standardError.write(Foundation.Data("\n".utf8)) }
            } else {
                let now = Date().timeIntervalSince1970
                if now - lastLine >= 5 || s.phase != "running" {
                    lastLine = now
                    printError("progress: \(text)")
                }
            }
        }
    }
}

/// The skipped-samples line of the summary (nil when none was skipped).
func describeSkipped(_ result: CoordinatorResult, outputs: CalibrationOutputs?) -> String? {
    let skipped = result.state.skippedSamples
    guard !skipped.isEmpty else { return nil }
    let listed = outputs?.tablePath.map { " (all listed in \($0) under skipped_samples)" } ?? ""
    let first = skipped.prefix(3).map(\.description).joined(separator: "; ")
    return "skipped \(skipped.count) unreadable samples\(listed): \(first)\(skipped.count > 3 ? "; ..." : "")"
}

func describeCounters(_ stats: CoordinatorStats) -> String {
    "merged \(stats.resultsMerged), duplicates \(stats.duplicates), malformed \(stats.malformed), refused \(stats.refused), " +
        "expired workers \(stats.expiredWorkers), failures \(stats.failures), checkpoints \(stats.checkpoints)" +
        (stats.backupLeases > 0 ? ", backup leases \(stats.backupLeases) (\(stats.backupResultsDropped) finished second)" : "")
}

/// Runs a coordinator to the end with signal handling; returns the result or throws a CLIError.
func runCoordinator(_ cfg: CoordinatorConfig, context: ZMQContext, logger: Logger,
                    progress: ProgressPrinter?, afterStart: (String, String?) throws -> Void) throws -> CoordinatorResult {
    let coordinator = Coordinator(config: cfg, context: context, logger: logger)
    if let progress { coordinator.onProgress = { progress.update($0) } }
    let trap = SignalTrap { sig in
        logger.warning("signal \(sig): checkpointing and stopping")
        coordinator.requestStop()
    }
    defer { trap.cancel() }
    let (endpoint, pub) = try coordinator.start()
    logger.info("coordinator ready", metadata: ["endpoint": .string(endpoint), "publish": .string(pub ?? "-")])
    do { try afterStart(endpoint, pub) } catch {
        coordinator.requestStop()
        _ = try? coordinator.wait()
        throw error
    }
    do {
        return try coordinator.wait()
    } catch let e as CoordinatorError {
        throw CLIError(e.description)
    }
}

// MARK: - commands

struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Serve a calibration job to workers on other machines, merge their histograms and write the outputs.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: CoordinatorOptions

    @Option(name: .long, help: "ROUTER endpoint workers connect to, e.g. tcp://*:5555 (default: the config's cluster.bind).")
    var bind: String?

    func run() throws {
        let logger = global.makeLogger("shardcal.coordinator")
        let job = try options.loadJob()
        guard let cfg = try options.prepareUnlessReused(job: job, endpoint: bind ?? job.cluster.bind, logger: logger) else { return }
        let context = try ZMQContext()
        defer { context.terminate() }
        let result = try runCoordinator(cfg, context: context, logger: logger, progress: ProgressPrinter()) { _, _ in }
        print("calibrated \(result.state.tensorNames.count) tensors from \(result.state.shards.count) shards in " +
              String(format: "%.2f s", result.elapsedSeconds) + " (\(describeCounters(result.stats)))")
        if let line = describeSkipped(result, outputs: cfg.outputs) { print(line) }
    }
}

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Compute shards for a coordinator: it sends the job (config and model, verified by digest).")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Coordinator endpoint, e.g. tcp://host:5555.")
    var connect: String

    @Option(name: .long, help: "Worker id (default: host-pid-random).")
    var id: String?

    @Option(name: .long, help: "Shards held at once (one computing, the rest queued).")
    var credits: Int = 2

    @Option(name: .long, help: "Folder caching models by digest (default: $XDG_CACHE_HOME/shardcal/models or ~/.cache/shardcal/models).")
    var modelCache: String?

    @Option(name: .long, help: "Give up if no coordinator answers within this many seconds (default: keep trying).")
    var connectTimeout: Double?

    @Option(name: .long, help: .hidden)
    var exitWithParent: Int32?

    func validate() throws {
        if credits < 1 || credits > 64 { throw ValidationError("--credits must be in 1...64, got \(credits)") }
    }

    func run() throws {
        let logger = global.makeLogger("shardcal.worker")
        let env = ProcessInfo.processInfo.environment
        let cacheDir = modelCache ?? ((env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")) + "/shardcal/models")
        try? FileManager.default.createDirectory(atPath: cacheDir, withIntermediateDirectories: true)
        var wc = WorkerConfig(endpoint: connect, workerID: id ?? WorkerConfig.defaultWorkerID(), toolVersion: ToolInfo.version)
        wc.credits = credits
        wc.modelCacheDirectory = cacheDir
        wc.connectTimeout = connectTimeout
        wc.digest = { bytes in
            // Hash through a temporary file with the same routine the config loader uses.
            let tmp = cacheDir + "/.verify-\(getpid())-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: tmp) }
            guard FileManager.default.createFile(atPath: tmp, contents: Foundation.Data(bytes)),
                  let digest = try? JobConfig.modelDigest(path: tmp) else { return "unverifiable" }
            return digest
        }
        let context = try ZMQContext()
        defer { context.terminate() }
        let worker = Worker(config: wc, factory: ClusterWiring.shardComputerFactory(logger: logger), context: context, logger: logger)
        let trap = SignalTrap { _ in worker.requestStop() }
        defer { trap.cancel() }
        if let parent = exitWithParent {
            // A local worker of `shardcal run` ends with its run, even if that process was killed.
            Thread.detachNewThread {
                while getppid() == parent { sleep(1) }
                logger.warning("parent process \(parent) is gone; worker exiting")
                _exit(3)
            }
        }
        switch try worker.run() {
        case .finished(let done):
            logger.info("run over: \(done.outcome)\(done.reason.map { " (\($0))" } ?? "")")
            // The compute thread may still be on a copy nobody needs (a backup lease that lost its
            // race, or the original it overtook). The run is over: end now rather than wait for it
            // (_exit skips library destructors, which must not run under a thread still computing).
            fflush(nil)
            _exit(done.outcome == "failed" ? 1 : 0)
        case .refused(let r):
            throw CLIError("refused by the coordinator: \(r.reason)")
        case .stopped:
            throw ExitCode(130)
        }
    }
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Calibrate on this machine: a coordinator plus N worker processes over local transport.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: CoordinatorOptions

    @Option(name: .long, help: "Worker processes (default: the config's cluster.workers, or one per core).")
    var workers: Int?

    func validate() throws {
        if let workers, workers < 1 || workers > 256 { throw ValidationError("--workers must be in 1...256, got \(workers)") }
    }

    func run() throws {
        let logger = global.makeLogger("shardcal.run")
        let job = try options.loadJob()
        var count = workers ?? (job.cluster.workers > 0 ? job.cluster.workers : ProcessInfo.processInfo.activeProcessorCount)
        let socketDir = NSTemporaryDirectory() + "shardcal-\(getpid())"
        try FileManager.default.createDirectory(atPath: socketDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: socketDir) }
        guard let cfg = try options.prepareUnlessReused(job: job, endpoint: "ipc://\(socketDir)/coordinator", logger: logger) else { return }
        if let merged = cfg.resume?.shards, Set(cfg.shards.map(\.id)).isSubset(of: merged) { count = 0 }
        let context = try ZMQContext()
        defer { context.terminate() }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        var children: [Process] = []
        defer {
            for p in children where p.isRunning { p.terminate() }
            for p in children { p.waitUntilExit() }
        }
        let result = try runCoordinator(cfg, context: context, logger: logger, progress: ProgressPrinter()) { endpoint, _ in
            for i in 0..<count {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: executable)
                p.arguments = ["worker", "--connect", endpoint, "--id", "local-\(getpid())-\(i)",
                               "--exit-with-parent", String(getpid()), "--log-level", global.logLevel == .info ? "warning" : global.logLevel.rawValue]
                try p.run()
                children.append(p)
            }
            logger.info("started \(count) worker processes")
        }
        print(TableRendering.thresholds(result.table), terminator: "")
        print("calibrated \(result.state.tensorNames.count) tensors from \(result.state.shards.count) shards with \(count) workers in " +
              String(format: "%.2f s", result.elapsedSeconds) + " (\(describeCounters(result.stats)))")
        if let line = describeSkipped(result, outputs: cfg.outputs) { print(line) }
        if let out = cfg.outputs {
            for path in [out.cachePath, out.tablePath, out.statePath].compactMap({ $0 }) { print("wrote \(path)") }
        }
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Ask a coordinator for progress: workers, shards done/leased/pending, throughput, ETA.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Coordinator endpoint, e.g. tcp://host:5555.")
    var connect: String

    @Flag(name: .long, help: "Print the raw JSON reply.")
    var json = false

    @Option(name: .long, help: "Seconds to wait for the reply.")
    var timeout: Double = 5

    func run() throws {
        let context = try ZMQContext()
        defer { context.terminate() }
        let socket = try ZMQSocket(context, type: .dealer)
        defer { socket.close() }
        try socket.setLinger(0)
        try socket.setReceiveTimeout(Int(timeout * 1000))
        try socket.connect(connect)
        try socket.send(WireCodec.encode(.statusRequest))
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let frames = try socket.receive() else { break }
            guard case .statusReply(let s)? = try? WireCodec.decode(frames) else { continue }
            if json {
                print(String(decoding: WireCodec.encode(.statusReply(s))[2], as: UTF8.self))
            } else {
                print("job \(s.jobID): \(s.phase)")
                print("shards: \(s.shardsDone) done, \(s.shardsLeased) leased, \(s.shardsPending) pending of \(s.shardsTotal)")
                print(String(format: "throughput: %.1f samples/s, elapsed %.1f s, ETA %@", s.samplesPerSecond, s.elapsedSeconds,
                             s.etaSeconds.map { String(format: "%.0f s", $0) } ?? "unknown"))
                let header = "WORKER".padding(toLength: 28, withPad: " ", startingAt: 0) + "DONE  LEASED        SAMPLES/S  LAST SEEN"
                print(header)
                for w in s.workers {
                    print(w.id.padding(toLength: 28, withPad: " ", startingAt: 0) +
                          String(format: "%4d  %-12@ %9.1f  %.1f s ago", w.done, w.leased.map(String.init).joined(separator: ","),
                                 w.samplesPerSecond, w.lastSeenSecondsAgo))
                }
                let counters = s.counters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                print("events: \(counters)")
            }
            return
        }
        throw CLIError("no status reply from \(connect) within \(timeout) s")
    }
}

struct SubscribeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subscribe",
        abstract: "Wait for a coordinator's published result and save it (for build steps that depend on it).")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "The coordinator's PUB endpoint, e.g. tcp://host:5556.")
    var connect: String

    @Option(name: .long, help: "Topic prefix to wait for.")
    var topic: String = "shardcal.result"

    @Option(name: .long, help: "Folder for calibration.cache, calibration.json and summary.json.")
    var out: String = "."

    @Option(name: .long, help: "Give up after this many seconds (default: wait forever).")
    var timeout: Double?

    func run() throws {
        let logger = global.makeLogger("shardcal.subscribe")
        let context = try ZMQContext()
        defer { context.terminate() }
        let socket = try ZMQSocket(context, type: .sub)
        defer { socket.close() }
        try socket.setLinger(0)
        try socket.setReceiveTimeout(500)
        try socket.subscribe(topic)
        try socket.connect(connect)
        let start = Date()
        let stop = StopFlag()
        let trap = SignalTrap { _ in stop.set() }
        defer { trap.cancel() }
        while !stop.isSet {
            if let timeout, Date().timeIntervalSince(start) > timeout {
                throw CLIError("no result published on \(connect) (topic \(topic)) within \(timeout) s")
            }
            guard let frames = try socket.receive() else { continue }
            let publication: Publication
            do { publication = try WireCodec.decodePublication(frames) } catch {
                logger.warning("ignored a bad publication: \(error)")
                continue
            }
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            try AtomicFile.write(publication.cache, to: out + "/calibration.cache")
            try AtomicFile.write(publication.table, to: out + "/calibration.json")
            try AtomicFile.write(publication.summary, to: out + "/summary.json")
            print("received \(publication.topic): wrote \(out)/calibration.cache, \(out)/calibration.json, \(out)/summary.json")
            return
        }
        throw ExitCode(130)
    }
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

// MARK: - synthetic coordinator load test

/// A read-only buffer shared by the fake workers' threads (never written after set-up).
struct BorrowedBytes: @unchecked Sendable {
    let buffer: UnsafeRawBufferPointer
}

/// User + system CPU seconds of this process so far (all threads).
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// Fake workers send results of 100 tensors × 4096 bins as fast as their credits allow; reports how
/// many results per second one coordinator decodes, validates and merges. Hidden: a benchmark.
struct BenchCoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-coordinator",
        abstract: "Synthetic load test: results merged per second by one coordinator.",
        shouldDisplay: false)

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Results (shards) to merge.")
    var shards: Int = 4000

    @Option(name: .long, help: "Fake worker threads.")
    var workers: Int = 4

    @Option(name: .long, help: "Tensors per result.")
    var tensors: Int = 100

    @Option(name: .long, help: "Bins per tensor histogram (≤ 4096).")
    var bins: Int = 4096

    @Option(name: .long, help: "Largest bin count (sets the bytes per count on the wire: 255 → 1, 65535 → 2, 16777215 → 3, 4294967295 → 4, more → 8).")
    var maxCount: UInt64 = 1_000_000

    @Option(name: .long, help: "Credits per fake worker.")
    var credits: Int = 8

    @Option(name: .long, help: "Transport: tcp or ipc.")
    var transport: String = "tcp"

    @Option(name: .long, help: "Checkpoint the merged state every this many results (0: never, the default).")
    var checkpointEvery: Int = 0

    func run() throws {
        var logger = global.makeLogger("shardcal.bench-coordinator")
        if global.logLevel == .info { logger.logLevel = .warning }
        // One pre-built payload (valid histograms, full 4096-bin layout), reused for every shard.
        var rng = SystemRandomNumberGenerator()
        var named: [NamedHistogram] = []
        for t in 0..<tensors {
            var counts = (0..<bins).map { _ in UInt64.random(in: 0...maxCount, using: &rng) }
            counts[bins - 1] = max(1, counts[bins - 1])
            let total = counts.reduce(0, +)
            let k = -10 + t % 8
            let top = Float(sign: .plus, exponent: k, significand: 1) * (Float(bins) - 0.5)
            let h = try Histogram(binWidthLog2: k, counts: counts, valueCount: total, zeroCount: 0, nanCount: 0,
                                  positiveInfinityCount: 0, negativeInfinityCount: 0, minimum: -top, maximum: top)
            named.append(NamedHistogram(name: "tensor_\(t)", histogram: h))
        }
        let payload = WireCodec.encodeTensors(named)
        // The fake workers send this one buffer for every shard without copying it (it outlives
        // every socket): a worker process pays that copy on its own machine, not the coordinator's.
        // Never freed: it must outlive every fake worker's context, and the process ends with the bench.
        let shared = UnsafeMutableRawBufferPointer.allocate(byteCount: payload.count, alignment: 64)
        payload.withUnsafeBytes { shared.copyMemory(from: $0) }
        let sharedPayload = BorrowedBytes(buffer: UnsafeRawBufferPointer(shared))
        let tensorCount = named.count
        let endpoint = transport == "ipc" ? "ipc://\(NSTemporaryDirectory())shardcal-bench-\(getpid())" : "tcp://127.0.0.1:*"
        var cfg = CoordinatorConfig(endpoint: endpoint, jobID: "bench", toolVersion: ToolInfo.version, modelDigest: "bench-model",
                                    configDigest: "bench-config", config: [], model: [],
                                    shards: (0..<shards).map { ShardSpec(id: $0, indices: $0 ..< $0 + 1) })
        cfg.livenessTimeout = 60
        cfg.heartbeatInterval = 1
        if checkpointEvery > 0 {
            cfg.checkpointPath = NSTemporaryDirectory() + "shardcal-bench-\(getpid()).state"
            cfg.checkpointEveryResults = checkpointEvery
        }
        let context = try ZMQContext()
        defer { context.terminate() }
        let coordinator = Coordinator(config: cfg, context: context, logger: logger)
        let (ep, _) = try coordinator.start()
        let started = Date()
        let cpuBefore = processCPUSeconds()
        var threads: [Thread] = []
        let finished = DispatchSemaphore(value: 0)
        for w in 0..<workers {
            let creditCount = credits
            let t = Thread {
                defer { finished.signal() }
                // Each fake worker has its own context (own libzmq I/O thread), as a worker process
                // would: sharing the coordinator's made one I/O thread copy every byte both ways.
                guard let workerContext = try? ZMQContext() else { return }
                defer { workerContext.terminate() }
                guard let s = try? ZMQSocket(workerContext, type: .dealer) else { return }
                defer { s.close() }
                try? s.setLinger(0)
                try? s.setRoutingID(Array("bench-\(w)".utf8))
                try? s.setReceiveTimeout(1000)
                try? s.connect(ep)
                _ = try? s.send(WireCodec.encode(.hello(Hello(toolVersion: ToolInfo.version, workerID: "bench-\(w)",
                                                               cachedModels: ["bench-model"]))))
                var idle = 0
                while idle < 30 {
                    guard let frames = try? s.receive() else { idle += 1; continue }
                    idle = 0
                    switch try? WireCodec.decode(frames) {
                    case .job?:
                        _ = try? s.send(WireCodec.encode(.ready(Ready(credits: creditCount, modelDigest: "bench-model"))))
                    case .lease(let lease)?:
                        let header = #"{"compute_seconds":0,"sample_count":1,"shard":\#(lease.shard),"tensor_count":\#(tensorCount)}"#
                        _ = try? s.send([WireCodec.tag, Array("RESULT".utf8), Array(header.utf8)], borrowing: sharedPayload.buffer)
                    case .done?: return
                    default: break
                    }
                }
            }
            t.start()
            threads.append(t)
        }
        let result = try coordinator.wait()
        let wall = Date().timeIntervalSince(started)
        // CPU of the whole process (coordinator, libzmq I/O threads and the fake workers), start to
        // end: divided by the results, a figure that depends less on other load than results/s.
        let cpu = processCPUSeconds() - cpuBefore
        for _ in 0..<workers { _ = finished.wait(timeout: .now() + 40) }
        if let path = cfg.checkpointPath { try? FileManager.default.removeItem(atPath: path) }
        let rate = Double(result.stats.resultsMerged) / result.elapsedSeconds
        print("bench-coordinator: \(result.stats.resultsMerged) results × \(tensors) tensors × \(bins) bins " +
              "(\(payload.count / 1024) KiB payload each) from \(workers) fake workers over \(transport)" +
              (checkpointEvery > 0 ? ", checkpoint every \(checkpointEvery) results (\(result.stats.checkpoints) written)" : ""))
        print(String(format: "  coordinator elapsed %.3f s (wall %.3f s incl. start-up), %.0f results merged per second, %.2f GB/s of histogram payload",
                     result.elapsedSeconds, wall, rate, rate * Double(payload.count) / 1e9))
        print(String(format: "  process CPU %.2f s (%.2f ms per result, fake workers and end-of-run threshold search included) over %.2f s wall: %.0f%% of one core",
                     cpu, cpu * 1000 / Double(max(1, result.stats.resultsMerged)), wall, 100 * cpu / wall))
        print("  target: >= 2000 results/s -> \(rate >= 2000 ? "met" : "NOT met")")
    }
}
