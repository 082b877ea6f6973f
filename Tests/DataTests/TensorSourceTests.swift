import Foundation
import Testing
@testable import Data

@Suite struct IDXTests {
    static let scale = Preprocessing(scale: 1 / 255)

    @Test(arguments: ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
    func readsPlainAndGzip(_ name: String) throws {
        let labelsName = name.hasSuffix(".gz") ? "labels-idx1-ubyte.gz" : "labels-idx1-ubyte"
        let ds = try IDXDataset(path: Fixtures.path("idx/" + name), labelsPath: Fixtures.path("idx/" + labelsName),
                                preprocessing: Self.scale)
        let ref = try ReferenceArray(path: Fixtures.path("idx/images_ref.npy")) // numpy: uint8 * float32(1/255), [7,1,5,4]
        #expect(ds.sampleCount == 7)
        #expect(ds.sampleShape == [1, 5, 4])
        let (values, report) = try ds.loadSamples(0 ..< 7)
        #expect(report.loadedIndices == Array(0 ..< 7))
        #expect(maxAbsDiff(values, ref.values) <= 1e-7)
        #expect(try (0 ..< 7).map { try ds.label(at: $0) } == [3, 1, 4, 1, 5, 9, 2])
    }

    @Test func limitAndNHWC() throws {
        var p = Self.scale
        p.layout = .nhwc
        let ds = try IDXDataset(path: Fixtures.path("idx/images-idx3-ubyte.gz"), preprocessing: p, limit: 3)
        #expect(ds.sampleCount == 3)
        #expect(ds.sampleShape == [5, 4, 1])
        #expect(dataError { _ = try ds.loadSamples(2 ..< 4) } == .indexOutOfRange(index: 3, sampleCount: 3))
        #expect(throws: DataError.self) { try IDXDataset(path: Fixtures.path("idx/images-idx3-ubyte"), limit: 8) }
    }

    @Test(arguments: ["truncated-idx3-ubyte", "truncated-idx3-ubyte.gz"])
    func truncatedFiles(_ name: String) throws {
        let path = Fixtures.path("idx/" + name)
        let failFast = try IDXDataset(path: path, preprocessing: Self.scale)
        #expect(failFast.sampleCount == 7) // from the header
        let error = dataError { _ = try failFast.loadSamples(0 ..< 7) }
        guard case let .corruptSample(p, index, reason)? = error else {
            Issue.record("expected corruptSample, got \(String(describing: error))")
            return
        }
        #expect(p == path && reason.contains("truncated"))
        let skipping = try IDXDataset(path: path, preprocessing: Self.scale, policy: .skipAndCount)
        let (_, report) = try skipping.loadSamples(0 ..< 7)
        #expect(report.skipped.first?.index == index)
        #expect(report.loadedIndices == Array(0 ..< index))
        #expect(report.loadedCount + report.skipped.count == 7)
        if !name.hasSuffix(".gz") { #expect(index == 4) } // 4 whole images + 7 bytes were kept
    }

    @Test func badHeaders() {
        let magic = dataError { _ = try IDXDataset(path: Fixtures.path("idx/bad-magic-idx3-ubyte")) }
        #expect(magic.map { "\($0)".contains("bad-magic-idx3-ubyte") && "\($0)".contains("magic") } == true)
        let type = dataError { _ = try IDXDataset(path: Fixtures.path("idx/int-type-idx3-ubyte")) }
        #expect(type.map { "\($0)".contains("0x0c") } == true)
        let missing = dataError { _ = try IDXDataset(path: Fixtures.path("idx/nope-idx3-ubyte")) }
        #expect(missing == .fileNotFound(path: Fixtures.path("idx/nope-idx3-ubyte"), index: nil))
    }

    @Test func fashionMNISTCalibrationSet() throws {
        guard let dir = Fixtures.fashionMNIST else {
            print("skipping: Debian package dataset-fashion-mnist is not installed")
            return
        }
        let ds = try IDXDataset(path: dir + "/train-images-idx3-ubyte.gz", labelsPath: dir + "/train-labels-idx1-ubyte.gz",
                                preprocessing: Self.scale, limit: 1000)
        #expect(ds.sampleCount == 1000 && ds.sampleShape == [1, 28, 28])
        // Label counts of the first 1000 training images, as documented in shared/bench/fashion-mnist/README.md.
        var counts = [Int](repeating: 0, count: 10)
        for i in 0 ..< 1000 { counts[try ds.label(at: i)] += 1 }
        #expect(counts == [107, 104, 86, 92, 95, 100, 100, 115, 102, 99])
        let (x, _) = try ds.loadSamples(0 ..< 1000)
        #expect(x.allSatisfy { $0 >= 0 && $0 <= 1 })
    }
}

@Suite struct NpyTests {
    @Test(arguments: ["float32.npy", "v2.npy"])
    func float32RoundTrip(_ name: String) throws {
        let ds = try NpyDataset(path: Fixtures.path("npy/" + name))
        let ref = try ReferenceArray(path: Fixtures.path("npy/float32.npy"))
        #expect(ds.sampleCount == 5 && ds.sampleShape == [2, 3, 3])
        let (values, _) = try ds.loadSamples(0 ..< 5)
        #expect(values == ref.values) // no preprocessing: bit-exact
        let (tail, _) = try ds.loadSamples(3 ..< 5)
        #expect(tail == Array(ref.values[(3 * 18)...]))
    }

    @Test func uint8WithNormalisation() throws {
        let p = Preprocessing(scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
        let ds = try NpyDataset(path: Fixtures.path("npy/uint8.npy"), preprocessing: p)
        let ref = try ReferenceArray(path: Fixtures.path("npy/uint8_ref.npy"))
        #expect(ds.sampleShape == [3, 2, 2])
        let (values, _) = try ds.loadSamples(0 ..< 4)
        #expect(maxAbsDiff(values, ref.values) <= 1e-5)
    }

    @Test func corruptSamples() throws {
        let truncated = try NpyDataset(path: Fixtures.path("npy/truncated.npy"))
        #expect(dataError { _ = try truncated.loadSamples(0 ..< 5) }.map { if case .corruptSample(_, 4, _) = $0 { true } else { false } } == true)
        let skip = try NpyDataset(path: Fixtures.path("npy/truncated.npy"), policy: .skipAndCount)
        #expect(try skip.loadSamples(0 ..< 5).1.loadedIndices == [0, 1, 2, 3])

        let nan = try NpyDataset(path: Fixtures.path("npy/nan.npy"))
        let e = dataError { _ = try nan.loadSamples(0 ..< 5) }
        guard case let .corruptSample(path, index, reason)? = e else {
            Issue.record("expected corruptSample, got \(String(describing: e))")
            return
        }
        #expect(path.hasSuffix("nan.npy") && index == 2 && reason.contains("non-finite"))
    }

    @Test func unsupportedArrays() {
        #expect(dataError { _ = try NpyDataset(path: Fixtures.path("npy/fortran.npy")) }.map { "\($0)".contains("Fortran") } == true)
        #expect(dataError { _ = try NpyDataset(path: Fixtures.path("npy/float64.npy")) }.map { "\($0)".contains("<f8") } == true)
        #expect(dataError { _ = try NpyDataset(path: Fixtures.path("images/a_420.jpg")) }.map { "\($0)".contains("NUMPY") } == true)
    }

    /// A 3 GB sparse .npy opens and serves its last sample without the process growing by the file size.
    @Test func largeArrayIsMemoryMapped() throws {
        let path = NSTemporaryDirectory() + "shardcal-mmap-\(getpid()).npy"
        defer { unlink(path) }
        let samples = 1000, perSample = 3 * 512 * 512 // 3 MiB of float32 each -> ~3 GiB
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(samples), 3, 512, 512), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        bytes += Array(header.utf8)
        let fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0o644)
        #expect(fd >= 0)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        // Last sample's first float = 1.5, the rest stays a hole (zeros).
        let last = off_t(bytes.count + (samples - 1) * perSample * 4)
        var one: Float = 1.5
        _ = pwrite(fd, &one, 4, last)
        #expect(ftruncate(fd, off_t(bytes.count + samples * perSample * 4)) == 0)
        close(fd)

        let before = residentBytes()
        let ds = try NpyDataset(path: path)
        #expect(ds.sampleCount == samples && ds.sampleShape == [3, 512, 512])
        let (x, _) = try ds.loadSamples(samples - 1 ..< samples)
        #expect(x[0] == 1.5 && x[1] == 0)
        let grown = residentBytes() - before
        #expect(grown < 256 << 20, "resident set grew by \(grown >> 20) MiB")
    }

    func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
