import Foundation
import Testing
@testable import Engine

typealias MB = ModelBuilder

/// Per-op cases with hand-computed expectations.
@Suite("Ops: hand-computed cases")
struct OpTests {
    @Test("Add broadcasts [2,1,3] + [4,1] -> [2,4,3]")
    func addBroadcast() throws {
        var b = MB(); b.input("a", [2, 1, 3]); b.input("b", [4, 1]); b.output("y")
        b.node("Add", ["a", "b"], ["y"])
        let a: [Float] = [0, 1, 2, 10, 11, 12], c: [Float] = [100, 200, 300, 400]
        let y = try runSingle(b, ["a": Tensor(shape: [2, 1, 3], data: a), "b": Tensor(shape: [4, 1], data: c)])
        #expect(y.shape == [2, 4, 3])
        var want: [Float] = []
        for i in 0..<2 { for j in 0..<4 { for k in 0..<3 { want.append(a[i * 3 + k] + c[j]) } } }
        #expect(y.data == want)
    }

    @Test("Sub with scalar on the left and Div per-channel (1,C,1,1)")
    func scalarAndChannel() throws {
        var b = MB(); b.input("x", [1, 2, 1, 2]); b.output("y")
        b.floats("s", [], [10]); b.floats("c", [1, 2, 1, 1], [2, 4])
        b.node("Sub", ["s", "x"], ["t"]); b.node("Div", ["t", "c"], ["y"])
        let y = try runSingle(b, ["x": Tensor(shape: [1, 2, 1, 2], data: [2, 4, 6, 8])])
        #expect(y.data == [4, 3, 1, 0.5])
    }

    @Test("Slice with negative starts/ends and a negative step")
    func sliceNegative() throws {
        var b = MB(); b.input("x", [10]); b.output("y"); b.output("z")
        b.ints("s1", [1], [-3]); b.ints("e1", [1], [-1])
        b.ints("s2", [1], [-1]); b.ints("e2", [1], [Int(Int64.min)]); b.ints("ax", [1], [0]); b.ints("st", [1], [-3])
        b.node("Slice", ["x", "s1", "e1"], ["y"])
        b.node("Slice", ["x", "s2", "e2", "ax", "st"], ["z"])
        let s = try b.session()
        let r = try s.run(["x": Tensor(shape: [10], data: (0..<10).map(Float.init))])
        #expect(r["y"]!.data == [7, 8])
        #expect(r["z"]!.data == [9, 6, 3, 0])
    }

