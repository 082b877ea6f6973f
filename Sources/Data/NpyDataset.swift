import Logging

/// A NumPy `.npy` array (format versions 1–3, C order, dtype float32 `<f4` or uint8 `|u1`),
/// memory-mapped: axis 0 indexes samples, the remaining axes are the sample shape. Only the pages
/// of the samples asked for are read. Scale/mean/std from the preprocessing are applied element
/// wise (channel axis 0 for NCHW, last for NHWC); resize and crop do not apply to arrays.
/// Float samples containing NaN or infinity are reported as corrupt.
public struct NpyDataset: CalibrationDataset {
    public enum DType: String, Sendable { case float32, uint8 }

    public let path: String
    public let dtype: DType
    /// Full array shape, as in the header.
    public let arrayShape: [Int]
    public let sampleShape: [Int]
    public let sampleCount: Int
    public let policy: CorruptSamplePolicy
    let file: MappedFile
    let dataOffset: Int
    let normalizer: TensorNormalizer
    let lut: [Float]
    let logger: Logger?

    /// - Parameter limit: use only the first `limit` samples.
    public init(path: String, preprocessing: Preprocessing = Preprocessing(), limit: Int? = nil,
                policy: CorruptSamplePolicy = .failFast, logger: Logger? = nil) throws {
        self.path = path
        self.policy = policy
        self.logger = logger
        file = try MappedFile(path: path)
        let header = try NpyHeader.parse(file.bytes, path: path)
        dtype = header.dtype
        arrayShape = header.shape
        dataOffset = header.dataOffset
        guard header.shape.count >= 2 else {
            throw DataError.invalidFormat(path: path, reason: "array of shape \(header.shape) has no sample axis (need at least 2 dimensions)")
        }
        sampleShape = Array(header.shape.dropFirst())
        let total = header.shape[0]
        if let limit, limit > total {
            throw DataError.invalidFormat(path: path, reason: "limit \(limit) exceeds the \(total) samples in the array")
        }
        sampleCount = limit ?? total
        normalizer = TensorNormalizer(preprocessing, sampleShape: sampleShape)
        let channelAxis = preprocessing.layout == .nchw ? sampleShape.first! : sampleShape.last!
        if normalizer.channels > 1 && normalizer.channels != channelAxis {
            throw DataError.invalidFormat(path: path, reason: "mean/std give \(normalizer.channels) channels but the sample's channel axis (\(preprocessing.layout.rawValue)) has \(channelAxis)")
        }
        lut = dtype == .uint8 ? normalizer.table() : []
        if file.size < dataOffset + sampleCount * sampleShape.reduce(1, *) * itemSize {
            logger?.warning("npy file is shorter than its header says; missing samples will be reported as corrupt",
                            metadata: ["path": "\(path)"])
        }
    }

    var itemSize: Int { dtype == .float32 ? 4 : 1 }

    public func loadSamples(_ indices: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>) throws -> SampleLoadReport {
        let n = sampleElementCount
        let bytesPerSample = n * itemSize
        let bytes = file.bytes
        return try loadPacked(indices, sampleCount: sampleCount, elementCount: n, policy: policy, buffer: buffer,
                              logger: logger, pathOf: { _ in path }) { index, dst in
            let start = dataOffset + index * bytesPerSample
            guard start + bytesPerSample <= bytes.count else {
                throw DataError.corruptSample(path: path, index: index, reason: "file truncated: sample bytes \(start)..<\(start + bytesPerSample) beyond end of file (\(bytes.count) bytes)")
            }
            let src = bytes.baseAddress! + start
            let out = dst.baseAddress!
            switch dtype {
            case .uint8:
                let s = src.assumingMemoryBound(to: UInt8.self)
                lut.withUnsafeBufferPointer { lut in
                    for i in 0 ..< n { out[i] = lut[normalizer.channel(of: i, count: n) * 256 + Int(s[i])] }
                }
            case .float32:
                // .npy data are only 16-byte aligned relative to the file start; copy bytes, then convert.
                UnsafeMutableRawPointer(out).copyMemory(from: src, byteCount: bytesPerSample)
                var bad = -1
                for i in 0 ..< n where !out[i].isFinite { bad = i; break }
                if bad >= 0 {
                    throw DataError.corruptSample(path: path, index: index, reason: "non-finite value \(out[bad]) at element \(bad)")
                }
                if !normalizer.identity {
                    for i in 0 ..< n {
                        let c = normalizer.channel(of: i, count: n)
                        out[i] = (out[i] * normalizer.scale - normalizer.mean[c]) / normalizer.std[c]
                    }
                }
            }
        }
    }
}

