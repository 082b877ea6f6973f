import Foundation

/// A data-movement op written once for any element type (floats at run time, integers when
/// folding shape sub-graphs).
protocol Mover {
    func move<T>(_ srcs: [UnsafePointer<T>], _ dst: UnsafeMutablePointer<T>)
}

/// Runs a mover on constant inputs (all of one element kind) or compiles it into a float kernel.
func moverResult<M: Mover>(_ ctx: OpContext, _ m: M, inputs: [Int], outShape: [Int]) throws -> OpResult {
    let n = elementCount(outShape)
    let consts = inputs.map { ctx.inputs[$0]?.constant }
    if consts.allSatisfy({ $0 != nil }) {
        let cs = consts.map { $0! }
        if cs.allSatisfy({ !$0.isFloat }) {
            let arrays = cs.map(\.intValues)
            let out: [Int] = withPointers(arrays) { ptrs in makeArray(n) { m.move(ptrs, $0) } }
            return .constants([HostTensor(shape: outShape, ints: out)])
        }
        let arrays = cs.map(\.floatValues)
        let out: [Float] = withPointers(arrays) { ptrs in makeArray(n) { m.move(ptrs, $0) } }
        return .constants([HostTensor(shape: outShape, floats: out)])
    }
    if consts.contains(where: { $0.map { !$0.isFloat } ?? false }) {
        throw ctx.unsupported("integer constant mixed with run-time float data")
    }
    return .runtime(shapes: [outShape]) { ins, outs, _ in
        m.move(inputs.map { ins[$0]! }, outs[0])
    }
}

/// Pins several arrays and passes their base pointers.
func withPointers<T, R>(_ arrays: [[T]], _ body: ([UnsafePointer<T>]) -> R) -> R {
    var ptrs: [UnsafePointer<T>] = []
    var keep: [UnsafeMutablePointer<T>] = []
    for a in arrays {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(a.count, 1))
        a.withUnsafeBufferPointer { if !$0.isEmpty { p.initialize(from: $0.baseAddress!, count: $0.count) } }
        keep.append(p)
        ptrs.append(UnsafePointer(p))
    }
    defer { for (p, a) in zip(keep, arrays) { p.deinitialize(count: a.count); p.deallocate() } }
    return body(ptrs)
}

/// Strided copy: dst[i] = src[base + sum(i_d * step_d)], covering Slice, Transpose, Split, Expand.
struct StridedMover: Mover {
    let outShape: [Int]
    let srcStrides: [Int]   // element stride in src per output dim (may be negative or 0)
    let base: Int
    func move<T>(_ srcs: [UnsafePointer<T>], _ dst: UnsafeMutablePointer<T>) {
        let n = elementCount(outShape)
        if n == 0 { return }
        let r = outShape.count
        if r == 0 { dst[0] = srcs[0][base]; return }
        let src = srcs[0]
        let inner = outShape[r - 1], step = srcStrides[r - 1]
        var idx = [Int](repeating: 0, count: r)
        var off = base, o = 0
        while o < n {
            if step == 1 {
                (dst + o).update(from: src + off, count: inner)
            } else {
                var s = off
                for i in 0..<inner { dst[o + i] = src[s]; s += step }
            }
            o += inner
            var d = r - 2
            while d >= 0 {
                idx[d] += 1
                off += srcStrides[d]
                if idx[d] < outShape[d] { break }
                off -= srcStrides[d] * outShape[d]
                idx[d] = 0
                d -= 1
            }
            if d < 0 { break }
        }
    }
}

/// Concatenation along an axis: copies contiguous blocks from each input in turn.
struct ConcatMover: Mover {
    let outer: Int
    let blocks: [Int]   // per input: elements per outer index (axis extent × inner)
    func move<T>(_ srcs: [UnsafePointer<T>], _ dst: UnsafeMutablePointer<T>) {
        var o = 0
        for i in 0..<outer {
            for (k, b) in blocks.enumerated() where b > 0 {
                (dst + o).update(from: srcs[k] + i * b, count: b)
                o += b
            }
        }
    }
}

/// Gather along an axis with constant indices.
struct GatherMover: Mover {
    let outer: Int, axisLen: Int, inner: Int
    let indices: [Int]
    func move<T>(_ srcs: [UnsafePointer<T>], _ dst: UnsafeMutablePointer<T>) {
        var o = 0
        for i in 0..<outer {
            for ix in indices {
                (dst + o).update(from: srcs[0] + (i * axisLen + ix) * inner, count: inner)
                o += inner
            }
        }
    }
}

