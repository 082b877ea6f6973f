// Convolution kernels.
// - 1×1, stride 1, unpadded: with AVX-512 the C pointwise kernel of Pointwise.swift (bias and
//   clip in its store); otherwise Y[n,g] = W[g] · X[n,g] as sgemm blocks, no im2col.
// - depthwise (group == inChannels == outChannels): Depthwise.swift.
// - everything else: per (image, group, column block) im2col into per-worker scratch, then the
//   same pointwise kernel on the unfolded block with AVX-512, else sgemm (bias written into the
//   output first, sgemm accumulating onto it with beta = 1).
// Work is cut into tasks from the per-image shape alone (never from `threads` or the batch size),
// so each output element is computed by the same calls for any thread count or batch size.

import CConvKernels

extension Kernels {
    @inline(__always)
    static func fillBias(_ out: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, channels: Int,
                         plane: Int, from p0: Int, to p1: Int) {
        for c in 0..<channels {
            (out + c * plane + p0).update(repeating: bias?[c] ?? 0, count: p1 - p0)
        }
    }

    /// Writes clip(y) for rows [r0, r1) × columns [p0, p1) of `planes` (row stride `plane`) into `clip`.
    @inline(__always)
    static func applyFusedClip(_ fused: FusedClip?, from y: UnsafeMutablePointer<Float>, base: Int, rows r0: Int, _ r1: Int,
                               plane: Int, columns p0: Int, _ p1: Int) {
        guard let fused else { return }
        for r in r0..<r1 {
            let o = base + r * plane + p0
            clipRange(y + o, fused.output + o, p1 - p0, fused.min, fused.max)
        }
    }

    /// Whether conv2d runs `g` in the AVX-512 pointwise kernel, whose store also adds a fused
    /// residual (elsewhere the addition is a pass of its own after the convolution).
    static func storesResidualInKernel(_ g: Conv2DGeometry) -> Bool {
        g.isPointwise && !g.isDepthwise && VectorISA.best == .avx512
    }

