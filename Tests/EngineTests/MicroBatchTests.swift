import Foundation
import Testing
@testable import Engine

@Suite("Micro-batches: a large batch runs in slices only where that cannot change a value")
struct MicroBatchTests {
    typealias MB = ModelBuilder

    /// A small CNN with a dynamic batch: Conv → Relu → depthwise Conv (stride 2) → Add (residual
    /// through a 1×1 Conv) → GlobalAveragePool → Flatten → Gemm → Softmax (axis 1).
    static func cnn() -> MB {
        var rng = KernelTestRNG(seed: 7)
        var b = MB(); b.input("x", [nil, 3, 9, 9]); b.output("y")
        b.floats("w1", [6, 3, 3, 3], rng.floats(6 * 27)); b.floats("b1", [6], rng.floats(6))
        b.floats("w2", [6, 1, 3, 3], rng.floats(54)); b.floats("w3", [6, 6, 1, 1], rng.floats(36))
        b.floats("wf", [4, 6], rng.floats(24)); b.floats("bf", [4], rng.floats(4))
        b.node("Conv", ["x", "w1", "b1"], ["c1"], [MB.attr("pads", ints: [1, 1, 1, 1])])
        b.node("Relu", ["c1"], ["r1"])
        b.node("Conv", ["r1", "w2"], ["c2"], [MB.attr("group", int: 6), MB.attr("strides", ints: [2, 2]), MB.attr("pads", ints: [1, 1, 1, 1])])
        b.node("Conv", ["c2", "w3"], ["c3"])
        b.node("Add", ["c2", "c3"], ["s"])
        b.node("GlobalAveragePool", ["s"], ["g"])
        b.node("Flatten", ["g"], ["f"])
        b.node("Gemm", ["f", "wf", "bf"], ["z"], [MB.attr("transB", int: 1)])
        b.node("Softmax", ["z"], ["y"], [MB.attr("axis", int: 1)])
        return b
    }

    /// Runs `b` on a batch of `n` and returns the outputs and every tapped tensor reassembled from
    /// the slices the tap saw, plus the batch offsets and first dimensions it saw per tensor.
    static func run(_ b: MB, n: Int, shape: [Int], microBatch: Int?, threads: Int = 1, slices: Bool = true)
        throws -> (y: [Float], tapped: [String: [Float]], seen: [String: [(offset: Int, rows: Int)]]) {
        let s = try InferenceSession(modelData: b.bytes(), baseDirectory: nil,
                                     options: SessionOptions(threads: threads, microBatch: microBatch))
        var rng = KernelTestRNG(seed: 11)
        let x = Tensor(shape: [n] + shape, data: rng.floats(n * shape.reduce(1, *)).map { $0 * 2 })
        var tapped: [String: [Float]] = [:]
        var seen: [String: [(offset: Int, rows: Int)]] = [:]
        let tap = ActivationTap(acceptsBatchSlices: slices) { a in
            let rows = a.shape.first ?? 1
            let perRow = a.values.count / max(1, rows)
            var whole = tapped[a.name] ?? []
            if whole.count < (a.batchOffset + rows) * perRow { whole += [Float](repeating: .nan, count: (a.batchOffset + rows) * perRow - whole.count) }
            for i in 0..<a.values.count { whole[a.batchOffset * perRow + i] = a.values[i] }
            tapped[a.name] = whole
            seen[a.name, default: []].append((a.batchOffset, rows))
        }
        let y = try #require(try s.run(["x": x], tap: tap)["y"])
        #expect(y.shape.first == n)
        return (y.data, tapped, seen)
    }

