import Foundation
import Testing
@testable import Data

/// One preprocessing case from `preprocessing-cases.json` (written by scripts/make-data-fixtures).
struct PreprocessingCase: CustomTestStringConvertible, Sendable {
    var index: Int
    var image: String
    var reference: String
    var pillowReference: String?
    var spec: Preprocessing
    var testDescription: String { "case \(index): \(image) \(spec.color) \(spec.layout)" }

    static func load() -> [PreprocessingCase] {
        guard let data = FileManager.default.contents(atPath: Fixtures.path("preprocessing-cases.json")),
              let list = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else { return [] }
        return list.enumerated().map { i, e in
            var p = Preprocessing()
            p.color = Preprocessing.ColorOrder(rawValue: e["color"] as! String)!
            if let r = e["resize"] as? [String: Int] {
                p.resize = r["shorter_side"].map { .shorterSide($0) } ?? .exact(width: r["width"]!, height: r["height"]!)
            }
            if let c = e["center_crop"] as? [String: Int] { p.centerCrop = .init(width: c["width"]!, height: c["height"]!) }
            p.scale = Float(e["scale"] as! Double)
            p.mean = (e["mean"] as! [Double]).map(Float.init)
            p.std = (e["std"] as! [Double]).map(Float.init)
            p.layout = Preprocessing.Layout(rawValue: e["layout"] as! String)!
            return PreprocessingCase(index: i, image: e["image"] as! String, reference: e["reference"] as! String,
                                     pillowReference: e["pillow_reference"] as? String, spec: p)
        }
    }
}

@Suite struct PreprocessingReferenceTests {
    @Test func manifestIsPresent() {
        #expect(PreprocessingCase.load().count >= 15, "run scripts/make-data-fixtures")
    }

    /// Swift decode + preprocessing vs Pillow + numpy (independent implementation of the documented steps).
    @Test(arguments: PreprocessingCase.load())
    func matchesPillowNumpyReference(_ c: PreprocessingCase) throws {
        let ref = try ReferenceArray(path: Fixtures.path(c.reference))
        let ds = try ImageDataset(paths: [Fixtures.path("images/" + c.image)], preprocessing: c.spec)
        #expect(ds.sampleShape == ref.shape)
        let (values, report) = try ds.loadSamples(0 ..< 1)
        #expect(report.loadedIndices == [0])
        #expect(values.count == ref.values.count)
        guard values.count == ref.values.count else { return }
        #expect(maxAbsDiff(values, ref.values) <= 1e-3)
        // Informative bound against Pillow's own Image.resize (which may run the two passes in the other
        // order when both axes change): at most one 8-bit level apart.
        if let pillow = c.pillowReference {
            let pil = try ReferenceArray(path: Fixtures.path(pillow))
            let level = c.spec.scale / c.spec.std.min()! + 1e-4
            #expect(maxAbsDiff(values, pil.values) <= level)
        }
    }

    @Test func centerOffsetRoundsHalfToEven() {
        // Python round((in - out) / 2): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4.
        #expect([0, 1, 2, 3, 4, 5, 6, 7].map(centerOffset) == [0, 0, 1, 2, 2, 2, 3, 4])
    }

    @Test func shorterSideSizing() {
        let p = Preprocessing(resize: .shorterSide(256))
        // torchvision: long side = int(256 * long / short)
        #expect(p.outputSize(inputWidth: 500, inputHeight: 375) == .init(width: 341, height: 256))
        #expect(p.outputSize(inputWidth: 300, inputHeight: 1000) == .init(width: 256, height: 853))
    }

    @Test func grayFromRGBUsesPillowLuma() throws {
        // Hand-computed: (19595*200 + 38470*100 + 7471*50 + 32768) >> 16 = 124 (Pillow's convert("L")).
        var pipeline = ImagePipeline(spec: Preprocessing(color: .gray))
        let rgb: [UInt8] = [200, 100, 50, 255, 255, 255]
        var out = [Float](repeating: -1, count: 2)
        try rgb.withUnsafeBufferPointer { px in
            try out.withUnsafeMutableBufferPointer { o in
                try pipeline.run(rgb: px, width: 2, height: 1, expected: .init(width: 2, height: 1), into: o)
            }
        }
        #expect(out == [124, 255])
    }

