import Foundation

/// Minimal .npy (NumPy format 1.0/2.0/3.0) reader/writer for float tensors.
/// Reads little-endian float32, float64 and uint8 arrays in C order (converted to Float);
/// writes float32 version 1.0 files.
public enum NPY {
    public struct FormatError: Error, CustomStringConvertible {
        public let file: String
        public let reason: String
        public var description: String { "\(file): not a supported .npy file: \(reason)" }
    }

    public static func read(path: String) throws -> Tensor {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw EngineError.fileUnreadable(path: path, reason: error.localizedDescription)
        }
        return try decode([UInt8](data), file: path)
    }

    public static func decode(_ b: [UInt8], file: String = "<memory>") throws -> Tensor {
        func fail(_ r: String) -> FormatError { FormatError(file: file, reason: r) }
        guard b.count >= 10, b[0] == 0x93, Array(b[1...5]) == Array("NUMPY".utf8) else { throw fail("missing magic") }
        let major = b[6]
        var headerLen: Int, start: Int
        switch major {
        case 1: headerLen = Int(b[8]) | Int(b[9]) << 8; start = 10
        case 2, 3:
            guard b.count >= 12 else { throw fail("truncated header") }
            headerLen = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24; start = 12
        default: throw fail("version \(major)")
        }
        guard start + headerLen <= b.count else { throw fail("truncated header") }
        let header = String(decoding: b[start..<(start + headerLen)], as: UTF8.self)
        func value(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descr = value("descr"), let q = descr.dropFirst().firstIndex(of: "'") else { throw fail("no descr") }
        let dtype = String(descr[descr.index(after: descr.startIndex)..<q])
        if let fo = value("fortran_order"), fo.hasPrefix("True") { throw fail("Fortran order") }
        guard let sh = value("shape"), let open = sh.firstIndex(of: "("), let close = sh.firstIndex(of: ")") else { throw fail("no shape") }
        let shape = try sh[sh.index(after: open)..<close].split(separator: ",").map { s -> Int in
            guard let v = Int(s.trimmingCharacters(in: .whitespaces)), v >= 0 else { throw fail("bad shape \(sh)") }
            return v
        }
        let n = shape.reduce(1, *)
        let body = start + headerLen
        let size: Int
        switch dtype {
        case "<f4", "f4": size = 4
        case "<f8", "f8": size = 8
        case "|u1", "u1": size = 1
        default: throw fail("dtype \(dtype) (float32, float64, uint8 only)")
        }
        guard b.count - body >= n * size else { throw fail("data truncated: \(b.count - body) bytes for \(n) × \(size)") }
        let values: [Float] = b.withUnsafeBytes { raw in
            let p = raw.baseAddress! + body
            switch size {
            case 4: return (0..<n).map { Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            case 8: return (0..<n).map { Float(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)))) }
            default: return (0..<n).map { Float(p.load(fromByteOffset: $0, as: UInt8.self)) }
            }
        }
        return Tensor(shape: shape, data: values)
    }

    public static func encode(_ t: Tensor) -> [UInt8] {
        let dims = t.shape.map(String.init).joined(separator: ", ")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)\(t.shape.count == 1 ? "," : "")), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        let hl = header.utf8.count
        out += [UInt8(hl & 0xff), UInt8(hl >> 8)]
        out += Array(header.utf8)
        out.reserveCapacity(out.count + t.data.count * 4)
        for v in t.data {
            let u = v.bitPattern.littleEndian
            out += [UInt8(u & 0xff), UInt8((u >> 8) & 0xff), UInt8((u >> 16) & 0xff), UInt8(u >> 24)]
        }
        return out
    }

    public static func write(_ t: Tensor, to path: String) throws {
        do { try Data(encode(t)).write(to: URL(fileURLWithPath: path)) } catch {
            throw EngineError.fileUnreadable(path: path, reason: "write failed: \(error.localizedDescription)")
        }
    }
}
