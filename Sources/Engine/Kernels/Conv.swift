// Convolution kernels.
// - 1×1, stride 1, unpadded: Y[n,g] = W[g] · X[n,g] as one sgemm per (image, group), no im2col.
// - depthwise (group == inChannels == outChannels): direct row kernels in Swift (Depthwise.swift).
// - everything else: im2col of one image and group into scratch, then sgemm.
// Bias is written into the output first and sgemm accumulates onto it (beta = 1).

extension Kernels {
    @inline(__always)
    static func fillBias(_ out: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, channels: Int, plane: Int) {
        for c in 0..<channels {
            let v = bias?[c] ?? 0
            let p = out + c * plane
            for i in 0..<plane { p[i] = v }
        }
    }

    static func conv2dImpl(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                           output: UnsafeMutablePointer<Float>, geometry g: Conv2DGeometry,
                           scratch: KernelScratch, threads: Int) {
        precondition(g.group >= 1 && g.inChannels % g.group == 0 && g.outChannels % g.group == 0,
                     "conv2d: channels not divisible by group")
        let oh = g.outHeight, ow = g.outWidth
        if g.batch == 0 || g.outChannels == 0 || oh <= 0 || ow <= 0 { return }
        if g.group == g.inChannels && g.outChannels == g.inChannels && g.group > 1 {
            depthwiseConv2d(input: input, weight: weight, bias: bias, output: output, geometry: g, threads: threads)
            return
        }
        let icg = g.inChannels / g.group, ocg = g.outChannels / g.group
        let inPlane = g.inHeight * g.inWidth, outPlane = oh * ow
        let kArea = g.kernelHeight * g.kernelWidth
        let kdim = icg * kArea
        let pointwise = g.kernelHeight == 1 && g.kernelWidth == 1 && g.strideH == 1 && g.strideW == 1
            && g.padTop == 0 && g.padLeft == 0 && g.padBottom == 0 && g.padRight == 0
        let colSize = pointwise ? 0 : kdim * outPlane
        let t = max(1, threads)
        // Parallel over images when there are enough of them (single-threaded BLAS per worker);
        // otherwise one image at a time with BLAS (and im2col) using all threads.
        let perImageWorkers = g.batch >= t ? t : 1
        let blasThreads = perImageWorkers > 1 ? 1 : t
        let col = scratch.reserve(max(1, colSize * perImageWorkers))
        setBLASThreads(blasThreads)

        parallelChunks(g.batch, threads: perImageWorkers) { images in
            let worker = perImageWorkers > 1 ? images.lowerBound * perImageWorkers / g.batch : 0
            let myCol = col + worker * colSize
            for n in images {
                let x = input + n * g.inChannels * inPlane
                let y = output + n * g.outChannels * outPlane
                fillBias(y, bias: bias, channels: g.outChannels, plane: outPlane)
                for grp in 0..<g.group {
                    let xg = x + grp * icg * inPlane
                    let yg = y + grp * ocg * outPlane
                    let wg = weight + grp * ocg * kdim
                    if pointwise {
                        sgemmRaw(transA: false, transB: false, m: ocg, n: outPlane, k: icg, alpha: 1,
                                 a: wg, lda: icg, b: xg, ldb: inPlane, beta: 1, c: yg, ldc: outPlane)
                    } else {
                        im2col(xg, channels: icg, geometry: g, col: myCol, threads: perImageWorkers > 1 ? 1 : t)
                        sgemmRaw(transA: false, transB: false, m: ocg, n: outPlane, k: kdim, alpha: 1,
                                 a: wg, lda: kdim, b: myCol, ldb: outPlane, beta: 1, c: yg, ldc: outPlane)
                    }
                }
            }
        }
    }

    /// Unfolds `channels` input planes into col[(c·kH·kW + i·kW + j), oh·OW + ow]; taps in the padding are 0.
    static func im2col(_ x: UnsafePointer<Float>, channels: Int, geometry g: Conv2DGeometry,
                       col: UnsafeMutablePointer<Float>, threads: Int) {
        let oh = g.outHeight, ow = g.outWidth
        let kh = g.kernelHeight, kw = g.kernelWidth
        let rows = channels * kh * kw
        let H = g.inHeight, W = g.inWidth, sh = g.strideH, sw = g.strideW
        let outPlane = oh * ow
        parallelChunks(rows, threads: rows * outPlane >= 1 << 16 ? threads : 1) { range in
            for r in range {
                let c = r / (kh * kw), i = (r / kw) % kh, j = r % kw
                let src = x + c * H * W
                let dst = col + r * outPlane
                let xoff = j * g.dilationW - g.padLeft
                // ow valid iff 0 <= ow*sw + xoff < W
                let xLo = min(ow, xoff >= 0 ? 0 : (-xoff + sw - 1) / sw)
                let xHi = max(xLo, min(ow, W - xoff <= 0 ? 0 : (W - 1 - xoff) / sw + 1))
                for y in 0..<oh {
                    let iy = y * sh - g.padTop + i * g.dilationH
                    let d = dst + y * ow
                    if iy < 0 || iy >= H {
                        for q in 0..<ow { d[q] = 0 }
                        continue
                    }
                    let s = src + iy * W + xoff
                    for q in 0..<xLo { d[q] = 0 }
                    if sw == 1 {
                        for q in xLo..<xHi { d[q] = s[q] }
                    } else {
                        for q in xLo..<xHi { d[q] = s[q * sw] }
                    }
                    for q in xHi..<ow { d[q] = 0 }
                }
            }
        }
    }

