import Foundation

/// Resolved spatial padding and output size of one dimension.
struct SpatialDim {
    var input: Int, kernel: Int, stride: Int, dilation: Int
    var padBegin: Int, padEnd: Int, output: Int
}

enum NNOps {
    static func register(_ r: inout [String: OpBuilder]) {
        r["Conv"] = conv
        r["ConvTranspose"] = convTranspose
        r["Gemm"] = gemm
        r["MatMul"] = matmul
        r["MaxPool"] = { try pool($0, isMax: true) }
        r["AveragePool"] = { try pool($0, isMax: false) }
        r["GlobalAveragePool"] = { try globalPool($0, isMax: false) }
        r["GlobalMaxPool"] = { try globalPool($0, isMax: true) }
        r["BatchNormalization"] = batchNorm
        r["ReduceMean"] = { try reduce($0, kind: .mean) }
        r["ReduceSum"] = { try reduce($0, kind: .sum) }
        r["ReduceMax"] = { try reduce($0, kind: .max) }
        r["ReduceMin"] = { try reduce($0, kind: .min) }
        r["LRN"] = lrn
    }

    /// Local response normalisation across channels:
    /// y = x / (bias + alpha / size · Σ x²)^beta over channels [c - ⌊(size-1)/2⌋, c + ⌈(size-1)/2⌉].
    static func lrn(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        guard x.count >= 3 else { throw ctx.invalid("input rank \(x.count) < 3") }
        let size = ctx.int("size", 0)
        guard size > 0 else { throw ctx.invalid("size attribute missing or not positive") }
        let alpha = ctx.float("alpha", 1e-4), beta = ctx.float("beta", 0.75), bias = ctx.float("bias", 1)
        let n = x[0], c = x[1], inner = elementCount(Array(x[2...]))
        let lo = (size - 1) / 2, hi = size - 1 - lo
        return .runtime(shapes: [x]) { ins, outs, _ in
            let xp = ins[0]!, y = outs[0]
            for b in 0..<n {
                for ch in 0..<c {
                    let off = (b * c + ch) * inner
                    for i in 0..<inner {
                        var s: Float = 0
                        for k in max(0, ch - lo)...min(c - 1, ch + hi) {
                            let v = xp[(b * c + k) * inner + i]
                            s += v * v
                        }
                        y[off + i] = xp[off + i] / powf(bias + alpha / Float(size) * s, beta)
                    }
                }
            }
        }
    }

    /// Spatial geometry shared by Conv and the pools (ONNX auto_pad / pads / ceil_mode rules).
    static func spatial(_ ctx: OpContext, input: [Int], kernel: [Int], ceilMode: Bool = false) throws -> [SpatialDim] {
        let n = kernel.count
        let strides = ctx.ints("strides") ?? [Int](repeating: 1, count: n)
        let dilations = ctx.ints("dilations") ?? [Int](repeating: 1, count: n)
        var pads = ctx.ints("pads") ?? [Int](repeating: 0, count: 2 * n)
        guard strides.count == n, dilations.count == n, pads.count == 2 * n else {
            throw ctx.invalid("strides/dilations/pads lengths \(strides.count)/\(dilations.count)/\(pads.count) do not match \(n) spatial dims")
        }
        let limit = 1 << 20
        guard strides.allSatisfy({ $0 > 0 && $0 <= limit }), dilations.allSatisfy({ $0 > 0 && $0 <= limit }),
              pads.allSatisfy({ $0 >= 0 && $0 <= limit }), kernel.allSatisfy({ $0 > 0 && $0 <= limit }) else {
            throw ctx.invalid("kernel \(kernel), strides \(strides), dilations \(dilations) or pads \(pads) out of range")
        }
        let autoPad = ctx.string("auto_pad", "NOTSET")
        var dims: [SpatialDim] = []
        for i in 0..<n {
            let ext = (kernel[i] - 1) * dilations[i] + 1
            var out: Int
            switch autoPad {
            case "NOTSET", "":
                let span = input[i] + pads[i] + pads[i + n] - ext
                guard span >= 0 else { throw ctx.invalid("kernel extent \(ext) larger than padded input \(input[i] + pads[i] + pads[i + n])") }
                if ceilMode {
                    out = (span + strides[i] - 1) / strides[i] + 1
                    // the last window must start inside the input or the leading pad
                    if (out - 1) * strides[i] >= input[i] + pads[i] { out -= 1 }
                } else {
                    out = span / strides[i] + 1
                }
            case "VALID":
                pads[i] = 0; pads[i + n] = 0
                guard input[i] >= ext else { throw ctx.invalid("kernel extent \(ext) larger than input \(input[i])") }
                out = (input[i] - ext) / strides[i] + 1
            case "SAME_UPPER", "SAME_LOWER":
                out = (input[i] + strides[i] - 1) / strides[i]
                let total = max(0, (out - 1) * strides[i] + ext - input[i])
                let small = total / 2, big = total - small
                if autoPad == "SAME_UPPER" { pads[i] = small; pads[i + n] = big } else { pads[i] = big; pads[i + n] = small }
            default:
                throw ctx.unsupported("auto_pad value '\(autoPad)'")
            }
            dims.append(SpatialDim(input: input[i], kernel: kernel[i], stride: strides[i], dilation: dilations[i],
                                   padBegin: pads[i], padEnd: pads[i + n], output: out))
        }
        return dims
    }

