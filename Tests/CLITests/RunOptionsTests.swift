import Calibration
import CalibrationIO
import Foundation
import Testing

/// `run` options on the demo job: `--set` overrides (which must reach the worker processes) and
/// `outputs.reuse` / `--reuse`.
@Suite(.serialized) struct RunOptionsTests {
    static let demoConfig = DemoTests.repoRoot.appendingPathComponent("Config/demo.yaml")

    /// demo.yaml with some values edited in the text and the model path made absolute, written
    /// to `dir`: the independent reference for what `--set` must do.
    static func editedDemo(in dir: URL, replacing edits: [(String, String)]) throws -> String {
        var text = try String(contentsOf: demoConfig, encoding: .utf8)
        let model = DemoTests.repoRoot.appendingPathComponent("Config/models/fashion-mnist-cnn.onnx").path
        text = text.replacingOccurrences(of: "path: models/fashion-mnist-cnn.onnx", with: "path: \(model)")
        for (old, new) in edits {
            #expect(text.contains(old), "demo.yaml no longer contains '\(old)'")
            text = text.replacingOccurrences(of: old, with: new)
        }
        let path = dir.appendingPathComponent("edited.yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func overridesActLikeEditingTheFileAndReachTheWorkers() throws {
        guard DemoTests.datasetPresent else {
            print("skipped: Debian's dataset-fashion-mnist is not installed (scripts/bootstrap installs it)")
            return
        }
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // The workers preprocess with the config the coordinator sends: were they given the file
        // without the overrides, they would scale pixels by 1/255 and every histogram would differ.
        let edited = try Self.editedDemo(in: dir, replacing: [("limit: 1000", "limit: 120"), ("shard_size: 50", "shard_size: 40"),
                                                              ("batch_size: 50", "batch_size: 8"), ("scale: 1/255", "scale: 1/127.5")])
        let a = try CLI.run(["run", "--config", edited, "--out", dir.appendingPathComponent("edited").path, "--workers", "2"])
        #expect(a.status == 0, "\(a.stderr)")
        let b = try CLI.run(["run", "--config", Self.demoConfig.path, "--out", dir.appendingPathComponent("set").path, "--workers", "2",
                             "--set", "dataset.limit=120", "--set", "shard_size=40", "--set", "batch_size=8",
                             "--set", "dataset.preprocessing.scale=1/127.5"])
        #expect(b.status == 0, "\(b.stderr)")
        let stateA = try StateFile.read(dir.appendingPathComponent("edited/calibration.state").path)
        let stateB = try StateFile.read(dir.appendingPathComponent("set/calibration.state").path)
        #expect(stateB.shards == Set(0..<3), "120 samples in shards of 40")
        #expect(stateA.configDigest == stateB.configDigest)
        #expect(stateA.shards == stateB.shards)
        for (x, y) in zip(stateA.orderedHistograms, stateB.orderedHistograms) {
            #expect(x.name == y.name)
            #expect(x.histogram == y.histogram, "\(x.name): the overridden run must see the same samples")
            #expect(x.histogram.valueCount % 120 == 0, "\(x.name): 120 samples, whatever the tensor size")
        }
        let cacheA = try String(contentsOfFile: dir.appendingPathComponent("edited/calibration.cache").path, encoding: .utf8)
        let cacheB = try String(contentsOfFile: dir.appendingPathComponent("set/calibration.cache").path, encoding: .utf8)
        #expect(cacheA == cacheB)
        let input = try #require(stateB.histograms["input"])
        #expect(input.maximum == 2, "pixels scaled by 1/127.5 reach 2 (255/127.5)")

        let bad = try CLI.run(["run", "--config", Self.demoConfig.path, "--set", "shard_sise=4", "--set", "batch_size=-1", "--set", "nonsense"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("nonsense"), "a malformed --set is named: \(bad.stderr)")
        let bad2 = try CLI.run(["run", "--config", Self.demoConfig.path, "--set", "shard_sise=4", "--set", "batch_size=-1"])
        #expect(bad2.status != 0)
        #expect(bad2.stderr.contains("command line: shard_sise: unknown key"), "\(bad2.stderr)")
        #expect(bad2.stderr.contains("did you mean 'shard_size'"), "\(bad2.stderr)")
        #expect(bad2.stderr.contains("batch_size"), "both problems are reported at once: \(bad2.stderr)")
    }

    @Test func reuseSkipsCalibrationOnlyForTheSameDigests() throws {
        guard DemoTests.datasetPresent else {
            print("skipped: Debian's dataset-fashion-mnist is not installed (scripts/bootstrap installs it)")
            return
        }
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out").path
        let common = ["run", "--config", Self.demoConfig.path, "--out", out, "--workers", "1", "--set", "dataset.limit=100"]
        let first = try CLI.run(common)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("(merged 2,"), "\(first.stdout)")
        let cache = try String(contentsOfFile: out + "/calibration.cache", encoding: .utf8)

        // Same job, reuse asked for: the state is searched again, nothing is computed.
        let again = try CLI.run(common + ["--reuse"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("(merged 0,"), "nothing may be computed: \(again.stdout)")
        #expect(again.stderr.contains("reusing \(out)/calibration.state"), "\(again.stderr)")
        #expect(try String(contentsOfFile: out + "/calibration.cache", encoding: .utf8) == cache)

        // Without reuse (the demo's default), the job runs again.
        let fresh = try CLI.run(common)
        #expect(fresh.stdout.contains("(merged 2,"), "\(fresh.stdout)")

        // Only a cache and its table: reused as they are.
        try FileManager.default.removeItem(atPath: out + "/calibration.state")
        let cacheOnly = try CLI.run(common + ["--reuse"])
        #expect(cacheOnly.status == 0, "\(cacheOnly.stderr)")
        #expect(cacheOnly.stdout.contains("nothing calibrated"), "\(cacheOnly.stdout)")
        #expect(!FileManager.default.fileExists(atPath: out + "/calibration.state"))

        // More samples: the cache (with no state to continue) is not reused, and the log says why.
        let other = try CLI.run(["run", "--config", Self.demoConfig.path, "--out", out, "--workers", "1",
                                 "--set", "dataset.limit=150", "--reuse"])
        #expect(other.status == 0, "\(other.stderr)")
        #expect(other.stdout.contains("(merged 3,"), "\(other.stdout)")
        #expect(other.stderr.contains("was calibrated on 100 samples, this job has 150"), "\(other.stderr)")

        // Another configuration: not reused either.
        let preprocessing = try CLI.run(["run", "--config", Self.demoConfig.path, "--out", out, "--workers", "1",
                                         "--set", "dataset.limit=150", "--set", "dataset.preprocessing.scale=0.5", "--reuse"])
        #expect(preprocessing.status == 0, "\(preprocessing.stderr)")
        #expect(preprocessing.stdout.contains("(merged 3,"), "\(preprocessing.stdout)")
        #expect(preprocessing.stderr.contains("is for another configuration"), "\(preprocessing.stderr)")

        // A damaged state is an error, not silently overwritten.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: out + "/calibration.state")))
        bytes[bytes.count / 2] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: out + "/calibration.state"))
        let damaged = try CLI.run(["run", "--config", Self.demoConfig.path, "--out", out, "--workers", "1",
                                   "--set", "dataset.limit=150", "--reuse"])
        #expect(damaged.status != 0)
        #expect(damaged.stderr.contains("calibration.state"), "\(damaged.stderr)")
    }
}