/// Pad with constant / edge / reflect modes.
struct PadMover: Mover {
    let inShape: [Int], outShape: [Int], begin: [Int]
    let mode: String
    let constant: Double
    func move<T>(_ srcs: [UnsafePointer<T>], _ dst: UnsafeMutablePointer<T>) {
        let n = elementCount(outShape)
        let r = outShape.count
        let st = stridesOf(inShape)
        let fill: T = (T.self == Float.self ? Float(constant) as! T : Int(constant) as! T)
        var idx = [Int](repeating: 0, count: r)
        for o in 0..<n {
            var off = 0
            var inside = true
            for d in 0..<r {
                var s = idx[d] - begin[d]
                let len = inShape[d]
                if s < 0 || s >= len {
                    switch mode {
                    case "edge": s = s < 0 ? 0 : len - 1
                    case "reflect":
                        if len == 1 { s = 0 } else {
                            let period = 2 * (len - 1)
                            var m = s % period; if m < 0 { m += period }
                            s = m < len ? m : period - m
                        }
                    case "wrap":
                        s %= len; if s < 0 { s += len }
                    default: inside = false
                    }
                }
                off += s * st[d]
            }
            dst[o] = inside ? srcs[0][off] : fill
            // advance
            var d = r - 1
            while d >= 0 { idx[d] += 1; if idx[d] < outShape[d] { break }; idx[d] = 0; d -= 1 }
        }
    }
}

enum ShapeOps {
    static func register(_ r: inout [String: OpBuilder]) {
        r["Identity"] = { ctx in try reshaped(ctx, to: try ctx.shape(0)) }
        // Inference-mode Dropout is the identity; its optional mask output is not produced (a
        // node reading it fails at load naming the missing tensor).
        r["Dropout"] = { ctx in try reshaped(ctx, to: try ctx.shape(0)) }
        r["Cast"] = cast
        r["Constant"] = constant
        r["ConstantOfShape"] = constantOfShape
        r["Shape"] = shapeOp
        r["Size"] = { ctx in .constants([HostTensor(shape: [], ints: [elementCount(try ctx.shape(0))])]) }
        r["Reshape"] = reshape
        r["Flatten"] = { ctx in
            let s = try ctx.shape(0)
            let a = try ctx.axis(ctx.int("axis", 1), rank: s.count + 1)
            return try reshaped(ctx, to: [elementCount(Array(s[..<a])), elementCount(Array(s[a...]))])
        }
        r["Squeeze"] = squeeze
        r["Unsqueeze"] = unsqueeze
        r["Transpose"] = transpose
        r["Concat"] = concat
        r["Split"] = split
        r["Slice"] = slice
        r["Gather"] = gather
        r["Pad"] = pad
        r["Expand"] = expand
        r["Range"] = range
        r["Equal"] = { try compare($0) { $0 == $1 } }
        r["Less"] = { try compare($0) { $0 < $1 } }
        r["Greater"] = { try compare($0) { $0 > $1 } }
        r["Where"] = whereOp
        r["Resize"] = ResizeOp.resize
        r["Upsample"] = ResizeOp.upsample
    }

    /// Same data, new shape: folds when constant, otherwise a copy.
    static func reshaped(_ ctx: OpContext, to shape: [Int]) throws -> OpResult {
        let x = try ctx.input(0)
        try ctx.checkShape(shape, "output")
        guard elementCount(shape) == elementCount(x.shape) else {
            throw ctx.invalid("cannot reshape \(x.shape) to \(shape)")
        }
        if case .constant(let t) = x { return .constants([HostTensor(shape: shape, data: t.data)]) }
        let n = elementCount(shape)
        return .runtime(shapes: [shape]) { ins, outs, _ in
            // In place (aliased buffers) the data is already there.
            if n > 0, UnsafePointer(outs[0]) != ins[0]! { outs[0].update(from: ins[0]!, count: n) }
        }
    }

