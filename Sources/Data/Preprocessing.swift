/// Image preprocessing, applied in this fixed order:
///
/// 1. decode to 8-bit RGB (grayscale files are replicated to RGB);
/// 2. colour: `rgb` keeps RGB, `bgr` reverses the channel order, `gray` converts to one channel with
///    Pillow's `convert("L")` rule, `L = (19595 R + 38470 G + 7471 B + 32768) >> 16`
///    (ITU-R 601-2 luma, 16-bit fixed point);
/// 3. resize (optional): bilinear, **Pillow's classic two-pass fixed-point algorithm** (the one of
///    `Image.resize(size, Image.BILINEAR)` in Pillow's `Resample.c`): separable triangle filter on
///    pixel centres (`center = (i + 0.5) * in/out`), widened by the scale factor when shrinking
///    (antialiasing, support = max(1, in/out)), coefficients normalised and rounded to 22-bit fixed
///    point, horizontal pass first with the intermediate rounded and clamped to 8 bits, then the
///    vertical pass. This equals Pillow's output bit for bit when one axis changes; Pillow 13 runs
///    the passes vertical-first for some sizes when both change, which can differ by one 8-bit
///    level. `shorterSide(s)` scales the shorter side to `s` and the longer to
///    `floor(s * long / short)` (torchvision's `Resize(int)` sizing); `exact` gives width and height;
/// 4. centre crop (optional): offset `round((in - out) / 2)` with round-half-to-even on each
///    axis, as torchvision's `CenterCrop`; a crop larger than the image is an error;
/// 5. `x = (float(u) * scale - mean[c]) / std[c]` in float32, with mean/std given in *output*
///    channel order (after the BGR swap);
/// 6. layout NCHW (`[C, H, W]` per sample) or NHWC (`[H, W, C]`), dtype float32.
public struct Preprocessing: Sendable, Hashable, Codable {
    public enum ColorOrder: String, Sendable, Hashable, Codable, CaseIterable { case rgb, bgr, gray }
    public enum Layout: String, Sendable, Hashable, Codable, CaseIterable { case nchw, nhwc }
    public enum Resize: Sendable, Hashable, Codable {
        case shorterSide(Int)
        case exact(width: Int, height: Int)
    }
    public struct Size: Sendable, Hashable, Codable {
        public var width: Int
        public var height: Int
        public init(width: Int, height: Int) { self.width = width; self.height = height }
    }

    public var color: ColorOrder
    public var resize: Resize?
    public var centerCrop: Size?
    public var scale: Float
    /// Per-channel (or a single value for all channels).
    public var mean: [Float]
    public var std: [Float]
    public var layout: Layout

    public init(color: ColorOrder = .rgb, resize: Resize? = nil, centerCrop: Size? = nil, scale: Float = 1,
                mean: [Float] = [0], std: [Float] = [1], layout: Layout = .nchw) {
        self.color = color
        self.resize = resize
        self.centerCrop = centerCrop
        self.scale = scale
        self.mean = mean
        self.std = std
        self.layout = layout
    }

    public var channels: Int { color == .gray ? 1 : 3 }

    /// Output (width, height) for an input of the given size.
    public func outputSize(inputWidth w: Int, inputHeight h: Int) -> Size {
        var size = resizedSize(inputWidth: w, inputHeight: h)
        if let crop = centerCrop { size = crop }
        return size
    }

    func resizedSize(inputWidth w: Int, inputHeight h: Int) -> Size {
        switch resize {
        case nil: return Size(width: w, height: h)
        case let .exact(width, height): return Size(width: width, height: height)
        case let .shorterSide(s):
            if w <= h { return Size(width: s, height: Int(Double(s) * Double(h) / Double(w))) }
            return Size(width: Int(Double(s) * Double(w) / Double(h)), height: s)
        }
    }

    /// The per-sample shape when it does not depend on the input size, else nil.
    public var fixedOutputSize: Size? {
        if let crop = centerCrop { return crop }
        if case let .exact(width, height)? = resize { return Size(width: width, height: height) }
        return nil
    }

