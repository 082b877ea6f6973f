import Calibration
import CalibrationIO
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The multi-machine form with real processes: `shardcal coordinator` and `shardcal worker`
/// processes over TCP, `kill -9` of a worker and of the coordinator (then `--resume`), and a run
/// across two network namespaces joined by a veth pair. Every run must give the cache of a plain
/// one-worker `shardcal run` of the same job, bit for bit.
@Suite(.serialized) struct ProcessFailureTests {
    /// 1000 demo images in 40 shards; short heartbeats so a dead peer is noticed within ~2 s;
    /// a checkpoint after every merged result.
    static let job = ["--config", DemoTests.repoRoot.appendingPathComponent("Config/demo.yaml").path,
                      "--set", "dataset.limit=1000", "--set", "shard_size=25",
                      "--set", "cluster.heartbeat_interval=0.2", "--set", "cluster.worker_timeout=2",
                      "--set", "cluster.checkpoint_every_results=1"]

    /// The reference: `shardcal run` with one worker (computed once for the suite).
    static func referenceCache(in dir: URL) throws -> String {
        try ReferenceStore.shared.value {
            let out = dir.appendingPathComponent("reference").path
            let r = try CLI.run(["run"] + job + ["--out", out, "--workers", "1"])
            #expect(r.status == 0, "\(r.stderr)")
            return try String(contentsOfFile: out + "/calibration.cache", encoding: .utf8)
        }
    }

    final class ReferenceStore: @unchecked Sendable {
        static let shared = ReferenceStore()
        private let lock = NSLock()
        private var cached: String?
        func value(_ make: () throws -> String) throws -> String {
            try lock.withLock {
                if let cached { return cached }
                let made = try make()
                cached = made
                return made
            }
        }
    }

    @Test func killingAWorkerMidRunStillGivesTheSameCache() throws {
        guard DemoTests.datasetPresent else {
            print("skipped: Debian's dataset-fashion-mnist is not installed (scripts/bootstrap installs it)")
            return
        }
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let reference = try Self.referenceCache(in: dir)
        let port = freeTCPPort()
        let out = dir.appendingPathComponent("run").path
        // Backup leases off: this checks the liveness path (the dead worker's leases expire and go
        // back to the queue); with them on, the survivor may finish those shards first.
        let coordinator = try Background(["coordinator"] + Self.job + ["--set", "cluster.backup_leases=false",
                                                                        "--out", out, "--bind", "tcp://127.0.0.1:\(port)"],
                                         in: dir, name: "coordinator")
        defer { coordinator.kill9() }
        let workers = try (0..<2).map { i in
            try Background(["worker", "--connect", "tcp://127.0.0.1:\(port)", "--id", "w\(i)",
                            "--model-cache", dir.appendingPathComponent("models").path], in: dir, name: "worker\(i)")
        }
        defer { for w in workers { w.kill9() } }
        // Kill w0 while it holds a lease, after the run is under way.
        let holding = waitUntil(seconds: 120) {
            guard let s = coordinatorStatus("tcp://127.0.0.1:\(port)"), (s["shards_done"] as? Int ?? 0) >= 1,
                  let ws = s["workers"] as? [[String: Any]] else { return false }
            return ws.contains { $0["id"] as? String == "w0" && !(($0["leased"] as? [Int]) ?? []).isEmpty }
        }
        #expect(holding, "w0 never held a lease: \(coordinator.stderr.suffix(2000))")
        workers[0].kill9()
        let status = coordinator.wait(seconds: 180)
        #expect(status == 0, "coordinator: \(coordinator.stderr.suffix(3000))")
        #expect(coordinator.stdout.contains("expired workers 1"), "the dead worker's leases went back to the queue: \(coordinator.stdout)")
        #expect(try String(contentsOfFile: out + "/calibration.cache", encoding: .utf8) == reference)
        let state = try StateFile.read(out + "/calibration.state")
        #expect(state.shards == Set(0..<40))
        #expect(workers[1].wait(seconds: 30) == 0, "the surviving worker ends with the run: \(workers[1].stderr.suffix(2000))")
    }

