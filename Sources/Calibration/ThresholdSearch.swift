import CHistogramKernel
import Foundation

/// How the clipping threshold (amax) of a tensor is chosen from its |x| histogram.
public enum CalibrationMethod: Sendable, Hashable, CustomStringConvertible {
    /// TensorRT EntropyCalibrator2 semantics: minimise KL(P‖Q) over thresholds (saturating).
    case entropy
    /// Smallest threshold below which `percentile` % of the values lie (default 99.99).
    case percentile(Double)
    /// Minimise the mean squared quantisation error of the bin centres.
    case mse
    /// The largest |x| seen (no clipping).
    case max

    public static let defaultPercentile = 99.99

    public var description: String {
        switch self {
        case .entropy: return "entropy"
        case .percentile(let p): return "percentile(\(p))"
        case .mse: return "mse"
        case .max: return "max"
        }
    }

    /// The name used in caches and tables: entropy, percentile, mse, max.
    public var name: String {
        switch self {
        case .entropy: return "entropy"
        case .percentile: return "percentile"
        case .mse: return "mse"
        case .max: return "max"
        }
    }

    /// Parses `entropy`, `mse`, `max`, `percentile` or `percentile:99.9`.
    public init?(parsing text: String, percentile: Double? = nil) {
        let lower = text.lowercased()
        switch lower {
        case "entropy", "kl": self = .entropy
        case "mse": self = .mse
        case "max", "minmax": self = .max
        case "percentile": self = .percentile(percentile ?? CalibrationMethod.defaultPercentile)
        default:
            if lower.hasPrefix("percentile:"), let p = Double(lower.dropFirst("percentile:".count)), p > 0, p <= 100 {
                self = .percentile(p)
            } else {
                return nil
            }
        }
    }
}

/// The threshold found for one histogram.
public struct ThresholdResult: Sendable, Equatable {
    /// Number of bins kept (entropy), or the bin whose edge/centre gives amax (percentile, mse).
    public var bin: Int
    /// The threshold.
    public var amax: Double
    /// KL divergence (entropy) or mean squared error (mse) at the optimum; nil for other methods.
    public var divergence: Double?

    public init(bin: Int, amax: Double, divergence: Double?) {
        self.bin = bin
        self.amax = amax
        self.divergence = divergence
    }
}

/// Pure threshold-search functions over a histogram given as counts and a bin width
/// (bin `j` covers `[j·w, (j+1)·w)`). They follow the conventions of NVIDIA's open reference
/// calibrator (ModelOpt `HistogramCalibrator`, successor of pytorch-quantization), which are
/// TensorRT's EntropyCalibrator2 semantics; see docs/THRESHOLDS.md.
public enum ThresholdSearch {
    /// Number of quantised levels on one side for signed INT8.
    public static let quantizedLevels = 128
    /// The first candidate threshold (in bins) for entropy and mse.
    public static let startBin = 128

    public static func search(_ method: CalibrationMethod, counts: [UInt64], binWidth: Double) -> ThresholdResult {
        switch method {
        case .entropy: return entropy(counts: counts, binWidth: binWidth)
        case .percentile(let p): return percentile(p, counts: counts, binWidth: binWidth)
        case .mse: return mse(counts: counts, binWidth: binWidth)
        case .max: return ThresholdResult(bin: counts.count, amax: Double(counts.count) * binWidth, divergence: nil)
        }
    }

    // MARK: - Entropy

