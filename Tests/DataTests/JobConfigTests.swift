import Foundation
import Testing
@testable import Data

@Suite struct JobConfigTests {
    static let configDir = Fixtures.repoRoot + "/Config"

    @Test func demoConfigLoads() throws {
        let checkFiles = Fixtures.fashionMNIST != nil
        if !checkFiles { print("dataset-fashion-mnist not installed: checking demo.yaml without file checks") }
        let c = try JobConfig.load(path: Self.configDir + "/demo.yaml", checkFiles: checkFiles)
        #expect(c.model.path == Self.configDir + "/models/fashion-mnist-cnn.onnx")
        #expect(c.model.inputs == ["input"])
        #expect(c.dataset.kind == .idx && c.dataset.limit == 1000)
        #expect(c.dataset.preprocessing.scale == Float(1.0 / 255.0))
        #expect(c.shardSize == 50)
        #expect(c.methods == [.entropy, .percentile(99.99), .mse, .max])
        #expect(c.outputs.cacheHeader.headerLine == "TRT-8601-EntropyCalibration2")
        #expect(c.outputs.cachePath == Self.configDir + "/../out/demo/fashion-mnist.cache")
        #expect(c.cluster.creditsPerWorker == 2 && c.cluster.workerTimeout == 10 && c.cluster.checkpointEveryResults == 16)
    }

    @Test func demoDatasetAndShards() throws {
        guard Fixtures.fashionMNIST != nil else {
            print("skipping: Debian package dataset-fashion-mnist is not installed")
            return
        }
        let c = try JobConfig.load(path: Self.configDir + "/demo.yaml")
        let ds = try DatasetFactory.make(config: c.dataset, baseDirectory: c.baseDirectory)
        #expect(ds.sampleCount == 1000 && ds.sampleShape == [1, 28, 28])
        let plan = try c.shardPlan(sampleCount: ds.sampleCount)
        #expect(plan.shardCount == 20)
        let (x, report) = try ds.loadSamples(plan.range(ofShard: 19))
        #expect(report.loadedIndices == Array(950 ..< 1000) && x.count == 50 * 784)
    }

    @Test func exampleImageNetConfigParses() throws {
        let c = try JobConfig.load(path: Self.configDir + "/example-imagenet.yaml", checkFiles: false)
        #expect(c.dataset.kind == .imageFolder)
        #expect(c.dataset.onCorrupt == .skipAndCount)
        #expect(c.dataset.preprocessing.resize == .shorterSide(256))
        #expect(c.dataset.preprocessing.centerCrop == .init(width: 224, height: 224))
        #expect(c.dataset.preprocessing.mean == [0.485, 0.456, 0.406])
        #expect(c.tensors.excludeNames == ["logits"])
        #expect(c.outputs.reuse)
        #expect(c.cluster.publish == "tcp://calib-head:5555")
    }

    static let broken = """
    model:
      path: missing-model.onnx
      sha256: xyz
    dataset:
      kind: image-folder
      path: /nonexistent/shardcal/folder
      limt: 10
      preprocessing:
        mean: [0.5, abc]
        layout: chw
    shard_size: -4
    batch_size: many
    methods: [entropy, {percentile: 140}, fancy]
    cluster:
      workers: 2
      worker_timeout: 0.5
      colour: blue
    """

    @Test func everyProblemReportedWithLine() throws {
        var issues: [ConfigIssue] = []
        do {
            _ = try JobConfig.parse(yaml: Self.broken, fileName: "broken.yaml", baseDirectory: "/tmp")
            Issue.record("broken config was accepted")
        } catch let e as JobConfigError {
            issues = e.issues
        }
        let found = Set(issues.map { "\($0.keyPath)@\($0.line ?? 0)" })
        let expected: Set = [
            "model.path@2", "model.sha256@3", "dataset.path@6", "dataset.limt@7",
            "dataset.preprocessing.mean[1]@9", "dataset.preprocessing.layout@10",
            "shard_size@11", "batch_size@12", "methods[1].percentile@13", "methods[2]@13",
            "cluster.worker_timeout@16", "cluster.colour@17",
        ]
        #expect(found == expected, "got: \(issues.map(\.description).joined(separator: "\n"))")
        #expect(issues.map { $0.line ?? 0 } == issues.map { $0.line ?? 0 }.sorted())
        let limt = issues.first { $0.keyPath == "dataset.limt" }
        #expect(limt?.message.contains("did you mean 'limit'") == true)
        #expect(limt?.description.hasPrefix("broken.yaml:7:") == true)
    }

    @Test func missingSectionsAndSyntaxErrors() {
        do {
            _ = try JobConfig.parse(yaml: "shard_size: 4\n", baseDirectory: "/tmp")
            Issue.record("accepted a config without model and dataset")
        } catch let e as JobConfigError {
            #expect(Set(e.issues.map(\.keyPath)) == ["model", "dataset"])
        } catch { Issue.record("unexpected \(error)") }

        do {
            _ = try JobConfig.parse(yaml: "model:\n  path: a\n  inputs: [x, y\nshard_size: 3\n", baseDirectory: "/tmp")
            Issue.record("accepted invalid YAML")
        } catch let e as JobConfigError {
            #expect(e.issues.count == 1)
            #expect(e.issues.first?.message.contains("YAML syntax error") == true)
            #expect((e.issues.first?.line ?? 0) >= 3)
        } catch { Issue.record("unexpected \(error)") }
    }

