// Pointwise (1×1, stride 1, unpadded) convolution with the AVX-512 C kernel
// (Sources/CConvKernels): Y[n, o, p] = B[o] + Σ_i W[o, i] · X[n, i, p], one register tile of
// 6 output channels × 64 pixels at a time, bias as the accumulator's start and an optional clip
// applied before the single store, or an optional residual addend added in it (a fused Add). Used instead of sgemm on CPUs with AVX-512.
//
// Each output element is computed by the same sequence of FMAs whatever the cut into tasks, so
// tasks are chosen freely for load balance (from the per-image shape; results do not depend on
// them, nor on the thread count or batch size).

import CConvKernels

/// How one image's pointwise product is cut into tasks: pixel blocks of whole 64-pixel tiles
/// (as equal as whole tiles allow), times output-channel blocks of whole 6-row tiles.
struct PointwiseSplit: Equatable {
    var pixelTiles: Int, pixelBlocks: Int
    var channelBlock: Int, channelBlocks: Int
    var count: Int { pixelBlocks * channelBlocks }

    /// Tasks of about 2^20 multiply-adds or more (≈ 10 µs on one core), at most 32 per image.
    init(outChannels oc: Int, inChannels ic: Int, pixels P: Int) {
        let rows = 6
        let want = min(32, max(1, (oc * ic * P) >> 20))
        pixelTiles = (P + 63) / 64
        let rowTiles = (oc + rows - 1) / rows
        pixelBlocks = min(pixelTiles, want)
        let cb = min(rowTiles, max(1, (want + pixelBlocks - 1) / pixelBlocks))
        channelBlock = (rowTiles + cb - 1) / cb * rows
        channelBlocks = (oc + channelBlock - 1) / channelBlock
    }

    /// Pixels of block k (of `pixels`): tiles [tiles·k/blocks, tiles·(k+1)/blocks).
    func pixelRange(_ k: Int, pixels P: Int) -> Range<Int> {
        min(P, pixelTiles * k / pixelBlocks * 64)..<min(P, pixelTiles * (k + 1) / pixelBlocks * 64)
    }
}

extension Kernels {
    #if arch(x86_64)
    /// Pointwise conv (group g: per-group products) with `shardcal_pointwise_avx512`.
    static func pointwiseConvAVX512(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                    output: UnsafeMutablePointer<Float>, geometry g: Conv2DGeometry,
                                    threads: Int, fusedClip: FusedClip?, fusedResidual: FusedResidual? = nil) {
        let icg = g.inChannels / g.group, ocg = g.outChannels / g.group
        let P = g.outHeight * g.outWidth
        let split = PointwiseSplit(outChannels: ocg, inChannels: icg, pixels: P)
        let perGroup = split.count
        let perImage = g.group * perGroup
        let body: (Int) -> Void = { task in
            let n = task / perImage, grp = (task % perImage) / perGroup, blk = task % perGroup
            let cb = blk / split.pixelBlocks, pb = blk % split.pixelBlocks
            let o0 = cb * split.channelBlock, o1 = min(ocg, o0 + split.channelBlock)
            let pixels = split.pixelRange(pb, pixels: P)
            let p0 = pixels.lowerBound, p1 = pixels.upperBound
            let yOffset = (n * g.outChannels + grp * ocg) * P
            shardcal_pointwise_avx512(input + (n * g.inChannels + grp * icg) * P, weight + grp * ocg * icg,
                                      bias.map { $0 + grp * ocg }, output + yOffset,
                                      icg, P, P, o0, o1, p0, p1,
                                      fusedClip.map { $0.output + yOffset }, fusedClip?.min ?? 0, fusedClip?.max ?? 0,
                                      fusedResidual.map { $0.addend + yOffset }, fusedResidual.map { $0.sum + yOffset })
        }
        if split.channelBlocks == 1 {
            // Pixel blocks (large planes, large outputs): each thread writes the same pixels on
            // every run (see affineTasksWithWorker). Channel blocks (7×7, 14×14 planes, small
            // outputs) are all taken from one shared counter.
            affineTasksWithWorker(g.batch * perImage, threads: threads) { task, _ in body(task) }
        } else {
            parallelTasks(g.batch * perImage, threads: threads, body)
        }
    }
    #endif
}

