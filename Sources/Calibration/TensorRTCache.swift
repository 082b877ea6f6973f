/// TensorRT's calibration cache (text): a header line `TRT-<version>-<algorithm>`, then one line
/// per tensor `name: xxxxxxxx`, the 8 lowercase hex digits of the Float32 scale's IEEE-754 bits.
/// ONNX Runtime's TensorRT provider and ModelOpt read the same format.
public struct TensorRTCache: Sendable, Equatable {
    public static let defaultVersion = "8601"
    public static let defaultAlgorithm = "EntropyCalibration2"

    public struct Entry: Sendable, Equatable {
        public var name: String
        public var scale: Float
        public init(name: String, scale: Float) {
            self.name = name
            self.scale = scale
        }
    }

    public var version: String
    public var algorithm: String
    public var entries: [Entry]

    public init(version: String = TensorRTCache.defaultVersion, algorithm: String = TensorRTCache.defaultAlgorithm,
                entries: [Entry] = []) {
        self.version = version
        self.algorithm = algorithm
        self.entries = entries
    }

    public var header: String { "TRT-\(version)-\(algorithm)" }

    public static func hexBits(_ scale: Float) -> String {
        let s = String(scale.bitPattern, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }

    public func text() -> String {
        var out = header + "\n"
        for e in entries { out += "\(e.name): \(TensorRTCache.hexBits(e.scale))\n" }
        return out
    }

    public static func parse(_ text: String) throws(CacheFormatError) -> TensorRTCache {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map {
            $0.hasSuffix("\r") ? $0.dropLast() : $0
        }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        guard let first = lines.first else { throw .empty }
        let headerParts = first.split(separator: "-", maxSplits: 2, omittingEmptySubsequences: false)
        guard headerParts.count == 3, headerParts[0] == "TRT", !headerParts[1].isEmpty, !headerParts[2].isEmpty else {
            throw .badHeader(String(first))
        }
        var cache = TensorRTCache(version: String(headerParts[1]), algorithm: String(headerParts[2]))
        var seen = Set<String>()
        for (index, line) in lines.dropFirst().enumerated() {
            let lineNumber = index + 2
            guard let colon = line.range(of: ": ", options: .backwards) else {
                throw .badLine(lineNumber, String(line))
            }
            let name = String(line[line.startIndex..<colon.lowerBound])
            let digits = line[colon.upperBound...]
            guard !name.isEmpty, digits.count == 8, let bits = UInt32(digits, radix: 16),
                  digits.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw .badLine(lineNumber, String(line))
            }
            if !seen.insert(name).inserted { throw .duplicateTensor(lineNumber, name) }
            cache.entries.append(Entry(name: name, scale: Float(bitPattern: bits)))
        }
        return cache
    }

    /// Reads a cache and checks its header against the one expected. TensorRT silently ignores a
    /// cache whose header differs; shardcal reports it.
    public static func parse(_ text: String, expectingVersion version: String, algorithm: String) throws(CacheFormatError) -> TensorRTCache {
        let cache = try parse(text)
        if cache.version != version || cache.algorithm != algorithm {
            throw .headerMismatch(expected: "TRT-\(version)-\(algorithm)", found: cache.header)
        }
        return cache
    }
}

public enum CacheFormatError: Error, Equatable, CustomStringConvertible {
    case empty
    case badHeader(String)
    case badLine(Int, String)
    case duplicateTensor(Int, String)
    case headerMismatch(expected: String, found: String)

    public var description: String {
        switch self {
        case .empty: return "calibration cache is empty"
        case .badHeader(let h): return "calibration cache header '\(h)' is not of the form TRT-<version>-<algorithm>"
        case let .badLine(n, l): return "calibration cache line \(n) is not 'name: xxxxxxxx' (8 lowercase hex digits): '\(l)'"
        case let .duplicateTensor(n, name): return "calibration cache line \(n): tensor '\(name)' appears twice"
        case let .headerMismatch(expected, found):
            return "calibration cache header is '\(found)' but '\(expected)' was expected (TensorRT would silently ignore this cache)"
        }
    }
}
