import Calibration
import Yams

extension JobConfig {
    /// Reads, parses and validates a job file. Relative paths are resolved against the file's folder.
    /// - Parameters:
    ///   - overrides: `key.path=value` settings applied on top of the file (CLI flags).
    ///   - checkFiles: check that input files exist and that the model digest matches.
    /// - Throws: ``JobConfigError/invalid(_:)`` listing every problem, each with key path and line.
    public static func load(path: String, overrides: [ConfigOverride] = [], checkFiles: Bool = true) throws -> JobConfig {
        var reader = FileReader()
        do { try reader.read(path: path) } catch {
            switch error as? DecodeFailure {
            case .notFound?: throw JobConfigError.cannotRead(path: path, reason: "file not found")
            case let .io(r)?: throw JobConfigError.cannotRead(path: path, reason: r)
            default: throw JobConfigError.cannotRead(path: path, reason: "unreadable")
            }
        }
        let text = String(decoding: reader.bytes[0 ..< reader.count], as: UTF8.self)
        let base = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        return try parse(yaml: text, fileName: path, baseDirectory: base.isEmpty ? "/" : base,
                         overrides: overrides, checkFiles: checkFiles)
    }

    /// Parses and validates YAML text (see ``load(path:overrides:checkFiles:)``).
    public static func parse(yaml: String, fileName: String? = nil, baseDirectory: String,
                             overrides: [ConfigOverride] = [], checkFiles: Bool = true) throws -> JobConfig {
        let root: ConfigNode
        do {
            if let node = try Yams.compose(yaml: yaml) {
                root = ConfigNode(node, commandLine: false)
            } else {
                root = .mapping([], ConfigLocation(line: 1, column: 1))
            }
        } catch let error as YamlError {
            throw JobConfigError.invalid([yamlIssue(error, file: fileName)])
        }
        return try build(root: root, fileName: fileName, baseDirectory: baseDirectory,
                         overrides: overrides, checkFiles: checkFiles)
    }

    /// Re-validates this config with `overrides` applied on top of the values it was loaded with.
    public mutating func apply(overrides: [ConfigOverride], checkFiles: Bool = true) throws {
        guard let tree = sourceTree else {
            throw JobConfigError.invalid([ConfigIssue(keyPath: "", location: ConfigLocation(line: nil, column: nil),
                                                      message: "config was not loaded from YAML; cannot apply overrides")])
        }
        self = try JobConfig.build(root: tree.node, fileName: sourcePath, baseDirectory: baseDirectory,
                                   overrides: overrides, checkFiles: checkFiles)
    }

    static func yamlIssue(_ error: YamlError, file: String?) -> ConfigIssue {
        switch error {
        case let .scanner(_, problem, mark, _), let .parser(_, problem, mark, _), let .composer(_, problem, mark, _):
            return ConfigIssue(keyPath: "", location: ConfigLocation(line: mark.line, column: mark.column),
                               message: "YAML syntax error: \(problem)", file: file)
        case let .duplicatedKeysInMapping(duplicates, context):
            return ConfigIssue(keyPath: duplicates.joined(separator: ", "),
                               location: ConfigLocation(line: context.mark.line, column: context.mark.column),
                               message: "duplicate key", file: file)
        default:
            return ConfigIssue(keyPath: "", location: ConfigLocation(line: nil, column: nil), message: "\(error)", file: file)
        }
    }

    static let topKeys = ["model", "dataset", "shard_size", "batch_size", "methods", "tensors", "outputs", "cluster"]

