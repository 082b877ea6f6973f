import Calibration
import Cluster
import Foundation
import Logging
import Transport

/// SplitMix64: a tiny, well-known deterministic generator.
struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Float { Float(next() >> 40) / Float(1 << 24) }
}

/// The fake model: tensor `t` of sample `i` is 64 pseudo-random values whose range depends on i and t,
/// so shards differ in max|x| and merging has to coarsen.
enum FakeModel {
    static let tensorNames = ["stem/conv", "block1/relu", "block2/add", "head/logits", "all_zero"]
    static let valuesPerSample = 64

    static func values(sample i: Int, tensor t: Int) -> [Float] {
        if t == 4 { return [Float](repeating: 0, count: valuesPerSample) }
        var rng = SplitMix64(state: UInt64(i) &* 1_000_003 &+ UInt64(t) &* 7919 &+ 17)
        let scale = Float(1 << (i % 6)) * Float(t + 1) * 0.37
        return (0..<valuesPerSample).map { j in
            if j == 0 { return 0 }
            return (rng.unit() * 2 - 1) * scale
        }
    }

    /// Histograms of a sample range, tensors in graph order.
    static func histograms(_ indices: Range<Int>) -> [NamedHistogram] {
        tensorNames.enumerated().map { t, name in
            var h = Histogram()
            for i in indices { h.accumulate(values(sample: i, tensor: t)) }
            return NamedHistogram(name: name, histogram: h)
        }
    }

    /// Oracle: every value of the whole dataset accumulated into ONE histogram per tensor at once
    /// (no shards, no merging). Exact merging must reproduce it bit for bit.
    static func wholeDataset(sampleCount: Int) -> [String: Histogram] {
        var out: [String: Histogram] = [:]
        for (t, name) in tensorNames.enumerated() {
            var all: [Float] = []
            for i in 0..<sampleCount { all += values(sample: i, tensor: t) }
            var h = Histogram()
            h.accumulate(all)
            out[name] = h
        }
        return out
    }
}

/// Counts calls, optionally sleeps (to shuffle completion order), fails or blocks on chosen shards.
final class FakeComputer: ShardComputer, @unchecked Sendable {
    let behaviour: Behaviour
    init(behaviour: Behaviour) { self.behaviour = behaviour }

    final class Behaviour: @unchecked Sendable {
        let lock = NSLock()
        var delayMicroseconds: (Int) -> UInt32 = { _ in 0 }
        /// Shards that throw (with a file name) every time.
        var alwaysFail: Set<Int> = []
        /// Shards that throw the first time only.
        var failOnce: Set<Int> = []
        /// Shards whose every sample is skipped (skip-and-count): no histograms, every index listed.
        var allSkipped: Set<Int> = []
        /// Shards whose result names a tensor the model does not have.
        var wrongTensors: Set<Int> = []
        /// When set, the first shard computed blocks on this semaphore (bounded) after signalling `blocked`.
        var blockFirst: (blocked: DispatchSemaphore, release: DispatchSemaphore)?
        private(set) var computed: [Int] = []
        private var blockedAlready = false

        func record(_ id: Int) { lock.withLock { computed.append(id) } }
        func takeBlock() -> (blocked: DispatchSemaphore, release: DispatchSemaphore)? {
            lock.withLock {
                if blockedAlready { return nil }
                blockedAlready = true
                return blockFirst
            }
        }
        func shouldFailOnce(_ id: Int) -> Bool { lock.withLock { failOnce.remove(id) != nil } }
        var computedIDs: [Int] { lock.withLock { computed } }
    }

    func computeShard(id: Int, indices: Range<Int>) throws -> [NamedHistogram] {
        if let b = behaviour.takeBlock() {
            b.blocked.signal()
            _ = b.release.wait(timeout: .now() + 20)
            throw ShardFailure(file: nil, reason: "abandoned")
        }
        let delay = behaviour.delayMicroseconds(id)
        if delay > 0 { usleep(delay) }
        if behaviour.alwaysFail.contains(id) {
            throw ShardFailure(file: "/data/sample_\(indices.lowerBound).jpg", reason: "JPEG data is truncated")
        }
        if behaviour.shouldFailOnce(id) { throw ShardFailure(file: "/data/flaky.png", reason: "transient read error") }
        behaviour.record(id)
        return FakeModel.histograms(indices)
    }
}

