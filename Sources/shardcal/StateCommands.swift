import ArgumentParser
import Calibration
import CalibrationIO
import Foundation

/// Reads `--method` and `--percentile` into a `CalibrationMethod`.
struct MethodOptions: ParsableArguments {
    @Option(name: .long, help: "Threshold method: entropy (TensorRT EntropyCalibrator2), percentile, mse or max.")
    var method: String = "entropy"

    @Option(name: .long, help: "Percentile for --method percentile.")
    var percentile: Double = CalibrationMethod.defaultPercentile

    func resolved() throws -> CalibrationMethod {
        guard percentile > 0 && percentile <= 100 else {
            throw ValidationError("--percentile must be in (0, 100], got \(percentile)")
        }
        guard let m = CalibrationMethod(parsing: method, percentile: percentile) else {
            throw ValidationError("unknown --method '\(method)' (expected entropy, percentile, mse or max)")
        }
        return m
    }
}

/// Where and how to write the outputs.
struct OutputOptions: ParsableArguments {
    @Option(name: .long, help: "Write the TensorRT calibration cache here.")
    var cache: String?

    @Option(name: .long, help: "Write the JSON calibration table here.")
    var json: String?

    @Option(name: .long, help: "TensorRT version in the cache header (TRT-<version>-<algorithm>).")
    var cacheVersion: String = TensorRTCache.defaultVersion

    @Option(name: .long, help: "Algorithm in the cache header.")
    var cacheAlgorithm: String = TensorRTCache.defaultAlgorithm
}

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge histogram state files exactly (same model and config, disjoint shards).")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "State files to merge.")
    var inputs: [String]

    @Option(name: .shortAndLong, help: "Output state file (written atomically).")
    var output: String

    func validate() throws {
        if inputs.isEmpty { throw ValidationError("give at least one input state file") }
    }

    func run() throws {
        let logger = global.makeLogger("shardcal.merge")
        var merged = try StateFile.read(inputs[0])
        for path in inputs.dropFirst() {
            let next = try StateFile.read(path)
            do {
                try merged.merge(next)
            } catch {
                throw CLIError("cannot merge \(path) into \(inputs[0]) and the files before it: \(error)")
            }
        }
        try StateFile.write(merged, to: output)
        logger.info("merged \(inputs.count) state files: \(merged.shards.count) shards, \(merged.tensorNames.count) tensors -> \(output)")
    }
}

