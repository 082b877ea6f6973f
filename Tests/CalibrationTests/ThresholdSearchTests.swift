import Foundation
import Testing
@testable import Calibration

/// One threshold vector (see Fixtures/thresholds/SOURCE.md).
struct ThresholdVector: Decodable, CustomStringConvertible {
    var name: String
    var layout: String
    var bin_width: Double
    var bin_width_log2: Int?
    var counts: [UInt64]
    var expected_amax: [String: Double]
    var expected_trt_hex: [String: String]
    var file: String?

    var description: String { file ?? name }
}

enum VectorFiles {
    static let testsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let repoRoot = testsDirectory.deletingLastPathComponent().deletingLastPathComponent()
    static let sharedDirectory = repoRoot.deletingLastPathComponent().appendingPathComponent("shared/vectors/thresholds")
    static let fixtureDirectory = testsDirectory.appendingPathComponent("Fixtures/thresholds")

    static func load(_ directory: URL) -> [ThresholdVector] {
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return [] }
        return files.filter { $0.hasSuffix(".json") }.sorted().map { file in
            var v = try! JSONDecoder().decode(ThresholdVector.self,
                                              from: Data(contentsOf: directory.appendingPathComponent(file)))
            v.file = file
            return v
        }
    }

    static var shared: [ThresholdVector] { load(sharedDirectory) }
    static var fixtures: [ThresholdVector] { load(fixtureDirectory) }
}

@Suite struct ThresholdVectorTests {
    static let methods: [(String, CalibrationMethod)] = [
        ("entropy", .entropy), ("percentile_99.99", .percentile(99.99)), ("percentile_99.999", .percentile(99.999)),
        ("mse", .mse),
    ]

    func check(_ v: ThresholdVector) {
        for (key, method) in Self.methods {
            guard let expected = v.expected_amax[key] else { continue }
            let found = ThresholdSearch.search(method, counts: v.counts, binWidth: v.bin_width)
            let amax = Float(found.amax)
            if v.layout == "shardcal" {
                #expect(amax == Float(expected), "\(v) \(key): amax \(amax) != \(expected)")
                #expect(TensorRTCache.hexBits(amax / 127) == v.expected_trt_hex[key], "\(v) \(key) hex")
            } else {
                #expect(abs(Double(amax) - expected) <= 1e-6 * expected, "\(v) \(key): amax \(amax) != \(expected)")
            }
            // Same bin as the reference.
            let expectedBin = key == "mse" ? Int((expected / v.bin_width - 0.5).rounded()) : Int((expected / v.bin_width).rounded())
            #expect(found.bin == expectedBin, "\(v) \(key): bin \(found.bin) != \(expectedBin)")
        }
    }

    @Test func committedFixturesMatchTheReference() {
        let vectors = VectorFiles.fixtures
        #expect(vectors.count == 6)
        for v in vectors { check(v) }
    }

    @Test func allSharedVectorsMatchTheReference() throws {
        let vectors = VectorFiles.shared
        guard !vectors.isEmpty else {
            print("skipped: ../shared/vectors/thresholds not present; the committed fixtures still run")
            return
        }
        #expect(vectors.count == 22)
        for v in vectors { check(v) }
    }

    @Test func histogramOfTheVectorGivesTheSameAnswer() throws {
        // A shardcal-layout vector fed through Histogram (as counts) then CalibrationTable.
        for v in VectorFiles.fixtures where v.layout == "shardcal" {
            let total = v.counts.reduce(0, +)
            let top = Float(Double(v.counts.count - 1) * v.bin_width)
            let h = try Histogram(binWidthLog2: v.bin_width_log2, counts: v.counts, valueCount: total, zeroCount: 0,
                                  nanCount: 0, positiveInfinityCount: 0, negativeInfinityCount: 0,
                                  minimum: 0, maximum: top)
            let row = CalibrationTable.calibrate(name: "t", histogram: h, method: .entropy)
            #expect(TensorRTCache.hexBits(row.scale) == v.expected_trt_hex["entropy"])
        }
    }
}

/// Naive transcriptions of the published conventions, O(n²): oracles for the fast searches.
enum NaiveSearch {
    static func entropy(_ raw: [UInt64]) -> Int {
        var c = raw.map { Double($0) }
        c[0] = c[1]
        var best = Double.infinity, bestI = -1
        for i in 128...c.count {
            let kl = divergence(c, i)
            if kl <= best { best = kl; bestI = i }
        }
        return bestI
    }

