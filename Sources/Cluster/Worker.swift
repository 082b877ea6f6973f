import Calibration
import Foundation
import Logging
import Transport

public struct WorkerConfig: Sendable {
    /// Coordinator ROUTER endpoint, e.g. `tcp://host:5555`.
    public var endpoint: String
    /// Unique, stable name; also the ZeroMQ routing id (so a reconnect is recognised).
    public var workerID: String
    public var toolVersion: String
    /// Leases held at once (one computing, the rest queued so the worker never idles).
    public var credits: Int = 2
    /// Heartbeat period until the job says otherwise (seconds).
    public var heartbeatInterval: Double = 1.0
    /// Silence from the coordinator after which the worker reconnects (seconds).
    public var livenessTimeout: Double = 5.0
    /// Reconnect backoff: first wait, doubled up to the maximum (seconds).
    public var reconnectInitial: Double = 0.1
    public var reconnectMax: Double = 5.0
    /// Give up after this long without ever reaching a coordinator (nil: keep trying).
    public var connectTimeout: Double? = nil
    /// Local model cache directory (files named by digest); nil keeps models in memory only.
    public var modelCacheDirectory: String? = nil
    /// Computes the digest of received model bytes (sha256 hex in production). nil skips verification.
    public var digest: (@Sendable ([UInt8]) -> String)? = nil

    public init(endpoint: String, workerID: String, toolVersion: String) {
        self.endpoint = endpoint
        self.workerID = workerID
        self.toolVersion = toolVersion
    }

    /// host-pid-random: unique enough for a routing id.
    public static func defaultWorkerID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        return "\(host)-\(getpid())-\(UInt32.random(in: 0 ... UInt32.max) % 100_000)"
    }
}

public enum WorkerOutcome: Sendable, Equatable {
    /// The coordinator said DONE.
    case finished(Done)
    /// The coordinator refused this worker (names the field and both values).
    case refused(Refuse)
    /// `requestStop()` was called.
    case stopped
}

public enum WorkerError: Error, CustomStringConvertible, Equatable {
    case modelDigestMismatch(expected: String, computed: String)
    case modelNotCached(digest: String)
    case setupFailed(String)
    case coordinatorUnreachable(endpoint: String, seconds: Double)
    case socket(ZMQError)

    public var description: String {
        switch self {
        case let .modelDigestMismatch(expected, computed):
            return "received model does not match its digest: job says \(expected), bytes hash to \(computed)"
        case .modelNotCached(let d): return "coordinator sent no model bytes and model \(d) is not in the local cache"
        case .setupFailed(let why): return "could not set up the job: \(why)"
        case let .coordinatorUnreachable(endpoint, seconds): return "no answer from coordinator \(endpoint) within \(seconds) s"
        case .socket(let e): return "worker socket error: \(e)"
        }
    }
}

/// A worker: a DEALER I/O loop on the calling thread (heartbeats, reconnects, leases in, results
/// out) and one compute thread that runs the `ShardComputer`; they talk over an inproc PAIR.
public final class Worker: @unchecked Sendable {
    public let config: WorkerConfig
    let factory: any ShardComputerFactory
    let context: ZMQContext
    let logger: Logger
    private let lock = NSLock()
    private var stopFlag = false
    private var abandonFlag = false

    public init(config: WorkerConfig, factory: any ShardComputerFactory, context: ZMQContext, logger: Logger) {
        self.config = config
        self.factory = factory
        self.context = context
        var l = logger
        l[metadataKey: "worker"] = .string(config.workerID)
        self.logger = l
    }

    /// Leaves the loop at the next tick, politely (no more messages are sent).
    public func requestStop() { lock.withLock { stopFlag = true } }

    /// Test hook simulating a crash: the I/O loop exits at once, sending nothing (not even a result
    /// in progress). The compute thread finishes its current shard and exits without sending it.
    public func abandon() { lock.withLock { abandonFlag = true; stopFlag = true } }

    var isStopping: Bool { lock.withLock { stopFlag } }
    var isAbandoned: Bool { lock.withLock { abandonFlag } }

    /// Runs until the coordinator says DONE, refuses us, or `requestStop()`.
    public func run() throws -> WorkerOutcome {
        var io = WorkerIO(worker: self)
        defer { io.shutdown() }
        return try io.run()
    }
}

