#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// CPU feature flags as the OS reports them (Linux: the "flags" line of /proc/cpuinfo, which the
/// kernel clears for features it has not enabled, e.g. AVX-512 state). Empty elsewhere.
enum CPUFlags {
    static let current: Set<String> = {
        guard let info = readSmallFile("/proc/cpuinfo"),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
        return Set(line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }).map(String.init))
    }()

    /// Reads a small (procfs) text file without Foundation.
    static func readSmallFile(_ path: String) -> String? {
        #if os(Linux)
        let fd = open(path, O_RDONLY)
        if fd < 0 { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while bytes.count < 1 << 22 {
            let r = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if r <= 0 { break }
            bytes.append(contentsOf: chunk[0..<r])
        }
        return String(decoding: bytes, as: UTF8.self)
        #else
        return nil
        #endif
    }
}
