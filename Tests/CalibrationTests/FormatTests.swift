import Crypto
import Foundation
import Testing
@testable import Calibration
@testable import CalibrationIO

func sampleState(shards: [Int], seed: UInt64 = 1) -> CalibrationState {
    var state = CalibrationState(toolVersion: "0.1.0", modelDigest: "m" + String(repeating: "a", count: 63),
                                 configDigest: "c" + String(repeating: "b", count: 63), info: ["samples": "1000"])
    for shard in shards {
        var rng = SeededGenerator(seed: seed &+ UInt64(shard))
        let tensors = ["input", "conv1/out", "relu:0", "logits"].map { name -> NamedHistogram in
            var h = Histogram()
            h.accumulate(randomValues(3000, rng: &rng))
            return NamedHistogram(name: name, histogram: h)
        }
        try! state.merge(shard: shard, tensors: tensors)
    }
    return state
}

@Suite struct TensorRTCacheTests {
    @Test func writesTheDocumentedFormat() {
        let cache = TensorRTCache(entries: [.init(name: "input", scale: 1.0 / 127), .init(name: "conv/out:0", scale: 0.5)])
        #expect(cache.text() == "TRT-8601-EntropyCalibration2\ninput: 3c010204\nconv/out:0: 3f000000\n")
    }

    @Test func roundTripsExactlyKeepingOrder() throws {
        var rng = SeededGenerator(seed: 8)
        let entries = (0..<200).map { i in
            TensorRTCache.Entry(name: "t\(199 - i): odd name", scale: Float(bitPattern: UInt32.random(in: 0...0x7F7F_FFFF, using: &rng)))
        }
        let cache = TensorRTCache(version: "10010", algorithm: "MinMaxCalibration", entries: entries)
        let parsed = try TensorRTCache.parse(cache.text())
        #expect(parsed == cache)
        #expect(parsed.text() == cache.text())
    }

    @Test func reportsAMismatchedHeader() {
        let text = "TRT-8510-EntropyCalibration2\nx: 3c010204\n"
        #expect(throws: CacheFormatError.headerMismatch(expected: "TRT-8601-EntropyCalibration2", found: "TRT-8510-EntropyCalibration2")) {
            try TensorRTCache.parse(text, expectingVersion: "8601", algorithm: "EntropyCalibration2")
        }
    }

    @Test func rejectsMalformedLines() {
        #expect(throws: CacheFormatError.badHeader("hello")) { try TensorRTCache.parse("hello\n") }
        #expect(throws: CacheFormatError.badLine(2, "x: 3C010204")) { try TensorRTCache.parse("TRT-8601-EntropyCalibration2\nx: 3C010204\n") }
        #expect(throws: CacheFormatError.badLine(2, "x 3c010204")) { try TensorRTCache.parse("TRT-8601-EntropyCalibration2\nx 3c010204\n") }
        #expect(throws: CacheFormatError.duplicateTensor(3, "x")) { try TensorRTCache.parse("TRT-8601-EntropyCalibration2\nx: 3c010204\nx: 3c010204\n") }
        #expect(throws: CacheFormatError.empty) { try TensorRTCache.parse("") }
    }
}

@Suite struct StateFormatTests {
    @Test func roundTripsExactly() throws {
        let state = sampleState(shards: [0, 1, 2, 5, 7, 8])
        let decoded = try CalibrationState(decoding: state.encoded())
        #expect(decoded == state)
        #expect(decoded.tensorNames == ["input", "conv1/out", "relu:0", "logits"])
        #expect(decoded.shards == [0, 1, 2, 5, 7, 8])
        #expect(CalibrationState.runs(of: decoded.shards) == [0...2, 5...5, 7...8])
    }

    @Test func stateIsIndependentOfShardOrder() throws {
        let a = sampleState(shards: [0, 1, 2, 3])
        var b = sampleState(shards: [3])
        try b.merge(sampleState(shards: [1, 0]))
        try b.merge(sampleState(shards: [2]))
        #expect(a.encoded() == b.encoded())
    }

