import Engine

/// Deterministic SplitMix64 generator for reproducible random test data.
struct KernelTestRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
    mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
    mutating func floats(_ n: Int) -> [Float] { (0..<n).map { _ in float() } }
}

/// Largest |a - b| over two equal-length arrays.
func kernelMaxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var m: Float = 0
    for i in 0..<a.count { m = max(m, abs(a[i] - b[i])) }
    return m
}

/// Runs the optimised conv2d on arrays.
func kernelConv(_ x: [Float], _ w: [Float], _ b: [Float]?, _ g: Conv2DGeometry, threads: Int = 1,
                scratch: KernelScratch = KernelScratch()) -> [Float] {
    var y = [Float](repeating: .nan, count: g.batch * g.outChannels * g.outHeight * g.outWidth)
    x.withUnsafeBufferPointer { xp in
        w.withUnsafeBufferPointer { wp in
            y.withUnsafeMutableBufferPointer { yp in
                if let b {
                    b.withUnsafeBufferPointer { bp in
                        Kernels.conv2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: bp.baseAddress!,
                                       output: yp.baseAddress!, geometry: g, scratch: scratch, threads: threads)
                    }
                } else {
                    Kernels.conv2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: nil,
                                   output: yp.baseAddress!, geometry: g, scratch: scratch, threads: threads)
                }
            }
        }
    }
    return y
}

func referenceConv(_ x: [Float], _ w: [Float], _ b: [Float]?, _ g: Conv2DGeometry) -> [Float] {
    var y = [Float](repeating: .nan, count: g.batch * g.outChannels * g.outHeight * g.outWidth)
    x.withUnsafeBufferPointer { xp in
        w.withUnsafeBufferPointer { wp in
            y.withUnsafeMutableBufferPointer { yp in
                if let b {
                    b.withUnsafeBufferPointer { bp in
                        Kernels.Reference.conv2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: bp.baseAddress!,
                                                 output: yp.baseAddress!, geometry: g)
                    }
                } else {
                    Kernels.Reference.conv2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: nil,
                                             output: yp.baseAddress!, geometry: g)
                }
            }
        }
    }
    return y
}

func kernelConvTranspose(_ x: [Float], _ w: [Float], _ b: [Float]?, _ fg: Conv2DGeometry, threads: Int = 1,
                         reference: Bool = false) -> [Float] {
    var y = [Float](repeating: .nan, count: fg.batch * fg.inChannels * fg.inHeight * fg.inWidth)
    let scratch = KernelScratch()
    let bias = b ?? []
    x.withUnsafeBufferPointer { xp in
        w.withUnsafeBufferPointer { wp in
            bias.withUnsafeBufferPointer { bp in
                y.withUnsafeMutableBufferPointer { yp in
                    let bptr = b == nil ? nil : bp.baseAddress
                    if reference {
                        Kernels.Reference.convTranspose2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: bptr,
                                                          output: yp.baseAddress!, forwardGeometry: fg)
                    } else {
                        Kernels.convTranspose2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: bptr,
                                                output: yp.baseAddress!, forwardGeometry: fg, scratch: scratch, threads: threads)
                    }
                }
            }
        }
    }
    return y
}

enum PoolKind { case max, avg(countIncludePad: Bool) }

func kernelPool(_ x: [Float], _ g: Pool2DGeometry, _ kind: PoolKind, threads: Int = 1, reference: Bool = false) -> [Float] {
    var y = [Float](repeating: .nan, count: g.batch * g.channels * g.outHeight * g.outWidth)
    x.withUnsafeBufferPointer { xp in
        y.withUnsafeMutableBufferPointer { yp in
            switch (kind, reference) {
            case (.max, false): Kernels.maxPool2d(input: xp.baseAddress!, output: yp.baseAddress!, geometry: g, threads: threads)
            case (.max, true): Kernels.Reference.maxPool2d(input: xp.baseAddress!, output: yp.baseAddress!, geometry: g)
            case (.avg(let cip), false):
                Kernels.averagePool2d(input: xp.baseAddress!, output: yp.baseAddress!, geometry: g, countIncludePad: cip, threads: threads)
            case (.avg(let cip), true):
                Kernels.Reference.averagePool2d(input: xp.baseAddress!, output: yp.baseAddress!, geometry: g, countIncludePad: cip)
            }
        }
    }
    return y
}

func depthwiseConv(_ x: [Float], _ w: [Float], _ b: [Float]?, _ g: Conv2DGeometry, isa: Kernels.VectorISA, threads: Int,
                   scratch: KernelScratch) -> [Float] {
    var y = [Float](repeating: .nan, count: g.batch * g.outChannels * g.outHeight * g.outWidth)
    let bias = b ?? []
    x.withUnsafeBufferPointer { xp in
        w.withUnsafeBufferPointer { wp in
            bias.withUnsafeBufferPointer { bp in
                y.withUnsafeMutableBufferPointer { yp in
                    Kernels.depthwiseConv2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: b == nil ? nil : bp.baseAddress,
                                            output: yp.baseAddress!, geometry: g, scratch: scratch, threads: threads, isa: isa)
                }
            }
        }
    }
    return y
}
