import ArgumentParser
import Engine
import Foundation
import Logging

/// `shardcal infer`: runs an ONNX model on a float32 .npy batch and writes the graph outputs (and,
/// with --activations, every tapped activation) as .npy files plus an index.json, so results can
/// be compared with another runtime. The work is `Engine.TensorDump`; this is wiring only.
struct InferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "infer",
        abstract: "Run an ONNX model on a .npy batch and write outputs (and activations) as .npy files."
    )

    @Option(help: "ONNX model file.")
    var model: String

    @Option(help: "Input batch: float32 .npy matching the model's single input; name=path (repeatable) for several inputs.")
    var input: [String]

    @Option(help: "Directory for the .npy files and index.json (created if missing).")
    var outputDir: String

    @Flag(help: "Also write every tapped activation (graph inputs and node outputs).")
    var activations = false

    @Option(help: "With --activations: only these op types (comma-separated, e.g. Conv,Relu; graph inputs are 'Input').")
    var opTypes: String?

    @Option(help: "Kernel threads.")
    var threads: Int = 1

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if threads < 1 { throw ValidationError("--threads must be at least 1") }
        if input.isEmpty { throw ValidationError("--input is required") }
    }

    func run() throws {
        let logger = global.makeLogger("shardcal.infer")
        let session = try InferenceSession(modelPath: model, options: SessionOptions(threads: threads, plannedForTaps: activations),
                                           logger: logger)
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
        let filter: TapFilter? = activations
            ? TapFilter(includeOpTypes: opTypes.map { Set($0.split(separator: ",").map(String.init)) })
            : nil
        let entries = try TensorDump.run(session: session, feeds: feeds, outputDirectory: outputDir,
                                         activations: filter, modelLabel: model)
        logger.info("wrote tensors", metadata: ["count": "\(entries.count)", "dir": "\(outputDir)"])
    }
}
