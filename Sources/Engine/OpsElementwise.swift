import Foundation

/// Binary elementwise loop over two broadcast operands. Dimensions are coalesced so the inner
/// loop runs over the longest contiguous stretch with constant operand strides (0 or 1).
struct BroadcastLoop {
    let outCount: Int
    let dims: [Int]       // coalesced output dims (outermost first)
    let aStrides: [Int]
    let bStrides: [Int]

    init(_ a: [Int], _ b: [Int], _ out: [Int]) {
        let r = out.count
        func padded(_ s: [Int]) -> [Int] { [Int](repeating: 1, count: r - s.count) + s }
        let pa = padded(a), pb = padded(b)
        let sa = stridesOf(pa), sb = stridesOf(pb)
        var dims: [Int] = [], asn: [Int] = [], bsn: [Int] = []
        for i in 0..<r where out[i] != 1 {
            let x = pa[i] == 1 ? 0 : sa[i]
            let y = pb[i] == 1 ? 0 : sb[i]
            if let last = dims.last, asn.last! == x * out[i], bsn.last! == y * out[i] {
                // previous dim strides are exactly this dim's stride × extent: merge.
                dims[dims.count - 1] = last * out[i]
                asn[asn.count - 1] = x
                bsn[bsn.count - 1] = y
            } else {
                dims.append(out[i]); asn.append(x); bsn.append(y)
            }
        }
        if dims.isEmpty { dims = [1]; asn = [0]; bsn = [0] }
        self.outCount = elementCount(out)
        self.dims = dims
        self.aStrides = asn
        self.bStrides = bsn
    }

    /// Below this many outputs the loops stay on the calling thread. A binary op is one load pair
    /// and a store per value: a second thread only pays off for large tensors. Measured on the
    /// residual Add [1, 24, 56, 56] (75 Ki values) of EfficientNet-Lite0 at 2 threads: 0.10 ms
    /// split, 0.05 ms on one thread (the halves written by the producer on the other core).
    static let parallelThreshold = 262_144
    /// The same for `elementwise` loops: unary ops (Sigmoid, Exp, HardSwish...) cost several times a
    /// binary op per value.
    static let unaryParallelThreshold = 65536

    @inline(__always)
    func run<T>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ o: UnsafeMutablePointer<T>, threads: Int = 1,
                _ f: (T, T) -> T) {
        if outCount == 0 { return }
        let r = dims.count
        let inner = dims[r - 1], ia = aStrides[r - 1], ib = bStrides[r - 1]
        let rows = outCount / inner
        let t = outCount >= BroadcastLoop.parallelThreshold ? threads : 1
        if rows == 1 {
            // One long row: split it (each element is computed the same way whatever the split).
            parallelChunks(inner, threads: t) { range in
                let lo = range.lowerBound
                BroadcastLoop.row(a + ia * lo, b + ib * lo, o + lo, range.count, ia, ib, f)
            }
            return
        }
        parallelChunks(rows, threads: t) { range in
            var idx = [Int](repeating: 0, count: r)
            var rem = range.lowerBound
            var offA = 0, offB = 0
            for d in stride(from: r - 2, through: 0, by: -1) {
                idx[d] = rem % dims[d]; rem /= dims[d]
                offA += idx[d] * aStrides[d]; offB += idx[d] * bStrides[d]
            }
            for row in range {
                BroadcastLoop.row(a + offA, b + offB, o + row * inner, inner, ia, ib, f)
                var d = r - 2
                while d >= 0 {
                    idx[d] += 1
                    offA += aStrides[d]
                    offB += bStrides[d]
                    if idx[d] < dims[d] { break }
                    offA -= aStrides[d] * dims[d]
                    offB -= bStrides[d] * dims[d]
                    idx[d] = 0
                    d -= 1
                }
            }
        }
    }

    @inline(__always)
    static func row<T>(_ pa: UnsafePointer<T>, _ pb: UnsafePointer<T>, _ po: UnsafeMutablePointer<T>, _ n: Int,
                       _ ia: Int, _ ib: Int, _ f: (T, T) -> T) {
        if ia == 1 && ib == 1 {
            for i in 0..<n { po[i] = f(pa[i], pb[i]) }
        } else if ia == 1 {
            let y = pb[0]
            for i in 0..<n { po[i] = f(pa[i], y) }
        } else if ib == 1 {
            let x = pa[0]
            for i in 0..<n { po[i] = f(x, pb[i]) }
        } else {
            let v = f(pa[0], pb[0])
            for i in 0..<n { po[i] = v }
        }
    }
}

