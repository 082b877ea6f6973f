/// Per-run state handed to kernels.
final class ExecContext {
    let threads: Int
    let scratch = KernelScratch()
    init(threads: Int) { self.threads = threads }
}

/// A compiled op: reads its inputs (nil for absent optional inputs and for integer constants the
/// builder already captured) and writes its preallocated outputs.
typealias Kernel = (_ ins: [UnsafePointer<Float>?], _ outs: [UnsafeMutablePointer<Float>], _ ctx: ExecContext) -> Void

/// What the planner knows about a value: a constant, or a float tensor computed at run time.
enum SymValue {
    case constant(HostTensor)
    case runtime(shape: [Int])

    var shape: [Int] {
        switch self {
        case .constant(let t): return t.shape
        case .runtime(let s): return s
        }
    }
    var constant: HostTensor? { if case .constant(let t) = self { return t } else { return nil } }
}

/// A kernel that can also write clip(output 0) block by block while it is in cache (see `FusedClip`).
typealias ClipEpilogueKernel = (_ ins: [UnsafePointer<Float>?], _ outs: [UnsafeMutablePointer<Float>],
                                _ clip: FusedClip?, _ ctx: ExecContext) -> Void

/// A kernel that can also write output 0 + addend (a residual Add after it) block by block while
/// the block is in registers (see `FusedResidual`).
typealias ResidualEpilogueKernel = (_ ins: [UnsafePointer<Float>?], _ outs: [UnsafeMutablePointer<Float>],
                                    _ residual: FusedResidual, _ ctx: ExecContext) -> Void

/// What the planner may fuse a step with.
enum StepFusion {
    /// The step's kernel can clip its output 0 in its epilogue (Conv), and, where `residual` is
    /// given, add a same-shaped tensor to it instead (a following Add; only where that pays).
    case epilogue(clip: ClipEpilogueKernel, residual: ResidualEpilogueKernel?)
    /// The step clips its input 0 elementwise into output 0 (Clip, Relu).
    case clip(min: Float, max: Float)
}

/// Result of building one node for known input shapes.
enum OpResult {
    /// Every output is known at plan time (constant folding).
    case constants([HostTensor])
    /// Float outputs computed at run time by `kernel`; `fusion` says what the planner may fuse.
    case runtime(shapes: [[Int]], kernel: Kernel, fusion: StepFusion? = nil)
}

typealias OpBuilder = @Sendable (OpContext) throws -> OpResult

/// A node seen by an op builder: attributes, opset and what is known about the inputs.
struct OpContext {
    let node: GraphNode
    let opset: Int
    let inputs: [SymValue?]

    var name: String { node.name }
    var op: String { node.opType }

    func invalid(_ detail: String) -> EngineError { .invalidNode(node: node.name, op: node.opType, detail: detail) }
    func unsupported(_ detail: String) -> EngineError { .unsupportedAttribute(node: node.name, op: node.opType, detail: detail) }

    func has(_ i: Int) -> Bool { i < inputs.count && inputs[i] != nil }
    func input(_ i: Int) throws -> SymValue {
        guard i < inputs.count, let v = inputs[i] else { throw invalid("input #\(i) is required but missing") }
        return v
    }
    func shape(_ i: Int) throws -> [Int] { try input(i).shape }
    /// A constant input; throws naming the input when it is computed at run time.
    func constant(_ i: Int, _ what: String) throws -> HostTensor {
        guard case .constant(let t) = try input(i) else {
            throw unsupported("\(what) (input #\(i) '\(node.inputs[i])') computed at run time; it must be a constant or foldable")
        }
        return t
    }
    func optionalConstant(_ i: Int, _ what: String) throws -> HostTensor? {
        guard has(i) else { return nil }
        return try constant(i, what)
    }
    var allInputsConstant: Bool { inputs.allSatisfy { $0 == nil || $0?.constant != nil } }