/// `--resume` with a larger dataset: the state's shards keep their ranges (its short last shard
/// included), only new samples are computed, and the result equals a fresh run on all of them.
@Suite(.serialized) struct GrowingDatasetTests {
    @Test func resumingWithMoreSamplesComputesOnlyTheNewShards() throws {
        guard DemoTests.datasetPresent else {
            print("skipped: Debian's dataset-fashion-mnist is not installed (scripts/bootstrap installs it)")
            return
        }
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = RunOptionsTests.demoConfig.path
        func run(_ out: String, _ extra: [String]) throws -> CLI.Result {
            try CLI.run(["run", "--config", config, "--out", dir.appendingPathComponent(out).path, "--workers", "2"] + extra)
        }
        // 120 samples in shards of 50 (the last one short), then 230.
        let small = try run("small", ["--set", "dataset.limit=120"])
        #expect(small.status == 0, "\(small.stderr)")
        let smallState = dir.appendingPathComponent("small/calibration.state").path
        let grown = try run("grown", ["--set", "dataset.limit=230", "--resume", smallState])
        #expect(grown.status == 0, "\(grown.stderr)")
        #expect(grown.stdout.contains("(merged 3,"), "120..<230 is three new shards of 50, 50, 10: \(grown.stdout)")
        #expect(grown.stderr.contains("continuing a state of 120 samples with 110 new ones"), "\(grown.stderr)")
        let fresh = try run("fresh", ["--set", "dataset.limit=230"])
        #expect(fresh.status == 0, "\(fresh.stderr)")
        let grownState = try StateFile.read(dir.appendingPathComponent("grown/calibration.state").path)
        let freshState = try StateFile.read(dir.appendingPathComponent("fresh/calibration.state").path)
        #expect(grownState.shards == Set(0..<6) && freshState.shards == Set(0..<5))
        #expect(grownState.info["segments"] == "120,110" && freshState.info["segments"] == "230")
        // Exact merging: any partition of the same samples gives the same histograms and cache.
        #expect(grownState.orderedHistograms == freshState.orderedHistograms)
        let cacheGrown = try String(contentsOfFile: dir.appendingPathComponent("grown/calibration.cache").path, encoding: .utf8)
        let cacheFresh = try String(contentsOfFile: dir.appendingPathComponent("fresh/calibration.cache").path, encoding: .utf8)
        #expect(cacheGrown == cacheFresh)

        // Continuing the grown state with the same dataset computes nothing; a smaller one is refused.
        let same = try run("again", ["--set", "dataset.limit=230", "--resume", dir.appendingPathComponent("grown/calibration.state").path])
        #expect(same.stdout.contains("(merged 0,"), "\(same.stdout)")
        let shrunk = try run("shrunk", ["--set", "dataset.limit=100", "--resume", dir.appendingPathComponent("grown/calibration.state").path])
        #expect(shrunk.status != 0)
        #expect(shrunk.stderr.contains("covers 230 samples but the dataset now has only 100"), "\(shrunk.stderr)")
    }

