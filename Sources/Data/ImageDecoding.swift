import CImageCodecs
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An 8-bit image, row-major, interleaved channels (3 = RGB, 1 = gray).
public struct Image8: Sendable, Hashable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var pixels: [UInt8]
    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "pixel count does not match geometry")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }
}

/// Image file format, recognised by its leading bytes (never by the file name).
public enum ImageFormat: String, Sendable {
    case jpeg, png

    public static func sniff(_ bytes: UnsafeRawBufferPointer) -> ImageFormat? {
        if bytes.count >= 3, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[2] == 0xFF { return .jpeg }
        if bytes.count >= 8, bytes[0] == 0x89, bytes[1] == 0x50, bytes[2] == 0x4E, bytes[3] == 0x47,
           bytes[4] == 0x0D, bytes[5] == 0x0A, bytes[6] == 0x1A, bytes[7] == 0x0A { return .png }
        return nil
    }
}

/// Why a file could not be turned into pixels (mapped to ``DataError`` with path and index by callers).
enum DecodeFailure: Error {
    case notFound
    case io(String)
    case notAnImage
    case corrupt(String)
    case wrongShape(expected: [Int], actual: [Int])
}

/// Reads whole files into a reusable byte buffer (one per loading thread).
struct FileReader {
    var bytes: [UInt8] = []
    var count = 0

    mutating func read(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENOENT || e == ENOTDIR { throw DecodeFailure.notFound }
            throw DecodeFailure.io(String(cString: strerror(e)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw DecodeFailure.io(String(cString: strerror(errno))) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw DecodeFailure.io("is a directory") }
        let size = Int(st.st_size)
        if bytes.count < size + 1 { bytes = [UInt8](repeating: 0, count: size + 1) }
        var got = 0
        let failure: String? = bytes.withUnsafeMutableBytes { raw -> String? in
            while got < size + 1 {
                let n = Glibc.read(fd, raw.baseAddress! + got, raw.count - got)
                if n < 0 {
                    if errno == EINTR { continue }
                    return String(cString: strerror(errno))
                }
                if n == 0 { break }
                got += n
                if got == raw.count { break }
            }
            return nil
        }
        if let failure { throw DecodeFailure.io(failure) }
        count = min(got, size)
    }
}

/// JPEG/PNG decoding to 8-bit RGB through libjpeg-turbo and libpng (see `CImageCodecs/shim.h`).
public enum ImageDecoder {
    /// Decodes an in-memory JPEG or PNG file into RGB (3 channels).
    public static func decodeRGB(_ data: UnsafeRawBufferPointer) throws -> Image8 {
        var pixels: [UInt8] = []
        let (w, h) = try decodeRGB(data, into: &pixels)
        pixels.removeLast(pixels.count - w * h * 3)
        return Image8(width: w, height: h, channels: 3, pixels: pixels)
    }

    /// Decodes into `pixels` (grown as needed, never shrunk; the first `w*h*3` bytes are the image).
    static func decodeRGB(_ data: UnsafeRawBufferPointer, into pixels: inout [UInt8]) throws -> (Int, Int) {
        guard let format = ImageFormat.sniff(data) else { throw DecodeFailure.notAnImage }
        var message = [CChar](repeating: 0, count: 256)
        var w: Int32 = 0
        var h: Int32 = 0
        for _ in 0 ..< 2 {
            let status: Int32 = pixels.withUnsafeMutableBufferPointer { out in
                message.withUnsafeMutableBufferPointer { msg in
                    let src = data.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    switch format {
                    case .jpeg:
                        return shardcal_jpeg_decode_rgb(src, UInt(data.count), out.baseAddress, out.count, &w, &h, msg.baseAddress, msg.count)
                    case .png:
                        return shardcal_png_decode_rgb(src, UInt(data.count), out.baseAddress, out.count, &w, &h, msg.baseAddress, msg.count)
                    }
                }
            }
            switch status {
            case SHARDCAL_CODEC_OK:
                return (Int(w), Int(h))
            case SHARDCAL_CODEC_NEED_SPACE:
                let needed = Int(w) * Int(h) * 3
                guard w > 0, h > 0, needed <= 1 << 31 else { throw DecodeFailure.corrupt("implausible image size \(w)x\(h)") }
                pixels = [UInt8](repeating: 0, count: needed)
            default:
                let text = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                throw DecodeFailure.corrupt("\(format.rawValue): \(text)")
            }
        }
        throw DecodeFailure.corrupt("decoder kept asking for more space")
    }

    /// Reads and decodes an image file into RGB.
    public static func decodeRGB(path: String) throws -> Image8 {
        var reader = FileReader()
        do {
            try reader.read(path: path)
            return try reader.bytes.withUnsafeBytes { raw in
                try decodeRGB(UnsafeRawBufferPointer(rebasing: raw[0 ..< reader.count]))
            }
        } catch let failure as DecodeFailure {
            throw failure.dataError(path: path, index: nil)
        }
    }
}

extension DecodeFailure {
    func dataError(path: String, index: Int?) -> DataError {
        switch self {
        case .notFound: return .fileNotFound(path: path, index: index)
        case let .io(reason): return .unreadable(path: path, index: index, reason: reason)
        case .notAnImage:
            if let index { return .corruptSample(path: path, index: index, reason: "not a JPEG or PNG image (unknown signature)") }
            return .invalidFormat(path: path, reason: "not a JPEG or PNG image (unknown signature)")
        case let .corrupt(reason):
            if let index { return .corruptSample(path: path, index: index, reason: reason) }
            return .invalidFormat(path: path, reason: reason)
        case let .wrongShape(expected, actual):
            if let index { return .wrongShape(path: path, index: index, expected: expected, actual: actual) }
            return .invalidFormat(path: path, reason: "shape \(actual), expected \(expected)")
        }
    }
}