    /// Saturating KL-divergence search. For each candidate `i = 128...n`, P is the first `i` bins
    /// with the outliers folded into bin `i-1`; Q spreads each of the 128 levels' totals evenly
    /// over the level's non-empty bins. Bin 0 is first given bin 1's count (the zero spike after
    /// ReLU). The smallest divergence wins; the last candidate on ties. amax = i·w.
    ///
    /// Each candidate costs O(128) through prefix sums; candidates within a hair of the best are
    /// then re-evaluated term by term, so exact ties (e.g. divergence 0) are decided exactly.
    public static func entropy(counts rawCounts: [UInt64], binWidth: Double) -> ThresholdResult {
        let n = rawCounts.count
        guard n > startBin else {
            return ThresholdResult(bin: n, amax: Double(n) * binWidth, divergence: n > 0 ? 0 : nil)
        }
        var c = rawCounts.map { Double($0) }
        c[0] = c[1]
        // Prefix sums over bins: count, non-empty bins, c·log c.
        var prefixCount = [Double](repeating: 0, count: n + 1)
        var prefixNonZero = [Int32](repeating: 0, count: n + 1)
        var prefixCLogC = [Double](repeating: 0, count: n + 1)
        for j in 0..<n {
            prefixCount[j + 1] = prefixCount[j] + c[j]
            prefixNonZero[j + 1] = prefixNonZero[j] + (c[j] != 0 ? 1 : 0)
            prefixCLogC[j + 1] = prefixCLogC[j] + (c[j] > 0 ? c[j] * log(c[j]) : 0)
        }
        let total = prefixCount[n]

        // Screening: every candidate's divergence from the prefix sums (C kernel, vectorised).
        var fast = [Double](repeating: .infinity, count: n + 1)
        fast.withUnsafeMutableBufferPointer { out in
            shc_entropy_screen(prefixCount, prefixNonZero, prefixCLogC, c, n, startBin,
                               out.baseAddress! + startBin)
        }
        var best = Double.infinity
        for i in startBin...n where fast[i] < best { best = fast[i] }
        guard best.isFinite else {
            // Cannot happen for a histogram whose last bin is non-empty (i = n is finite);
            // an arbitrary external histogram may end in empty bins: keep everything.
            return ThresholdResult(bin: n, amax: Double(n) * binWidth, divergence: .infinity)
        }
        // Re-evaluate near-best candidates exactly; the last among equals wins.
        let tolerance = 1e-9 * Swift.max(abs(best), 1e-3)
        let near = (startBin...n).filter { fast[$0] <= best + tolerance }
        var winner = near[0]
        var winnerValue = exactDivergence(i: winner, c: c)
        for i in near.dropFirst() {
            let d = exactDivergence(i: i, c: c)
            if d <= winnerValue {
                winnerValue = d
                winner = i
            }
        }
        return ThresholdResult(bin: winner, amax: Double(winner) * binWidth, divergence: winnerValue)
    }

    /// First bin of quantised level `l` for `i` bins: the smallest j with floor(128·j/i) >= l.
    @inline(__always)
    static func levelStart(_ l: Int, _ i: Int) -> Int {
        (l * i + quantizedLevels - 1) / quantizedLevels
    }

    static func fastDivergence(i: Int, c: [Double], total: Double, prefixCount: [Double],
                               prefixNonZero: [Int32], prefixCLogC: [Double]) -> Double {
        let outliers = total - prefixCount[i]
        let last = c[i - 1]
        let pLast = last + outliers
        if last == 0 && outliers > 0 { return .infinity }
        let sumP = total
        let sumQ = prefixCount[i]
        if sumQ == 0 { return .infinity }
        // Σ P log P over all kept bins, with the folded last bin.
        var pLogP = prefixCLogC[i - 1]
        if pLast > 0 { pLogP += pLast * log(pLast) }
        // Σ P log Q, level by level: Q is constant (T/nz) on a level's non-empty bins, and
        // P is zero wherever Q is (only the last bin can differ, handled above).
        var pLogQ = 0.0
        var start = 0
        for l in 0..<quantizedLevels {
            let end = levelStart(l + 1, i)
            let t = prefixCount[end] - prefixCount[start]
            if t > 0 {
                let nz = Double(prefixNonZero[end] - prefixNonZero[start])
                var pSum = t
                if end == i { pSum += outliers }
                pLogQ += pSum * log(t / nz)
            }
            start = end
        }
        return (pLogP - pLogQ) / sumP + log(sumQ / sumP)
    }

    /// Term-by-term divergence, in the order scipy's `entropy` uses (normalise, then Σ p·log(p/q)).
    static func exactDivergence(i: Int, c: [Double]) -> Double {
        var outliers = 0.0
        for j in i..<c.count { outliers += c[j] }
        var sumP = 0.0
        for j in 0..<i { sumP += c[j] }
        sumP += outliers
        var q = [Double](repeating: 0, count: i)
        var start = 0
        for l in 0..<quantizedLevels {
            let end = levelStart(l + 1, i)
            var t = 0.0
            var nz = 0
            for j in start..<end where c[j] != 0 { t += c[j]; nz += 1 }
            if nz > 0 {
                let v = t / Double(nz)
                for j in start..<end where c[j] != 0 { q[j] = v }
            }
            start = end
        }
        var sumQ = 0.0
        for v in q { sumQ += v }
        var s = 0.0
        for j in 0..<i {
            let pj = (j == i - 1 ? c[j] + outliers : c[j]) / sumP
            if pj == 0 { continue }
            let qj = q[j] / sumQ
            if qj == 0 { return .infinity }
            s += pj * log(pj / qj)
        }
        return s
    }

