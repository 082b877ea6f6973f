/// Op builders keyed by ONNX op type (ai.onnx domain). Builders check the opset-dependent
/// attribute/input forms themselves.
enum OpRegistry {
    static let builders: [String: OpBuilder] = {
        var r: [String: OpBuilder] = [:]
        ElementwiseOps.register(&r)
        NNOps.register(&r)
        ShapeOps.register(&r)
        return r
    }()

    /// Op types the engine implements.
    static var supportedOps: [String] { builders.keys.sorted() }
}
