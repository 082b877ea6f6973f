import Foundation

/// Writes a run's outputs (and optionally its activations) as .npy files plus `index.json`, the
/// format of `shardcal infer`, so another runtime's results can be compared file by file.
public enum TensorDump {
    public struct Entry: Sendable, Equatable {
        /// "output" or "activation".
        public var kind: String
        public var name: String
        /// File name inside the output directory.
        public var file: String
        public var shape: [Int]
    }

    /// Runs `session` on `feeds`, writes `<dir>/<file-safe name>.npy` for each graph output and,
    /// when `activations` is non-nil, for each activation the filter accepts, then `<dir>/index.json`
    /// (`{"model": ..., "tensors": [{"kind", "name", "file", "shape"}, ...]}`). Returns the entries.
    @discardableResult
    public static func run(session: InferenceSession, feeds: [String: Tensor], outputDirectory dir: String,
                           activations: TapFilter?, modelLabel: String = "") throws -> [Entry] {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var used = Set<String>()
        var written: [String: String] = [:]
        var entries: [Entry] = []
        func fileName(for name: String) -> String {
            var base = String(name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" })
            while base.hasPrefix(".") { base.removeFirst() }
            if base.isEmpty { base = "tensor" }
            var candidate = base + ".npy"
            var k = 1
            // Case-insensitive uniqueness so the files survive case-folding file systems.
            while used.contains(candidate.lowercased()) { k += 1; candidate = "\(base)_\(k).npy" }
            used.insert(candidate.lowercased())
            return candidate
        }
        var tapError: Error?
        var tap: ActivationTap?
        if let filter = activations {
            tap = ActivationTap(filter: filter) { act in
                guard tapError == nil else { return }
                let file = fileName(for: act.name)
                do {
                    try NPY.write(Tensor(shape: act.shape, data: Array(act.values)), to: dir + "/" + file)
                    written[act.name] = file
                    entries.append(Entry(kind: "activation", name: act.name, file: file, shape: act.shape))
                } catch { tapError = error }
            }
        }
        let outputs = try session.run(feeds, tap: tap)
        if let tapError { throw tapError }
        for info in session.outputs {
            guard let t = outputs[info.name] else { continue }
            // An output already written as an activation holds the same values: index it twice.
            let file: String
            if let f = written[info.name] { file = f } else {
                file = fileName(for: info.name)
                try NPY.write(t, to: dir + "/" + file)
            }
            entries.append(Entry(kind: "output", name: info.name, file: file, shape: t.shape))
        }
        var json = "{\n  \"model\": \(jsonString(modelLabel)),\n  \"tensors\": [\n"
        json += entries.map { e in
            "    {\"kind\": \"\(e.kind)\", \"name\": \(jsonString(e.name)), \"file\": \(jsonString(e.file)), \"shape\": [\(e.shape.map(String.init).joined(separator: ", "))]}"
        }.joined(separator: ",\n")
        json += "\n  ]\n}\n"
        do {
            try Data(json.utf8).write(to: URL(fileURLWithPath: dir + "/index.json"))
        } catch {
            throw EngineError.fileUnreadable(path: dir + "/index.json", reason: "write failed: \(error.localizedDescription)")
        }
        return entries
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
