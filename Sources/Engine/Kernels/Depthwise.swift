// Depthwise convolution (one input channel per output channel), parallel over (image, channel) planes.
//
// Each plane is first copied into a zero-padded scratch plane, split into `strideW` column phases
// (phase ph holds padded columns ph, ph + sW, ph + 2·sW, …). Tap (i, j) of output column x then reads
// padded column x·sW + j·dW, i.e. phase (j·dW) mod sW at index x + (j·dW) / sW: contiguous in x for any
// stride and dilation, so 8 outputs are computed with one vector load per tap. Four output vectors are
// computed together to hide add latency.
//
// Portable (Swift) path — accumulation per output element: bias, then taps in (i, j) order with
// separate multiply and add (no FMA), like the reference kernel. Taps in the padding add w·0 = ±0,
// which leaves the sum unchanged, so results equal the reference (up to the sign of an exact zero).
// Swift code is compiled for baseline x86-64 (SSE), so on CPUs with AVX-512 or AVX2+FMA the plane
// loop runs in a small C kernel (Sources/CConvKernels) instead: same tap order,
// 16 or 8 lanes, fused multiply-add (so within rounding of the reference, not bit-equal). With
// AVX-512 and column stride 1 or 2 the C kernel reads the input directly with masked loads (no
// staging copy; strides 2 with 3×3 or 5×5 kernels take a schedule that loads and de-interleaves
// each input row once for all the output rows that read it); otherwise it uses the padded
// phase-split copy. On most stride-1 shapes (shardcal_dw_flat_preferred) the "flat" AVX-512
// kernel runs instead: 16 consecutive output pixels per vector across row ends, 8 accumulators
// per tile (same FMA sequence per element as the direct kernel, so bit-identical to it).
// The choice depends only on the CPU, never on the thread count.

import CConvKernels

/// Per-geometry constants of the depthwise kernel.
struct DepthwisePlan {
    var lanes: Int
    var H: Int, W: Int, oh: Int, ow: Int
    var sh: Int, sw: Int
    var padTop: Int, padLeft: Int
    var taps: Int
    var paddedRows: Int     // padded rows ever read
    var vecsPerRow: Int
    var phaseWidth: Int     // columns ever read per phase
    var phasePlane: Int
    var planeSize: Int      // floats of scratch per worker (phases + one row of staging)
    var rowStage: Int       // offset of the staging row inside a worker's scratch

    init(_ g: Conv2DGeometry, lanes: Int) {
        self.lanes = lanes
        H = g.inHeight; W = g.inWidth; oh = g.outHeight; ow = g.outWidth
        sh = g.strideH; sw = g.strideW; padTop = g.padTop; padLeft = g.padLeft
        taps = g.kernelHeight * g.kernelWidth
        paddedRows = (oh - 1) * sh + (g.kernelHeight - 1) * g.dilationH + 1
        vecsPerRow = (ow + lanes - 1) / lanes
        phaseWidth = vecsPerRow * lanes + ((g.kernelWidth - 1) * g.dilationW) / sw
        phasePlane = paddedRows * phaseWidth
        rowStage = sw * phasePlane
        planeSize = rowStage + sw * phaseWidth + 2 * lanes
    }
}

extension Kernels {
    /// Instruction set used by the vectorised kernels.
    public enum VectorISA: String, Sendable, CaseIterable {
        /// Swift SIMD code (SSE on x86-64); summation order identical to the reference kernels.
        case portable
        /// C kernel with AVX2 + FMA.
        case avx2
        /// C kernel with AVX-512F.
        case avx512

        /// Best ISA this CPU supports (read once from the CPU flags).
        public static let best: VectorISA = {
            #if arch(x86_64)
            let flags = CPUFlags.current
            if flags.contains("avx512f") { return .avx512 }
            if flags.contains("avx2") && flags.contains("fma") { return .avx2 }
            #endif
            return .portable
        }()

        /// Whether this CPU can run the ISA.
        public var isSupported: Bool {
            switch self {
            case .portable: return true
            case .avx2: return VectorISA.best == .avx2 || VectorISA.best == .avx512
            case .avx512: return VectorISA.best == .avx512
            }
        }
    }

