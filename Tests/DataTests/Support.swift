import Foundation
import Testing
@testable import Data

/// Paths of the committed fixtures and of the optional shared/system data.
enum Fixtures {
    static let directory: String = {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        return here.appendingPathComponent("Fixtures").path
    }()
    static func path(_ relative: String) -> String { directory + "/" + relative }

    static let repoRoot: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// `../shared` relative to the repository root, when present.
    static let shared: String? = {
        let p = URL(fileURLWithPath: repoRoot).deletingLastPathComponent().appendingPathComponent("shared").path
        return FileManager.default.fileExists(atPath: p) ? p : nil
    }()

    /// Debian `dataset-fashion-mnist`, when installed.
    static let fashionMNIST: String? = {
        let p = "/usr/share/datasets/fashion-mnist"
        return FileManager.default.fileExists(atPath: p + "/train-images-idx3-ubyte.gz") ? p : nil
    }()
}

/// A minimal, independent .npy reader for the reference arrays (v1 header, '<f4' or '|u1', C order).
struct ReferenceArray {
    var shape: [Int]
    var values: [Float]

    init(path: String) throws {
        let data = try Foundation.Data(contentsOf: URL(fileURLWithPath: path))
        let bytes = [UInt8](data)
        precondition(bytes[0] == 0x93 && bytes[6] == 1, "reference .npy must be format 1.0")
        let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        let header = String(decoding: bytes[10 ..< 10 + headerLength], as: UTF8.self)
        let shapeStart = header.range(of: "'shape': (")!.upperBound
        let shapeEnd = header[shapeStart...].firstIndex(of: ")")!
        shape = header[shapeStart ..< shapeEnd].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let body = Array(bytes[(10 + headerLength)...])
        if header.contains("'<f4'") {
            values = stride(from: 0, to: body.count, by: 4).map { i in
                Float(bitPattern: UInt32(body[i]) | UInt32(body[i + 1]) << 8 | UInt32(body[i + 2]) << 16 | UInt32(body[i + 3]) << 24)
            }
        } else if header.contains("'|u1'") {
            values = body.map(Float.init)
        } else {
            fatalError("unsupported reference dtype in \(header)")
        }
        precondition(values.count == shape.reduce(1, *), "reference size mismatch")
    }
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var m: Float = 0
    for i in a.indices { m = max(m, abs(a[i] - b[i])) }
    return m
}

/// Runs `body` and returns the DataError it throws (nil when it throws nothing or something else).
func dataError(_ body: () throws -> Void) -> DataError? {
    do { try body() } catch let e as DataError { return e } catch { return nil }
    return nil
}
