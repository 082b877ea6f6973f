import Crypto
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension JobConfig {
    /// The canonical text the config digest is computed over: the fields that change what each
    /// sample contributes (dataset source, preprocessing, shard size, tensor selection), one
    /// `key=value` per line in a fixed order. Output paths, cluster settings, batch size, methods
    /// and the corrupt-sample policy are deliberately left out, and so is `dataset.limit`: how
    /// many samples a state covers is recorded in the state itself (its plan segments), so a
    /// state can be resumed with a larger dataset. Paths appear as written in the file.
    public var canonicalDigestText: String {
        let p = dataset.preprocessing
        func floats(_ v: [Float]) -> String { v.map { "\($0)" }.joined(separator: ",") }
        func list(_ v: [String]) -> String { v.sorted().joined(separator: ",") }
        var lines = ["shardcal-config-digest v2"]
        lines.append("dataset.kind=\(dataset.kind.rawValue)")
        lines.append("dataset.path=\(rawPaths["dataset.path"] ?? dataset.path)")
        if dataset.kind == .imageFolder {
            lines.append("dataset.extensions=\(list(dataset.extensions))")
            lines.append("dataset.recursive=\(dataset.recursive)")
        }
        lines.append("preprocessing.color=\(p.color.rawValue)")
        switch p.resize {
        case nil: lines.append("preprocessing.resize=none")
        case let .shorterSide(s)?: lines.append("preprocessing.resize=shorter_side:\(s)")
        case let .exact(w, h)?: lines.append("preprocessing.resize=exact:\(w)x\(h)")
        }
        lines.append("preprocessing.center_crop=" + (p.centerCrop.map { "\($0.width)x\($0.height)" } ?? "none"))
        lines.append("preprocessing.scale=\(p.scale)")
        lines.append("preprocessing.mean=\(floats(p.mean))")
        lines.append("preprocessing.std=\(floats(p.std))")
        lines.append("preprocessing.layout=\(p.layout.rawValue)")
        lines.append("shard_size=\(shardSize)")
        lines.append("tensors.include.names=\(list(tensors.includeNames))")
        lines.append("tensors.include.op_types=\(list(tensors.includeOpTypes))")
        lines.append("tensors.exclude.names=\(list(tensors.excludeNames))")
        lines.append("tensors.exclude.op_types=\(list(tensors.excludeOpTypes))")
        return lines.joined(separator: "\n") + "\n"
    }

    /// sha256 (lower-case hex) of ``canonicalDigestText``: equal digests mean equal histograms for the same model.
    public var configDigest: String {
        hex(SHA256.hash(data: Array(canonicalDigestText.utf8)))
    }

    /// sha256 (lower-case hex) over the names of the first `count` samples of an image dataset
    /// (paths relative to `root`, one per line), or nil for array datasets (npy, IDX), whose
    /// samples are identified by index. A resumed state is only extended when the dataset's first
    /// samples are still the ones it merged: images inserted into a folder would shift them.
    public static func sampleNamesDigest(_ dataset: any CalibrationDataset, count: Int, root: String) -> String? {
        guard let images = dataset as? ImageDataset, count <= images.paths.count else { return nil }
        let prefix = root.hasSuffix("/") ? root : root + "/"
        var hasher = SHA256()
        for path in images.paths.prefix(count) {
            let name = path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
            hasher.update(data: Array((name + "\n").utf8))
        }
        return hex(hasher.finalize())
    }

    /// sha256 (lower-case hex) of a file's bytes, read in 1 MiB chunks.
    public static func modelDigest(path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENOENT { throw DataError.fileNotFound(path: path, index: nil) }
            throw DataError.unreadable(path: path, index: nil, reason: String(cString: strerror(e)))
        }
        defer { close(fd) }
        var hasher = SHA256()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw DataError.unreadable(path: path, index: nil, reason: String(cString: strerror(errno)))
            }
            if n == 0 { break }
            chunk.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0 ..< n])) }
        }
        return hex(hasher.finalize())
    }
}

func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
    let digits = Array("0123456789abcdef")
    var s = ""
    for b in digest { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 15)]) }
    return s
}
