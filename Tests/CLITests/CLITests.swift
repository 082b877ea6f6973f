import Calibration
import CalibrationIO
import Foundation
import Testing

/// Runs the built `shardcal` binary (it sits next to the test bundle).
struct CLI {
    static let binary: URL = {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0])
        var dir = testBinary.deletingLastPathComponent()
        // On Linux the test binary is .build/<config>/shardcalPackageTests.xctest.
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent("shardcal")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return testBinary.deletingLastPathComponent().appendingPathComponent("shardcal")
    }()

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs the binary to completion. Output goes to temporary files, not pipes: a child that
    /// writes more than a pipe buffer to one stream while the parent drains the other would block.
    @discardableResult
    static func run(_ arguments: [String], in directory: URL? = nil) throws -> Result {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("shardcal-cli-io-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outURL = scratch.appendingPathComponent("stdout"), errURL = scratch.appendingPathComponent("stderr")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try out.close()
        try err.close()
        return Result(status: process.terminationStatus,
                      stdout: try String(contentsOf: outURL, encoding: .utf8),
                      stderr: try String(contentsOf: errURL, encoding: .utf8))
    }
}

func temporaryDirectory() -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("shardcal-cli-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Deterministic pseudo-random values (SplitMix64), independent of the code under test.
func values(seed: UInt64, count: Int, scale: Float) -> [Float] {
    var state = seed
    return (0..<count).map { _ in
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return (Float(z >> 40) / Float(1 << 24) - 0.5) * scale
    }
}

func state(shards: [Int], digest: String = "model-a") -> CalibrationState {
    var s = CalibrationState(toolVersion: ToolInfo.version, modelDigest: digest, configDigest: "config-1")
    for shard in shards {
        var a = Histogram(), b = Histogram()
        a.accumulate(values(seed: UInt64(shard), count: 5000, scale: 8))
        b.accumulate(values(seed: UInt64(shard) + 1000, count: 5000, scale: 300).map { max($0, 0) })
        try! s.merge(shard: shard, tensors: [NamedHistogram(name: "input", histogram: a), NamedHistogram(name: "relu_out", histogram: b)])
    }
    return s
}

@Suite(.serialized) struct CLITests {
    @Test func helpListsTheCommands() throws {
        let r = try CLI.run(["--help"])
        #expect(r.status == 0)
        for command in ["merge", "search", "inspect"] { #expect(r.stdout.contains(command)) }
    }

    @Test func searchOnExternalJSONReproducesTheReferenceScale() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        var tensors: [String: Any] = [:]
        var expected: [String: String] = [:]
        for file in ["00-gaussian.json", "04-sparse.json"] {
            let v = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtures.appendingPathComponent(file))) as! [String: Any]
            let name = (v["name"] as! String)
            tensors[name] = ["bin_width": v["bin_width"]!, "counts": v["counts"]!]
            if v["layout"] as! String == "shardcal" {
                expected[name] = (v["expected_trt_hex"] as! [String: String])["entropy"]!
            }
        }
        let input = dir.appendingPathComponent("hist.json")
        try JSONSerialization.data(withJSONObject: ["tensors": tensors]).write(to: input)
        let cache = dir.appendingPathComponent("out.cache").path
        let r = try CLI.run(["search", input.path, "--method", "entropy", "--cache", cache, "--json", dir.appendingPathComponent("t.json").path])
        #expect(r.status == 0, "\(r.stderr)")
        let text = try String(contentsOfFile: cache, encoding: .utf8)
        #expect(text.hasPrefix("TRT-8601-EntropyCalibration2\n"))
        for (name, hex) in expected { #expect(text.contains("\n\(name): \(hex)\n"), "\(name) should be \(hex) in\n\(text)") }
        // The JSON table parses and names the same tensors.
        let table = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("t.json"))) as! [String: Any]
        #expect((table["tensors"] as! [[String: Any]]).count == 2)
    }

    @Test func mergeThenSearchEqualsOneStateBuiltFromAllShards() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("a.state").path, b = dir.appendingPathComponent("b.state").path
        let c = dir.appendingPathComponent("c.state").path
        try StateFile.write(state(shards: [0, 2, 4]), to: a)
        try StateFile.write(state(shards: [3, 1]), to: b)
        let merge = try CLI.run(["merge", b, a, "-o", c])
        #expect(merge.status == 0, "\(merge.stderr)")
        // Exactness: the merged file equals the state of all shards built in one go, byte for byte.
        #expect(try AtomicFile.read(c) == state(shards: [0, 1, 2, 3, 4]).encoded())

        let cache1 = dir.appendingPathComponent("1.cache").path
        let cache2 = dir.appendingPathComponent("2.cache").path
        try StateFile.write(state(shards: [4, 3, 2, 1, 0]), to: dir.appendingPathComponent("all.state").path)
        #expect(try CLI.run(["search", c, "--cache", cache1]).status == 0)
        #expect(try CLI.run(["search", dir.appendingPathComponent("all.state").path, "--cache", cache2]).status == 0)
        let text = try String(contentsOfFile: cache1, encoding: .utf8)
        #expect(text == (try String(contentsOfFile: cache2, encoding: .utf8)))
        #expect(text.split(separator: "\n").count == 3)

        let inspect = try CLI.run(["inspect", c])
        #expect(inspect.status == 0)
        #expect(inspect.stdout.contains("relu_out"))
        #expect(inspect.stdout.contains("5 merged: 0-4"))
        let inspectJSON = try CLI.run(["inspect", c, "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(inspectJSON.stdout.utf8)) as! [String: Any]
        #expect((object["tensors"] as! [[String: Any]]).count == 2)
    }

    @Test func mergeRefusesOverlapsAndOtherModelsNamingThem() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("a.state").path, b = dir.appendingPathComponent("b.state").path
        let other = dir.appendingPathComponent("other.state").path
        try StateFile.write(state(shards: [0, 1, 2]), to: a)
        try StateFile.write(state(shards: [2, 3]), to: b)
        try StateFile.write(state(shards: [7], digest: "model-b"), to: other)
        let out = dir.appendingPathComponent("out.state").path
        let overlap = try CLI.run(["merge", a, b, "-o", out])
        #expect(overlap.status != 0)
        #expect(overlap.stderr.contains("already merged") && overlap.stderr.contains("2"))
        #expect(!FileManager.default.fileExists(atPath: out))
        let foreign = try CLI.run(["merge", a, other, "-o", out])
        #expect(foreign.status != 0)
        #expect(foreign.stderr.contains("model-a") && foreign.stderr.contains("model-b"))
    }

    @Test func damagedInputsGiveClearErrors() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let good = state(shards: [0]).encoded()
        let truncated = dir.appendingPathComponent("t.state").path
        try Data(good.prefix(good.count - 7)).write(to: URL(fileURLWithPath: truncated))
        let r = try CLI.run(["search", truncated, "--cache", dir.appendingPathComponent("x.cache").path])
        #expect(r.status != 0)
        #expect(r.stderr.contains("truncated"))
        #expect(r.stderr.contains(truncated))
        var flipped = good
        flipped[good.count / 2] ^= 1
        let damaged = dir.appendingPathComponent("d.state").path
        try Data(flipped).write(to: URL(fileURLWithPath: damaged))
        let d = try CLI.run(["inspect", damaged])
        #expect(d.status != 0)
        #expect(d.stderr.contains("checksum"))
        let missing = try CLI.run(["inspect", dir.appendingPathComponent("nope.state").path])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("no such file"))
        let badMethod = try CLI.run(["search", truncated, "--method", "bogus"])
        #expect(badMethod.status != 0)
        #expect(badMethod.stderr.contains("bogus"))
    }
}