/// Runs `body` over `0..<n` split across threads when `n` is large enough.
@inline(__always)
func elementwise(_ n: Int, threads: Int, _ body: (Range<Int>) -> Void) {
    parallelChunks(n, threads: n >= BroadcastLoop.unaryParallelThreshold ? threads : 1, body)
}

enum BinaryKind: String {
    case add = "Add", sub = "Sub", mul = "Mul", div = "Div", pow = "Pow", prelu = "PRelu"
    case max = "Max", min = "Min"
}

/// Float kernel for a binary op with a precomputed broadcast loop.
func binaryKernel(_ kind: BinaryKind, _ loop: BroadcastLoop) -> Kernel {
    return { ins, outs, ctx in
        let a = ins[0]!, b = ins[1]!, o = outs[0], t = ctx.threads
        switch kind {
        case .add: loop.run(a, b, o, threads: t) { $0 + $1 }
        case .sub: loop.run(a, b, o, threads: t) { $0 - $1 }
        case .mul: loop.run(a, b, o, threads: t) { $0 * $1 }
        case .div: loop.run(a, b, o, threads: t) { $0 / $1 }
        case .pow: loop.run(a, b, o, threads: t) { powf($0, $1) }
        case .prelu: loop.run(a, b, o, threads: t) { $0 < 0 ? $0 * $1 : $0 }
        case .max: loop.run(a, b, o, threads: t) { Swift.max($0, $1) }
        case .min: loop.run(a, b, o, threads: t) { Swift.min($0, $1) }
        }
    }
}

func intBinary(_ kind: BinaryKind, _ x: Int, _ y: Int) -> Int {
    switch kind {
    case .add: return x &+ y
    case .sub: return x &- y
    case .mul: return x &* y
    case .div:
        // ONNX integer Div truncates toward zero (C semantics).
        return y == 0 ? 0 : x / y
    case .pow:
        var r = 1
        if y > 0 { for _ in 0..<y { r &*= x } }
        return r
    case .prelu: return x < 0 ? x * y : x
    case .max: return Swift.max(x, y)
    case .min: return Swift.min(x, y)
    }
}

func binaryBuilder(_ kind: BinaryKind) -> OpBuilder {
    return { ctx in
        let sa = try ctx.shape(0), sb = try ctx.shape(1)
        var out: [Int]
        if kind == .prelu {
            // slope broadcasts unidirectionally to X
            guard let o = broadcastShapes(sa, sb), o == sa else {
                throw ctx.invalid("slope shape \(sb) does not broadcast to input shape \(sa)")
            }
            out = o
        } else {
            guard let o = broadcastShapes(sa, sb) else { throw ctx.invalid("shapes \(sa) and \(sb) do not broadcast") }
            out = o
        }
        let loop = BroadcastLoop(sa, sb, out)
        if let a = ctx.inputs[0]?.constant, let b = ctx.inputs[1]?.constant, !(a.isFloat && b.isFloat) {
            if !a.isFloat && !b.isFloat {
                let x = a.intValues, y = b.intValues
                let r: [Int] = x.withUnsafeBufferPointer { pa in y.withUnsafeBufferPointer { pb in
                    makeArray(elementCount(out)) { po in loop.run(pa.baseAddress!, pb.baseAddress!, po) { intBinary(kind, $0, $1) } }
                } }
                return .constants([HostTensor(shape: out, ints: r)])
            }
            // mixed types (rare, e.g. Cast-less shape arithmetic): compute in float
            let x = a.floatValues, y = b.floatValues
            let r: [Float] = x.withUnsafeBufferPointer { pa in y.withUnsafeBufferPointer { pb in
                makeArray(elementCount(out)) { po in binaryKernel(kind, loop)([pa.baseAddress!, pb.baseAddress!], [po], ExecContext(threads: 1)) }
            } }
            return .constants([HostTensor(shape: out, floats: r)])
        }
        if ctx.inputs.contains(where: { $0?.constant.map { !$0.isFloat } ?? false }) {
            throw ctx.unsupported("integer operand mixed with a run-time float tensor")
        }
        return .runtime(shapes: [out], kernel: binaryKernel(kind, loop))
    }
}

