import Foundation
import Logging
import SwiftProtobuf

/// Element storage of a constant tensor known at plan time. Integer types of any width are
/// widened to `Int`; float types (float32/float64/float16) narrowed or widened to `Float`.
enum HostData: Equatable {
    case float([Float])
    case int([Int])
}

/// A constant tensor (initializer, Constant node, or folded value).
struct HostTensor: Equatable {
    var shape: [Int]
    var data: HostData
    var count: Int { shape.reduce(1, *) }
    var isFloat: Bool { if case .float = data { return true } else { return false } }

    init(shape: [Int], data: HostData) {
        self.shape = shape
        self.data = data
    }
    init(shape: [Int], floats: [Float]) { self.init(shape: shape, data: .float(floats)) }
    init(shape: [Int], ints: [Int]) { self.init(shape: shape, data: .int(ints)) }

    /// Values as Int (floats truncated toward zero, as Cast does).
    var intValues: [Int] {
        switch data {
        case .int(let v): return v
        case .float(let v): return v.map { $0.isFinite ? Int($0) : ($0 > 0 ? Int.max : Int.min) }
        }
    }
    var floatValues: [Float] {
        switch data {
        case .float(let v): return v
        case .int(let v): return v.map { Float($0) }
        }
    }
}

/// One node of the loaded graph.
struct GraphNode {
    var name: String
    var opType: String
    var domain: String
    var inputs: [String]
    var outputs: [String]
    var attributes: [String: Onnx_AttributeProto]
}

/// The model after parsing: topologically ordered nodes, decoded initializers, and I/O.
struct LoadedGraph {
    var nodes: [GraphNode]
    var initializers: [String: HostTensor]
    var inputs: [TensorInfo]
    var outputs: [TensorInfo]
    var opset: Int
}

enum ModelLoader {
    static let supportedOpsets = 7...21

    static func load(path: String, logger: Logger) throws -> LoadedGraph {
        let url = URL(fileURLWithPath: path)
        let bytes: Data
        do {
            bytes = try Data(contentsOf: url)
        } catch {
            throw EngineError.fileUnreadable(path: path, reason: "\(error.localizedDescription)")
        }
        return try load(data: bytes, source: path, baseDirectory: url.deletingLastPathComponent().path, logger: logger)
    }

    static func load(data: Data, source: String, baseDirectory: String?, logger: Logger) throws -> LoadedGraph {
        if data.isEmpty { throw EngineError.invalidModel(source: source, reason: "the file is empty") }
        let model: Onnx_ModelProto
        do {
            model = try Onnx_ModelProto(serializedBytes: data)
        } catch {
            throw EngineError.invalidModel(source: source, reason: "protobuf parse failed (\(error)); the file is truncated or not an ONNX model")
        }
        guard model.hasGraph, model.irVersion > 0 else {
            throw EngineError.invalidModel(source: source, reason: "no graph or ir_version in the file; not an ONNX model")
        }
        var opset: Int?
        for imp in model.opsetImport {
            if imp.domain == "" || imp.domain == "ai.onnx" {
                opset = Int(imp.version)
            } else {
                logger.debug("ignoring opset import", metadata: ["domain": "\(imp.domain)", "version": "\(imp.version)"])
            }
        }
        guard let opset else {
            throw EngineError.invalidModel(source: source, reason: "the model imports no ai.onnx opset")
        }
        guard supportedOpsets.contains(opset) else {
            throw EngineError.unsupportedOpset(domain: "", version: opset, supported: supportedOpsets)
        }
        let g = model.graph
        var initializers: [String: HostTensor] = [:]
        for t in g.initializer {
            initializers[t.name] = try decodeTensor(t, baseDirectory: baseDirectory)
        }
        let inputs = g.input.filter { initializers[$0.name] == nil }.map(tensorInfo)
        let outputs = g.output.map(tensorInfo)
        var nodes: [GraphNode] = []
        nodes.reserveCapacity(g.node.count)
        for (i, n) in g.node.enumerated() {
            var attrs: [String: Onnx_AttributeProto] = [:]
            for a in n.attribute { attrs[a.name] = a }
            let name = n.name.isEmpty ? "\(n.opType)_\(i)" : n.name
            if !(n.domain.isEmpty || n.domain == "ai.onnx") {
                throw EngineError.unsupportedOp(node: name, op: "\(n.domain).\(n.opType)", opset: opset)
            }
            nodes.append(GraphNode(name: name, opType: n.opType, domain: n.domain, inputs: n.input,
                                   outputs: n.output, attributes: attrs))
        }
        let sorted = try topologicalSort(nodes, available: Set(initializers.keys).union(inputs.map(\.name)), source: source)
        logger.debug("loaded model", metadata: ["source": "\(source)", "nodes": "\(sorted.count)", "opset": "\(opset)",
                                                "initializers": "\(initializers.count)"])
        return LoadedGraph(nodes: sorted, initializers: initializers, inputs: inputs, outputs: outputs, opset: opset)
    }

