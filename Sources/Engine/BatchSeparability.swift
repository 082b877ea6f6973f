/// Whether a batch may run as consecutive micro-batches with the same results.
///
/// The kernels already compute every image of a batch by the same calls whatever the batch size,
/// so a graph whose runtime ops all treat batch rows independently gives bit-identical outputs and
/// activations when its batch is cut into slices. A plan is separable when:
/// - every runtime tensor (graph inputs, step outputs) has the batch as its first dimension, in the
///   full-batch plan and in the micro-batch plan alike, with all other dimensions equal (so no
///   reshape, concat, split, gather, reduction or broadcast moves data across the batch axis, and
///   no constant carries the batch size), and every graph output is such a tensor;
/// - every runtime op is one that never mixes batch rows once that holds: element-wise ops,
///   convolutions, pooling, normalisation and shape ops always; Softmax, Transpose, Concat, Split,
///   Gather, Slice and reductions only when their axes leave the batch axis alone. Any other op, or
///   an axis that cannot be read, keeps the whole batch together.
enum BatchSeparability {
    /// Ops that never combine values of different batch rows when all their runtime inputs and
    /// outputs keep the batch as dimension 0 (checked separately).
    static let rowwiseOps: Set<String> = [
        "Abs", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Conv", "ConvTranspose",
        "Dropout", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "GlobalAveragePool",
        "GlobalMaxPool", "Greater", "HardSigmoid", "HardSwish", "Identity", "LRN", "LeakyRelu", "Less",
        "Log", "MatMul", "Max", "MaxPool", "Mean", "Min", "Neg", "Pad", "Reciprocal", "Relu", "Reshape",
        "Resize", "Sigmoid", "Softplus", "Sqrt", "Squeeze", "Sum", "Tanh", "Unsqueeze", "Upsample", "Where",
        "Add", "Sub", "Mul", "Div", "Pow", "PRelu",
    ]

    /// nil when `full` (batch `batch`) may run as slices planned by `micro` (batch `microBatch`);
    /// otherwise why not.
    static func problem(graph: LoadedGraph, full: Plan, micro: Plan, batch: Int, microBatch: Int) -> String? {
        guard full.slots.count == micro.slots.count, full.steps.count == micro.steps.count else {
            return "the plans for batch \(batch) and \(microBatch) differ in structure"
        }
        for (a, b) in zip(full.slots, micro.slots) {
            guard a.shape.first == batch, b.shape.first == microBatch, Array(a.shape.dropFirst()) == Array(b.shape.dropFirst()) else {
                return "tensor '\(a.name)' has shape \(a.shape) at batch \(batch) and \(b.shape) at batch \(microBatch)"
            }
        }
        for (_, o) in full.outputs {
            if case .constant = o { return "a graph output is a constant (it may depend on the batch size)" }
        }
        var nodesByName: [String: [GraphNode]] = [:]
        for n in graph.nodes { nodesByName[n.name, default: []].append(n) }
        var constants = graph.initializers
        for n in graph.nodes where n.opType == "Constant" {
            guard let out = n.outputs.first else { continue }
            if let t = n.attributes["value"], let v = try? ModelLoader.decodeTensor(t.t, baseDirectory: nil) {
                constants[out] = v
            } else if let a = n.attributes["value_ints"] {
                constants[out] = HostTensor(shape: [a.ints.count], ints: a.ints.map { Int($0) })
            }
        }
        for (a, b) in zip(full.steps, micro.steps) {
            guard a.opType == b.opType else { return "the plans for batch \(batch) and \(microBatch) differ in structure" }
            let rank = a.outputs.first.map { full.slots[$0].shape.count } ?? 0
            let candidates = (nodesByName[a.nodeName] ?? []).filter { $0.opType == a.opType }
            if candidates.isEmpty { return "node '\(a.nodeName)' (\(a.opType)) not found" }
            for node in candidates {
                if let why = opProblem(node, rank: rank, inputRank: inputRank(a, full), opset: graph.opset, constants: constants) {
                    return "node '\(node.name)' (\(node.opType)): \(why)"
                }
            }
        }
        return nil
    }

    private static func inputRank(_ step: Plan.Step, _ plan: Plan) -> Int? {
        for r in step.inputs { if case .slot(let s) = r { return plan.slots[s].shape.count } }
        return nil
    }

    /// Whether `axis` (possibly negative) is the batch axis of a rank-`rank` tensor.
    private static func isBatchAxis(_ axis: Int, rank: Int) -> Bool { axis == 0 || (rank > 0 && axis == -rank) }

    private static func opProblem(_ node: GraphNode, rank: Int, inputRank: Int?, opset: Int,
                                  constants: [String: HostTensor]) -> String? {
        func int(_ n: String) -> Int? { node.attributes[n].map { Int($0.i) } }
        func ints(_ n: String) -> [Int]? { node.attributes[n].map { $0.ints.map { Int($0) } } }
        func constantInts(_ i: Int) -> [Int]?? {
            guard i < node.inputs.count, !node.inputs[i].isEmpty else { return .some(nil) }   // absent
            guard let t = constants[node.inputs[i]] else { return nil }                           // unknown
            return .some(t.intValues)
        }
        let r = inputRank ?? rank
        switch node.opType {
        case let op where rowwiseOps.contains(op):
            return nil
        case "Gemm":
            return (int("transA") ?? 0) == 0 ? nil : "transA = 1 puts the batch in the inner dimension"
        case "Softmax", "LogSoftmax":
            let axis = int("axis") ?? (opset >= 13 ? -1 : 1)
            return isBatchAxis(axis, rank: r) ? "axis \(axis) is the batch axis" : nil
        case "Transpose":
            let perm = ints("perm") ?? Array((0..<r).reversed())
            return perm.first == 0 ? nil : "perm \(perm) moves the batch axis"
        case "Concat", "Split", "Gather":
            let axis = int("axis") ?? 0
            return isBatchAxis(axis, rank: r) ? "axis \(axis) is the batch axis" : nil
        case "Slice":
            let axes: [Int]?
            if let a = ints("axes") {
                axes = a
            } else if opset >= 10 {
                guard let given = constantInts(3) else { return "axes are computed at run time" }
                axes = given
            } else {
                axes = nil
            }
            let all = axes ?? Array(0..<r)
            return all.contains { isBatchAxis($0, rank: r) } ? "slices along the batch axis" : nil
        case "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin":
            var axes = ints("axes")
            if axes == nil {
                guard let given = constantInts(1) else { return "axes are computed at run time" }
                axes = given
            }
            guard let list = axes, !list.isEmpty else { return "reduces over every axis" }
            return list.contains { isBatchAxis($0, rank: r) } ? "reduces over the batch axis" : nil
        default:
            return "not known to keep batch rows apart"
        }
    }
}