    // MARK: attributes
    func attr(_ n: String) -> Onnx_AttributeProto? { node.attributes[n] }
    func int(_ n: String, _ def: Int) -> Int { attr(n).map { Int($0.i) } ?? def }
    func float(_ n: String, _ def: Float) -> Float { attr(n).map { $0.f } ?? def }
    func ints(_ n: String) -> [Int]? { attr(n).map { $0.ints.map { Int($0) } } }
    func floats(_ n: String) -> [Float]? { attr(n).map { $0.floats } }
    func string(_ n: String, _ def: String) -> String {
        guard let a = attr(n) else { return def }
        return String(decoding: a.s, as: UTF8.self)
    }
    func tensorAttr(_ n: String) throws -> HostTensor? {
        guard let a = attr(n), a.hasT else { return nil }
        do { return try ModelLoader.decodeTensor(a.t, baseDirectory: nil) } catch { throw invalid("attribute \(n): \(error)") }
    }

    /// Throws when `s` is not a usable tensor shape.
    func checkShape(_ s: [Int], _ what: String) throws {
        if let p = shapeProblem(s) { throw invalid("\(what): \(p)") }
    }

    /// Normalises a possibly negative axis against `rank`.
    func axis(_ a: Int, rank: Int) throws -> Int {
        let r = a < 0 ? a + rank : a
        guard r >= 0, r < max(rank, 1) else { throw invalid("axis \(a) out of range for rank \(rank)") }
        return r
    }
}

/// Product of the dims, saturating at Int.max instead of trapping (shapes come from untrusted files).
@inline(__always) func elementCount(_ s: [Int]) -> Int {
    var n = 1
    for d in s {
        let (r, o) = n.multipliedReportingOverflow(by: d)
        if o { return Int.max }
        n = r
    }
    return n
}

/// Largest tensor the engine accepts (elements); bigger shapes are model errors, not allocations.
let maxTensorElements = 1 << 31

/// nil when the shape is valid (non-negative dims, at most `maxTensorElements` elements).
func shapeProblem(_ s: [Int]) -> String? {
    if let d = s.first(where: { $0 < 0 }) { return "negative dimension \(d) in shape \(s)" }
    if elementCount(s) > maxTensorElements { return "shape \(s) has more than \(maxTensorElements) elements" }
    return nil
}

func stridesOf(_ shape: [Int]) -> [Int] {
    var st = [Int](repeating: 1, count: shape.count)
    var acc = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) { st[i] = acc; acc *= shape[i] }
    return st
}

/// numpy broadcasting of two shapes.
func broadcastShapes(_ a: [Int], _ b: [Int]) -> [Int]? {
    let r = max(a.count, b.count)
    var out = [Int](repeating: 1, count: r)
    for i in 0..<r {
        let da = i < r - a.count ? 1 : a[i - (r - a.count)]
        let db = i < r - b.count ? 1 : b[i - (r - b.count)]
        if da == db || db == 1 { out[i] = da } else if da == 1 { out[i] = db } else { return nil }
    }
    return out
}

/// Makes a host array of `n` elements filled by `fill`.
func makeArray<T>(_ n: Int, _ fill: (UnsafeMutablePointer<T>) -> Void) -> [T] {
    [T](unsafeUninitializedCapacity: max(n, 1)) { buf, count in
        if n > 0 { fill(buf.baseAddress!) }
        count = n
    }
}

/// Applies a type-generic single-input data movement to a constant.
func mapHost(_ t: HostTensor, outShape: [Int], _ f: (UnsafeRawPointer, UnsafeMutableRawPointer, Int) -> Void) -> HostTensor {
    // f gets (src, dst, elementSize); callers dispatch on elementSize via `withElement`.
    let n = elementCount(outShape)
    switch t.data {
    case .float(let a):
        let o: [Float] = a.withUnsafeBytes { s in makeArray(n) { d in f(s.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, UnsafeMutableRawPointer(d), 4) } }
        return HostTensor(shape: outShape, floats: o)
    case .int(let a):
        let o: [Int] = a.withUnsafeBytes { s in makeArray(n) { d in f(s.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, UnsafeMutableRawPointer(d), 8) } }
        return HostTensor(shape: outShape, ints: o)
    }
}
