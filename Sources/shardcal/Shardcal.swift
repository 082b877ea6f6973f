import ArgumentParser
import Calibration
import Engine
import Foundation
import Logging

@main
enum ShardcalMain {
    static func main() {
        // OpenBLAS's core selection may set an environment variable: do it before any thread exists.
        Kernels.setUp()
        Shardcal.main()
    }
}

struct Shardcal: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shardcal",
        abstract: "Distributed INT8 post-training calibration (TensorRT EntropyCalibrator2 semantics).",
        discussion: """
            Workers run FP32 forward passes of an ONNX model on shards of a calibration set and build exact, \
            mergeable |x| histograms of every activation tensor; a coordinator merges them, searches the \
            clipping threshold per tensor and writes a TensorRT calibration cache (one scale = amax/127 per \
            tensor), a JSON table and a resumable state file. The cache is bit-identical whatever the worker \
            count, shard order, crashes or resumes.
            """,
        version: ToolInfo.version,
        subcommands: Shardcal.allSubcommands
    )
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func makeLogger(_ label: String) -> Logger {
        LoggingBootstrap.bootstrapOnce()
        var logger = Logger(label: label)
        logger.logLevel = logLevel
        return logger
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

enum LoggingBootstrap {
    private static let once: Void = {
        LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
    }()
    static func bootstrapOnce() { _ = once }
}

/// A failure the CLI reports as one line on stderr with a non-zero exit code.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Writes a line to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