    /// Adds col[(c·kH·kW + i·kW + j), p] back into the image planes (inverse of im2col, summing overlaps).
    /// Parallel over channels: each channel's plane is written by one worker, taps in a fixed order.
    static func col2imAdd(_ col: UnsafePointer<Float>, channels: Int, geometry g: Conv2DGeometry,
                          image: UnsafeMutablePointer<Float>, threads: Int) {
        let oh = g.outHeight, ow = g.outWidth
        let kh = g.kernelHeight, kw = g.kernelWidth
        let H = g.inHeight, W = g.inWidth, sh = g.strideH, sw = g.strideW
        let outPlane = oh * ow
        parallelChunks(channels, threads: channels * kh * kw * outPlane >= 1 << 16 ? threads : 1) { range in
            for c in range {
                let dstPlane = image + c * H * W
                for i in 0..<kh {
                    for j in 0..<kw {
                        let r = (c * kh + i) * kw + j
                        let src = col + r * outPlane
                        let xoff = j * g.dilationW - g.padLeft
                        let xLo = min(ow, xoff >= 0 ? 0 : (-xoff + sw - 1) / sw)
                        let xHi = max(xLo, min(ow, W - xoff <= 0 ? 0 : (W - 1 - xoff) / sw + 1))
                        for y in 0..<oh {
                            let iy = y * sh - g.padTop + i * g.dilationH
                            if iy < 0 || iy >= H { continue }
                            let d = dstPlane + iy * W + xoff
                            let s = src + y * ow
                            for q in xLo..<xHi { d[q * sw] += s[q] }
                        }
                    }
                }
            }
        }
    }

    /// Transposed conv = adjoint of the forward conv `fg` (which maps the output to the input):
    /// per image and group, col = W_gᵀ · X_g (sgemm), then col2im adds col into the output.
    static func convTranspose2dImpl(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                    output: UnsafeMutablePointer<Float>, forwardGeometry fg: Conv2DGeometry,
                                    scratch: KernelScratch, threads: Int) {
        precondition(fg.group >= 1 && fg.inChannels % fg.group == 0 && fg.outChannels % fg.group == 0,
                     "convTranspose2d: channels not divisible by group")
        let outC = fg.inChannels, inC = fg.outChannels
        let outPlane = fg.inHeight * fg.inWidth
        let inPlane = fg.outHeight * fg.outWidth
        if fg.batch == 0 || outC == 0 { return }
        if inPlane <= 0 {
            for n in 0..<fg.batch { fillBias(output + n * outC * outPlane, bias: bias, channels: outC, plane: outPlane) }
            return
        }
        let ocg = outC / fg.group, icg = inC / fg.group
        let kdim = ocg * fg.kernelHeight * fg.kernelWidth
        let colSize = kdim * inPlane
        let t = max(1, threads)
        let perImageWorkers = fg.batch >= t ? t : 1
        let col = scratch.reserve(max(1, colSize * perImageWorkers))
        setBLASThreads(perImageWorkers > 1 ? 1 : t)
        parallelChunks(fg.batch, threads: perImageWorkers) { images in
            let worker = perImageWorkers > 1 ? images.lowerBound * perImageWorkers / fg.batch : 0
            let myCol = col + worker * colSize
            for n in images {
                let x = input + n * inC * inPlane
                let y = output + n * outC * outPlane
                fillBias(y, bias: bias, channels: outC, plane: outPlane)
                for grp in 0..<fg.group {
                    // weight rows ic in group: (icg × kdim); col = Wᵀ (kdim × icg) · X_g (icg × inPlane)
                    sgemmRaw(transA: true, transB: false, m: kdim, n: inPlane, k: icg, alpha: 1,
                             a: weight + grp * icg * kdim, lda: kdim, b: x + grp * icg * inPlane, ldb: inPlane,
                             beta: 0, c: myCol, ldc: inPlane)
                    col2imAdd(myCol, channels: ocg, geometry: fg, image: y + grp * ocg * outPlane,
                              threads: perImageWorkers > 1 ? 1 : t)
                }
            }
        }
    }
}
