import Foundation
import Testing
@testable import Calibration

/// Independent oracle: builds the histogram of a whole array with Double arithmetic and a
/// search for k by repeated doubling, sharing no code with `Histogram`.
struct OracleHistogram: Equatable {
    var k: Int?
    var counts: [UInt64]
    var valueCount: UInt64
    var zeroCount: UInt64
    var nan: UInt64, posInf: UInt64, negInf: UInt64

    init(_ values: [Float]) {
        let finite = values.filter { $0.isFinite }
        nan = UInt64(values.filter { $0.isNaN }.count)
        posInf = UInt64(values.filter { $0 == .infinity }.count)
        negInf = UInt64(values.filter { $0 == -.infinity }.count)
        valueCount = UInt64(finite.count)
        zeroCount = UInt64(finite.filter { $0 == 0 }.count)
        let maxAbs = finite.map { Double($0.magnitude) }.max() ?? 0
        guard maxAbs > 0 else { k = nil; counts = []; return }
        // Smallest k with maxAbs < 4096·2^k, found by walking k.
        var kk = 200
        while maxAbs < 4096 * pow(2.0, Double(kk - 1)) { kk -= 1 }
        k = kk
        let width = pow(2.0, Double(kk))
        let n = Int((maxAbs / width).rounded(.down)) + 1
        var c = [UInt64](repeating: 0, count: n)
        for x in finite { c[Int((Double(x.magnitude) / width).rounded(.down))] += 1 }
        counts = c
    }

    func matches(_ h: Histogram) -> Bool {
        h.binWidthLog2 == k && h.counts == counts && h.valueCount == valueCount && h.zeroCount == zeroCount
            && h.nanCount == nan && h.positiveInfinityCount == posInf && h.negativeInfinityCount == negInf
    }
}

struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Values of very different shapes and scales, including zeros, -0, subnormals and huge ones.
func randomValues(_ count: Int, rng: inout SeededGenerator) -> [Float] {
    let scale = Float(sign: .plus, exponent: Int.random(in: -30...30, using: &rng), significand: 1)
    return (0..<count).map { _ in
        switch Int.random(in: 0..<20, using: &rng) {
        case 0: return 0
        case 1: return -0.0
        case 2: return Float.random(in: -1...1, using: &rng) * Float.leastNormalMagnitude
        default:
            let g = Float.random(in: -1...1, using: &rng) + Float.random(in: -1...1, using: &rng)
            return g * scale * (Int.random(in: 0..<100, using: &rng) == 0 ? 50 : 1)
        }
    }
}

@Suite struct HistogramLayoutTests {
    @Test func layoutAlwaysSpansAtLeast2048Bins() {
        var rng = SeededGenerator(seed: 1)
        for _ in 0..<2000 {
            let bits = UInt32.random(in: 1...0x7F7F_FFFF, using: &rng)
            let x = Float(bitPattern: bits)
            var h = Histogram()
            h.accumulate([x])
            #expect(h.counts.count >= 2049 && h.counts.count <= 4096, "max \(x) gave \(h.counts.count) bins")
            #expect(OracleHistogram([x]).matches(h), "max \(x)")
        }
    }

    @Test func extremeValuesBinExactly() {
        let cases: [[Float]] = [
            [Float.leastNonzeroMagnitude],
            [Float.leastNonzeroMagnitude, 3 * Float.leastNonzeroMagnitude, -Float.leastNormalMagnitude],
            [Float.greatestFiniteMagnitude, -Float.greatestFiniteMagnitude, 1, Float.leastNonzeroMagnitude],
            [4096, 4095.9998, 2048, 1, 0.5],       // 4096 forces k = 1
            [4095.9998, 2048, 1],                  // just below: k = 0, 4096 bins
            [2048, 2047.9999],                     // k = -1? no: 2048 < 4096·2^-0 … checked by the oracle
            [1e-40, 1e-42, 0, -0.0],
            [Float(bitPattern: 0x0000_0001), Float(bitPattern: 0x007F_FFFF)],
            [Float.ulpOfOne, 1 - Float.ulpOfOne / 2, 1, 1 + Float.ulpOfOne],
        ]
        for values in cases {
            var h = Histogram()
            h.accumulate(values)
            #expect(OracleHistogram(values).matches(h), "\(values)")
            #expect(h.counts.count >= 2049 && h.counts.count <= 4096)
            #expect(h.counts.last != 0)
        }
    }

