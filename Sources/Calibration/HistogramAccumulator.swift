import CHistogramKernel

/// The hot loop behind `Histogram.accumulate`.
///
/// Once a layout exists, one C call (`shc_scan_bin_run`) reads a long run of values once, block
/// by block: it finds max|x|, the signed min/max (in total order), the zero count and whether any
/// value is non-finite, computes the bin of every non-zero value with the current layout, and
/// scatters those of each block that fits the layout (all finite, max|x| below 4096 bins) into
/// interleaved 16-bit sub-histograms, which are folded into the 64-bit counts now and then. Zeros
/// (often a large share of activations) are not scattered: the scan counts them, and they go
/// straight to bin 0. The run stops before a block that does not fit (no layout yet, a coarser
/// layout needed, NaN/Inf); that block takes the slower path: layout change, then a separate
/// binning pass. The result is independent of the block size, as merging is exact.
///
/// `Reference` below holds the same loops in plain Swift, which tests compare the C kernel with.
@usableFromInline
enum HistogramAccumulator {
    static let blockSize = Int(SHC_BLOCK)
    /// Interleaved sub-histograms break the dependency chain when consecutive values share a bin.
    static let lanes = Int(SHC_LANES)
    static let laneStride = Int(SHC_LANE_STRIDE)
    /// Below this many values, binning goes straight into the 64-bit counts.
    static let directThreshold = 1 << 14
    /// 16-bit lanes are flushed before any lane bin could pass 65535: each lane takes at most a
    /// quarter of each block's values, rounded up, so at most 60_000 + 118 here.
    static let flushAfterValues = 4 * 60_000

    struct BlockStats {
        var maxMagnitudeBits: UInt32 = 0
        var minKey: Int32 = .max
        var maxKey: Int32 = .min
        var zeros: Int = 0
    }

    /// Float bits of 4096·2^k, the first magnitude outside layout k (+inf's bits when 4096·2^k
    /// is not a finite Float: then every finite value fits).
    @inline(__always)
    static func limitBits(binWidthLog2 k: Int) -> UInt32 {
        let e = k + 12
        return e <= 127 ? UInt32(e + 127) << 23 : 0x7F80_0000
    }

    @usableFromInline
    static func accumulate(_ values: UnsafeBufferPointer<Float>, into histogram: inout Histogram) {
        let useLanes = values.count >= directThreshold
        let sub = UnsafeMutablePointer<UInt16>.allocate(capacity: useLanes ? lanes * laneStride : 1)
        defer { sub.deallocate() }
        if useLanes { sub.initialize(repeating: 0, count: lanes * laneStride) }
        var pendingInSub = 0

        func flushSub() {
            guard useLanes, pendingInSub > 0 else { return }
            histogram.withMutableCounts { counts in shc_flush_lanes(sub, counts.count, counts.baseAddress) }
            pendingInSub = 0
        }

        var start = 0
        while start < values.count {
            if useLanes, let k = histogram.binWidthLog2, k >= -126 && k <= 126 {
                // Fast path: the layout exists and 2^-k is a Float. Runs of whole blocks, as long
                // as the lanes can take without a flush.
                if flushAfterValues - pendingInSub < blockSize { flushSub() }
                let room = (flushAfterValues - pendingInSub) / blockSize * blockSize
                let length = Swift.min(values.count - start, room)
                var scanned = shc_scan_result()
                let binned = shc_scan_bin_run(values.baseAddress! + start, length,
                                              Float(sign: .plus, exponent: -k, significand: 1),
                                              limitBits(binWidthLog2: k), sub, &scanned)
                if binned > 0 {
                    start += binned
                    pendingInSub += binned
                    if scanned.max_magnitude_bits > 0 {
                        // Same k (every value is below 4096·2^k); the last bins may be new.
                        histogram.ensureLayout(forMaxAbs: Float(bitPattern: scanned.max_magnitude_bits))
                    }
                    histogram.addZerosToBinZero(UInt64(scanned.zeros))
                    histogram.addStatistics(valueCount: UInt64(binned), zeroCount: UInt64(scanned.zeros),
                                            nan: 0, posInf: 0, negInf: 0,
                                            minimum: Histogram.floatFromKey(scanned.min_key),
                                            maximum: Histogram.floatFromKey(scanned.max_key))
                    continue
                }
            }
            // One block the run could not take.
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
                histogram.addZerosToBinZero(UInt64(stats.zeros))
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

        /// Bins every non-zero value of the block into the lanes, in turn (zeros are left out, as
        /// the C kernel does: the caller counts them into bin 0).
        static func binBlockIntoLanes(_ block: UnsafeBufferPointer<Float>, k: Int,
                                      sub: UnsafeMutablePointer<UInt16>, laneStride: Int) {
            var lane = 0
            for x in block where x != 0 {
                sub[lane * laneStride + Histogram.binIndex(ofMagnitude: x.magnitude, binWidthLog2: k)] &+= 1
                lane = (lane + 1) % 4
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