    @Test("Slice with INT64_MAX end on axis 1 of a 2-D tensor")
    func sliceMaxEnd() throws {
        var b = MB(); b.input("x", [2, 3]); b.output("y")
        b.ints("s", [1], [1]); b.ints("e", [1], [Int(Int64.max)]); b.ints("a", [1], [-1])
        b.node("Slice", ["x", "s", "e", "a"], ["y"])
        let y = try runSingle(b, ["x": Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])])
        #expect(y.shape == [2, 2]); #expect(y.data == [2, 3, 5, 6])
    }

    @Test("Pad constant (asymmetric), reflect and edge")
    func pad() throws {
        for (mode, want) in [("constant", [Float]([9, 1, 2, 3, 9, 9])), ("reflect", [2, 1, 2, 3, 2, 1]), ("edge", [1, 1, 2, 3, 3, 3])] {
            var b = MB(); b.input("x", [1, 3]); b.output("y")
            b.ints("p", [4], [0, 1, 0, 2]); b.floats("v", [], [9])
            b.node("Pad", ["x", "p", "v"], ["y"], [MB.attr("mode", string: mode)])
            let y = try runSingle(b, ["x": Tensor(shape: [1, 3], data: [1, 2, 3])])
            #expect(y.shape == [1, 6]); #expect(y.data == want, "mode \(mode)")
        }
    }

    @Test("Resize nearest 2x (asymmetric, floor) and linear half_pixel")
    func resize() throws {
        var b = MB(); b.input("x", [1, 1, 2, 2]); b.output("n"); b.output("l")
        b.floats("scales", [4], [1, 1, 2, 2])
        b.node("Resize", ["x", "", "scales"], ["n"], [MB.attr("mode", string: "nearest"),
            MB.attr("coordinate_transformation_mode", string: "asymmetric"), MB.attr("nearest_mode", string: "floor")])
        b.node("Resize", ["x", "", "scales"], ["l"], [MB.attr("mode", string: "linear")])
        let r = try b.session().run(["x": Tensor(shape: [1, 1, 2, 2], data: [0, 4, 8, 12])])
        #expect(r["n"]!.shape == [1, 1, 4, 4])
        #expect(r["n"]!.data == [0, 0, 4, 4, 0, 0, 4, 4, 8, 8, 12, 12, 8, 8, 12, 12])
        // half_pixel: source coords -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped 1) per axis.
        let ax: [Float] = [0, 0.25, 0.75, 1]
        var want: [Float] = []
        for y in ax { for x in ax { want.append(8 * y + 4 * x) } }
        #expect(r["l"]!.data == want)
    }

    @Test("Resize with sizes input, round_prefer_floor half_pixel downsampling")
    func resizeSizes() throws {
        var b = MB(); b.input("x", [1, 1, 1, 5]); b.output("y")
        b.ints("sizes", [4], [1, 1, 1, 2])
        b.node("Resize", ["x", "", "", "sizes"], ["y"])
        // scale 0.4: x_orig = (o + 0.5)/0.4 - 0.5 = 0.75, 3.25 -> round 1, 3
        let y = try runSingle(b, ["x": Tensor(shape: [1, 1, 1, 5], data: [10, 11, 12, 13, 14])])
        #expect(y.data == [11, 13])
    }

    @Test("Shape sub-graph folds: Shape→Gather→Unsqueeze→Concat→Reshape works for any batch")
    func shapeFolding() throws {
        var b = MB(); b.input("x", [nil, 2, 3]); b.output("y")
        b.ints("zero", [], [0]); b.ints("minus1", [1], [-1]); b.ints("ax0", [1], [0])
        b.node("Shape", ["x"], ["s"]); b.node("Gather", ["s", "zero"], ["n"]); b.node("Unsqueeze", ["n", "ax0"], ["n1"])
        b.node("Concat", ["n1", "minus1"], ["shape"], [MB.attr("axis", int: 0)])
        b.node("Reshape", ["x", "shape"], ["y"])
        let s = try b.session()
        #expect(try s.tappableTensors().map(\.name) == ["x", "y"])
        let r = try s.run(["x": Tensor(shape: [3, 2, 3], data: (0..<18).map(Float.init))])
        #expect(r["y"]!.shape == [3, 6]); #expect(r["y"]!.data == (0..<18).map(Float.init))
    }

    @Test("Conv with asymmetric pads (0,0,1,1) and stride 2")
    func convAsymmetricPads() throws {
        var b = MB(); b.input("x", [1, 1, 3, 3]); b.output("y")
        b.floats("w", [1, 1, 2, 2], [1, 2, 3, 4]); b.floats("bias", [1], [0.5])
        b.node("Conv", ["x", "w", "bias"], ["y"], [MB.attr("pads", ints: [0, 0, 1, 1]), MB.attr("strides", ints: [2, 2])])
        // x = 1..9 in a 3x3 grid, padded bottom/right with zeros to 4x4; windows at (0,0),(0,2),(2,0),(2,2).
        let y = try runSingle(b, ["x": Tensor(shape: [1, 1, 3, 3], data: (1...9).map(Float.init))])
        #expect(y.shape == [1, 1, 2, 2])
        let w00: Float = 1 * 1 + 2 * 2 + 3 * 4 + 4 * 5   // window [1,2;4,5]
        let w02: Float = 1 * 3 + 2 * 0 + 3 * 6 + 4 * 0   // [3,0;6,0]
        let w20: Float = 1 * 7 + 2 * 8 + 3 * 0 + 4 * 0   // [7,8;0,0]
        let w22: Float = 1 * 9                           // [9,0;0,0]
        #expect(y.data == [w00, w02, w20, w22].map { $0 + 0.5 })
    }

    @Test("MaxPool ceil_mode output size and AveragePool count_include_pad")
    func pools() throws {
        var b = MB(); b.input("x", [1, 1, 4, 4]); b.output("m"); b.output("a")
        b.node("MaxPool", ["x"], ["m"], [MB.attr("kernel_shape", ints: [3, 3]), MB.attr("strides", ints: [2, 2]), MB.attr("ceil_mode", int: 1)])
        b.node("AveragePool", ["x"], ["a"], [MB.attr("kernel_shape", ints: [2, 2]), MB.attr("pads", ints: [1, 1, 0, 0]),
                                              MB.attr("strides", ints: [2, 2]), MB.attr("count_include_pad", int: 1)])
        let r = try b.session().run(["x": Tensor(shape: [1, 1, 4, 4], data: (0..<16).map(Float.init))])
        // ceil((4-3)/2)+1 = 2 per axis; windows rows {0..2},{2..3}
        #expect(r["m"]!.shape == [1, 1, 2, 2]); #expect(r["m"]!.data == [10, 11, 14, 15])
        // padded top/left by 1; windows: [pad,pad;pad,0]=0/4, [pad,pad;1,2]=3/4, [pad,4;pad,8]=12/4, [5,6;9,10]=30/4
        #expect(r["a"]!.shape == [1, 1, 2, 2]); #expect(r["a"]!.data == [0, 0.75, 3, 7.5])
    }

    @Test("Gemm transB, alpha, beta and row-vector C")
    func gemm() throws {
        var b = MB(); b.input("a", [2, 2]); b.output("y")
        b.floats("b", [3, 2], [1, 0, 0, 1, 1, 1]); b.floats("c", [3], [1, 2, 3])
        b.node("Gemm", ["a", "b", "c"], ["y"], [MB.attr("transB", int: 1), MB.attr("alpha", float: 2), MB.attr("beta", float: 10)])
        let y = try runSingle(b, ["a": Tensor(shape: [2, 2], data: [1, 2, 3, 4])])
        let want: [Float] = [12, 24, 36, 16, 28, 44]
        #expect(y.data == want)
    }

    @Test("MatMul batch broadcasting [2,1,2,3] x [3,3,2] -> [2,3,2,2]")
    func matmul() throws {
        var b = MB(); b.input("a", [2, 1, 2, 3]); b.input("b", [3, 3, 2]); b.output("y")
        b.node("MatMul", ["a", "b"], ["y"])
        let a = (0..<12).map(Float.init), bb = (0..<18).map { Float($0 % 5) }
        let y = try runSingle(b, ["a": Tensor(shape: [2, 1, 2, 3], data: a), "b": Tensor(shape: [3, 3, 2], data: bb)])
        #expect(y.shape == [2, 3, 2, 2])
        var want: [Float] = []
        for i in 0..<2 { for j in 0..<3 { for r in 0..<2 { for c in 0..<2 {
            var s: Float = 0
            for k in 0..<3 { s += a[i * 6 + r * 3 + k] * bb[j * 6 + k * 2 + c] }
            want.append(s)
        } } } }
        #expect(y.data == want)
    }

    @Test("Activations: Clip (inputs), HardSwish, HardSigmoid, LeakyRelu, PRelu")
    func activations() throws {
        var b = MB(); b.input("x", [1, 2, 1, 2]); for o in ["c", "hs", "hg", "lr", "pr"] { b.output(o) }
        b.floats("lo", [], [-1]); b.floats("hi", [], [2]); b.floats("slope", [2, 1, 1], [0.5, 0.25])
        b.node("Clip", ["x", "lo", "hi"], ["c"]); b.node("HardSwish", ["x"], ["hs"]); b.node("HardSigmoid", ["x"], ["hg"])
        b.node("LeakyRelu", ["x"], ["lr"], [MB.attr("alpha", float: 0.1)]); b.node("PRelu", ["x", "slope"], ["pr"])
        let x: [Float] = [-4, 1, 3, -2]
        let r = try b.session().run(["x": Tensor(shape: [1, 2, 1, 2], data: x)])
        #expect(r["c"]!.data == [-1, 1, 2, -1])
        let hs: [Float] = [0, 2.0 / 3.0, 3, -1.0 / 3.0]
        let hg: [Float] = [0, 0.7, 1, 0.1]
        #expect(toleranceExcess(r["hs"]!.data, hs, rtol: 1e-6, atol: 1e-6) <= 0)
        #expect(toleranceExcess(r["hg"]!.data, hg, rtol: 1e-6, atol: 1e-6) <= 0)
        let lr: [Float] = [-0.4, 1, 3, -0.2]
        #expect(toleranceExcess(r["lr"]!.data, lr, rtol: 1e-6, atol: 1e-6) <= 0)
        #expect(r["pr"]!.data == [-2, 1, 3, -0.5])
    }

    @Test("Softmax opset 13 on the last axis, ReduceMean keepdims, Transpose, Split, Concat")
    func misc() throws {
        var b = MB(); b.input("x", [2, 3]); for o in ["sm", "rm", "tr", "s0", "s1", "cc"] { b.output(o) }
        b.node("Softmax", ["x"], ["sm"])
        b.node("ReduceMean", ["x"], ["rm"], [MB.attr("axes", ints: [1]), MB.attr("keepdims", int: 1)])
        b.node("Transpose", ["x"], ["tr"], [MB.attr("perm", ints: [1, 0])])
        b.ints("sp", [2], [1, 2]); b.node("Split", ["x", "sp"], ["s0", "s1"], [MB.attr("axis", int: 1)])
        b.node("Concat", ["s1", "s0"], ["cc"], [MB.attr("axis", int: -1)])
        let x: [Float] = [1, 2, 3, 0, 0, 6]
        let r = try b.session().run(["x": Tensor(shape: [2, 3], data: x)])
        let e1 = [1, 2, 3].map { exp(Double($0)) }, s1 = e1.reduce(0, +)
        #expect(toleranceExcess(Array(r["sm"]!.data[0..<3]), e1.map { Float($0 / s1) }) <= 0)
        #expect(r["rm"]!.shape == [2, 1]); #expect(r["rm"]!.data == [2, 2])
        #expect(r["tr"]!.data == [1, 0, 2, 0, 3, 6])
        #expect(r["s0"]!.data == [1, 0]); #expect(r["s1"]!.data == [2, 3, 0, 6])
        #expect(r["cc"]!.data == [2, 3, 1, 0, 6, 0])
    }

    @Test("Squeeze/Unsqueeze attribute form (opset 11) and Flatten")
    func squeezeAttr() throws {
        var b = MB(); b.opset = 11; b.input("x", [2, 1, 3]); b.output("y")
        b.node("Squeeze", ["x"], ["s"], [MB.attr("axes", ints: [1])])
        b.node("Unsqueeze", ["s"], ["u"], [MB.attr("axes", ints: [0, 3])])
        b.node("Flatten", ["u"], ["y"], [MB.attr("axis", int: 2)])
        let y = try runSingle(b, ["x": Tensor(shape: [2, 1, 3], data: (0..<6).map(Float.init))])
        #expect(y.shape == [2, 3])
    }
}