    @Test func binEdgesAreHalfOpen() {
        // k = 0 for max in [2048, 4096): bin j holds [j, j+1).
        var h = Histogram()
        h.accumulate([3000, 5, 5.999999, 6, -6, 0.9999999])
        #expect(h.binWidthLog2 == 0)
        #expect(h.counts[5] == 2)
        #expect(h.counts[6] == 2)
        #expect(h.counts[0] == 1)
        #expect(h.counts[3000] == 1)
    }

    @Test func nonFiniteValuesAreCountedNotBinned() {
        var h = Histogram()
        h.accumulate([1, .nan, .infinity, -.infinity, -.infinity, -2, Float(bitPattern: 0xFFC0_0001)])
        #expect(h.nanCount == 2)
        #expect(h.positiveInfinityCount == 1)
        #expect(h.negativeInfinityCount == 2)
        #expect(h.valueCount == 2)
        #expect(h.maximum == 1)
        #expect(h.minimum == -2)
        #expect(h.maxAbs == 2)
        #expect(h.counts.reduce(0, +) == 2)
        #expect(throws: Never.self) { try h.validate() }
    }

    @Test func allZeroTensorHasNoLayoutAndMergesIntoBinZero() throws {
        var zeros = Histogram()
        zeros.accumulate([Float](repeating: 0, count: 100_000) + [-0.0])
        #expect(zeros.binWidthLog2 == nil)
        #expect(zeros.counts.isEmpty)
        #expect(zeros.valueCount == 100_001)
        #expect(zeros.zeroCount == 100_001)
        #expect(zeros.maxAbs == 0)
        #expect(zeros.minimum == -0.0 && zeros.minimum!.sign == .minus)
        var other = Histogram()
        other.accumulate([3, 0])
        let merged = zeros.merged(with: other)
        #expect(merged.counts[0] == 100_002)
        #expect(merged == other.merged(with: zeros))
        var all = Histogram()
        all.accumulate([Float](repeating: 0, count: 100_000) + [-0.0, 3, 0])
        #expect(merged == all)
    }

    @Test func signedZeroDoesNotMakeMinMaxOrderDependent() {
        var a = Histogram(); a.accumulate([0.0, -0.0, 1])
        var b = Histogram(); b.accumulate([-0.0, 0.0, 1])
        #expect(a == b)
        #expect(a.minimum!.sign == .minus)
    }
}

@Suite struct HistogramMergeTests {
    /// The central property: any partition, in any order, merges to the all-at-once histogram.
    @Test(arguments: 0..<40)
    func randomPartitionsMergeToTheWhole(seed: Int) {
        var rng = SeededGenerator(seed: UInt64(seed))
        let count = [1, 7, 1000, 40_000, 70_000][seed % 5]
        var values = randomValues(count, rng: &rng)
        if seed % 7 == 3 { values[Int.random(in: 0..<count, using: &rng)] = .nan }
        if seed % 11 == 5 { values[0] = -.infinity }
        var whole = Histogram()
        whole.accumulate(values)
        #expect(OracleHistogram(values).matches(whole))

        // Random cut points, shuffled part order, random merge tree.
        var cuts = [0, count]
        for _ in 0..<Int.random(in: 0...12, using: &rng) { cuts.append(Int.random(in: 0...count, using: &rng)) }
        cuts.sort()
        var parts: [Histogram] = []
        for i in 0..<(cuts.count - 1) {
            var h = Histogram()
            values[cuts[i]..<cuts[i + 1]].withUnsafeBufferPointer { h.accumulate($0) }
            parts.append(h)
        }
        parts.shuffle(using: &rng)
        while parts.count > 1 {
            let i = Int.random(in: 0..<parts.count, using: &rng)
            let a = parts.remove(at: i)
            let j = Int.random(in: 0..<parts.count, using: &rng)
            parts[j] = Bool.random(using: &rng) ? parts[j].merged(with: a) : a.merged(with: parts[j])
        }
        #expect(parts[0] == whole)
    }

