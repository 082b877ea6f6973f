/// Little-endian byte writer/reader for shardcal's binary formats (state file, wire payloads).
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func write(_ value: UInt8) { bytes.append(value) }

    public mutating func write<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func write(_ data: some Collection<UInt8>) { bytes.append(contentsOf: data) }

    /// A UTF-8 string preceded by its byte length (UInt32).
    public mutating func writeString(_ s: String) {
        let utf8 = Array(s.utf8)
        write(UInt32(utf8.count))
        write(utf8)
    }

    /// A byte blob preceded by its length (UInt32).
    public mutating func writeBlob(_ blob: [UInt8]) {
        write(UInt32(blob.count))
        write(blob)
    }
}

/// Errors from decoding binary data; each names what was being read.
public enum DecodingError: Error, Equatable, CustomStringConvertible {
    case truncated(reading: String, offset: Int, needed: Int, available: Int)
    case invalid(String)

    public var description: String {
        switch self {
        case let .truncated(what, offset, needed, available):
            return "truncated data: reading \(what) at byte \(offset) needs \(needed) bytes, only \(available) left"
        case .invalid(let why):
            return why
        }
    }
}

public struct ByteReader {
    public let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public var remaining: Int { bytes.count - offset }
    public var isAtEnd: Bool { offset == bytes.count }

    mutating func need(_ n: Int, _ what: String) throws(DecodingError) {
        if n < 0 || n > remaining {
            throw .truncated(reading: what, offset: offset, needed: n, available: remaining)
        }
    }

    public mutating func readUInt8(_ what: String) throws(DecodingError) -> UInt8 {
        try need(1, what)
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func read<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws(DecodingError) -> T {
        let size = MemoryLayout<T>.size
        try need(size, what)
        var value = T.zero
        for i in 0..<size { value |= T(truncatingIfNeeded: bytes[offset + i]) << (8 * i) }
        offset += size
        return value
    }

    public mutating func readBytes(_ count: Int, _ what: String) throws(DecodingError) -> ArraySlice<UInt8> {
        try need(count, what)
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    public mutating func readString(_ what: String, maxLength: Int = 1 << 20) throws(DecodingError) -> String {
        let length = Int(try read(UInt32.self, "\(what) length"))
        if length > maxLength { throw .invalid("\(what) length \(length) exceeds \(maxLength)") }
        let raw = try readBytes(length, what)
        guard let s = String(validating: raw, as: UTF8.self) else { throw .invalid("\(what) is not valid UTF-8") }
        return s
    }

    public mutating func readBlob(_ what: String) throws(DecodingError) -> [UInt8] {
        let length = Int(try read(UInt32.self, "\(what) length"))
        return Array(try readBytes(length, what))
    }
}