@Suite("Loading errors and external data")
struct LoadingTests {
    @Test("unsupported op names node and op")
    func unsupportedOp() throws {
        var b = MB(); b.input("x", [1]); b.output("y"); b.node("FancyOp", ["x"], ["y"], name: "my_node")
        #expect {
            _ = try b.session()
        } throws: { e in
            guard let e = e as? EngineError, case .unsupportedOp(let node, let op, _) = e else { return false }
            return node == "my_node" && op == "FancyOp" && e.description.contains("my_node")
        }
    }

    @Test("unsupported attribute value names it")
    func unsupportedAttr() throws {
        var b = MB(); b.input("x", [1, 1, 2, 2]); b.output("y"); b.floats("s", [4], [1, 1, 2, 2])
        b.node("Resize", ["x", "", "s"], ["y"], name: "rs", [MB.attr("mode", string: "cubic")])
        #expect {
            _ = try b.session()
        } throws: { e in "\(e)".contains("rs") && "\(e)".contains("cubic") }
    }

    @Test("unsupported opset is rejected")
    func opset() throws {
        var b = MB(); b.opset = 6; b.input("x", [1]); b.output("y"); b.node("Relu", ["x"], ["y"])
        #expect(throws: EngineError.self) { _ = try b.session() }
    }

    @Test("truncated, empty and non-ONNX bytes fail with a clear error")
    func garbage() throws {
        var b = MB(); b.input("x", [2]); b.output("y"); b.floats("w", [2], [1, 2]); b.node("Mul", ["x", "w"], ["y"])
        let good = try b.bytes()
        for cut in [1, good.count / 3, good.count / 2, good.count - 1] {
            #expect(throws: EngineError.self) { _ = try InferenceSession(modelData: Array(good[..<cut]), baseDirectory: nil) }
        }
        #expect(throws: EngineError.self) { _ = try InferenceSession(modelData: [], baseDirectory: nil) }
        #expect(throws: EngineError.self) { _ = try InferenceSession(modelData: Array("hello, this is not a model".utf8), baseDirectory: nil) }
        #expect(throws: EngineError.self) { _ = try InferenceSession(modelPath: "/nonexistent/model.onnx") }
    }

    @Test("external data initializers are read relative to the model")
    func externalData() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("engine-ext-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // 16 junk bytes then 3 little-endian floats 1.5, -2, 4
        var blob = [UInt8](repeating: 0xAB, count: 16)
        for v in [Float(1.5), -2, 4] { withUnsafeBytes(of: v.bitPattern.littleEndian) { blob += $0 } }
        try Data(blob).write(to: dir.appendingPathComponent("weights.bin"))
        var b = MB(); b.input("x", [3]); b.output("y")
        var t = Onnx_TensorProto(); t.name = "w"; t.dims = [3]; t.dataType = 1; t.dataLocation = .external
        for (k, v) in [("location", "weights.bin"), ("offset", "16"), ("length", "12")] {
            var e = Onnx_StringStringEntryProto(); e.key = k; e.value = v; t.externalData.append(e)
        }
        b.initializers.append(t)
        b.node("Mul", ["x", "w"], ["y"])
        let path = dir.appendingPathComponent("m.onnx").path
        try Data(try b.bytes()).write(to: URL(fileURLWithPath: path))
        let s = try InferenceSession(modelPath: path)
        #expect(try s.run(["x": Tensor(shape: [3], data: [2, 2, 2])])["y"]!.data == [3, -4, 8])
        // missing side file: clear error naming the initializer
        try FileManager.default.removeItem(at: dir.appendingPathComponent("weights.bin"))
        #expect { _ = try InferenceSession(modelPath: path) } throws: { "\($0)".contains("'w'") }
    }

    @Test("NPY reads numpy's files and round-trips")
    func npy() throws {
        let t = Tensor(shape: [2, 3], data: [1, -2.5, 3, .pi, 0, 1e-8])
        #expect(try NPY.decode(NPY.encode(t)) == t)
        // A file written by numpy (np.save of float32 [1, 2.5] shape (2,)), bytes spelled out.
        var np: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, 118, 0]
        var h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
        h += String(repeating: " ", count: 118 - 1 - h.utf8.count) + "\n"
        np += Array(h.utf8) + [0, 0, 0x80, 0x3f, 0, 0, 0x20, 0x40]
        #expect(try NPY.decode(np) == Tensor(shape: [2], data: [1, 2.5]))
        #expect(throws: NPY.FormatError.self) { try NPY.decode(Array(np.dropLast(2))) }
    }
}

