import ArgumentParser
import Calibration
import Foundation

/// Timing entry point behind `scripts/bench-core` (release builds only). Prints JSON.
struct BenchCoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-core", abstract: "Benchmark histogram accumulation and threshold search (JSON).",
        shouldDisplay: false)

    @Option(help: "Number of Float32 values.")
    var values: Int = 16 * 1024 * 1024

    @Option(help: "Repetitions (the best is reported).")
    var repeats: Int = 7

    @Option(help: "Also write the values as a float32 .npy file here, for the Python peers.")
    var writeNpy: String?

    @Option(help: "Write the 4096-bin-range histogram used for the search timing as JSON here.")
    var writeHistogram: String?

    func run() throws {
        // Activation-like data: a ReLU'd mixture with a heavy tail and a few exact zeros.
        var rng = SplitMix64(seed: 42)
        var data = [Float](repeating: 0, count: values)
        for i in 0..<values {
            let u = Float(rng.next() >> 40) / Float(1 << 24)
            let v = Float(rng.next() >> 40) / Float(1 << 24)
            let g = (u + v - 1) * 3          // triangular on [-3, 3]
            data[i] = i % 5 == 0 ? 0 : (i % 1000 == 0 ? g * 40 : g)
        }
        if let path = writeNpy { try writeFloat32Npy(data, to: path) }

        var best = Double.infinity
        var histogram = Histogram()
        for _ in 0..<repeats {
            var h = Histogram()
            let t0 = DispatchTime.now().uptimeNanoseconds
            data.withUnsafeBufferPointer { h.accumulate($0) }
            let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            best = min(best, dt)
            histogram = h
        }
        let w = histogram.binWidth!
        if let path = writeHistogram {
            let object: [String: Any] = ["bin_width": w, "counts": histogram.counts.map { NSNumber(value: $0) }]
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        }
        var searchBest = Double.infinity
        var bin = 0
        for _ in 0..<max(repeats, 20) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let r = ThresholdSearch.entropy(counts: histogram.counts, binWidth: w)
            let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            searchBest = min(searchBest, dt)
            bin = r.bin
        }
        let result: [String: Any] = [
            "values": values, "accumulate_seconds": best, "values_per_second": Double(values) / best,
            "bins": histogram.counts.count, "entropy_search_seconds": searchBest, "entropy_bin": bin,
        ]
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
    }
}

struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Minimal float32 .npy writer for handing benchmark data to Python.
func writeFloat32Npy(_ data: [Float], to path: String) throws {
    var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(data.count),), }"
    let total = 10 + header.utf8.count + 1
    header += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
    var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
    let length = UInt16(header.utf8.count)
    bytes += [UInt8(length & 0xFF), UInt8(length >> 8)] + Array(header.utf8)
    data.withUnsafeBytes { bytes += $0 }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}
