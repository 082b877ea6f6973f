import Foundation
import Logging

/// FP32 ONNX inference on the CPU with activation taps.
///
/// Loading parses the model, decodes initializers (inline or external data) and compiles a plan
/// for the declared input shapes (dynamic dimensions taken as 1), so unsupported ops, opsets and
/// attributes fail at load. `run` compiles (and caches) one plan per distinct set of input
/// shapes; shape sub-graphs fold to constants during compilation. Calls to `run` on one session
/// are serialised; use one session per thread for parallel runs.
public final class InferenceSession: @unchecked Sendable {
    public let inputs: [TensorInfo]
    public let outputs: [TensorInfo]
    public let options: SessionOptions
    /// ai.onnx opset the model imports.
    public let opset: Int

    private let graph: LoadedGraph
    private let logger: Logger
    private let initializers: InitializerBuffers
    private let lock = NSLock()
    private var plans: [(key: [[Int]], plan: Plan)] = []
    private let context: ExecContext

    public convenience init(modelPath: String, options: SessionOptions = .init(),
                            logger: Logger = Logger(label: "shardcal.engine")) throws {
        let graph = try ModelLoader.load(path: modelPath, logger: logger)
        try self.init(graph: graph, options: options, logger: logger)
    }

    public convenience init(modelData: [UInt8], baseDirectory: String?, options: SessionOptions = .init(),
                            logger: Logger = Logger(label: "shardcal.engine")) throws {
        let graph = try ModelLoader.load(data: Data(modelData), source: "<memory>", baseDirectory: baseDirectory, logger: logger)
        try self.init(graph: graph, options: options, logger: logger)
    }

    init(graph: LoadedGraph, options: SessionOptions, logger: Logger) throws {
        self.graph = graph
        self.inputs = graph.inputs
        self.outputs = graph.outputs
        self.options = options
        self.opset = graph.opset
        self.logger = logger
        self.initializers = InitializerBuffers(graph: graph)
        self.context = ExecContext(threads: options.threads)
        for node in graph.nodes where OpRegistry.builders[node.opType] == nil {
            throw EngineError.unsupportedOp(node: node.name, op: node.opType, opset: graph.opset)
        }
        // Compile once for the declared shapes (dynamic dims as 1) so attribute and shape errors
        // surface at load. When non-batch dims are dynamic, 1 may be an impossible size (e.g. a
        // 3×3 valid convolution), so shape errors are deferred to the first run.
        let dynamicNonBatch = graph.inputs.contains { $0.shape.dropFirst().contains(nil) }
        do {
            _ = try plan(for: defaultShapes())
        } catch EngineError.invalidNode(let node, let op, let detail) where dynamicNonBatch {
            logger.debug("load-time plan deferred (dynamic input dims)", metadata: ["node": "\(node)", "op": "\(op)", "detail": "\(detail)"])
        }
    }

    private func defaultShapes() -> [String: [Int]] {
        var d: [String: [Int]] = [:]
        for i in inputs { d[i.name] = i.shape.map { $0 ?? 1 } }
        return d
    }

    private func plan(for shapes: [String: [Int]]) throws -> Plan {
        let key = inputs.map { shapes[$0.name] ?? [] }
        if let i = plans.firstIndex(where: { $0.key == key }) {
            let p = plans.remove(at: i)
            plans.append(p)
            return p.plan
        }
        let p = try Planner(graph: graph, initializerBuffers: initializers, logger: logger).build(inputShapes: shapes)
        plans.append((key, p))
        if plans.count > options.maxCachedPlans { plans.removeFirst() }
        return p
    }

    /// Names of the activations a tap with `filter` observes, in the order it sees them, for the
    /// declared input shapes (graph inputs first, then node outputs in execution order).
    /// Pass `inputShapes` when the model has dynamic non-batch dimensions.
    public func tappableTensors(_ filter: TapFilter = .all, inputShapes: [String: [Int]]? = nil) throws -> [(name: String, opType: String)] {
        lock.lock(); defer { lock.unlock() }
        let p = try plan(for: inputShapes ?? defaultShapes())
        return p.slotsInGraphOrder.compactMap { s in
            let slot = p.slots[s]
            guard !slot.name.isEmpty, filter.accepts(name: slot.name, opType: slot.opType) else { return nil }
            return (slot.name, slot.opType)
        }
    }

