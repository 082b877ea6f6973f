import CImageCodecs
import Logging

/// An IDX file (MNIST / Fashion-MNIST layout), plain or gzip-compressed (detected by the gzip
/// magic), with an optional IDX label file. Header: two zero bytes, the element type (only
/// `0x08`, unsigned byte, is accepted), the number of dimensions, then one big-endian UInt32 per
/// dimension; row-major data follow. Axis 0 indexes samples; a 3-D image file `[N, rows, cols]`
/// gives samples of shape `[1, rows, cols]` (NCHW) or `[rows, cols, 1]` (NHWC).
///
/// Plain files are memory-mapped; gzip files are inflated through zlib once, at open, and only as
/// far as the samples used (`limit`).
public struct IDXDataset: LabeledCalibrationDataset {
    public let path: String
    public let labelsPath: String?
    public let sampleShape: [Int]
    public let sampleCount: Int
    /// Dimensions from the header.
    public let dimensions: [Int]
    public let policy: CorruptSamplePolicy
    let storage: IDXStorage
    let labels: [UInt8]?
    let lut: [Float]
    let normalizer: TensorNormalizer
    let logger: Logger?

    public init(path: String, labelsPath: String? = nil, preprocessing: Preprocessing = Preprocessing(),
                limit: Int? = nil, policy: CorruptSamplePolicy = .failFast, logger: Logger? = nil) throws {
        self.path = path
        self.labelsPath = labelsPath
        self.policy = policy
        self.logger = logger
        let (dims, store) = try IDXStorage.open(path: path, limit: limit)
        dimensions = dims
        storage = store
        guard dims.count >= 1 else { throw DataError.invalidFormat(path: path, reason: "IDX file has no dimensions") }
        if let limit, limit > dims[0] {
            throw DataError.invalidFormat(path: path, reason: "limit \(limit) exceeds the \(dims[0]) samples in the file")
        }
        sampleCount = limit ?? dims[0]
        let rest = Array(dims.dropFirst())
        if rest.count == 2 {
            sampleShape = preprocessing.layout == .nchw ? [1] + rest : rest + [1]
        } else {
            sampleShape = rest.isEmpty ? [1] : rest
        }
        normalizer = TensorNormalizer(preprocessing, sampleShape: sampleShape)
        if normalizer.channels > 1 {
            let axis = preprocessing.layout == .nchw ? sampleShape.first! : sampleShape.last!
            if axis != normalizer.channels {
                throw DataError.invalidFormat(path: path, reason: "mean/std give \(normalizer.channels) channels but samples have \(axis)")
            }
        }
        lut = normalizer.table()
        if let labelsPath {
            let (ldims, lstore) = try IDXStorage.open(path: labelsPath, limit: sampleCount)
            guard ldims.count == 1 else {
                throw DataError.invalidFormat(path: labelsPath, reason: "label file must be 1-D, header gives \(ldims)")
            }
            guard ldims[0] >= sampleCount else {
                throw DataError.invalidFormat(path: labelsPath, reason: "has \(ldims[0]) labels for \(sampleCount) samples")
            }
            let bytes = lstore.bytes
            guard bytes.count >= lstore.dataOffset + sampleCount else {
                throw DataError.invalidFormat(path: labelsPath, reason: "file truncated: fewer than \(sampleCount) labels")
            }
            labels = Array(bytes[lstore.dataOffset ..< lstore.dataOffset + sampleCount])
        } else {
            labels = nil
        }
    }

    public func label(at index: Int) throws -> Int {
        guard let labels else { throw DataError.unsupported("\(path): no label file configured") }
        guard index >= 0, index < sampleCount else { throw DataError.indexOutOfRange(index: index, sampleCount: sampleCount) }
        return Int(labels[index])
    }

    public func loadSamples(_ indices: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>) throws -> SampleLoadReport {
        let n = sampleElementCount
        let bytes = storage.bytes
        let offset = storage.dataOffset
        return try lut.withUnsafeBufferPointer { lut in
            try loadPacked(indices, sampleCount: sampleCount, elementCount: n, policy: policy, buffer: buffer,
                           logger: logger, pathOf: { _ in path }) { index, dst in
                let start = offset + index * n
                guard start + n <= bytes.count else {
                    throw DataError.corruptSample(path: path, index: index, reason: "file truncated: sample bytes \(start)..<\(start + n) beyond the \(bytes.count) bytes available")
                }
                let s = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + start
                let out = dst.baseAddress!
                if normalizer.channels == 1 {
                    for i in 0 ..< n { out[i] = lut[Int(s[i])] }
                } else {
                    for i in 0 ..< n { out[i] = lut[normalizer.channel(of: i, count: n) * 256 + Int(s[i])] }
                }
            }
        }
    }
}

