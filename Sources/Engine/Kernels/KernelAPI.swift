// Contract between the graph executor (ops) and the numeric kernels.
// Every kernel works on dense, C-ordered Float32 buffers that the caller owns.
// Kernels never allocate per call except through `KernelScratch`, and they are deterministic:
// the same inputs give bit-identical outputs for any `threads` value (parallelism splits
// independent output elements, never a reduction).
//
// Implementations live beside this file (Conv.swift, Depthwise.swift, Pool.swift, Gemm.swift); the plain
// reference kernels used as test oracles are in Reference.swift (`Kernels.Reference`).

/// Reusable scratch memory (im2col buffers etc.), owned by one executor; not shared across threads.
public final class KernelScratch: @unchecked Sendable {
    public private(set) var buffer: UnsafeMutablePointer<Float>
    public private(set) var capacity: Int
    public init() { capacity = 0; buffer = allocateFloats(1) }
    deinit { buffer.deallocate() }
    /// Returns a buffer of at least `count` floats (contents undefined).
    public func reserve(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > capacity {
            buffer.deallocate()
            buffer = allocateFloats(count)
            capacity = count
        }
        return buffer
    }
}

/// `count` floats at a 64-byte (cache-line) boundary, uninitialised; free with `deallocate()`.
/// malloc guarantees 16-byte alignment only (glibc's large blocks sit 16 bytes past a page
/// boundary): activation, weight and scratch buffers start on a cache line instead, so the
/// kernels' 64-byte vector loads at 64-byte multiples from them never span two lines.
func allocateFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: 64)
        .bindMemory(to: Float.self, capacity: max(count, 1))
}

/// 2-D convolution geometry (NCHW input, OIHW weight with I = inChannels / group).
public struct Conv2DGeometry: Sendable, Equatable {
    public var batch: Int, inChannels: Int, inHeight: Int, inWidth: Int
    public var outChannels: Int, kernelHeight: Int, kernelWidth: Int
    public var strideH: Int, strideW: Int, dilationH: Int, dilationW: Int
    public var padTop: Int, padLeft: Int, padBottom: Int, padRight: Int
    public var group: Int
    public init(batch: Int, inChannels: Int, inHeight: Int, inWidth: Int, outChannels: Int,
                kernelHeight: Int, kernelWidth: Int, strideH: Int = 1, strideW: Int = 1,
                dilationH: Int = 1, dilationW: Int = 1, padTop: Int = 0, padLeft: Int = 0,
                padBottom: Int = 0, padRight: Int = 0, group: Int = 1) {
        self.batch = batch; self.inChannels = inChannels; self.inHeight = inHeight; self.inWidth = inWidth
        self.outChannels = outChannels; self.kernelHeight = kernelHeight; self.kernelWidth = kernelWidth
        self.strideH = strideH; self.strideW = strideW; self.dilationH = dilationH; self.dilationW = dilationW
        self.padTop = padTop; self.padLeft = padLeft; self.padBottom = padBottom; self.padRight = padRight
        self.group = group
    }
    public var outHeight: Int { (inHeight + padTop + padBottom - dilationH * (kernelHeight - 1) - 1) / strideH + 1 }
    public var outWidth: Int { (inWidth + padLeft + padRight - dilationW * (kernelWidth - 1) - 1) / strideW + 1 }
    /// One input channel per output channel (the depthwise kernels).
    var isDepthwise: Bool { group == inChannels && outChannels == inChannels && group > 1 }
    /// 1×1, stride 1, unpadded: a plain product per group.
    var isPointwise: Bool {
        kernelHeight == 1 && kernelWidth == 1 && strideH == 1 && strideW == 1
            && padTop == 0 && padLeft == 0 && padBottom == 0 && padRight == 0
    }
}

/// Pooling geometry (NCHW). Output size is computed by the caller (ceil_mode etc.) and passed in.
public struct Pool2DGeometry: Sendable, Equatable {
    public var batch: Int, channels: Int, inHeight: Int, inWidth: Int
    public var outHeight: Int, outWidth: Int
    public var kernelHeight: Int, kernelWidth: Int
    public var strideH: Int, strideW: Int, dilationH: Int, dilationW: Int
    public var padTop: Int, padLeft: Int, padBottom: Int, padRight: Int
    public init(batch: Int, channels: Int, inHeight: Int, inWidth: Int, outHeight: Int, outWidth: Int,
                kernelHeight: Int, kernelWidth: Int, strideH: Int, strideW: Int,
                dilationH: Int = 1, dilationW: Int = 1,
                padTop: Int, padLeft: Int, padBottom: Int, padRight: Int) {
        self.batch = batch; self.channels = channels; self.inHeight = inHeight; self.inWidth = inWidth
        self.outHeight = outHeight; self.outWidth = outWidth
        self.kernelHeight = kernelHeight; self.kernelWidth = kernelWidth
        self.strideH = strideH; self.strideW = strideW; self.dilationH = dilationH; self.dilationW = dilationW
        self.padTop = padTop; self.padLeft = padLeft; self.padBottom = padBottom; self.padRight = padRight
    }
}