    /// 1-D spatial problems are run as 2-D with H = 1.
    static func as2D(_ d: [SpatialDim]) -> (SpatialDim, SpatialDim) {
        if d.count == 1 {
            return (SpatialDim(input: 1, kernel: 1, stride: 1, dilation: 1, padBegin: 0, padEnd: 0, output: 1), d[0])
        }
        return (d[0], d[1])
    }

    static func conv(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0), w = try ctx.shape(1)
        guard x.count == 3 || x.count == 4, w.count == x.count else {
            throw ctx.unsupported("Conv with input rank \(x.count) and weight rank \(w.count) (1-D and 2-D convolutions only)")
        }
        let group = ctx.int("group", 1)
        let kernel = ctx.ints("kernel_shape") ?? Array(w[2...])
        guard kernel == Array(w[2...]) else { throw ctx.invalid("kernel_shape \(kernel) disagrees with weight shape \(w)") }
        guard group > 0, x[1] == w[1] * group, w[0] % group == 0 else {
            throw ctx.invalid("input channels \(x[1]), weight \(w) and group \(group) are inconsistent")
        }
        if ctx.has(2) {
            let b = try ctx.shape(2)
            guard elementCount(b) == w[0] else { throw ctx.invalid("bias shape \(b) does not match \(w[0]) output channels") }
        }
        let sp = try spatial(ctx, input: Array(x[2...]), kernel: kernel)
        let (h, wd) = as2D(sp)
        let geo = Conv2DGeometry(batch: x[0], inChannels: x[1], inHeight: h.input, inWidth: wd.input, outChannels: w[0],
                                 kernelHeight: h.kernel, kernelWidth: wd.kernel, strideH: h.stride, strideW: wd.stride,
                                 dilationH: h.dilation, dilationW: wd.dilation, padTop: h.padBegin, padLeft: wd.padBegin,
                                 padBottom: h.padEnd, padRight: wd.padEnd, group: group)
        let out = [x[0], w[0]] + sp.map(\.output)
        let convKernel: ClipEpilogueKernel = { ins, outs, clip, ctx in
            Kernels.conv2d(input: ins[0]!, weight: ins[1]!, bias: ins.count > 2 ? ins[2] : nil, output: outs[0],
                           geometry: geo, scratch: ctx.scratch, threads: ctx.threads, fusedClip: clip)
        }
        // A residual Add is fused only where it lands in the AVX-512 pointwise kernel's store
        // (elsewhere it would be the same separate pass, just inside the Conv's step).
        let residualKernel: ResidualEpilogueKernel? = Kernels.storesResidualInKernel(geo) ? { ins, outs, residual, ctx in
            Kernels.conv2d(input: ins[0]!, weight: ins[1]!, bias: ins.count > 2 ? ins[2] : nil, output: outs[0],
                           geometry: geo, scratch: ctx.scratch, threads: ctx.threads, fusedResidual: residual)
        } : nil
        return .runtime(shapes: [out], kernel: { ins, outs, ctx in convKernel(ins, outs, nil, ctx) },
                        fusion: .epilogue(clip: convKernel, residual: residualKernel))
    }

    static func convTranspose(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0), w = try ctx.shape(1)
        guard x.count == 3 || x.count == 4, w.count == x.count else {
            throw ctx.unsupported("ConvTranspose with input rank \(x.count) (1-D and 2-D only)")
        }
        let group = ctx.int("group", 1)
        let n = x.count - 2
        let kernel = ctx.ints("kernel_shape") ?? Array(w[2...])
        let strides = ctx.ints("strides") ?? [Int](repeating: 1, count: n)
        let dil = ctx.ints("dilations") ?? [Int](repeating: 1, count: n)
        let outPad = ctx.ints("output_padding") ?? [Int](repeating: 0, count: n)
        var pads = ctx.ints("pads") ?? [Int](repeating: 0, count: 2 * n)
        guard x[1] == w[0], group > 0, x[1] % group == 0 else { throw ctx.invalid("input channels \(x[1]) vs weight \(w), group \(group)") }
        let limit = 1 << 20
        guard kernel.count == n, strides.count == n, dil.count == n, outPad.count == n, pads.count == 2 * n,
              kernel.allSatisfy({ $0 > 0 && $0 <= limit }), strides.allSatisfy({ $0 > 0 && $0 <= limit }),
              dil.allSatisfy({ $0 > 0 && $0 <= limit }), outPad.allSatisfy({ $0 >= 0 && $0 <= limit }),
              pads.allSatisfy({ $0 >= 0 && $0 <= limit }), kernel == Array(w[2...]) else {
            throw ctx.invalid("kernel/strides/dilations/pads/output_padding out of range or inconsistent with weight \(w)")
        }
        let outC = w[1] * group
        var outSpatial: [Int] = []
        let autoPad = ctx.string("auto_pad", "NOTSET")
        let explicitOut = ctx.ints("output_shape")
        for i in 0..<n {
            let ext = (kernel[i] - 1) * dil[i] + 1
            let full = strides[i] * (x[i + 2] - 1) + outPad[i] + ext
            if let os = explicitOut {
                let target = os.count == n ? os[i] : os[os.count - n + i]
                let total = max(0, full - target)
                if autoPad == "SAME_UPPER" { pads[i] = total / 2; pads[i + n] = total - total / 2 } else { pads[i] = total - total / 2; pads[i + n] = total / 2 }
                outSpatial.append(target)
            } else if autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER" {
                let target = x[i + 2] * strides[i]
                let total = max(0, full - target)
                if autoPad == "SAME_UPPER" { pads[i] = total / 2; pads[i + n] = total - total / 2 } else { pads[i] = total - total / 2; pads[i + n] = total / 2 }
                outSpatial.append(target)
            } else {
                if autoPad == "VALID" { pads[i] = 0; pads[i + n] = 0 }
                outSpatial.append(full - pads[i] - pads[i + n])
            }
        }
        var fh = SpatialDim(input: 1, kernel: 1, stride: 1, dilation: 1, padBegin: 0, padEnd: 0, output: 1)
        var fw = fh
        let dims = (0..<n).map { i in SpatialDim(input: outSpatial[i], kernel: kernel[i], stride: strides[i], dilation: dil[i],
                                                  padBegin: pads[i], padEnd: pads[i + n], output: x[i + 2]) }
        if n == 1 { fw = dims[0] } else { fh = dims[0]; fw = dims[1] }
        // The forward conv maps the ConvTranspose output (C_out channels) back to its input (C_in).
        let geo = Conv2DGeometry(batch: x[0], inChannels: outC, inHeight: fh.input, inWidth: fw.input, outChannels: x[1],
                                 kernelHeight: fh.kernel, kernelWidth: fw.kernel, strideH: fh.stride, strideW: fw.stride,
                                 dilationH: fh.dilation, dilationW: fw.dilation, padTop: fh.padBegin, padLeft: fw.padBegin,
                                 padBottom: fh.padEnd, padRight: fw.padEnd, group: group)
        return .runtime(shapes: [[x[0], outC] + outSpatial]) { ins, outs, ctx in
            Kernels.convTranspose2d(input: ins[0]!, weight: ins[1]!, bias: ins.count > 2 ? ins[2] : nil, output: outs[0],
                                    forwardGeometry: geo, scratch: ctx.scratch, threads: ctx.threads)
        }
    }

    static func gemm(_ ctx: OpContext) throws -> OpResult {
        let a = try ctx.shape(0), b = try ctx.shape(1)
        guard a.count == 2, b.count == 2 else { throw ctx.invalid("Gemm needs 2-D A and B, got \(a) and \(b)") }
        let ta = ctx.int("transA", 0) != 0, tb = ctx.int("transB", 0) != 0
        let alpha = ctx.float("alpha", 1), beta = ctx.float("beta", 1)
        let m = ta ? a[1] : a[0], k = ta ? a[0] : a[1]
        let kb = tb ? b[1] : b[0], n = tb ? b[0] : b[1]
        guard k == kb else { throw ctx.invalid("inner dimensions differ: A \(a) transA=\(ta), B \(b) transB=\(tb)") }
        var cLoop: BroadcastLoop?
        if ctx.has(2) {
            let c = try ctx.shape(2)
            guard let o = broadcastShapes([m, n], c), o == [m, n] else { throw ctx.invalid("C shape \(c) does not broadcast to [\(m), \(n)]") }
            cLoop = BroadcastLoop([m, n], c, [m, n])
        }
        let useC = cLoop != nil && beta != 0
        return .runtime(shapes: [[m, n]]) { ins, outs, ctx in
            let y = outs[0]
            if useC, let loop = cLoop {
                loop.run(UnsafePointer(y), ins[2]!, y) { _, c in beta * c }
            }
            // Rows of A are samples: computed row by row, so a sample's output does not depend on the batch.
            Kernels.gemmRowwise(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: ins[0]!, lda: a[1], b: ins[1]!, ldb: b[1],
                                beta: useC ? 1 : 0, c: y, ldc: n, threads: ctx.threads)
        }
    }

    static func matmul(_ ctx: OpContext) throws -> OpResult {
        var a = try ctx.shape(0), b = try ctx.shape(1)
        let aVec = a.count == 1, bVec = b.count == 1
        if aVec { a = [1] + a }
        if bVec { b = b + [1] }
        guard a.count >= 2, b.count >= 2 else { throw ctx.invalid("MatMul operands must not be scalars") }
        let m = a[a.count - 2], k = a[a.count - 1], kb = b[b.count - 2], n = b[b.count - 1]
        guard k == kb else { throw ctx.invalid("inner dimensions differ: \(a) x \(b)") }
        let ba = Array(a.dropLast(2)), bb = Array(b.dropLast(2))
        guard let batch = broadcastShapes(ba, bb) else { throw ctx.invalid("batch dims \(ba) and \(bb) do not broadcast") }
        var out = batch + [m, n]
        if aVec { out.remove(at: out.count - 2) }
        if bVec { out.removeLast() }
        // Offsets of each batch matrix in A and B (broadcast dims repeat the same matrix).
        let nb = elementCount(batch)
        func offsets(_ s: [Int], _ mat: Int) -> [Int] {
            let padded = [Int](repeating: 1, count: batch.count - s.count) + s
            let st = stridesOf(padded)
            var res = [Int](repeating: 0, count: nb)
            for i in 0..<nb {
                var rem = i, off = 0
                for d in stride(from: batch.count - 1, through: 0, by: -1) {
                    let idx = rem % batch[d]; rem /= batch[d]
                    if padded[d] != 1 { off += idx * st[d] }
                }
                res[i] = off * mat
            }
            return res
        }
        let offA = offsets(ba, m * k), offB = offsets(bb, k * n)
        // A plain [rows, k] × [k, n] product: rows are samples (a classifier head), computed row by row
        // so a sample's output does not depend on the batch. Batched operands: one GEMM per matrix,
        // whose shape does not depend on the batch size either.
        let rowsAreSamples = ba.isEmpty && bb.isEmpty && !aVec
        return .runtime(shapes: [out]) { ins, outs, ctx in
            let pa = ins[0]!, pb = ins[1]!, y = outs[0]
            if rowsAreSamples {
                Kernels.gemmRowwise(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: pa, lda: k, b: pb, ldb: n,
                                    beta: 0, c: y, ldc: n, threads: ctx.threads)
                return
            }
            for i in 0..<nb {
                Kernels.gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: pa + offA[i], lda: k, b: pb + offB[i], ldb: n,
                             beta: 0, c: y + i * m * n, ldc: n, threads: ctx.threads)
            }
        }
    }

    static func pool(_ ctx: OpContext, isMax: Bool) throws -> OpResult {
        let x = try ctx.shape(0)
        guard x.count == 3 || x.count == 4 else { throw ctx.unsupported("pooling of rank-\(x.count) input (1-D and 2-D only)") }
        guard let kernel = ctx.ints("kernel_shape"), kernel.count == x.count - 2 else { throw ctx.invalid("kernel_shape missing or of wrong length") }
        if isMax, ctx.node.outputs.count > 1, !ctx.node.outputs[1].isEmpty {
            throw ctx.unsupported("MaxPool Indices output")
        }
        if isMax, ctx.int("storage_order", 0) != 0 { throw ctx.unsupported("storage_order=1") }
        let ceil = ctx.int("ceil_mode", 0) != 0
        let sp = try spatial(ctx, input: Array(x[2...]), kernel: kernel, ceilMode: ceil)
        let (h, w) = as2D(sp)
        let geo = Pool2DGeometry(batch: x[0], channels: x[1], inHeight: h.input, inWidth: w.input, outHeight: h.output, outWidth: w.output,
                                 kernelHeight: h.kernel, kernelWidth: w.kernel, strideH: h.stride, strideW: w.stride,
                                 dilationH: h.dilation, dilationW: w.dilation,
                                 padTop: h.padBegin, padLeft: w.padBegin, padBottom: h.padEnd, padRight: w.padEnd)
        let includePad = ctx.int("count_include_pad", 0) != 0
        return .runtime(shapes: [[x[0], x[1]] + sp.map(\.output)]) { ins, outs, ctx in
            if isMax {
                Kernels.maxPool2d(input: ins[0]!, output: outs[0], geometry: geo, threads: ctx.threads)
            } else {
                Kernels.averagePool2d(input: ins[0]!, output: outs[0], geometry: geo, countIncludePad: includePad, threads: ctx.threads)
            }
        }
    }

    static func globalPool(_ ctx: OpContext, isMax: Bool) throws -> OpResult {
        let x = try ctx.shape(0)
        guard x.count >= 3 else { throw ctx.invalid("input rank \(x.count) < 3") }
        let spatialCount = elementCount(Array(x[2...]))
        let out = [x[0], x[1]] + [Int](repeating: 1, count: x.count - 2)
        return .runtime(shapes: [out]) { ins, outs, ctx in
            Kernels.globalPool2d(input: ins[0]!, output: outs[0], batch: x[0], channels: x[1], spatial: spatialCount,
                                 isMax: isMax, threads: ctx.threads)
        }
    }

    static func batchNorm(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        guard x.count >= 2 else { throw ctx.invalid("input rank \(x.count) < 2") }
        let c = x[1]
        for i in 1...4 {
            guard elementCount(try ctx.shape(i)) == c else { throw ctx.invalid("input #\(i) shape \(try ctx.shape(i)) does not have \(c) channels") }
        }
        if ctx.opset < 9, ctx.int("spatial", 1) == 0 { throw ctx.unsupported("spatial=0") }
        if ctx.int("training_mode", 0) != 0 { throw ctx.unsupported("training_mode=1") }
        let eps = ctx.float("epsilon", 1e-5)
        let n = x[0], inner = elementCount(Array(x[2...]))
        return .runtime(shapes: [x]) { ins, outs, ctx in
            let xp = ins[0]!, scale = ins[1]!, bias = ins[2]!, mean = ins[3]!, variance = ins[4]!, y = outs[0]
            let t = n * c * inner >= BroadcastLoop.parallelThreshold ? ctx.threads : 1
            parallelChunks(n * c, threads: t) { planes in
                for p in planes {
                    let ch = p % c
                    let a = scale[ch] / (variance[ch] + eps).squareRoot()
                    let b = bias[ch] - mean[ch] * a
                    let off = p * inner
                    for i in 0..<inner { y[off + i] = xp[off + i] * a + b }
                }
            }
        }
    }

    enum ReduceKind { case mean, sum, max, min }

    static func reduce(_ ctx: OpContext, kind: ReduceKind) throws -> OpResult {
        let x = try ctx.shape(0)
        let keep = ctx.int("keepdims", 1) != 0
        var axes: [Int]?
        let axesAsInput = (kind == .sum && ctx.opset >= 13) || ctx.opset >= 18
        if axesAsInput {
            if let t = try ctx.optionalConstant(1, "axes") { axes = t.intValues }
        } else {
            axes = ctx.ints("axes")
        }
        if axes?.isEmpty ?? true {
            if axesAsInput && ctx.int("noop_with_empty_axes", 0) != 0 {
                return .runtime(shapes: [x]) { ins, outs, _ in outs[0].update(from: ins[0]!, count: elementCount(x)) }
            }
            axes = Array(0..<x.count)
        }
        let ax = Set(try axes!.map { try ctx.axis($0, rank: x.count) })
        let keptShape = x.enumerated().map { ax.contains($0.offset) ? 1 : $0.element }
        let outShape = keep ? keptShape : x.enumerated().filter { !ax.contains($0.offset) }.map(\.element)
        let outCount = elementCount(keptShape)
        let reduceCount = max(1, elementCount(x) / max(outCount, 1))
        // out[j] accumulates x[i] for i mapping to j: walk x with the broadcast loop of (kept, x).
        let loop = BroadcastLoop(keptShape, x, x)
        let ost = stridesOf(keptShape)
        _ = ost
        return .runtime(shapes: [outShape]) { ins, outs, _ in
            let xp = ins[0]!, y = outs[0]
            let initial: Float
            switch kind {
            case .mean, .sum: initial = 0
            case .max: initial = -.infinity
            case .min: initial = .infinity
            }
            for j in 0..<outCount { y[j] = initial }
            // Accumulate by iterating input positions in order (deterministic).
            loop.accumulate(into: y, from: xp) { acc, v in
                switch kind {
                case .mean, .sum: return acc + v
                case .max: return Swift.max(acc, v)
                case .min: return Swift.min(acc, v)
                }
            }
            if kind == .mean {
                let inv = Float(reduceCount)
                for j in 0..<outCount { y[j] /= inv }
            }
        }
    }
}

extension BroadcastLoop {
    /// For a loop built as (reducedShape, inputShape, inputShape): acc[aOffset] = f(acc, x[i]).
    func accumulate(into acc: UnsafeMutablePointer<Float>, from x: UnsafePointer<Float>, _ f: (Float, Float) -> Float) {
        if outCount == 0 { return }
        let r = dims.count
        let inner = dims[r - 1], ia = aStrides[r - 1]
        var idx = [Int](repeating: 0, count: r)
        var offA = 0, offO = 0
        while offO < outCount {
            let pa = acc + offA, px = x + offO
            if ia == 1 {
                for i in 0..<inner { pa[i] = f(pa[i], px[i]) }
            } else {
                var s = pa[0]
                for i in 0..<inner { s = f(s, px[i]) }
                pa[0] = s
            }
            offO += inner
            var d = r - 2
            while d >= 0 {
                idx[d] += 1
                offA += aStrides[d]
                if idx[d] < dims[d] { break }
                offA -= aStrides[d] * dims[d]
                idx[d] = 0
                d -= 1
            }
            if d < 0 { break }
        }
    }
}
