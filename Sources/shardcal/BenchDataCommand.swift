import ArgumentParser
import Data
import Foundation

/// `shardcal bench-data`: single-threaded decode + preprocess throughput of the Data module on a
/// folder of images (hidden; driven by `scripts/bench-data`, which runs Pillow + numpy next to it).
struct BenchDataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-data",
        abstract: "Measure decode + preprocess throughput (images/s on one core).",
        shouldDisplay: false
    )

    @Option(help: "Folder of JPEG/PNG images.")
    var folder: String = "../shared/bench/effnet-lite0/calib"

    @Option(help: "Use the first N images (0: all).")
    var limit: Int = 0

    @Option(help: "Timed passes over the images (the best pass is reported).")
    var passes: Int = 3

    @Option(help: "Samples per loadSamples call.")
    var batch: Int = 32

    @Option(help: "Per-channel mean (comma separated), applied after x = u * scale.")
    var mean: String = "0.485,0.456,0.406"

    @Option(help: "Per-channel std (comma separated).")
    var std: String = "0.229,0.224,0.225"

    @Option(help: "Write every K-th preprocessed sample (float32, C order) to --dump-path (0: none).")
    var dumpEvery: Int = 0

    @Option(help: "File the dumped samples are written to.")
    var dumpPath: String = "/tmp/shardcal-bench-data.f32"

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func run() throws {
        var paths = try ImageDataset.listFolder(folder)
        if limit > 0 { paths = Array(paths.prefix(limit)) }
        guard !paths.isEmpty else { throw ValidationError("no images in \(folder)") }
        let spec = Preprocessing(scale: 1 / 255,
                                 mean: mean.split(separator: ",").compactMap { Float($0) },
                                 std: std.split(separator: ",").compactMap { Float($0) })
        let ds = try ImageDataset(paths: paths, preprocessing: spec)
        let n = ds.sampleCount, per = ds.sampleElementCount
        var buffer = [Float](repeating: 0, count: batch * per)
        var dump: [Float] = []

        var best = Double.infinity
        for pass in 0 ... passes { // pass 0 warms the page cache and is not timed
            let start = ContinuousClock.now
            var i = 0
            while i < n {
                let r = i ..< min(i + batch, n)
                let report = try buffer.withUnsafeMutableBufferPointer { try ds.loadSamples(r, into: $0) }
                precondition(report.loadedCount == r.count)
                if pass == 0 && dumpEvery > 0 {
                    for (slot, index) in r.enumerated() where index % dumpEvery == 0 {
                        dump += buffer[slot * per ..< (slot + 1) * per]
                    }
                }
                i = r.upperBound
            }
            let elapsed = ContinuousClock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            if pass > 0 { best = min(best, seconds) }
        }
        if dumpEvery > 0 {
            try dump.withUnsafeBytes { try Foundation.Data($0).write(to: URL(fileURLWithPath: dumpPath)) }
        }
        let rate = Double(n) / best
        if json {
            print("{\"images\": \(n), \"seconds\": \(best), \"images_per_s\": \(rate), \"sample_shape\": \(ds.sampleShape)}")
        } else {
            print("shardcal Data: \(n) images \(ds.sampleShape), best of \(passes): \(String(format: "%.3f", best)) s, \(String(format: "%.0f", rate)) images/s on one core")
        }
    }
}
