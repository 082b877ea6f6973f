import Foundation
import Synchronization
import Testing
@testable import Data

@Suite struct FactoryTests {
    func job(_ dataset: String) throws -> JobConfig {
        try JobConfig.parse(yaml: "model: {path: digest-input.txt}\ndataset:\n" + dataset, baseDirectory: Fixtures.directory)
    }

    @Test func imageListWithSkipAndCount() throws {
        let c = try job("""
          kind: image-list
          path: mixed-list.txt
          on_corrupt: skip-and-count
          preprocessing: {resize: {width: 8, height: 8}, scale: 1/255}
        """)
        let ds = try DatasetFactory.make(job: c)
        #expect(ds.sampleCount == 4 && ds.sampleShape == [3, 8, 8])
        let (x, report) = try ds.loadSamples(0 ..< 4)
        #expect(report.loadedIndices == [0, 1, 3])
        #expect(report.skipped.map(\.index) == [2])
        #expect(x.count == 3 * 192 && x.allSatisfy { $0 >= 0 && $0 <= 1 })
    }

    @Test func imageFolderWithLimitAndExtensions() throws {
        let c = try job("""
          kind: image-folder
          path: images
          extensions: [png]
          limit: 3
          preprocessing: {color: gray, center_crop: 5}
        """)
        let ds = try DatasetFactory.make(job: c) as! ImageDataset
        #expect(ds.paths.map { ($0 as NSString).lastPathComponent } == ["d_rgb.png", "e_rgba.png", "f_palette.png"])
        #expect(ds.sampleShape == [1, 5, 5])
        #expect(try ds.loadSamples(0 ..< 3).1.loadedCount == 3)
    }

    @Test func npyAndIdxKinds() throws {
        let npy = try DatasetFactory.make(job: try job("  kind: npy\n  path: npy/uint8.npy\n  limit: 2\n"))
        #expect(npy.sampleCount == 2 && npy.sampleShape == [3, 2, 2])
        let idx = try DatasetFactory.make(job: try job("  kind: idx\n  path: idx/images-idx3-ubyte.gz\n  labels: idx/labels-idx1-ubyte.gz\n"))
        #expect(idx.sampleCount == 7)
        #expect(try (idx as! IDXDataset).label(at: 5) == 9)
        #expect(throws: DataError.self) { try DatasetFactory.make(job: try job("  kind: npy\n  path: npy/uint8.npy\n  limit: 9\n")) }
    }

    @Test func concurrentCallsAgree() throws {
        let ds = try ImageDataset(paths: ImageDataset.listFolder(Fixtures.path("images")),
                                  preprocessing: Preprocessing(resize: .shorterSide(12), centerCrop: .init(width: 10, height: 10), scale: 1 / 255))
        let (serial, _) = try ds.loadSamples(0 ..< ds.sampleCount)
        let per = ds.sampleElementCount
        let results = Mutex<[Int: [Float]]>([:])
        DispatchQueue.concurrentPerform(iterations: ds.sampleCount) { i in
            let x = try? ds.loadSamples(i ..< i + 1).0
            results.withLock { $0[i] = x }
        }
        let collected = results.withLock { $0 }
        let parallel = (0 ..< ds.sampleCount).flatMap { collected[$0] ?? [] }
        #expect(parallel.count == serial.count && parallel == serial)
        #expect(serial.count == ds.sampleCount * per)
    }
}
