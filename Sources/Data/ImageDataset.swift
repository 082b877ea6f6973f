import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// JPEG/PNG files from a folder (recursive, hidden files skipped, sorted by relative path bytes) or from a list file (one path
/// per line, in list order; relative paths are relative to the list file's folder; blank lines
/// and lines starting with `#` are ignored). Each sample is decoded and preprocessed on demand.
public struct ImageDataset: CalibrationDataset {
    public let paths: [String]
    public let preprocessing: Preprocessing
    public let policy: CorruptSamplePolicy
    public let outputSize: Preprocessing.Size
    public let sampleShape: [Int]
    let logger: Logger?

    public var sampleCount: Int { paths.count }

    /// - Parameters:
    ///   - paths: image files, in sample order.
    ///   - outputSize: the fixed sample size; when nil it comes from the preprocessing (crop or
    ///     exact resize) or, failing that, from the first image (every other image must match).
    public init(paths: [String], preprocessing: Preprocessing, policy: CorruptSamplePolicy = .failFast,
                outputSize: Preprocessing.Size? = nil, logger: Logger? = nil) throws {
        if let problem = preprocessing.problems().first {
            throw DataError.unsupported("preprocessing \(problem.field): \(problem.message)")
        }
        self.paths = paths
        self.preprocessing = preprocessing
        self.policy = policy
        self.logger = logger
        if let size = outputSize ?? preprocessing.fixedOutputSize {
            self.outputSize = size
        } else {
            guard let first = paths.first else { throw DataError.emptyDataset(path: "(no images)") }
            if case .shorterSide? = preprocessing.resize {
                throw DataError.unsupported("a shorter-side resize without a centre crop gives samples of varying size; add center_crop")
            }
            // The first readable image fixes the size; under skip-and-count unreadable leading images are passed over
            // here and reported when their samples are loaded.
            var size: Preprocessing.Size?
            for (index, path) in paths.enumerated() {
                do {
                    let image = try ImageDecoder.decodeRGB(path: path)
                    size = preprocessing.outputSize(inputWidth: image.width, inputHeight: image.height)
                    break
                } catch {
                    if policy == .failFast { throw (error as? DataError).map { $0.withIndex(index) } ?? error }
                    logger?.warning("image cannot give the sample size", metadata: ["path": "\(path)", "error": "\(error)"])
                }
            }
            guard let size else { throw DataError.emptyDataset(path: first + " (no readable image)") }
            self.outputSize = size
        }
        self.sampleShape = preprocessing.sampleShape(for: self.outputSize)
    }

    /// All image files under `folder` with one of `extensions` (case-insensitive), sorted by their
    /// path relative to `folder`, compared byte by byte (locale-independent).
    public static func listFolder(_ folder: String, extensions: [String] = ["jpg", "jpeg", "png"],
                                  recursive: Bool = true) throws -> [String] {
        let exts = Set(extensions.map { $0.lowercased() })
        var found: [String] = []
        func walk(_ rel: String) throws {
            let dirPath = rel.isEmpty ? folder : folder + "/" + rel
            guard let dir = opendir(dirPath) else {
                let e = errno
                if e == ENOENT { throw DataError.fileNotFound(path: dirPath, index: nil) }
                throw DataError.unreadable(path: dirPath, index: nil, reason: String(cString: strerror(e)))
            }
            defer { closedir(dir) }
            var subdirs: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
                }
                if name == "." || name == ".." || name.hasPrefix(".") { continue }
                let relName = rel.isEmpty ? name : rel + "/" + name
                var st = stat()
                guard stat(folder + "/" + relName, &st) == 0 else { continue }
                if (st.st_mode & S_IFMT) == S_IFDIR {
                    if recursive { subdirs.append(relName) }
                } else if let dot = name.lastIndex(of: "."), exts.contains(name[name.index(after: dot)...].lowercased()) {
                    found.append(relName)
                }
            }
            for sub in subdirs { try walk(sub) }
        }
        try walk("")
        found.sort { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        return found.map { folder + "/" + $0 }
    }

    /// Paths from a list file (see the type's documentation).
    public static func readList(_ listPath: String) throws -> [String] {
        var reader = FileReader()
        do { try reader.read(path: listPath) } catch let f as DecodeFailure { throw f.dataError(path: listPath, index: nil) }
        let text = String(decoding: reader.bytes[0 ..< reader.count], as: UTF8.self)
        let base = listPath.contains("/") ? String(listPath[..<listPath.lastIndex(of: "/")!]) : "."
        var out: [String] = []
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            out.append(line.hasPrefix("/") ? line : base + "/" + line)
        }
        return out
    }

    public func loadSamples(_ indices: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>) throws -> SampleLoadReport {
        var reader = FileReader()
        var pixels: [UInt8] = []
        var pipeline = ImagePipeline(spec: preprocessing)
        let expected = outputSize
        return try loadPacked(indices, sampleCount: sampleCount, elementCount: sampleElementCount, policy: policy,
                              buffer: buffer, logger: logger, pathOf: { paths[$0] }) { index, dst in
            let path = paths[index]
            do {
                try reader.read(path: path)
                let (w, h) = try reader.bytes.withUnsafeBytes { raw in
                    try ImageDecoder.decodeRGB(UnsafeRawBufferPointer(rebasing: raw[0 ..< reader.count]), into: &pixels)
                }
                try pixels.withUnsafeBufferPointer { px in
                    try pipeline.run(rgb: px, width: w, height: h, expected: expected, into: dst)
                }
            } catch let failure as DecodeFailure {
                throw failure.dataError(path: path, index: index)
            }
        }
    }
}

extension Substring {
    func trimmingWhitespace() -> String {
        var s = self[...]
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return String(s)
    }
}