    static func cast(_ ctx: OpContext) throws -> OpResult {
        let to = ctx.int("to", 1)
        let x = try ctx.input(0)
        let floatTypes: Set<Int> = [1, 10, 11, 16]
        let intTypes: Set<Int> = [2, 3, 4, 5, 6, 7, 9, 12, 13]
        if case .constant(let t) = x {
            if floatTypes.contains(to) { return .constants([HostTensor(shape: t.shape, floats: t.floatValues)]) }
            if to == 9 { return .constants([HostTensor(shape: t.shape, ints: t.floatValues.map { $0 != 0 ? 1 : 0 })]) }
            if intTypes.contains(to) { return .constants([HostTensor(shape: t.shape, ints: t.intValues)]) }
            throw ctx.unsupported("Cast to type \(to)")
        }
        guard to == 1 || to == 11 else { throw ctx.unsupported("Cast of a run-time float tensor to type \(to) (float paths only)") }
        return try reshaped(ctx, to: x.shape)
    }

    static func constant(_ ctx: OpContext) throws -> OpResult {
        if let t = try ctx.tensorAttr("value") { return .constants([t]) }
        if let a = ctx.attr("value_float") { return .constants([HostTensor(shape: [], floats: [a.f])]) }
        if let a = ctx.attr("value_floats") { return .constants([HostTensor(shape: [a.floats.count], floats: a.floats)]) }
        if let a = ctx.attr("value_int") { return .constants([HostTensor(shape: [], ints: [Int(a.i)])]) }
        if let a = ctx.attr("value_ints") { return .constants([HostTensor(shape: [a.ints.count], ints: a.ints.map { Int($0) })]) }
        throw ctx.unsupported("Constant without a value/value_float(s)/value_int(s) attribute (sparse or string constants)")
    }

    static func constantOfShape(_ ctx: OpContext) throws -> OpResult {
        let shape = try ctx.constant(0, "shape").intValues
        try ctx.checkShape(shape, "shape")
        let n = elementCount(shape)
        if let v = try ctx.tensorAttr("value") {
            switch v.data {
            case .float(let f): return .constants([HostTensor(shape: shape, floats: [Float](repeating: f.first ?? 0, count: n))])
            case .int(let i): return .constants([HostTensor(shape: shape, ints: [Int](repeating: i.first ?? 0, count: n))])
            }
        }
        return .constants([HostTensor(shape: shape, floats: [Float](repeating: 0, count: n))])
    }

    static func shapeOp(_ ctx: OpContext) throws -> OpResult {
        let s = try ctx.shape(0)
        var start = ctx.int("start", 0), end = ctx.int("end", s.count)
        if start < 0 { start += s.count }
        if end < 0 { end += s.count }
        start = min(max(start, 0), s.count); end = min(max(end, start), s.count)
        return .constants([HostTensor(shape: [end - start], ints: Array(s[start..<end]))])
    }

    static func reshape(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        let spec: [Int]
        if ctx.opset < 5 { spec = ctx.ints("shape") ?? [] } else { spec = try ctx.constant(1, "target shape").intValues }
        let allowZero = ctx.int("allowzero", 0) != 0
        var out: [Int] = []
        var infer = -1
        for (i, d) in spec.enumerated() {
            if d == 0 && !allowZero {
                guard i < x.count else { throw ctx.invalid("shape \(spec) copies dim \(i) of rank-\(x.count) input") }
                out.append(x[i])
            } else if d == -1 {
                guard infer < 0 else { throw ctx.invalid("shape \(spec) has more than one -1") }
                infer = i; out.append(1)
            } else if d < 0 {
                throw ctx.invalid("invalid dimension \(d) in shape \(spec)")
            } else {
                out.append(d)
            }
        }
        if infer >= 0 {
            let known = elementCount(out)
            guard known > 0, elementCount(x) % known == 0 else { throw ctx.invalid("cannot reshape \(x) to \(spec)") }
            out[infer] = elementCount(x) / known
        }
        return try reshaped(ctx, to: out)
    }

    static func axesInput(_ ctx: OpContext, attrBefore: Int) throws -> [Int]? {
        if ctx.opset < attrBefore { return ctx.ints("axes") }
        return try ctx.optionalConstant(1, "axes")?.intValues
    }

    static func squeeze(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        let axes = try axesInput(ctx, attrBefore: 13)
        var out: [Int] = []
        if let axes {
            let ax = Set(try axes.map { try ctx.axis($0, rank: x.count) })
            for (i, d) in x.enumerated() {
                if ax.contains(i) {
                    guard d == 1 else { throw ctx.invalid("cannot squeeze axis \(i) of size \(d)") }
                } else { out.append(d) }
            }
        } else {
            out = x.filter { $0 != 1 }
        }
        return try reshaped(ctx, to: out)
    }