@Suite("Taps")
struct TapTests {
    @Test("taps see inputs and node outputs in order, filters apply, values are not copies of constants")
    func order() throws {
        var b = MB(); b.input("x", [2]); b.output("y")
        b.floats("w", [2], [2, 3])
        b.node("Mul", ["x", "w"], ["m"]); b.node("Relu", ["m"], ["r"]); b.node("Neg", ["r"], ["y"])
        let s = try b.session()
        var seen: [(String, String, [Float])] = []
        _ = try s.run(["x": Tensor(shape: [2], data: [1, -1])], tap: ActivationTap { a in seen.append((a.name, a.opType, Array(a.values))) })
        #expect(seen.map(\.0) == ["x", "m", "r", "y"])
        #expect(seen.map(\.1) == ["Input", "Mul", "Relu", "Neg"])
        #expect(seen[1].2 == [2, -3]); #expect(seen[2].2 == [2, 0]); #expect(seen[3].2 == [-2, 0])
        #expect(try s.tappableTensors(TapFilter(excludeNames: ["m"], excludeOpTypes: ["Input"])).map(\.name) == ["r", "y"])
        #expect(try s.tappableTensors(TapFilter(includeOpTypes: ["Relu"])).map(\.name) == ["r"])
    }
}

@Suite("Ops: older opset forms and ConvTranspose")
struct OpsetFormTests {
    @Test("ConvTranspose stride 2 (no pads), with pads, and stride 1 overlap")
    func convTranspose() throws {
        var b = MB(); b.input("x", [1, 1, 2, 2]); for o in ["a", "p", "s"] { b.output(o) }
        b.floats("w", [1, 1, 2, 2], [1, 1, 1, 1])
        b.node("ConvTranspose", ["x", "w"], ["a"], [MB.attr("strides", ints: [2, 2])])
        b.node("ConvTranspose", ["x", "w"], ["p"], [MB.attr("strides", ints: [2, 2]), MB.attr("pads", ints: [1, 1, 1, 1])])
        b.node("ConvTranspose", ["x", "w"], ["s"])
        let r = try b.session().run(["x": Tensor(shape: [1, 1, 2, 2], data: [1, 2, 3, 4])])
        #expect(r["a"]!.shape == [1, 1, 4, 4])
        #expect(r["a"]!.data == [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4])
        #expect(r["p"]!.shape == [1, 1, 2, 2]); #expect(r["p"]!.data == [1, 2, 3, 4])
        // stride 1: each output sums the inputs whose 2×2 footprint covers it
        #expect(r["s"]!.shape == [1, 1, 3, 3]); #expect(r["s"]!.data == [1, 3, 2, 4, 10, 6, 3, 7, 4])
    }