    /// Runs the graph. Every model input must be fed (float32, shape matching the static dims).
    /// The tap, if any, is called synchronously for each accepted activation.
    public func run(_ feeds: [String: Tensor], tap: ActivationTap? = nil) throws -> [String: Tensor] {
        lock.lock(); defer { lock.unlock() }
        var shapes: [String: [Int]] = [:]
        for info in inputs {
            guard let t = feeds[info.name] else { throw EngineError.invalidFeed(name: info.name, detail: "not fed") }
            guard t.shape.count == info.shape.count else {
                throw EngineError.invalidFeed(name: info.name, detail: "rank \(t.shape.count) given, model expects \(info.shape.count) (\(info.shapeWithMinusOne))")
            }
            for (d, e) in zip(t.shape, info.shape) where e != nil && e != d || d < 0 {
                throw EngineError.invalidFeed(name: info.name, detail: "shape \(t.shape) does not match the model's \(info.shapeWithMinusOne)")
            }
            guard t.data.count == t.count else {
                throw EngineError.invalidFeed(name: info.name, detail: "\(t.data.count) values for shape \(t.shape)")
            }
            shapes[info.name] = t.shape
        }
        for name in feeds.keys where !inputs.contains(where: { $0.name == name }) {
            throw EngineError.invalidFeed(name: name, detail: "the model has no such input (inputs: \(inputs.map(\.name)))")
        }
        let p = try plan(for: shapes)
        let buffers = p.pointers()
        @inline(__always) func observed(_ s: Int) -> Bool {
            guard let tap else { return false }
            let slot = p.slots[s]
            return !slot.name.isEmpty && tap.filter.accepts(name: slot.name, opType: slot.opType)
        }
        @inline(__always) func emit(_ s: Int) {
            guard let tap, observed(s) else { return }
            let slot = p.slots[s]
            tap.observer(TappedActivation(name: slot.name, opType: slot.opType, shape: slot.shape,
                                          values: UnsafeBufferPointer(start: buffers[slot.buffer], count: slot.count)))
        }
        for (name, s) in p.inputSlots {
            let dst = buffers[p.slots[s].buffer]
            feeds[name]!.data.withUnsafeBufferPointer { src in
                if src.count > 0 { dst.update(from: src.baseAddress!, count: src.count) }
            }
            emit(s)
        }
        var ins: [UnsafePointer<Float>?] = []
        var outs: [UnsafeMutablePointer<Float>] = []
        var i = 0
        while i < p.steps.count {
            let step = p.steps[i]
            ins.removeAll(keepingCapacity: true)
            outs.removeAll(keepingCapacity: true)
            for r in step.inputs {
                switch r {
                case .none: ins.append(nil)
                case .slot(let s): ins.append(UnsafePointer(buffers[p.slots[s].buffer]))
                case .constant(let b): ins.append(UnsafePointer(b.pointer))
                }
            }
            for s in step.outputs { outs.append(buffers[p.slots[s].buffer]) }
            if let f = p.clipFusions[i] {
                // Producer + the Clip/Relu after it in one call. When the clip reuses the producer's
                // buffer, that is only done if no tap needs the unclipped tensor: taps see every
                // tensor whole, before any reuse. Values are identical either way.
                let clipBuffer = p.slots[f.clipped].buffer
                if clipBuffer != p.slots[f.source].buffer || !observed(f.source) {
                    f.kernel(ins, outs, FusedClip(output: buffers[clipBuffer], min: f.min, max: f.max), context)
                    for s in step.outputs { emit(s) }
                    for s in p.steps[i + 1].outputs { emit(s) }
                    i += 2
                    continue
                }
            }
            step.kernel(ins, outs, context)
            for s in step.outputs { emit(s) }
            i += 1
        }
        var result: [String: Tensor] = [:]
        for (name, o) in p.outputs {
            switch o {
            case .slot(let s):
                let slot = p.slots[s]
                result[name] = Tensor(shape: slot.shape, data: Array(UnsafeBufferPointer(start: buffers[slot.buffer], count: slot.count)))
            case .constant(let t):
                result[name] = Tensor(shape: t.shape, data: t.floatValues)
            }
        }
        return result
    }
}
