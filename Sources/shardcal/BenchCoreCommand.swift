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

    @Option(help: "Also time the entropy search on every threshold vector (*.json with counts, bin_width) in this directory.")
    var entropyVectors: String?

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

        // Wall-clock time is the figure; the thread's CPU time is reported beside it, as it is less
        // disturbed when other processes share the core.
        var best = Double.infinity, bestCPU = Double.infinity
        var histogram = Histogram()
        for _ in 0..<repeats {
            var h = Histogram()
            let (dt, cpu) = timed { data.withUnsafeBufferPointer { h.accumulate($0) } }
            best = min(best, dt)
            bestCPU = min(bestCPU, cpu)
            histogram = h
        }
        let w = histogram.binWidth!
        if let path = writeHistogram {
            let object: [String: Any] = ["bin_width": w, "counts": histogram.counts.map { NSNumber(value: $0) }]
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        }
        let counts = histogram.counts
        var bin = 0
        let (searchBest, searchBestCPU) = bestTimes(max(repeats, 20)) {
            bin = ThresholdSearch.entropy(counts: counts, binWidth: w).bin
        }
        var result: [String: Any] = [
            "values": values, "accumulate_seconds": best, "values_per_second": Double(values) / best,
            "accumulate_cpu_seconds": bestCPU,
            "bins": histogram.counts.count, "entropy_search_seconds": searchBest, "entropy_bin": bin,
            "entropy_search_cpu_seconds": searchBestCPU,
        ]
        if let directory = entropyVectors {
            // Per vector: [bins, best wall seconds, best CPU seconds, bin found].
            var perVector: [String: Any] = [:]
            let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }
            for file in files.sorted() {
                let data = try Data(contentsOf: URL(fileURLWithPath: directory).appendingPathComponent(file))
                guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                      let raw = object["counts"] as? [NSNumber], let width = object["bin_width"] as? Double
                else { continue }
                let vector = raw.map { $0.uint64Value }
                var found = 0
                let (wall, cpu) = bestTimes(20) { found = ThresholdSearch.entropy(counts: vector, binWidth: width).bin }
                perVector[file] = [vector.count, wall, cpu, found]
            }
            result["entropy_vectors"] = perVector
        }
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
    }
}

/// Wall-clock and thread CPU seconds of one run of `body`.
func timed(_ body: () -> Void) -> (wall: Double, cpu: Double) {
    func cpuNow() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
    let c0 = cpuNow()
    let t0 = DispatchTime.now().uptimeNanoseconds
    body()
    let wall = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    return (wall, cpuNow() - c0)
}

/// Best wall-clock and best CPU seconds over `repeats` runs.
func bestTimes(_ repeats: Int, _ body: () -> Void) -> (wall: Double, cpu: Double) {
    var wall = Double.infinity, cpu = Double.infinity
    for _ in 0..<repeats {
        let t = timed(body)
        wall = min(wall, t.wall)
        cpu = min(cpu, t.cpu)
    }
    return (wall, cpu)
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
