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
    private var plans = PlanCache()
    private let context: ExecContext
    private var timings: [String: StepTiming] = [:]
    /// Contexts and plans of the lanes that run untapped micro-batches concurrently.
    private var laneStates: [LaneState] = []
    /// Per set of input shapes: whether a batch of that shape may run in micro-batches.
    private var separable: [(key: [[Int]], value: Bool)] = []

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
        try plans.plan(for: inputs.map { shapes[$0.name] ?? [] }, keeping: options.maxCachedPlans) { try buildPlan(shapes) }
    }

    /// A new plan for these input shapes, as this session's options ask.
    private func buildPlan(_ shapes: [String: [Int]]) throws -> Plan {
        try Planner(graph: graph, initializerBuffers: initializers, logger: logger, separateFusedOutputs: options.plannedForTaps)
            .build(inputShapes: shapes)
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
    ///
    /// A batch larger than `SessionOptions.microBatch` runs as consecutive micro-batches when the
    /// graph keeps batch rows apart (see `BatchSeparability`) and the tap, if any, accepts batch
    /// slices; outputs and activations are bit-identical either way.
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
        if tap == nil || tap!.acceptsBatchSlices, let (batch, m) = try microBatching(shapes) {
            var slices: [Range<Int>] = []
            var start = 0
            while start < batch { slices.append(start..<min(batch, start + m)); start += m }
            // Whole-batch outputs, filled slice by slice.
            var outputs: [(name: String, shape: [Int], data: UnsafeMutablePointer<Float>)] = []
            for (name, o) in p.outputs {
                if case .slot(let s) = o {
                    let d = allocateFloats(p.slots[s].count)
                    outputs.append((name, p.slots[s].shape, d))
                }
            }
            defer { for o in outputs { o.data.deallocate() } }
            let index = Dictionary(uniqueKeysWithValues: outputs.enumerated().map { ($0.element.name, $0.offset) })
            func store(_ rows: Range<Int>) -> (String, [Int], UnsafeBufferPointer<Float>) -> Void {
                return { name, _, values in
                    let offset = rows.lowerBound * (values.count / rows.count)
                    (outputs[index[name]!].data + offset).update(from: values.baseAddress!, count: values.count)
                }
            }
            let lanes = tap == nil && !options.profile ? min(options.threads, slices.count) : 1
            if lanes >= 2 {
                try runInLanes(lanes, slices: slices, shapes: shapes, feeds: feeds, store: store)
            } else {
                for rows in slices {
                    let sp = try plan(for: shapes.mapValues { [rows.count] + $0.dropFirst() })
                    execute(sp, feeds: feeds, rows: rows, tap: tap, context: context, output: store(rows))
                }
            }
            var result: [String: Tensor] = [:]
            for o in outputs {
                result[o.name] = Tensor(shape: o.shape, data: Array(UnsafeBufferPointer(start: o.data, count: elementCount(o.shape))))
            }
            return result
        }
        var result: [String: Tensor] = [:]
        execute(p, feeds: feeds, rows: nil, tap: tap, context: context) { name, shape, values in
            result[name] = Tensor(shape: shape, data: Array(values))
        }
        for (name, o) in p.outputs {
            if case .constant(let t) = o { result[name] = Tensor(shape: t.shape, data: t.floatValues) }
        }
        return result
    }

    /// (batch, micro-batch size) when a run with these shapes goes in slices, else nil. Decided
    /// once per set of shapes.
    private func microBatching(_ shapes: [String: [Int]]) throws -> (Int, Int)? {
        guard let m = options.microBatch, !inputs.isEmpty,
              inputs.allSatisfy({ $0.shape.first.map { $0 == nil } ?? false }),
              let batch = shapes[inputs[0].name]?.first, batch > m,
              inputs.allSatisfy({ shapes[$0.name]?.first == batch }) else { return nil }
        let key = inputs.map { shapes[$0.name] ?? [] }
        if let known = separable.first(where: { $0.key == key }) { return known.value ? (batch, m) : nil }
        let full = try plan(for: shapes)
        var why: String? = nil
        for size in Set([m, batch % m]) where size > 0 {
            guard let micro = try? plan(for: shapes.mapValues { [size] + $0.dropFirst() }) else {
                why = "the graph cannot be planned for batch \(size)"
                break
            }
            why = BatchSeparability.problem(graph: graph, full: full, micro: micro, batch: batch, microBatch: size)
            if why != nil { break }
        }
        if let why {
            logger.debug("batch runs whole", metadata: ["batch": "\(batch)", "reason": "\(why)"])
        }
        separable.append((key, why == nil))
        if separable.count > 16 { separable.removeFirst() }
        return why == nil ? (batch, m) : nil
    }

    /// Untapped slices on `lanes` threads at once: each lane has its own plans (buffers) and a
    /// one-thread context, and takes the next slice when it is done with one (a slice is a whole
    /// forward pass, ~10 ms, so taking them costs nothing, and a lane slowed by other load does not
    /// hold the others back). Every image is computed by the same kernels as in one lane, so the
    /// outputs are identical; the images run side by side instead of each op being split in two,
    /// which saves the per-op synchronisation and cache traffic between cores (as the "streams" of
    /// throughput-oriented runtimes do).
    private func runInLanes(_ lanes: Int, slices: [Range<Int>], shapes: [String: [Int]], feeds: [String: Tensor],
                            store: (Range<Int>) -> (String, [Int], UnsafeBufferPointer<Float>) -> Void) throws {
        while laneStates.count < lanes { laneStates.append(LaneState()) }
        // Plans for every slice size, per lane, built here on the calling thread.
        var lanePlans: [[Int: Plan]] = []
        for l in 0..<lanes {
            var byRows: [Int: Plan] = [:]
            for size in Set(slices.map(\.count)) {
                let sliceShapes = shapes.mapValues { [size] + $0.dropFirst() }
                byRows[size] = try laneStates[l].plans.plan(for: inputs.map { sliceShapes[$0.name] ?? [] },
                                                            keeping: options.maxCachedPlans) { try buildPlan(sliceShapes) }
            }
            lanePlans.append(byRows)
        }
        let states = laneStates
        let next = NSLock()
        nonisolated(unsafe) var taken = 0
        runWorkers(lanes) { lane in
            while true {
                next.lock()
                let i = taken
                taken += 1
                next.unlock()
                if i >= slices.count { break }
                let rows = slices[i]
                execute(lanePlans[lane][rows.count]!, feeds: feeds, rows: rows, tap: nil, context: states[lane].context,
                        output: store(rows))
            }
        }
    }

    /// Runs plan `p` on `feeds` (rows `rows` of each, or all of them), calling `output` with each
    /// graph output that is a runtime tensor.
    private func execute(_ p: Plan, feeds: [String: Tensor], rows: Range<Int>?, tap: ActivationTap?, context: ExecContext,
                         output: (String, [Int], UnsafeBufferPointer<Float>) -> Void) {
        let buffers = p.pointers()
        let batchOffset = rows?.lowerBound ?? 0
        @inline(__always) func observed(_ s: Int) -> Bool {
            guard let tap else { return false }
            let slot = p.slots[s]
            return !slot.name.isEmpty && tap.filter.accepts(name: slot.name, opType: slot.opType)
        }
        /// Runs one step's kernel, adding its time to the profile when profiling.
        @inline(__always) func timed(_ step: Plan.Step, fused: String? = nil, _ kernel: () -> Void) {
            guard options.profile else { return kernel() }
            let t0 = DispatchTime.now().uptimeNanoseconds
            kernel()
            record(step, shape: step.outputs.first.map { p.slots[$0].shape } ?? [],
                   nanoseconds: DispatchTime.now().uptimeNanoseconds - t0, fused: fused)
        }
        @inline(__always) func emit(_ s: Int) {
            guard let tap, observed(s) else { return }
            let slot = p.slots[s]
            tap.observer(TappedActivation(name: slot.name, opType: slot.opType, shape: slot.shape, batchOffset: batchOffset,
                                          values: UnsafeBufferPointer(start: buffers[slot.buffer], count: slot.count)))
        }
        for (name, s) in p.inputSlots {
            let dst = buffers[p.slots[s].buffer]
            let count = p.slots[s].count
            feeds[name]!.data.withUnsafeBufferPointer { src in
                let offset = rows.map { $0.lowerBound * (count / $0.count) } ?? 0
                if count > 0 { dst.update(from: src.baseAddress! + offset, count: count) }
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
            if let f = p.fusions[i] {
                // Producer + the Clip/Relu or residual Add after it in one call. When the fused output
                // reuses the producer's buffer, that is only done if no tap needs the producer's
                // output: taps see every tensor whole, before any reuse. Values are identical either way.
                let fusedBuffer = p.slots[f.output].buffer
                if fusedBuffer != p.slots[f.source].buffer || !observed(f.source) {
                    timed(step, fused: p.steps[i + 1].opType) {
                        switch f.epilogue {
                        case let .clip(kernel, lo, hi):
                            kernel(ins, outs, FusedClip(output: buffers[fusedBuffer], min: lo, max: hi), context)
                        case let .residual(kernel, addend):
                            kernel(ins, outs, FusedResidual(addend: UnsafePointer(buffers[p.slots[addend].buffer]),
                                                            sum: buffers[fusedBuffer]), context)
                        }
                    }
                    for s in step.outputs { emit(s) }
                    for s in p.steps[i + 1].outputs { emit(s) }
                    i += 2
                    continue
                }
            }
            timed(step) { step.kernel(ins, outs, context) }
            for s in step.outputs { emit(s) }
            i += 1
        }
        for (name, o) in p.outputs {
            if case .slot(let s) = o {
                let slot = p.slots[s]
                output(name, slot.shape, UnsafeBufferPointer(start: buffers[slot.buffer], count: slot.count))
            }
        }
    }

    private func record(_ step: Plan.Step, shape: [Int], nanoseconds: UInt64, fused: String? = nil) {
        let op = fused.map { "\(step.opType)+\($0)" } ?? step.opType
        var t = timings[step.nodeName] ?? StepTiming(node: step.nodeName, opType: op, outputShape: shape, order: timings.count, seconds: 0, calls: 0)
        t.seconds += Double(nanoseconds) * 1e-9
        t.calls += 1
        timings[step.nodeName] = t
    }

    /// Wall time per node summed over the runs so far (only with `SessionOptions.profile`), most
    /// expensive first.
    public func profile() -> [StepTiming] {
        lock.lock(); defer { lock.unlock() }
        return timings.values.sorted { ($0.seconds, $0.node) > ($1.seconds, $1.node) }
    }

    /// Forgets the timings collected so far (e.g. after warm-up runs).
    public func resetProfile() {
        lock.lock(); defer { lock.unlock() }
        timings.removeAll()
    }
}

/// One node's share of `InferenceSession.run` time (see `SessionOptions.profile`).
public struct StepTiming: Sendable, Equatable {
    public let node: String
    /// The op, or "Conv+Clip" when a Clip/Relu ran fused into its producer.
    public let opType: String
    public let outputShape: [Int]
    /// Position among the timed nodes in execution order.
    public let order: Int
    public var seconds: Double
    public var calls: Int
}

/// One lane of concurrent micro-batches: a one-thread context and its own plans (and so buffers).
final class LaneState {
    let context = ExecContext(threads: 1)
    var plans = PlanCache()
}

/// Compiled plans by input shapes, most recently used last, at most `keeping` of them.
struct PlanCache {
    private var entries: [(key: [[Int]], plan: Plan)] = []

    mutating func plan(for key: [[Int]], keeping limit: Int, build: () throws -> Plan) rethrows -> Plan {
        if let i = entries.firstIndex(where: { $0.key == key }) {
            let e = entries.remove(at: i)
            entries.append(e)
            return e.plan
        }
        let p = try build()
        entries.append((key, p))
        if entries.count > limit { entries.removeFirst() }
        return p
    }
}
