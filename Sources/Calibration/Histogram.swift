/// An exactly mergeable histogram of |x| for one tensor.
///
/// Layout: bin `j` covers `[j·2^k, (j+1)·2^k)`, where `k` is the smallest integer with
/// `maxAbs < 4096·2^k`. The bin count is `floor(maxAbs / 2^k) + 1`, so it always lies in
/// `2049...4096` once any non-zero value has been seen: at least 2048 bins always span the data.
///
/// Because `k` depends only on the largest |x| seen, and coarsening from `k` to `k+1` sums
/// adjacent bins (the edges align), the histogram of a data set does not depend on how the data
/// was split or ordered: merging the histograms of any partition equals, bit for bit, the
/// histogram of all the data built at once.
///
/// Non-finite values (NaN, +Inf, -Inf) are counted separately and excluded from the bins, the
/// value count, the minimum and the maximum. Exact zeros go to bin 0 and are also counted apart.
public struct Histogram: Sendable, Equatable, Hashable {
    /// Largest number of bins a histogram holds.
    public static let maxBinCount = 4096
    /// Smallest exponent a non-empty layout can have (max|x| = 2^-149, the smallest subnormal).
    public static let minBinWidthLog2 = -160

    /// `k` of the bin width `2^k`; `nil` while every value seen was zero (no layout yet).
    public private(set) var binWidthLog2: Int?
    /// Bin counts; empty while there is no layout. The last bin is never empty.
    public private(set) var counts: [UInt64]
    /// Finite values seen (zeros included).
    public private(set) var valueCount: UInt64
    /// Exact zeros seen (+0 and -0).
    public private(set) var zeroCount: UInt64
    public private(set) var nanCount: UInt64
    public private(set) var positiveInfinityCount: UInt64
    public private(set) var negativeInfinityCount: UInt64
    /// Smallest finite value (total order: -0 sorts below +0); `nil` when no finite value was seen.
    public private(set) var minimum: Float?
    /// Largest finite value (total order); `nil` when no finite value was seen.
    public private(set) var maximum: Float?

    public init() {
        binWidthLog2 = nil
        counts = []
        valueCount = 0
        zeroCount = 0
        nanCount = 0
        positiveInfinityCount = 0
        negativeInfinityCount = 0
        minimum = nil
        maximum = nil
    }

    /// Builds a histogram from all its parts; used by the decoder. Checks every invariant.
    public init(binWidthLog2: Int?, counts: [UInt64], valueCount: UInt64, zeroCount: UInt64,
                nanCount: UInt64, positiveInfinityCount: UInt64, negativeInfinityCount: UInt64,
                minimum: Float?, maximum: Float?) throws(HistogramError) {
        self.binWidthLog2 = binWidthLog2
        self.counts = counts
        self.valueCount = valueCount
        self.zeroCount = zeroCount
        self.nanCount = nanCount
        self.positiveInfinityCount = positiveInfinityCount
        self.negativeInfinityCount = negativeInfinityCount
        self.minimum = minimum
        self.maximum = maximum
        try validate()
    }

    /// Bin width `2^k` as a Double (exact); `nil` without a layout.
    public var binWidth: Double? { binWidthLog2.map { Double(sign: .plus, exponent: $0, significand: 1) } }

    /// Largest finite |x| seen (0 when none).
    public var maxAbs: Float {
        guard let lo = minimum, let hi = maximum else { return 0 }
        return Swift.max(lo.magnitude, hi.magnitude)
    }

    /// Every value seen, non-finite included.
    public var totalCount: UInt64 { valueCount + nanCount + positiveInfinityCount + negativeInfinityCount }

    public var nonFiniteCount: UInt64 { nanCount + positiveInfinityCount + negativeInfinityCount }

    /// True when no value at all was seen.
    public var isEmpty: Bool { totalCount == 0 }

    // MARK: - Layout arithmetic

