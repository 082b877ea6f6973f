import Foundation

/// Nearest-neighbour resampling through per-dimension source index tables.
struct NearestMover: Mover {
    let outShape: [Int]
    let inStrides: [Int]
    let tables: [[Int]]   // per dim: output index -> source index
    func move<T>(_ srcs: [UnsafePointer<T>], _ dst: UnsafeMutablePointer<T>) {
        let n = elementCount(outShape)
        let r = outShape.count
        if n == 0 { return }
        let src = srcs[0]
        let inner = outShape[r - 1]
        let lastTable = tables[r - 1].map { $0 * inStrides[r - 1] }
        var idx = [Int](repeating: 0, count: r)
        var o = 0
        while o < n {
            var base = 0
            for d in 0..<(r - 1) { base += tables[d][idx[d]] * inStrides[d] }
            for i in 0..<inner { dst[o + i] = src[base + lastTable[i]] }
            o += inner
            var d = r - 2
            while d >= 0 { idx[d] += 1; if idx[d] < outShape[d] { break }; idx[d] = 0; d -= 1 }
            if d < 0 { break }
        }
    }
}

enum ResizeOp {
    enum Coord: String {
        case halfPixel = "half_pixel", pytorchHalfPixel = "pytorch_half_pixel", alignCorners = "align_corners"
        case asymmetric = "asymmetric", tfHalfPixelForNN = "tf_half_pixel_for_nn"
    }
    enum Rounding: String {
        case roundPreferFloor = "round_prefer_floor", roundPreferCeil = "round_prefer_ceil", floor, ceil
        case simple   // opset < 11 Resize and Upsample: floor when upsampling, ceil when downsampling
    }

    static func resize(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        var scales: [Float]?
        var sizes: [Int]?
        if ctx.opset < 11 {
            scales = try ctx.constant(1, "scales").floatValues
        } else {
            if let s = try ctx.optionalConstant(2, "scales"), s.count > 0 { scales = s.floatValues }
            if let s = try ctx.optionalConstant(3, "sizes"), s.count > 0 { sizes = s.intValues }
        }
        if ctx.opset >= 18 {
            if let axes = ctx.ints("axes"), axes.count != x.count { throw ctx.unsupported("axes \(axes) (only all axes)") }
            if ctx.int("antialias", 0) != 0 { throw ctx.unsupported("antialias=1") }
            let policy = ctx.string("keep_aspect_ratio_policy", "stretch")
            if policy != "stretch", sizes != nil { throw ctx.unsupported("keep_aspect_ratio_policy '\(policy)'") }
        }
        let mode = ctx.string("mode", "nearest")
        let coordName = ctx.opset < 11 ? "asymmetric" : ctx.string("coordinate_transformation_mode", "half_pixel")
        guard let coord = Coord(rawValue: coordName) else { throw ctx.unsupported("coordinate_transformation_mode '\(coordName)'") }
        let roundName = ctx.opset < 11 ? "simple" : ctx.string("nearest_mode", "round_prefer_floor")
        guard let rounding = Rounding(rawValue: roundName) else { throw ctx.unsupported("nearest_mode '\(roundName)'") }
        return try build(ctx, x: x, scales: scales, sizes: sizes, mode: mode, coord: coord, rounding: rounding)
    }

    static func upsample(_ ctx: OpContext) throws -> OpResult {
        let x = try ctx.shape(0)
        let scales: [Float]
        if ctx.opset < 9 {
            guard let s = ctx.floats("scales") else { throw ctx.invalid("scales attribute missing") }
            scales = s
        } else {
            scales = try ctx.constant(1, "scales").floatValues
        }
        var mode = ctx.string("mode", "nearest")
        if mode == "bilinear" { mode = "linear" }
        return try build(ctx, x: x, scales: scales, sizes: nil, mode: mode, coord: .asymmetric, rounding: .simple)
    }

