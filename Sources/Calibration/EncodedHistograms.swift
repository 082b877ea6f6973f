import CHistogramKernel
import Foundation

/// Named histograms in their compact coding, one after the other (per tensor: u32 name length,
/// UTF-8 name, then `Histogram.encode(into:)`), as a RESULT message carries them.
///
/// Validated once, in place: every invariant `Histogram.validate()` checks is checked here too,
/// but the counts stay in the received bytes. The coordinator then merges each shard straight
/// from those bytes (`CalibrationState.merge(shard:encoded:)`) instead of widening ~400 k counts
/// per result into `[UInt64]` arrays first; that widening, and the passes over its output, were
/// most of the coordinator's time per result.
public struct EncodedHistograms: Sendable {
    /// Where one histogram sits in `bytes`, with its decoded header.
    public struct Entry: Sendable, Equatable {
        public let name: String
        let binWidthLog2: Int?
        /// Byte offset of the first count in `bytes`.
        let countsOffset: Int
        let binCount: Int
        /// Bytes per count: 1, 2, 3 (encoding version 2), 4 or 8.
        let countWidth: Int
        let valueCount: UInt64
        let zeroCount: UInt64
        let nanCount: UInt64
        let positiveInfinityCount: UInt64
        let negativeInfinityCount: UInt64
        let minimum: Float?
        let maximum: Float?

        var maxAbs: Float {
            guard let lo = minimum, let hi = maximum else { return 0 }
            return Swift.max(lo.magnitude, hi.magnitude)
        }
    }

    /// The payload as received (possibly the network library's own buffer, not a copy).
    public let bytes: Data
    public let entries: [Entry]
    /// False when built with `checkingCountSums: false`: every invariant but "the bins sum to the
    /// value count" holds; `CalibrationState.mergeChecking` checks that one while it adds the
    /// counts (one pass over them instead of two), or `checkingCountSums()` checks it on its own.
    public let countSumsChecked: Bool

    public var count: Int { entries.count }
    public var names: [String] { entries.map(\.name) }

    /// Parses and validates exactly `count` named histograms filling all of `bytes`. Names must be
    /// unique and at most `maxNameBytes` long. Errors name the tensor and what was wrong.
    public init(validating bytes: [UInt8], count: Int, maxNameBytes: Int = 4096, checkingCountSums: Bool = true) throws(DecodingError) {
        try self.init(validating: Data(bytes), count: count, maxNameBytes: maxNameBytes, checkingCountSums: checkingCountSums)
    }

    /// As above, keeping `bytes` without copying it.
    /// With `checkingCountSums: false` the counts themselves are not read (see `countSumsChecked`).
    public init(validating bytes: Data, count: Int, maxNameBytes: Int = 4096, checkingCountSums: Bool = true) throws(DecodingError) {
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        var seen = Set<String>()
        seen.reserveCapacity(count)
        let end: Result<Int, DecodingError> = bytes.withUnsafeBytes { buf in
            var offset = 0
            do throws(DecodingError) {
                for i in 0..<count {
                    let name = try Self.readName(buf, &offset, index: i, maxNameBytes: maxNameBytes)
                    let entry = try Self.readHistogram(buf, &offset, name: name, sumCounts: checkingCountSums)
                    if !seen.insert(name).inserted { throw DecodingError.invalid("tensor \(name) appears twice") }
                    entries.append(entry)
                }
                return .success(offset)
            } catch {
                return .failure(error)
            }
        }
        let used = try end.get()
        if used != bytes.count {
            throw .invalid("\(bytes.count - used) bytes after the last of \(count) tensors")
        }
        self.bytes = bytes
        self.entries = entries
        self.countSumsChecked = checkingCountSums
    }

    private init(bytes: Data, entries: [Entry], countSumsChecked: Bool) {
        self.bytes = bytes
        self.entries = entries
        self.countSumsChecked = countSumsChecked
    }

    /// This payload with the one invariant `checkingCountSums: false` left out checked too (a pass
    /// over the counts): the same error `init(validating:)` would have thrown, naming the tensor.
    public func checkingCountSums() throws(DecodingError) -> EncodedHistograms {
        if countSumsChecked { return self }
        let failure: DecodingError? = bytes.withUnsafeBytes { buf in
            for e in entries where e.binCount > 0 {
                let total = shc_sum_coded_counts(buf.baseAddress! + e.countsOffset, e.binCount, Int32(e.countWidth))
                if total != e.valueCount {
                    return DecodingError.invalid("histogram of tensor \(e.name): \(HistogramError.invalid("bins sum to \(total) but \(e.valueCount) values are counted"))")
                }
            }
            return nil
        }
        if let failure { throw failure }
        return EncodedHistograms(bytes: bytes, entries: entries, countSumsChecked: true)
    }