    // MARK: - Percentile

    /// amax = k·w for the first bin k whose cumulative fraction reaches `percentile`/100
    /// (cumulative sum of count/total in float64, as numpy's cumsum).
    public static func percentile(_ percentile: Double, counts: [UInt64], binWidth: Double) -> ThresholdResult {
        let total = counts.reduce(0.0) { $0 + Double($1) }
        guard total > 0 else { return ThresholdResult(bin: 0, amax: 0, divergence: nil) }
        let target = percentile / 100
        var cdf = 0.0
        for (k, count) in counts.enumerated() {
            cdf += Double(count) / total
            if cdf >= target { return ThresholdResult(bin: k, amax: Double(k) * binWidth, divergence: nil) }
        }
        // Rounding left the cdf just below 1: numpy's searchsorted returns n here.
        return ThresholdResult(bin: counts.count, amax: Double(counts.count) * binWidth, divergence: nil)
    }

    // MARK: - MSE

    /// Candidates are bin centres a = (i + 0.5)·w for i = 128...n-1; each bin centre m is
    /// fake-quantised as clamp(round(m·127/a), -127, 127)·a/127 and the count-weighted squared
    /// error is minimised (first on ties). The error is evaluated exactly in integers (in units of
    /// w/2, scaled by 127²): for bin j and candidate i, round(127(2j+1)/(2i+1)) never ties.
    public static func mse(counts: [UInt64], binWidth: Double) -> ThresholdResult {
        let n = counts.count
        guard n > startBin else {
            return ThresholdResult(bin: n, amax: Double(n) * binWidth, divergence: nil)
        }
        // Prefix sums of c, c·B, c·B² with B = 2j+1 (exact in 128-bit integers).
        var pc = [UInt128](repeating: 0, count: n + 1)
        var pb = [UInt128](repeating: 0, count: n + 1)
        var pbb = [UInt128](repeating: 0, count: n + 1)
        for j in 0..<n {
            let cj = UInt128(counts[j])
            let b = UInt128(2 * j + 1)
            pc[j + 1] = pc[j] + cj
            pb[j + 1] = pb[j] + cj * b
            pbb[j + 1] = pbb[j] + cj * b * b
        }
        var bestI = -1
        var bestError = UInt128.max
        for i in startBin..<n {
            let a = Int128(2 * i + 1)
            var error: Int128 = 0
            var start = 0
            for r in 0...127 {
                // Bins with round(127·B/A) == r (r = 127 takes everything above, clamped).
                let end = r == 127 ? n : Swift.min(n, mseLevelStart(r + 1, a: 2 * i + 1))
                if end > start {
                    let cr = Int128(pc[end] - pc[start])
                    let s1 = Int128(pb[end] - pb[start])
                    let s2 = Int128(pbb[end] - pbb[start])
                    let ra = Int128(r) * a
                    // Σ c (r·A − 127·B)²
                    error += ra * ra * cr - 2 * 127 * ra * s1 + 127 * 127 * s2
                }
                start = Swift.max(start, end)
            }
            let e = UInt128(error)
            if e < bestError {
                bestError = e
                bestI = i
            }
        }
        let total = Double(pc[n])
        // error·(w/2)²/127² is Σ c·(q − m)²; report the mean over all values.
        let meanSquaredError = Double(bestError) * (binWidth / 2) * (binWidth / 2) / (127.0 * 127.0) / Swift.max(total, 1)
        return ThresholdResult(bin: bestI, amax: (Double(bestI) + 0.5) * binWidth, divergence: meanSquaredError)
    }

    /// Smallest j >= 0 with round(127·(2j+1)/A) >= r, i.e. 254·(2j+1) >= (2r−1)·A.
    @inline(__always)
    static func mseLevelStart(_ r: Int, a: Int) -> Int {
        let num = (2 * r - 1) * a - 254
        if num <= 0 { return 0 }
        return (num + 507) / 508
    }
}
