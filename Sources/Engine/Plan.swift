import Logging

/// Owns a float array at a stable address (constants used by run-time steps).
final class ConstBuffer {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    init(_ values: [Float]) {
        count = values.count
        pointer = allocateFloats(count)
        values.withUnsafeBufferPointer { if count > 0 { pointer.initialize(from: $0.baseAddress!, count: count) } }
    }
    deinit { pointer.deallocate() }
}

/// The executable form of a graph for one set of input shapes: ordered steps, constant
/// operands, and a static assignment of activation slots to reusable buffers.
final class Plan {
    enum Ref {
        case none
        case slot(Int)
        case constant(ConstBuffer)
    }
    struct Step {
        let nodeName: String
        let opType: String
        let inputs: [Ref]
        let outputs: [Int]
        let kernel: Kernel
        /// Input positions whose buffer output 0 may take over when that input dies here
        /// (elementwise ops that read element i only before writing element i).
        var inPlaceInputs: [Int]
        /// What this step may be fused with (see `fusions`).
        var fusion: StepFusion? = nil
    }
    /// A step whose kernel can also produce the very next step's output from its output 0: a
    /// Clip/Relu of it, or (Conv) a residual Add of it and a same-shaped tensor.
    struct Fusion {
        enum Epilogue {
            case clip(ClipEpilogueKernel, min: Float, max: Float)
            /// `addend`: the Add's other input (a slot).
            case residual(ResidualEpilogueKernel, addend: Int)
        }
        let epilogue: Epilogue
        /// The producer's output 0 (the next step's input) and the next step's output.
        let source: Int, output: Int
    }
    struct Slot {
        let name: String
        let opType: String
        let shape: [Int]
        var count: Int { elementCount(shape) }
        var buffer: Int = -1
    }
    enum Output {
        case slot(Int)
        case constant(HostTensor)
    }

    var steps: [Step] = []
    var slots: [Slot] = []
    var inputSlots: [(name: String, slot: Int)] = []
    var outputs: [(name: String, value: Output)] = []
    var bufferCapacities: [Int] = []
    var inPlaceSteps = 0
    /// Producer step index -> fusion with the step right after it. The executor runs the pair as
    /// one kernel call unless a tap must see the producer's output in a buffer the fused output reuses.
    var fusions: [Int: Fusion] = [:]
    /// Buffers of the assignment, allocated on first run and kept.
    private var buffers: [UnsafeMutablePointer<Float>] = []

    deinit { for b in buffers { b.deallocate() } }

    /// Slots in the order they are produced (graph inputs first, then node outputs in step order).
    var slotsInGraphOrder: [Int] {
        inputSlots.map(\.slot) + steps.flatMap(\.outputs)
    }

    func pointers() -> [UnsafeMutablePointer<Float>] {
        if buffers.isEmpty {
            buffers = bufferCapacities.map { cap in
                let p = allocateFloats(cap)
                p.initialize(repeating: 0, count: max(cap, 1))
                return p
            }
        }
        return buffers
    }

    var totalBufferFloats: Int { bufferCapacities.reduce(0, +) }
}

/// Builds plans by walking the graph with known input shapes: constants fold, the rest becomes steps.
struct Planner {
    let graph: LoadedGraph
    let initializerBuffers: InitializerBuffers
    let logger: Logger
    /// Never let a fused step's output (Clip/Relu, residual Add) take over its producer's buffer, so
    /// a tap can observe the producer's output and the pair still runs as one kernel call
    /// (`SessionOptions.plannedForTaps`). A fused Add may still take over its addend's buffer.
    var separateFusedOutputs = false