extension FakeComputer {
    func computeShardReport(id: Int, indices: Range<Int>) throws -> ShardOutput {
        if behaviour.allSkipped.contains(id) {
            behaviour.record(id)
            return ShardOutput(tensors: [], skipped: indices.map {
                SkippedSampleRecord(index: $0, file: "/data/sample_\($0).jpg", reason: "not a JPEG or PNG file")
            })
        }
        var tensors = try computeShard(id: id, indices: indices)
        if behaviour.wrongTensors.contains(id) { tensors[0] = NamedHistogram(name: "not_in_the_model", histogram: tensors[0].histogram) }
        return ShardOutput(tensors: tensors)
    }
}

struct FakeFactory: ShardComputerFactory {
    let behaviour: FakeComputer.Behaviour
    func makeComputer(job: ReceivedJob) throws -> any ShardComputer { FakeComputer(behaviour: behaviour) }
}

let testDigest = "sha256:" + String(repeating: "ab", count: 8)

func testLogger(_ label: String) -> Logger {
    var l = Logger(label: label)
    l.logLevel = ProcessInfo.processInfo.environment["SHARDCAL_TEST_LOG"] != nil ? .debug : .critical
    return l
}

func makeCoordinatorConfig(sampleCount: Int, shardSize: Int) -> CoordinatorConfig {
    var c = CoordinatorConfig(endpoint: "tcp://127.0.0.1:*", publishEndpoint: nil, jobID: "test-job", toolVersion: "0.1.0-test",
                              modelDigest: testDigest, configDigest: "cfg-1", config: Array("shard_size: 4\n".utf8),
                              model: Array("fake model bytes".utf8),
                              shards: ShardSpec.plan(sampleCount: sampleCount, shardSize: shardSize))
    c.heartbeatInterval = 0.05
    c.livenessTimeout = 1.5
    return c
}

final class Box<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func set(_ v: T) { lock.withLock { value = v } }
    func get() -> T { lock.withLock { value } }
    func update(_ f: (inout T) -> Void) { lock.withLock { f(&value) } }
}

/// Runs a worker on its own thread; `done` is signalled when `run()` returns.
final class WorkerThread: @unchecked Sendable {
    let worker: Worker
    let outcome = Box<Result<WorkerOutcome, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)

    init(context: ZMQContext, endpoint: String, name: String, behaviour: FakeComputer.Behaviour,
         toolVersion: String = "0.1.0-test", credits: Int = 2) {
        var wc = WorkerConfig(endpoint: endpoint, workerID: name, toolVersion: toolVersion)
        wc.credits = credits
        wc.heartbeatInterval = 0.05
        wc.livenessTimeout = 2
        worker = Worker(config: wc, factory: FakeFactory(behaviour: behaviour), context: context, logger: testLogger(name))
        let t = Thread { [self] in
            outcome.set(Result { try worker.run() })
            done.signal()
        }
        t.start()
    }

    /// Waits (bounded) for the worker to return.
    @discardableResult
    func join(seconds: Double = 20) -> Result<WorkerOutcome, any Error>? {
        if done.wait(timeout: .now() + seconds) == .timedOut {
            worker.requestStop()
            _ = done.wait(timeout: .now() + 5)
        }
        return outcome.get()
    }
}

/// Starts a coordinator on its own thread with a watchdog that stops it after `limit` seconds.
func startCoordinator(_ config: CoordinatorConfig, context: ZMQContext, limit: Double = 60) throws -> (Coordinator, String, String?) {
    var config = config
    config.runTimeout = limit
    let c = Coordinator(config: config, context: context, logger: testLogger("coordinator"))
    let (ep, pub) = try c.start()
    return (c, ep, pub)
}

/// A raw DEALER used to play a misbehaving or hand-driven worker.
final class RawPeer {
    let socket: ZMQSocket
    init(context: ZMQContext, endpoint: String, id: String) throws {
        socket = try ZMQSocket(context, type: .dealer)
        try socket.setLinger(0)
        try socket.setRoutingID(Array(id.utf8))
        try socket.setReceiveTimeout(5000)
        try socket.connect(endpoint)
    }
    func send(_ m: WireMessage) throws { try socket.send(WireCodec.encode(m)) }
    func sendRaw(_ frames: [[UInt8]]) throws { try socket.send(frames) }
    /// Next message that is not a HEARTBEAT (bounded by the receive timeout and a count).
    func next() throws -> WireMessage? {
        for _ in 0..<1000 {
            guard let frames = try socket.receive() else { return nil }
            let m = try WireCodec.decode(frames, limits: WireLimits(maxJobBytes: Int.max))
            if m != .heartbeat { return m }
        }
        return nil
    }
    func close() { socket.close() }
    deinit { socket.close() }
}
