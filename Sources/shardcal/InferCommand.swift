import ArgumentParser
import Engine
import Foundation
import Logging

/// `shardcal infer`: runs an ONNX model on a float32 .npy batch and writes the graph outputs (and,
/// with --activations, every tapped activation) as .npy files plus an index.json, so results can
/// be compared with another runtime.
struct InferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "infer",
        abstract: "Run an ONNX model on a .npy batch and write outputs (and activations) as .npy files."
    )

    @Option(help: "ONNX model file.")
    var model: String

    @Option(help: "Input batch: float32 .npy whose shape matches the model's (single) input. Use name=path for several inputs.")
    var input: [String]

    @Option(help: "Directory for the .npy files and index.json (created if missing).")
    var outputDir: String

    @Flag(help: "Also write every tapped activation (graph inputs and node outputs).")
    var activations = false

    @Option(help: "Only tap these op types (comma-separated), with --activations.")
    var opTypes: String?

    @Option(help: "Kernel threads.")
    var threads: Int = 1

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        if threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        var logger = Logger(label: "shardcal.infer")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let session = try InferenceSession(modelPath: model, options: SessionOptions(threads: threads), logger: logger)
        var feeds: [String: Tensor] = [:]
        for spec in input {
            if let eq = spec.firstIndex(of: "="), session.inputs.contains(where: { $0.name == String(spec[..<eq]) }) {
                feeds[String(spec[..<eq])] = try NPY.read(path: String(spec[spec.index(after: eq)...]))
            } else {
                guard session.inputs.count == 1 else {
                    throw ValidationError("the model has inputs \(session.inputs.map(\.name)); pass --input name=path for each")
                }
                feeds[session.inputs[0].name] = try NPY.read(path: spec)
            }
        }
        try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
        var used = Set<String>()
        var index: [(kind: String, name: String, file: String, shape: [Int])] = []
        func fileName(for name: String) -> String {
            var base = String(name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" })
            while base.hasPrefix(".") { base.removeFirst() }
            if base.isEmpty { base = "tensor" }
            var candidate = base + ".npy"
            var k = 1
            while used.contains(candidate.lowercased()) { k += 1; candidate = "\(base)_\(k).npy" }
            used.insert(candidate.lowercased())
            return candidate
        }
        var written: [String: String] = [:]
        var tapError: Error?
        var tap: ActivationTap?
        if activations {
            let filter = TapFilter(includeOpTypes: opTypes.map { Set($0.split(separator: ",").map(String.init)) })
            tap = ActivationTap(filter: filter) { act in
                guard tapError == nil else { return }
                let file = fileName(for: act.name)
                do {
                    try NPY.write(Tensor(shape: act.shape, data: Array(act.values)), to: outputDir + "/" + file)
                    written[act.name] = file
                    index.append(("activation", act.name, file, act.shape))
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
                try NPY.write(t, to: outputDir + "/" + file)
            }
            index.append(("output", info.name, file, t.shape))
        }
        var json = "{\n  \"model\": \(jsonString(model)),\n  \"tensors\": [\n"
        json += index.map { e in
            "    {\"kind\": \"\(e.kind)\", \"name\": \(jsonString(e.name)), \"file\": \(jsonString(e.file)), \"shape\": [\(e.shape.map(String.init).joined(separator: ", "))]}"
        }.joined(separator: ",\n")
        json += "\n  ]\n}\n"
        try Data(json.utf8).write(to: URL(fileURLWithPath: outputDir + "/index.json"))
        logger.info("wrote tensors", metadata: ["count": "\(index.count)", "dir": "\(outputDir)"])
    }

    private func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