    /// The `k` for a given max|x| (> 0): smallest integer with `maxAbs < 4096·2^k`.
    @inlinable
    public static func requiredBinWidthLog2(forMaxAbs maxAbs: Float) -> Int {
        precondition(maxAbs > 0 && maxAbs.isFinite)
        // maxAbs = s·2^e with s in [1, 2) (for subnormals, exponent is still the value's binade).
        // maxAbs < 4096·2^k  <=>  k > log2(maxAbs) - 12  <=>  k = exponent - 11.
        return Int(maxAbs.exponent) - 11
    }

    /// Bin index of a finite |x| for layout `k`: `floor(|x| · 2^-k)`, exact for every finite Float.
    @inlinable
    public static func binIndex(ofMagnitude magnitude: Float, binWidthLog2 k: Int) -> Int {
        // Scaling by a power of two is exact unless the result is subnormal, in which case it is
        // below 1 and its floor (0) is still right. 2^-k must itself be representable, which
        // holds for k in -126...126; outside that range go through Double (every Float is a
        // normal Double, and powers of two down to 2^-1074 are representable).
        if k >= -126 && k <= 126 {
            return Int(magnitude * Float(sign: .plus, exponent: -k, significand: 1))
        }
        return Int(Double(magnitude) * Double(sign: .plus, exponent: -k, significand: 1))
    }

    // MARK: - Accumulation

    /// Adds every value of `values` to the histogram.
    public mutating func accumulate(_ values: UnsafeBufferPointer<Float>) {
        guard !values.isEmpty else { return }
        HistogramAccumulator.accumulate(values, into: &self)
    }

    /// Convenience for arrays.
    public mutating func accumulate(_ values: [Float]) {
        values.withUnsafeBufferPointer { accumulate($0) }
    }

    // Internal mutation points for the accumulator (kept here so invariants stay in one file).

    /// Makes sure the layout can hold a value of magnitude `maxAbs` (> 0), coarsening if needed.
    @usableFromInline
    mutating func ensureLayout(forMaxAbs maxAbs: Float) {
        let needed = Histogram.requiredBinWidthLog2(forMaxAbs: maxAbs)
        let neededBins = Histogram.binIndex(ofMagnitude: maxAbs, binWidthLog2: needed) + 1
        guard let k = binWidthLog2 else {
            // First non-zero value: every value seen so far was zero and belongs in bin 0.
            binWidthLog2 = needed
            counts = [UInt64](repeating: 0, count: neededBins)
            counts[0] = valueCount
            return
        }
        if needed > k {
            coarsen(to: needed)
        }
        let k2 = binWidthLog2!
        let bins = Histogram.binIndex(ofMagnitude: maxAbs, binWidthLog2: k2) + 1
        if bins > counts.count {
            counts.append(contentsOf: repeatElement(0, count: bins - counts.count))
        }
    }

    /// Re-bins to the coarser layout `newK` (> current k) by summing adjacent bins.
    @usableFromInline
    mutating func coarsen(to newK: Int) {
        guard let k = binWidthLog2, newK > k else { return }
        let shift = newK - k
        if shift >= 64 || counts.count <= (1 << Swift.min(shift, 62)) {
            // Everything collapses into bin 0.
            let total = counts.reduce(0, &+)
            counts = [total]
        } else {
            let newCount = ((counts.count - 1) >> shift) + 1
            var merged = [UInt64](repeating: 0, count: newCount)
            counts.withUnsafeBufferPointer { src in
                merged.withUnsafeMutableBufferPointer { dst in
                    for j in 0..<src.count { dst[j >> shift] &+= src[j] }
                }
            }
            counts = merged
        }
        binWidthLog2 = newK
    }

    @usableFromInline
    mutating func withMutableCounts<R>(_ body: (UnsafeMutableBufferPointer<UInt64>) -> R) -> R {
        counts.withUnsafeMutableBufferPointer { body($0) }
    }