/// Messages on the inproc PAIR between the I/O thread and the compute thread:
/// I/O → compute: ["LEASE", lease JSON] or ["STOP"]; compute → I/O: ["UP"] / ["DOWN", reason] once
/// after setup, then full protocol messages (RESULT / FAIL frames) to forward as-is.
struct WorkerIO {
    let worker: Worker
    var logger: Logger { worker.logger }
    var cfg: WorkerConfig { worker.config }
    var dealer: ZMQSocket?
    var pipe: ZMQSocket?
    var pipeEndpoint = "inproc://shardcal-worker-\(UUID().uuidString)"
    var computeThread: Thread?
    var job: Job?
    var computeUp = false
    var heartbeatInterval: Double
    var livenessTimeout: Double
    var lastHeard = monotonicSeconds()
    var lastSent = 0.0
    var everHeard = false
    var backoff: Double
    let startTime = monotonicSeconds()
    var outstanding: Set<Int> = []
    var computeControl: ComputeControl?

    init(worker: Worker) {
        self.worker = worker
        heartbeatInterval = worker.config.heartbeatInterval
        livenessTimeout = worker.config.livenessTimeout
        backoff = worker.config.reconnectInitial
    }

    mutating func connect() throws {
        dealer?.close()
        let d = try ZMQSocket(worker.context, type: .dealer)
        try d.setLinger(0)
        try d.setRoutingID(Array(cfg.workerID.utf8))
        try d.setReconnect(initialMs: Int(cfg.reconnectInitial * 1000), maxMs: Int(cfg.reconnectMax * 1000))
        try d.setSendHighWaterMark(1000)
        try d.connect(cfg.endpoint)
        dealer = d
        lastHeard = monotonicSeconds()
        sendHello()
    }

    func sendHello() {
        var cached: [String] = []
        if let job { cached.append(job.modelDigest) }
        if let dir = cfg.modelCacheDirectory, let names = try? FileManager.default.contentsOfDirectory(atPath: dir) {
            cached += names.filter { $0.hasSuffix(".onnx") }.map { String($0.dropLast(5)) }
        }
        send(.hello(Hello(toolVersion: cfg.toolVersion, workerID: cfg.workerID,
                          modelDigest: computeUp ? job?.modelDigest : nil, cachedModels: Array(Set(cached)).sorted())))
    }

    func send(_ m: WireMessage) {
        sendFrames(WireCodec.encode(m))
    }

    func sendFrames(_ frames: [[UInt8]]) {
        do { try dealer?.send(frames, dontWait: true) } catch {
            logger.debug("send failed", metadata: ["error": .string("\(error)")])
        }
    }

    mutating func shutdown() {
        computeControl?.stop()
        if let pipe {
            _ = try? pipe.send([Array("STOP".utf8)], dontWait: true)
            pipe.close()
        }
        pipe = nil
        dealer?.close()
        dealer = nil
    }

    mutating func run() throws -> WorkerOutcome {
        do { try connect() } catch let e as ZMQError { throw WorkerError.socket(e) }
        while true {
            if worker.isStopping { return .stopped }
            let now = monotonicSeconds()
            if now - lastSent >= heartbeatInterval {
                send(.heartbeat)
                lastSent = now
            }
            if now - lastHeard > livenessTimeout {
                if !everHeard, let limit = cfg.connectTimeout, now - startTime > limit {
                    throw WorkerError.coordinatorUnreachable(endpoint: cfg.endpoint, seconds: limit)
                }
                logger.warning("coordinator silent; reconnecting", metadata: ["backoff_s": .stringConvertible(backoff)])
                sleepInterruptibly(backoff)
                backoff = min(backoff * 2, cfg.reconnectMax)
                do { try connect() } catch let e as ZMQError { throw WorkerError.socket(e) }
                continue
            }
            var poller = ZMQPoller()
            poller.add(dealer!)
            if let pipe { poller.add(pipe) }
            let ready: [ZMQPoller.Events]
            do { ready = try poller.poll(timeoutMs: 50) } catch let e as ZMQError { throw WorkerError.socket(e) }
            if worker.isStopping { return .stopped }
            if ready[0].contains(.readable) {
                for _ in 0..<1000 {
                    guard let frames = try receive(dealer!) else { break }
                    if let outcome = try handleCoordinator(frames) { return outcome }
                }
            }
            if ready.count > 1, ready[1].contains(.readable), let pipe {
                for _ in 0..<1000 {
                    guard let frames = try receive(pipe) else { break }
                    try handleCompute(frames)
                }
            }
        }
    }

