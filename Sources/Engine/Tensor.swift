/// A dense, C-ordered float32 tensor held in host memory (inputs and outputs of `run`).
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var data: [Float]
    public init(shape: [Int], data: [Float]) {
        self.shape = shape
        self.data = data
    }
    /// Number of elements the shape describes.
    public var count: Int { shape.reduce(1, *) }
}

/// Name, element type and shape of a graph input or output. Dynamic dimensions are `nil`.
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    /// ONNX element type code (1 = float32, 7 = int64, ...).
    public var elementType: Int
    public var shape: [Int?]
    public init(name: String, elementType: Int, shape: [Int?]) {
        self.name = name
        self.elementType = elementType
        self.shape = shape
    }
    /// The shape with -1 for dynamic dimensions.
    public var shapeWithMinusOne: [Int] { shape.map { $0 ?? -1 } }
}

/// Session configuration.
public struct SessionOptions: Sendable {
    /// Threads the numeric kernels may use (1 = single-threaded). Results do not depend on it.
    public var threads: Int
    /// How many compiled plans (one per distinct input shape) are kept.
    public var maxCachedPlans: Int
    /// Time every step of `run` (see `InferenceSession.profile()`); off by default.
    public var profile: Bool
    /// Largest batch run through the graph at once. A larger batch runs as consecutive slices of
    /// this many images when the graph keeps batch rows apart, so each slice's activations stay in
    /// cache instead of streaming whole-batch tensors through memory; results are bit-identical.
    /// nil runs every batch whole.
    public var microBatch: Int?
    /// Plan for runs whose tap observes the activations (calibration): a Clip/Relu fused into the
    /// Conv before it then gets a buffer of its own instead of overwriting the Conv output, so the
    /// tap sees both and the pair still runs as one kernel call (otherwise a tapped Conv output
    /// makes the Clip a separate pass over the tensor). Costs a buffer; results are identical.
    public var plannedForTaps: Bool
    public init(threads: Int = 1, maxCachedPlans: Int = 4, profile: Bool = false, microBatch: Int? = SessionOptions.defaultMicroBatch,
                plannedForTaps: Bool = false) {
        self.threads = max(1, threads)
        self.maxCachedPlans = max(1, maxCachedPlans)
        self.profile = profile
        self.microBatch = microBatch.map { max(1, $0) }
        self.plannedForTaps = plannedForTaps
    }
    public static let defaultMicroBatch: Int? = 1
}

/// Which produced tensors an `ActivationTap` observes. Excludes win over includes; `nil`
/// includes mean "everything".
public struct TapFilter: Sendable, Equatable {
    public var includeNames: Set<String>?
    public var excludeNames: Set<String>
    public var includeOpTypes: Set<String>?
    public var excludeOpTypes: Set<String>
    public init(includeNames: Set<String>? = nil, excludeNames: Set<String> = [],
                includeOpTypes: Set<String>? = nil, excludeOpTypes: Set<String> = []) {
        self.includeNames = includeNames
        self.excludeNames = excludeNames
        self.includeOpTypes = includeOpTypes
        self.excludeOpTypes = excludeOpTypes
    }
    /// Observes every float activation (graph inputs and node outputs).
    public static let all = TapFilter()

    /// Op type reported for graph inputs.
    public static let graphInputOpType = "Input"

    public func accepts(name: String, opType: String) -> Bool {
        if excludeNames.contains(name) || excludeOpTypes.contains(opType) { return false }
        if let inc = includeNames, !inc.contains(name) { return false }
        if let inc = includeOpTypes, !inc.contains(opType) { return false }
        return true
    }
}

/// One activation handed to a tap observer. `values` is valid only during the callback and
/// points into the executor's buffer (no copy); copy it to keep it.
public struct TappedActivation {
    public let name: String
    /// Op type of the producing node, or `TapFilter.graphInputOpType` for graph inputs.
    public let opType: String
    /// Shape of `values`: the whole tensor, or with `ActivationTap.acceptsBatchSlices` possibly a
    /// slice of the batch (dimension 0) starting at image `batchOffset`.
    public let shape: [Int]
    /// Index of this buffer's first image in the batch passed to `run` (0 unless sliced).
    public let batchOffset: Int
    public let values: UnsafeBufferPointer<Float>
}

/// Observer of activations during `InferenceSession.run`, called synchronously on the running
/// thread, in graph order, right after each tensor is produced and before its buffer is reused.
///
/// By default the observer sees every tensor whole. With `acceptsBatchSlices`, a batch may run as
/// micro-batches (`SessionOptions.microBatch`) and each tensor then arrives once per slice of its
/// batch, in batch order (`TappedActivation.batchOffset`); values are the same either way.
public struct ActivationTap {
    public var filter: TapFilter
    public var acceptsBatchSlices: Bool
    public var observer: (TappedActivation) -> Void
    public init(filter: TapFilter = .all, acceptsBatchSlices: Bool = false, observer: @escaping (TappedActivation) -> Void) {
        self.filter = filter
        self.acceptsBatchSlices = acceptsBatchSlices
        self.observer = observer
    }
}
