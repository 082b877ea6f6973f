import Testing
@testable import Engine

@Suite("Taps: fused Conv→Clip")
struct FusedTapTests {
    /// x → Conv 3×3 (c1) → Clip[0,6] (r1) → depthwise 3×3 stride 2 (c2) → Relu (r2) → 1×1 Conv (c3)
    /// → Clip(min, max inputs) (y). Every Conv output is read only by its clip, so untapped, each
    /// clip runs in place in the Conv's buffer.
    static func model() -> ModelBuilder {
        var rng = KernelTestRNG(seed: 99)
        var b = MB(); b.input("x", [2, 3, 10, 10]); b.output("y")
        b.floats("w1", [8, 3, 3, 3], rng.floats(8 * 27).map { $0 * 2 }); b.floats("b1", [8], rng.floats(8))
        b.floats("w2", [8, 1, 3, 3], rng.floats(8 * 9)); b.floats("b2", [8], rng.floats(8))
        b.floats("w3", [5, 8, 1, 1], rng.floats(40)); b.floats("lo", [], [-0.5]); b.floats("hi", [], [0.75])
        b.node("Conv", ["x", "w1", "b1"], ["c1"], [MB.attr("pads", ints: [1, 1, 1, 1])])
        b.floats("zero", [], [0]); b.floats("six", [], [6])
        b.node("Clip", ["c1", "zero", "six"], ["r1"])
        b.node("Conv", ["r1", "w2", "b2"], ["c2"], [MB.attr("group", int: 8), MB.attr("strides", ints: [2, 2]), MB.attr("pads", ints: [1, 1, 1, 1])])
        b.node("Relu", ["c2"], ["r2"])
        b.node("Conv", ["r2", "w3"], ["c3"])
        b.node("Clip", ["c3", "lo", "hi"], ["y"])
        return b
    }

    @Test("with every tensor tapped, Conv outputs are unclipped, clips are exact, and nothing changes the result",
          arguments: [1, 2], [false, true])
    func everyTapOn(threads: Int, plannedForTaps: Bool) throws {
        let b = Self.model()
        let s = try InferenceSession(modelData: b.bytes(), baseDirectory: nil,
                                     options: SessionOptions(threads: threads, profile: true, plannedForTaps: plannedForTaps))
        var rng = KernelTestRNG(seed: 5)
        let xs = rng.floats(2 * 3 * 100).map { $0 * 3 }
        let feeds = ["x": Tensor(shape: [2, 3, 10, 10], data: xs)]
        func run(_ filter: TapFilter?) throws -> (y: [Float], tapped: [String: [Float]], order: [String]) {
            var tapped: [String: [Float]] = [:]
            var order: [String] = []
            let tap = filter.map { f in ActivationTap(filter: f) { a in tapped[a.name] = Array(a.values); order.append(a.name) } }
            let y = try #require(try s.run(feeds, tap: tap)["y"])
            return (y.data, tapped, order)
        }
        let untapped = try run(nil)
        s.resetProfile()
        let all = try run(.all)
        // Which steps ran fused while every tensor was tapped: planned for taps, each clip has a
        // buffer of its own and runs in its Conv's kernel; otherwise every clip is a pass of its own.
        let fused = Set(s.profile().map(\.opType).filter { $0.contains("+") })
        #expect(fused == (plannedForTaps ? ["Conv+Clip", "Conv+Relu"] : []))
        #expect(all.order == ["x", "c1", "r1", "c2", "r2", "c3", "y"])
        #expect(all.y == untapped.y)
        #expect(all.tapped["y"] == untapped.y)
        let convs = try run(TapFilter(includeOpTypes: ["Conv"]))
        let clips = try run(TapFilter(includeOpTypes: ["Clip", "Relu"]))
        #expect(convs.y == untapped.y && clips.y == untapped.y)
        for name in ["c1", "c2", "c3"] { #expect(convs.tapped[name] == all.tapped[name], "\(name)") }
        for name in ["r1", "r2", "y"] { #expect(clips.tapped[name] == all.tapped[name], "\(name)") }
        // Each clip output is exactly the clip of the tapped Conv output (so the Conv output was not
        // clipped in place before the tap saw it), and the Conv outputs do reach outside the range.
        let c1 = try #require(all.tapped["c1"]), c2 = try #require(all.tapped["c2"]), c3 = try #require(all.tapped["c3"])
        #expect(all.tapped["r1"] == c1.map { min(max($0, 0), 6) })
        #expect(all.tapped["r2"] == c2.map { max($0, 0) })
        #expect(all.tapped["y"] == c3.map { min(max($0, -0.5), 0.75) })
        #expect(c1.contains { $0 < 0 } && c1.contains { $0 > 6 })
        #expect(c2.contains { $0 < 0 } && c3.contains { $0 < -0.5 || $0 > 0.75 })
        // The Conv outputs against the reference convolution.
        let g1 = Conv2DGeometry(batch: 2, inChannels: 3, inHeight: 10, inWidth: 10, outChannels: 8,
                                kernelHeight: 3, kernelWidth: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1)
        let w1 = b.initializers.first { $0.name == "w1" }!.floatData, b1 = b.initializers.first { $0.name == "b1" }!.floatData
        #expect(toleranceExcess(c1, referenceConv(xs, w1, b1, g1)) <= 0)
        // Runs again with the same taps give the same bits (the tap buffer is reused).
        let again = try run(.all)
        #expect(again.tapped == all.tapped)
    }

    /// x → Conv 3×3 (c) → Clip (r), y = c + r: the Conv output lives on, so the clip cannot run in
    /// place, and x dies at the Conv. The fused kernel writes r while it reads x, so r must not be
    /// given x's buffer (it was, before clip buffers were taken one step early).
    @Test("a Clip fused into its Conv never gets the buffer of an input the Conv is still reading",
          arguments: [false, true])
    func fusedClipBufferIsNotAnInput(plannedForTaps: Bool) throws {
        var rng = KernelTestRNG(seed: 7)
        // Large enough for the Conv to run in several column blocks, each reading x after the
        // blocks before it wrote theirs.
        var b = MB(); b.input("x", [1, 8, 64, 64]); b.output("y")
        let w = rng.floats(16 * 72), bias = rng.floats(16)
        b.floats("w", [16, 8, 3, 3], w); b.floats("b", [16], bias)
        b.floats("zero", [], [0]); b.floats("six", [], [6])
        b.node("Conv", ["x", "w", "b"], ["c"], [MB.attr("pads", ints: [1, 1, 1, 1])])
        b.node("Clip", ["c", "zero", "six"], ["r"])
        b.node("Add", ["c", "r"], ["y"])
        let s = try InferenceSession(modelData: b.bytes(), baseDirectory: nil,
                                     options: SessionOptions(profile: true, plannedForTaps: plannedForTaps))
        let xs = rng.floats(8 * 64 * 64).map { $0 * 3 }
        let y = try #require(try s.run(["x": Tensor(shape: [1, 8, 64, 64], data: xs)])["y"])
        #expect(s.profile().contains { $0.opType == "Conv+Clip" })
        let g = Conv2DGeometry(batch: 1, inChannels: 8, inHeight: 64, inWidth: 64, outChannels: 16,
                               kernelHeight: 3, kernelWidth: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1)
        let c = referenceConv(xs, w, bias, g)
        #expect(toleranceExcess(y.data, c.map { $0 + min(max($0, 0), 6) }) <= 0)
    }
}