    func receive(_ s: ZMQSocket) throws -> [[UInt8]]? {
        do { return try s.receive(dontWait: true) } catch let e as ZMQError { throw WorkerError.socket(e) }
    }

    func sleepInterruptibly(_ seconds: Double) {
        let end = monotonicSeconds() + seconds
        while monotonicSeconds() < end && !worker.isStopping { usleep(10_000) }
    }

    mutating func handleCoordinator(_ frames: [[UInt8]]) throws -> WorkerOutcome? {
        lastHeard = monotonicSeconds()
        everHeard = true
        backoff = cfg.reconnectInitial
        let message: WireMessage
        do { message = try WireCodec.decode(frames, limits: WireLimits(maxJobBytes: Int.max)) } catch {
            logger.warning("dropped bad message from coordinator: \(error)")
            send(.error(ErrorReport(code: error.code, reason: error.description)))
            return nil
        }
        switch message {
        case .job(let j):
            try startJob(j)
        case .lease(let lease):
            outstanding.insert(lease.shard)
            _ = try? pipe?.send([Array("LEASE".utf8), WireCodec.encode(.lease(lease))[2]])
        case .ack(let ack):
            outstanding.remove(ack.shard)
            if ack.duplicate { logger.info("coordinator already had shard \(ack.shard); result dropped there") }
        case .heartbeat:
            break
        case .refuse(let r):
            logger.error("refused by coordinator: \(r.reason)")
            return .refused(r)
        case .done(let d):
            logger.info("coordinator says the run is over", metadata: ["outcome": .string(d.outcome)])
            return .finished(d)
        case .error(let report):
            if report.code == "unknown_worker" {
                logger.info("coordinator does not know us (it dropped us or restarted); saying HELLO again")
                sendHello()
                if computeUp, let job { send(.ready(Ready(credits: cfg.credits, modelDigest: job.modelDigest))) }
            } else {
                logger.warning("coordinator dropped our message: \(report.code): \(report.reason)")
            }
        case .statusReply, .hello, .ready, .result, .fail, .statusRequest:
            logger.warning("unexpected \(message.typeName) from coordinator ignored")
        }
        return nil
    }

    mutating func startJob(_ j: Job) throws {
        if let current = job, current.jobID == j.jobID, current.modelDigest == j.modelDigest, computeUp {
            // Re-admitted after a reconnect: same job, keep computing.
            send(.ready(Ready(credits: cfg.credits, modelDigest: current.modelDigest)))
            return
        }
        var model = j.model
        var modelPath: String? = nil
        if let dir = cfg.modelCacheDirectory { modelPath = (dir as NSString).appendingPathComponent("\(j.modelDigest).onnx") }
        if model.isEmpty {
            if let path = modelPath, let data = FileManager.default.contents(atPath: path) {
                model = Array(data)
            } else if !(job?.modelDigest == j.modelDigest) {
                throw WorkerError.modelNotCached(digest: j.modelDigest)
            }
        }
        if let digest = cfg.digest, !model.isEmpty {
            let computed = digest(model)
            if computed != j.modelDigest { throw WorkerError.modelDigestMismatch(expected: j.modelDigest, computed: computed) }
        }
        if let path = modelPath, !j.model.isEmpty, !FileManager.default.fileExists(atPath: path) {
            try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let tmp = path + ".tmp-\(getpid())"
            if FileManager.default.createFile(atPath: tmp, contents: Data(model)) { _ = rename(tmp, path) }
        }
        heartbeatInterval = Double(max(10, j.heartbeatIntervalMs)) / 1000
        livenessTimeout = Double(max(100, j.livenessTimeoutMs)) / 1000
        job = j
        let received = ReceivedJob(jobID: j.jobID, modelDigest: j.modelDigest, configDigest: j.configDigest,
                                   config: j.config, model: model, modelPath: modelPath,
                                   configBaseDirectory: j.configBaseDirectory)
        try startCompute(received)
    }

