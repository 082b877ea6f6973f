import Foundation
import Testing

/// The README's demo, end to end through the built binary: coordinator, worker processes, engine,
/// IDX data, histograms, search, outputs. Checked against ONNX Runtime run on the same images
/// (scripts/make-demo-fixtures wrote the reference: per-tensor counts, min/max, and the entropy
/// threshold the published algorithm picks on numpy histograms of ORT's activations).
@Suite(.serialized) struct DemoTests {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let datasetPresent = FileManager.default.fileExists(
        atPath: "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

    struct Reference: Decodable {
        struct Row: Decodable {
            var name: String
            var value_count: Int
            var zero_count: Int
            var min: Double
            var max: Double
            var bin_width_log2: Int?
            var bin_count: Int?
            var entropy_amax: Double?
        }
        var tensors: [Row]
    }

    struct Table: Decodable {
        struct Row: Decodable {
            var name: String
            var amax: Double
            var bin_width: Double
            var bin_count: Int
            var value_count: Int
            var zero_count: Int
            var min: Double?
            var max: Double?
        }
        var tensors: [Row]
    }

    @Test func demoMatchesONNXRuntimeAndIsIndependentOfWorkerCount() throws {
        guard Self.datasetPresent else {
            print("skipped: Debian's dataset-fashion-mnist is not installed (scripts/bootstrap installs it)")
            return
        }
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = Self.repoRoot.appendingPathComponent("Config/demo.yaml").path
        var caches: [String] = []
        for workers in [2, 1] {
            let out = dir.appendingPathComponent("w\(workers)").path
            let r = try CLI.run(["run", "--config", config, "--out", out, "--workers", String(workers)])
            #expect(r.status == 0, "run with \(workers) workers failed: \(r.stderr)")
            caches.append(try String(contentsOfFile: out + "/calibration.cache", encoding: .utf8))
        }
        #expect(caches[0] == caches[1], "the cache must not depend on the worker count")
        let lines = caches[0].split(separator: "\n")
        #expect(lines.first == "TRT-8601-EntropyCalibration2")

        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf:
            Self.repoRoot.appendingPathComponent("Tests/CLITests/Fixtures/demo-ort-reference.json")))
        let table = try JSONDecoder().decode(Table.self, from: Data(contentsOf: dir.appendingPathComponent("w2/calibration.json")))
        #expect(table.tensors.map(\.name) == reference.tensors.map(\.name), "same tensors, in graph order")
        #expect(lines.count == reference.tensors.count + 1)
        for (ours, ort) in zip(table.tensors, reference.tensors) {
            #expect(ours.value_count == ort.value_count, "\(ours.name) value count")
            // Exact zeros can differ where ORT and the engine round a value near 0 differently.
            #expect(abs(ours.zero_count - ort.zero_count) <= max(2, ort.value_count / 100_000), "\(ours.name) zero count")
            #expect(abs((ours.max ?? .nan) - ort.max) <= 1e-5 * max(1, abs(ort.max)), "\(ours.name) max")
            #expect(abs((ours.min ?? .nan) - ort.min) <= 1e-5 * max(1, abs(ort.min)), "\(ours.name) min")
            if let k = ort.bin_width_log2, let amax = ort.entropy_amax {
                #expect(ours.bin_width == pow(2.0, Double(k)), "\(ours.name) bin width")
                #expect(ours.bin_count == ort.bin_count, "\(ours.name) bin count")
                // Same threshold as the reference algorithm on ORT's activations (to one bin).
                #expect(abs(ours.amax - amax) <= ours.bin_width, "\(ours.name) amax \(ours.amax) vs \(amax)")
            }
        }
    }
}