    static func conv2dImpl(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                           output: UnsafeMutablePointer<Float>, geometry g: Conv2DGeometry,
                           scratch: KernelScratch, threads: Int, fusedClip: FusedClip? = nil,
                           fusedResidual: FusedResidual? = nil) {
        precondition(g.group >= 1 && g.inChannels % g.group == 0 && g.outChannels % g.group == 0,
                     "conv2d: channels not divisible by group")
        precondition(fusedClip == nil || fusedResidual == nil, "conv2d: a fused clip and a fused residual together")
        let oh = g.outHeight, ow = g.outWidth
        if g.batch <= 0 || g.outChannels == 0 || oh <= 0 || ow <= 0 { return }
        let pointwise = g.isPointwise
        if let fusedResidual, !storesResidualInKernel(g) {
            // Other paths: the plain convolution, then the addition as its own pass.
            conv2dImpl(input: input, weight: weight, bias: bias, output: output, geometry: g, scratch: scratch,
                       threads: threads, fusedClip: nil)
            let count = g.batch * g.outChannels * oh * ow
            for i in 0..<count { fusedResidual.sum[i] = output[i] + fusedResidual.addend[i] }
            return
        }
        if g.isDepthwise {
            depthwiseConv2d(input: input, weight: weight, bias: bias, output: output, geometry: g,
                            scratch: scratch, threads: threads, fusedClip: fusedClip)
            return
        }
        #if arch(x86_64)
        if pointwise && VectorISA.best == .avx512 {
            pointwiseConvAVX512(input: input, weight: weight, bias: bias, output: output, geometry: g,
                                threads: threads, fusedClip: fusedClip, fusedResidual: fusedResidual)
            return
        }
        #endif
        prepareBLAS()
        let icg = g.inChannels / g.group, ocg = g.outChannels / g.group
        let inPlane = g.inHeight * g.inWidth, outPlane = oh * ow
        let kdim = icg * g.kernelHeight * g.kernelWidth
        #if arch(x86_64)
        let useAVX512 = VectorISA.best == .avx512
        #else
        let useAVX512 = false
        #endif
        let split = pointwise ? GemmSplit(m: ocg, n: outPlane, k: kdim)
            : GemmSplit(columnsOf: outPlane, m: ocg, k: kdim, minWorkLog2: useAVX512 ? 20 : 22)
        let perImage = g.group * split.count
        let tasks = g.batch * perImage
        let workers = min(max(1, threads), tasks)
        let colStride = pointwise ? 0 : kdim * split.block
        let col = scratch.reserve(max(1, colStride * workers))

        parallelTasksWithWorker(tasks, threads: workers) { task, worker in
            let n = task / perImage
            let grp = (task % perImage) / split.count
            let blk = task % split.count
            let xg = input + (n * g.inChannels + grp * icg) * inPlane
            let yg = output + (n * g.outChannels + grp * ocg) * outPlane
            let wg = weight + grp * ocg * kdim
            let bg = bias.map { $0 + grp * ocg }
            if split.alongN {
                let p0 = blk * split.block, p1 = min(outPlane, p0 + split.block)
                if !pointwise && useAVX512 {
                    let myCol = col + worker * colStride
                    im2col(xg, channels: icg, geometry: g, from: p0, to: p1, col: myCol)
                    // col (kdim × block) as the pointwise kernel's input; bias and clip in its store.
                    shardcal_pointwise_avx512(myCol - p0, wg, bg, yg, kdim, p1 - p0, outPlane, 0, ocg, p0, p1,
                                              fusedClip.map { $0.output + (yg - output) }, fusedClip?.min ?? 0, fusedClip?.max ?? 0,
                                              nil, nil)
                    return
                }
                fillBias(yg, bias: bg, channels: ocg, plane: outPlane, from: p0, to: p1)
                if pointwise {
                    sgemmRaw(transA: false, transB: false, m: ocg, n: p1 - p0, k: icg, alpha: 1,
                             a: wg, lda: icg, b: xg + p0, ldb: inPlane, beta: 1, c: yg + p0, ldc: outPlane)
                } else {
                    let myCol = col + worker * colStride
                    im2col(xg, channels: icg, geometry: g, from: p0, to: p1, col: myCol)
                    sgemmRaw(transA: false, transB: false, m: ocg, n: p1 - p0, k: kdim, alpha: 1,
                             a: wg, lda: kdim, b: myCol, ldb: p1 - p0, beta: 1, c: yg + p0, ldc: outPlane)
                }
                applyFusedClip(fusedClip, from: output, base: yg - output, rows: 0, ocg, plane: outPlane, columns: p0, p1)
            } else {
                // Row blocks (pointwise only): output channels r0..<r1 of this group.
                let r0 = blk * split.block, r1 = min(ocg, r0 + split.block)
                fillBias(yg + r0 * outPlane, bias: bg.map { $0 + r0 }, channels: r1 - r0, plane: outPlane, from: 0, to: outPlane)
                sgemmRaw(transA: false, transB: false, m: r1 - r0, n: outPlane, k: icg, alpha: 1,
                         a: wg + r0 * icg, lda: icg, b: xg, ldb: inPlane, beta: 1, c: yg + r0 * outPlane, ldc: outPlane)
                applyFusedClip(fusedClip, from: output, base: yg - output, rows: r0, r1, plane: outPlane, columns: 0, outPlane)
            }
        }
    }

    /// Valid output-column range [lo, hi) for kernel column offset `xoff` (= j·dilationW − padLeft):
    /// columns whose input column ow·strideW + xoff lies in [0, width).
    @inline(__always)
    static func validColumns(xoff: Int, stride: Int, width: Int, outWidth: Int) -> (lo: Int, hi: Int) {
        let lo = min(outWidth, xoff >= 0 ? 0 : (-xoff + stride - 1) / stride)
        let hi = max(lo, min(outWidth, width - xoff <= 0 ? 0 : (width - 1 - xoff) / stride + 1))
        return (lo, hi)
    }