    /// Sample shape for an output of `size`.
    public func sampleShape(for size: Size) -> [Int] {
        layout == .nchw ? [channels, size.height, size.width] : [size.height, size.width, channels]
    }

    /// Problems with the values themselves (empty when usable).
    public func problems() -> [(field: String, message: String)] {
        var out: [(String, String)] = []
        switch resize {
        case let .shorterSide(s)? where s <= 0: out.append(("resize", "shorter side must be positive, got \(s)"))
        case let .exact(w, h)? where w <= 0 || h <= 0: out.append(("resize", "size must be positive, got \(w)x\(h)"))
        default: break
        }
        if let c = centerCrop, c.width <= 0 || c.height <= 0 {
            out.append(("center_crop", "size must be positive, got \(c.width)x\(c.height)"))
        }
        if case let .exact(w, h)? = resize, let c = centerCrop, c.width > w || c.height > h {
            out.append(("center_crop", "crop \(c.width)x\(c.height) is larger than the resized image \(w)x\(h)"))
        }
        if case let .shorterSide(s)? = resize, let c = centerCrop, min(c.width, c.height) > s {
            out.append(("center_crop", "crop \(c.width)x\(c.height) is larger than the shorter side \(s)"))
        }
        if !scale.isFinite || scale == 0 { out.append(("scale", "must be a non-zero finite number, got \(scale)")) }
        if mean.count != 1 && mean.count != channels {
            out.append(("mean", "needs 1 or \(channels) values for \(color.rawValue), got \(mean.count)"))
        }
        if std.count != 1 && std.count != channels {
            out.append(("std", "needs 1 or \(channels) values for \(color.rawValue), got \(std.count)"))
        }
        if std.contains(where: { $0 == 0 || !$0.isFinite }) { out.append(("std", "values must be non-zero and finite")) }
        if mean.contains(where: { !$0.isFinite }) { out.append(("mean", "values must be finite")) }
        return out
    }

    /// Lookup table: `lut[c * 256 + v]` is the normalised float for byte value `v` in output channel `c`.
    func normalizationTable(channels: Int) -> [Float] {
        var lut = [Float](repeating: 0, count: channels * 256)
        for c in 0 ..< channels {
            let m = mean.count == 1 ? mean[0] : mean[c]
            let s = std.count == 1 ? std[0] : std[c]
            for v in 0 ..< 256 { lut[c * 256 + v] = (Float(v) * scale - m) / s }
        }
        return lut
    }
}

/// Preprocesses decoded images; holds the lookup table and reusable scratch buffers (one per thread).
struct ImagePipeline {
    let spec: Preprocessing
    let lut: [Float]
    private var gray: [UInt8] = []
    private var temp: [UInt8] = []
    private var resized: [UInt8] = []
    private var coeffCache: [Int: ResampleCoefficients] = [:]

    init(spec: Preprocessing) {
        self.spec = spec
        self.lut = spec.normalizationTable(channels: spec.channels)
    }