/// Variadic Max/Min/Sum/Mean reduced pairwise (inputs of equal shape or broadcastable).
func variadicBuilder(_ kind: BinaryKind, mean: Bool = false) -> OpBuilder {
    return { ctx in
        var shapes: [[Int]] = []
        for i in 0..<ctx.inputs.count { shapes.append(try ctx.shape(i)) }
        var out = shapes[0]
        for s in shapes.dropFirst() {
            guard let o = broadcastShapes(out, s) else { throw ctx.invalid("input shapes \(shapes) do not broadcast") }
            out = o
        }
        let n = elementCount(out)
        let loops = shapes.map { BroadcastLoop(out, $0, out) }
        let first = BroadcastLoop(shapes[0], shapes[0], out)
        let count = Float(shapes.count)
        return .runtime(shapes: [out]) { ins, outs, ctx in
            let o = outs[0]
            first.run(ins[0]!, ins[0]!, o, threads: ctx.threads) { x, _ in x }
            for i in 1..<ins.count {
                // in place: each output element reads only its own accumulator
                binaryKernel(kind, loops[i])([UnsafePointer(o), ins[i]!], [o], ctx)
            }
            if mean { elementwise(n, threads: ctx.threads) { r in for i in r { o[i] /= count } } }
        }
    }
}

/// Unary float op applied elementwise.
func unaryBuilder(_ f: @escaping @Sendable (Float) -> Float) -> OpBuilder {
    return { ctx in
        let s = try ctx.shape(0)
        if let c = ctx.inputs[0]?.constant, !c.isFloat {
            return .constants([HostTensor(shape: s, floats: c.floatValues.map(f))])
        }
        let n = elementCount(s)
        return .runtime(shapes: [s]) { ins, outs, ctx in
            let x = ins[0]!, y = outs[0]
            elementwise(n, threads: ctx.threads) { r in for i in r { y[i] = f(x[i]) } }
        }
    }
}

@inline(__always) func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

