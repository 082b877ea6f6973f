import CHistogramKernel
import Foundation
import Testing
@testable import Calibration
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Little-endian bytes of `v`, `width` of them.
private func le(_ v: UInt64, _ width: Int) -> [UInt8] { (0..<width).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

/// A valid histogram with 2049 bins (k = 0, max|x| = 2048: the fewest bins a layout can have)
/// whose counts are zero but for `bins`.
private func sparse(_ bins: [Int: UInt64], nan: UInt64 = 0, negInf: UInt64 = 0) throws -> Histogram {
    var counts = [UInt64](repeating: 0, count: 2049)
    for (j, c) in bins { counts[j] = c }
    return try Histogram(binWidthLog2: 0, counts: counts, valueCount: counts.reduce(0, +), zeroCount: 0, nanCount: nan,
                         positiveInfinityCount: 0, negativeInfinityCount: negInf, minimum: 1, maximum: 2048)
}

/// `shc_add_coded_counts_checked` for width 3, shift 0, through each implementation this CPU has
/// (0 portable, 1 AVX2, 2 AVX-512 VBMI), each from a fresh copy of `start`.
private func addThroughEveryVariant(_ start: [UInt64], _ src: GuardedBytes, _ n: Int)
    -> [(variant: Int32, dst: [UInt64], sum: UInt64, overflow: Int32)] {
    (0...2).compactMap { (variant: Int32) in
        var d = start
        var total: UInt64 = 0
        var overflow: Int32 = 0
        let available = d.withUnsafeMutableBufferPointer {
            shc_add3_coded_counts_checked_variant(variant, $0.baseAddress!, src.start, n, &total, &overflow)
        }
        return available == 1 ? (variant, d, total, overflow) : nil
    }
}

/// Byte offset of the count-width byte in an encoding with min/max (version, flags, k, 5 × u64,
/// min, max, bin count).
private let widthOffset = 1 + 1 + 2 + 40 + 8 + 2

/// `count` bytes whose last byte is the last readable one: the page after them is PROT_NONE, so
/// reading even one byte past the end crashes the test process instead of passing silently.
private final class GuardedBytes {
    let mapping: UnsafeMutableRawPointer
    let mappingSize: Int
    let start: UnsafeMutablePointer<UInt8>

    init(_ bytes: [UInt8]) {
        let page = Int(getpagesize())
        let dataPages = (bytes.count + page - 1) / page + 1
        mappingSize = (dataPages + 1) * page
        let mapped = mmap(nil, mappingSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let mapped, mapped != UnsafeMutableRawPointer(bitPattern: -1) else { fatalError("mmap failed") }
        mapping = mapped
        precondition(mprotect(mapping + dataPages * page, page, PROT_NONE) == 0)
        start = (mapping + dataPages * page - bytes.count).assumingMemoryBound(to: UInt8.self)
        bytes.withUnsafeBufferPointer { start.update(from: $0.baseAddress!, count: bytes.count) }
    }

    deinit { munmap(mapping, mappingSize) }
}

@Suite struct CountWidthTests {
    @Test func widthIsTheSmallestThatHoldsTheLargestCount() {
        let cases: [(UInt64, Int)] = [
            (0, 1), (255, 1), (256, 2), (65535, 2), (65536, 3), (1_000_000, 3), (16_777_215, 3), (16_777_216, 4),
            (UInt64(UInt32.max), 4), (UInt64(UInt32.max) + 1, 8), (.max, 8),
        ]
        for (largest, width) in cases {
            #expect(Histogram.countWidth(forLargest: largest) == width, "largest \(largest)")
        }
    }

    /// Width 3 is what the encoder picks for a largest count in 65536...16777215, and only there:
    /// 2^24 - 1 still fits, 2^24 takes 4 bytes.
    @Test(arguments: [UInt64(65535), 65536, 70_000, 1_000_000, 16_000_000, 16_777_215, 16_777_216])
    func encoderPicksWidth3ExactlyInItsRange(largest: UInt64) throws {
        let h = try sparse([5: 1, 2048: largest])
        let bytes = h.encoded()
        let expected = largest < 65536 ? 2 : largest < 1 << 24 ? 3 : 4
        #expect(bytes[0] == 2)
        #expect(Int(bytes[widthOffset]) == expected)
        #expect(bytes.count == widthOffset + 1 + 2049 * expected)
        #expect(try Histogram(decoding: bytes) == h)
    }

    /// The exact bytes of a width-3 histogram, written out by hand.
    @Test func width3ByteLayoutIsTheDocumentedOne() throws {
        let h = try sparse([1: 0x12_3456, 2048: 0xAB_CDEF], nan: 1, negInf: 2)
        var expected: [UInt8] = [
            2,                                    // encoding version
            3,                                    // flags: layout, min/max
            0x00, 0x00,                           // k = 0
            0x45, 0x02, 0xBE, 0, 0, 0, 0, 0,      // value count 0x123456 + 0xABCDEF = 0xBE0245
            0, 0, 0, 0, 0, 0, 0, 0,               // zero count
            1, 0, 0, 0, 0, 0, 0, 0,               // NaN count
            0, 0, 0, 0, 0, 0, 0, 0,               // +Inf count
            2, 0, 0, 0, 0, 0, 0, 0,               // -Inf count
            0x00, 0x00, 0x80, 0x3F,               // minimum 1.0
            0x00, 0x00, 0x00, 0x45,               // maximum 2048.0
            0x01, 0x08,                           // bin count 2049
            3,                                    // bytes per count
        ]
        var counts = [UInt8](repeating: 0, count: 2049 * 3)
        counts[3] = 0x56; counts[4] = 0x34; counts[5] = 0x12          // bin 1
        counts[6144] = 0xEF; counts[6145] = 0xCD; counts[6146] = 0xAB // bin 2048
        expected += counts
        #expect(h.encoded() == expected)
        #expect(try Histogram(decoding: expected) == h)
        let named = [NamedHistogram(name: "t", histogram: h)]
        let encoded = try EncodedHistograms(validating: le(1, 4) + Array("t".utf8) + expected, count: 1)
        #expect(encoded.decoded() == named)
    }

    /// Widths 1, 2, 3, 4 and 8 round-trip through both decoders and merge from the bytes like the
    /// decoded histogram, also with the boundaries of each width.
    @Test(arguments: [UInt64(1), 255, 256, 65535, 65536, 16_777_215, 16_777_216, 4_294_967_295, 4_294_967_296, 1 << 50])
    func everyWidthRoundTrips(largest: UInt64) throws {
        let h = try sparse([0: 7, 1000: largest / 3 + 1, 2047: largest, 2048: 1])
        let bytes = h.encoded()
        #expect(Int(bytes[widthOffset]) == Histogram.countWidth(forLargest: largest))
        #expect(try Histogram(decoding: bytes) == h)
        let encoded = try EncodedHistograms(validating: payload([NamedHistogram(name: "x", histogram: h)]), count: 1)
        #expect(encoded.histogram(at: 0) == h)
        let unchecked = try EncodedHistograms(validating: payload([NamedHistogram(name: "x", histogram: h)]), count: 1,
                                              checkingCountSums: false)
        var target = try sparse([3: 11, 2048: 2])
        var reference = target
        reference.merge(h)
        #expect(unchecked.bytes.withUnsafeBytes { target.mergeChecking(unchecked.entries[0], bytes: $0) } == nil)
        #expect(target == reference)
    }

    /// Version-1 encodings (no 3-byte counts), as old state files hold them, still decode; a
    /// version-1 histogram claiming width 3, and unknown versions and widths, are refused.
    @Test func version1EncodingsStillDecode() throws {
        let h = try sparse([1: 0x12_3456, 2048: 0xAB_CDEF])
        func v1(width: Int) -> [UInt8] {
            var b: [UInt8] = [1, 3, 0, 0]
            b += le(0xBE_0245, 8) + le(0, 8) + le(0, 8) + le(0, 8) + le(0, 8)
            b += [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x45, 0x01, 0x08, UInt8(width)]
            var counts = [UInt64](repeating: 0, count: 2049)
            counts[1] = 0x12_3456; counts[2048] = 0xAB_CDEF
            for c in counts { b += le(c, width) }
            return b
        }
        for width in [4, 8] {
            let bytes = v1(width: width)
            #expect(try Histogram(decoding: bytes) == h, "width \(width)")
            let encoded = try EncodedHistograms(validating: le(1, 4) + Array("t".utf8) + bytes, count: 1)
            #expect(encoded.histogram(at: 0) == h)
            var merged = h
            #expect(encoded.bytes.withUnsafeBytes { merged.mergeChecking(encoded.entries[0], bytes: $0) } == nil)
            #expect(merged == h.merged(with: h))
        }
        let v1Width3 = v1(width: 3)
        #expect(throws: DecodingError.invalid("count width 3 needs encoding version 2 (this histogram has version 1)")) {
            try Histogram(decoding: v1Width3)
        }
        #expect(throws: DecodingError.invalid("histogram of tensor t: count width 3 needs encoding version 2 (this histogram has version 1)")) {
            try EncodedHistograms(validating: le(1, 4) + Array("t".utf8) + v1Width3, count: 1)
        }
        var v1Width5 = v1(width: 4)
        v1Width5[widthOffset] = 5
        #expect(throws: DecodingError.invalid("count width 5 is not 1, 2, 4 or 8")) { try Histogram(decoding: v1Width5) }
        var v2Width5 = h.encoded()
        v2Width5[widthOffset] = 5
        #expect(throws: DecodingError.invalid("count width 5 is not 1, 2, 3, 4 or 8")) { try Histogram(decoding: v2Width5) }
        #expect(throws: DecodingError.invalid("histogram of tensor t: count width 5 is not 1, 2, 3, 4 or 8")) {
            try EncodedHistograms(validating: le(1, 4) + Array("t".utf8) + v2Width5, count: 1)
        }
        var v3 = h.encoded()
        v3[0] = 3
        #expect(throws: DecodingError.invalid("histogram of tensor t: encoding version 3 is not supported (expected 1 or 2)")) {
            try EncodedHistograms(validating: le(1, 4) + Array("t".utf8) + v3, count: 1)
        }
    }

    /// A width-3 histogram cut anywhere is refused by both decoders, never read past its end.
    @Test func truncatedWidth3IsRejected() throws {
        let h = try sparse([1: 0x12_3456, 2048: 0xAB_CDEF])
        let full = payload([NamedHistogram(name: "t", histogram: h)])
        for cut in [1, 2, 3, 4, 2049 * 3 - 1, 2049 * 3, 2049 * 3 + 5, full.count - 1] {
            let bytes = Array(full.prefix(full.count - cut))
            #expect(throws: DecodingError.self, "cut \(cut)") { try EncodedHistograms(validating: bytes, count: 1) }
            #expect(throws: DecodingError.self, "cut \(cut)") {
                try EncodedHistograms(validating: bytes, count: 1, checkingCountSums: false)
            }
            #expect(throws: DecodingError.self, "cut \(cut)") { try Histogram(decoding: Array(bytes.dropFirst(5))) }
        }
        #expect(throws: DecodingError.truncated(reading: "histogram of tensor t counts", offset: 5 + widthOffset + 1,
                                                needed: 2049 * 3, available: 2049 * 3 - 1)) {
            try EncodedHistograms(validating: Array(full.dropLast()), count: 1)
        }
    }

    /// The C kernels on width-3 counts (vector blocks of 16 or 8 and the scalar tail) equal sums made
    /// here in Swift, for bin counts around the block sizes; the counts end right before a
    /// PROT_NONE page, so a read past byte 3n would crash.
    @Test(arguments: [1, 2, 3, 7, 8, 9, 11, 12, 13, 15, 16, 17, 19, 20, 21, 22, 23, 31, 32, 33, 37, 38, 4095, 4096])
    func width3KernelsMatchSwift(n: Int) throws {
        var rng = SeededGenerator(seed: UInt64(n) * 31 + 5)
        let counts = (0..<n).map { j -> UInt64 in
            j % 5 == 0 ? 0xFF_FFFF : j % 7 == 0 ? 0 : rng.next() & 0xFF_FFFF
        }
        let src = GuardedBytes(counts.flatMap { le($0, 3) })
        let start = (0..<n).map { _ in rng.next() >> 2 }
        let expectedSum = counts.reduce(0, +)
        #expect(shc_sum_coded_counts(src.start, n, 3) == expectedSum)

        // shift 0: element-wise.
        var dst = start
        var overflow: Int32 = 0
        let sum = dst.withUnsafeMutableBufferPointer { shc_add_coded_counts_checked($0.baseAddress!, src.start, n, 3, 0, &overflow) }
        #expect(sum == expectedSum)
        #expect(overflow == 0)
        #expect(dst == zip(start, counts).map { $0 + $1 })
        dst.withUnsafeMutableBufferPointer { shc_sub_coded_counts($0.baseAddress!, src.start, n, 3, 0) }
        #expect(dst == start)
        dst.withUnsafeMutableBufferPointer { shc_add_coded_counts($0.baseAddress!, src.start, n, 3, 0) }
        #expect(dst == zip(start, counts).map { $0 + $1 })

        // Every implementation this CPU has (portable, AVX2, AVX-512 VBMI), not only the fastest.
        let runs = addThroughEveryVariant(start, src, n)
        #expect(runs.count >= 1)
        for r in runs {
            #expect(r.sum == expectedSum, "variant \(r.variant)")
            #expect(r.overflow == 0, "variant \(r.variant)")
            #expect(r.dst == zip(start, counts).map { $0 + $1 }, "variant \(r.variant)")
        }

        // shift 2: bins j into j >> 2 (a coarser target).
        var coarse = [UInt64](repeating: 5, count: (n + 3) / 4)
        var expectedCoarse = coarse
        for (j, c) in counts.enumerated() { expectedCoarse[j >> 2] += c }
        let coarseSum = coarse.withUnsafeMutableBufferPointer { shc_add_coded_counts_checked($0.baseAddress!, src.start, n, 3, 2, &overflow) }
        #expect(coarseSum == expectedSum)
        #expect(overflow == 0)
        #expect(coarse == expectedCoarse)
    }

    /// A carry out of any element is reported with 3-byte counts too, wherever the element is (in a
    /// block of 16 or in the tail), and subtracting restores the target exactly.
    @Test(arguments: [(17, 0), (17, 9), (17, 16), (40, 31), (40, 39), (4095, 4094), (4096, 100)])
    func width3OverflowIsDetected(n: Int, at: Int) throws {
        let counts = (0..<n).map { UInt64($0 % 3 == 0 ? 0xFF_FFFF : $0 + 1) }
        let src = GuardedBytes(counts.flatMap { le($0, 3) })
        var start = (0..<n).map { UInt64($0) * 1000 }
        start[at] = UInt64.max - counts[at] + 1     // wraps by exactly 0
        var dst = start
        var overflow: Int32 = 0
        _ = dst.withUnsafeMutableBufferPointer { shc_add_coded_counts_checked($0.baseAddress!, src.start, n, 3, 0, &overflow) }
        #expect(overflow == 1)
        dst.withUnsafeMutableBufferPointer { shc_sub_coded_counts($0.baseAddress!, src.start, n, 3, 0) }
        #expect(dst == start)
        for r in addThroughEveryVariant(start, src, n) { #expect(r.overflow == 1, "variant \(r.variant)") }
        // One less: the largest value that still fits, no carry.
        start[at] -= 1
        dst = start
        overflow = 0
        _ = dst.withUnsafeMutableBufferPointer { shc_add_coded_counts_checked($0.baseAddress!, src.start, n, 3, 0, &overflow) }
        #expect(overflow == 0)
        #expect(dst[at] == UInt64.max)
    }
}
