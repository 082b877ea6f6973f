import CHistogramKernel

/// The hot loop behind `Histogram.accumulate`.
///
/// Values are processed in blocks small enough to stay in L1: one pass over the block's bit
/// patterns finds max|x|, the signed min/max (in total order), the zero count and whether any
/// value is non-finite; the layout is then coarsened if needed, and a second pass over the same
/// (cached) block bins the values into interleaved 32-bit sub-histograms, which are folded into
/// the 64-bit counts at the end. The result is independent of the block size, as merging is exact.
///
/// The scan and the binning run in a small C kernel (`CHistogramKernel`, vectorised with runtime
/// CPU dispatch); `Reference` below holds the same loops in plain Swift, which tests compare with.
@usableFromInline
enum HistogramAccumulator {
    static let blockSize = 4096
    /// Interleaved sub-histograms break the dependency chain when consecutive values share a bin.
    static let lanes = 4
    /// Below this many values, binning goes straight into the 64-bit counts.
    static let directThreshold = 1 << 14
    /// 16-bit lanes are flushed before any lane bin could pass 65535 (each lane takes at most a
    /// quarter of the values, plus a remainder of at most 3 per 256-value chunk).
    static let flushAfterValues = 4 * 60_000

    struct BlockStats {
        var maxMagnitudeBits: UInt32 = 0
        var minKey: Int32 = .max
        var maxKey: Int32 = .min
        var zeros: Int = 0
    }

    @usableFromInline
    static func accumulate(_ values: UnsafeBufferPointer<Float>, into histogram: inout Histogram) {
        let useLanes = values.count >= directThreshold
        let laneStride = Histogram.maxBinCount
        let sub = UnsafeMutablePointer<UInt16>.allocate(capacity: useLanes ? lanes * laneStride : 1)
        defer { sub.deallocate() }
        if useLanes { sub.initialize(repeating: 0, count: lanes * laneStride) }
        var pendingInSub = 0

        func flushSub() {
            guard useLanes, pendingInSub > 0 else { return }
            histogram.withMutableCounts { counts in
                for j in 0..<counts.count {
                    var s = UInt64(0)
                    for lane in 0..<lanes {
                        s &+= UInt64(sub[lane * laneStride + j])
                        sub[lane * laneStride + j] = 0
                    }
                    counts[j] &+= s
                }
            }
            pendingInSub = 0
        }

        var start = 0
        while start < values.count {
            let end = Swift.min(start + blockSize, values.count)
            let block = UnsafeBufferPointer(rebasing: values[start..<end])
            start = end
            var scanned = shc_scan_result()
            shc_scan_block(block.baseAddress, block.count, &scanned)
            let stats = BlockStats(maxMagnitudeBits: scanned.max_magnitude_bits, minKey: scanned.min_key,
                                   maxKey: scanned.max_key, zeros: Int(scanned.zeros))
            if stats.maxMagnitudeBits >= 0x7F80_0000 {
                flushSub()
                accumulateWithNonFinite(block, into: &histogram)
                continue
            }
            let n = UInt64(block.count)
            let minValue = Histogram.floatFromKey(stats.minKey)
            let maxValue = Histogram.floatFromKey(stats.maxKey)
            if stats.maxMagnitudeBits == 0 {
                // All zeros: bin 0 if a layout exists.
                histogram.addZerosWithoutLayout(n)
                histogram.addStatistics(valueCount: n, zeroCount: n, nan: 0, posInf: 0, negInf: 0,
                                        minimum: minValue, maximum: maxValue)
                continue
            }
            let maxAbs = Float(bitPattern: stats.maxMagnitudeBits)
            let before = histogram.binWidthLog2
            if let k = before, Histogram.requiredBinWidthLog2(forMaxAbs: maxAbs) > k { flushSub() }
            histogram.ensureLayout(forMaxAbs: maxAbs)
            let k = histogram.binWidthLog2!
            if useLanes && pendingInSub + block.count > flushAfterValues {
                flushSub()
            }
            if useLanes && k >= -126 && k <= 126 {
                shc_bin_block(block.baseAddress, block.count, Float(sign: .plus, exponent: -k, significand: 1), sub)
                pendingInSub += block.count
            } else {
                histogram.withMutableCounts { counts in binBlockDirect(block, k: k, counts: counts) }
            }
            histogram.addStatistics(valueCount: n, zeroCount: UInt64(stats.zeros), nan: 0, posInf: 0, negInf: 0,
                                    minimum: minValue, maximum: maxValue)
        }
        flushSub()
    }