    @Test func singleValuesMergeToTheWhole() {
        var rng = SeededGenerator(seed: 99)
        let values = randomValues(3000, rng: &rng)
        var whole = Histogram()
        whole.accumulate(values)
        var merged = Histogram()
        for x in values.shuffled(using: &rng) {
            var single = Histogram()
            single.accumulate([x])
            merged.merge(single)
        }
        #expect(merged == whole)
    }

    @Test func accumulatingIntoAnExistingHistogramEqualsMerging() {
        var rng = SeededGenerator(seed: 5)
        let a = randomValues(50_000, rng: &rng)
        let b = randomValues(50_000, rng: &rng).map { $0 * 1000 }
        var sequential = Histogram()
        sequential.accumulate(a)
        sequential.accumulate(b)
        var ha = Histogram(); ha.accumulate(a)
        var hb = Histogram(); hb.accumulate(b)
        #expect(sequential == hb.merged(with: ha))
        #expect(OracleHistogram(a + b).matches(sequential))
    }

    @Test func mergeIsAssociativeAndCommutative() {
        var rng = SeededGenerator(seed: 17)
        let hs: [Histogram] = (0..<3).map { i in
            var h = Histogram()
            h.accumulate(randomValues(5000, rng: &rng).map { $0 * Float(1 << (i * 5)) })
            return h
        }
        let left = hs[0].merged(with: hs[1]).merged(with: hs[2])
        let right = hs[0].merged(with: hs[1].merged(with: hs[2]))
        let swapped = hs[2].merged(with: hs[0]).merged(with: hs[1])
        #expect(left == right)
        #expect(left == swapped)
        #expect(throws: Never.self) { try left.validate() }
    }

    @Test func countsAreSixtyFourBit() throws {
        // Build a histogram with a count above 2^32 through the decoder and merge it.
        var one = Histogram(); one.accumulate([3000])
        var counts = one.counts
        counts[counts.count - 1] = 1 << 33
        let big = try Histogram(binWidthLog2: one.binWidthLog2, counts: counts, valueCount: 1 << 33, zeroCount: 0,
                                nanCount: 0, positiveInfinityCount: 0, negativeInfinityCount: 0,
                                minimum: 3000, maximum: 3000)
        let doubled = big.merged(with: big)
        #expect(doubled.counts.last == 1 << 34)
        #expect(doubled.valueCount == 1 << 34)
    }
}

@Suite struct HistogramCodingTests {
    @Test func roundTripsExactly() throws {
        var rng = SeededGenerator(seed: 3)
        for scale: Float in [1, 1e-30, 1e30] {
            var h = Histogram()
            h.accumulate(randomValues(20_000, rng: &rng).map { $0 * scale } + [.nan, .infinity])
            #expect(try Histogram(decoding: h.encoded()) == h)
        }
        #expect(try Histogram(decoding: Histogram().encoded()) == Histogram())
        var zeros = Histogram(); zeros.accumulate([0, 0])
        #expect(try Histogram(decoding: zeros.encoded()) == zeros)
    }

    @Test func rejectsTruncatedAndInconsistentData() {
        var h = Histogram()
        h.accumulate([1, 2, 3, 300])
        let bytes = h.encoded()
        for cut in [0, 1, 5, 40, bytes.count - 1] {
            #expect(throws: DecodingError.self) { try Histogram(decoding: Array(bytes.prefix(cut))) }
        }
        var wrongVersion = bytes
        wrongVersion[0] = 9
        #expect(throws: DecodingError.invalid("histogram encoding version 9 is not supported (expected 1 or 2)")) {
            try Histogram(decoding: wrongVersion)
        }
        var badCount = bytes
        badCount[badCount.count - 1] &+= 1   // bins no longer sum to the value count
        #expect(throws: DecodingError.self) { try Histogram(decoding: badCount) }
        #expect(throws: DecodingError.self) { try Histogram(decoding: bytes + [0]) }
    }

    @Test func smallCountsUseNarrowWidth() {
        var h = Histogram()
        h.accumulate((0..<1000).map { Float($0) })
        // 1 byte per bin for counts <= 255.
        #expect(h.encoded().count < 80 + h.counts.count * 2)
    }
}

