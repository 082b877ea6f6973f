import Calibration
import Data
import Engine
import Foundation
import Logging

/// The real shard computer: loads the shard's samples from the dataset, runs the FP32 model on
/// them batch by batch, and folds every tapped activation into its tensor's histogram at once
/// (nothing is kept per batch, so memory does not grow with the data set).
///
/// The result depends only on the shard's indices: samples load deterministically, the engine
/// is deterministic, and histograms merge exactly whatever the batching.
public final class EngineShardComputer: ShardComputer {
    let session: InferenceSession
    let dataset: any CalibrationDataset
    let inputName: String
    let batchSize: Int
    let filter: TapFilter
    /// Tapped tensors in graph order.
    public let tensorNames: [String]
    let logger: Logger

    public init(job: JobConfig, session: InferenceSession, dataset: any CalibrationDataset, logger: Logger) throws {
        self.session = session
        self.dataset = dataset
        self.logger = logger
        batchSize = max(1, job.batchSize)
        guard let input = job.model.inputs.first ?? session.inputs.first?.name else {
            throw ShardFailure(file: job.model.path, reason: "the model has no inputs")
        }
        guard session.inputs.contains(where: { $0.name == input }) else {
            throw ShardFailure(file: job.model.path,
                               reason: "input '\(input)' named in the config is not a model input (inputs: \(session.inputs.map(\.name).joined(separator: ", ")))")
        }
        inputName = input
        let selection = job.tensors
        filter = TapFilter(includeNames: selection.includeNames.isEmpty ? nil : Set(selection.includeNames),
                           excludeNames: Set(selection.excludeNames),
                           includeOpTypes: selection.includeOpTypes.isEmpty ? nil : Set(selection.includeOpTypes),
                           excludeOpTypes: Set(selection.excludeOpTypes))
        tensorNames = try session.tappableTensors(filter, inputShapes: [input: [batchSize] + dataset.sampleShape]).map(\.name)
    }

    /// Builds one from a job received over the wire (config text and model bytes).
    public static func make(job received: ReceivedJob, threads: Int, logger: Logger) throws -> EngineShardComputer {
        let text = String(decoding: received.config, as: UTF8.self)
        let base = received.configBaseDirectory.isEmpty ? FileManager.default.currentDirectoryPath : received.configBaseDirectory
        // The model comes with the job (verified by digest); only dataset paths resolve here.
        let job = try JobConfig.parse(yaml: text, fileName: "job \(received.jobID)", baseDirectory: base, checkFiles: false)
        let session: InferenceSession
        // Every activation is tapped (histogrammed).
        let options = SessionOptions(threads: threads, plannedForTaps: true)
        if let path = received.modelPath {
            session = try InferenceSession(modelPath: path, options: options, logger: logger)
        } else {
            session = try InferenceSession(modelData: received.model, baseDirectory: nil, options: options, logger: logger)
        }
        let dataset = try DatasetFactory.make(job: job, logger: logger)
        return try EngineShardComputer(job: job, session: session, dataset: dataset, logger: logger)
    }

    public func computeShard(id: Int, indices: Range<Int>) throws -> [NamedHistogram] {
        try computeShardReport(id: id, indices: indices).tensors
    }

    public func computeShardReport(id: Int, indices: Range<Int>) throws -> ShardOutput {
        var skippedSamples: [SkippedSampleRecord] = []
        let elements = dataset.sampleElementCount
        var histograms = [String: Histogram]()
        var buffer = [Float](repeating: 0, count: batchSize * elements)
        var start = indices.lowerBound
        while start < indices.upperBound {
            let end = min(start + batchSize, indices.upperBound)
            let report: SampleLoadReport
            do {
                report = try buffer.withUnsafeMutableBufferPointer { try dataset.loadSamples(start..<end, into: $0) }
            } catch let error as DataError {
                throw ShardFailure(file: error.failingPath, reason: error.description)
            }
            for skipped in report.skipped {
                logger.warning("shard \(id): skipped \(skipped)")
                skippedSamples.append(SkippedSampleRecord(index: skipped.index, file: skipped.path, reason: skipped.reason))
            }
            let loaded = report.loadedIndices.count
            if loaded > 0 {
                let input = Tensor(shape: [loaded] + dataset.sampleShape, data: Array(buffer.prefix(loaded * elements)))
                // Histograms are the same however a tensor is cut, so the engine may run the batch
                // in micro-batches (each image's activations stay in cache).
                let tap = ActivationTap(filter: filter, acceptsBatchSlices: true) { activation in
                    histograms[activation.name, default: Histogram()].accumulate(activation.values)
                }
                _ = try session.run([inputName: input], tap: tap)
            }
            start = end
        }
        return ShardOutput(tensors: tensorNames.compactMap { name in histograms[name].map { NamedHistogram(name: name, histogram: $0) } },
                           skipped: skippedSamples)
    }
}

extension DataError {
    /// The file a data error is about, for the worker's FAIL message.
    var failingPath: String? {
        switch self {
        case let .fileNotFound(path, _), let .unreadable(path, _, _), let .corruptSample(path, _, _),
             let .wrongShape(path, _, _, _), let .invalidFormat(path, _), let .emptyDataset(path):
            return path
        default:
            return nil
        }
    }
}
