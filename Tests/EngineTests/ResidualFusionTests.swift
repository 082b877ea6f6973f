import Testing
@testable import Engine

@Suite("Fused residual Add (1×1 Conv + Add)")
struct ResidualFusionTests {
    static let n = 2, hw = 5

    /// e = Relu(Conv(x, 12→24)); c = Conv(e, 24→12); s1 = x + c; d = Conv(s1); s2 = d + s1;
    /// f = Conv(s2); y = f + c; z = y + x.
    /// - s1: x and c both live on, so the sum needs a buffer of its own, taken while the Conv still
    ///   reads e (which dies there): it must not be e's.
    /// - s2: the addend s1 is the Conv's own input, so it is not fused (the sum could take over
    ///   s1's buffer while the Conv, in two 6-row tiles, still reads it).
    /// - y: f and c both die there, so the sum runs in place.
    static func model() -> (ModelBuilder, [String: [Float]]) {
        var rng = KernelTestRNG(seed: 31)
        var b = MB(); b.input("x", [n, 12, hw, hw]); b.output("z")
        var w: [String: [Float]] = [:]
        func conv(_ name: String, _ input: String, _ out: String, _ oc: Int, _ ic: Int) {
            w[name] = rng.floats(oc * ic); w[name + "b"] = rng.floats(oc)
            b.floats(name, [oc, ic, 1, 1], w[name]!); b.floats(name + "b", [oc], w[name + "b"]!)
            b.node("Conv", [input, name, name + "b"], [out])
        }
        conv("we", "x", "ce", 24, 12)
        b.node("Relu", ["ce"], ["e"])
        conv("wc", "e", "c", 12, 24)
        b.node("Add", ["x", "c"], ["s1"])
        conv("wd", "s1", "d", 12, 12)
        b.node("Add", ["d", "s1"], ["s2"])
        conv("wf", "s2", "f", 12, 12)
        b.node("Add", ["f", "c"], ["y"])
        b.node("Add", ["y", "x"], ["z"])
        return (b, w)
    }

    static func geometry(_ oc: Int, _ ic: Int) -> Conv2DGeometry {
        Conv2DGeometry(batch: n, inChannels: ic, inHeight: hw, inWidth: hw, outChannels: oc, kernelHeight: 1, kernelWidth: 1,
                       padTop: 0, padLeft: 0, padBottom: 0, padRight: 0)
    }

    @Test("sums are exactly conv + addend, with or without taps, on any thread count", arguments: [1, 2], [false, true])
    func exactSums(threads: Int, plannedForTaps: Bool) throws {
        let (b, w) = Self.model()
        let s = try InferenceSession(modelData: b.bytes(), baseDirectory: nil,
                                     options: SessionOptions(threads: threads, profile: true, plannedForTaps: plannedForTaps))
        var rng = KernelTestRNG(seed: 8)
        let xs = rng.floats(Self.n * 12 * Self.hw * Self.hw).map { $0 * 2 }
        let feeds = ["x": Tensor(shape: [Self.n, 12, Self.hw, Self.hw], data: xs)]
        let untapped = try #require(try s.run(feeds)["z"]).data
        let fusedUntapped = Dictionary(uniqueKeysWithValues: s.profile().map { ($0.node, $0.opType) })
        s.resetProfile()
        var t: [String: [Float]] = [:]
        let z = try #require(try s.run(feeds, tap: ActivationTap { a in t[a.name] = Array(a.values) })["z"]).data
        let fusedTapped = Dictionary(uniqueKeysWithValues: s.profile().map { ($0.node, $0.opType) })
        let sameAsUntapped = z == untapped, tapSeesOutput = t["z"] == z
        #expect(sameAsUntapped)
        #expect(tapSeesOutput)

        // Every Add against Swift's own Float addition of the tapped operands: bit for bit.
        func sum(_ a: String, _ b: String) throws -> [Float] {
            let x = try #require(t[a]), y = try #require(t[b])
            return zip(x, y).map { $0 + $1 }
        }
        for (out, a, b) in [("s1", "x", "c"), ("s2", "d", "s1"), ("y", "f", "c"), ("z", "y", "x")] {
            let exact = try t[out] == sum(a, b)
            #expect(exact, "\(out) != \(a) + \(b)")
        }
        // The Conv outputs against the reference convolution of their tapped inputs.
        for (out, input, name, oc, ic) in [("ce", "x", "we", 24, 12), ("c", "e", "wc", 12, 24), ("d", "s1", "wd", 12, 12),
                                           ("f", "s2", "wf", 12, 12)] {
            let ref = referenceConv(try #require(t[input]), w[name]!, w[name + "b"]!, Self.geometry(oc, ic))
            #expect(toleranceExcess(try #require(t[out]), ref) <= 0, "\(out)")
        }

        // Which Convs ran with their Add: c (into s1) and f (into y), never d (its addend is its
        // input). Tapped and not planned for taps, f's sum would overwrite the tapped f, so f runs
        // alone; planned for taps, the sum goes to c's buffer instead.
        let fuses = Kernels.VectorISA.best == .avx512
        let conv = "Conv", fused = fuses ? "Conv+Add" : "Conv"
        let nodeOf = { (out: String) in b.nodes.first { $0.output.first == out }!.name }
        #expect(fusedUntapped[nodeOf("c")] == fused && fusedUntapped[nodeOf("f")] == fused)
        #expect(fusedUntapped[nodeOf("d")] == conv)
        #expect(fusedTapped[nodeOf("c")] == fused)
        #expect(fusedTapped[nodeOf("f")] == (plannedForTaps ? fused : conv))
        #expect(fusedTapped[nodeOf("d")] == conv)
    }
}