struct SearchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Find each tensor's threshold in a state file (or a JSON histogram file) and write the cache.",
        discussion: """
            INPUT is a shardcal state file, or a JSON file of histograms made by another tool: \
            {"tensors": {"<name>": {"bin_width": w, "counts": [c0, c1, ...]}}} (bin k covers [k*w, (k+1)*w)).
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var method: MethodOptions
    @OptionGroup var outputs: OutputOptions

    @Argument(help: "State file or JSON histogram file.")
    var input: String

    @Flag(name: .long, help: "Print the per-tensor table on stdout.")
    var print = false

    func run() throws {
        let logger = global.makeLogger("shardcal.search")
        let m = try method.resolved()
        let bytes = try AtomicFile.read(input)
        let table: CalibrationTable
        var info: [String: String] = ["source": input, "tool_version": ToolInfo.version]
        if bytes.starts(with: CalibrationState.magic) {
            let state = try StateFile.read(input)
            table = CalibrationTable.compute(state: state, method: m)
            info["model_digest"] = state.modelDigest
            info["config_digest"] = state.configDigest
            info["shards"] = String(state.shards.count)
        } else if bytes.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "{") {
            let external: [ExternalHistogram]
            do {
                external = try ExternalHistograms.parse(bytes)
            } catch {
                throw CLIError("\(input): \(error)")
            }
            table = CalibrationTable(method: m, tensors: external.map {
                CalibrationTable.calibrate(name: $0.name, counts: $0.counts, binWidth: $0.binWidth, method: m)
            })
        } else {
            throw CLIError("\(input): neither a shardcal state file nor a JSON histogram file")
        }
        for t in table.tensors {
            for w in t.warnings { logger.warning("\(t.name): \(w)") }
        }
        let out = CalibrationOutputs(cachePath: outputs.cache, tablePath: outputs.json, statePath: nil,
                                     cacheVersion: outputs.cacheVersion, cacheAlgorithm: outputs.cacheAlgorithm)
        try out.write(table: table, state: nil, info: info)
        if print || (outputs.cache == nil && outputs.json == nil) {
            Swift.print(TableRendering.thresholds(table), terminator: "")
        }
        logger.info("\(table.tensors.count) tensors calibrated with \(m)")
    }
}

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what a state file holds: metadata and a per-tensor table.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "State file.")
    var input: String

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        let state = try StateFile.read(input)
        if json {
            Swift.print(TableRendering.stateJSON(state))
        } else {
            Swift.print(TableRendering.state(state), terminator: "")
        }
    }
}

/// Plain-text and JSON renderings for the terminal.
enum TableRendering {
    static func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
        if s.count >= width { return s }
        let fill = String(repeating: " ", count: width - s.count)
        return right ? fill + s : s + fill
    }

    static func render(_ header: [String], _ rows: [[String]], rightAligned: Set<Int>) -> String {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { pad($1, widths[$0], right: rightAligned.contains($0)) }.joined(separator: "  ")
                .replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        var out = line(header) + "\n"
        out += line(widths.map { String(repeating: "-", count: $0) }) + "\n"
        for row in rows { out += line(row) + "\n" }
        return out
    }

    static func number(_ x: Float?) -> String {
        guard let x else { return "-" }
        return String(format: "%.6g", Double(x))
    }

    static func state(_ state: CalibrationState) -> String {
        var out = ""
        out += "state file    shardcal \(state.toolVersion)\n"
        out += "model digest  \(state.modelDigest)\n"
        out += "config digest \(state.configDigest)\n"
        let runs = CalibrationState.runs(of: state.shards)
        let shown = runs.prefix(8).map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
        out += "shards        \(state.shards.count) merged: \(shown.joined(separator: ", "))\(runs.count > 8 ? ", …" : "")\n"
        for (k, v) in state.info.sorted(by: { $0.key < $1.key }) { out += "\(pad(k, 13)) \(v)\n" }
        out += "tensors       \(state.tensorNames.count)\n\n"
        let rows: [[String]] = state.orderedHistograms.map { t in
            let h = t.histogram
            let zeroPct = h.valueCount > 0 ? String(format: "%.1f%%", 100 * Double(h.zeroCount) / Double(h.valueCount)) : "-"
            let width = h.binWidthLog2.map { "2^\($0)" } ?? "-"
            return [t.name, String(h.valueCount), number(h.minimum), number(h.maximum), zeroPct, width,
                    String(h.counts.count), h.nonFiniteCount > 0 ? "\(h.nanCount)/\(h.positiveInfinityCount)/\(h.negativeInfinityCount)" : "0"]
        }
        out += render(["tensor", "values", "min", "max", "zeros", "bin width", "bins", "nan/+inf/-inf"], rows,
                      rightAligned: [1, 2, 3, 4, 6])
        return out
    }

    static func stateJSON(_ state: CalibrationState) -> String {
        let tensors: [[String: Any]] = state.orderedHistograms.map { t in
            let h = t.histogram
            return [
                "name": t.name, "value_count": h.valueCount, "zero_count": h.zeroCount,
                "min": h.minimum.map { Double($0) } ?? NSNull(), "max": h.maximum.map { Double($0) } ?? NSNull(),
                "bin_width_log2": h.binWidthLog2 ?? NSNull(), "bin_count": h.counts.count,
                "nan_count": h.nanCount, "pos_inf_count": h.positiveInfinityCount, "neg_inf_count": h.negativeInfinityCount,
            ]
        }
        let object: [String: Any] = [
            "tool_version": state.toolVersion, "model_digest": state.modelDigest, "config_digest": state.configDigest,
            "shards": CalibrationState.runs(of: state.shards).map { [$0.lowerBound, $0.upperBound] },
            "info": state.info, "tensors": tensors,
        ]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    static func thresholds(_ table: CalibrationTable) -> String {
        let rows: [[String]] = table.tensors.map { t in
            [t.name, number(t.amax), TensorRTCache.hexBits(t.scale), String(format: "%.3g%%", 100 * t.clippedFraction),
             t.divergence.map { String(format: "%.4g", $0) } ?? "-", t.warnings.isEmpty ? "" : "warning"]
        }
        return render(["tensor", "amax", "scale (hex)", "clipped", "divergence", ""], rows, rightAligned: [1, 3, 4])
    }
}