    /// Unfolds `channels` input planes for output positions p0..<p1 (p = oh·OW + ow) into
    /// col[(c·kH·kW + i·kW + j), p − p0] (row length p1 − p0); taps in the padding are 0.
    static func im2col(_ x: UnsafePointer<Float>, channels: Int, geometry g: Conv2DGeometry,
                       from p0: Int, to p1: Int, col: UnsafeMutablePointer<Float>) {
        let ow = g.outWidth
        let kh = g.kernelHeight, kw = g.kernelWidth
        let H = g.inHeight, W = g.inWidth, sh = g.strideH, sw = g.strideW
        let len = p1 - p0
        for r in 0..<(channels * kh * kw) {
            let c = r / (kh * kw), i = (r / kw) % kh, j = r % kw
            let src = x + c * H * W
            let dst = col + r * len - p0
            let xoff = j * g.dilationW - g.padLeft
            let (xLo, xHi) = validColumns(xoff: xoff, stride: sw, width: W, outWidth: ow)
            var p = p0
            while p < p1 {
                let y = p / ow, x0 = p % ow
                let x1 = min(ow, x0 + (p1 - p))
                let d = dst + y * ow   // d[x] is output column x of row y
                let iy = y * sh - g.padTop + i * g.dilationH
                if iy < 0 || iy >= H {
                    for q in x0..<x1 { d[q] = 0 }
                } else {
                    let s = src + iy * W + xoff
                    let a = min(max(x0, xLo), x1), b = max(a, min(x1, xHi))
                    for q in x0..<a { d[q] = 0 }
                    if sw == 1 {
                        for q in a..<b { d[q] = s[q] }
                    } else {
                        for q in a..<b { d[q] = s[q * sw] }
                    }
                    for q in b..<x1 { d[q] = 0 }
                }
                p += x1 - x0
            }
        }
    }

    /// Adds col[(c·kH·kW + i·kW + j), p] (p over the whole output plane of `g`) back into the image
    /// planes: the adjoint of im2col, summing overlapping taps in (i, j, p) order.
    static func col2imAdd(_ col: UnsafePointer<Float>, channels: Int, geometry g: Conv2DGeometry,
                          image: UnsafeMutablePointer<Float>) {
        let oh = g.outHeight, ow = g.outWidth
        let kh = g.kernelHeight, kw = g.kernelWidth
        let H = g.inHeight, W = g.inWidth, sh = g.strideH, sw = g.strideW
        let outPlane = oh * ow
        for c in 0..<channels {
            let dstPlane = image + c * H * W
            for i in 0..<kh {
                for j in 0..<kw {
                    let src = col + ((c * kh + i) * kw + j) * outPlane
                    let xoff = j * g.dilationW - g.padLeft
                    let (xLo, xHi) = validColumns(xoff: xoff, stride: sw, width: W, outWidth: ow)
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

    /// Transposed conv = adjoint of the forward conv `fg` (which maps this op's output to its input):
    /// per (image, group) task, col = W_gᵀ · X_g (sgemm), then col2im adds col into the output.
    static func convTranspose2dImpl(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                    output: UnsafeMutablePointer<Float>, forwardGeometry fg: Conv2DGeometry,
                                    scratch: KernelScratch, threads: Int) {
        precondition(fg.group >= 1 && fg.inChannels % fg.group == 0 && fg.outChannels % fg.group == 0,
                     "convTranspose2d: channels not divisible by group")
        let outC = fg.inChannels, inC = fg.outChannels
        let outPlane = fg.inHeight * fg.inWidth
        let inPlane = max(0, fg.outHeight) * max(0, fg.outWidth)
        if fg.batch <= 0 || outC == 0 { return }
        let ocg = outC / fg.group, icg = inC / fg.group
        let kdim = ocg * fg.kernelHeight * fg.kernelWidth
        let colSize = kdim * inPlane
        let tasks = fg.batch * fg.group
        let workers = min(max(1, threads), tasks)
        let col = scratch.reserve(max(1, colSize * workers))
        prepareBLAS()
        parallelTasksWithWorker(tasks, threads: workers) { task, worker in
            let n = task / fg.group, grp = task % fg.group
            let y = output + (n * outC + grp * ocg) * outPlane
            fillBias(y, bias: bias.map { $0 + grp * ocg }, channels: ocg, plane: outPlane, from: 0, to: outPlane)
            if inPlane == 0 || icg == 0 { return }
            let myCol = col + worker * colSize
            // Weight rows of this group's input channels: (icg × kdim); col = Wᵀ (kdim × icg) · X_g (icg × inPlane).
            sgemmRaw(transA: true, transB: false, m: kdim, n: inPlane, k: icg, alpha: 1,
                     a: weight + grp * icg * kdim, lda: kdim, b: input + (n * inC + grp * icg) * inPlane, ldb: inPlane,
                     beta: 0, c: myCol, ldc: inPlane)
            col2imAdd(myCol, channels: ocg, geometry: fg, image: y)
        }
    }
}