    /// Histogram `i` as a value (its counts widened to `[UInt64]`).
    public func histogram(at i: Int) -> Histogram {
        precondition(countSumsChecked, "EncodedHistograms.histogram(at:) before the count sums were checked (use checkingCountSums())")
        let e = entries[i]
        let counts = bytes.withUnsafeBytes { buf in
            [UInt64](unsafeUninitializedCapacity: e.binCount) { dst, initialized in
                if e.binCount > 0 {
                    dst.initialize(repeating: 0)
                    shc_add_coded_counts(dst.baseAddress!, buf.baseAddress! + e.countsOffset, e.binCount, Int32(e.countWidth), 0)
                }
                initialized = e.binCount
            }
        }
        // Validated in init; this cannot throw.
        return try! Histogram(binWidthLog2: e.binWidthLog2, counts: counts, valueCount: e.valueCount,
                              zeroCount: e.zeroCount, nanCount: e.nanCount,
                              positiveInfinityCount: e.positiveInfinityCount,
                              negativeInfinityCount: e.negativeInfinityCount, minimum: e.minimum, maximum: e.maximum)
    }

    /// Every histogram as a value, in order.
    public func decoded() -> [NamedHistogram] {
        entries.indices.map { NamedHistogram(name: entries[$0].name, histogram: histogram(at: $0)) }
    }

    // MARK: parsing

    /// `what` is only built when the bytes are missing: this runs several times per tensor, and
    /// formatting the descriptions up front was a visible share of decoding a RESULT.
    private static func need(_ buf: UnsafeRawBufferPointer, _ offset: Int, _ n: Int, _ what: @autoclosure () -> String) throws(DecodingError) {
        if n < 0 || n > buf.count - offset {
            throw .truncated(reading: what(), offset: offset, needed: n, available: buf.count - offset)
        }
    }

    private static func load<T: FixedWidthInteger>(_ buf: UnsafeRawBufferPointer, _ offset: inout Int, _: T.Type) -> T {
        let v = T(littleEndian: buf.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += MemoryLayout<T>.size
        return v
    }

    private static func readName(_ buf: UnsafeRawBufferPointer, _ offset: inout Int, index: Int,
                                 maxNameBytes: Int) throws(DecodingError) -> String {
        try need(buf, offset, 4, "name length of tensor \(index)")
        let length = Int(load(buf, &offset, UInt32.self))
        if length > maxNameBytes { throw .invalid("name of tensor \(index) is \(length) bytes (limit \(maxNameBytes))") }
        try need(buf, offset, length, "name of tensor \(index)")
        guard let name = String(validating: UnsafeRawBufferPointer(rebasing: buf[offset ..< offset + length]), as: UTF8.self) else {
            throw .invalid("name of tensor \(index) is not valid UTF-8")
        }
        offset += length
        return name
    }

    private static func readHistogram(_ buf: UnsafeRawBufferPointer, _ offset: inout Int, name: String,
                                      sumCounts: Bool) throws(DecodingError) -> Entry {
        var what: String { "histogram of tensor \(name)" }
        try need(buf, offset, 44, what)
        let version = load(buf, &offset, UInt8.self)
        if let why = Histogram.codingVersionProblem(version) { throw .invalid("\(what): \(why)") }
        let flags = load(buf, &offset, UInt8.self)
        if flags & ~3 != 0 { throw .invalid("\(what): flags \(flags) has unknown bits") }
        let k = Int(load(buf, &offset, Int16.self))
        let valueCount = load(buf, &offset, UInt64.self)
        let zeroCount = load(buf, &offset, UInt64.self)
        let nan = load(buf, &offset, UInt64.self)
        let posInf = load(buf, &offset, UInt64.self)
        let negInf = load(buf, &offset, UInt64.self)
        var lo: Float? = nil, hi: Float? = nil
        if flags & 2 != 0 {
            try need(buf, offset, 8, "\(what) min/max")
            lo = Float(bitPattern: load(buf, &offset, UInt32.self))
            hi = Float(bitPattern: load(buf, &offset, UInt32.self))
        }
        try need(buf, offset, 3, "\(what) bin count")
        let n = Int(load(buf, &offset, UInt16.self))
        let width = Int(load(buf, &offset, UInt8.self))
        if n > Histogram.maxBinCount { throw .invalid("\(what): bin count \(n) exceeds \(Histogram.maxBinCount)") }
        if let why = Histogram.countWidthProblem(width, version: version) { throw .invalid("\(what): \(why)") }
        try need(buf, offset, n * width, "\(what) counts")
        let start = offset
        let base = buf.baseAddress! + start
        // Unchecked here: stands for the value count, so every other invariant is still checked.
        let total = n == 0 ? 0 : sumCounts ? shc_sum_coded_counts(base, n, Int32(width)) : valueCount
        let last: UInt64? = n > 0 ? lastCount(base, n, width) : nil
        offset += n * width
        let layout: Int? = flags & 1 != 0 ? k : nil
        do {
            try Histogram.validateParts(binWidthLog2: layout, binCount: n, binTotal: total, lastBin: last,
                                        valueCount: valueCount, zeroCount: zeroCount, minimum: lo, maximum: hi)
        } catch {
            throw .invalid("\(what): \(error)")
        }
        return Entry(name: name, binWidthLog2: layout, countsOffset: start, binCount: n, countWidth: width,
                     valueCount: valueCount, zeroCount: zeroCount, nanCount: nan, positiveInfinityCount: posInf,
                     negativeInfinityCount: negInf, minimum: lo, maximum: hi)
    }

    private static func lastCount(_ base: UnsafeRawPointer, _ n: Int, _ width: Int) -> UInt64 {
        let p = base + (n - 1) * width
        switch width {
        case 1: return UInt64(p.load(as: UInt8.self))
        case 2: return UInt64(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
        case 3: // three bytes exactly: a 4-byte load would read past the last count
            return UInt64(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self))) | UInt64(p.load(fromByteOffset: 2, as: UInt8.self)) << 16
        case 4: return UInt64(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
        default: return UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
        }
    }
}

extension Histogram {
    /// Whether merging `entry` would change this histogram's layout (bin width or bin count).
    func layoutChanges(for entry: EncodedHistograms.Entry) -> Bool {
        guard entry.binWidthLog2 != nil else { return false }
        guard let k = binWidthLog2 else { return true }
        let maxAbs = entry.maxAbs
        if Histogram.requiredBinWidthLog2(forMaxAbs: maxAbs) > k { return true }
        return Histogram.binIndex(ofMagnitude: maxAbs, binWidthLog2: k) + 1 > counts.count
    }