    static func build(root original: ConfigNode, fileName: String?, baseDirectory: String,
                      overrides: [ConfigOverride], checkFiles: Bool) throws -> JobConfig {
        var root = original
        for o in overrides {
            let value: ConfigNode
            do {
                value = try Yams.compose(yaml: o.value).map { ConfigNode($0, commandLine: true) }
                    ?? .null(ConfigLocation(line: nil, column: nil, fromCommandLine: true))
            } catch {
                value = .scalar(o.value, ConfigLocation(line: nil, column: nil, fromCommandLine: true))
            }
            root.set(ArraySlice(o.keyPath.split(separator: ".").map(String.init)), to: value)
        }
        var w = ConfigWalker(file: fileName)
        var raw: [String: String] = [:]
        func path(_ key: String, _ text: String?) -> String? {
            guard let text else { return nil }
            raw[key] = text
            return resolvePath(text, base: baseDirectory)
        }

        let top = w.mapping(root, "", allowed: topKeys) ?? [:]

        // model
        var model = ModelConfig(path: "", sha256: nil, inputs: [])
        if let m = w.mapping(top["model"], "model", allowed: ["path", "sha256", "inputs"]) {
            if let p = path("model.path", w.string(m["path"], "model.path")) { model.path = p }
            else if m["path"] == nil { w.report("model.path", top["model"]!.location, "missing required key 'path'") }
            model.sha256 = w.string(m["sha256"], "model.sha256")?.lowercased()
            model.inputs = w.strings(m["inputs"], "model.inputs") ?? []
        } else if top["model"] == nil {
            w.report("model", root.location, "missing required section 'model'")
        }

        // dataset
        var dataset = DatasetConfig(kind: .idx, path: "")
        var datasetOK = false
        if let d = w.mapping(top["dataset"], "dataset",
                             allowed: ["kind", "path", "labels", "limit", "on_corrupt", "extensions", "recursive", "preprocessing"]) {
            let loc = top["dataset"]!.location
            if let k = w.choice(d["kind"], "dataset.kind", DatasetKind.self) { dataset.kind = k; datasetOK = true }
            else if d["kind"] == nil { w.report("dataset.kind", loc, "missing required key 'kind' (one of \(DatasetKind.allCases.map(\.rawValue).joined(separator: ", ")))") }
            if let p = path("dataset.path", w.string(d["path"], "dataset.path")) { dataset.path = p }
            else if d["path"] == nil { w.report("dataset.path", loc, "missing required key 'path'"); datasetOK = false }
            dataset.labels = path("dataset.labels", w.string(d["labels"], "dataset.labels"))
            dataset.limit = w.int(d["limit"], "dataset.limit")
            if let policy = w.choice(d["on_corrupt"], "dataset.on_corrupt", CorruptSamplePolicy.self) { dataset.onCorrupt = policy }
            if let e = w.strings(d["extensions"], "dataset.extensions") { dataset.extensions = e.map { $0.lowercased().trimmingCharacters(in: ".") } }
            if let r = w.bool(d["recursive"], "dataset.recursive") { dataset.recursive = r }
            dataset.preprocessing = preprocessing(d["preprocessing"], &w)
        } else if top["dataset"] == nil {
            w.report("dataset", root.location, "missing required section 'dataset'")
        }

        let shardSize = w.int(top["shard_size"], "shard_size") ?? 64
        let batchSize = w.int(top["batch_size"], "batch_size") ?? 16
        let methods = self.methods(top["methods"], &w)
        let tensors = self.tensors(top["tensors"], &w)
        let outputs = self.outputs(top["outputs"], &w, path: path)
        let cluster = self.cluster(top["cluster"], &w)

        var config = JobConfig(model: model, dataset: dataset, shardSize: shardSize, batchSize: batchSize,
                               methods: methods, tensors: tensors, outputs: outputs, cluster: cluster,
                               baseDirectory: baseDirectory, sourcePath: fileName, locations: w.locations, rawPaths: raw)
        config.sourceTree = SourceTree(node: original)
        config.effectiveTree = SourceTree(node: root)
        config.validateValues(&w, datasetKindKnown: datasetOK, checkFiles: checkFiles)
        if !w.issues.isEmpty {
            let sorted = w.issues.enumerated().sorted { a, b in
                let la = a.element.location.line ?? Int.max, lb = b.element.location.line ?? Int.max
                return la != lb ? la < lb : a.offset < b.offset
            }.map(\.element)
            throw JobConfigError.invalid(sorted)
        }
        return config
    }

