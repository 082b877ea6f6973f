import Foundation

/// Histograms made by other tools (e.g. PyTorch forward hooks), given as JSON:
/// `{"tensors": {"<name>": {"bin_width": w, "counts": [c0, c1, ...]}}}`.
/// Any positive bin width is accepted (only the threshold search runs on them; merging needs
/// shardcal's power-of-two layout). Counts must be non-negative integers. JSON objects carry no
/// order, so tensors come out sorted by name.
public struct ExternalHistogram: Sendable, Equatable {
    public var name: String
    public var binWidth: Double
    public var counts: [UInt64]
}

public enum ExternalHistogramError: Error, Equatable, CustomStringConvertible {
    case notJSON(String)
    case missingTensors
    case badTensor(String, String)

    public var description: String {
        switch self {
        case .notJSON(let why): return "histogram JSON could not be parsed: \(why)"
        case .missingTensors: return "histogram JSON has no \"tensors\" object"
        case let .badTensor(name, why): return "histogram JSON, tensor '\(name)': \(why)"
        }
    }
}

public enum ExternalHistograms {
    private struct Document: Decodable {
        struct Entry: Decodable {
            var bin_width: Double
            var counts: [Double]
        }
        var tensors: [String: Entry]
    }

    public static func parse(_ bytes: [UInt8]) throws(ExternalHistogramError) -> [ExternalHistogram] {
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: Data(bytes))
        } catch let error as Swift.DecodingError {
            switch error {
            case .keyNotFound(let key, let context) where context.codingPath.isEmpty && key.stringValue == "tensors":
                throw .missingTensors
            case .keyNotFound(let key, let context):
                throw .notJSON("missing \"\(key.stringValue)\" at \(path(context.codingPath))")
            case .typeMismatch(_, let context), .valueNotFound(_, let context):
                throw .notJSON("wrong type at \(path(context.codingPath)): \(context.debugDescription)")
            case .dataCorrupted(let context):
                throw .notJSON("\(context.debugDescription) \(path(context.codingPath))")
            @unknown default:
                throw .notJSON("\(error)")
            }
        } catch {
            throw .notJSON("\(error)")
        }
        var result: [ExternalHistogram] = []
        for name in document.tensors.keys.sorted() {
            let entry = document.tensors[name]!
            guard entry.bin_width > 0, entry.bin_width.isFinite else {
                throw .badTensor(name, "\"bin_width\" must be a positive number, got \(entry.bin_width)")
            }
            guard !entry.counts.isEmpty else { throw .badTensor(name, "\"counts\" is empty") }
            var counts: [UInt64] = []
            counts.reserveCapacity(entry.counts.count)
            for (i, d) in entry.counts.enumerated() {
                guard d >= 0, d.rounded() == d, d < 1.8e19 else {
                    throw .badTensor(name, "counts[\(i)] = \(d) is not a non-negative integer")
                }
                counts.append(UInt64(d))
            }
            result.append(ExternalHistogram(name: name, binWidth: entry.bin_width, counts: counts))
        }
        return result
    }

    private static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
    }
}