    @usableFromInline
    mutating func addStatistics(valueCount: UInt64, zeroCount: UInt64, nan: UInt64, posInf: UInt64,
                                negInf: UInt64, minimum: Float?, maximum: Float?) {
        self.valueCount &+= valueCount
        self.zeroCount &+= zeroCount
        self.nanCount &+= nan
        self.positiveInfinityCount &+= posInf
        self.negativeInfinityCount &+= negInf
        if let lo = minimum { self.minimum = self.minimum.map { Histogram.totalOrderMin($0, lo) } ?? lo }
        if let hi = maximum { self.maximum = self.maximum.map { Histogram.totalOrderMax($0, hi) } ?? hi }
    }

    /// Adds `count` zeros to bin 0 (a layout exists).
    @usableFromInline
    mutating func addZerosToBinZero(_ count: UInt64) {
        if count > 0 { counts[0] &+= count }
    }

    /// Adds `count` zeros seen while there is no layout (all values so far are zero).
    @usableFromInline
    mutating func addZerosWithoutLayout(_ count: UInt64) {
        if binWidthLog2 != nil { counts[0] &+= count }
    }

    // MARK: - Merge

    /// Adds `other` into this histogram. Associative and commutative; exact.
    public mutating func merge(_ other: Histogram) {
        if let otherK = other.binWidthLog2 {
            // Bring self to a layout that can hold other's max, then fold other's bins in.
            ensureLayout(forMaxAbs: other.maxAbs)
            let k = binWidthLog2!
            var source = other
            if otherK < k { source.coarsen(to: k) }
            // source.k == k now (self's k >= other's k after ensureLayout).
            if source.counts.count > counts.count {
                counts.append(contentsOf: repeatElement(0, count: source.counts.count - counts.count))
            }
            counts.withUnsafeMutableBufferPointer { dst in
                source.counts.withUnsafeBufferPointer { src in
                    for j in 0..<src.count { dst[j] &+= src[j] }
                }
            }
        } else if other.valueCount > 0, binWidthLog2 != nil {
            // Other holds only zeros.
            counts[0] &+= other.valueCount
        }
        addStatistics(valueCount: other.valueCount, zeroCount: other.zeroCount, nan: other.nanCount,
                      posInf: other.positiveInfinityCount, negInf: other.negativeInfinityCount,
                      minimum: other.minimum, maximum: other.maximum)
    }

    /// Everything but the counts, for undoing a merge (`restoreScalars`).
    struct Scalars {
        var valueCount, zeroCount, nanCount, positiveInfinityCount, negativeInfinityCount: UInt64
        var minimum, maximum: Float?
    }

    var scalars: Scalars {
        Scalars(valueCount: valueCount, zeroCount: zeroCount, nanCount: nanCount,
                positiveInfinityCount: positiveInfinityCount, negativeInfinityCount: negativeInfinityCount,
                minimum: minimum, maximum: maximum)
    }

    mutating func restoreScalars(_ s: Scalars) {
        valueCount = s.valueCount
        zeroCount = s.zeroCount
        nanCount = s.nanCount
        positiveInfinityCount = s.positiveInfinityCount
        negativeInfinityCount = s.negativeInfinityCount
        minimum = s.minimum
        maximum = s.maximum
    }

    /// Whether adding `count` more values, zeros, NaNs, +Inf and -Inf would exceed UInt64.
    func statisticsOverflow(valueCount v: UInt64, zeroCount z: UInt64, nan: UInt64, posInf: UInt64, negInf: UInt64) -> String? {
        if valueCount.addingReportingOverflow(v).overflow { return "value count \(valueCount) + \(v) overflows UInt64" }
        if zeroCount.addingReportingOverflow(z).overflow { return "zero count \(zeroCount) + \(z) overflows UInt64" }
        if nanCount.addingReportingOverflow(nan).overflow { return "NaN count \(nanCount) + \(nan) overflows UInt64" }
        if positiveInfinityCount.addingReportingOverflow(posInf).overflow { return "+Inf count \(positiveInfinityCount) + \(posInf) overflows UInt64" }
        if negativeInfinityCount.addingReportingOverflow(negInf).overflow { return "-Inf count \(negativeInfinityCount) + \(negInf) overflows UInt64" }
        return nil
    }