    /// Bins straight into the 64-bit counts: small inputs, and layouts whose 2^-k is not a Float.
    static func binBlockDirect(_ block: UnsafeBufferPointer<Float>, k: Int, counts: UnsafeMutableBufferPointer<UInt64>) {
        if k >= -126 && k <= 126 {
            let scale = Float(sign: .plus, exponent: -k, significand: 1)
            for x in block { counts[Int(Int32(x.magnitude * scale))] &+= 1 }
        } else {
            for x in block { counts[Histogram.binIndex(ofMagnitude: x.magnitude, binWidthLog2: k)] &+= 1 }
        }
    }

    /// Plain-Swift versions of the kernels: the reference the C kernel is tested against.
    enum Reference {
        static func scanBlock(_ block: UnsafeBufferPointer<Float>) -> BlockStats {
            var stats = BlockStats()
            block.withMemoryRebound(to: UInt32.self) { bits in
                var maxMag: UInt32 = 0
                var minKey: Int32 = .max
                var maxKey: Int32 = .min
                var zeros: Int32 = 0
                for i in 0..<bits.count {
                    let b = bits[i]
                    let mag = b & 0x7FFF_FFFF
                    maxMag = mag > maxMag ? mag : maxMag
                    let signed = Int32(bitPattern: b)
                    let key = signed ^ ((signed >> 31) & 0x7FFF_FFFF)
                    minKey = key < minKey ? key : minKey
                    maxKey = key > maxKey ? key : maxKey
                    zeros &+= mag == 0 ? 1 : 0
                }
                stats.maxMagnitudeBits = maxMag
                stats.minKey = minKey
                stats.maxKey = maxKey
                stats.zeros = Int(zeros)
            }
            return stats
        }

        static func binBlockIntoLanes(_ block: UnsafeBufferPointer<Float>, k: Int,
                                      sub: UnsafeMutablePointer<UInt16>, laneStride: Int) {
            if k >= -126 && k <= 126 {
                let scale = Float(sign: .plus, exponent: -k, significand: 1)
                let n = block.count
                var i = 0
                let base = block.baseAddress!
                let l1 = sub + laneStride, l2 = sub + 2 * laneStride, l3 = sub + 3 * laneStride
                while i + 4 <= n {
                    let b0 = Int(Int32(base[i].magnitude * scale))
                    let b1 = Int(Int32(base[i + 1].magnitude * scale))
                    let b2 = Int(Int32(base[i + 2].magnitude * scale))
                    let b3 = Int(Int32(base[i + 3].magnitude * scale))
                    sub[b0] &+= 1
                    l1[b1] &+= 1
                    l2[b2] &+= 1
                    l3[b3] &+= 1
                    i += 4
                }
                while i < n {
                    sub[Int(Int32(base[i].magnitude * scale))] &+= 1
                    i += 1
                }
            } else {
                for x in block { sub[Histogram.binIndex(ofMagnitude: x.magnitude, binWidthLog2: k)] &+= 1 }
            }
        }


    }

    /// Slow path for a block holding NaN or ±Inf: classify every value.
    static func accumulateWithNonFinite(_ block: UnsafeBufferPointer<Float>, into histogram: inout Histogram) {
        var nan: UInt64 = 0, posInf: UInt64 = 0, negInf: UInt64 = 0
        var finite: UInt64 = 0, zeros: UInt64 = 0
        var maxAbs: Float = 0
        var lo: Float? = nil, hi: Float? = nil
        for x in block {
            if x.isNaN { nan += 1; continue }
            if x.isInfinite { if x > 0 { posInf += 1 } else { negInf += 1 }; continue }
            finite += 1
            if x == 0 { zeros += 1 }
            maxAbs = Swift.max(maxAbs, x.magnitude)
            lo = lo.map { Histogram.totalOrderMin($0, x) } ?? x
            hi = hi.map { Histogram.totalOrderMax($0, x) } ?? x
        }
        if maxAbs > 0 {
            histogram.ensureLayout(forMaxAbs: maxAbs)
            let k = histogram.binWidthLog2!
            histogram.withMutableCounts { counts in
                for x in block where x.isFinite {
                    counts[Histogram.binIndex(ofMagnitude: x.magnitude, binWidthLog2: k)] &+= 1
                }
            }
        } else {
            histogram.addZerosWithoutLayout(finite)
        }
        histogram.addStatistics(valueCount: finite, zeroCount: zeros, nan: nan, posInf: posInf, negInf: negInf,
                                minimum: lo, maximum: hi)
    }
}

extension Histogram {
    @inlinable
    static func floatFromKey(_ key: Int32) -> Float {
        let bits = key ^ ((key >> 31) & 0x7FFF_FFFF)
        return Float(bitPattern: UInt32(bitPattern: bits))
    }
}
