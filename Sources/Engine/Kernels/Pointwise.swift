// Pointwise (1×1, stride 1, unpadded) convolution with the AVX-512 C kernel
// (Sources/CConvKernels): Y[n, o, p] = B[o] + Σ_i W[o, i] · X[n, i, p], one register tile of
// 6 output channels × 64 pixels at a time, bias as the accumulator's start and an optional clip
// applied before the single store, or an optional residual addend added in it (a fused Add). Used instead of sgemm on CPUs with AVX-512.
//
// Each output element is computed by the same sequence of FMAs whatever the cut into tasks, so
// tasks are chosen freely for load balance (from the per-image shape; results do not depend on
// them, nor on the thread count or batch size).

import CConvKernels

/// How one image's pointwise product is cut into tasks: pixel blocks of whole 64-pixel tiles,
/// times output-channel blocks of whole 6-row tiles.
struct PointwiseSplit: Equatable {
    var pixelBlock: Int, pixelBlocks: Int
    var channelBlock: Int, channelBlocks: Int
    var count: Int { pixelBlocks * channelBlocks }

    /// Tasks of about 2^20 multiply-adds or more (≈ 10 µs on one core), at most 32 per image.
    init(outChannels oc: Int, inChannels ic: Int, pixels P: Int) {
        let tile = 64, rows = 6
        let want = min(32, max(1, (oc * ic * P) >> 20))
        let tiles = (P + tile - 1) / tile
        let rowTiles = (oc + rows - 1) / rows
        let pb = min(tiles, want)
        let cb = min(rowTiles, max(1, (want + pb - 1) / pb))
        pixelBlock = (tiles + pb - 1) / pb * tile
        pixelBlocks = (P + pixelBlock - 1) / pixelBlock
        channelBlock = (rowTiles + cb - 1) / cb * rows
        channelBlocks = (oc + channelBlock - 1) / channelBlock
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
        parallelTasks(g.batch * perImage, threads: threads) { task in
            let n = task / perImage, grp = (task % perImage) / perGroup, blk = task % perGroup
            let cb = blk / split.pixelBlocks, pb = blk % split.pixelBlocks
            let o0 = cb * split.channelBlock, o1 = min(ocg, o0 + split.channelBlock)
            let p0 = pb * split.pixelBlock, p1 = min(P, p0 + split.pixelBlock)
            let yOffset = (n * g.outChannels + grp * ocg) * P
            shardcal_pointwise_avx512(input + (n * g.inChannels + grp * icg) * P, weight + grp * ocg * icg,
                                      bias.map { $0 + grp * ocg }, output + yOffset,
                                      icg, P, P, o0, o1, p0, p1,
                                      fusedClip.map { $0.output + yOffset }, fusedClip?.min ?? 0, fusedClip?.max ?? 0,
                                      fusedResidual.map { $0.addend + yOffset }, fusedResidual.map { $0.sum + yOffset })
        }
    }
    #endif
}