    /// KL(P‖Q) of candidate i over counts c (bin 0 already replaced), term by term.
    static func divergence(_ c: [Double], _ i: Int) -> Double {
        let outliers = c[i...].reduce(0, +)
        var p = Array(c[0..<i]); p[i - 1] += outliers
        // level of bin j: digitize against boundaries l·i/128.
        var level = [Int](repeating: 0, count: i)
        for j in 0..<i {
            var l = 0
            while l < 128 && Double(l + 1) * Double(i) / 128 <= Double(j) { l += 1 }
            level[j] = l
        }
        var total = [Double](repeating: 0, count: 128), nz = [Double](repeating: 0, count: 128)
        for j in 0..<i where c[j] != 0 { total[level[j]] += c[j]; nz[level[j]] += 1 }
        let q = (0..<i).map { c[$0] != 0 ? total[level[$0]] / nz[level[$0]] : 0 }
        let sp = p.reduce(0, +), sq = q.reduce(0, +)
        var kl = 0.0
        for j in 0..<i where p[j] > 0 {
            if q[j] == 0 { return .infinity }
            kl += p[j] / sp * log((p[j] / sp) / (q[j] / sq))
        }
        return kl
    }

    static func mse(_ c: [UInt64], width w: Double) -> Int {
        var best = Double.infinity, bestI = -1
        for i in 128..<c.count {
            let a = (Double(i) + 0.5) * w
            var err = 0.0
            for j in 0..<c.count {
                let m = (Double(j) + 0.5) * w
                let q = Swift.min(127, (m * 127 / a).rounded(.toNearestOrEven)) * a / 127
                err += Double(c[j]) * (q - m) * (q - m)
            }
            if err < best { best = err; bestI = i }
        }
        return bestI
    }
}

@Suite struct ThresholdSearchOracleTests {
    static func randomCounts(seed: Int) -> [UInt64] {
        var rng = SeededGenerator(seed: UInt64(seed) &* 7919)
        let n = Int.random(in: 129...700, using: &rng)
        let decay = Double.random(in: 0.002...0.05, using: &rng)
        var c = (0..<n).map { j -> UInt64 in
            let base = 5000 * exp(-Double(j) * decay)
            let noise = Double.random(in: 0...1, using: &rng)
            return Int.random(in: 0..<5, using: &rng) == 0 ? 0 : UInt64(base * noise)
        }
        c[n - 1] = max(c[n - 1], 1)
        return c
    }

    @Test(arguments: 0..<12)
    func entropyMatchesNaiveTranscription(seed: Int) {
        let c = Self.randomCounts(seed: seed)
        #expect(ThresholdSearch.entropy(counts: c, binWidth: 1).bin == NaiveSearch.entropy(c))
    }

    @Test(arguments: 0..<12)
    func mseMatchesNaiveTranscription(seed: Int) {
        let c = Self.randomCounts(seed: seed + 100)
        #expect(ThresholdSearch.mse(counts: c, binWidth: 0.25).bin == NaiveSearch.mse(c, width: 0.25))
    }

    @Test func entropyRejectsCandidatesWhoseLastBinIsEmptyButHasOutliers() {
        // Only bin 255 is non-empty: every i < 256 puts the outliers on an empty Q bin (KL = +inf),
        // so the whole histogram is kept.
        var c = [UInt64](repeating: 0, count: 256)
        c[255] = 10
        let r = ThresholdSearch.entropy(counts: c, binWidth: 1)
        #expect(r.bin == 256)
        #expect(r.divergence == 0)
    }

    @Test func percentileHandComputed() {
        // 10 values: cdf reaches 0.9 at bin 3 (1+2+3+3 = 9 of 10), 1.0 at bin 4.
        let c: [UInt64] = [1, 2, 3, 3, 1]
        #expect(ThresholdSearch.percentile(90, counts: c, binWidth: 0.5).amax == 1.5)
        #expect(ThresholdSearch.percentile(91, counts: c, binWidth: 0.5).amax == 2.0)
        #expect(ThresholdSearch.percentile(10, counts: c, binWidth: 0.5).amax == 0)
    }

    @Test func mseHandComputed() {
        // All mass in bin 200 (n = 201): candidate i = 200 has amax = 200.5·w, exactly that bin's
        // centre, which quantises to level 127 = amax (error 0); every smaller candidate clips it.
        var c = [UInt64](repeating: 0, count: 201)
        c[200] = 1000
        let r = ThresholdSearch.mse(counts: c, binWidth: 0.5)
        #expect(r.bin == 200)
        #expect(r.amax == 100.25)
        #expect(r.divergence == 0)
    }

