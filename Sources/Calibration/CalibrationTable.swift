import Foundation

/// The calibration result of one tensor.
public struct TensorCalibration: Sendable, Equatable {
    public var name: String
    public var method: CalibrationMethod
    /// The threshold, as Float32 (exact for shardcal's power-of-two bin widths).
    public var amax: Float
    /// amax / 127 computed in Float32: what the TensorRT cache stores.
    public var scale: Float
    public var binWidth: Double
    public var binCount: Int
    public var valueCount: UInt64
    public var zeroCount: UInt64
    public var minimum: Float?
    public var maximum: Float?
    public var nanCount: UInt64
    public var positiveInfinityCount: UInt64
    public var negativeInfinityCount: UInt64
    /// Fraction of the finite values at or beyond amax (in bins entirely above the threshold).
    public var clippedFraction: Double
    /// KL divergence (entropy) or mean squared error (mse) at the optimum.
    public var divergence: Double?
    public var warnings: [String]
}

/// Per-tensor thresholds for a whole model, and the TensorRT cache / JSON table made from them.
public struct CalibrationTable: Sendable, Equatable {
    /// Scale used for a tensor whose values are all zero (max|x| = 0): 1.0, i.e. amax = 127, as
    /// ONNX Runtime's `compute_scale_zp` does for a zero range. Any scale represents zero exactly;
    /// this one avoids a division by zero downstream. A warning is attached.
    public static let zeroRangeScale: Float = 1.0

    public var method: CalibrationMethod
    public var tensors: [TensorCalibration]

    public init(method: CalibrationMethod, tensors: [TensorCalibration]) {
        self.method = method
        self.tensors = tensors
    }

    /// Threshold search for every tensor of a state (in parallel; the result does not depend on it).
    public static func compute(state: CalibrationState, method: CalibrationMethod, parallel: Bool = true) -> CalibrationTable {
        compute(histograms: state.orderedHistograms, method: method, parallel: parallel)
    }

    public static func compute(histograms: [NamedHistogram], method: CalibrationMethod, parallel: Bool = true) -> CalibrationTable {
        let results = ResultSlots(count: histograms.count)
        let work: @Sendable (Int) -> Void = { i in
            results.set(i, calibrate(name: histograms[i].name, histogram: histograms[i].histogram, method: method))
        }
        if parallel && histograms.count > 1 {
            DispatchQueue.concurrentPerform(iterations: histograms.count, execute: work)
        } else {
            for i in 0..<histograms.count { work(i) }
        }
        return CalibrationTable(method: method, tensors: results.values())
    }

    /// Threshold for one shardcal histogram.
    public static func calibrate(name: String, histogram h: Histogram, method: CalibrationMethod) -> TensorCalibration {
        var warnings: [String] = []
        if h.nonFiniteCount > 0 {
            warnings.append("\(h.nanCount) NaN, \(h.positiveInfinityCount) +Inf, \(h.negativeInfinityCount) -Inf values were excluded")
        }
        var result = TensorCalibration(
            name: name, method: method, amax: 0, scale: 0, binWidth: h.binWidth ?? 0, binCount: h.counts.count,
            valueCount: h.valueCount, zeroCount: h.zeroCount, minimum: h.minimum, maximum: h.maximum,
            nanCount: h.nanCount, positiveInfinityCount: h.positiveInfinityCount,
            negativeInfinityCount: h.negativeInfinityCount, clippedFraction: 0, divergence: nil, warnings: warnings)
        guard let w = h.binWidth, h.maxAbs > 0 else {
            result.amax = 127 * zeroRangeScale
            result.scale = zeroRangeScale
            result.warnings.append(h.valueCount == 0
                ? "no finite values were seen; using scale \(zeroRangeScale)"
                : "all \(h.valueCount) values are zero (max|x| = 0); using scale \(zeroRangeScale)")
            return result
        }
        let found: ThresholdResult
        if case .max = method {
            // The exact max|x|, not a bin edge.
            found = ThresholdResult(bin: h.counts.count, amax: Double(h.maxAbs), divergence: nil)
        } else {
            found = ThresholdSearch.search(method, counts: h.counts, binWidth: w)
        }
        fill(&result, found: found, counts: h.counts, binWidth: w)
        if result.amax >= h.maxAbs { result.clippedFraction = 0 }  // nothing lies above the largest value
        return result
    }

    /// Threshold for an external histogram (counts and any bin width), e.g. from PyTorch hooks.
    public static func calibrate(name: String, counts: [UInt64], binWidth: Double, method: CalibrationMethod) -> TensorCalibration {
        let total = counts.reduce(UInt64(0), +)
        var result = TensorCalibration(
            name: name, method: method, amax: 0, scale: 0, binWidth: binWidth, binCount: counts.count,
            valueCount: total, zeroCount: 0, minimum: nil, maximum: nil, nanCount: 0, positiveInfinityCount: 0,
            negativeInfinityCount: 0, clippedFraction: 0, divergence: nil, warnings: [])
        let lastNonEmpty = counts.lastIndex(where: { $0 != 0 })
        guard let last = lastNonEmpty, binWidth > 0 else {
            result.amax = 127 * zeroRangeScale
            result.scale = zeroRangeScale
            result.warnings.append("histogram is empty; using scale \(zeroRangeScale)")
            return result
        }
        let trimmed = Array(counts[0...last])
        let found = ThresholdSearch.search(method, counts: trimmed, binWidth: binWidth)
        fill(&result, found: found, counts: trimmed, binWidth: binWidth)
        return result
    }