    @Test("opset 9: Slice/Clip/Pad attributes, Upsample scales input, Dropout with mask declared")
    func opset9() throws {
        var b = MB(); b.opset = 9; b.input("x", [1, 1, 2, 3]); for o in ["sl", "cl", "pd", "up", "dr"] { b.output(o) }
        b.node("Slice", ["x"], ["sl"], [MB.attr("starts", ints: [1]), MB.attr("ends", ints: [1000]), MB.attr("axes", ints: [3])])
        b.node("Clip", ["x"], ["cl"], [MB.attr("min", float: 2), MB.attr("max", float: 4)])
        b.node("Pad", ["x"], ["pd"], [MB.attr("pads", ints: [0, 0, 0, 1, 0, 0, 0, 0]), MB.attr("value", float: -1)])
        b.floats("sc", [4], [1, 1, 2, 1])
        b.node("Upsample", ["x", "sc"], ["up"])
        b.node("Dropout", ["x"], ["dr", "mask"])
        let x: [Float] = [1, 2, 3, 4, 5, 6]
        let r = try b.session().run(["x": Tensor(shape: [1, 1, 2, 3], data: x)])
        #expect(r["sl"]!.data == [2, 3, 5, 6])
        #expect(r["cl"]!.data == [2, 2, 3, 4, 4, 4])
        #expect(r["pd"]!.shape == [1, 1, 2, 4]); #expect(r["pd"]!.data == [-1, 1, 2, 3, -1, 4, 5, 6])
        #expect(r["up"]!.shape == [1, 1, 4, 3]); #expect(r["up"]!.data == [1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6])
        #expect(r["dr"]!.data == x)
    }