    /// Depthwise convolution (group == inChannels == outChannels) with an explicit ISA; `conv2d`
    /// uses `VectorISA.best`. Precondition: `isa.isSupported`.
    public static func depthwiseConv2d(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                       output: UnsafeMutablePointer<Float>, geometry g: Conv2DGeometry,
                                       scratch: KernelScratch, threads: Int, isa: VectorISA = .best,
                                       fusedClip: FusedClip? = nil, avx512Kernel: DepthwiseAVX512Kernel = .auto) {
        precondition(g.group == g.inChannels && g.outChannels == g.inChannels, "depthwiseConv2d: not a depthwise geometry")
        precondition(isa.isSupported, "depthwiseConv2d: \(isa) not supported by this CPU")
        if g.batch <= 0 || g.inChannels == 0 || g.outHeight <= 0 || g.outWidth <= 0 { return }
        #if arch(x86_64)
        // The flat kernel falls back to the direct one (below) on shapes outside its domain, so only
        // shapes the direct kernel supports go there.
        if isa == .avx512 && (g.strideW == 1 || g.strideW == 2) && g.kernelWidth <= 16 && avx512Kernel != .direct
            && (avx512Kernel == .flat
                || shardcal_dw_flat_preferred(g.inHeight, g.inWidth, g.kernelHeight, g.kernelWidth, g.strideH, g.strideW,
                                              g.dilationH, g.dilationW) != 0) {
            depthwiseFlatAVX512(input: input, weight: weight, bias: bias, output: output, geometry: g, scratch: scratch,
                                threads: threads, fusedClip: fusedClip)
            return
        }
        if isa == .avx512 && (g.strideW == 1 || g.strideW == 2) && g.kernelWidth <= 16 {
            // No staging copy: masked loads straight from the input plane.
            let C = g.inChannels
            // The clip, if any, is applied in the kernel's store.
            affineTasksWithWorker(g.batch * C, threads: threads) { p, _ in
                let c = p % C
                let offset = p * g.outHeight * g.outWidth
                _ = shardcal_dw_direct_avx512(input + p * g.inHeight * g.inWidth, output + offset,
                                              weight + c * g.kernelHeight * g.kernelWidth, bias?[c] ?? 0,
                                              g.inHeight, g.inWidth, g.outHeight, g.outWidth, g.kernelHeight, g.kernelWidth,
                                              g.strideH, g.strideW, g.dilationH, g.dilationW, g.padTop, g.padLeft,
                                              fusedClip.map { $0.output + offset }, fusedClip?.min ?? 0, fusedClip?.max ?? 0)
            }
            return
        }
        #endif
        let plan = DepthwisePlan(g, lanes: isa == .avx512 ? 16 : 8)
        let C = g.inChannels
        let planes = g.batch * C
        let workers = min(max(1, threads), planes)
        let buf = scratch.reserve(max(1, plan.planeSize * workers))
        // Tap offsets relative to a tile's base (padded row y·sH, phase-0 column x), in floats.
        var tapOffset = [Int](repeating: 0, count: plan.taps)
        for i in 0..<g.kernelHeight {
            for j in 0..<g.kernelWidth {
                let col = j * g.dilationW
                tapOffset[i * g.kernelWidth + j] = (col % plan.sw) * plan.phasePlane + i * g.dilationH * plan.phaseWidth + col / plan.sw
            }
        }
        tapOffset.withUnsafeBufferPointer { offsets in
            let offsets = offsets.baseAddress!
            parallelTasksWithWorker(planes, threads: workers) { p, worker in
                let c = p % C
                let pad = buf + worker * plan.planeSize
                depthwisePadPlane(src: input + p * plan.H * plan.W, pad: pad, plan: plan)
                let dst = output + p * plan.oh * plan.ow, w = weight + c * plan.taps, b = bias?[c] ?? 0
                switch isa {
                case .portable:
                    depthwisePlane(pad: pad, dst: dst, weight: w, bias: b, offsets: offsets, plan: plan)
                #if arch(x86_64)
                case .avx512:
                    shardcal_dw_plane_avx512(pad, dst, w, b, offsets, plan.taps, plan.oh, plan.ow, plan.vecsPerRow,
                                             plan.sh * plan.phaseWidth)
                case .avx2:
                    shardcal_dw_plane_avx2(pad, dst, w, b, offsets, plan.taps, plan.oh, plan.ow, plan.vecsPerRow,
                                           plan.sh * plan.phaseWidth)
                #else
                default:
                    depthwisePlane(pad: pad, dst: dst, weight: w, bias: b, offsets: offsets, plan: plan)
                #endif
                }
                applyFusedClip(fusedClip, from: output, base: p * plan.oh * plan.ow, rows: 0, 1,
                               plane: 0, columns: 0, plan.oh * plan.ow)
            }
        }
    }