    @Test func maxIsTheLargestValueNotABinEdge() {
        var h = Histogram()
        h.accumulate([0.1, -3.3, 2.0])
        let row = CalibrationTable.calibrate(name: "x", histogram: h, method: .max)
        #expect(row.amax == 3.3)
        #expect(row.scale == Float(3.3) / 127)
    }

    @Test func zeroTensorGetsTheDocumentedSafeScaleAndAWarning() {
        var h = Histogram()
        h.accumulate([0, 0, -0.0])
        for method in [CalibrationMethod.entropy, .mse, .max, .percentile(99.99)] {
            let row = CalibrationTable.calibrate(name: "z", histogram: h, method: method)
            #expect(row.scale == 1.0)
            #expect(row.warnings.contains { $0.contains("all 3 values are zero") })
        }
    }
}

import CHistogramKernel

@Suite struct EntropyScreenKernelTests {
    /// The C divergence kernel (with its own logarithm) against the Swift reference formula.
    @Test(arguments: 0..<8)
    func screeningMatchesTheSwiftReference(seed: Int) {
        var raw = ThresholdSearchOracleTests.randomCounts(seed: seed + 40)
        if seed % 2 == 1 { raw = raw.map { $0 &* 1_000_003 } }   // large counts
        var c = raw.map { Double($0) }
        c[0] = c[1]
        let n = c.count
        var pc = [Double](repeating: 0, count: n + 1), pcl = [Double](repeating: 0, count: n + 1)
        var pnz = [Int32](repeating: 0, count: n + 1)
        for j in 0..<n {
            pc[j + 1] = pc[j] + c[j]
            pnz[j + 1] = pnz[j] + (c[j] != 0 ? 1 : 0)
            pcl[j + 1] = pcl[j] + (c[j] > 0 ? c[j] * log(c[j]) : 0)
        }
        let prefix = EntropyPrefixSums(c)
        #expect(!prefix.roundedAny)
        for i in 128...n {
            let reference = ThresholdSearch.fastDivergence(i: i, c: c, total: pc[n], prefixCount: pc,
                                                           prefixNonZero: pnz, prefixCLogC: pcl)
            let fromC = prefix.withInput { shc_entropy_divergence($0, i) }
            if reference.isInfinite {
                #expect(fromC.isInfinite, "i = \(i)")
            } else {
                #expect(abs(fromC - reference) <= 1e-11 * max(1, abs(reference)), "i = \(i): \(fromC) vs \(reference)")
            }
        }
    }
}

/// Histograms of awkward shapes for the entropy search: spikes, everything in one bin, long sparse
/// tails, flat runs (exact ties), empty trailing bins, and counts near the UInt64 limit.
enum AdversarialCounts {
    static let kinds = 10

    static func make(kind: Int, seed: Int) -> [UInt64] {
        var rng = SeededGenerator(seed: UInt64(seed) &* 104_729 &+ UInt64(kind))
        let n = Int.random(in: 129...520, using: &rng)
        var c = [UInt64](repeating: 0, count: n)
        switch kind {
        case 0:  // smooth decay with a few huge spikes
            for j in 0..<n { c[j] = UInt64(2000 * exp(-Double(j) / 150)) + UInt64.random(in: 0...20, using: &rng) }
            for _ in 0..<Int.random(in: 1...4, using: &rng) { c[Int.random(in: 0..<n, using: &rng)] += 5_000_000 }
        case 1:  // everything in one bin (anywhere, including bins 0, 1 and the last)
            let b = [0, 1, n - 1, Int.random(in: 0..<n, using: &rng)][seed % 4]
            c[b] = UInt64.random(in: 1...1_000_000, using: &rng)
            if b < n - 1 && seed % 3 == 0 { c[n - 1] = 1 }
        case 2:  // dense head, long sparse tail of ones
            let head = Int.random(in: 20...128, using: &rng)
            for j in 0..<head { c[j] = UInt64.random(in: 100...10_000, using: &rng) }
            for j in head..<n where Int.random(in: 0..<25, using: &rng) == 0 { c[j] = 1 }
            c[n - 1] = 1
        case 3:  // counts near the UInt64 limit
            for j in 0..<n { c[j] = UInt64.max - UInt64.random(in: 0...(UInt64.max / 4), using: &rng) }
        case 4:  // huge and tiny counts mixed (sums far past 2^53, small level totals)
            for j in 0..<n {
                c[j] = Int.random(in: 0..<8, using: &rng) == 0
                    ? UInt64.max / UInt64.random(in: 1...3, using: &rng) : UInt64.random(in: 0...3, using: &rng)
            }
            c[n - 1] = max(c[n - 1], 1)
        case 5:  // flat: many exact ties
            let v = UInt64.random(in: 1...1000, using: &rng)
            for j in 0..<n { c[j] = v }
        case 6:  // flat blocks of 2^k bins (level-aligned ties for some candidates)
            let width = 1 << Int.random(in: 0...3, using: &rng)
            for j in 0..<n { c[j] = UInt64((j / width) % 3 + 1) * 7 }
        case 7:  // trailing empty bins (an external histogram), tail of ones before them
            let end = Int.random(in: 128...(n - 1), using: &rng)
            for j in 0..<end { c[j] = UInt64(500 * exp(-Double(j) / 60)) + (j % 7 == 0 ? 1 : 0) }
            c[end - 1] = max(c[end - 1], 1)
        case 8:  // two separated clusters, zeros between
            for j in 0..<min(n, 60) { c[j] = UInt64.random(in: 1000...2000, using: &rng) }
            for j in max(0, n - 40)..<n { c[j] = UInt64.random(in: 0...50, using: &rng) }
            c[n - 1] = max(c[n - 1], 1)
        default:  // random, as the oracle tests, with alternating zeros
            for j in 0..<n where j % 2 == 0 { c[j] = UInt64.random(in: 0...100_000, using: &rng) }
            c[n - 1] = max(c[n - 1], 1)
        }
        return c
    }
}