    func build(inputShapes: [String: [Int]]) throws -> Plan {
        let plan = Plan()
        var env: [String: SymValue] = [:]
        var slotOf: [String: Int] = [:]
        var folded: [String: ConstBuffer] = [:]
        for (name, t) in graph.initializers { env[name] = .constant(t) }
        for info in graph.inputs {
            guard let shape = inputShapes[info.name] else {
                throw EngineError.invalidFeed(name: info.name, detail: "no shape given for graph input")
            }
            guard info.elementType == 1 else {
                throw EngineError.invalidFeed(name: info.name, detail: "element type \(info.elementType) inputs are not supported (float32 only)")
            }
            env[info.name] = .runtime(shape: shape)
            slotOf[info.name] = plan.slots.count
            plan.inputSlots.append((info.name, plan.slots.count))
            plan.slots.append(.init(name: info.name, opType: TapFilter.graphInputOpType, shape: shape))
        }
        var foldedCount = 0
        for node in graph.nodes {
            guard let builder = OpRegistry.builders[node.opType] else {
                throw EngineError.unsupportedOp(node: node.name, op: node.opType, opset: graph.opset)
            }
            var ins: [SymValue?] = []
            for n in node.inputs {
                if n.isEmpty { ins.append(nil); continue }
                guard let v = env[n] else {
                    throw EngineError.invalidNode(node: node.name, op: node.opType, detail: "input '\(n)' is not available (an unsupported optional output of an earlier node?)")
                }
                ins.append(v)
            }
            let ctx = OpContext(node: node, opset: graph.opset, inputs: ins)
            var result = try builder(ctx)
            if case .runtime(let shapes, _, _) = result {
                for sh in shapes { try ctx.checkShape(sh, "output") }
            }
            if case .runtime(let shapes, let kernel, _) = result, ctx.allInputsConstant,
               ins.allSatisfy({ $0?.constant?.isFloat ?? true }) {
                // Constant folding of a float op: run its kernel once on the host.
                let consts = ins.map { $0?.constant.map { ConstBuffer($0.floatValues) } }
                let outs = shapes.map { UnsafeMutablePointer<Float>.allocate(capacity: max(elementCount($0), 1)) }
                defer { outs.forEach { $0.deallocate() } }
                kernel(consts.map { $0.map { UnsafePointer($0.pointer) } }, outs, ExecContext(threads: 1))
                result = .constants(zip(shapes, outs).map { s, p in
                    HostTensor(shape: s, floats: Array(UnsafeBufferPointer(start: p, count: elementCount(s))))
                })
            }
            switch result {
            case .constants(let ts):
                foldedCount += 1
                for (i, o) in node.outputs.enumerated() where !o.isEmpty && i < ts.count { env[o] = .constant(ts[i]) }
            case .runtime(let shapes, let kernel, let fusion):
                var refs: [Plan.Ref] = []
                for (i, n) in node.inputs.enumerated() {
                    if n.isEmpty { refs.append(.none); continue }
                    if let s = slotOf[n] { refs.append(.slot(s)); continue }
                    guard case .constant(let t)? = ins[i] else { refs.append(.none); continue }
                    if !t.isFloat { refs.append(.none); continue }
                    if let b = initializerBuffers.buffer(named: n) {
                        refs.append(.constant(b))
                    } else if let b = folded[n] {
                        refs.append(.constant(b))
                    } else {
                        let b = ConstBuffer(t.floatValues)
                        folded[n] = b
                        refs.append(.constant(b))
                    }
                }
                var outSlots: [Int] = []
                for (i, o) in node.outputs.enumerated() where i < shapes.count {
                    // Unnamed outputs still need a buffer to be written into.
                    let idx = plan.slots.count
                    plan.slots.append(.init(name: o, opType: node.opType, shape: shapes[i]))
                    outSlots.append(idx)
                    if !o.isEmpty {
                        slotOf[o] = idx
                        env[o] = .runtime(shape: shapes[i])
                    }
                }
                var inPlace: [Int] = []
                if let positions = Planner.inPlacePositions[node.opType], let out0 = shapes.first {
                    inPlace = positions.filter { $0 < ins.count && ins[$0]?.shape == out0 }
                }
                plan.steps.append(.init(nodeName: node.name, opType: node.opType, inputs: refs, outputs: outSlots,
                                        kernel: kernel, inPlaceInputs: inPlace, fusion: fusion))
            }
        }
        for info in graph.outputs {
            if let s = slotOf[info.name] {
                plan.outputs.append((info.name, .slot(s)))
            } else if case .constant(let t)? = env[info.name] {
                plan.outputs.append((info.name, .constant(t)))
            } else {
                throw EngineError.invalidModel(source: "graph", reason: "graph output '\(info.name)' is produced by no node")
            }
        }
        findClipFusions(plan)
        findResidualFusions(plan)
        if separateFusedOutputs {
            // The fused step is the one right after its producer.
            for (producer, f) in plan.fusions {
                let next = plan.steps[producer + 1]
                plan.steps[producer + 1].inPlaceInputs = next.inPlaceInputs.filter { pos in
                    if case .slot(let s) = next.inputs[pos] { return s != f.source }
                    return true
                }
            }
        }
        assignBuffers(plan)
        logger.debug("built plan", metadata: ["steps": "\(plan.steps.count)", "folded": "\(foldedCount)",
                                              "slots": "\(plan.slots.count)", "buffers": "\(plan.bufferCapacities.count)",
                                              "bufferFloats": "\(plan.totalBufferFloats)", "inPlace": "\(plan.inPlaceSteps)"])
        return plan
    }