    /// Which AVX-512 depthwise kernel runs (tests force one; `.auto` chooses from the shape alone).
    public enum DepthwiseAVX512Kernel: Sendable { case auto, direct, flat }

    #if arch(x86_64)
    /// `shardcal_dw_flat_avx512` on blocks of 16 channels of one image (each plane's result does not
    /// depend on the block it is computed in); the direct kernel where the flat one declines the
    /// shape. Blocks go to threads by `affineTasksWithWorker`: the planes a pointwise Conv's thread
    /// wrote are mostly read back by the same thread.
    static func depthwiseFlatAVX512(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                    output: UnsafeMutablePointer<Float>, geometry g: Conv2DGeometry, scratch: KernelScratch,
                                    threads: Int, fusedClip: FusedClip?) {
        let C = g.inChannels, block = 16
        let blocks = (C + block - 1) / block
        let inPlane = g.inHeight * g.inWidth, outPlane = g.outHeight * g.outWidth, taps = g.kernelHeight * g.kernelWidth
        let tasks = g.batch * blocks
        let workers = min(max(1, threads), tasks)
        let perWorker = shardcal_dw_flat_scratch_floats(block, g.inHeight, g.inWidth, g.outHeight, g.outWidth, g.strideH, g.strideW)
        let buf = scratch.reserve(max(1, perWorker * workers))
        affineTasksWithWorker(tasks, threads: workers) { t, worker in
            let n = t / blocks, c0 = (t % blocks) * block, count = min(block, C - c0)
            let p0 = n * C + c0
            let done = shardcal_dw_flat_avx512(input + p0 * inPlane, output + p0 * outPlane, weight + c0 * taps, bias.map { $0 + c0 },
                                               count, g.inHeight, g.inWidth, g.outHeight, g.outWidth, g.kernelHeight, g.kernelWidth,
                                               g.strideH, g.strideW, g.dilationH, g.dilationW, g.padTop, g.padLeft,
                                               buf + worker * perWorker,
                                               fusedClip.map { $0.output + p0 * outPlane }, fusedClip?.min ?? 0, fusedClip?.max ?? 0)
            if done != 0 { return }
            for q in 0..<count {
                let p = p0 + q, c = c0 + q
                _ = shardcal_dw_direct_avx512(input + p * inPlane, output + p * outPlane, weight + c * taps, bias?[c] ?? 0,
                                              g.inHeight, g.inWidth, g.outHeight, g.outWidth, g.kernelHeight, g.kernelWidth,
                                              g.strideH, g.strideW, g.dilationH, g.dilationW, g.padTop, g.padLeft,
                                              fusedClip.map { $0.output + p * outPlane }, fusedClip?.min ?? 0, fusedClip?.max ?? 0)
            }
        }
    }
    #endif