    @Test func aGrownImageListMustKeepItsFirstImages() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let mixed = SkippedSampleTests.fixtures.appendingPathComponent("mixed")
        func list(_ names: [Int]) throws {
            try names.map { mixed.appendingPathComponent("img\($0).jpg").path }.joined(separator: "\n")
                .write(toFile: dir.appendingPathComponent("list.txt").path, atomically: true, encoding: .utf8)
        }
        let (config, _) = try SkippedSampleTests.job(in: dir, policy: "fail-fast")
        try list([0, 1])
        #expect(try CLI.run(["run", "--config", config, "--workers", "1"]).status == 0)
        let state = dir.appendingPathComponent("out/calibration.state").path
        let copy = dir.appendingPathComponent("first.state").path
        try FileManager.default.copyItem(atPath: state, toPath: copy)
        // An image inserted before the old ones: refused, the first samples changed.
        try list([2, 0, 1])
        let inserted = try CLI.run(["run", "--config", config, "--workers", "1", "--resume", copy])
        #expect(inserted.status != 0)
        #expect(inserted.stderr.contains("no longer the ones the state merged"), "\(inserted.stderr)")
        // Appended: only the new images are computed.
        try list([0, 1, 2, 3])
        let appended = try CLI.run(["run", "--config", config, "--workers", "1", "--resume", copy])
        #expect(appended.status == 0, "\(appended.stderr)")
        #expect(appended.stdout.contains("(merged 1,"), "2..<4 is one new shard of 3 or fewer: \(appended.stdout)")
    }
}

/// Skip-and-count end to end: unreadable samples are left out by the workers, reported, and listed
/// in the JSON table and the state file; fail-fast stops the run naming the file.
@Suite(.serialized) struct SkippedSampleTests {
    static let fixtures = DemoTests.repoRoot.appendingPathComponent("Tests/DataTests/Fixtures")

    static func job(in dir: URL, policy: String) throws -> (config: String, bad: [Int: String]) {
        let mixed = fixtures.appendingPathComponent("mixed")
        var lines: [String] = []
        var bad: [Int: String] = [:]
        // img4.jpg (truncated) and img5.jpg (not an image) are broken on purpose (scripts/make-data-fixtures).
        for i in 0..<6 { lines.append(mixed.appendingPathComponent("img\(i).jpg").path) }
        lines.insert(dir.appendingPathComponent("no-such-image.jpg").path, at: 2)
        for i in [2, 5, 6] { bad[i] = lines[i] }
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir.appendingPathComponent("list.txt").path, atomically: true, encoding: .utf8)
        let model = DemoTests.repoRoot.appendingPathComponent("Config/models/fashion-mnist-cnn.onnx").path
        let yaml = """
        model:
          path: \(model)
        dataset:
          kind: image-list
          path: list.txt
          on_corrupt: \(policy)
          preprocessing:
            color: gray
            resize: {width: 28, height: 28}
            scale: 1/255
        shard_size: 3
        batch_size: 2
        outputs:
          cache: out/calibration.cache
          table: out/calibration.json
          state: out/calibration.state
        """
        let path = dir.appendingPathComponent("job.yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return (path, bad)
    }

    struct Table: Decodable {
        struct Skipped: Decodable { var index: Int; var file: String; var reason: String }
        struct Row: Decodable { var name: String; var value_count: Int }
        var skipped_samples: [Skipped]
        var tensors: [Row]
    }

    @Test func skippedSamplesAreListedInTheOutputs() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (config, bad) = try Self.job(in: dir, policy: "skip-and-count")
        let r = try CLI.run(["run", "--config", config, "--workers", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("skipped 3 unreadable samples"), "\(r.stdout)")
        let table = try JSONDecoder().decode(Table.self, from: Data(contentsOf: dir.appendingPathComponent("out/calibration.json")))
        #expect(table.skipped_samples.map(\.index) == [2, 5, 6], "sorted by index whatever order the shards finished in")
        for s in table.skipped_samples {
            #expect(s.file == bad[s.index], "sample \(s.index) names its file")
            #expect(!s.reason.isEmpty)
        }
        let input = try #require(table.tensors.first { $0.name == "input" })
        #expect(input.value_count == 4 * 28 * 28, "only the 4 readable images are calibrated")
        let state = try StateFile.read(dir.appendingPathComponent("out/calibration.state").path)
        #expect(state.skippedSamples.map(\.index) == [2, 5, 6], "the state keeps them for resume and merge")
        #expect(state.shards == Set(0..<3))
    }

    @Test func failFastNamesTheFile() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (config, bad) = try Self.job(in: dir, policy: "fail-fast")
        let r = try CLI.run(["run", "--config", config, "--workers", "1", "--set", "cluster.max_shard_failures=1"])
        #expect(r.status != 0)
        #expect(bad.values.contains { r.stderr.contains($0) }, "the error names a bad file: \(r.stderr)")
    }
}