    static func preprocessing(_ node: ConfigNode?, _ w: inout ConfigWalker) -> Preprocessing {
        var p = Preprocessing()
        let base = "dataset.preprocessing"
        guard let m = w.mapping(node, base, allowed: ["color", "resize", "center_crop", "scale", "mean", "std", "layout", "dtype"]) else { return p }
        if let c = w.choice(m["color"], base + ".color", Preprocessing.ColorOrder.self) { p.color = c }
        if let r = m["resize"] {
            if case .null = r {} else if let rm = w.mapping(r, base + ".resize", allowed: ["shorter_side", "width", "height"]) {
                let s = w.int(rm["shorter_side"], base + ".resize.shorter_side")
                let wd = w.int(rm["width"], base + ".resize.width")
                let ht = w.int(rm["height"], base + ".resize.height")
                if let s {
                    if wd != nil || ht != nil { w.report(base + ".resize", r.location, "give either shorter_side or width and height, not both") }
                    p.resize = .shorterSide(s)
                } else if let wd, let ht {
                    p.resize = .exact(width: wd, height: ht)
                } else if rm["shorter_side"] == nil {
                    w.report(base + ".resize", r.location, "needs shorter_side, or both width and height")
                }
            }
        }
        if let c = m["center_crop"] {
            switch c {
            case .null: break
            case .scalar:
                if let v = w.int(c, base + ".center_crop") { p.centerCrop = .init(width: v, height: v) }
            default:
                if let cm = w.mapping(c, base + ".center_crop", allowed: ["width", "height"]) {
                    let wd = w.int(cm["width"], base + ".center_crop.width"), ht = w.int(cm["height"], base + ".center_crop.height")
                    if let wd, let ht { p.centerCrop = .init(width: wd, height: ht) }
                    else if cm["width"] == nil || cm["height"] == nil { w.report(base + ".center_crop", c.location, "needs width and height (or a single number)") }
                }
            }
        }
        if let s = w.double(m["scale"], base + ".scale") { p.scale = Float(s) }
        if let v = w.numbers(m["mean"], base + ".mean") { p.mean = v }
        if let v = w.numbers(m["std"], base + ".std") { p.std = v }
        if let l = w.choice(m["layout"], base + ".layout", Preprocessing.Layout.self) { p.layout = l }
        if let d = w.scalar(m["dtype"], base + ".dtype", expected: "float32"), d != "float32" {
            w.report(base + ".dtype", m["dtype"]!.location, "only float32 is supported, got '\(d)'")
        }
        return p
    }

    static func methods(_ node: ConfigNode?, _ w: inout ConfigWalker) -> [CalibrationMethod] {
        guard let node else { return [.entropy] }
        let items: [ConfigNode]
        switch node {
        case .null: return [.entropy]
        case .scalar, .mapping: items = [node]
        case let .sequence(list, _): items = list
        }
        var out: [CalibrationMethod] = []
        for (i, item) in items.enumerated() {
            let path = items.count == 1 && node.isNotSequence ? "methods" : "methods[\(i)]"
            switch item {
            case let .scalar(s, l):
                switch s.lowercased() {
                case "entropy": out.append(.entropy)
                case "mse": out.append(.mse)
                case "max": out.append(.max)
                case "percentile": out.append(.percentile(CalibrationMethod.defaultPercentile))
                default: w.report(path, l, "unknown method '\(s)' (entropy, percentile, mse, max)")
                }
            case .mapping:
                if let m = w.mapping(item, path, allowed: ["percentile"]) {
                    if let v = w.double(m["percentile"], path + ".percentile") {
                        if !(v > 0 && v <= 100) { w.report(path + ".percentile", "must be in (0, 100], got \(v)") }
                        out.append(.percentile(v))
                    } else if m["percentile"].map({ if case .null = $0 { return true } else { return false } }) ?? false {
                        out.append(.percentile(CalibrationMethod.defaultPercentile))
                    }
                }
            default:
                w.report(path, item.location, "expected a method name or {percentile: value}, got \(item.kindName)")
            }
        }
        if out.isEmpty && w.issues.allSatisfy({ !$0.keyPath.hasPrefix("methods") }) {
            w.report("methods", node.location, "at least one method is needed")
        }
        return out.isEmpty ? [.entropy] : out
    }

    static func tensors(_ node: ConfigNode?, _ w: inout ConfigWalker) -> TensorSelection {
        var t = TensorSelection()
        guard let m = w.mapping(node, "tensors", allowed: ["include", "exclude"]) else { return t }
        if let inc = w.mapping(m["include"], "tensors.include", allowed: ["names", "op_types"]) {
            t.includeNames = w.strings(inc["names"], "tensors.include.names") ?? []
            t.includeOpTypes = w.strings(inc["op_types"], "tensors.include.op_types") ?? []
        }
        if let exc = w.mapping(m["exclude"], "tensors.exclude", allowed: ["names", "op_types"]) {
            t.excludeNames = w.strings(exc["names"], "tensors.exclude.names") ?? []
            t.excludeOpTypes = w.strings(exc["op_types"], "tensors.exclude.op_types") ?? []
        }
        return t
    }

    static func outputs(_ node: ConfigNode?, _ w: inout ConfigWalker, path: (String, String?) -> String?) -> OutputConfig {
        var o = OutputConfig()
        guard let m = w.mapping(node, "outputs", allowed: ["cache", "cache_header", "table", "state", "reuse"]) else { return o }
        o.cachePath = path("outputs.cache", w.string(m["cache"], "outputs.cache"))
        o.tablePath = path("outputs.table", w.string(m["table"], "outputs.table"))
        o.statePath = path("outputs.state", w.string(m["state"], "outputs.state"))
        if let r = w.bool(m["reuse"], "outputs.reuse") { o.reuse = r }
        if let h = w.mapping(m["cache_header"], "outputs.cache_header", allowed: ["tensorrt_version", "algorithm"]) {
            if let v = w.int(h["tensorrt_version"], "outputs.cache_header.tensorrt_version") { o.cacheHeader.tensorRTVersion = v }
            if let a = w.string(h["algorithm"], "outputs.cache_header.algorithm") { o.cacheHeader.algorithm = a }
        }
        return o
    }

