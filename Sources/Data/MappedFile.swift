#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory mapping of a whole file. Pages are loaded by the kernel on demand, so
/// a file far larger than RAM can back a dataset.
final class MappedFile: @unchecked Sendable { // immutable after init; the mapping is read-only
    let path: String
    let base: UnsafeRawPointer?
    let size: Int

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENOENT || e == ENOTDIR { throw DataError.fileNotFound(path: path, index: nil) }
            throw DataError.unreadable(path: path, index: nil, reason: String(cString: strerror(e)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw DataError.unreadable(path: path, index: nil, reason: String(cString: strerror(errno)))
        }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw DataError.unreadable(path: path, index: nil, reason: "is a directory") }
        size = Int(st.st_size)
        if size == 0 {
            base = nil
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw DataError.unreadable(path: path, index: nil, reason: "mmap: " + String(cString: strerror(errno)))
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }
}

/// Element-wise normalisation shared by tensor sources (.npy, IDX):
/// `x = (v * scale - mean[c]) / std[c]`, channel `c` taken from the sample's channel axis
/// (axis 0 for NCHW, the last axis for NHWC).
struct TensorNormalizer: Sendable {
    let scale: Float
    let mean: [Float]
    let std: [Float]
    let channels: Int
    let channelStride: Int // elements per channel run (NCHW: H*W; NHWC: 1)
    let identity: Bool

    init(_ p: Preprocessing, sampleShape: [Int]) {
        scale = p.scale
        channels = max(p.mean.count, p.std.count)
        let chw = p.layout == .nchw
        channelStride = chw ? sampleShape.dropFirst().reduce(1, *) : 1
        mean = (0 ..< channels).map { p.mean.count == 1 ? p.mean[0] : p.mean[$0] }
        std = (0 ..< channels).map { p.std.count == 1 ? p.std[0] : p.std[$0] }
        identity = scale == 1 && mean.allSatisfy { $0 == 0 } && std.allSatisfy { $0 == 1 }
    }

    @inline(__always)
    func channel(of element: Int, count: Int) -> Int {
        channels == 1 ? 0 : (element / channelStride) % channels
    }

    /// Lookup table for byte inputs.
    func table() -> [Float] {
        var lut = [Float](repeating: 0, count: channels * 256)
        for c in 0 ..< channels { for v in 0 ..< 256 { lut[c * 256 + v] = (Float(v) * scale - mean[c]) / std[c] } }
        return lut
    }
}
