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
        let n = c.count
        var best = Double.infinity, bestI = -1
        for i in 128...n {
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
                if q[j] == 0 { kl = .infinity; break }
                kl += p[j] / sp * log((p[j] / sp) / (q[j] / sq))
            }
            if kl <= best { best = kl; bestI = i }
        }
        return bestI
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
    /// The C screening kernel (with its own logarithm) against the Swift reference formula.
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
        var out = [Double](repeating: 0, count: n + 1 - 128)
        shc_entropy_screen(pc, pnz, pcl, c, n, 128, &out)
        for i in 128...n {
            let reference = ThresholdSearch.fastDivergence(i: i, c: c, total: pc[n], prefixCount: pc,
                                                           prefixNonZero: pnz, prefixCLogC: pcl)
            let fromC = out[i - 128]
            if reference.isInfinite {
                #expect(fromC.isInfinite, "i = \(i)")
            } else {
                #expect(abs(fromC - reference) <= 1e-11 * max(1, abs(reference)), "i = \(i): \(fromC) vs \(reference)")
            }
        }
    }
}