    @Test("Softmax opset 11 flattens from the axis")
    func softmax11() throws {
        var b = MB(); b.opset = 11; b.input("x", [1, 2, 2]); b.output("y")
        b.node("Softmax", ["x"], ["y"])   // axis 1: softmax over the 4 values together
        let y = try runSingle(b, ["x": Tensor(shape: [1, 2, 2], data: [0, 0, 0, 0])])
        #expect(y.data == [0.25, 0.25, 0.25, 0.25])
    }

    @Test("Resize linear align_corners 2 -> 3")
    func alignCorners() throws {
        var b = MB(); b.input("x", [1, 1, 1, 2]); b.output("y")
        b.ints("sizes", [4], [1, 1, 1, 3])
        b.node("Resize", ["x", "", "", "sizes"], ["y"], [MB.attr("mode", string: "linear"),
            MB.attr("coordinate_transformation_mode", string: "align_corners")])
        let y = try runSingle(b, ["x": Tensor(shape: [1, 1, 1, 2], data: [2, 6])])
        #expect(y.data == [2, 4, 6])
    }

    @Test("a truncated real model fails with EngineError", .enabled(if: EnginePaths.exists(EnginePaths.fmnistModel), "../shared absent"))
    func truncatedRealModel() throws {
        let bytes = try [UInt8](Data(contentsOf: EnginePaths.fmnistModel))
        for frac in [0.1, 0.5, 0.9, 0.999] {
            let cut = Array(bytes[..<Int(Double(bytes.count) * frac)])
            #expect(throws: EngineError.self) { _ = try InferenceSession(modelData: cut, baseDirectory: nil) }
        }
    }
}