/// A Clip (or Relu: min 0, max +inf) fused into a kernel: `output` (same shape as the kernel's
/// output) receives `x < min ? min : (x > max ? max : x)` of every output value, block by block
/// while it is in cache. `output` may be the kernel's own output: then it is clipped in place (use
/// that when nothing needs the unclipped values, e.g. no tap observes them).
public struct FusedClip {
    public var output: UnsafeMutablePointer<Float>
    public var min: Float
    public var max: Float
    public init(output: UnsafeMutablePointer<Float>, min: Float, max: Float) {
        self.output = output; self.min = min; self.max = max
    }
}

/// A residual Add fused into a kernel: `sum` (same shape as the kernel's output) receives
/// `output + addend` element by element (one rounded addition, as the Add kernel computes it),
/// written while each output block is still in registers. `sum` may be the kernel's own output
/// (then only the sums are stored) or `addend` itself; it must not be an input the kernel reads.
public struct FusedResidual {
    public var addend: UnsafePointer<Float>
    public var sum: UnsafeMutablePointer<Float>
    public init(addend: UnsafePointer<Float>, sum: UnsafeMutablePointer<Float>) {
        self.addend = addend; self.sum = sum
    }
}

public enum Kernels {
    /// Y = conv(X, W) + B. Handles groups, depthwise, dilation, stride, asymmetric pads.
    /// With `fusedClip`, also writes clip(Y) (a following Clip/Relu) into `fusedClip.output` block by
    /// block while Y is still in cache; Y itself is still written (so it can be tapped) unless
    /// `fusedClip.output == output` (clip in place). With `fusedResidual` (not together with
    /// `fusedClip`), also writes Y + addend: in the store of the AVX-512 pointwise kernel, as a pass
    /// after the convolution on every other path.
    public static func conv2d(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                              output: UnsafeMutablePointer<Float>, geometry: Conv2DGeometry,
                              scratch: KernelScratch, threads: Int, fusedClip: FusedClip? = nil,
                              fusedResidual: FusedResidual? = nil) {
        conv2dImpl(input: input, weight: weight, bias: bias, output: output, geometry: geometry, scratch: scratch,
                   threads: threads, fusedClip: fusedClip, fusedResidual: fusedResidual)
    }

    /// ConvTranspose 2-D. Weight layout (C_in, C_out/group, kH, kW). Output dims given in geometry's
    /// "in"/"out" sense swapped: `geometry` describes the *forward* conv that maps output -> input.
    public static func convTranspose2d(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                       output: UnsafeMutablePointer<Float>, forwardGeometry: Conv2DGeometry,
                                       scratch: KernelScratch, threads: Int) {
        convTranspose2dImpl(input: input, weight: weight, bias: bias, output: output, forwardGeometry: forwardGeometry,
                            scratch: scratch, threads: threads)
    }

    /// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major, as cblas_sgemm.
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                            a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int) {
        gemmImpl(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                 beta: beta, c: c, ldc: ldc, threads: threads)
    }

    public static func maxPool2d(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                 geometry: Pool2DGeometry, threads: Int) {
        maxPool2dImpl(input: input, output: output, geometry: geometry, threads: threads)
    }

    /// countIncludePad: divide by the number of taps inside the padded input (window clipped to
    /// input + pads, as ONNX Runtime does with ceil_mode) instead of the number of taps inside the input.
    public static func averagePool2d(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                     geometry: Pool2DGeometry, countIncludePad: Bool, threads: Int) {
        averagePool2dImpl(input: input, output: output, geometry: geometry, countIncludePad: countIncludePad, threads: threads)
    }

    /// Mean (or max) over H·W per (n, c): output has batch·channels values.
    public static func globalPool2d(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                    batch: Int, channels: Int, spatial: Int, isMax: Bool, threads: Int) {
        globalPool2dImpl(input: input, output: output, batch: batch, channels: channels, spatial: spatial, isMax: isMax, threads: threads)
    }
}
