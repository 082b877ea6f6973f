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
    /// Three stages, all in float64:
    /// 1. a lower bound for every candidate in O(1) (`shc_entropy_bounds`: P and Q merged into three
    ///    cells, which cannot increase a KL divergence);
    /// 2. the divergence from prefix sums in O(128) (`shc_entropy_divergence`) for the candidates
    ///    whose bound does not already exceed the best divergence found so far (visited from the
    ///    smallest bound, then from i = n down, which finds a low divergence early);
    /// 3. the candidates within `tolerance` of the best are re-evaluated term by term
    ///    (`exactDivergence`), so exact ties (e.g. divergence 0) are decided exactly.
    /// A candidate is skipped only when its bound exceeds the best by more than the tolerance plus
    /// twice the error bound, so the answer is the one the term-by-term evaluation of every
    /// candidate gives.
    public static func entropy(counts rawCounts: [UInt64], binWidth: Double) -> ThresholdResult {
        let n = rawCounts.count
        guard n > startBin else {
            return ThresholdResult(bin: n, amax: Double(n) * binWidth, divergence: n > 0 ? 0 : nil)
        }
        var c = rawCounts.map { Double($0) }
        c[0] = c[1]
        let prefix = EntropyPrefixSums(c)
        let total = prefix.total
        let err = entropyErrorBound(binCount: n, total: total)
        func tolerance(_ best: Double) -> Double { Swift.max(1e-9 * abs(best), 2 * err) }

        // Divergence from the prefix sums; +inf for candidates pruned by their bound.
        var screened = [Double](repeating: .infinity, count: n + 1)
        var best = Double.infinity
        prefix.withInput { input in
            var bounds = [Double](repeating: .infinity, count: n + 1)
            bounds.withUnsafeMutableBufferPointer { out in
                shc_entropy_bounds(input, startBin, out.baseAddress! + startBin)
            }
            var first = -1
            var smallest = Double.infinity
            for i in startBin...n where bounds[i] < smallest {
                smallest = bounds[i]
                first = i
            }
            guard first >= 0 else { return }
            best = shc_entropy_divergence(input, first)
            screened[first] = best
            for i in stride(from: n, through: startBin, by: -1) where i != first {
                // `>` is false for NaN: a bound that is not a number never prunes.
                if bounds[i] > best + tolerance(best) + 2 * err { continue }
                let d = shc_entropy_divergence(input, i)
                screened[i] = d
                if d < best { best = d }
            }
        }
        guard best.isFinite else {
            // Cannot happen for a histogram whose last bin is non-empty (i = n is finite);
            // an arbitrary external histogram may end in empty bins: keep everything.
            return ThresholdResult(bin: n, amax: Double(n) * binWidth, divergence: .infinity)
        }
        // Re-evaluate near-best candidates exactly; the last among equals wins. (A NaN, never
        // expected, counts as near.)
        let limit = best + tolerance(best)
        var winner = -1
        var winnerValue = Double.infinity
        for i in startBin...n where !(screened[i] > limit) {
            let d = exactDivergence(i: i, c: c)
            if winner < 0 || d <= winnerValue {
                winnerValue = d
                winner = i
            }
        }
        return ThresholdResult(bin: winner, amax: Double(winner) * binWidth, divergence: winnerValue)
    }

    /// A bound on the absolute error of every divergence the entropy search computes (prefix-sum
    /// screen, bound and term-by-term evaluation alike), relative to the divergence of the same
    /// float64 counts in exact arithmetic. Each evaluation adds at most n terms in sequence (the
    /// term-by-term sums, the c·log c prefix) or 128 level terms, whose magnitudes relative to
    /// the total add up to at most Λ = 2·log(total) + log(32) + 1 (|log| of any count or level
    /// mean is at most log(total), of a ratio p/q at most 2·log(total) + log(32), as 1 ≤ c ≤ total
    /// and a level has at most 32 bins; plus one for the derivative of t·log t); each sum of k
    /// such terms errs by at most k·u·Σ|terms| (u = 2^-53), each logarithm by a few ulps.
    /// 4·(n + 256)·u·Λ covers them with room to spare; it is about 6e-11 for 3000 bins and 10^7
    /// values, far below the gaps between distinct divergences that matter.
    static func entropyErrorBound(binCount n: Int, total: Double) -> Double {
        let lambda = 2 * log(Swift.max(total, 2)) + log(32.0) + 1
        return 4 * Double(n + 256) * (Double.ulpOfOne / 2) * lambda
    }

    /// First bin of quantised level `l` for `i` bins: the smallest j with floor(128·j/i) >= l.
    @inline(__always)
    static func levelStart(_ l: Int, _ i: Int) -> Int {
        (l * i + quantizedLevels - 1) / quantizedLevels
    }

    /// The divergence from prefix sums, plain Swift: the reference `shc_entropy_divergence` is
    /// tested against (for prefix sums that are exact in float64).
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

/// Prefix sums of the entropy search, in the layout the C kernel reads (`shc_entropy_input`).
/// The count sums are kept as hi + lo (Knuth's two-sum), which holds them exactly even past 2^53
/// (every count is an integer below 2^64, so the rounding errors are integers and their sum stays
/// far below 2^53); lo is passed only when some sum was actually rounded.
struct EntropyPrefixSums {
    let c: [Double]
    var hi: [Double]
    var lo: [Double]
    var nonZero: [Int32]
    var cLogC: [Double]
    var roundedAny = false

    init(_ c: [Double]) {
        let n = c.count
        self.c = c
        hi = [Double](repeating: 0, count: n + 1)
        lo = [Double](repeating: 0, count: n + 1)
        nonZero = [Int32](repeating: 0, count: n + 1)
        cLogC = [Double](repeating: 0, count: n + 1)
        var h = 0.0, l = 0.0, nz: Int32 = 0, cl = 0.0
        for j in 0..<n {
            let x = c[j]
            let s = h + x
            let bb = s - h
            let e = (h - (s - bb)) + (x - bb)
            if e != 0 { roundedAny = true }
            h = s
            l += e
            if x != 0 {
                nz += 1
                cl += x * log(x)
            }
            hi[j + 1] = h
            lo[j + 1] = l
            nonZero[j + 1] = nz
            cLogC[j + 1] = cl
        }
    }

    /// Sum of all counts (rounded once).
    var total: Double { hi[c.count] + lo[c.count] }

    func withInput<R>(_ body: (UnsafePointer<shc_entropy_input>) -> R) -> R {
        hi.withUnsafeBufferPointer { hi in
            lo.withUnsafeBufferPointer { lo in
                nonZero.withUnsafeBufferPointer { nz in
                    cLogC.withUnsafeBufferPointer { cl in
                        c.withUnsafeBufferPointer { c in
                            var input = shc_entropy_input(
                                prefix_hi: hi.baseAddress, prefix_lo: roundedAny ? lo.baseAddress : nil,
                                prefix_nonzero: nz.baseAddress, prefix_clogc: cl.baseAddress,
                                c: c.baseAddress, n: c.count)
                            return withUnsafePointer(to: &input) { body($0) }
                        }
                    }
                }
            }
        }
    }
}