enum ElementwiseOps {
    static func register(_ r: inout [String: OpBuilder]) {
        for k in [BinaryKind.add, .sub, .mul, .div, .pow, .prelu] { r[k.rawValue] = binaryBuilder(k) }
        r["Max"] = variadicBuilder(.max)
        r["Min"] = variadicBuilder(.min)
        r["Sum"] = variadicBuilder(.add)
        r["Mean"] = variadicBuilder(.add, mean: true)
        r["Relu"] = { ctx in
            let s = try ctx.shape(0), n = elementCount(s)
            return .runtime(shapes: [s], kernel: { ins, outs, ctx in
                Kernels.clip(input: ins[0]!, output: outs[0], count: n, min: 0, max: .infinity, threads: ctx.threads)
            }, fusion: .clip(min: 0, max: .infinity))
        }
        r["Sigmoid"] = unaryBuilder(sigmoid)
        r["Tanh"] = unaryBuilder { tanhf($0) }
        r["Sqrt"] = unaryBuilder { $0.squareRoot() }
        r["Exp"] = unaryBuilder { expf($0) }
        r["Log"] = unaryBuilder { logf($0) }
        r["Neg"] = unaryBuilder { -$0 }
        r["Abs"] = unaryBuilder { abs($0) }
        r["Reciprocal"] = unaryBuilder { 1 / $0 }
        r["Floor"] = unaryBuilder { $0.rounded(.down) }
        r["Ceil"] = unaryBuilder { $0.rounded(.up) }
        r["Erf"] = unaryBuilder { erff($0) }
        r["Softplus"] = unaryBuilder { x in x > 0 ? x + log1pf(expf(-x)) : log1pf(expf(x)) }
        r["LeakyRelu"] = { ctx in
            let alpha = ctx.float("alpha", 0.01)
            return try unaryBuilder { $0 < 0 ? $0 * alpha : $0 }(ctx)
        }
        r["Elu"] = { ctx in
            let alpha = ctx.float("alpha", 1)
            return try unaryBuilder { $0 < 0 ? alpha * (expf($0) - 1) : $0 }(ctx)
        }
        r["HardSigmoid"] = { ctx in
            let alpha = ctx.float("alpha", 0.2), beta = ctx.float("beta", 0.5)
            return try unaryBuilder { max(0, min(1, alpha * $0 + beta)) }(ctx)
        }
        r["HardSwish"] = unaryBuilder { x in x * max(0, min(1, x / 6 + 0.5)) }
        r["Clip"] = { ctx in
            var lo = -Float.greatestFiniteMagnitude, hi = Float.greatestFiniteMagnitude
            if ctx.opset < 11 {
                lo = ctx.float("min", lo); hi = ctx.float("max", hi)
            } else {
                if let t = try ctx.optionalConstant(1, "Clip min") { lo = t.floatValues.first ?? lo }
                if let t = try ctx.optionalConstant(2, "Clip max") { hi = t.floatValues.first ?? hi }
            }
            let s = try ctx.shape(0), n = elementCount(s)
            if let c = ctx.inputs[0]?.constant, !c.isFloat {
                return .constants([HostTensor(shape: s, ints: c.intValues.map { min(max($0, Int(lo.rounded(.up))), Int(hi)) })])
            }
            return .runtime(shapes: [s], kernel: { ins, outs, ctx in
                // NaN propagates (both comparisons are false for NaN), as in ORT.
                Kernels.clip(input: ins[0]!, output: outs[0], count: n, min: lo, max: hi, threads: ctx.threads)
            }, fusion: .clip(min: lo, max: hi))
        }
        r["Softmax"] = softmaxBuilder(log: false)
        r["LogSoftmax"] = softmaxBuilder(log: true)
    }

    static func softmaxBuilder(log: Bool) -> OpBuilder {
        return { ctx in
            let s = try ctx.shape(0)
            let rank = s.count
            let defAxis = ctx.opset < 13 ? 1 : -1
            let axis = try ctx.axis(ctx.int("axis", defAxis), rank: rank)
            // opset < 13: coerce to 2-D [prod(s[..<axis]), prod(s[axis...])]; >= 13: single axis.
            let outer: Int, len: Int, inner: Int
            if ctx.opset < 13 {
                outer = elementCount(Array(s[..<axis])); len = elementCount(Array(s[axis...])); inner = 1
            } else {
                outer = elementCount(Array(s[..<axis])); len = s[axis]; inner = elementCount(Array(s[(axis + 1)...]))
            }
            return .runtime(shapes: [s]) { ins, outs, _ in
                let x = ins[0]!, y = outs[0]
                for o in 0..<outer {
                    for i in 0..<inner {
                        let base = o * len * inner + i
                        var m = -Float.infinity
                        for k in 0..<len { m = max(m, x[base + k * inner]) }
                        var sum: Float = 0
                        for k in 0..<len { let e = expf(x[base + k * inner] - m); y[base + k * inner] = e; sum += e }
                        if log {
                            let ls = logf(sum)
                            for k in 0..<len { y[base + k * inner] = x[base + k * inner] - m - ls }
                        } else {
                            let inv = 1 / sum
                            for k in 0..<len { y[base + k * inner] *= inv }
                        }
                    }
                }
            }
        }
    }
}