    static func cluster(_ node: ConfigNode?, _ w: inout ConfigWalker) -> ClusterConfig {
        var c = ClusterConfig()
        let keys = ["bind", "publish", "workers", "credits_per_worker", "heartbeat_interval", "worker_timeout",
                    "checkpoint_every_results", "checkpoint_every_seconds", "max_shard_failures", "max_message_bytes",
                    "backup_leases"]
        guard let m = w.mapping(node, "cluster", allowed: keys) else { return c }
        if let v = w.string(m["bind"], "cluster.bind") { c.bind = v }
        if let v = w.string(m["publish"], "cluster.publish") { c.publish = v }
        if let v = w.int(m["workers"], "cluster.workers") { c.workers = v }
        if let v = w.int(m["credits_per_worker"], "cluster.credits_per_worker") { c.creditsPerWorker = v }
        if let v = w.double(m["heartbeat_interval"], "cluster.heartbeat_interval") { c.heartbeatInterval = v }
        if let v = w.double(m["worker_timeout"], "cluster.worker_timeout") { c.workerTimeout = v }
        if let v = w.int(m["checkpoint_every_results"], "cluster.checkpoint_every_results") { c.checkpointEveryResults = v }
        if let v = w.double(m["checkpoint_every_seconds"], "cluster.checkpoint_every_seconds") { c.checkpointEverySeconds = v }
        if let v = w.int(m["max_shard_failures"], "cluster.max_shard_failures") { c.maxShardFailures = v }
        if let v = w.int(m["max_message_bytes"], "cluster.max_message_bytes") { c.maxMessageBytes = v }
        if let v = w.bool(m["backup_leases"], "cluster.backup_leases") { c.backupLeases = v }
        return c
    }