    @Test func bilinearUpscaleHandComputed() throws {
        // 2 -> 4 pixels, one row: centres at 0.25, 0.75, 1.25, 1.75 in source pixels; weights
        // (1, 0), (0.75, 0.25), (0.25, 0.75), (0, 1) after clamping to the edges.
        var pipeline = ImagePipeline(spec: Preprocessing(color: .gray, resize: .exact(width: 4, height: 1)))
        let rgb: [UInt8] = [0, 0, 0, 200, 200, 200]
        var out = [Float](repeating: -1, count: 4)
        try rgb.withUnsafeBufferPointer { px in
            try out.withUnsafeMutableBufferPointer { o in
                try pipeline.run(rgb: px, width: 2, height: 1, expected: .init(width: 4, height: 1), into: o)
            }
        }
        #expect(out == [0, 50, 150, 200])
    }
}

@Suite struct BenchImageTests {
    /// The benchmark's fixed spec on its own JPEGs: the decode must equal Pillow's exactly, so the
    /// normalised values agree within 1e-3 (one 8-bit level is 0.017 after ImageNet std).
    @Test(arguments: ["0000", "0001"])
    func benchJPEGMatchesPillow(_ name: String) throws {
        guard let shared = Fixtures.shared else {
            print("skipping: ../shared (benchmark images) not present")
            return
        }
        let path = shared + "/bench/effnet-lite0/calib/\(name).jpg"
        let ref = try ReferenceArray(path: Fixtures.path("refs/bench\(name)_uint8.npy")) // [224, 224, 3] uint8 from Pillow
        let image = try ImageDecoder.decodeRGB(path: path)
        #expect(image.width == 224 && image.height == 224)
        #expect(maxAbsDiff(image.pixels.map(Float.init), ref.values) == 0)

        let spec = Preprocessing(scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
        let ds = try ImageDataset(paths: [path], preprocessing: spec)
        #expect(ds.sampleShape == [3, 224, 224])
        let (x, _) = try ds.loadSamples(0 ..< 1)
        // Expected from the README formula, applied to Pillow's pixels: (u/255 - mean) / std, HWC -> CHW.
        let mean: [Float] = [0.485, 0.456, 0.406], std: [Float] = [0.229, 0.224, 0.225]
        var expected = [Float](repeating: 0, count: 3 * 224 * 224)
        for y in 0 ..< 224 { for xx in 0 ..< 224 { for c in 0 ..< 3 {
            expected[c * 224 * 224 + y * 224 + xx] = (ref.values[(y * 224 + xx) * 3 + c] / 255 - mean[c]) / std[c]
        } } }
        #expect(maxAbsDiff(x, expected) <= 1e-5)
    }
}

@Suite struct CorruptImageTests {
    static let corrupt = ["truncated.jpg", "truncated.png", "not-an-image.jpg", "empty.png", "bad-crc.png"]

    @Test(arguments: corrupt)
    func failFastNamesFileAndIndex(_ name: String) throws {
        let good = Fixtures.path("images/a_420.jpg")
        let bad = Fixtures.path("corrupt/" + name)
        let ds = try ImageDataset(paths: [good, bad, good], preprocessing: Preprocessing(), policy: .failFast)
        let error = dataError { _ = try ds.loadSamples(0 ..< 3) }
        guard case let .corruptSample(path, index, reason)? = error else {
            Issue.record("expected corruptSample, got \(String(describing: error))")
            return
        }
        #expect(path == bad)
        #expect(index == 1)
        #expect(!reason.isEmpty)
        #expect("\(error!)".contains(name) && "\(error!)".contains("sample 1"))
    }

    @Test(arguments: corrupt)
    func skipAndCountPacksGoodSamples(_ name: String) throws {
        let good = Fixtures.path("images/a_420.jpg")
        let other = Fixtures.path("images/b_444.jpg")
        let spec = Preprocessing(resize: .exact(width: 8, height: 6))
        let ds = try ImageDataset(paths: [good, Fixtures.path("corrupt/" + name), other], preprocessing: spec, policy: .skipAndCount)
        let (values, report) = try ds.loadSamples(0 ..< 3)
        #expect(report.loadedIndices == [0, 2])
        #expect(report.skipped.map(\.index) == [1])
        #expect(report.skipped.first?.path.hasSuffix(name) == true)
        // Packed: slot 1 holds sample 2.
        let (alone, _) = try ds.loadSamples(2 ..< 3)
        #expect(Array(values[ds.sampleElementCount...]) == alone)
    }

