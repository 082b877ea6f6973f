/// Errors raised while loading or running a model. Every message names the file, node, op or
/// attribute involved so a user can find the problem in the model.
public enum EngineError: Error, CustomStringConvertible, Equatable {
    /// The file could not be read.
    case fileUnreadable(path: String, reason: String)
    /// The bytes are not a (complete) ONNX model.
    case invalidModel(source: String, reason: String)
    /// The model imports an opset outside the supported range.
    case unsupportedOpset(domain: String, version: Int, supported: ClosedRange<Int>)
    /// A node uses an op the engine does not implement.
    case unsupportedOp(node: String, op: String, opset: Int)
    /// A node uses an attribute value or input form the engine does not implement.
    case unsupportedAttribute(node: String, op: String, detail: String)
    /// A node's inputs are inconsistent (shapes, missing inputs, wrong types).
    case invalidNode(node: String, op: String, detail: String)
    /// An initializer could not be decoded (type, size, external data).
    case invalidInitializer(name: String, detail: String)
    /// The feeds given to `run` do not match the model's inputs.
    case invalidFeed(name: String, detail: String)

    public var description: String {
        switch self {
        case let .fileUnreadable(path, reason): return "cannot read '\(path)': \(reason)"
        case let .invalidModel(source, reason): return "'\(source)' is not a valid ONNX model: \(reason)"
        case let .unsupportedOpset(domain, version, supported):
            return "opset \(version) of domain '\(domain.isEmpty ? "ai.onnx" : domain)' is not supported (supported: \(supported.lowerBound)...\(supported.upperBound))"
        case let .unsupportedOp(node, op, opset): return "node '\(node)': op \(op) (opset \(opset)) is not supported"
        case let .unsupportedAttribute(node, op, detail): return "node '\(node)' (\(op)): unsupported \(detail)"
        case let .invalidNode(node, op, detail): return "node '\(node)' (\(op)): \(detail)"
        case let .invalidInitializer(name, detail): return "initializer '\(name)': \(detail)"
        case let .invalidFeed(name, detail): return "input '\(name)': \(detail)"
        }
    }
}