    static func tensorInfo(_ v: Onnx_ValueInfoProto) -> TensorInfo {
        let tt = v.type.tensorType
        let dims: [Int?] = tt.shape.dim.map { d in
            if case .dimValue(let x)? = d.value, x > 0 { return Int(x) }
            return nil
        }
        return TensorInfo(name: v.name, elementType: Int(tt.elemType), shape: dims)
    }

    /// Kahn's algorithm, stable with respect to the file order (the file order wins when valid).
    static func topologicalSort(_ nodes: [GraphNode], available: Set<String>, source: String) throws -> [GraphNode] {
        var producer: [String: Int] = [:]
        for (i, n) in nodes.enumerated() { for o in n.outputs where !o.isEmpty { producer[o] = i } }
        var pending = [Int](repeating: 0, count: nodes.count)
        var consumers = [[Int]](repeating: [], count: nodes.count)
        for (i, n) in nodes.enumerated() {
            for inp in Set(n.inputs) where !inp.isEmpty {
                if let p = producer[inp] {
                    pending[i] += 1
                    consumers[p].append(i)
                } else if !available.contains(inp) {
                    throw EngineError.invalidNode(node: n.name, op: n.opType, detail: "input '\(inp)' is produced by no node, initializer or graph input")
                }
            }
        }
        // Min-heap by index would be ideal; the graphs are small, so a sorted ready list is enough.
        var ready = (0..<nodes.count).filter { pending[$0] == 0 }
        var order: [Int] = []
        order.reserveCapacity(nodes.count)
        while !ready.isEmpty {
            let i = ready.removeFirst()
            order.append(i)
            var added = false
            for c in consumers[i] {
                pending[c] -= 1
                if pending[c] == 0 { ready.append(c); added = true }
            }
            if added { ready.sort() }
        }
        if order.count != nodes.count {
            throw EngineError.invalidModel(source: source, reason: "the graph has a cycle")
        }
        return order.map { nodes[$0] }
    }

    // MARK: tensors