    /// Pairs (producer with a clip epilogue, Clip/Relu of its output 0 as the very next step).
    /// Running them as one kernel call clips each output block while it is in cache.
    private func findClipFusions(_ plan: Plan) {
        for i in plan.steps.indices.dropLast() {
            let producer = plan.steps[i], next = plan.steps[i + 1]
            // Found before buffers are assigned: nothing here depends on them.
            guard case .epilogue(let kernel, _)? = producer.fusion, case .clip(let lo, let hi)? = next.fusion,
                  let source = producer.outputs.first, let clipped = next.outputs.first,
                  case .slot(let s)? = next.inputs.first, s == source,
                  plan.slots[source].count == plan.slots[clipped].count else { continue }
            plan.fusions[i] = .init(epilogue: .clip(kernel, min: lo, max: hi), source: source, output: clipped)
        }
    }

    /// Pairs (Conv with a residual epilogue, Add of its output 0 and a same-shaped tensor as the
    /// very next step). Not when the addend is one of the Conv's own inputs: the sum may take over
    /// the addend's buffer, which the Conv would then still be reading.
    private func findResidualFusions(_ plan: Plan) {
        for i in plan.steps.indices.dropLast() where plan.fusions[i] == nil {
            let producer = plan.steps[i], next = plan.steps[i + 1]
            guard case .epilogue(_, let kernel?)? = producer.fusion, next.opType == "Add", next.inputs.count == 2,
                  let source = producer.outputs.first, next.outputs.count == 1, let sum = next.outputs.first,
                  case .slot(let a)? = next.inputs.first, case .slot(let b)? = next.inputs.last,
                  (a == source) != (b == source) else { continue }
            let addend = a == source ? b : a
            let shape = plan.slots[source].shape
            guard plan.slots[addend].shape == shape, plan.slots[sum].shape == shape,
                  !producer.inputs.contains(where: { if case .slot(addend) = $0 { return true } else { return false } })
            else { continue }
            plan.fusions[i] = .init(epilogue: .residual(kernel, addend: addend), source: source, output: sum)
        }
    }

    /// Ops whose kernels allow output 0 to alias the listed inputs (same shape).
    static let inPlacePositions: [String: [Int]] = {
        var d: [String: [Int]] = [:]
        for op in ["Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Neg", "Exp", "Sqrt",
                   "Reciprocal", "Abs", "Floor", "Ceil", "Log", "Erf", "Softplus", "Elu", "Identity", "Dropout",
                   "Reshape", "Flatten", "Squeeze", "Unsqueeze", "BatchNormalization", "PRelu", "Sum", "Mean", "Cast"] {
            d[op] = [0]
        }
        for op in ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"] { d[op] = [0, 1] }
        return d
    }()