    static let minimal = """
    model: {path: m.onnx}
    dataset:
      kind: npy
      path: data.npy
      preprocessing: {scale: 0.5}
    shard_size: 10
    """

    @Test func overridesApplyAndAreValidated() throws {
        var c = try JobConfig.parse(yaml: Self.minimal, baseDirectory: "/base", checkFiles: false)
        #expect(c.shardSize == 10 && c.cluster.workers == 2 && c.model.path == "/base/m.onnx")
        try c.apply(overrides: [ConfigOverride("shard_size=25"), ConfigOverride("cluster.workers=4"),
                                ConfigOverride("outputs.cache=out/x.cache"), ConfigOverride("methods=[max]")],
                    checkFiles: false)
        #expect(c.shardSize == 25 && c.cluster.workers == 4)
        #expect(c.outputs.cachePath == "/base/out/x.cache")
        #expect(c.methods == [.max])
        #expect(c.dataset.preprocessing.scale == 0.5) // untouched

        do {
            try c.apply(overrides: [ConfigOverride("batch_size=lots"), ConfigOverride("cluster.nope=1")], checkFiles: false)
            Issue.record("bad override accepted")
        } catch let e as JobConfigError {
            #expect(e.issues.count == 2)
            #expect(e.issues.allSatisfy { $0.location.fromCommandLine })
        }
        #expect(throws: JobConfigError.self) { try ConfigOverride("no-equals-sign") }
    }

    @Test func configDigestCoversResultFieldsOnly() throws {
        let base = try JobConfig.parse(yaml: Self.minimal, baseDirectory: "/base", checkFiles: false)
        // Same content, different formatting and key order: same digest.
        let reformatted = try JobConfig.parse(yaml: """
        # comment
        shard_size: 10
        dataset: {path: data.npy, preprocessing: {scale: 0.50}, kind: npy}
        model:
          path: m.onnx
        """, baseDirectory: "/elsewhere", checkFiles: false)
        #expect(base.configDigest == reformatted.configDigest)
        #expect(base.configDigest.count == 64)

        func digest(_ o: String) throws -> String {
            var c = base
            try c.apply(overrides: [ConfigOverride(o)], checkFiles: false)
            return c.configDigest
        }
        // dataset.limit is not in it either: a state records the samples it covers, so it can be
        // resumed with a larger dataset.
        for unrelated in ["cluster.workers=7", "outputs.cache=x.cache", "batch_size=3", "methods=[mse]", "dataset.on_corrupt=skip-and-count",
                          "dataset.limit=3"] {
            #expect(try digest(unrelated) == base.configDigest, "\(unrelated) changed the digest")
        }
        for related in ["shard_size=11", "dataset.preprocessing.scale=0.25",
                        "tensors.exclude.names=[logits]", "dataset.path=other.npy"] {
            #expect(try digest(related) != base.configDigest, "\(related) did not change the digest")
        }
        #expect(base.canonicalDigestText == """
        shardcal-config-digest v2
        dataset.kind=npy
        dataset.path=data.npy
        preprocessing.color=rgb
        preprocessing.resize=none
        preprocessing.center_crop=none
        preprocessing.scale=0.5
        preprocessing.mean=0.0
        preprocessing.std=1.0
        preprocessing.layout=nchw
        shard_size=10
        tensors.include.names=
        tensors.include.op_types=
        tensors.exclude.names=
        tensors.exclude.op_types=

        """)
    }

    @Test func modelDigestMatchesSha256sum() throws {
        // `sha256sum Tests/DataTests/Fixtures/digest-input.txt`
        #expect(try JobConfig.modelDigest(path: Fixtures.path("digest-input.txt"))
            == "3243ebafba50d6683d3c81cc107984ca381bfe05673d7c7d84351d67d3b0d5c0")
        #expect(throws: DataError.self) { try JobConfig.modelDigest(path: Fixtures.path("no-such-file")) }
    }

    @Test func modelDigestMismatchIsReported() throws {
        let yaml = """
        model:
          path: digest-input.txt
          sha256: \(String(repeating: "0", count: 64))
        dataset: {kind: npy, path: npy/float32.npy}
        """
        do {
            _ = try JobConfig.parse(yaml: yaml, baseDirectory: Fixtures.directory)
            Issue.record("digest mismatch accepted")
        } catch let e as JobConfigError {
            #expect(e.issues.map(\.keyPath) == ["model.sha256"])
            #expect(e.issues.first?.line == 3)
            #expect(e.issues.first?.message.contains("3243ebaf") == true)
        }
    }

    @Test func tensorSelection() {
        let all = TensorSelection()
        #expect(all.selects(name: "conv1", opType: "Conv"))
        let sel = TensorSelection(includeOpTypes: ["Conv", "Gemm"], excludeNames: ["*/head/*"])
        #expect(sel.selects(name: "block1/conv", opType: "Conv"))
        #expect(!sel.selects(name: "relu1", opType: "Relu"))
        #expect(!sel.selects(name: "net/head/fc", opType: "Gemm"))
        let byName = TensorSelection(includeNames: ["input", "stage*"], excludeOpTypes: ["Add"])
        #expect(byName.selects(name: "input", opType: nil))
        #expect(byName.selects(name: "stage2_out", opType: "Relu"))
        #expect(!byName.selects(name: "stage2_sum", opType: "Add"))
    }
}
