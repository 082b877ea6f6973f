// Plain, readable reference kernels: the oracles the optimised kernels are tested against.
// No blocking, no vectorisation, no threads; one output element at a time, accumulated in the
// natural loop order.

extension Kernels {
    public enum Reference {
        /// Direct convolution: for each output element, sum over input channels of its group and
        /// kernel taps that land inside the input (taps in the padding contribute zero).
        public static func conv2d(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                  output: UnsafeMutablePointer<Float>, geometry g: Conv2DGeometry) {
            let oh = g.outHeight, ow = g.outWidth
            let icg = g.inChannels / g.group, ocg = g.outChannels / g.group
            for n in 0..<g.batch {
                for oc in 0..<g.outChannels {
                    let grp = oc / ocg
                    for y in 0..<oh {
                        for x in 0..<ow {
                            var acc: Float = bias?[oc] ?? 0
                            for c in 0..<icg {
                                let ic = grp * icg + c
                                for i in 0..<g.kernelHeight {
                                    let iy = y * g.strideH - g.padTop + i * g.dilationH
                                    if iy < 0 || iy >= g.inHeight { continue }
                                    for j in 0..<g.kernelWidth {
                                        let ix = x * g.strideW - g.padLeft + j * g.dilationW
                                        if ix < 0 || ix >= g.inWidth { continue }
                                        let xv = input[((n * g.inChannels + ic) * g.inHeight + iy) * g.inWidth + ix]
                                        let wv = weight[((oc * icg + c) * g.kernelHeight + i) * g.kernelWidth + j]
                                        acc += xv * wv
                                    }
                                }
                            }
                            output[((n * g.outChannels + oc) * oh + y) * ow + x] = acc
                        }
                    }
                }
            }
        }

        /// Transposed convolution by scattering: every input element (of the transposed conv) adds
        /// input · weight to each output element it touches. `fg` is the forward conv mapping the
        /// transposed conv's output (fg.in*) back to its input (fg.out*). Weight: (C_in, C_out/group, kH, kW).
        public static func convTranspose2d(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                           output: UnsafeMutablePointer<Float>, forwardGeometry fg: Conv2DGeometry) {
            let outC = fg.inChannels, outH = fg.inHeight, outW = fg.inWidth
            let inC = fg.outChannels, inH = fg.outHeight, inW = fg.outWidth
            let ocg = outC / fg.group, icg = inC / fg.group
            for n in 0..<fg.batch {
                for oc in 0..<outC {
                    for p in 0..<(outH * outW) { output[(n * outC + oc) * outH * outW + p] = bias?[oc] ?? 0 }
                }
                for ic in 0..<inC {
                    let grp = ic / icg
                    for y in 0..<inH {
                        for x in 0..<inW {
                            let xv = input[((n * inC + ic) * inH + y) * inW + x]
                            for c in 0..<ocg {
                                let oc = grp * ocg + c
                                for i in 0..<fg.kernelHeight {
                                    let oy = y * fg.strideH - fg.padTop + i * fg.dilationH
                                    if oy < 0 || oy >= outH { continue }
                                    for j in 0..<fg.kernelWidth {
                                        let ox = x * fg.strideW - fg.padLeft + j * fg.dilationW
                                        if ox < 0 || ox >= outW { continue }
                                        let wv = weight[((ic * ocg + c) * fg.kernelHeight + i) * fg.kernelWidth + j]
                                        output[((n * outC + oc) * outH + oy) * outW + ox] += xv * wv
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }

        /// C = alpha · op(A) · op(B) + beta · C, row-major, triple loop.
        public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                                a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                                beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
            for i in 0..<m {
                for j in 0..<n {
                    var acc: Float = 0
                    for p in 0..<k {
                        let av = transA ? a[p * lda + i] : a[i * lda + p]
                        let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                        acc += av * bv
                    }
                    let old = beta == 0 ? 0 : beta * c[i * ldc + j]
                    c[i * ldc + j] = alpha * acc + old
                }
            }
        }

        /// Window taps of output position `o` along one axis that fall inside the input.
        static func taps(_ o: Int, stride: Int, pad: Int, kernel: Int, dilation: Int, size: Int) -> [Int] {
            (0..<kernel).map { o * stride - pad + $0 * dilation }.filter { $0 >= 0 && $0 < size }
        }

        /// Number of window taps of output position `o` inside the padded input [-padBefore, size + padAfter).
        static func paddedTaps(_ o: Int, stride: Int, padBefore: Int, padAfter: Int, kernel: Int, dilation: Int, size: Int) -> Int {
            (0..<kernel).map { o * stride - padBefore + $0 * dilation }.filter { $0 >= -padBefore && $0 < size + padAfter }.count
        }

        /// Max over the window taps inside the input; -Float.greatestFiniteMagnitude if none.
        public static func maxPool2d(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, geometry g: Pool2DGeometry) {
            for nc in 0..<(g.batch * g.channels) {
                let plane = input + nc * g.inHeight * g.inWidth
                for y in 0..<g.outHeight {
                    let ys = taps(y, stride: g.strideH, pad: g.padTop, kernel: g.kernelHeight, dilation: g.dilationH, size: g.inHeight)
                    for x in 0..<g.outWidth {
                        let xs = taps(x, stride: g.strideW, pad: g.padLeft, kernel: g.kernelWidth, dilation: g.dilationW, size: g.inWidth)
                        var m = -Float.greatestFiniteMagnitude
                        for iy in ys { for ix in xs { m = max(m, plane[iy * g.inWidth + ix]) } }
                        output[(nc * g.outHeight + y) * g.outWidth + x] = m
                    }
                }
            }
        }

        /// Mean over the window taps inside the input. With `countIncludePad` the divisor is the
        /// number of taps inside the padded input (window clipped to input + pads), as ONNX Runtime does.
        public static func averagePool2d(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                         geometry g: Pool2DGeometry, countIncludePad: Bool) {
            for nc in 0..<(g.batch * g.channels) {
                let plane = input + nc * g.inHeight * g.inWidth
                for y in 0..<g.outHeight {
                    let ys = taps(y, stride: g.strideH, pad: g.padTop, kernel: g.kernelHeight, dilation: g.dilationH, size: g.inHeight)
                    let py = paddedTaps(y, stride: g.strideH, padBefore: g.padTop, padAfter: g.padBottom,
                                        kernel: g.kernelHeight, dilation: g.dilationH, size: g.inHeight)
                    for x in 0..<g.outWidth {
                        let xs = taps(x, stride: g.strideW, pad: g.padLeft, kernel: g.kernelWidth, dilation: g.dilationW, size: g.inWidth)
                        let px = paddedTaps(x, stride: g.strideW, padBefore: g.padLeft, padAfter: g.padRight,
                                            kernel: g.kernelWidth, dilation: g.dilationW, size: g.inWidth)
                        var s: Float = 0
                        for iy in ys { for ix in xs { s += plane[iy * g.inWidth + ix] } }
                        let count = countIncludePad ? py * px : ys.count * xs.count
                        output[(nc * g.outHeight + y) * g.outWidth + x] = count > 0 ? s / Float(count) : 0
                    }
                }
            }
        }

        public static func globalPool2d(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                        batch: Int, channels: Int, spatial: Int, isMax: Bool) {
            for nc in 0..<(batch * channels) {
                let p = input + nc * spatial
                if isMax {
                    var m = -Float.infinity
                    for i in 0..<spatial { m = max(m, p[i]) }
                    output[nc] = m
                } else {
                    var s: Float = 0
                    for i in 0..<spatial { s += p[i] }
                    output[nc] = s / Float(spatial)
                }
            }
        }
    }
}
