import Calibration
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors from reading or writing calibration files; each names the path.
public enum FileError: Error, CustomStringConvertible {
    case cannotRead(path: String, reason: String)
    case cannotWrite(path: String, reason: String)
    case badContent(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotRead(path, reason): return "cannot read \(path): \(reason)"
        case let .cannotWrite(path, reason): return "cannot write \(path): \(reason)"
        case let .badContent(path, reason): return "\(path): \(reason)"
        }
    }
}

/// Crash-safe file replacement: write a temporary file beside the target, fsync it, rename it
/// over the target, fsync the directory. A reader sees the old file or the new one, never a mix.
public enum AtomicFile {
    public static func write(_ bytes: [UInt8], to path: String) throws(FileError) {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .cannotWrite(path: path, reason: "cannot create directory \(directory): \(error.localizedDescription)")
        }
        let temp = directory + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .cannotWrite(path: path, reason: String(cString: strerror(errno))) }
        var ok = false
        defer {
            if !ok { unlink(temp) }
        }
        var written = 0
        let failure: String? = bytes.withUnsafeBytes { raw -> String? in
            while written < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return String(cString: strerror(errno))
                }
                written += n
            }
            return nil
        }
        if let failure {
            close(fd)
            throw .cannotWrite(path: path, reason: failure)
        }
        if fsync(fd) != 0 {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw .cannotWrite(path: path, reason: "fsync: \(reason)")
        }
        close(fd)
        if rename(temp, path) != 0 { throw .cannotWrite(path: path, reason: "rename: \(String(cString: strerror(errno)))") }
        ok = true
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }

    public static func write(_ text: String, to path: String) throws(FileError) {
        try write(Array(text.utf8), to: path)
    }

    public static func read(_ path: String) throws(FileError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file"
            throw .cannotRead(path: path, reason: reason)
        }
        return Array(data)
    }
}

/// The histogram state file on disk.
public enum StateFile {
    public static func write(_ state: CalibrationState, to path: String) throws(FileError) {
        try AtomicFile.write(state.encoded(), to: path)
    }

    public static func read(_ path: String) throws(FileError) -> CalibrationState {
        let bytes = try AtomicFile.read(path)
        do {
            return try CalibrationState(decoding: bytes)
        } catch {
            throw .badContent(path: path, reason: error.description)
        }
    }
}

/// The calibration outputs of a job.
public struct CalibrationOutputs: Sendable {
    public var cachePath: String?
    public var tablePath: String?
    public var statePath: String?
    public var cacheVersion: String
    public var cacheAlgorithm: String

    public init(cachePath: String?, tablePath: String?, statePath: String?,
                cacheVersion: String = TensorRTCache.defaultVersion, cacheAlgorithm: String = TensorRTCache.defaultAlgorithm) {
        self.cachePath = cachePath
        self.tablePath = tablePath
        self.statePath = statePath
        self.cacheVersion = cacheVersion
        self.cacheAlgorithm = cacheAlgorithm
    }

    /// Writes each requested output atomically.
    public func write(table: CalibrationTable, state: CalibrationState?, info: [String: String] = [:]) throws(FileError) {
        if let cachePath {
            try AtomicFile.write(table.tensorRTCache(version: cacheVersion, algorithm: cacheAlgorithm).text(), to: cachePath)
        }
        if let tablePath {
            try AtomicFile.write(table.json(extra: info, skippedSamples: state?.skippedSamples ?? []), to: tablePath)
        }
        if let statePath, let state { try StateFile.write(state, to: statePath) }
    }
}