    /// Runs steps 2–6 on an RGB image of `width`×`height` held in `rgb[0 ..< w*h*3]`, writing
    /// `expected` (the sample's fixed output size) floats into `out`. Throws a reason string
    /// when the image does not fit the expected shape.
    mutating func run(rgb: UnsafeBufferPointer<UInt8>, width: Int, height: Int,
                      expected: Preprocessing.Size, into out: UnsafeMutableBufferPointer<Float>) throws {
        var src = rgb
        var channels = 3
        if spec.color == .gray {
            let n = width * height
            if gray.count < n { gray = [UInt8](repeating: 0, count: n) }
            gray.withUnsafeMutableBufferPointer { g in
                for i in 0 ..< n {
                    let r = UInt32(rgb[3 * i]), gg = UInt32(rgb[3 * i + 1]), b = UInt32(rgb[3 * i + 2])
                    g[i] = UInt8(truncatingIfNeeded: (r &* 19595 &+ gg &* 38470 &+ b &* 7471 &+ 0x8000) >> 16)
                }
            }
            channels = 1
            src = gray.withUnsafeBufferPointer { $0 }
        }
        // `src` may point into `gray`, which is not mutated again until the next call.
        let target = spec.resizedSize(inputWidth: width, inputHeight: height)
        var w = width, h = height
        if target.width != width || target.height != height {
            let count = target.width * target.height * channels
            if resized.count < count { resized = [UInt8](repeating: 0, count: count) }
            let cx = coefficients(inSize: width, outSize: target.width)
            let cy = coefficients(inSize: height, outSize: target.height)
            let srcCopy = src
            resized.withUnsafeMutableBufferPointer { dst in
                resampleBilinear(src: srcCopy, width: width, height: height, channels: channels,
                                 dst: dst, outWidth: target.width, outHeight: target.height,
                                 cx: cx, cy: cy, temp: &temp)
            }
            src = resized.withUnsafeBufferPointer { $0 }
            w = target.width
            h = target.height
        }
        var x0 = 0, y0 = 0, ow = w, oh = h
        if let crop = spec.centerCrop {
            guard crop.width <= w, crop.height <= h else {
                throw DecodeFailure.corrupt("image \(width)x\(height) is too small for a \(crop.width)x\(crop.height) centre crop")
            }
            x0 = centerOffset(w - crop.width)
            y0 = centerOffset(h - crop.height)
            ow = crop.width
            oh = crop.height
        }
        guard ow == expected.width, oh == expected.height else {
            throw DecodeFailure.wrongShape(expected: spec.sampleShape(for: expected),
                              actual: spec.sampleShape(for: Preprocessing.Size(width: ow, height: oh)))
        }
        normalize(src: src, srcWidth: w, channels: channels, x0: x0, y0: y0, width: ow, height: oh, into: out)
    }

    private mutating func coefficients(inSize: Int, outSize: Int) -> ResampleCoefficients {
        let key = inSize << 32 | outSize
        if let c = coeffCache[key] { return c }
        let c = ResampleCoefficients(inSize: inSize, outSize: outSize)
        if coeffCache.count > 64 { coeffCache.removeAll() }
        coeffCache[key] = c
        return c
    }

    /// Writes normalised floats for the `width`×`height` window at (`x0`, `y0`) of `src`.
    private func normalize(src: UnsafeBufferPointer<UInt8>, srcWidth: Int, channels: Int, x0: Int, y0: Int,
                           width: Int, height: Int, into out: UnsafeMutableBufferPointer<Float>) {
        let swap = spec.color == .bgr
        let plane = width * height
        let nchw = spec.layout == .nchw
        lut.withUnsafeBufferPointer { lut in
            let o = out.baseAddress!
            let s = src.baseAddress!
            let l = lut.baseAddress!
            if channels == 1 {
                for y in 0 ..< height {
                    let row = s + (y0 + y) * srcWidth + x0
                    let dst = o + y * width
                    for x in 0 ..< width { dst[x] = l[Int(row[x])] }
                }
                return
            }
            // Output channel c reads source channel c (RGB) or 2 - c (BGR); LUT is per output channel.
            let r0 = swap ? 2 : 0, r2 = swap ? 0 : 2
            let l0 = l, l1 = l + 256, l2 = l + 512
            for y in 0 ..< height {
                let row = s + ((y0 + y) * srcWidth + x0) * 3
                if nchw {
                    let d0 = o + y * width, d1 = d0 + plane, d2 = d1 + plane
                    for x in 0 ..< width {
                        let p = row + 3 * x
                        d0[x] = l0[Int(p[r0])]
                        d1[x] = l1[Int(p[1])]
                        d2[x] = l2[Int(p[r2])]
                    }
                } else {
                    let d = o + y * width * 3
                    for x in 0 ..< width {
                        let p = row + 3 * x
                        d[3 * x] = l0[Int(p[r0])]
                        d[3 * x + 1] = l1[Int(p[1])]
                        d[3 * x + 2] = l2[Int(p[r2])]
                    }
                }
            }
        }
    }
}

/// torchvision CenterCrop offset: round((in - out) / 2) with Python's round-half-to-even.
func centerOffset(_ excess: Int) -> Int {
    let half = excess / 2
    if excess % 2 == 0 { return half }
    return half % 2 == 0 ? half : half + 1
}
