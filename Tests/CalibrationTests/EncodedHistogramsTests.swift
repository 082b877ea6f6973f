import CHistogramKernel
import Foundation
import Testing
@testable import Calibration

private func histogram(_ values: [Float]) -> Histogram {
    var h = Histogram()
    h.accumulate(values)
    return h
}

@Suite struct EncodedHistogramsTests {
    /// Merging shards straight from their coding gives the histogram of all the data at once (the
    /// independent oracle: one accumulate over the concatenation), whatever the shard order and
    /// however the shards' layouts differ (k up and down, zero-only and empty shards, non-finite).
    @Test(arguments: 0..<24)
    func mergingFromBytesEqualsTheWholeData(seed: Int) throws {
        var rng = SeededGenerator(seed: UInt64(seed) + 7000)
        let tensorCount = 3
        let shardCount = 1 + seed % 6
        // values[t][s]: tensor t's values in shard s, scales varying per shard so layouts differ.
        var values: [[[Float]]] = []
        for t in 0..<tensorCount {
            var perShard: [[Float]] = []
            for s in 0..<shardCount {
                let n = [0, 1, 50, 3000, 20_000][(seed + t + s) % 5]
                var v = randomValues(n, rng: &rng).map { $0 * Float(sign: .plus, exponent: Int.random(in: -8...8, using: &rng), significand: 1) }
                if (seed + s) % 5 == 1 { v = Array(repeating: 0, count: n) }          // zeros only
                if (seed + t) % 7 == 2, !v.isEmpty { v[0] = .nan }
                if (seed * 3 + s) % 11 == 4 { v.append(.infinity) }
                perShard.append(v)
            }
            values.append(perShard)
        }
        let names = (0..<tensorCount).map { "t\($0)/out" }
        var state = CalibrationState(toolVersion: "x", modelDigest: "m", configDigest: "c")
        var reference = state
        for s in (0..<shardCount).shuffled(using: &rng) {
            let tensors = (0..<tensorCount).map { NamedHistogram(name: names[$0], histogram: histogram(values[$0][s])) }
            let encoded = try EncodedHistograms(validating: payload(tensors), count: tensorCount)
            #expect(encoded.names == names)
            #expect(encoded.decoded() == tensors)
            try state.merge(shard: s, encoded: encoded)
            try reference.merge(shard: s, tensors: tensors)
        }
        #expect(state == reference)
        for t in 0..<tensorCount {
            let whole = histogram(values[t].flatMap { $0 })
            #expect(state.histograms[names[t]] == whole, "tensor \(t)")
            #expect(OracleHistogram(values[t].flatMap { $0 }).matches(state.histograms[names[t]]!))
        }
    }

    /// Every count width (1, 2, 3, 4, 8 bytes) and a source finer than the target by many binades.
    @Test func everyCountWidthAndLargeShifts() throws {
        var fine = histogram([1e-6, 2e-6, 3e-6])        // tiny k
        let coarse = histogram([1e6, 5])                 // k about 8
        // Widths: counts up to 255, 65535, 2^24-1, 2^32-1 and beyond, built through the validating initialiser.
        for (i, top) in [UInt64(200), 60_000, 10_000_000, 4_000_000_000, 1 << 40].enumerated() {
            var counts = coarse.counts
            counts[counts.count - 1] = top
            let big = try Histogram(binWidthLog2: coarse.binWidthLog2, counts: counts,
                                    valueCount: counts.reduce(0, +), zeroCount: 0, nanCount: 0,
                                    positiveInfinityCount: 0, negativeInfinityCount: 0,
                                    minimum: coarse.minimum, maximum: coarse.maximum)
            let encoded = try EncodedHistograms(validating: payload([NamedHistogram(name: "x", histogram: big)]), count: 1)
            #expect(encoded.histogram(at: 0) == big, "width case \(i)")
            var a = fine
            a.merge(big)
            var b = fine
            #expect(encoded.bytes.withUnsafeBytes { b.mergeChecking(encoded.entries[0], bytes: $0) } == nil)
            #expect(a == b, "width case \(i)")
        }
        // Fine source into a coarse target (shift of ~28 binades), and the reverse.
        let e1 = try EncodedHistograms(validating: payload([NamedHistogram(name: "f", histogram: fine)]), count: 1)
        var target = coarse
        #expect(e1.bytes.withUnsafeBytes { target.mergeChecking(e1.entries[0], bytes: $0) } == nil)
        #expect(target == coarse.merged(with: fine))
        let e2 = try EncodedHistograms(validating: payload([NamedHistogram(name: "c", histogram: coarse)]), count: 1)
        #expect(e2.bytes.withUnsafeBytes { fine.mergeChecking(e2.entries[0], bytes: $0) } == nil)
        #expect(fine == histogram([1e-6, 2e-6, 3e-6, 1e6, 5]))
    }