    private static func fill(_ result: inout TensorCalibration, found: ThresholdResult, counts: [UInt64], binWidth: Double) {
        result.amax = Float(found.amax)
        result.divergence = found.divergence
        if result.amax <= 0 {
            result.warnings.append("threshold search gave amax 0; using scale \(zeroRangeScale)")
            result.amax = 127 * zeroRangeScale
            result.scale = zeroRangeScale
        } else {
            result.scale = result.amax / 127
        }
        // Values in bins that lie entirely at or above amax are clipped.
        let firstClipped = Int((Double(result.amax) / binWidth).rounded(.up))
        let total = counts.reduce(UInt64(0), +)
        var clipped: UInt64 = 0
        if firstClipped < counts.count { for j in firstClipped..<counts.count { clipped += counts[j] } }
        result.clippedFraction = total > 0 ? Double(clipped) / Double(total) : 0
    }

    // MARK: - Outputs

    public func tensorRTCache(version: String = TensorRTCache.defaultVersion,
                              algorithm: String = TensorRTCache.defaultAlgorithm) -> TensorRTCache {
        TensorRTCache(version: version, algorithm: algorithm,
                      entries: tensors.map { .init(name: $0.name, scale: $0.scale) })
    }

    /// The JSON table (schema in docs/FORMATS.md): stable tensor order, sorted keys.
    public func json(extra: [String: String] = [:], skippedSamples: [SkippedSampleRecord] = []) -> [UInt8] {
        struct Row: Encodable {
            var name: String
            var method: String
            var amax: Float
            var scale: Float
            var scale_hex: String
            var bin_width: Double
            var bin_count: Int
            var value_count: UInt64
            var zero_count: UInt64
            var min: Float?
            var max: Float?
            var nan_count: UInt64
            var pos_inf_count: UInt64
            var neg_inf_count: UInt64
            var clipped_fraction: Double
            var divergence: Double?
            var warnings: [String]

            func encode(to encoder: any Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(name, forKey: .name)
                try c.encode(method, forKey: .method)
                try c.encode(amax, forKey: .amax)
                try c.encode(scale, forKey: .scale)
                try c.encode(scale_hex, forKey: .scale_hex)
                try c.encode(bin_width, forKey: .bin_width)
                try c.encode(bin_count, forKey: .bin_count)
                try c.encode(value_count, forKey: .value_count)
                try c.encode(zero_count, forKey: .zero_count)
                try c.encode(min, forKey: .min)  // null when absent
                try c.encode(max, forKey: .max)
                try c.encode(nan_count, forKey: .nan_count)
                try c.encode(pos_inf_count, forKey: .pos_inf_count)
                try c.encode(neg_inf_count, forKey: .neg_inf_count)
                try c.encode(clipped_fraction, forKey: .clipped_fraction)
                if let d = divergence, d.isFinite { try c.encode(d, forKey: .divergence) } else { try c.encodeNil(forKey: .divergence) }
                try c.encode(warnings, forKey: .warnings)
            }
            enum CodingKeys: String, CodingKey {
                case name, method, amax, scale, scale_hex, bin_width, bin_count, value_count, zero_count, min, max,
                     nan_count, pos_inf_count, neg_inf_count, clipped_fraction, divergence, warnings
            }
        }
        struct Document: Encodable {
            var format = "shardcal-calibration-table"
            var format_version = 1
            var method: String
            var percentile: Double?
            var info: [String: String]
            var skipped_samples: [SkippedSampleRecord]
            var tensors: [Row]
        }
        var percentile: Double? = nil
        if case .percentile(let p) = method { percentile = p }
        let doc = Document(method: method.name, percentile: percentile, info: extra, skipped_samples: skippedSamples, tensors: tensors.map { t in
            Row(name: t.name, method: t.method.name, amax: t.amax, scale: t.scale, scale_hex: TensorRTCache.hexBits(t.scale),
                bin_width: t.binWidth, bin_count: t.binCount, value_count: t.valueCount, zero_count: t.zeroCount,
                min: t.minimum, max: t.maximum, nan_count: t.nanCount, pos_inf_count: t.positiveInfinityCount,
                neg_inf_count: t.negativeInfinityCount, clipped_fraction: t.clippedFraction,
                divergence: t.divergence, warnings: t.warnings)
        })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return Array(try! encoder.encode(doc)) + [0x0A]
    }
}

/// Lock-protected result slots for the parallel search.
final class ResultSlots: @unchecked Sendable {
    private var slots: [TensorCalibration?]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ value: TensorCalibration) {
        lock.lock()
        slots[i] = value
        lock.unlock()
    }
    func values() -> [TensorCalibration] { slots.map { $0! } }
}