    static func unsqueeze(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        guard let axes = try axesInput(ctx, attrBefore: 13) else { throw ctx.invalid("axes missing") }
        let rank = x.count + axes.count
        let ax = Set(try axes.map { try ctx.axis($0, rank: rank) })
        guard ax.count == axes.count else { throw ctx.invalid("repeated axes \(axes)") }
        var out: [Int] = []
        var it = x.makeIterator()
        for i in 0..<rank { out.append(ax.contains(i) ? 1 : it.next()!) }
        return try reshaped(ctx, to: out)
    }

    static func transpose(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        let perm = ctx.ints("perm") ?? Array((0..<x.count).reversed())
        guard perm.count == x.count, Set(perm) == Set(0..<x.count) else { throw ctx.invalid("perm \(perm) is not a permutation of rank \(x.count)") }
        let st = stridesOf(x)
        let out = perm.map { x[$0] }
        return try moverResult(ctx, StridedMover(outShape: out, srcStrides: perm.map { st[$0] }, base: 0), inputs: [0], outShape: out)
    }

    static func concat(_ ctx: OpContext) throws -> OpResult {
        let shapes = try (0..<ctx.inputs.count).map { try ctx.shape($0) }
        let rank = shapes[0].count
        let axis = try ctx.axis(ctx.int("axis", 0), rank: rank)
        var out = shapes[0]
        out[axis] = 0
        for s in shapes {
            guard s.count == rank, (0..<rank).allSatisfy({ $0 == axis || s[$0] == shapes[0][$0] }) else {
                throw ctx.invalid("input shapes \(shapes) differ outside axis \(axis)")
            }
            out[axis] += s[axis]
        }
        let outer = elementCount(Array(out[..<axis]))
        let blocks = shapes.map { elementCount(Array($0[axis...])) }
        return try moverResult(ctx, ConcatMover(outer: outer, blocks: blocks), inputs: Array(0..<shapes.count), outShape: out)
    }

    static func split(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        let axis = try ctx.axis(ctx.int("axis", 0), rank: x.count)
        let nOut = ctx.node.outputs.count
        var sizes: [Int]
        if ctx.opset < 13, let s = ctx.ints("split") { sizes = s }
        else if ctx.opset >= 13, let t = try ctx.optionalConstant(1, "split") { sizes = t.intValues }
        else {
            let parts = ctx.opset >= 18 ? ctx.int("num_outputs", nOut) : nOut
            let chunk = (x[axis] + parts - 1) / parts
            sizes = (0..<parts).map { min(chunk, max(0, x[axis] - $0 * chunk)) }
        }
        guard sizes.reduce(0, +) == x[axis], sizes.count == nOut else {
            throw ctx.invalid("split sizes \(sizes) do not cover axis \(axis) of \(x) with \(nOut) outputs")
        }
        let st = stridesOf(x)
        var results: [OpResult] = []
        var start = 0
        var shapes: [[Int]] = []
        var movers: [StridedMover] = []
        for s in sizes {
            var o = x; o[axis] = s
            let m = StridedMover(outShape: o, srcStrides: st, base: start * st[axis])
            movers.append(m); shapes.append(o)
            results.append(try moverResult(ctx, m, inputs: [0], outShape: o))
            start += s
        }
        if case .constant = try ctx.input(0) {
            return .constants(results.map { if case .constants(let c) = $0 { return c[0] } else { fatalError("unreachable") } })
        }
        return .runtime(shapes: shapes) { ins, outs, _ in
            for (m, o) in zip(movers, outs) { m.move([ins[0]!], o) }
        }
    }

    /// Clamps Slice bounds per ONNX rules.
    static func sliceBounds(start: Int, end: Int, step: Int, dim: Int) -> (start: Int, count: Int) {
        var s = start < 0 ? start + dim : start
        var e = end < 0 ? end + dim : end
        if step > 0 {
            s = min(max(s, 0), dim); e = min(max(e, 0), dim)
            return (s, e > s ? (e - s + step - 1) / step : 0)
        } else {
            s = min(max(s, -1), dim - 1); e = min(max(e, -1), dim - 1)
            return (s, s > e ? (s - e + (-step) - 1) / (-step) : 0)
        }
    }