/// Bytes of an IDX file: a mapping (plain) or an inflated prefix (gzip).
final class IDXStorage: @unchecked Sendable { // immutable after init
    let mapped: MappedFile?
    /// Inflated bytes (gzip input), owned by this object.
    let inflated: UnsafeMutableRawBufferPointer?
    let dataOffset: Int

    init(mapped: MappedFile?, inflated: [UInt8], dataOffset: Int) {
        self.mapped = mapped
        if mapped == nil {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(inflated.count, 1), alignment: 16)
            inflated.withUnsafeBytes { buffer.copyMemory(from: $0) }
            self.inflated = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< inflated.count])
        } else {
            self.inflated = nil
        }
        self.dataOffset = dataOffset
    }

    deinit {
        inflated?.baseAddress.map { $0.deallocate() }
    }

    var bytes: UnsafeRawBufferPointer {
        if let mapped { return mapped.bytes }
        return UnsafeRawBufferPointer(inflated!)
    }

    static func parseHeader(_ b: UnsafeRawBufferPointer, path: String) throws -> (dims: [Int], dataOffset: Int) {
        guard b.count >= 4 else { throw DataError.invalidFormat(path: path, reason: "not an IDX file: shorter than its 4-byte magic") }
        guard b[0] == 0, b[1] == 0 else {
            throw DataError.invalidFormat(path: path, reason: "not an IDX file: magic must start with two zero bytes")
        }
        guard b[2] == 0x08 else {
            throw DataError.invalidFormat(path: path, reason: String(format2: b[2]))
        }
        let ndim = Int(b[3])
        guard b.count >= 4 + 4 * ndim else { throw DataError.invalidFormat(path: path, reason: "IDX header truncated") }
        var dims: [Int] = []
        for d in 0 ..< ndim {
            let o = 4 + 4 * d
            dims.append(Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3]))
        }
        return (dims, 4 + 4 * ndim)
    }

    static func open(path: String, limit: Int?) throws -> ([Int], IDXStorage) {
        let file = try MappedFile(path: path)
        let raw = file.bytes
        if raw.count >= 2, raw[0] == 0x1F, raw[1] == 0x8B {
            // gzip: inflate the header, then only as many bytes as the samples used need.
            guard let gz = gzopen(path, "rb") else {
                throw DataError.unreadable(path: path, index: nil, reason: "gzopen failed")
            }
            defer { gzclose(gz) }
            var head = [UInt8](repeating: 0, count: 4)
            func readInto(_ buf: inout [UInt8], from: Int, count: Int) throws -> Int {
                var got = 0
                while got < count {
                    let n = buf.withUnsafeMutableBytes { p in
                        gzread(gz, p.baseAddress! + from + got, UInt32(min(count - got, 1 << 30)))
                    }
                    if n < 0 {
                        var errnum: Int32 = 0
                        let msg = gzerror(gz, &errnum).map { String(cString: $0) } ?? "zlib error"
                        throw DataError.invalidFormat(path: path, reason: "gzip: \(msg)")
                    }
                    if n == 0 { break }
                    got += Int(n)
                }
                return got
            }
            guard try readInto(&head, from: 0, count: 4) == 4 else {
                throw DataError.invalidFormat(path: path, reason: "gzip stream ends before the IDX magic")
            }
            let ndim = Int(head[3])
            head += [UInt8](repeating: 0, count: 4 * ndim)
            guard try readInto(&head, from: 4, count: 4 * ndim) == 4 * ndim else {
                throw DataError.invalidFormat(path: path, reason: "gzip stream ends inside the IDX header")
            }
            let (dims, offset) = try head.withUnsafeBytes { try parseHeader($0, path: path) }
            let perSample = dims.dropFirst().reduce(1, *)
            let samples = min(limit ?? (dims.first ?? 0), dims.first ?? 0)
            let want = samples * perSample
            var data = head + [UInt8](repeating: 0, count: want)
            let got = try readInto(&data, from: offset, count: want)
            data.removeLast(want - got) // a truncated stream leaves later samples missing
            return (dims, IDXStorage(mapped: nil, inflated: data, dataOffset: offset))
        }
        let (dims, offset) = try parseHeader(raw, path: path)
        return (dims, IDXStorage(mapped: file, inflated: [], dataOffset: offset))
    }
}

extension String {
    init(format2 type: UInt8) {
        let hex = String(type, radix: 16)
        self = "unsupported IDX element type 0x\(hex.count == 1 ? "0" + hex : hex) (only 0x08, unsigned byte)"
    }
}