    @Test func aStoppedWorkersShardsAreFinishedByBackupLeases() throws {
        guard DemoTests.datasetPresent else {
            print("skipped: Debian's dataset-fashion-mnist is not installed (scripts/bootstrap installs it)")
            return
        }
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let reference = try Self.referenceCache(in: dir)
        let port = freeTCPPort()
        let out = dir.appendingPathComponent("run").path
        // A long liveness timeout: the stopped worker's leases cannot expire within this test, so
        // only backup leases can finish its shards.
        let coordinator = try Background(["coordinator"] + Self.job + ["--set", "cluster.worker_timeout=120",
                                                                        "--out", out, "--bind", "tcp://127.0.0.1:\(port)"],
                                         in: dir, name: "coordinator")
        defer { coordinator.kill9() }
        let workers = try (0..<2).map { i in
            try Background(["worker", "--connect", "tcp://127.0.0.1:\(port)", "--id", "w\(i)",
                            "--model-cache", dir.appendingPathComponent("models").path], in: dir, name: "worker\(i)")
        }
        defer { for w in workers { kill(w.process.processIdentifier, SIGCONT); w.kill9() } }
        let holding = waitUntil(seconds: 120) {
            guard let s = coordinatorStatus("tcp://127.0.0.1:\(port)"), (s["shards_done"] as? Int ?? 0) >= 1,
                  let ws = s["workers"] as? [[String: Any]] else { return false }
            return ws.contains { $0["id"] as? String == "w0" && !(($0["leased"] as? [Int]) ?? []).isEmpty }
        }
        #expect(holding, "w0 never held a lease: \(coordinator.stderr.suffix(2000))")
        // Freeze w0 (as a machine that stalls): it holds its leases but computes nothing.
        kill(workers[0].process.processIdentifier, SIGSTOP)
        let status = coordinator.wait(seconds: 100)
        #expect(status == 0, "coordinator: \(coordinator.stderr.suffix(3000))")
        #expect(coordinator.stdout.contains("expired workers 0"), "\(coordinator.stdout)")
        #expect(coordinator.stdout.contains("backup leases"), "the stopped worker's shards were backed up: \(coordinator.stdout)")
        #expect(try String(contentsOfFile: out + "/calibration.cache", encoding: .utf8) == reference)
        #expect(try StateFile.read(out + "/calibration.state").shards == Set(0..<40))
        // Woken up, w0 finds DONE waiting and exits at once, whatever its compute thread was doing.
        kill(workers[0].process.processIdentifier, SIGCONT)
        #expect(workers[0].wait(seconds: 30) == 0, "w0: \(workers[0].stderr.suffix(2000))")
        #expect(workers[1].wait(seconds: 30) == 0, "w1: \(workers[1].stderr.suffix(2000))")
    }

    @Test func killingTheCoordinatorThenResumingGivesTheSameCache() throws {
        guard DemoTests.datasetPresent else {
            print("skipped: Debian's dataset-fashion-mnist is not installed (scripts/bootstrap installs it)")
            return
        }
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let reference = try Self.referenceCache(in: dir)
        let port = freeTCPPort()
        let endpoint = "tcp://127.0.0.1:\(port)"
        let out = dir.appendingPathComponent("run").path
        let first = try Background(["coordinator"] + Self.job + ["--out", out, "--bind", endpoint], in: dir, name: "coordinator1")
        defer { first.kill9() }
        let workers = try (0..<2).map { i in
            try Background(["worker", "--connect", endpoint, "--id", "w\(i)",
                            "--model-cache", dir.appendingPathComponent("models").path], in: dir, name: "worker\(i)")
        }
        defer { for w in workers { w.kill9() } }
        let underway = waitUntil(seconds: 120) { (coordinatorStatus(endpoint)?["shards_done"] as? Int ?? 0) >= 4 }
        #expect(underway, "no progress: \(first.stderr.suffix(2000))")
        first.kill9()

        // The checkpoint left by the killed coordinator (written atomically: never half a file).
        let checkpoint = out + "/calibration.state"
        let saved = try StateFile.read(checkpoint)
        #expect(saved.shards.count >= 3 && saved.shards.count < 40, "checkpoint holds \(saved.shards.count) shards")
        let second = try Background(["coordinator"] + Self.job + ["--out", out, "--bind", endpoint, "--resume", checkpoint],
                                    in: dir, name: "coordinator2")
        defer { second.kill9() }
        let status = second.wait(seconds: 180)
        #expect(status == 0, "resumed coordinator: \(second.stderr.suffix(3000))")
        // Only the missing shards were computed (the workers reconnected to the new coordinator).
        #expect(second.stdout.contains("merged \(40 - saved.shards.count),"), "\(second.stdout)")
        #expect(try String(contentsOfFile: out + "/calibration.cache", encoding: .utf8) == reference)
        for w in workers { #expect(w.wait(seconds: 30) == 0, "worker: \(w.stderr.suffix(2000))") }
    }

    @Test func coordinatorAndWorkersInSeparateNetworkNamespaces() throws {
        guard DemoTests.datasetPresent else {
            print("skipped: Debian's dataset-fashion-mnist is not installed (scripts/bootstrap installs it)")
            return
        }
        guard let net = NamespacePair.make() else {
            print("skipped: cannot create network namespaces here (needs root and iproute2's `ip netns`)")
            return
        }
        defer { net.tearDown() }
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let reference = try Self.referenceCache(in: dir)
        let endpoint = "tcp://\(net.coordinatorAddress):5555"
        let out = dir.appendingPathComponent("run").path
        let binary = CLI.binary.path
        let coordinator = try Background(["netns", "exec", net.coordinatorNamespace, binary, "coordinator"] + Self.job +
                                         ["--out", out, "--bind", endpoint], in: dir, name: "coordinator", executable: "/usr/sbin/ip")
        defer { coordinator.kill9() }
        // The coordinator answers across the veth pair, from the workers' namespace, and is out of
        // reach from this (the host's) namespace, so the workers can only have used the veth link.
        func statusFrom(namespace: String?) throws -> Int32 {
            let args = ["status", "--connect", endpoint, "--timeout", "1"]
            let probe = try Background(namespace.map { ["netns", "exec", $0, binary] + args } ?? args, in: dir,
                                       name: "probe", executable: namespace == nil ? nil : "/usr/sbin/ip")
            return probe.wait(seconds: 10) ?? -1
        }
        #expect(waitUntil(seconds: 60) { (try? statusFrom(namespace: net.workerNamespace)) == 0 },
                "no status across the veth pair: \(coordinator.stderr.suffix(2000))")
        #expect(try statusFrom(namespace: nil) != 0, "the coordinator must not be reachable outside the veth pair")
        let workers = try (0..<2).map { i in
            try Background(["netns", "exec", net.workerNamespace, binary, "worker", "--connect", endpoint, "--id", "ns-w\(i)",
                            "--model-cache", dir.appendingPathComponent("models").path],
                           in: dir, name: "worker\(i)", executable: "/usr/sbin/ip")
        }
        defer { for w in workers { w.kill9() } }
        let status = coordinator.wait(seconds: 240)
        #expect(status == 0, "coordinator: \(coordinator.stderr.suffix(3000))")
        #expect(try String(contentsOfFile: out + "/calibration.cache", encoding: .utf8) == reference)
        for w in workers {
            #expect(w.wait(seconds: 30) == 0, "worker: \(w.stderr.suffix(2000))")
            #expect(!w.stderr.contains("refused"))
        }
    }
}