    /// Copies one input plane into the zero-padded, phase-split scratch layout.
    @inline(__always)
    static func depthwisePadPlane(src: UnsafePointer<Float>, pad: UnsafeMutablePointer<Float>, plan: DepthwisePlan) {
        let sw = plan.sw, W = plan.W, pl = plan.padLeft, pw = plan.phaseWidth
        let stage = pad + plan.rowStage        // one padded row of sw·pw (+ slack) floats
        let stageLen = sw &* pw
        // Columns of the padded row that hold input: [pl, pl + W) clipped to the staged length.
        let inLo = min(pl, stageLen), inHi = min(pl &+ W, stageLen)
        for r in 0..<plan.paddedRows {
            let iy = r &- plan.padTop
            if iy < 0 || iy >= plan.H {
                for ph in 0..<sw { (pad + ph &* plan.phasePlane + r &* pw).update(repeating: 0, count: pw) }
                continue
            }
            let s = src + iy &* W
            if sw == 1 {
                let d = pad + r &* pw
                d.update(repeating: 0, count: inLo)
                (d + inLo).update(from: s + (inLo &- pl), count: inHi &- inLo)
                (d + inHi).update(repeating: 0, count: pw &- inHi)
                continue
            }
            // Stage the padded row, then deinterleave it into the phases.
            stage.update(repeating: 0, count: inLo)
            (stage + inLo).update(from: s + (inLo &- pl), count: inHi &- inLo)
            (stage + inHi).update(repeating: 0, count: stageLen &- inHi + 2 * plan.lanes)
            if sw == 2 {
                let d0 = pad + r &* pw, d1 = pad + plan.phasePlane + r &* pw
                var q = 0
                while q &+ 8 <= pw {
                    let v = UnsafeRawPointer(stage + 2 &* q).loadUnaligned(as: SIMD16<Float>.self)
                    UnsafeMutableRawPointer(d0 + q).storeBytes(of: v.evenHalf, as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(d1 + q).storeBytes(of: v.oddHalf, as: SIMD8<Float>.self)
                    q &+= 8
                }
                while q < pw { d0[q] = stage[2 &* q]; d1[q] = stage[2 &* q &+ 1]; q &+= 1 }
            } else {
                for ph in 0..<sw {
                    let d = pad + ph &* plan.phasePlane + r &* pw
                    for q in 0..<pw { d[q] = stage[q &* sw &+ ph] }
                }
            }
        }
    }

    /// Computes one output plane from its padded, phase-split input.
    @inline(__always)
    static func depthwisePlane(pad: UnsafeMutablePointer<Float>, dst: UnsafeMutablePointer<Float>, weight w: UnsafePointer<Float>,
                               bias: Float, offsets: UnsafePointer<Int>, plan: DepthwisePlan) {
        typealias V = SIMD8<Float>
        precondition(plan.lanes == 8)
        let lanes = 8
        let vpr = plan.vecsPerRow, ow = plan.ow, taps = plan.taps
        let rowStep = plan.sh &* plan.phaseWidth
        let tiles = plan.oh &* vpr
        let b = V(repeating: bias)
        let fs = MemoryLayout<Float>.stride
        @inline(__always) func base(_ t: Int) -> UnsafeRawPointer {
            let y = t / vpr, xb = (t &- y &* vpr) &* lanes
            return UnsafeRawPointer(pad + (y &* rowStep &+ xb))
        }
        @inline(__always) func store(_ acc: V, _ t: Int) {
            let y = t / vpr, xb = (t &- y &* vpr) &* lanes
            let o = dst + (y &* ow &+ xb)
            if xb &+ lanes <= ow {
                UnsafeMutableRawPointer(o).storeBytes(of: acc, as: V.self)
            } else {
                for l in 0..<(ow &- xb) { o[l] = acc[l] }
            }
        }
        var t = 0
        while t &+ 4 <= tiles {
            let b0 = base(t), b1 = base(t &+ 1), b2 = base(t &+ 2), b3 = base(t &+ 3)
            var a0 = b, a1 = b, a2 = b, a3 = b
            var k = 0
            while k < taps {
                let wv = V(repeating: w[k])
                let off = offsets[k] &* fs
                a0 = a0 + wv * b0.loadUnaligned(fromByteOffset: off, as: V.self)
                a1 = a1 + wv * b1.loadUnaligned(fromByteOffset: off, as: V.self)
                a2 = a2 + wv * b2.loadUnaligned(fromByteOffset: off, as: V.self)
                a3 = a3 + wv * b3.loadUnaligned(fromByteOffset: off, as: V.self)
                k &+= 1
            }
            store(a0, t); store(a1, t &+ 1); store(a2, t &+ 2); store(a3, t &+ 3)
            t &+= 4
        }
        while t < tiles {
            let b0 = base(t)
            var a0 = b
            var k = 0
            while k < taps {
                a0 = a0 + V(repeating: w[k]) * b0.loadUnaligned(fromByteOffset: offsets[k] &* fs, as: V.self)
                k &+= 1
            }
            store(a0, t)
            t &+= 1
        }
    }
}
