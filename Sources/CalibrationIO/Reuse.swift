import Calibration
import Foundation

/// What `outputs.reuse` finds on disk, in the spirit of TensorRT's `readCalibrationCache`: earlier
/// outputs for the same model and the same result-affecting configuration are used instead of
/// calibrating again. Unlike TensorRT, which trusts any cache it is handed, shardcal reuses only
/// what carries matching digests, and says why it did not reuse something.
public enum ReuseDecision: Sendable {
    /// A state file with every shard of this job merged: search it and write the outputs; no workers.
    case completeState(CalibrationState, path: String)
    /// A state file for this job with some shards merged: continue it (as `--resume` would).
    case partialState(CalibrationState, path: String)
    /// No state file, but a cache plus its JSON table whose digests match: nothing to compute.
    case cache(cachePath: String, tablePath: String)
    /// Calibrate from scratch; `reason` says why nothing was reused.
    case compute(reason: String)
}

public enum CalibrationReuse {
    /// Decides what can be reused.
    /// - Parameters:
    ///   - statePath, cachePath, tablePath: the job's output paths (nil when not configured).
    ///   - shardIDs: the shards of this job's plan.
    ///   - sampleCount: the job's sample count; a cache is only reused when its table records the same.
    /// - Throws: ``FileError`` when a state file exists but is damaged (reusing it is impossible,
    ///   and silently overwriting it would hide the damage).
    public static func decide(statePath: String?, cachePath: String?, tablePath: String?,
                              modelDigest: String, configDigest: String, shardIDs: Set<Int>, sampleCount: Int? = nil,
                              cacheVersion: String = TensorRTCache.defaultVersion,
                              cacheAlgorithm: String = TensorRTCache.defaultAlgorithm) throws(FileError) -> ReuseDecision {
        let fm = FileManager.default
        if let statePath, fm.fileExists(atPath: statePath) {
            let state = try StateFile.read(statePath)
            if state.modelDigest != modelDigest {
                return .compute(reason: "\(statePath) is for another model (digest \(state.modelDigest.prefix(12)), this job \(modelDigest.prefix(12)))")
            }
            if state.configDigest != configDigest {
                return .compute(reason: "\(statePath) is for another configuration (digest \(state.configDigest.prefix(12)), this job \(configDigest.prefix(12)))")
            }
            let foreign = state.shards.subtracting(shardIDs)
            if !foreign.isEmpty {
                return .compute(reason: "\(statePath) holds shards this job does not have (\(foreign.sorted().prefix(5).map(String.init).joined(separator: ", ")))")
            }
            return shardIDs.isSubset(of: state.shards) ? .completeState(state, path: statePath) : .partialState(state, path: statePath)
        }
        guard let cachePath, fm.fileExists(atPath: cachePath) else {
            return .compute(reason: "no earlier state or cache at the output paths")
        }
        guard let tablePath, let data = fm.contents(atPath: tablePath) else {
            return .compute(reason: "\(cachePath) exists but has no JSON table beside it to prove which model and configuration it is for")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let info = object["info"] as? [String: Any],
              let model = info["model_digest"] as? String, let config = info["config_digest"] as? String else {
            return .compute(reason: "\(tablePath) does not record the model and config digests")
        }
        if model != modelDigest { return .compute(reason: "\(cachePath) is for another model (digest \(model.prefix(12)))") }
        if config != configDigest { return .compute(reason: "\(cachePath) is for another configuration (digest \(config.prefix(12)))") }
        if let sampleCount {
            // The config digest leaves the sample count out (states record it), so the table must say it.
            guard let samples = info["samples"] as? String, samples == String(sampleCount) else {
                return .compute(reason: "\(cachePath) was calibrated on \(info["samples"] as? String ?? "an unrecorded number of") samples, this job has \(sampleCount)")
            }
        }
        let text = String(decoding: fm.contents(atPath: cachePath) ?? Data(), as: UTF8.self)
        do {
            _ = try TensorRTCache.parse(text, expectingVersion: cacheVersion, algorithm: cacheAlgorithm)
        } catch {
            return .compute(reason: "\(cachePath) cannot be reused: \(error)")
        }
        return .cache(cachePath: cachePath, tablePath: tablePath)
    }
}