// MARK: - support

/// A child process whose output goes to files (never pipes; see `CLI.run`).
final class Background: @unchecked Sendable {
    let process = Process()
    let outURL: URL
    let errURL: URL

    init(_ arguments: [String], in dir: URL, name: String, executable: String? = nil) throws {
        outURL = dir.appendingPathComponent("\(name).stdout")
        errURL = dir.appendingPathComponent("\(name).stderr")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        process.executableURL = executable.map { URL(fileURLWithPath: $0) } ?? CLI.binary
        process.arguments = arguments
        process.currentDirectoryURL = dir
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var stdout: String { (try? String(contentsOf: outURL, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: errURL, encoding: .utf8)) ?? "" }

    /// Waits for the exit status (nil on timeout).
    func wait(seconds: Double) -> Int32? {
        let end = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < end { usleep(20_000) }
        if process.isRunning { return nil }
        return process.terminationStatus
    }

    func kill9() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
func freeTCPPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
    }
    _ = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// `shardcal status --json` as a dictionary (nil when the coordinator does not answer).
func coordinatorStatus(_ endpoint: String) -> [String: Any]? {
    guard let r = try? CLI.run(["status", "--connect", endpoint, "--json", "--timeout", "1"]), r.status == 0 else { return nil }
    return (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any]
}

func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if condition() { return true }
        usleep(50_000)
    }
    return false
}

/// Two network namespaces joined by a veth pair (10.231.x.1 and 10.231.x.2), made and removed by the test.
struct NamespacePair {
    let coordinatorNamespace: String
    let workerNamespace: String
    let coordinatorAddress: String

    static func ip(_ args: [String]) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    static func make() -> NamespacePair? {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") else { return nil }
        let tag = String(getpid() % 100_000)
        let c = "shc-c-\(tag)", w = "shc-w-\(tag)"
        let subnet = Int(getpid() % 250) + 1
        let pair = NamespacePair(coordinatorNamespace: c, workerNamespace: w, coordinatorAddress: "10.231.\(subnet).1")
        let steps: [[String]] = [
            ["netns", "add", c], ["netns", "add", w],
            ["link", "add", "shcc\(tag)", "type", "veth", "peer", "name", "shcw\(tag)"],
            ["link", "set", "shcc\(tag)", "netns", c], ["link", "set", "shcw\(tag)", "netns", w],
            ["-n", c, "addr", "add", "10.231.\(subnet).1/30", "dev", "shcc\(tag)"],
            ["-n", w, "addr", "add", "10.231.\(subnet).2/30", "dev", "shcw\(tag)"],
            ["-n", c, "link", "set", "shcc\(tag)", "up"], ["-n", w, "link", "set", "shcw\(tag)", "up"],
            ["-n", c, "link", "set", "lo", "up"], ["-n", w, "link", "set", "lo", "up"],
        ]
        for step in steps where !ip(step) {
            pair.tearDown()
            return nil
        }
        return pair
    }

    func tearDown() {
        // Deleting a namespace removes the veth end inside it, and with it the peer.
        _ = NamespacePair.ip(["netns", "del", coordinatorNamespace])
        _ = NamespacePair.ip(["netns", "del", workerNamespace])
    }
}