    mutating func startCompute(_ job: ReceivedJob) throws {
        computeControl?.stop()
        if let old = pipe {
            _ = try? old.send([Array("STOP".utf8)], dontWait: true)
            old.close()
        }
        computeUp = false
        pipeEndpoint = "inproc://shardcal-worker-\(UUID().uuidString)"
        do {
            let p = try ZMQSocket(worker.context, type: .pair)
            try p.setLinger(0)
            try p.bind(pipeEndpoint)
            pipe = p
        } catch let e as ZMQError { throw WorkerError.socket(e) }
        let control = ComputeControl()
        computeControl = control
        let compute = ComputeLoop(worker: worker, control: control, endpoint: pipeEndpoint, job: job)
        let t = Thread { compute.run() }
        t.name = "shardcal-compute"
        t.stackSize = 16 << 20
        computeThread = t
        t.start()
    }

    mutating func handleCompute(_ frames: [[UInt8]]) throws {
        guard let first = frames.first else { return }
        if frames.count == 1 && first == Array("UP".utf8) {
            computeUp = true
            if let job { send(.ready(Ready(credits: cfg.credits, modelDigest: job.modelDigest))) }
            return
        }
        if frames.count == 2 && first == Array("DOWN".utf8) {
            throw WorkerError.setupFailed(String(decoding: frames[1], as: UTF8.self))
        }
        // A finished RESULT or FAIL: forward unchanged.
        if worker.isAbandoned { return }
        sendFrames(frames)
        lastSent = monotonicSeconds()
    }
}

/// Tells one compute thread to finish (a STOP message can be lost when its pipe closes first).
final class ComputeControl: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    func stop() { lock.withLock { stopped = true } }
    var isStopped: Bool { lock.withLock { stopped } }
}

/// The compute thread: builds the ShardComputer, then computes leases one at a time.
struct ComputeLoop: Sendable {
    let worker: Worker
    let control: ComputeControl
    let endpoint: String
    let job: ReceivedJob

    func run() {
        guard let pipe = try? ZMQSocket(worker.context, type: .pair) else { return }
        defer { pipe.close() }
        try? pipe.setLinger(0)
        try? pipe.setReceiveTimeout(200)
        guard (try? pipe.connect(endpoint)) != nil else { return }
        let computer: any ShardComputer
        do {
            computer = try worker.factory.makeComputer(job: job)
        } catch {
            _ = try? pipe.send([Array("DOWN".utf8), Array("\(error)".utf8)])
            return
        }
        _ = try? pipe.send([Array("UP".utf8)])
        while !worker.isStopping && !control.isStopped {
            let received: [[UInt8]]?
            do { received = try pipe.receive() } catch {
                return // ETERM (context terminating) or a closed pipe: nothing more will come
            }
            guard let frames = received, let kind = frames.first else { continue }
            if kind == Array("STOP".utf8) { return }
            guard frames.count == 2, case .lease(let lease)? = try? WireCodec.decode([WireCodec.tag, Array("LEASE".utf8), frames[1]]) else {
                continue
            }
            let start = monotonicSeconds()
            let reply: WireMessage
            do {
                let output = try computer.computeShardReport(id: lease.shard, indices: lease.indices)
                reply = .result(ShardResult(shard: lease.shard, sampleCount: lease.indices.count,
                                            computeSeconds: monotonicSeconds() - start, tensors: output.tensors,
                                            skipped: output.skipped))
            } catch let e as ShardFailure {
                reply = .fail(Fail(shard: lease.shard, file: e.failingFile, reason: e.reason))
            } catch let e as FileNamingError {
                reply = .fail(Fail(shard: lease.shard, file: e.failingFile, reason: "\(e)"))
            } catch {
                reply = .fail(Fail(shard: lease.shard, file: nil, reason: "\(error)"))
            }
            if worker.isAbandoned || control.isStopped { return }
            _ = try? pipe.send(WireCodec.encode(reply), dontWait: true)
        }
    }
}