    static func slice(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        let starts: [Int], ends: [Int]
        var axes: [Int]?, steps: [Int]?
        if ctx.opset < 10 {
            guard let s = ctx.ints("starts"), let e = ctx.ints("ends") else { throw ctx.invalid("starts/ends attributes missing") }
            starts = s; ends = e; axes = ctx.ints("axes")
        } else {
            starts = try ctx.constant(1, "starts").intValues
            ends = try ctx.constant(2, "ends").intValues
            axes = try ctx.optionalConstant(3, "axes")?.intValues
            steps = try ctx.optionalConstant(4, "steps")?.intValues
        }
        let ax = try (axes ?? Array(0..<starts.count)).map { try ctx.axis($0, rank: x.count) }
        let sp = steps ?? [Int](repeating: 1, count: starts.count)
        guard ends.count == starts.count, ax.count == starts.count, sp.count == starts.count else {
            throw ctx.invalid("starts/ends/axes/steps lengths differ")
        }
        guard sp.allSatisfy({ $0 != 0 }) else { throw ctx.invalid("step 0") }
        let st = stridesOf(x)
        var out = x
        var srcStrides = st
        var base = 0
        for i in 0..<starts.count {
            let a = ax[i]
            let (s, c) = sliceBounds(start: starts[i], end: ends[i], step: sp[i], dim: x[a])
            out[a] = c
            srcStrides[a] = st[a] * sp[i]
            if c > 0 { base += s * st[a] }
        }
        return try moverResult(ctx, StridedMover(outShape: out, srcStrides: srcStrides, base: base), inputs: [0], outShape: out)
    }

    static func gather(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        let axis = try ctx.axis(ctx.int("axis", 0), rank: x.count)
        let idxT = try ctx.constant(1, "indices")
        let indices = try idxT.intValues.map { i -> Int in
            let j = i < 0 ? i + x[axis] : i
            guard j >= 0, j < x[axis] else { throw ctx.invalid("index \(i) out of range for axis \(axis) of size \(x[axis])") }
            return j
        }
        let out = Array(x[..<axis]) + idxT.shape + Array(x[(axis + 1)...])
        let m = GatherMover(outer: elementCount(Array(x[..<axis])), axisLen: x[axis],
                            inner: elementCount(Array(x[(axis + 1)...])), indices: indices)
        return try moverResult(ctx, m, inputs: [0], outShape: out)
    }

    static func pad(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        let mode = ctx.string("mode", "constant")
        guard ["constant", "reflect", "edge", "wrap"].contains(mode) else { throw ctx.unsupported("Pad mode '\(mode)'") }
        var pads: [Int]
        var value: Double = 0
        if ctx.opset < 11 {
            pads = ctx.ints("pads") ?? ctx.ints("paddings") ?? []
            value = Double(ctx.float("value", 0))
        } else {
            pads = try ctx.constant(1, "pads").intValues
            if let v = try ctx.optionalConstant(2, "constant_value") { value = Double(v.floatValues.first ?? 0) }
            if let a = try ctx.optionalConstant(3, "axes") {
                let ax = try a.intValues.map { try ctx.axis($0, rank: x.count) }
                var full = [Int](repeating: 0, count: 2 * x.count)
                for (i, d) in ax.enumerated() { full[d] = pads[i]; full[d + x.count] = pads[i + ax.count] }
                pads = full
            }
        }
        guard pads.count == 2 * x.count else { throw ctx.invalid("pads \(pads) do not match rank \(x.count)") }
        let r = x.count
        // Negative pads crop: pad with the non-negative parts, then slice.
        guard pads.allSatisfy({ $0 >= 0 }) else { throw ctx.unsupported("negative pads \(pads)") }
        let out = (0..<r).map { x[$0] + pads[$0] + pads[$0 + r] }
        try ctx.checkShape(out, "padded shape")
        if mode == "reflect" {
            for d in 0..<r where pads[d] >= x[d] || pads[d + r] >= x[d] {
                if pads[d] > 0 || pads[d + r] > 0 { throw ctx.invalid("reflect pad \(pads) too large for \(x)") }
            }
        }
        let m = PadMover(inShape: x, outShape: out, begin: Array(pads[..<r]), mode: mode, constant: value)
        return try moverResult(ctx, m, inputs: [0], outShape: out)
    }

