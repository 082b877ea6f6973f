// Pooling kernels: parallel over (n, c) planes, window bounds clipped once per output row/column.

/// Valid taps of one output position along one axis: taps `lo..<hi` land inside [0, size), and
/// `padded` taps land inside the padded extent [-padBefore, size + padAfter).
struct AxisWindow {
    var start: Int   // input coordinate of tap 0 (may be negative)
    var lo: Int
    var hi: Int
    var padded: Int

    @inline(__always)
    init(_ o: Int, stride: Int, padBefore: Int, padAfter: Int, kernel: Int, dilation: Int, size: Int) {
        start = o * stride - padBefore
        lo = start >= 0 ? 0 : (-start + dilation - 1) / dilation
        let lastIn = size - 1 - start
        hi = lastIn < 0 ? 0 : min(kernel, lastIn / dilation + 1)
        if hi < lo { hi = lo }
        let padEnd = size + padAfter - start
        padded = padEnd <= 0 ? 0 : min(kernel, (padEnd + dilation - 1) / dilation)
    }
}

extension Kernels {
    static func windows(count: Int, stride: Int, padBefore: Int, padAfter: Int, kernel: Int, dilation: Int, size: Int) -> [AxisWindow] {
        (0..<count).map { AxisWindow($0, stride: stride, padBefore: padBefore, padAfter: padAfter, kernel: kernel, dilation: dilation, size: size) }
    }

    static func maxPool2dImpl(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                              geometry g: Pool2DGeometry, threads: Int) {
        let wy = windows(count: g.outHeight, stride: g.strideH, padBefore: g.padTop, padAfter: g.padBottom,
                         kernel: g.kernelHeight, dilation: g.dilationH, size: g.inHeight)
        let wx = windows(count: g.outWidth, stride: g.strideW, padBefore: g.padLeft, padAfter: g.padRight,
                         kernel: g.kernelWidth, dilation: g.dilationW, size: g.inWidth)
        let inPlane = g.inHeight * g.inWidth, outPlane = g.outHeight * g.outWidth
        let W = g.inWidth, dh = g.dilationH, dw = g.dilationW
        wy.withUnsafeBufferPointer { wy in
            wx.withUnsafeBufferPointer { wx in
                parallelChunks(g.batch * g.channels, threads: threads) { planes in
                    for p in planes {
                        let src = input + p * inPlane
                        let dst = output + p * outPlane
                        for y in 0..<g.outHeight {
                            let ay = wy[y]
                            let row = dst + y * g.outWidth
                            for x in 0..<g.outWidth {
                                let ax = wx[x]
                                var m = -Float.greatestFiniteMagnitude
                                var i = ay.lo
                                while i < ay.hi {
                                    let r = src + (ay.start + i * dh) * W + ax.start
                                    var j = ax.lo
                                    while j < ax.hi {
                                        let v = r[j * dw]
                                        m = v > m ? v : m
                                        j += 1
                                    }
                                    i += 1
                                }
                                row[x] = m
                            }
                        }
                    }
                }
            }
        }
    }

    static func averagePool2dImpl(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                  geometry g: Pool2DGeometry, countIncludePad: Bool, threads: Int) {
        let wy = windows(count: g.outHeight, stride: g.strideH, padBefore: g.padTop, padAfter: g.padBottom,
                         kernel: g.kernelHeight, dilation: g.dilationH, size: g.inHeight)
        let wx = windows(count: g.outWidth, stride: g.strideW, padBefore: g.padLeft, padAfter: g.padRight,
                         kernel: g.kernelWidth, dilation: g.dilationW, size: g.inWidth)
        let inPlane = g.inHeight * g.inWidth, outPlane = g.outHeight * g.outWidth
        let W = g.inWidth, dh = g.dilationH, dw = g.dilationW
        wy.withUnsafeBufferPointer { wy in
            wx.withUnsafeBufferPointer { wx in
                parallelChunks(g.batch * g.channels, threads: threads) { planes in
                    for p in planes {
                        let src = input + p * inPlane
                        let dst = output + p * outPlane
                        for y in 0..<g.outHeight {
                            let ay = wy[y]
                            let row = dst + y * g.outWidth
                            for x in 0..<g.outWidth {
                                let ax = wx[x]
                                var s: Float = 0
                                var i = ay.lo
                                while i < ay.hi {
                                    let r = src + (ay.start + i * dh) * W + ax.start
                                    var j = ax.lo
                                    while j < ax.hi {
                                        s += r[j * dw]
                                        j += 1
                                    }
                                    i += 1
                                }
                                let count = countIncludePad ? ay.padded * ax.padded : (ay.hi - ay.lo) * (ax.hi - ax.lo)
                                row[x] = count > 0 ? s / Float(count) : 0
                            }
                        }
                    }
                }
            }
        }
    }

    static func globalPool2dImpl(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                 batch: Int, channels: Int, spatial: Int, isMax: Bool, threads: Int) {
        parallelChunks(batch * channels, threads: spatial * batch * channels >= 1 << 15 ? threads : 1) { planes in
            for p in planes {
                let src = input + p * spatial
                if isMax {
                    var m = -Float.infinity
                    for i in 0..<spatial { let v = src[i]; m = v > m ? v : m }
                    output[p] = m
                } else {
                    // Four interleaved partial sums (fixed order, independent of threads).
                    var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0
                    var i = 0
                    while i + 4 <= spatial {
                        s0 += src[i]; s1 += src[i + 1]; s2 += src[i + 2]; s3 += src[i + 3]
                        i += 4
                    }
                    while i < spatial { s0 += src[i]; i += 1 }
                    output[p] = ((s0 + s1) + (s2 + s3)) / Float(spatial)
                }
            }
        }
    }
}
