/// Bilinear resampling reproducing Pillow's `Image.resize(..., Image.BILINEAR)` on 8-bit images
/// bit for bit (Pillow `libImaging/Resample.c` semantics, written independently from its
/// documented behaviour): triangle filter, support widened by the downscale factor, coefficients
/// normalised to sum 1 and rounded to 22-bit fixed point, horizontal pass first (8-bit
/// intermediate), then vertical.
struct ResampleCoefficients: Sendable {
    static let precisionBits = 22
    /// Window start and length per output pixel.
    var start: [Int32]
    var length: [Int32]
    /// `taps` fixed-point weights per output pixel.
    var weights: [Int32]
    var taps: Int

    init(inSize: Int, outSize: Int) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1.0)
        let support = filterScale // the triangle filter's support is 1
        taps = Int(support.rounded(.up)) * 2 + 1
        start = [Int32](repeating: 0, count: outSize)
        length = [Int32](repeating: 0, count: outSize)
        weights = [Int32](repeating: 0, count: outSize * taps)
        var k = [Double](repeating: 0, count: taps)
        let inv = 1.0 / filterScale
        let one = Double(1 << ResampleCoefficients.precisionBits)
        for i in 0 ..< outSize {
            let center = (Double(i) + 0.5) * scale
            var lo = Int(center - support + 0.5) // truncation toward zero, as a C cast
            if lo < 0 { lo = 0 }
            var hi = Int(center + support + 0.5)
            if hi > inSize { hi = inSize }
            let n = hi - lo
            var sum = 0.0
            for j in 0 ..< n {
                var t = (Double(j + lo) - center + 0.5) * inv
                if t < 0 { t = -t }
                let w = t < 1 ? 1 - t : 0
                k[j] = w
                sum += w
            }
            for j in 0 ..< n {
                let w = sum != 0 ? k[j] / sum : k[j]
                weights[i * taps + j] = w < 0 ? Int32(-0.5 + w * one) : Int32(0.5 + w * one)
            }
            start[i] = Int32(lo)
            length[i] = Int32(n)
        }
    }
}

@inline(__always)
private func clip8(_ v: Int32) -> UInt8 {
    let shifted = v >> Int32(ResampleCoefficients.precisionBits)
    if shifted <= 0 { return v <= 0 ? 0 : UInt8(truncatingIfNeeded: shifted) }
    return shifted >= 255 ? 255 : UInt8(truncatingIfNeeded: shifted)
}

/// Resamples `src` (`width`×`height`×`channels`, interleaved) into `dst` (`outWidth`×`outHeight`).
func resampleBilinear(src: UnsafeBufferPointer<UInt8>, width: Int, height: Int, channels: Int,
                      dst: UnsafeMutableBufferPointer<UInt8>, outWidth: Int, outHeight: Int,
                      cx: ResampleCoefficients, cy: ResampleCoefficients, temp: inout [UInt8]) {
    let needH = outWidth != width
    let needV = outHeight != height
    let half = Int32(1) << Int32(ResampleCoefficients.precisionBits - 1)
    // Rows of the source the vertical pass will read.
    let firstRow = needV ? Int(cy.start[0]) : 0
    let lastRow = needV ? Int(cy.start[outHeight - 1] + cy.length[outHeight - 1]) : height

    func horizontal(into out: UnsafeMutablePointer<UInt8>) {
        cx.weights.withUnsafeBufferPointer { wts in
            for y in firstRow ..< lastRow {
                let row = src.baseAddress! + y * width * channels
                let orow = out + (y - firstRow) * outWidth * channels
                for x in 0 ..< outWidth {
                    let lo = Int(cx.start[x]), n = Int(cx.length[x])
                    let k = wts.baseAddress! + x * cx.taps
                    for c in 0 ..< channels {
                        var acc = half
                        var p = row + lo * channels + c
                        for j in 0 ..< n {
                            acc &+= Int32(p.pointee) &* k[j]
                            p += channels
                        }
                        orow[x * channels + c] = clip8(acc)
                    }
                }
            }
        }
    }

    func vertical(from input: UnsafePointer<UInt8>, rowOffset: Int, into out: UnsafeMutablePointer<UInt8>) {
        let stride = outWidth * channels
        cy.weights.withUnsafeBufferPointer { wts in
            var acc = [Int32](repeating: 0, count: stride)
            acc.withUnsafeMutableBufferPointer { acc in
                for y in 0 ..< outHeight {
                    let lo = Int(cy.start[y]) - rowOffset, n = Int(cy.length[y])
                    let k = wts.baseAddress! + y * cy.taps
                    for i in 0 ..< stride { acc[i] = half }
                    for j in 0 ..< n {
                        let w = k[j]
                        let r = input + (lo + j) * stride
                        for i in 0 ..< stride { acc[i] &+= Int32(r[i]) &* w }
                    }
                    let orow = out + y * stride
                    for i in 0 ..< stride { orow[i] = clip8(acc[i]) }
                }
            }
        }
    }

    let out = dst.baseAddress!
    if needH && needV {
        let count = (lastRow - firstRow) * outWidth * channels
        if temp.count < count { temp = [UInt8](repeating: 0, count: count) }
        temp.withUnsafeMutableBufferPointer { t in
            horizontal(into: t.baseAddress!)
            vertical(from: UnsafePointer(t.baseAddress!), rowOffset: firstRow, into: out)
        }
    } else if needH {
        horizontal(into: out)
    } else if needV {
        vertical(from: src.baseAddress!, rowOffset: 0, into: out)
    } else {
        out.update(from: src.baseAddress!, count: width * height * channels)
    }
}