    /// Value and file checks; each problem is reported at the line of its key.
    func validateValues(_ w: inout ConfigWalker, datasetKindKnown: Bool, checkFiles: Bool) {
        if let sha = model.sha256, sha.count != 64 || !sha.allSatisfy({ $0.isHexDigit }) {
            w.report("model.sha256", "must be 64 hexadecimal digits, got '\(sha)'")
        }
        if checkFiles, !model.path.isEmpty {
            let k = fileKind(model.path)
            if !k.exists { w.report("model.path", "file not found: \(model.path)") }
            else if k.isDirectory { w.report("model.path", "is a directory, expected an ONNX file: \(model.path)") }
            else if let sha = model.sha256, sha.count == 64 {
                do {
                    let actual = try JobConfig.modelDigest(path: model.path)
                    if actual != sha { w.report("model.sha256", "model file digest is \(actual), config expects \(sha)") }
                } catch { w.report("model.path", "cannot read: \(error)") }
            }
        }
        if let limit = dataset.limit, limit < 1 { w.report("dataset.limit", "must be at least 1, got \(limit)") }
        if dataset.extensions.isEmpty { w.report("dataset.extensions", "needs at least one extension") }
        if datasetKindKnown {
            let isImage = dataset.kind == .imageFolder || dataset.kind == .imageList
            if checkFiles, !dataset.path.isEmpty {
                let k = fileKind(dataset.path)
                if !k.exists { w.report("dataset.path", "not found: \(dataset.path)") }
                else if dataset.kind == .imageFolder && !k.isDirectory { w.report("dataset.path", "image-folder needs a folder: \(dataset.path)") }
                else if dataset.kind != .imageFolder && k.isDirectory { w.report("dataset.path", "\(dataset.kind.rawValue) needs a file, got a folder: \(dataset.path)") }
            }
            if let labels = dataset.labels {
                if dataset.kind != .idx { w.report("dataset.labels", "labels are only read for idx datasets") }
                else if checkFiles, !fileKind(labels).exists { w.report("dataset.labels", "file not found: \(labels)") }
            }
            let p = dataset.preprocessing
            if !isImage {
                if p.resize != nil { w.report("dataset.preprocessing.resize", "resize applies to image datasets only") }
                if p.centerCrop != nil { w.report("dataset.preprocessing.center_crop", "center_crop applies to image datasets only") }
                if p.color != .rgb, w.locations["dataset.preprocessing.color"] != nil {
                    w.report("dataset.preprocessing.color", "color applies to image datasets only")
                }
            }
            if isImage, case .shorterSide? = p.resize, p.centerCrop == nil {
                w.report("dataset.preprocessing.resize", "a shorter_side resize gives samples of varying size; add center_crop")
            }
            // Tensor sources have no colour axis of their own: mean/std channel counts are checked when the file is opened.
            for problem in p.problems() where isImage || (problem.field != "mean" && problem.field != "std") || problem.message.contains("finite") || problem.message.contains("non-zero") {
                w.report("dataset.preprocessing." + problem.field, problem.message)
            }
        }
        if shardSize < 1 { w.report("shard_size", "must be at least 1, got \(shardSize)") }
        if batchSize < 1 { w.report("batch_size", "must be at least 1, got \(batchSize)") }
        if outputs.reuse && outputs.cachePath == nil && outputs.statePath == nil {
            w.report("outputs.reuse", "reuse needs outputs.cache or outputs.state to reuse")
        }
        if outputs.cacheHeader.tensorRTVersion < 1 {
            w.report("outputs.cache_header.tensorrt_version", "must be positive, got \(outputs.cacheHeader.tensorRTVersion)")
        }
        if !CacheHeaderConfig.knownAlgorithms.contains(outputs.cacheHeader.algorithm) {
            w.report("outputs.cache_header.algorithm", "'\(outputs.cacheHeader.algorithm)' is not one of \(CacheHeaderConfig.knownAlgorithms.joined(separator: ", "))")
        }
        for (key, endpoint) in [("cluster.bind", cluster.bind), ("cluster.publish", cluster.publish)] {
            if !(endpoint.hasPrefix("tcp://") || endpoint.hasPrefix("ipc://") || endpoint.hasPrefix("inproc://")) {
                w.report(key, "endpoint must start with tcp://, ipc:// or inproc://, got '\(endpoint)'")
            }
        }
        if cluster.workers < 0 { w.report("cluster.workers", "must be 0 or more, got \(cluster.workers)") }
        if cluster.creditsPerWorker < 1 { w.report("cluster.credits_per_worker", "must be at least 1, got \(cluster.creditsPerWorker)") }
        if !(cluster.heartbeatInterval > 0) { w.report("cluster.heartbeat_interval", "must be positive, got \(cluster.heartbeatInterval)") }
        if !(cluster.workerTimeout > cluster.heartbeatInterval) {
            w.report("cluster.worker_timeout", "must be longer than heartbeat_interval (\(cluster.heartbeatInterval) s), got \(cluster.workerTimeout)")
        }
        if cluster.checkpointEveryResults < 1 { w.report("cluster.checkpoint_every_results", "must be at least 1, got \(cluster.checkpointEveryResults)") }
        if !(cluster.checkpointEverySeconds > 0) { w.report("cluster.checkpoint_every_seconds", "must be positive, got \(cluster.checkpointEverySeconds)") }
        if cluster.maxShardFailures < 1 { w.report("cluster.max_shard_failures", "must be at least 1, got \(cluster.maxShardFailures)") }
        if cluster.maxMessageBytes < 4096 { w.report("cluster.max_message_bytes", "must be at least 4096, got \(cluster.maxMessageBytes)") }
    }
}

extension ConfigNode {
    var isNotSequence: Bool { if case .sequence = self { return false } else { return true } }
}

/// The parsed YAML a config came from (kept so overrides can be re-applied).
struct SourceTree: @unchecked Sendable { // ConfigNode holds only value types
    let node: ConfigNode
}

extension JobConfig {
    /// The configuration as loaded, with every override applied, as one line of YAML (JSON flow
    /// style, which YAML parsers read as YAML). Every scalar is written quoted, exactly as it was
    /// read, so parsing this text gives the same config, and the same ``configDigest``, as the file
    /// plus its overrides. Coordinators send it to workers, so `--set` reaches them too.
    public var effectiveYAML: String? {
        (effectiveTree ?? sourceTree).map { $0.node.flowText }
    }
}

extension ConfigNode {
    /// JSON text of this tree (scalars as strings, null as null, key order kept).
    var flowText: String {
        switch self {
        case let .scalar(s, _): return ConfigNode.quoted(s)
        case .null: return "null"
        case let .sequence(items, _): return "[" + items.map(\.flowText).joined(separator: ", ") + "]"
        case let .mapping(pairs, _):
            return "{" + pairs.map { ConfigNode.quoted($0.key) + ": " + $0.value.flowText }.joined(separator: ", ") + "}"
        }
    }

    static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7F {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