    @Test func rejectsEveryKindOfDamage() throws {
        let bytes = sampleState(shards: [0, 1]).encoded()
        // Truncation anywhere.
        for cut in [0, 4, 17, 40, bytes.count / 2, bytes.count - 1] {
            #expect(throws: StateFormatError.self) { try CalibrationState(decoding: Array(bytes.prefix(cut))) }
        }
        #expect(throws: StateFormatError.truncated(expected: bytes.count, actual: bytes.count - 10)) {
            try CalibrationState(decoding: Array(bytes.prefix(bytes.count - 10)))
        }
        // A flipped bit in the body or in the checksum.
        for position in [30, bytes.count / 2, bytes.count - 40, bytes.count - 1] {
            var damaged = bytes
            damaged[position] ^= 0x10
            #expect {
                try CalibrationState(decoding: damaged)
            } throws: { error in
                guard case .checksumMismatch = error as? StateFormatError else { return false }
                return true
            }
        }
        // Wrong magic and an unknown version.
        var notState = bytes; notState[0] = UInt8(ascii: "X")
        #expect(throws: StateFormatError.notAStateFile) { try CalibrationState(decoding: notState) }
        #expect(throws: StateFormatError.notAStateFile) { try CalibrationState(decoding: Array("{\"tensors\": 1}".utf8) + [UInt8](repeating: 0, count: 60)) }
        var future = bytes; future[8] = 2
        #expect(throws: StateFormatError.unsupportedVersion(found: 2, supported: 1)) { try CalibrationState(decoding: future) }
        // Extra bytes appended.
        #expect(throws: StateFormatError.self) { try CalibrationState(decoding: bytes + [1, 2, 3]) }
    }

    @Test func rejectsAValidlyChecksummedButInconsistentHistogram() throws {
        var bytes = sampleState(shards: [0]).encoded()
        bytes.removeLast(32)
        // Corrupt the last histogram's last count, then re-checksum: the checksum passes, the
        // histogram's own invariants (bins sum to the value count) must catch it.
        bytes[bytes.count - 1] &+= 1
        bytes.append(contentsOf: SHA256.hash(data: bytes))
        #expect {
            try CalibrationState(decoding: bytes)
        } throws: { error in
            guard case .damaged(let why) = error as? StateFormatError else { return false }
            return why.contains("logits")
        }
    }

    @Test func mergeRefusesOverlapsAndForeignModels() throws {
        var a = sampleState(shards: [0, 1, 2])
        let before = a
        #expect(throws: StateError.shardAlreadyMerged([1, 2])) { try a.merge(sampleState(shards: [1, 2, 3])) }
        #expect(a == before)  // nothing changed
        var other = sampleState(shards: [9])
        other.modelDigest = "different"
        #expect(throws: StateError.modelDigestMismatch(expected: before.modelDigest, found: "different")) { try a.merge(other) }
        #expect(throws: StateError.shardAlreadyMerged([0])) {
            try a.merge(shard: 0, tensors: [])
        }
    }

    @Test func stateFileWritesAtomicallyAndReportsPaths() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("shardcal-state-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("nested/run.state").path
        let state = sampleState(shards: [4])
        try StateFile.write(state, to: path)
        #expect(try StateFile.read(path) == state)
        // Overwrite leaves no temporary files behind.
        try StateFile.write(sampleState(shards: [5]), to: path)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("nested").path)
        #expect(files == ["run.state"])
        #expect(throws: FileError.self) { try StateFile.read(dir.appendingPathComponent("missing.state").path) }
        FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3]))
        #expect {
            try StateFile.read(path)
        } throws: { error in
            "\(error)".contains(path) && "\(error)".contains("truncated")
        }
    }
}

@Suite struct TableTests {
    @Test func jsonTableHasTheDocumentedFields() throws {
        var h = Histogram()
        h.accumulate((0..<10_000).map { Float($0 % 100) / 10 } + [.nan, 250])
        let table = CalibrationTable.compute(histograms: [NamedHistogram(name: "a", histogram: h)], method: .entropy)
        let object = try JSONSerialization.jsonObject(with: Data(table.json())) as! [String: Any]
        #expect(object["format"] as? String == "shardcal-calibration-table")
        let row = (object["tensors"] as! [[String: Any]])[0]
        for key in ["name", "method", "amax", "scale", "scale_hex", "bin_width", "bin_count", "value_count", "zero_count",
                    "min", "max", "nan_count", "pos_inf_count", "neg_inf_count", "clipped_fraction", "divergence", "warnings"] {
            #expect(row[key] != nil, "missing \(key)")
        }
        #expect(row["nan_count"] as? Int == 1)
        #expect(row["value_count"] as? Int == 10_001)
        #expect(row["max"] as? Double == 250)
        #expect(table.tensorRTCache().entries[0].scale == table.tensors[0].amax / 127)
        // Hand-computed: max|x| = 250 gives bin width 1/16. The 99% point is reached in bin 158
        // (which holds the 100 values 9.9), so amax = 158/16 = 9.875 and the 100 values 9.9 plus
        // the outlier 250 are clipped.
        let p99 = CalibrationTable.calibrate(name: "a", histogram: h, method: .percentile(99))
        #expect(p99.binWidth == 1.0 / 16)
        #expect(p99.amax == 9.875)
        #expect(abs(p99.clippedFraction - 101.0 / 10_001) < 1e-12)
        #expect(CalibrationTable.calibrate(name: "a", histogram: h, method: .max).clippedFraction == 0)
    }

    @Test func parallelSearchEqualsSerial() {
        let state = sampleState(shards: Array(0..<3))
        #expect(CalibrationTable.compute(state: state, method: .entropy, parallel: true)
                == CalibrationTable.compute(state: state, method: .entropy, parallel: false))
    }

    @Test func externalJSONHistograms() throws {
        let json = #"{"tensors": {"b": {"bin_width": 0.1, "counts": [5, 0, 3.0, 1]}, "a": {"bin_width": 2, "counts": [1]}}}"#
        let parsed = try ExternalHistograms.parse(Array(json.utf8))
        #expect(parsed.map(\.name) == ["a", "b"])
        #expect(parsed[1].counts == [5, 0, 3, 1])
        #expect(parsed[1].binWidth == 0.1)
        #expect(throws: ExternalHistogramError.badTensor("x", "counts[1] = 1.5 is not a non-negative integer")) {
            try ExternalHistograms.parse(Array(#"{"tensors": {"x": {"bin_width": 1, "counts": [1, 1.5]}}}"#.utf8))
        }
        #expect(throws: ExternalHistogramError.missingTensors) { try ExternalHistograms.parse(Array(#"{"t": {}}"#.utf8)) }
        #expect(throws: ExternalHistogramError.self) { try ExternalHistograms.parse(Array("not json".utf8)) }
        let row = CalibrationTable.calibrate(name: "b", counts: parsed[1].counts, binWidth: 0.1, method: .max)
        #expect(abs(row.amax - 0.4) < 1e-6)
    }
}
