// Depthwise convolution (one input channel per output channel): direct Swift kernels, parallel
// over (image, channel) planes. Each output element accumulates bias, then taps in (i, j) order,
// skipping taps in the padding — the same order as the reference kernel.

extension Kernels {
    static func depthwiseConv2d(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                output: UnsafeMutablePointer<Float>, geometry g: Conv2DGeometry, threads: Int) {
        let oh = g.outHeight, ow = g.outWidth
        let H = g.inHeight, W = g.inWidth
        let kh = g.kernelHeight, kw = g.kernelWidth
        let sh = g.strideH, sw = g.strideW, dh = g.dilationH, dw = g.dilationW
        let C = g.inChannels
        // Valid output-column range per kernel column j.
        var xLo = [Int](repeating: 0, count: kw), xHi = [Int](repeating: 0, count: kw)
        for j in 0..<kw {
            let xoff = j * dw - g.padLeft
            xLo[j] = min(ow, xoff >= 0 ? 0 : (-xoff + sw - 1) / sw)
            xHi[j] = max(xLo[j], min(ow, W - xoff <= 0 ? 0 : (W - 1 - xoff) / sw + 1))
        }
        xLo.withUnsafeBufferPointer { xLo in
            xHi.withUnsafeBufferPointer { xHi in
                parallelChunks(g.batch * C, threads: threads) { planes in
                    for p in planes {
                        let c = p % C
                        let src = input + p * H * W
                        let dst = output + p * oh * ow
                        let w = weight + c * kh * kw
                        let b = bias?[c] ?? 0
                        for y in 0..<oh {
                            let row = dst + y * ow
                            for q in 0..<ow { row[q] = b }
                            for i in 0..<kh {
                                let iy = y * sh - g.padTop + i * dh
                                if iy < 0 || iy >= H { continue }
                                for j in 0..<kw {
                                    let wv = w[i * kw + j]
                                    let s = src + iy * W + j * dw - g.padLeft
                                    if sw == 1 {
                                        for q in xLo[j]..<xHi[j] { row[q] += wv * s[q] }
                                    } else {
                                        for q in xLo[j]..<xHi[j] { row[q] += wv * s[q * sw] }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