    /// Adds histogram `entry` of an `EncodedHistograms` (whose bytes are `bytes`) into this one,
    /// reading its counts in place: the same result, bit for bit, as `merge(_:)` with the decoded
    /// histogram (the layout is widened by `ensureLayout` exactly as there, and a finer source is
    /// coarsened on the fly by summing its bins `j` into `j >> shift`, the sums `coarsen` makes).
    /// It also makes the check `EncodedHistograms(checkingCountSums: false)` left out, with
    /// overflow detection: one pass over the received counts adds them and sums them.
    /// Returns nil when merged. Otherwise returns why, with the counts and statistics as before
    /// *except* that the layout may have been widened (`layoutChanges(for:)`): the caller restores
    /// a copy taken before in that case.
    mutating func mergeChecking(_ entry: EncodedHistograms.Entry, bytes: UnsafeRawBufferPointer) -> String? {
        if let why = statisticsOverflow(valueCount: entry.valueCount, zeroCount: entry.zeroCount, nan: entry.nanCount,
                                        posInf: entry.positiveInfinityCount, negInf: entry.negativeInfinityCount) {
            return why
        }
        if let otherK = entry.binWidthLog2 {
            ensureLayout(forMaxAbs: entry.maxAbs)
            // >= 0 (ensureLayout made self at least as coarse); >= 63 sends every bin j < 2^63 to bin 0,
            // coarsen's collapse case.
            let shift = UInt32(Swift.min(binWidthLog2! - otherK, 63))
            let src = bytes.baseAddress! + entry.countsOffset
            let n = entry.binCount
            let width = Int32(entry.countWidth)
            var overflow: Int32 = 0
            let total = withMutableCounts { dst in
                shc_add_coded_counts_checked(dst.baseAddress!, src, n, width, shift, &overflow)
            }
            if overflow != 0 || total != entry.valueCount {
                withMutableCounts { dst in shc_sub_coded_counts(dst.baseAddress!, src, n, width, shift) }
                return overflow != 0 ? "bin counts overflow UInt64 (merged or summed)"
                    : "\(HistogramError.invalid("bins sum to \(total) but \(entry.valueCount) values are counted"))"
            }
        } else if entry.valueCount > 0, binWidthLog2 != nil {
            // Zeros only; cannot overflow: bin 0 holds at most valueCount, checked above.
            withMutableCounts { $0[0] &+= entry.valueCount }
        }
        addStatistics(valueCount: entry.valueCount, zeroCount: entry.zeroCount, nan: entry.nanCount,
                      posInf: entry.positiveInfinityCount, negInf: entry.negativeInfinityCount,
                      minimum: entry.minimum, maximum: entry.maximum)
        return nil
    }

    /// Takes `entry`'s counts out again after `mergeChecking` added them, at the present layout
    /// (exact whatever happened in between: coarsening sums bins, and so commutes with the
    /// subtraction). The statistics are the caller's to restore (`restoreScalars`).
    mutating func unmergeCounts(_ entry: EncodedHistograms.Entry, bytes: UnsafeRawBufferPointer) {
        if let otherK = entry.binWidthLog2, let k = binWidthLog2 {
            let shift = UInt32(Swift.min(k - otherK, 63))
            withMutableCounts { dst in
                shc_sub_coded_counts(dst.baseAddress!, bytes.baseAddress! + entry.countsOffset, entry.binCount,
                                     Int32(entry.countWidth), shift)
            }
        } else if entry.valueCount > 0, binWidthLog2 != nil {
            withMutableCounts { $0[0] &-= entry.valueCount }
        }
    }
}