/// The `.npy` header: magic `\x93NUMPY`, version, header length, then a Python dict literal with
/// `descr`, `fortran_order` and `shape`.
struct NpyHeader {
    var dtype: NpyDataset.DType
    var shape: [Int]
    var dataOffset: Int

    static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws -> NpyHeader {
        func bad(_ reason: String) -> DataError { .invalidFormat(path: path, reason: "not a valid .npy file: " + reason) }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard bytes.count >= 10, Array(bytes[0 ..< 6]) == magic else { throw bad("missing \\x93NUMPY magic") }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw bad("truncated header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw bad("unsupported format version \(major)")
        }
        guard bytes.count >= headerStart + headerLength else { throw bad("truncated header") }
        let text = String(decoding: bytes[headerStart ..< headerStart + headerLength], as: UTF8.self)
        guard let descr = dictValue(text, key: "descr") else { throw bad("header has no 'descr'") }
        let d = descr.trimmingCharacters(in: "'\" ")
        let dtype: NpyDataset.DType
        switch d {
        case "<f4", "=f4": dtype = .float32
        case "|u1", "<u1", ">u1", "=u1", "u1": dtype = .uint8
        default: throw DataError.invalidFormat(path: path, reason: "unsupported dtype '\(d)' (float32 '<f4' or uint8 '|u1' only)")
        }
        guard let fortran = dictValue(text, key: "fortran_order") else { throw bad("header has no 'fortran_order'") }
        if fortran.trimmingCharacters(in: " ") != "False" {
            throw DataError.invalidFormat(path: path, reason: "Fortran-ordered arrays are not supported (C order only)")
        }
        guard let shapeText = dictValue(text, key: "shape") else { throw bad("header has no 'shape'") }
        let inner = shapeText.trimmingCharacters(in: "() ")
        var shape: [Int] = []
        for part in inner.split(separator: ",") {
            let t = String(part).trimmingCharacters(in: " L")
            if t.isEmpty { continue }
            guard let v = Int(t), v >= 0 else { throw bad("bad shape \(shapeText)") }
            shape.append(v)
        }
        return NpyHeader(dtype: dtype, shape: shape, dataOffset: headerStart + headerLength)
    }

    /// The raw text of `key`'s value in a flat Python dict literal (values are strings, booleans or tuples).
    static func dictValue(_ text: String, key: String) -> String? {
        let chars = Array(text)
        for quote in ["'", "\""] {
            let pattern = Array(quote + key + quote)
            guard let at = chars.firstRange(of: pattern) else { continue }
            var i = at.upperBound
            while i < chars.count, chars[i] == " " || chars[i] == ":" { i += 1 }
            var j = i
            if j < chars.count, chars[j] == "(" {
                while j < chars.count, chars[j] != ")" { j += 1 }
                return String(chars[i ... min(j, chars.count - 1)])
            }
            if j < chars.count, chars[j] == "'" || chars[j] == "\"" {
                let q = chars[j]
                j += 1
                while j < chars.count, chars[j] != q { j += 1 }
                return String(chars[i ... min(j, chars.count - 1)])
            }
            while j < chars.count, chars[j] != "," && chars[j] != "}" { j += 1 }
            return String(chars[i ..< j])
        }
        return nil
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = self[...]
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