    static func decodeTensor(_ t: Onnx_TensorProto, baseDirectory: String?) throws -> HostTensor {
        let name = t.name
        var shape: [Int] = []
        for d in t.dims {
            guard d >= 0 else { throw EngineError.invalidInitializer(name: name, detail: "negative dimension \(d)") }
            shape.append(Int(d))
        }
        if let p = shapeProblem(shape) { throw EngineError.invalidInitializer(name: name, detail: p) }
        let count = elementCount(shape)
        var raw: Data? = t.rawData.isEmpty ? nil : t.rawData
        if t.dataLocation == .external {
            raw = try readExternal(t, baseDirectory: baseDirectory)
        }
        func check(_ n: Int) throws {
            if n != count {
                throw EngineError.invalidInitializer(name: name, detail: "holds \(n) values but its shape \(shape) needs \(count)")
            }
        }
        func fromRaw<T>(_ r: Data, _ type: T.Type) throws -> [T] {
            let size = MemoryLayout<T>.size
            guard r.count / size == count, r.count % size == 0 else {
                throw EngineError.invalidInitializer(name: name, detail: "raw data has \(r.count) bytes, shape \(shape) needs \(count * size)")
            }
            return r.withUnsafeBytes { buf in
                (0..<count).map { buf.loadUnaligned(fromByteOffset: $0 * size, as: T.self) }
            }
        }
        switch t.dataType {
        case 1: // FLOAT
            if let r = raw {
                let v: [Float] = try fromRaw(r, Float.self)
                return HostTensor(shape: shape, floats: v)
            }
            try check(t.floatData.count)
            return HostTensor(shape: shape, floats: t.floatData)
        case 11: // DOUBLE
            if let r = raw { return HostTensor(shape: shape, floats: try fromRaw(r, Double.self).map { Float($0) }) }
            try check(t.doubleData.count)
            return HostTensor(shape: shape, floats: t.doubleData.map { Float($0) })
        case 10: // FLOAT16
            let bits: [UInt16]
            if let r = raw { bits = try fromRaw(r, UInt16.self) } else { try check(t.int32Data.count); bits = t.int32Data.map { UInt16(truncatingIfNeeded: $0) } }
            return HostTensor(shape: shape, floats: bits.map(halfToFloat))
        case 7: // INT64
            if let r = raw { return HostTensor(shape: shape, ints: try fromRaw(r, Int64.self).map { Int($0) }) }
            try check(t.int64Data.count)
            return HostTensor(shape: shape, ints: t.int64Data.map { Int($0) })
        case 6: // INT32
            if let r = raw { return HostTensor(shape: shape, ints: try fromRaw(r, Int32.self).map { Int($0) }) }
            try check(t.int32Data.count)
            return HostTensor(shape: shape, ints: t.int32Data.map { Int($0) })
        case 2, 3, 9: // UINT8, INT8, BOOL
            if let r = raw {
                let v: [Int] = t.dataType == 3 ? try fromRaw(r, Int8.self).map { Int($0) } : try fromRaw(r, UInt8.self).map { Int($0) }
                return HostTensor(shape: shape, ints: v)
            }
            try check(t.int32Data.count)
            return HostTensor(shape: shape, ints: t.int32Data.map { Int($0) })
        case 4, 5: // UINT16, INT16
            if let r = raw {
                let v: [Int] = t.dataType == 5 ? try fromRaw(r, Int16.self).map { Int($0) } : try fromRaw(r, UInt16.self).map { Int($0) }
                return HostTensor(shape: shape, ints: v)
            }
            try check(t.int32Data.count)
            return HostTensor(shape: shape, ints: t.int32Data.map { Int($0) })
        case 12: // UINT32
            if let r = raw { return HostTensor(shape: shape, ints: try fromRaw(r, UInt32.self).map { Int($0) }) }
            try check(t.uint64Data.count)
            return HostTensor(shape: shape, ints: t.uint64Data.map { Int($0) })
        default:
            throw EngineError.invalidInitializer(name: name, detail: "data type \(t.dataType) is not supported")
        }
    }

    static func readExternal(_ t: Onnx_TensorProto, baseDirectory: String?) throws -> Data {
        var location: String?
        var offset = 0
        var length: Int?
        for e in t.externalData {
            switch e.key {
            case "location": location = e.value
            case "offset": offset = Int(e.value) ?? -1
            case "length": length = Int(e.value)
            default: break
            }
        }
        guard let location, !location.isEmpty else {
            throw EngineError.invalidInitializer(name: t.name, detail: "external data without a location")
        }
        guard let base = baseDirectory else {
            throw EngineError.invalidInitializer(name: t.name, detail: "external data '\(location)' but the model was loaded from memory without a base directory")
        }
        guard offset >= 0 else { throw EngineError.invalidInitializer(name: t.name, detail: "invalid external data offset") }
        let path = URL(fileURLWithPath: base).appendingPathComponent(location).path
        guard let fh = FileHandle(forReadingAtPath: path) else {
            throw EngineError.invalidInitializer(name: t.name, detail: "external data file '\(path)' cannot be opened")
        }
        defer { try? fh.close() }
        do {
            let size = Int(try fh.seekToEnd())
            let len = length ?? (size - offset)
            guard offset + len <= size, len >= 0 else {
                throw EngineError.invalidInitializer(name: t.name, detail: "external data range \(offset)+\(len) exceeds '\(path)' (\(size) bytes)")
            }
            try fh.seek(toOffset: UInt64(offset))
            let d = try fh.read(upToCount: len) ?? Data()
            guard d.count == len else {
                throw EngineError.invalidInitializer(name: t.name, detail: "short read from '\(path)'")
            }
            return d
        } catch let e as EngineError {
            throw e
        } catch {
            throw EngineError.invalidInitializer(name: t.name, detail: "reading '\(path)': \(error)")
        }
    }

    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h >> 15) << 31
        let exp = Int((h >> 10) & 0x1f)
        let mant = UInt32(h & 0x3ff)
        if exp == 0 {
            let v = Float(mant) * Float(sign != 0 ? -1 : 1) / Float(1 << 24)
            return v
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7f80_0000 | (mant << 13)) }
        return Float(bitPattern: sign | (UInt32(exp - 15 + 127) << 23) | (mant << 13))
    }
}
