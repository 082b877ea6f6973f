import Calibration
import Cluster
import Foundation
import Testing
import Transport

/// CPU time (user + system, in clock ticks) one thread of this process has used so far.
private func threadTicks(_ tid: Int32) -> Int? {
    guard let stat = try? String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    // Fields after "(comm)": state is field 3, utime field 14, stime field 15.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Int(fields[11]), let system = Int(fields[12]) else { return nil }
    return user + system
}

/// The calling thread's id, from /proc/thread-self ("<pid>/task/<tid>").
private func currentThreadID() -> Int32? {
    guard let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self") else { return nil }
    return link.split(separator: "/").last.flatMap { Int32($0) }
}

@Suite("orphaned worker")
struct OrphanedWorkerTests {
    /// A worker whose coordinator disappears after admitting it must wait for it (heartbeats,
    /// reconnects with backoff), not spin: its I/O and compute threads together get through many
    /// liveness timeouts and reconnects while using a small fraction of the CPU they could.
    ///
    /// One-sided, so it cannot fail because the machine is loaded (load only lowers the CPU a
    /// thread gets): a spinning thread uses the whole window (300 ticks), or at least a large
    /// share of it under load; a waiting one a few ticks. Linux only (/proc).
    @Test("after the coordinator vanishes, the worker's threads wait instead of spinning")
    func orphanedWorkerDoesNotSpin() throws {
        let context = try ZMQContext()
        defer { context.terminate() }
        // A hand-driven coordinator: admits the worker, then is gone for good.
        let router = try ZMQSocket(context, type: .router)
        try router.setLinger(0)
        try router.setReceiveTimeout(5000)
        try router.bind("tcp://127.0.0.1:*")
        let endpoint = try router.lastEndpoint

        let computeThread = Box<Int32?>(nil)
        let factory = ClosureShardComputerFactory { _ in
            computeThread.set(currentThreadID())
            return FakeComputer(behaviour: FakeComputer.Behaviour())
        }
        var wc = WorkerConfig(endpoint: endpoint, workerID: "orphan", toolVersion: "0.1.0-test")
        wc.reconnectInitial = 0.02
        wc.reconnectMax = 0.1
        let worker = Worker(config: wc, factory: factory, context: context, logger: testLogger("orphan"))
        let ioThread = Box<Int32?>(nil)
        let done = DispatchSemaphore(value: 0)
        let io = Thread {
            ioThread.set(currentThreadID())
            _ = try? worker.run()
            done.signal()
        }
        io.start()
        defer {
            worker.requestStop()
            _ = done.wait(timeout: .now() + 10)
        }

        // HELLO -> JOB (short heartbeat and liveness, so the window sees many reconnects) -> READY.
        var peer: [UInt8]? = nil
        var ready = false
        for _ in 0..<100 where !ready {
            guard let frames = try router.receive(), frames.count >= 2 else { break }
            peer = frames[0]
            switch try WireCodec.decode(Array(frames.dropFirst())) {
            case .hello:
                let job = Job(jobID: "orphan-job", toolVersion: "0.1.0-test", modelDigest: testDigest, configDigest: "c",
                              heartbeatIntervalMs: 20, livenessTimeoutMs: 150, config: [], model: Array("model".utf8))
                try router.send([frames[0]] + WireCodec.encode(.job(job)))
            case .ready:
                ready = true
            default:
                continue
            }
        }
        #expect(ready, "the worker never became ready")
        #expect(peer != nil)
        router.close() // the coordinator vanishes

        let ioTID = try #require(ioThread.get())
        let computeTID = try #require(computeThread.get())
        usleep(500_000) // past the first liveness timeout: the worker is now reconnecting
        let before = (threadTicks(ioTID) ?? 0) + (threadTicks(computeTID) ?? 0)
        let start = Date()
        usleep(3_000_000)
        let wall = Date().timeIntervalSince(start)
        let used = (threadTicks(ioTID) ?? 0) + (threadTicks(computeTID) ?? 0) - before
        let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
        // 150 ms liveness + <= 100 ms backoff: more than ten reconnect cycles in the window.
        #expect(Double(used) / ticksPerSecond < 0.1 * wall,
                "worker threads used \(used) ticks (\(Double(used) / ticksPerSecond) s of CPU) in \(wall) s while orphaned")
    }
}