    /// Liveness-based static buffer assignment: a slot's buffer returns to the free list after
    /// the last step that reads it (graph outputs are never freed). Deterministic best fit.
    private func assignBuffers(_ plan: Plan) {
        var lastUse = [Int](repeating: -1, count: plan.slots.count)
        for (i, step) in plan.steps.enumerated() {
            for case .slot(let s) in step.inputs { lastUse[s] = i }
        }
        for case (_, .slot(let s)) in plan.outputs { lastUse[s] = Int.max }
        var caps: [Int] = []
        var free: [Int] = []
        func allocate(_ slot: Int) {
            let need = plan.slots[slot].count
            var best = -1
            for (k, b) in free.enumerated() where caps[b] >= need {
                if best < 0 || caps[b] < caps[free[best]] { best = k }
            }
            if best < 0, !free.isEmpty {
                // Grow the largest free buffer rather than adding a new one.
                best = free.indices.max { caps[free[$0]] < caps[free[$1]] }!
            }
            if best >= 0 {
                let b = free.remove(at: best)
                caps[b] = max(caps[b], need)
                plan.slots[slot].buffer = b
            } else {
                caps.append(need)
                plan.slots[slot].buffer = caps.count - 1
            }
        }
        func release(_ slot: Int) { free.append(plan.slots[slot].buffer) }
        for (_, s) in plan.inputSlots { allocate(s) }
        for (_, s) in plan.inputSlots where lastUse[s] == -1 { release(s) }
        // Where output 0 of step i takes over a dying input's buffer: that input's slot.
        func inPlaceSource(_ i: Int) -> Int? {
            let step = plan.steps[i]
            guard let out0 = step.outputs.first else { return nil }
            for pos in step.inPlaceInputs {
                if case .slot(let s) = step.inputs[pos], lastUse[s] == i, plan.slots[s].count == plan.slots[out0].count { return s }
            }
            return nil
        }
        var inPlaceCount = 0
        // Clip outputs given a buffer one step early (below).
        var early = Set<Int>()
        for (i, step) in plan.steps.enumerated() {
            var released = Set<Int>()
            var first = 0
            if let out0 = step.outputs.first, !early.contains(out0), let s = inPlaceSource(i) {
                // The output takes the dying input's buffer; the input is not released.
                plan.slots[out0].buffer = plan.slots[s].buffer
                released.insert(s)
                first = 1
                inPlaceCount += 1
            }
            for s in step.outputs.dropFirst(first) where !early.contains(s) { allocate(s) }
            // A Clip (Add) fused into this step is written by this step's kernel, while this step's
            // inputs are read: unless it runs in place, its buffer is taken now, before those inputs
            // free theirs.
            if let fused = plan.fusions[i]?.output, inPlaceSource(i + 1) == nil {
                allocate(fused)
                early.insert(fused)
            }
            for case .slot(let s) in step.inputs where lastUse[s] == i && !released.contains(s) {
                released.insert(s)
                release(s)
            }
            for s in step.outputs where lastUse[s] == -1 { release(s) }
        }
        plan.bufferCapacities = caps
        plan.inPlaceSteps = inPlaceCount
    }
}

/// Float initializers copied once to stable memory, shared by all plans of a session.
final class InitializerBuffers {
    private var buffers: [String: ConstBuffer] = [:]
    private let graph: LoadedGraph
    init(graph: LoadedGraph) { self.graph = graph }
    func buffer(named name: String) -> ConstBuffer? {
        if let b = buffers[name] { return b }
        guard let t = graph.initializers[name], t.isFloat else { return nil }
        let b = ConstBuffer(t.floatValues)
        buffers[name] = b
        return b
    }
}