    static func expand(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        let target = try ctx.constant(1, "shape").intValues
        guard let out = broadcastShapes(x, target) else { throw ctx.invalid("cannot expand \(x) to \(target)") }
        try ctx.checkShape(out, "expanded shape")
        let padded = [Int](repeating: 1, count: out.count - x.count) + x
        let st = stridesOf(padded)
        let strides = (0..<out.count).map { padded[$0] == 1 ? 0 : st[$0] }
        return try moverResult(ctx, StridedMover(outShape: out, srcStrides: strides, base: 0), inputs: [0], outShape: out)
    }

    static func range(_ ctx: OpContext) throws -> OpResult {
        let s = try ctx.constant(0, "start"), l = try ctx.constant(1, "limit"), d = try ctx.constant(2, "delta")
        if s.isFloat || l.isFloat || d.isFloat {
            let a = s.floatValues[0], b = l.floatValues[0], c = d.floatValues[0]
            guard c != 0 else { throw ctx.invalid("delta 0") }
            let q = ((b - a) / c).rounded(.up)
            guard q.isFinite, q < Float(maxTensorElements) else { throw ctx.invalid("Range of \(q) elements") }
            let n = max(0, Int(q))
            return .constants([HostTensor(shape: [n], floats: (0..<n).map { a + Float($0) * c })])
        }
        let a = s.intValues[0], b = l.intValues[0], c = d.intValues[0]
        guard c != 0 else { throw ctx.invalid("delta 0") }
        let span = (b.subtractingReportingOverflow(a), c)
        guard !span.0.overflow, abs(span.0.partialValue / c) < maxTensorElements else { throw ctx.invalid("Range too long") }
        let n = max(0, (span.0.partialValue + c + (c > 0 ? -1 : 1)) / c)
        return .constants([HostTensor(shape: [n], ints: (0..<n).map { a + $0 * c })])
    }

    static func compare(_ ctx: OpContext, _ f: (Double, Double) -> Bool) throws -> OpResult {
        let a = try ctx.constant(0, "left operand"), b = try ctx.constant(1, "right operand")
        guard let out = broadcastShapes(a.shape, b.shape) else { throw ctx.invalid("shapes \(a.shape) and \(b.shape) do not broadcast") }
        let loop = BroadcastLoop(a.shape, b.shape, out)
        let x = a.floatValues.map { Double($0) }, y = b.floatValues.map { Double($0) }
        let r: [Double] = x.withUnsafeBufferPointer { pa in y.withUnsafeBufferPointer { pb in
            makeArray(elementCount(out)) { po in loop.run(pa.baseAddress!, pb.baseAddress!, po) { f($0, $1) ? 1 : 0 } }
        } }
        return .constants([HostTensor(shape: out, ints: r.map { Int($0) })])
    }

    static func whereOp(_ ctx: OpContext) throws -> OpResult {
        let c = try ctx.constant(0, "condition"), a = try ctx.constant(1, "X"), b = try ctx.constant(2, "Y")
        guard let ab = broadcastShapes(a.shape, b.shape), let out = broadcastShapes(c.shape, ab) else {
            throw ctx.invalid("shapes do not broadcast")
        }
        let cc = broadcastHost(c, to: out).intValues
        let aa = broadcastHost(a, to: out), bb = broadcastHost(b, to: out)
        if a.isFloat || b.isFloat {
            let x = aa.floatValues, y = bb.floatValues
            return .constants([HostTensor(shape: out, floats: cc.indices.map { cc[$0] != 0 ? x[$0] : y[$0] })])
        }
        let x = aa.intValues, y = bb.intValues
        return .constants([HostTensor(shape: out, ints: cc.indices.map { cc[$0] != 0 ? x[$0] : y[$0] })])
    }

    /// Broadcasts a constant to `out` (numpy rules), keeping its element kind.
    static func broadcastHost(_ t: HostTensor, to out: [Int]) -> HostTensor {
        let padded = [Int](repeating: 1, count: out.count - t.shape.count) + t.shape
        let st = stridesOf(padded)
        let m = StridedMover(outShape: out, srcStrides: (0..<out.count).map { padded[$0] == 1 ? 0 : st[$0] }, base: 0)
        let n = elementCount(out)
        switch t.data {
        case .float(let v): return HostTensor(shape: out, floats: withPointers([v]) { p in makeArray(n) { m.move(p, $0) } })
        case .int(let v): return HostTensor(shape: out, ints: withPointers([v]) { p in makeArray(n) { m.move(p, $0) } })
        }
    }
}