@Suite("Robustness")
struct RobustnessTests {
    /// A small CNN-like model whose serialized bytes are mutated at random: every mutant must
    /// either fail with an error or run, never trap.
    @Test("byte-mutated models throw or run, never crash")
    func mutations() throws {
        var b = MB(); b.input("x", [nil, 1, 6, 6]); b.output("y")
        b.floats("w", [2, 1, 3, 3], (0..<18).map { Float($0) / 10 }); b.floats("bias", [2], [0.1, -0.1])
        b.floats("fw", [3, 8], (0..<24).map { Float($0) / 7 })
        b.ints("shape", [2], [0, -1]); b.ints("starts", [1], [0]); b.ints("ends", [1], [8])
        b.node("Conv", ["x", "w", "bias"], ["c"], [MB.attr("pads", ints: [1, 1, 1, 1]), MB.attr("strides", ints: [2, 2])])
        b.node("Relu", ["c"], ["r"])
        b.node("MaxPool", ["r"], ["p"], [MB.attr("kernel_shape", ints: [2, 2]), MB.attr("strides", ints: [2, 2]), MB.attr("ceil_mode", int: 1)])
        b.node("Reshape", ["p", "shape"], ["f"])
        b.node("Slice", ["f", "starts", "ends"], ["s"])
        b.node("Gemm", ["s", "fw"], ["y"], [MB.attr("transB", int: 1)])
        let good = try b.bytes()
        #expect(try MB.session(good).run(["x": Tensor(shape: [2, 1, 6, 6], data: [Float](repeating: 1, count: 72))])["y"]!.shape == [2, 3])
        var rng: UInt64 = 0x9E3779B97F4A7C15
        func next() -> Int { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return Int(rng >> 1) }
        var loaded = 0
        for _ in 0..<3000 {
            var m = good
            for _ in 0..<(1 + next() % 3) {
                let i = next() % m.count
                switch next() % 3 {
                case 0: m[i] = UInt8(truncatingIfNeeded: next())
                case 1: m[i] ^= UInt8(1 << (next() % 8))
                default: m[i] = [0, 1, 0x7f, 0x80, 0xff][next() % 5]
                }
            }
            guard let s = try? MB.session(m) else { continue }
            loaded += 1
            for info in s.inputs {
                let shape = info.shape.map { $0 ?? 2 }
                let n = shape.reduce(1, *)
                guard n >= 0, n < 1 << 20 else { continue }
                _ = try? s.run([info.name: Tensor(shape: shape, data: [Float](repeating: 0.5, count: n))])
            }
        }
        #expect(loaded > 0)
    }
}

extension ModelBuilder {
    static func session(_ bytes: [UInt8]) throws -> InferenceSession {
        try InferenceSession(modelData: bytes, baseDirectory: nil)
    }
}
