import Foundation
import Logging
import SwiftProtobuf
import Testing
@testable import Engine

/// Paths derived from this file's location: <repo>/Tests/EngineTests/ -> <repo>.
enum EnginePaths {
    static let repo: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let shared = repo.deletingLastPathComponent().appendingPathComponent("shared")
    static let cache = repo.appendingPathComponent(".cache")
    static func exists(_ u: URL) -> Bool { FileManager.default.fileExists(atPath: u.path) }
    static var fmnistModel: URL { shared.appendingPathComponent("bench/fashion-mnist/fmnist_cnn.onnx") }
    static var effnetModel: URL { shared.appendingPathComponent("bench/effnet-lite0/efficientnet_lite0.onnx") }
    static func fixtures(_ name: String) -> URL { cache.appendingPathComponent("fixtures/\(name)") }
}

/// ORT reference data written by scripts/make-fixtures.
struct ORTFixture {
    let dir: URL
    let modelPath: String
    let inputs: [String: Tensor]
    let outputs: [String: String]
    let intermediates: [String: String]
    let images: (input: String, logits: String)?

    init(_ name: String) throws {
        dir = EnginePaths.fixtures(name)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("index.json"))) as! [String: Any]
        modelPath = json["model"] as! String
        var ins: [String: Tensor] = [:]
        for (k, v) in json["inputs"] as! [String: String] { ins[k] = try NPY.read(path: dir.appendingPathComponent(v).path) }
        inputs = ins
        outputs = json["outputs"] as! [String: String]
        intermediates = json["intermediates"] as! [String: String]
        if let im = json["images"] as? [String: String] { images = (im["input"]!, im["logits"]!) } else { images = nil }
    }
    func load(_ file: String) throws -> Tensor { try NPY.read(path: dir.appendingPathComponent(file).path) }
}

/// Largest violation of |a - b| <= atol + rtol·|b| (<= 0 means within tolerance).
func toleranceExcess(_ a: [Float], _ b: [Float], rtol: Float = 1e-4, atol: Float = 1e-5) -> Float {
    var worst = -Float.infinity
    for i in 0..<min(a.count, b.count) {
        let d = abs(a[i] - b[i]) - (atol + rtol * abs(b[i]))
        if d.isNaN { return .infinity }
        worst = max(worst, d)
    }
    return worst
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// Builds small ONNX models in memory for per-op tests.
struct ModelBuilder {
    var opset = 13
    var nodes: [Onnx_NodeProto] = []
    var initializers: [Onnx_TensorProto] = []
    var inputs: [Onnx_ValueInfoProto] = []
    var outputs: [Onnx_ValueInfoProto] = []

    static func valueInfo(_ name: String, _ shape: [Int?], type: Int32 = 1) -> Onnx_ValueInfoProto {
        var v = Onnx_ValueInfoProto()
        v.name = name
        v.type.tensorType.elemType = type
        v.type.tensorType.shape.dim = shape.map { d in
            var x = Onnx_TensorShapeProto.Dimension()
            if let d { x.dimValue = Int64(d) } else { x.dimParam = "N" }
            return x
        }
        return v
    }
    mutating func input(_ name: String, _ shape: [Int?]) { inputs.append(Self.valueInfo(name, shape)) }
    mutating func output(_ name: String) { outputs.append(Self.valueInfo(name, [])) }
    mutating func floats(_ name: String, _ shape: [Int], _ v: [Float]) {
        var t = Onnx_TensorProto(); t.name = name; t.dims = shape.map { Int64($0) }; t.dataType = 1; t.floatData = v
        initializers.append(t)
    }
    mutating func ints(_ name: String, _ shape: [Int], _ v: [Int]) {
        var t = Onnx_TensorProto(); t.name = name; t.dims = shape.map { Int64($0) }; t.dataType = 7; t.int64Data = v.map { Int64($0) }
        initializers.append(t)
    }
    mutating func node(_ op: String, _ ins: [String], _ outs: [String], name: String? = nil, _ attrs: [Onnx_AttributeProto] = []) {
        var n = Onnx_NodeProto()
        n.opType = op; n.input = ins; n.output = outs; n.name = name ?? "\(op)_\(nodes.count)"; n.attribute = attrs
        nodes.append(n)
    }
    static func attr(_ name: String, int v: Int) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto(); a.name = name; a.type = .int; a.i = Int64(v); return a
    }
    static func attr(_ name: String, ints v: [Int]) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto(); a.name = name; a.type = .ints; a.ints = v.map { Int64($0) }; return a
    }
    static func attr(_ name: String, float v: Float) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto(); a.name = name; a.type = .float; a.f = v; return a
    }
    static func attr(_ name: String, string v: String) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto(); a.name = name; a.type = .string; a.s = Data(v.utf8); return a
    }
    func bytes() throws -> [UInt8] {
        var m = Onnx_ModelProto()
        m.irVersion = 8
        var op = Onnx_OperatorSetIdProto(); op.version = Int64(opset)
        m.opsetImport = [op]
        m.graph.name = "test"
        m.graph.node = nodes
        m.graph.initializer = initializers
        m.graph.input = inputs
        m.graph.output = outputs
        return try m.serializedBytes()
    }
    func session(baseDirectory: String? = nil) throws -> InferenceSession {
        try InferenceSession(modelData: bytes(), baseDirectory: baseDirectory)
    }
}

/// Runs a one-input model and returns its single named output.
func runSingle(_ b: ModelBuilder, _ feeds: [String: Tensor], output: String = "y") throws -> Tensor {
    let s = try b.session()
    let r = try s.run(feeds)
    return r[output]!
}
