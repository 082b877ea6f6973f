/// Compact binary form of a histogram, used in state files and on the wire.
///
/// ```
/// u8   format version (2; version 1 is still read: the same layout without 3-byte counts)
/// u8   flags: bit0 = has layout, bit1 = has min/max
/// i16  k (bin width 2^k; 0 when no layout)
/// u64  value count, zero count, NaN count, +Inf count, -Inf count
/// u32  min bits, u32 max bits            (when flag bit1)
/// u16  bin count n (0...4096)
/// u8   bytes per count w (1, 2, 3, 4 or 8: the smallest that holds the largest count; 3 only in version 2)
/// n·w  counts, little endian
/// ```
/// The counts already end at the last non-empty bin, so nothing beyond it is sent. Version 2 added
/// 3-byte counts (largest count below 2^24): a quarter less to send and merge than 4 bytes for the
/// bins of large shards (~1e6...1.6e7 values per bin).
extension Histogram {
    /// The version written. Readers also take `previousCodingVersion`, so older state files load.
    public static let codingVersion: UInt8 = 2
    /// Version 1: count widths 1, 2, 4 and 8 only.
    public static let previousCodingVersion: UInt8 = 1

    /// Bytes per count that `encode` writes for counts whose largest is `largest`.
    public static func countWidth(forLargest largest: UInt64) -> Int {
        largest <= 0xFF ? 1 : largest <= 0xFFFF ? 2 : largest <= 0xFF_FFFF ? 3 : largest <= 0xFFFF_FFFF ? 4 : 8
    }

    /// nil when `width` is a valid count width for encoding version `version` (which must be
    /// `codingVersion` or `previousCodingVersion`); otherwise why not.
    static func countWidthProblem(_ width: Int, version: UInt8) -> String? {
        switch width {
        case 1, 2, 4, 8: return nil
        case 3 where version >= 2: return nil
        case 3: return "count width 3 needs encoding version 2 (this histogram has version \(version))"
        default: return version >= 2 ? "count width \(width) is not 1, 2, 3, 4 or 8" : "count width \(width) is not 1, 2, 4 or 8"
        }
    }

    /// nil when `version` can be read; otherwise why not.
    static func codingVersionProblem(_ version: UInt8) -> String? {
        version == codingVersion || version == previousCodingVersion ? nil
            : "encoding version \(version) is not supported (expected \(previousCodingVersion) or \(codingVersion))"
    }

    public func encode(into writer: inout ByteWriter) {
        writer.write(Histogram.codingVersion)
        var flags: UInt8 = 0
        if binWidthLog2 != nil { flags |= 1 }
        if minimum != nil { flags |= 2 }
        writer.write(flags)
        writer.write(Int16(binWidthLog2 ?? 0))
        writer.write(valueCount)
        writer.write(zeroCount)
        writer.write(nanCount)
        writer.write(positiveInfinityCount)
        writer.write(negativeInfinityCount)
        if let lo = minimum, let hi = maximum {
            writer.write(lo.bitPattern)
            writer.write(hi.bitPattern)
        }
        writer.write(UInt16(counts.count))
        let largest = counts.max() ?? 0
        let width = Histogram.countWidth(forLargest: largest)
        writer.write(UInt8(width))
        switch width {
        case 1: for c in counts { writer.write(UInt8(c)) }
        case 2: for c in counts { writer.write(UInt16(c)) }
        case 3:
            for c in counts {
                writer.write(UInt16(truncatingIfNeeded: c))
                writer.write(UInt8(truncatingIfNeeded: c >> 16))
            }
        case 4: for c in counts { writer.write(UInt32(c)) }
        default: for c in counts { writer.write(c) }
        }
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 64 + counts.count * 4)
        encode(into: &writer)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        try self.init(from: &reader)
        if !reader.isAtEnd { throw .invalid("histogram has \(reader.remaining) trailing bytes") }
    }

    public init(from reader: inout ByteReader) throws(DecodingError) {
        let version = try reader.readUInt8("histogram version")
        if let why = Histogram.codingVersionProblem(version) { throw .invalid("histogram \(why)") }
        let flags = try reader.readUInt8("histogram flags")
        if flags & ~3 != 0 { throw .invalid("histogram flags \(flags) has unknown bits") }
        let k = Int(try reader.read(Int16.self, "bin width exponent"))
        let valueCount = try reader.read(UInt64.self, "value count")
        let zeroCount = try reader.read(UInt64.self, "zero count")
        let nan = try reader.read(UInt64.self, "NaN count")
        let posInf = try reader.read(UInt64.self, "+Inf count")
        let negInf = try reader.read(UInt64.self, "-Inf count")
        var lo: Float? = nil, hi: Float? = nil
        if flags & 2 != 0 {
            lo = Float(bitPattern: try reader.read(UInt32.self, "minimum"))
            hi = Float(bitPattern: try reader.read(UInt32.self, "maximum"))
        }
        let n = Int(try reader.read(UInt16.self, "bin count"))
        if n > Histogram.maxBinCount { throw .invalid("bin count \(n) exceeds \(Histogram.maxBinCount)") }
        let width = Int(try reader.readUInt8("count width"))
        if let why = Histogram.countWidthProblem(width, version: version) { throw .invalid(why) }
        let raw = try reader.readBytes(n * width, "bin counts")
        var counts = [UInt64](repeating: 0, count: n)
        raw.withUnsafeBytes { src in
            for j in 0..<n {
                var v: UInt64 = 0
                for b in 0..<width { v |= UInt64(src[j * width + b]) << (8 * b) }
                counts[j] = v
            }
        }
        do {
            try self.init(binWidthLog2: flags & 1 != 0 ? k : nil, counts: counts, valueCount: valueCount,
                          zeroCount: zeroCount, nanCount: nan, positiveInfinityCount: posInf,
                          negativeInfinityCount: negInf, minimum: lo, maximum: hi)
        } catch {
            throw .invalid(error.description)
        }
    }
}