    /// The in-place validator accepts and rejects exactly what the reference decoder
    /// (`Histogram(decoding:)`, a separate byte-by-byte reader) does, on every single-byte damage
    /// of a valid payload; what both accept decodes to the same histogram.
    @Test func validatesLikeTheReferenceDecoder() throws {
        let tensors = [
            NamedHistogram(name: "a", histogram: histogram([0, 0.5, -1.25, 3, 7.5, -0.001])),
            NamedHistogram(name: "b", histogram: histogram((0..<700).map { Float($0 % 97) * 0.37 - 11 })),
        ]
        let bytes = payload(tensors)
        var rng = SeededGenerator(seed: 42)
        var accepted = 0, rejected = 0
        for position in 0..<bytes.count {
            for delta: UInt8 in [1, 0x80, UInt8.random(in: 2...0x7f, using: &rng)] {
                var damaged = bytes
                damaged[position] &+= delta
                let ours = try? EncodedHistograms(validating: damaged, count: 2).decoded()
                let reference = referenceDecode(damaged, count: 2)
                #expect(ours == reference, "byte \(position) + \(delta)")
                if ours == nil { rejected += 1 } else { accepted += 1 }
            }
        }
        #expect(rejected > 0)
        #expect(throws: DecodingError.invalid("1 bytes after the last of 2 tensors")) {
            try EncodedHistograms(validating: bytes + [0], count: 2)
        }
        #expect(throws: DecodingError.invalid("tensor a appears twice")) {
            try EncodedHistograms(validating: payload([tensors[0], tensors[0]]), count: 2)
        }
        for cut in 0..<bytes.count {
            #expect(throws: DecodingError.self) { try EncodedHistograms(validating: Array(bytes.prefix(cut)), count: 2) }
        }
    }

    /// The coordinator's path: payloads parsed without their count sums, checked by the merge's own
    /// pass. Any mix of good shards and shards whose counts are off (in the last tensor, the one a
    /// tensor-by-tensor merge reaches last; some also widening a layout the good ones do not need)
    /// gives exactly the state of merging only the good ones; each bad one is named with its tensor.
    @Test(arguments: 0..<16)
    func mergeCheckingRefusesLateCorruptionAndKeepsNothingOfIt(seed: Int) throws {
        var rng = SeededGenerator(seed: UInt64(seed) + 9100)
        let names = ["a", "b", "c", "d"]
        var state = CalibrationState(toolVersion: "x", modelDigest: "m", configDigest: "c")
        var reference = state
        var nextShard = 0
        // Start from a state that already holds something (or nothing, for some seeds).
        if seed % 4 != 0 {
            let tensors = names.map { NamedHistogram(name: $0, histogram: histogram(randomValues(500, rng: &rng))) }
            try state.merge(shard: nextShard, tensors: tensors)
            try reference.merge(shard: nextShard, tensors: tensors)
            nextShard += 1
        }
        for _ in 0..<3 {
            var batch: [(shard: Int, histograms: EncodedHistograms)] = []
            var good: [(Int, [NamedHistogram])] = []
            var bad: Set<Int> = []
            for slot in 0..<(1 + Int.random(in: 0...4, using: &rng)) {
                let scale = Float(sign: .plus, exponent: Int.random(in: -3...3, using: &rng), significand: 1)
                var tensors = names.map { NamedHistogram(name: $0, histogram: histogram(randomValues(800, rng: &rng).map { $0 * scale })) }
                let corrupt = Int.random(in: 0...2, using: &rng) == 0
                if corrupt && Bool.random(using: &rng) {
                    // Widen every layout too (max|x| far beyond the others), so undoing needs the copies.
                    tensors = tensors.map { NamedHistogram(name: $0.name, histogram: histogram(randomValues(800, rng: &rng).map { $0 * 4096 })) }
                }
                if slot > 0 && Bool.random(using: &rng) { tensors.reverse() }  // another tensor order
                var bytes = payload(tensors)
                if corrupt {
                    bytes[bytes.count - 1] &+= 0x80  // the most significant byte of the last tensor's last count
                    bad.insert(batch.count)
                } else {
                    good.append((nextShard, tensors))
                }
                let encoded = try EncodedHistograms(validating: bytes, count: tensors.count, checkingCountSums: false)
                #expect(!encoded.countSumsChecked)
                #expect(throws: DecodingError.self, "a corrupted payload is refused when its sums are checked on their own") {
                    if corrupt { _ = try encoded.checkingCountSums() } else { throw DecodingError.invalid("fine") }
                }
                batch.append((nextShard, encoded))
                nextShard += 1
            }
            let refused = try state.mergeChecking(encodedShards: batch)
            #expect(Set(refused.keys) == bad)
            for (_, why) in refused {
                #expect(why.hasPrefix("tensor "), "\(why)")
                #expect(why.contains("bins sum to"), "\(why)")
            }
            for (shard, tensors) in good { try reference.merge(shard: shard, tensors: tensors) }
            #expect(state == reference, "seed \(seed)")
        }
    }

    /// Counts that would exceed UInt64 are refused, whether in the merged state or inside one
    /// payload whose 8-byte counts sum past 2^64 (a modular check would have taken them).
    @Test func mergeCheckingRefusesOverflow() throws {
        // max|x| = 1: bin width 2^-11, 2049 bins.
        var nearCounts = [UInt64](repeating: 0, count: 2049)
        nearCounts[0] = UInt64.max - 10
        nearCounts[2048] = 1
        let near = try Histogram(binWidthLog2: -11, counts: nearCounts, valueCount: UInt64.max - 9, zeroCount: 0,
                                 nanCount: 0, positiveInfinityCount: 0, negativeInfinityCount: 0, minimum: 1, maximum: 1)
        var state = CalibrationState(toolVersion: "x", modelDigest: "m", configDigest: "c")
        try state.merge(shard: 0, tensors: [NamedHistogram(name: "t", histogram: near)])
        let before = state
        let more = histogram((0..<20).map { _ in 0.0001 })
        let e1 = try EncodedHistograms(validating: payload([NamedHistogram(name: "t", histogram: more)]), count: 1, checkingCountSums: false)
        let r1 = try state.mergeChecking(encodedShards: [(1, e1)])
        #expect(r1[0]?.contains("overflows UInt64") == true, "\(r1)")
        #expect(state == before)

        // Counts 2^63, 2^63, 1 "sum" to 1 modulo 2^64: equal to the value count of 1.
        var wrappedCounts = [UInt64](repeating: 0, count: 2049)
        wrappedCounts[0] = 1 << 63
        wrappedCounts[1] = 1 << 63
        wrappedCounts[2048] = 1
        let wrapped = try Histogram(binWidthLog2: -11, counts: wrappedCounts, valueCount: 1, zeroCount: 0,
                                    nanCount: 0, positiveInfinityCount: 0, negativeInfinityCount: 0, minimum: 1, maximum: 1)
        let e2 = try EncodedHistograms(validating: payload([NamedHistogram(name: "t", histogram: wrapped)]), count: 1, checkingCountSums: false)
        var fresh = CalibrationState(toolVersion: "x", modelDigest: "m", configDigest: "c")
        let r2 = try fresh.mergeChecking(encodedShards: [(5, e2)])
        #expect(r2[0]?.contains("overflow") == true, "\(r2)")
        #expect(fresh.tensorNames.isEmpty && fresh.shards.isEmpty && fresh.histograms.isEmpty)
        // Shards refused are not in the state; a shard already in still throws, changing nothing.
        #expect(throws: StateError.shardAlreadyMerged([0])) { try state.mergeChecking(encodedShards: [(0, e1)]) }
    }

    /// The fused kernel against a plain reference: the sum, the added values, and a carry out of
    /// any element (near 2^64, every width, shifted or not) are all reported; a subtraction undoes it.
    @Test func checkedAddKernelDetectsEveryOverflow() {
        var rng = SeededGenerator(seed: 77)
        for width in [1, 2, 4, 8] {
            for shift: UInt32 in [0, 0, 1, 5, 63] {
                for trial in 0..<40 {
                    let n = Int.random(in: 1...300, using: &rng)
                    let maxCount: UInt64 = width == 8 ? .max : (1 << UInt64(8 * width)) - 1
                    let src: [UInt64] = (0..<n).map { _ in
                        trial % 4 == 0 ? maxCount - UInt64.random(in: 0...3, using: &rng) : UInt64.random(in: 0...maxCount, using: &rng)
                    }
                    let bins = shift >= 63 ? 1 : ((n - 1) >> Int(shift)) + 1
                    let dst0: [UInt64] = (0..<bins).map { _ in
                        switch trial % 3 {
                        case 0: return UInt64.random(in: 0...(1 << 40), using: &rng)
                        case 1: return UInt64.max - UInt64.random(in: 0...(maxCount == .max ? 1 << 40 : maxCount * 2), using: &rng)
                        default: return UInt64.random(in: (1 << 63)...(.max - (1 << 33)), using: &rng)
                        }
                    }
                    var bytes: [UInt8] = []
                    for v in src { for b in 0..<width { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(8 * b))) } }
                    // Reference: exact arithmetic with carries.
                    var expected = dst0
                    var carry = false
                    var sum: UInt64 = 0
                    for (j, v) in src.enumerated() {
                        let i = shift >= 63 ? 0 : j >> Int(shift)
                        let (d, o) = expected[i].addingReportingOverflow(v)
                        expected[i] = d
                        let (s2, o2) = sum.addingReportingOverflow(v)
                        sum = s2
                        carry = carry || o || o2
                    }
                    var dst = dst0
                    var overflow: Int32 = 0
                    let total = dst.withUnsafeMutableBufferPointer { d in
                        bytes.withUnsafeBytes { shc_add_coded_counts_checked(d.baseAddress!, $0.baseAddress!, n, Int32(width), shift, &overflow) }
                    }
                    #expect(dst == expected, "width \(width) shift \(shift) trial \(trial)")
                    #expect((overflow != 0) == carry, "width \(width) shift \(shift) trial \(trial)")
                    if !carry { #expect(total == sum) }
                    dst.withUnsafeMutableBufferPointer { d in
                        bytes.withUnsafeBytes { shc_sub_coded_counts(d.baseAddress!, $0.baseAddress!, n, Int32(width), shift) }
                    }
                    #expect(dst == dst0)
                }
            }
        }
    }

    /// Oracle for the validator: names through ByteReader, histograms through Histogram(decoding:).
    private func referenceDecode(_ bytes: [UInt8], count: Int) -> [NamedHistogram]? {
        var reader = ByteReader(bytes)
        var out: [NamedHistogram] = []
        for _ in 0..<count {
            guard let name = try? reader.readString("name", maxLength: 4096),
                  let h = try? Histogram(from: &reader) else { return nil }
            if out.contains(where: { $0.name == name }) { return nil }
            out.append(NamedHistogram(name: name, histogram: h))
        }
        return reader.isAtEnd ? out : nil
    }
}