    @Test("slices give bit-identical outputs and activations, each tensor seen once per slice in batch order",
          arguments: [(1, 1), (2, 1), (3, 2), (1, 2)])
    func slicedEqualsWhole(microBatch: Int, threads: Int) throws {
        let whole = try Self.run(Self.cnn(), n: 5, shape: [3, 9, 9], microBatch: nil, threads: threads)
        let sliced = try Self.run(Self.cnn(), n: 5, shape: [3, 9, 9], microBatch: microBatch, threads: threads)
        #expect(sliced.y == whole.y)
        #expect(Set(sliced.tapped.keys) == Set(whole.tapped.keys))
        for (name, v) in whole.tapped { #expect(sliced.tapped[name] == v, "\(name)") }
        // Whole: one call per tensor with all 5 rows; sliced: ceil(5 / m) calls covering 0..<5.
        for (name, calls) in whole.seen { #expect(calls.count == 1 && calls[0].offset == 0 && calls[0].rows == 5, "\(name)") }
        for (name, calls) in sliced.seen {
            var next = 0
            for c in calls {
                #expect(c.offset == next && c.rows == min(microBatch, 5 - next), "\(name)")
                next += c.rows
            }
            #expect(next == 5 && calls.count == (5 + microBatch - 1) / microBatch, "\(name)")
        }
        // Softmax rows sum to 1: the slices did not lose or shuffle rows.
        for r in 0..<5 { #expect(abs(sliced.y[r * 4 ..< r * 4 + 4].reduce(0, +) - 1) < 1e-5) }
    }

    @Test("untapped slices run side by side on several lanes and give the whole batch's outputs, bit for bit",
          arguments: [(1, 2), (2, 2), (1, 3), (2, 4)])
    func lanes(microBatch: Int, threads: Int) throws {
        let b = Self.cnn()
        var rng = KernelTestRNG(seed: 23)
        let n = 7
        let x = Tensor(shape: [n, 3, 9, 9], data: rng.floats(n * 243).map { $0 * 2 })
        let whole = try InferenceSession(modelData: b.bytes(), baseDirectory: nil, options: SessionOptions(threads: 1, microBatch: nil))
        let sliced = try InferenceSession(modelData: b.bytes(), baseDirectory: nil,
                                          options: SessionOptions(threads: threads, microBatch: microBatch))
        let want = try #require(try whole.run(["x": x])["y"])
        // Repeated runs reuse the lanes' plans and buffers.
        for _ in 0..<3 {
            let got = try #require(try sliced.run(["x": x])["y"])
            #expect(got.shape == want.shape && got.data == want.data)
        }
        // A batch that is not a multiple of the micro-batch, then a smaller one, on the same session.
        for m in [5, 2] {
            let xs = Tensor(shape: [m, 3, 9, 9], data: Array(x.data.prefix(m * 243)))
            #expect(try sliced.run(["x": xs])["y"]?.data == Array(want.data.prefix(m * 4)))
        }
    }

    @Test("a tap that wants whole tensors gets them even where slicing is allowed")
    func wholeTensorTap() throws {
        let r = try Self.run(Self.cnn(), n: 4, shape: [3, 9, 9], microBatch: 1, slices: false)
        for (name, calls) in r.seen { #expect(calls.count == 1 && calls[0].rows == 4, "\(name)") }
    }

    /// Graphs whose runtime ops combine batch rows (or cannot be planned per slice) run whole.
    static func mixingModels() -> [(String, MB, [Int], ([Float], Int) -> [Float])] {
        var out: [(String, MB, [Int], ([Float], Int) -> [Float])] = []
        // Softmax over the batch axis: y[i, j] = exp(x[i, j]) / Σ_i exp(x[i, j]).
        var a = MB(); a.input("x", [nil, 3]); a.output("y")
        a.node("Softmax", ["x"], ["y"], [MB.attr("axis", int: 0)])
        out.append(("Softmax axis 0", a, [3], { x, n in
            (0..<n * 3).map { k in
                let j = k % 3
                let denom = (0..<n).map { Float(exp(Double(x[$0 * 3 + j]))) }.reduce(0, +)
                return Float(exp(Double(x[k]))) / denom
            }
        }))
        // ReduceMean over the batch axis, kept as [1, 3], then broadcast back: y = x - mean_batch(x).
        var b = MB(); b.input("x", [nil, 3]); b.output("y")
        b.node("ReduceMean", ["x"], ["m"], [MB.attr("axes", ints: [0]), MB.attr("keepdims", int: 1)])
        b.node("Sub", ["x", "m"], ["y"])
        out.append(("x - ReduceMean over axis 0", b, [3], { x, n in
            (0..<n * 3).map { k in x[k] - (0..<n).map { x[$0 * 3 + k % 3] }.reduce(0, +) / Float(n) }
        }))
        // Transpose [N, 3] -> [3, N] -> Relu -> back: rows move through the other axis.
        var c = MB(); c.input("x", [nil, 3]); c.output("y")
        c.node("Transpose", ["x"], ["t"], [MB.attr("perm", ints: [1, 0])])
        c.node("Relu", ["t"], ["r"])
        c.node("Transpose", ["r"], ["y"], [MB.attr("perm", ints: [1, 0])])
        out.append(("Transpose round trip", c, [3], { x, _ in x.map { max($0, 0) } }))
        // Reshape that folds the batch into the other axis: [N, 3] -> [3N] -> Softmax -> [N, 3].
        var d = MB(); d.input("x", [nil, 3]); d.output("y")
        d.ints("flat", [1], [-1]); d.ints("back", [2], [-1, 3])
        d.node("Reshape", ["x", "flat"], ["f"])
        d.node("Softmax", ["f"], ["s"], [MB.attr("axis", int: 0)])
        d.node("Reshape", ["s", "back"], ["y"])
        out.append(("Softmax over the flattened batch", d, [3], { x, _ in
            let denom = x.map { Float(exp(Double($0))) }.reduce(0, +)
            return x.map { Float(exp(Double($0))) / denom }
        }))
        return out
    }

    @Test("graphs that combine batch rows run whole and match a hand computation", arguments: [0, 1, 2, 3])
    func mixingGraphsRunWhole(index: Int) throws {
        let (what, model, shape, expected) = Self.mixingModels()[index]
        let n = 4
        let r = try Self.run(model, n: n, shape: shape, microBatch: 1)
        var rng = KernelTestRNG(seed: 11)
        let x = rng.floats(n * shape.reduce(1, *)).map { $0 * 2 }
        let want = expected(x, n)
        #expect(r.y.count == want.count, "\(what)")
        for (a, b) in zip(r.y, want) { #expect(abs(a - b) <= 1e-5 + 1e-4 * abs(b), "\(what): \(a) vs \(b)") }
        for (name, calls) in r.seen { #expect(calls.count == 1 && calls[0].offset == 0, "\(what): \(name) was sliced") }
    }

    @Test("the separability check: rowwise ops pass, batch-axis attributes do not")
    func separabilityRules() throws {
        func verdict(_ b: MB, n: Int = 4) throws -> String? {
            let graph = try ModelLoader.load(data: Data(try b.bytes()), source: "test", baseDirectory: nil, logger: .init(label: "t"))
            func plan(_ batch: Int) throws -> Plan {
                try Planner(graph: graph, initializerBuffers: InitializerBuffers(graph: graph), logger: .init(label: "t"))
                    .build(inputShapes: [graph.inputs[0].name: [batch] + graph.inputs[0].shape.dropFirst().map { $0 ?? 1 }])
            }
            return BatchSeparability.problem(graph: graph, full: try plan(n), micro: try plan(1), batch: n, microBatch: 1)
        }
        #expect(try verdict(Self.cnn()) == nil)
        for (axis, ok) in [(1, true), (-1, true), (0, false), (-2, false)] {
            var b = MB(); b.input("x", [nil, 3]); b.output("y")
            b.node("Concat", ["x", "x"], ["y"], [MB.attr("axis", int: axis)])
            #expect(try (verdict(b) == nil) == ok, "Concat axis \(axis)")
            var s = MB(); s.input("x", [nil, 3]); s.output("y")
            s.node("Softmax", ["x"], ["y"], [MB.attr("axis", int: axis)])
            #expect(try (verdict(s) == nil) == ok, "Softmax axis \(axis)")
        }
        var t = MB(); t.input("x", [nil, 2, 3]); t.output("y")
        t.node("Transpose", ["x"], ["y"], [MB.attr("perm", ints: [0, 2, 1])])
        #expect(try verdict(t) == nil)
        var g = MB(); g.input("x", [nil, 3]); g.output("y")
        g.floats("w", [3, 2], [1, 2, 3, 4, 5, 6])
        g.node("Gemm", ["x", "w"], ["y"])
        #expect(try verdict(g) == nil)
        var sl = MB(); sl.input("x", [nil, 4]); sl.output("y")
        sl.ints("st", [1], [1]); sl.ints("en", [1], [3]); sl.ints("ax1", [1], [1])
        sl.node("Slice", ["x", "st", "en", "ax1"], ["y"])
        #expect(try verdict(sl) == nil)
        var s0 = MB(); s0.input("x", [nil, 4]); s0.output("y")
        s0.ints("st", [1], [-1]); s0.ints("en", [1], [Int(Int32.min)]); s0.ints("ax0", [1], [0]); s0.ints("step", [1], [-1])
        s0.node("Slice", ["x", "st", "en", "ax0", "step"], ["y"])
        #expect(try verdict(s0) != nil, "Slice reversing the batch")
    }

    @Test("EfficientNet-Lite0: batch 3 in micro-batches of 1 and 2 equals the whole batch, bit for bit")
    func effnet() throws {
        let path = "../shared/bench/effnet-lite0/efficientnet_lite0.onnx"
        guard FileManager.default.fileExists(atPath: path) else {
            print("skipped: \(path) not present")
            return
        }
        var rng = KernelTestRNG(seed: 3)
        let x = Tensor(shape: [3, 3, 224, 224], data: rng.floats(3 * 3 * 224 * 224))
        func run(_ m: Int?, threads: Int) throws -> [Float] {
            let s = try InferenceSession(modelPath: path, options: SessionOptions(threads: threads, microBatch: m))
            return try #require(try s.run([s.inputs[0].name: x]).values.first).data
        }
        let whole = try run(nil, threads: 1)
        #expect(try run(1, threads: 2) == whole)
        #expect(try run(2, threads: 1) == whole)
    }
}