import CHistogramKernel

@Suite struct HistogramKernelTests {
    /// The C kernels against the plain-Swift reference loops, on blocks with every kind of value.
    @Test(arguments: 0..<20)
    func cKernelsMatchTheSwiftReference(seed: Int) {
        var rng = SeededGenerator(seed: UInt64(seed) + 500)
        let count = [1, 3, 255, 256, 257, 4096, 4095][seed % 7]
        var block = randomValues(count, rng: &rng)
        if seed % 4 == 1 { block[count / 2] = .nan }
        if seed % 4 == 2 { block[0] = -.infinity }
        block.withUnsafeBufferPointer { buffer in
            var c = shc_scan_result()
            shc_scan_block(buffer.baseAddress, buffer.count, &c)
            let r = HistogramAccumulator.Reference.scanBlock(buffer)
            #expect(c.max_magnitude_bits == r.maxMagnitudeBits)
            #expect(c.min_key == r.minKey)
            #expect(c.max_key == r.maxKey)
            #expect(Int(c.zeros) == r.zeros)
        }
        // Binning: only finite values, with the layout of the block's max.
        let finite = block.filter { $0.isFinite }
        let maxAbs = finite.map(\.magnitude).max() ?? 0
        guard maxAbs > 0 else { return }
        let k = Histogram.requiredBinWidthLog2(forMaxAbs: maxAbs)
        guard k >= -126 && k <= 126 else { return }
        let stride = Int(SHC_LANE_STRIDE)
        let scale = Float(sign: .plus, exponent: -k, significand: 1)
        var fromC = [UInt16](repeating: 0, count: 4 * stride)
        var fromPortable = [UInt16](repeating: 0, count: 4 * stride)
        var fromSwift = [UInt16](repeating: 0, count: 4 * stride)
        finite.withUnsafeBufferPointer { buffer in
            fromC.withUnsafeMutableBufferPointer { shc_bin_block(buffer.baseAddress, buffer.count, scale, $0.baseAddress) }
            fromPortable.withUnsafeMutableBufferPointer {
                shc_bin_block_portable(buffer.baseAddress, buffer.count, scale, $0.baseAddress)
            }
            fromSwift.withUnsafeMutableBufferPointer {
                HistogramAccumulator.Reference.binBlockIntoLanes(buffer, k: k, sub: $0.baseAddress!, laneStride: stride)
            }
        }
        // Lane assignment may differ; the per-bin totals must not. Zeros are left to the caller.
        func totals(_ lanes: [UInt16]) -> [Int] {
            (0..<Int(SHC_LANE_BINS)).map { j in (0..<4).reduce(0) { $0 + Int(lanes[$1 * stride + j]) } }
        }
        let zeros = finite.filter { $0 == 0 }.count
        #expect(totals(fromC) == totals(fromSwift))
        #expect(totals(fromPortable) == totals(fromSwift))
        #expect(totals(fromC).reduce(0, +) == finite.count - zeros)
        // No lane takes more than a quarter of each block's values, rounded up (the flush bound).
        let blocks = (finite.count + Int(SHC_BLOCK) - 1) / Int(SHC_BLOCK)
        for lanes in [fromC, fromPortable] {
            for lane in 0..<4 {
                #expect(lanes[(lane * stride)..<(lane * stride + Int(SHC_LANE_BINS))].reduce(0) { $0 + Int($1) }
                        <= (finite.count + 3 * blocks) / 4)
            }
        }
    }

    /// The fused run: bins whole blocks up to the first that does not fit the layout (a value at or
    /// above the limit, or NaN/Inf), and reports the scan of exactly the values it binned.
    @Test(arguments: 0..<16)
    func scanBinRunStopsBeforeTheFirstBlockThatDoesNotFit(seed: Int) {
        var rng = SeededGenerator(seed: UInt64(seed) + 900)
        let block = Int(SHC_BLOCK), stride = Int(SHC_LANE_STRIDE)
        let blocks = Int.random(in: 1...5, using: &rng)
        let count = blocks * block - (seed % 3 == 0 ? Int.random(in: 1..<block, using: &rng) : 0)
        var values = randomValues(count, rng: &rng).map { $0.isFinite ? $0 : 1 }
        let maxAbs = values.map(\.magnitude).max()!
        let k = Histogram.requiredBinWidthLog2(forMaxAbs: maxAbs) + seed % 2   // sometimes coarser
        let limit = HistogramAccumulator.limitBits(binWidthLog2: k)
        // A misfit value somewhere, or none.
        var expectedBinned = count
        if seed % 4 != 3 {
            let at = Int.random(in: 0..<count, using: &rng)
            values[at] = [Float.nan, -.infinity, Float(bitPattern: limit), -Float(bitPattern: limit)][seed % 4]
            expectedBinned = at / block * block
        }
        let scale = Float(sign: .plus, exponent: -k, significand: 1)
        var reference = [UInt16](repeating: 0, count: 4 * stride)
        let binnedPart = Array(values[..<expectedBinned])
        binnedPart.withUnsafeBufferPointer { buffer in
            reference.withUnsafeMutableBufferPointer {
                HistogramAccumulator.Reference.binBlockIntoLanes(buffer, k: k, sub: $0.baseAddress!, laneStride: stride)
            }
        }
        let r = binnedPart.withUnsafeBufferPointer { HistogramAccumulator.Reference.scanBlock($0) }
        for portable in [false, true] {
            var lanes = [UInt16](repeating: 0, count: 4 * stride)
            var scanned = shc_scan_result()
            let binned = values.withUnsafeBufferPointer { buffer in
                lanes.withUnsafeMutableBufferPointer {
                    portable
                        ? shc_scan_bin_run_portable(buffer.baseAddress, buffer.count, scale, limit, $0.baseAddress, &scanned)
                        : shc_scan_bin_run(buffer.baseAddress, buffer.count, scale, limit, $0.baseAddress, &scanned)
                }
            }
            #expect(binned == expectedBinned, "portable \(portable)")
            #expect(scanned.max_magnitude_bits == r.maxMagnitudeBits)
            #expect(scanned.min_key == r.minKey && scanned.max_key == r.maxKey)
            #expect(Int(scanned.zeros) == r.zeros)
            for j in 0..<Int(SHC_LANE_BINS) {
                let got = (0..<4).reduce(0) { $0 + Int(lanes[$1 * stride + j]) }
                let want = (0..<4).reduce(0) { $0 + Int(reference[$1 * stride + j]) }
                if got != want { Issue.record("portable \(portable) bin \(j): \(got) != \(want)"); break }
            }
            // No lane takes more than a quarter of each block's values, rounded up (the flush bound).
            for lane in 0..<4 {
                let taken = lanes[(lane * stride)..<(lane * stride + Int(SHC_LANE_BINS))].reduce(0) { $0 + Int($1) }
                #expect(taken <= (expectedBinned + 4 * blocks) / 4)
            }
        }
    }

    /// The flush adds the lanes into 64-bit counts and clears them, spare bins aside.
    @Test func flushAddsLanesAndClearsThem() {
        let stride = Int(SHC_LANE_STRIDE)
        var lanes = (0..<(4 * stride)).map { UInt16(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
        let expected = (0..<3000).map { j in UInt64(5 + j) + (0..<4).reduce(UInt64(0)) { $0 + UInt64(lanes[$1 * stride + j]) } }
        var counts = (0..<3000).map { UInt64(5 + $0) }
        lanes.withUnsafeMutableBufferPointer { l in
            counts.withUnsafeMutableBufferPointer { shc_flush_lanes(l.baseAddress, 3000, $0.baseAddress) }
        }
        #expect(counts == expected)
        for lane in 0..<4 { #expect(lanes[(lane * stride)..<(lane * stride + 3000)].allSatisfy { $0 == 0 }) }
    }
}