    /// The merge of two histograms.
    public func merged(with other: Histogram) -> Histogram {
        var copy = self
        copy.merge(other)
        return copy
    }

    // MARK: - Total order on Float (-0 < +0), so min/max do not depend on the order of values.

    @inlinable
    static func orderKey(_ x: Float) -> Int32 {
        let bits = Int32(bitPattern: x.bitPattern)
        return bits ^ ((bits >> 31) & 0x7FFF_FFFF)
    }

    @inlinable
    static func totalOrderMin(_ a: Float, _ b: Float) -> Float { orderKey(b) < orderKey(a) ? b : a }

    @inlinable
    static func totalOrderMax(_ a: Float, _ b: Float) -> Float { orderKey(b) > orderKey(a) ? b : a }

    // MARK: - Invariants

    /// Checks every structural invariant; decoders call it so a damaged file cannot produce an
    /// inconsistent histogram.
    public func validate() throws(HistogramError) {
        try Histogram.validateParts(binWidthLog2: binWidthLog2, binCount: counts.count,
                                    binTotal: counts.reduce(UInt64(0)) { $0 &+ $1 }, lastBin: counts.last,
                                    valueCount: valueCount, zeroCount: zeroCount, minimum: minimum, maximum: maximum)
    }

    /// The invariants of `validate()`, from a histogram's parts: `binCount` bins summing to
    /// `binTotal` (mod 2^64), the last of them `lastBin`. Lets encoded histograms be validated in
    /// place, without building their count arrays.
    static func validateParts(binWidthLog2: Int?, binCount: Int, binTotal: UInt64, lastBin: UInt64?,
                              valueCount: UInt64, zeroCount: UInt64, minimum: Float?, maximum: Float?) throws(HistogramError) {
        if zeroCount > valueCount { throw .invalid("zero count \(zeroCount) exceeds value count \(valueCount)") }
        if (minimum == nil) != (maximum == nil) { throw .invalid("minimum and maximum must both be present or absent") }
        var maxAbs: Float = 0
        if let lo = minimum, let hi = maximum {
            if !lo.isFinite || !hi.isFinite { throw .invalid("minimum/maximum must be finite") }
            if Histogram.orderKey(lo) > Histogram.orderKey(hi) { throw .invalid("minimum \(lo) exceeds maximum \(hi)") }
            if valueCount == 0 { throw .invalid("minimum/maximum present but no values counted") }
            maxAbs = Swift.max(lo.magnitude, hi.magnitude)
        } else if valueCount != 0 {
            throw .invalid("values counted but no minimum/maximum")
        }
        guard let k = binWidthLog2 else {
            if binCount != 0 { throw .invalid("bins present without a bin width") }
            if valueCount != zeroCount { throw .invalid("non-zero values counted without a bin layout") }
            return
        }
        if k < Histogram.minBinWidthLog2 || k > 128 { throw .invalid("bin width exponent \(k) out of range") }
        if binCount == 0 || binCount > Histogram.maxBinCount {
            throw .invalid("bin count \(binCount) outside 1...\(Histogram.maxBinCount)")
        }
        if binTotal != valueCount { throw .invalid("bins sum to \(binTotal) but \(valueCount) values are counted") }
        if maxAbs > 0 {
            if Histogram.requiredBinWidthLog2(forMaxAbs: maxAbs) != k {
                throw .invalid("bin width 2^\(k) does not match max|x| \(maxAbs)")
            }
            if Histogram.binIndex(ofMagnitude: maxAbs, binWidthLog2: k) + 1 != binCount {
                throw .invalid("bin count \(binCount) does not match max|x| \(maxAbs)")
            }
        } else {
            throw .invalid("a bin layout exists but max|x| is 0")
        }
        if lastBin == 0 { throw .invalid("last bin is empty") }
    }
}

public enum HistogramError: Error, Equatable, CustomStringConvertible {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let why): return "invalid histogram: \(why)"
        }
    }
}
