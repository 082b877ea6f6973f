import ArgumentParser
import Engine
import Foundation

/// `shardcal bench-engine`: times `InferenceSession.run` on one input batch and prints JSON
/// (hidden; driven by `scripts/bench-engine`, which runs ONNX Runtime on the same input next to it).
struct BenchEngineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-engine",
        abstract: "Measure FP32 inference throughput (images/s) of the engine on one model.",
        shouldDisplay: false
    )

    @Option(help: "ONNX model.")
    var model: String = "../shared/bench/effnet-lite0/efficientnet_lite0.onnx"

    @Option(help: "Input batch as float32 .npy (its first dimension is the batch). Default: a fixed pseudo-random batch.")
    var input: String?

    @Option(help: "Batch size of the generated input (ignored with --input).")
    var batch: Int = 1

    @Option(help: "Threads for the kernels.")
    var threads: Int = 1

    @Option(help: "Untimed warm-up runs.")
    var warmup: Int = 2

    @Option(help: "Minimum timed runs.")
    var runs: Int = 5

    @Option(help: "Keep running until at least this many seconds were timed.")
    var minSeconds: Double = 2

    @Option(help: "Write the first graph output of the last run to this .npy file.")
    var outputNpy: String?

    @Flag(help: "Tap every activation as calibration does (the observer only counts values, so this measures the engine's side of the taps, with the plan calibration uses); the default runs without taps.")
    var tapAll = false

    @Option(help: "Largest batch run through the graph at once (0: whole batches). Default: the engine's.")
    var microBatch: Int?

    @Flag(help: "Time every node of the timed runs and print a table (per node, and summed per op and output shape) to stderr; the timing itself adds a little overhead per node.")
    var profile = false

    func run() throws {
        Kernels.setUp()
        let session = try InferenceSession(modelPath: model, options: SessionOptions(threads: threads, profile: profile,
                                                                                      microBatch: microBatch.map { $0 > 0 ? $0 : nil } ?? SessionOptions.defaultMicroBatch,
                                                                                      plannedForTaps: tapAll))
        guard let info = session.inputs.first else { throw ValidationError("model has no input") }
        let x: Tensor
        if let input {
            x = try NPY.read(path: input)
        } else {
            let shape = info.shape.enumerated().map { i, d in d ?? (i == 0 ? batch : 1) }
            let shapeWithBatch = [batch] + shape.dropFirst()
            let count = shapeWithBatch.reduce(1, *)
            var state: UInt32 = 12345
            let data = (0..<count).map { _ -> Float in
                state = state &* 1_664_525 &+ 1_013_904_223
                return Float(state >> 8) / Float(1 << 24) * 4 - 2
            }
            x = Tensor(shape: shapeWithBatch, data: data)
        }
        let feeds = [info.name: x]
        let images = x.shape.first ?? 1
        // With --tap-all, every tensor is tapped; the observer does not read the values (the
        // histograms' cost is measured by bench-core), so this is the engine's cost of the taps.
        nonisolated(unsafe) var tappedValues = 0
        let tap: ActivationTap? = tapAll ? ActivationTap(acceptsBatchSlices: true) { a in tappedValues += a.values.count } : nil
        for _ in 0..<max(0, warmup) { _ = try session.run(feeds, tap: tap) }
        session.resetProfile()
        var times: [Double] = []
        var last: [String: Tensor] = [:]
        let clock = ContinuousClock()
        var total = 0.0
        while times.count < max(1, runs) || total < minSeconds {
            let start = clock.now
            last = try session.run(feeds, tap: tap)
            let d = clock.now - start
            let s = Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
            times.append(s)
            total += s
        }
        if let outputNpy, let name = session.outputs.first?.name, let y = last[name] {
            try NPY.write(y, to: outputNpy)
        }
        if profile { printProfile(session.profile(), runs: times.count, images: images) }
        let sorted = times.sorted()
        let median = sorted[sorted.count / 2]
        var usage = rusage()
        #if os(Linux)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        let result: [String: Any] = [
            "model": model,
            "batch": images,
            "threads": threads,
            "runs": times.count,
            "seconds_median": median,
            "seconds_best": sorted[0],
            "images_per_second": Double(images) / median,
            "images_per_second_best": Double(images) / sorted[0],
            "peak_rss_bytes": Int(usage.ru_maxrss) * 1024,
            "blas_core": Kernels.blasCoreName,
            "blas_core_upgrade": Kernels.blasCoreUpgrade ?? "",
            "vector_isa": Kernels.VectorISA.best.rawValue,
            "taps": tapAll ? "all" : "none",
            "micro_batch": session.options.microBatch ?? 0,
            "tapped_values_per_run": tapAll ? tappedValues / max(1, times.count + max(0, warmup)) : 0,
        ]
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
    }

    /// Per-run milliseconds: each node, then grouped by op and output shape (without the batch).
    private func printProfile(_ timings: [StepTiming], runs: Int, images: Int) {
        let total = timings.reduce(0) { $0 + $1.seconds }
        func ms(_ s: Double) -> String { String(format: "%8.3f", s * 1000 / Double(max(1, runs))) }
        func pct(_ s: Double) -> String { String(format: "%5.1f%%", total > 0 ? s / total * 100 : 0) }
        var lines = ["per-run ms over \(runs) runs of \(images) image(s); nodes total \(ms(total).trimmingCharacters(in: .whitespaces)) ms",
                     "  by op and output shape:"]
        var groups: [String: Double] = [:]
        for t in timings { groups["\(t.opType) \(t.outputShape.dropFirst().map(String.init).joined(separator: "x"))", default: 0] += t.seconds }
        for (k, v) in groups.sorted(by: { $0.value > $1.value }) { lines.append("  \(ms(v)) \(pct(v))  \(k)") }
        lines.append("  by node, in execution order:")
        for t in timings.sorted(by: { $0.order < $1.order }) {
            lines.append("  \(ms(t.seconds)) \(pct(t.seconds))  \(t.opType) \(t.outputShape)  \(t.node)")
        }
        FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}