    @Test func missingFileInList() throws {
        let paths = try ImageDataset.readList(Fixtures.path("mixed-list.txt"))
        #expect(paths.map { ($0 as NSString).lastPathComponent } == ["img0.jpg", "img1.jpg", "missing.jpg", "img3.jpg"])
        let ds = try ImageDataset(paths: paths, preprocessing: Preprocessing())
        let error = dataError { _ = try ds.loadSamples(0 ..< 4) }
        guard case let .fileNotFound(path, index)? = error else {
            Issue.record("expected fileNotFound, got \(String(describing: error))")
            return
        }
        #expect(path.hasSuffix("mixed/missing.jpg") && index == 2)

        let skipping = try ImageDataset(paths: paths, preprocessing: Preprocessing(), policy: .skipAndCount)
        let (_, report) = try skipping.loadSamples(0 ..< 4)
        #expect(report.loadedIndices == [0, 1, 3])
        #expect(report.skipped.map(\.index) == [2])
    }

    @Test func wrongShape() throws {
        // No resize/crop: the first image fixes the sample size (45x31); a 46x31 image is the wrong shape.
        let ds = try ImageDataset(paths: [Fixtures.path("images/a_420.jpg"), Fixtures.path("corrupt/wrong-size.jpg")],
                                  preprocessing: Preprocessing())
        #expect(ds.sampleShape == [3, 31, 45])
        let error = dataError { _ = try ds.loadSamples(0 ..< 2) }
        guard case let .wrongShape(path, index, expected, actual)? = error else {
            Issue.record("expected wrongShape, got \(String(describing: error))")
            return
        }
        #expect(path.hasSuffix("wrong-size.jpg") && index == 1)
        #expect(expected == [3, 31, 45] && actual == [3, 31, 46])
    }

    @Test func folderIsSortedAndMixedFolderSkips() throws {
        let paths = try ImageDataset.listFolder(Fixtures.path("mixed"))
        #expect(paths.map { ($0 as NSString).lastPathComponent } == (0 ..< 6).map { "img\($0).jpg" })
        let failFast = try ImageDataset(paths: paths, preprocessing: Preprocessing())
        #expect(dataError { _ = try failFast.loadSamples(0 ..< 6) }.map { if case .corruptSample(_, 4, _) = $0 { true } else { false } } == true)
        let ds = try ImageDataset(paths: paths, preprocessing: Preprocessing(), policy: .skipAndCount)
        let (_, report) = try ds.loadSamples(0 ..< 6)
        #expect(report.loadedIndices == [0, 1, 2, 3])
        #expect(report.skipped.map(\.index) == [4, 5])
    }

    @Test func deterministicAcrossBatching() throws {
        let paths = try ImageDataset.listFolder(Fixtures.path("mixed")).prefix(4)
        let ds = try ImageDataset(paths: Array(paths), preprocessing: Preprocessing(resize: .shorterSide(10), centerCrop: .init(width: 9, height: 9)))
        let (all, _) = try ds.loadSamples(0 ..< 4)
        var pieces: [Float] = []
        for i in 0 ..< 4 { pieces += try ds.loadSamples(i ..< i + 1).0 }
        #expect(all == pieces)
    }

    @Test func unreadableFirstImageWithoutFixedSize() throws {
        let paths = [Fixtures.path("corrupt/truncated.jpg"), Fixtures.path("images/a_420.jpg")]
        let error = dataError { _ = try ImageDataset(paths: paths, preprocessing: Preprocessing()) }
        #expect(error.map { if case .corruptSample(_, 0, _) = $0 { true } else { false } } == true)
        let ds = try ImageDataset(paths: paths, preprocessing: Preprocessing(), policy: .skipAndCount)
        #expect(ds.sampleShape == [3, 31, 45])
        let (_, report) = try ds.loadSamples(0 ..< 2)
        #expect(report.loadedIndices == [1] && report.skipped.map(\.index) == [0])
    }

    @Test func bufferAndRangeChecks() throws {
        let ds = try ImageDataset(paths: [Fixtures.path("images/a_420.jpg")], preprocessing: Preprocessing())
        var small = [Float](repeating: 0, count: 10)
        #expect(dataError { _ = try small.withUnsafeMutableBufferPointer { try ds.loadSamples(0 ..< 1, into: $0) } } == .bufferTooSmall(needed: 3 * 31 * 45, available: 10))
        #expect(dataError { _ = try ds.loadSamples(0 ..< 2) } == .indexOutOfRange(index: 1, sampleCount: 1))
    }
}