@Suite struct EntropyPruningTests {
    static let cases = (0..<AdversarialCounts.kinds).flatMap { kind in (0..<4).map { (kind, $0) } }

    /// The search (bound, pruning, screen, exact re-evaluation) picks the naive transcription's bin.
    @Test(arguments: cases)
    func searchMatchesNaiveTranscriptionOnAdversarialShapes(kind: Int, seed: Int) {
        let c = AdversarialCounts.make(kind: kind, seed: seed)
        #expect(ThresholdSearch.entropy(counts: c, binWidth: 1).bin == NaiveSearch.entropy(c), "kind \(kind) seed \(seed)")
    }

    /// The bound never exceeds the divergence, which the naive transcription computes independently;
    /// it is +inf exactly where the divergence is. The screen agrees with it within the error bound.
    @Test(arguments: cases)
    func boundAndScreenAgainstNaiveDivergences(kind: Int, seed: Int) {
        let raw = AdversarialCounts.make(kind: kind, seed: seed)
        var c = raw.map { Double($0) }
        c[0] = c[1]
        let n = c.count
        let prefix = EntropyPrefixSums(c)
        let err = ThresholdSearch.entropyErrorBound(binCount: n, total: prefix.total)
        guard prefix.total > 0 else {
            // No values left once bin 0 takes bin 1's count: every candidate is degenerate.
            #expect(ThresholdSearch.entropy(counts: raw, binWidth: 1).bin == n)
            return
        }
        var bounds = [Double](repeating: 0, count: n + 1 - 128)
        prefix.withInput { input in
            bounds.withUnsafeMutableBufferPointer { shc_entropy_bounds(input, 128, $0.baseAddress) }
        }
        for i in 128...n {
            let kl = NaiveSearch.divergence(c, i)
            let bound = bounds[i - 128]
            let screened = prefix.withInput { shc_entropy_divergence($0, i) }
            #expect(!bound.isNaN && !screened.isNaN, "kind \(kind) i \(i)")
            if kl.isInfinite {
                #expect(bound.isInfinite && screened.isInfinite, "kind \(kind) i \(i): \(bound) \(screened)")
            } else {
                #expect(bound <= kl + err, "kind \(kind) i \(i): bound \(bound) > divergence \(kl)")
                #expect(abs(screened - kl) <= err, "kind \(kind) i \(i): screen \(screened) vs \(kl)")
                #expect(abs(ThresholdSearch.exactDivergence(i: i, c: c) - kl) <= err, "kind \(kind) i \(i)")
            }
        }
    }

    /// Counts past 2^53 make the float64 prefix sums inexact; the two-part sums stay exact.
    @Test func twoPartPrefixSumsAreExactPastTwoToThe53() {
        let c: [Double] = [Double(UInt64.max), 1, 3, Double(UInt64.max / 3), 1, 0, 5]
        let prefix = EntropyPrefixSums(c)
        #expect(prefix.roundedAny)
        // Exact sums in 128-bit integers.
        var exact: UInt128 = 0
        for j in 0..<c.count {
            exact += UInt128(c[j])
            // hi + lo represents the sum exactly: hi is the sum rounded, lo the (integer) rest.
            let hi = prefix.hi[j + 1], lo = prefix.lo[j + 1]
            #expect(Int128(hi) + Int128(lo) == Int128(exact))
        }
    }
}