    static func build(_ ctx: OpContext, x: [Int], scales sc: [Float]?, sizes: [Int]?, mode: String,
                      coord: Coord, rounding: Rounding) throws -> OpResult {
        let r = x.count
        var out: [Int]
        var scales: [Float]
        if let sizes {
            guard sizes.count == r else { throw ctx.invalid("sizes \(sizes) do not match rank \(r)") }
            out = sizes
            scales = (0..<r).map { Float(sizes[$0]) / Float(x[$0]) }
        } else if let sc {
            guard sc.count == r else { throw ctx.invalid("scales \(sc) do not match rank \(r)") }
            scales = sc
            guard sc.allSatisfy({ $0 > 0 && $0.isFinite && Float(maxTensorElements) / max($0, 1) > 1 }) else {
                throw ctx.invalid("invalid scales \(sc)")
            }
            out = (0..<r).map { Int((Float(x[$0]) * sc[$0]).rounded(.down)) }
        } else {
            throw ctx.invalid("neither scales nor sizes given")
        }
        guard scales.allSatisfy({ $0 > 0 }) else { throw ctx.invalid("non-positive scales \(scales)") }
        try ctx.checkShape(out, "output")
        func original(_ o: Int, _ d: Int) -> Float {
            let s = scales[d], xo = Float(o)
            switch coord {
            case .halfPixel: return (xo + 0.5) / s - 0.5
            case .pytorchHalfPixel: return out[d] > 1 ? (xo + 0.5) / s - 0.5 : 0
            case .alignCorners: return out[d] == 1 ? 0 : xo * Float(x[d] - 1) / Float(out[d] - 1)
            case .asymmetric: return xo / s
            case .tfHalfPixelForNN: return (xo + 0.5) / s
            }
        }
        switch mode {
        case "nearest":
            var tables: [[Int]] = []
            for d in 0..<r {
                tables.append((0..<out[d]).map { o in
                    let v = original(o, d)
                    var i: Int
                    switch rounding {
                    case .roundPreferFloor: i = (v == v.rounded(.down) + 0.5) ? Int(v.rounded(.down)) : Int(v.rounded(.toNearestOrAwayFromZero))
                    case .roundPreferCeil: i = (v == v.rounded(.down) + 0.5) ? Int(v.rounded(.up)) : Int(v.rounded(.toNearestOrAwayFromZero))
                    case .floor: i = Int(v.rounded(.down))
                    case .ceil: i = Int(v.rounded(.up))
                    case .simple: i = scales[d] < 1 ? Int(v.rounded(.up)) : Int(v.rounded(.towardZero))
                    }
                    return min(max(i, 0), x[d] - 1)
                })
            }
            return try moverResult(ctx, NearestMover(outShape: out, inStrides: stridesOf(x), tables: tables), inputs: [0], outShape: out)
        case "linear", "bilinear":
            // Linear along the last two (or last one) dims; leading dims must keep their size.
            let lin = r >= 2 ? 2 : 1
            for d in 0..<(r - lin) where out[d] != x[d] {
                throw ctx.unsupported("linear resize of a leading dimension (dim \(d): \(x[d]) -> \(out[d]))")
            }
            struct Axis { var i0: [Int]; var i1: [Int]; var w0: [Float]; var w1: [Float] }
            func axis(_ d: Int) -> Axis {
                var a = Axis(i0: [], i1: [], w0: [], w1: [])
                for o in 0..<out[d] {
                    var v = original(o, d)
                    v = min(max(v, 0), Float(x[d] - 1))
                    let f = v.rounded(.down)
                    let i0 = Int(f)
                    let i1 = min(i0 + 1, x[d] - 1)
                    let w1 = v - f
                    a.i0.append(i0); a.i1.append(i1); a.w0.append(1 - w1); a.w1.append(w1)
                }
                return a
            }
            let hAxis: Axis = lin == 2 ? axis(r - 2) : Axis(i0: [0], i1: [0], w0: [1], w1: [0])
            let wAxis = axis(r - 1)
            let inH = lin == 2 ? x[r - 2] : 1, inW = x[r - 1]
            let outH = lin == 2 ? out[r - 2] : 1, outW = out[r - 1]
            let planes = elementCount(Array(x[..<(r - lin)]))
            return .runtime(shapes: [out]) { ins, outs, _ in
                let src = ins[0]!, dst = outs[0]
                for p in 0..<planes {
                    let s = src + p * inH * inW, o = dst + p * outH * outW
                    for y in 0..<outH {
                        let r0 = s + hAxis.i0[y] * inW, r1 = s + hAxis.i1[y] * inW
                        let wy0 = hAxis.w0[y], wy1 = hAxis.w1[y]
                        for xx in 0..<outW {
                            let a = wAxis.i0[xx], b = wAxis.i1[xx]
                            let wx0 = wAxis.w0[xx], wx1 = wAxis.w1[xx]
                            o[y * outW + xx] = wy0 * (wx0 * r0[a] + wx1 * r0[b]) + wy1 * (wx0 * r1[a] + wx1 * r1[b])
                        }
                    }
                }
            }
        default:
            throw ctx.unsupported("resize mode '\(mode)' (nearest and linear only)")
        }
    }
}
