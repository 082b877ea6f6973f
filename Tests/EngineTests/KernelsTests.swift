import Testing
@testable import Engine
import CConvKernels
#if canImport(Glibc)
import Glibc
#endif

// Oracles: hand-computed cases check both the reference kernels and the optimised ones; random
// geometries then check the optimised kernels against the (hand-verified) reference kernels.

@Suite("Kernels: convolution")
struct KernelsConvTests {
    // 3×3 input 1..9, 2×2 kernel [[1,2],[3,4]], pads (top,left,bottom,right) = (0,0,1,1), bias 1.
    // y[r][c] = x[r][c] + 2x[r][c+1] + 3x[r+1][c] + 4x[r+1][c+1] + 1, out-of-range taps are 0.
    static let asymInput: [Float] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    static let asymWeight: [Float] = [1, 2, 3, 4]
    static let asymExpected: [Float] = [38, 48, 22, 68, 78, 34, 24, 27, 10]
    static let asymGeometry = Conv2DGeometry(batch: 1, inChannels: 1, inHeight: 3, inWidth: 3, outChannels: 1,
                                             kernelHeight: 2, kernelWidth: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1)

    @Test func asymmetricPadsHandComputed() {
        let g = Self.asymGeometry
        #expect(g.outHeight == 3 && g.outWidth == 3)
        #expect(referenceConv(Self.asymInput, Self.asymWeight, [1], g) == Self.asymExpected)
        #expect(kernelConv(Self.asymInput, Self.asymWeight, [1], g) == Self.asymExpected)
    }

    @Test func dilationHandComputed() {
        // 4×4 input 0..15, 2×2 ones kernel, dilation 2: each output sums x[r][c], x[r][c+2], x[r+2][c], x[r+2][c+2].
        let x = (0..<16).map(Float.init)
        let g = Conv2DGeometry(batch: 1, inChannels: 1, inHeight: 4, inWidth: 4, outChannels: 1,
                               kernelHeight: 2, kernelWidth: 2, dilationH: 2, dilationW: 2)
        let expected: [Float] = [20, 24, 36, 40]
        #expect(referenceConv(x, [1, 1, 1, 1], nil, g) == expected)
        #expect(kernelConv(x, [1, 1, 1, 1], nil, g) == expected)
    }

    @Test func strideTwoPaddedHandComputed() {
        // 4×4 input 0..15, 3×3 ones kernel, stride 2, pads 1: window sums over rows/cols clipped to the input.
        let x = (0..<16).map(Float.init)
        let g = Conv2DGeometry(batch: 1, inChannels: 1, inHeight: 4, inWidth: 4, outChannels: 1,
                               kernelHeight: 3, kernelWidth: 3, strideH: 2, strideW: 2,
                               padTop: 1, padLeft: 1, padBottom: 1, padRight: 1)
        let expected: [Float] = [10, 24, 51, 90]
        #expect(referenceConv(x, [Float](repeating: 1, count: 9), nil, g) == expected)
        #expect(kernelConv(x, [Float](repeating: 1, count: 9), nil, g) == expected)
        // Same geometry as a depthwise conv over two channels (second channel scaled by -2, bias 0.5/-1).
        let x2 = x + x.map { -$0 }
        let w2 = [Float](repeating: 1, count: 9) + [Float](repeating: 2, count: 9)
        var gd = g; gd.inChannels = 2; gd.outChannels = 2; gd.group = 2
        let expected2: [Float] = [10.5, 24.5, 51.5, 90.5, -21, -49, -103, -181]
        #expect(referenceConv(x2, w2, [0.5, -1], gd) == expected2)
        #expect(kernelConv(x2, w2, [0.5, -1], gd) == expected2)
    }

    @Test func groupedPointwiseHandComputed() {
        // 4 input channels, 2 groups, 1×1: out0 = 1·c0 + 2·c1, out1 = 3·c2 + 4·c3 (one pixel, batch 2).
        let x: [Float] = [1, 10, 100, 1000, 2, 20, 200, 2000]
        let g = Conv2DGeometry(batch: 2, inChannels: 4, inHeight: 1, inWidth: 1, outChannels: 2,
                               kernelHeight: 1, kernelWidth: 1, group: 2)
        let expected: [Float] = [21, 4300, 42, 8600]
        #expect(referenceConv(x, [1, 2, 3, 4], nil, g) == expected)
        #expect(kernelConv(x, [1, 2, 3, 4], nil, g) == expected)
        #expect(kernelConv(x, [1, 2, 3, 4], nil, g, threads: 2) == expected)
    }

    static func randomGeometry(_ rng: inout KernelTestRNG, depthwise: Bool) -> Conv2DGeometry {
        let group = depthwise ? rng.int(1...9) : [1, 1, 1, 2, 3][rng.int(0...4)]
        let icg = depthwise ? 1 : rng.int(1...5), ocg = depthwise ? 1 : rng.int(1...5)
        let kh = rng.int(1...5), kw = rng.int(1...5)
        return Conv2DGeometry(batch: rng.int(1...3), inChannels: icg * group, inHeight: rng.int(kh...13),
                              inWidth: rng.int(kw...14), outChannels: ocg * group, kernelHeight: kh, kernelWidth: kw,
                              strideH: rng.int(1...3), strideW: rng.int(1...3),
                              dilationH: rng.int(1...2), dilationW: rng.int(1...2),
                              padTop: rng.int(0...2), padLeft: rng.int(0...2), padBottom: rng.int(0...2), padRight: rng.int(0...2),
                              group: group)
    }

    @Test(arguments: [false, true]) func randomGeometriesMatchReference(depthwise: Bool) {
        var rng = KernelTestRNG(seed: depthwise ? 7 : 3)
        var checked = 0
        let scratch = KernelScratch()
        while checked < 150 {
            let g = Self.randomGeometry(&rng, depthwise: depthwise)
            if g.outHeight <= 0 || g.outWidth <= 0 { continue }
            let x = rng.floats(g.batch * g.inChannels * g.inHeight * g.inWidth)
            let w = rng.floats(g.outChannels * (g.inChannels / g.group) * g.kernelHeight * g.kernelWidth)
            let b: [Float]? = rng.int(0...1) == 0 ? nil : rng.floats(g.outChannels)
            let ref = referenceConv(x, w, b, g)
            let one = kernelConv(x, w, b, g, threads: 1, scratch: scratch)
            let two = kernelConv(x, w, b, g, threads: 2, scratch: scratch)
            let k = Float(g.inChannels / g.group * g.kernelHeight * g.kernelWidth)
            #expect(kernelMaxAbsDiff(one, ref) <= 2e-6 * k + 1e-6, "\(g)")
            if depthwise && g.inChannels > 1 {
                // Every vector ISA this CPU has: the portable one sums in the reference's order
                // (bit-identical), the C ones use FMA (within rounding).
                for isa in Kernels.VectorISA.allCases where isa.isSupported {
                    for t in [1, 2] {
                        let y = depthwiseConv(x, w, b, g, isa: isa, threads: t, scratch: scratch)
                        if isa == .portable {
                            #expect(y == ref, "\(g) \(isa)")
                        } else {
                            #expect(kernelMaxAbsDiff(y, ref) <= 2e-6 * k + 1e-6, "\(g) \(isa)")
                        }
                    }
                }
            }
            #expect(one == two, "threads 1 vs 2 differ: \(g)")
            checked += 1
        }
    }

    @Test func pointwiseAndLargeShapesMatchReference() {
        var rng = KernelTestRNG(seed: 11)
        // EfficientNet-like shapes: 1×1 expand/project, stem 3×3 stride 2 with asymmetric pads,
        // depthwise 5×5 stride 2 with pads (1,1,2,2).
        let shapes = [
            Conv2DGeometry(batch: 2, inChannels: 24, inHeight: 14, inWidth: 14, outChannels: 40, kernelHeight: 1, kernelWidth: 1),
            Conv2DGeometry(batch: 1, inChannels: 3, inHeight: 33, inWidth: 31, outChannels: 8, kernelHeight: 3, kernelWidth: 3,
                           strideH: 2, strideW: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1),
            Conv2DGeometry(batch: 3, inChannels: 16, inHeight: 19, inWidth: 21, outChannels: 16, kernelHeight: 5, kernelWidth: 5,
                           strideH: 2, strideW: 2, padTop: 1, padLeft: 1, padBottom: 2, padRight: 2, group: 16),
            Conv2DGeometry(batch: 1, inChannels: 8, inHeight: 9, inWidth: 9, outChannels: 6, kernelHeight: 1, kernelWidth: 1,
                           strideH: 2, strideW: 2),
            // Wide depthwise planes: several 16-column blocks, partial last block, 4-row groups.
            Conv2DGeometry(batch: 2, inChannels: 5, inHeight: 37, inWidth: 45, outChannels: 5, kernelHeight: 3, kernelWidth: 3,
                           padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, group: 5),
            Conv2DGeometry(batch: 1, inChannels: 4, inHeight: 33, inWidth: 67, outChannels: 4, kernelHeight: 3, kernelWidth: 3,
                           strideH: 2, strideW: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1, group: 4),
            Conv2DGeometry(batch: 1, inChannels: 3, inHeight: 30, inWidth: 70, outChannels: 3, kernelHeight: 5, kernelWidth: 7,
                           strideH: 1, strideW: 3, dilationH: 2, dilationW: 2, padTop: 3, padLeft: 2, padBottom: 0, padRight: 5, group: 3),
        ]
        for g in shapes {
            let x = rng.floats(g.batch * g.inChannels * g.inHeight * g.inWidth)
            let w = rng.floats(g.outChannels * (g.inChannels / g.group) * g.kernelHeight * g.kernelWidth)
            let b = rng.floats(g.outChannels)
            let ref = referenceConv(x, w, b, g)
            let k = Float(g.inChannels / g.group * g.kernelHeight * g.kernelWidth)
            let one = kernelConv(x, w, b, g, threads: 1)
            #expect(kernelMaxAbsDiff(one, ref) <= 2e-6 * k + 1e-6, "\(g)")
            for t in [2, 3] { #expect(kernelConv(x, w, b, g, threads: t) == one, "\(g) threads \(t)") }
            if g.group == g.inChannels && g.inChannels == g.outChannels {
                for isa in Kernels.VectorISA.allCases where isa.isSupported {
                    let y = depthwiseConv(x, w, b, g, isa: isa, threads: 2, scratch: KernelScratch())
                    if isa == .portable { #expect(y == ref, "\(g) \(isa)") } else { #expect(kernelMaxAbsDiff(y, ref) <= 2e-6 * k + 1e-6, "\(g) \(isa)") }
                }
            }
        }
    }
}

@Suite("Kernels: transposed convolution")
struct KernelsConvTransposeTests {
    @Test func strideTwoReplicatesBlocks() {
        // 2×2 input, 2×2 ones kernel, stride 2: each input value fills its own 2×2 output block; bias 1.
        let fg = Conv2DGeometry(batch: 1, inChannels: 1, inHeight: 4, inWidth: 4, outChannels: 1,
                                kernelHeight: 2, kernelWidth: 2, strideH: 2, strideW: 2)
        let expected: [Float] = [2, 2, 3, 3, 2, 2, 3, 3, 4, 4, 5, 5, 4, 4, 5, 5]
        let x: [Float] = [1, 2, 3, 4], w: [Float] = [1, 1, 1, 1]
        #expect(kernelConvTranspose(x, w, [1], fg, reference: true) == expected)
        #expect(kernelConvTranspose(x, w, [1], fg) == expected)
    }

    @Test func overlappingTapsSum() {
        // 1×2 input [1, 2], 1×2 kernel [1, 2], stride 1: output [1·1, 1·2 + 2·1, 2·2] = [1, 4, 4].
        // Second case: pads 1 on the left crop the first output column: [4, 4].
        let fg = Conv2DGeometry(batch: 1, inChannels: 1, inHeight: 1, inWidth: 3, outChannels: 1, kernelHeight: 1, kernelWidth: 2)
        #expect(kernelConvTranspose([1, 2], [1, 2], nil, fg, reference: true) == [1, 4, 4])
        #expect(kernelConvTranspose([1, 2], [1, 2], nil, fg) == [1, 4, 4])
        let cropped = Conv2DGeometry(batch: 1, inChannels: 1, inHeight: 1, inWidth: 2, outChannels: 1, kernelHeight: 1, kernelWidth: 2,
                                     padLeft: 1)
        #expect(cropped.outWidth == 2)
        #expect(kernelConvTranspose([1, 2], [1, 2], nil, cropped, reference: true) == [4, 4])
        #expect(kernelConvTranspose([1, 2], [1, 2], nil, cropped) == [4, 4])
    }

    @Test func randomGeometriesMatchReference() {
        var rng = KernelTestRNG(seed: 5)
        var checked = 0
        while checked < 80 {
            var fg = KernelsConvTests.randomGeometry(&rng, depthwise: rng.int(0...3) == 0)
            fg.batch = rng.int(1...3)
            if fg.outHeight <= 0 || fg.outWidth <= 0 { continue }
            // Transposed conv input has fg.outChannels channels of fg.outHeight × fg.outWidth.
            let x = rng.floats(fg.batch * fg.outChannels * fg.outHeight * fg.outWidth)
            let w = rng.floats(fg.outChannels * (fg.inChannels / fg.group) * fg.kernelHeight * fg.kernelWidth)
            let b: [Float]? = rng.int(0...1) == 0 ? nil : rng.floats(fg.inChannels)
            let ref = kernelConvTranspose(x, w, b, fg, reference: true)
            let one = kernelConvTranspose(x, w, b, fg, threads: 1)
            let two = kernelConvTranspose(x, w, b, fg, threads: 2)
            let k = Float(fg.outChannels / fg.group * fg.kernelHeight * fg.kernelWidth)
            #expect(kernelMaxAbsDiff(one, ref) <= 2e-6 * k + 1e-6, "\(fg)")
            #expect(one == two, "threads 1 vs 2 differ: \(fg)")
            checked += 1
        }
    }
}

@Suite("Kernels: gemm")
struct KernelsGemmTests {
    func run(_ ta: Bool, _ tb: Bool, m: Int, n: Int, k: Int, alpha: Float, beta: Float, a: [Float], lda: Int,
             b: [Float], ldb: Int, c: [Float], ldc: Int, threads: Int, reference: Bool) -> [Float] {
        var out = c
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                out.withUnsafeMutableBufferPointer { cp in
                    if reference {
                        Kernels.Reference.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: ap.baseAddress!, lda: lda,
                                               b: bp.baseAddress!, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: ldc)
                    } else {
                        Kernels.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: ap.baseAddress!, lda: lda,
                                     b: bp.baseAddress!, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: ldc, threads: threads)
                    }
                }
            }
        }
        return out
    }

    @Test func handComputed() {
        // A = [[1,2],[3,4]], B = [[5,6],[7,8]]: AB = [[19,22],[43,50]]; 2·AB + 1·C with C = ones.
        let a: [Float] = [1, 2, 3, 4], b: [Float] = [5, 6, 7, 8], c: [Float] = [1, 1, 1, 1]
        for reference in [true, false] {
            #expect(run(false, false, m: 2, n: 2, k: 2, alpha: 2, beta: 1, a: a, lda: 2, b: b, ldb: 2, c: c, ldc: 2,
                        threads: 1, reference: reference) == [39, 45, 87, 101])
            // Aᵀ·B = [[26,30],[38,44]]; A·Bᵀ = [[17,23],[39,53]]; beta 0 ignores NaN in C.
            #expect(run(true, false, m: 2, n: 2, k: 2, alpha: 1, beta: 0, a: a, lda: 2, b: b, ldb: 2, c: [.nan, .nan, .nan, .nan], ldc: 2,
                        threads: 1, reference: reference) == [26, 30, 38, 44])
            #expect(run(false, true, m: 2, n: 2, k: 2, alpha: 1, beta: 0, a: a, lda: 2, b: b, ldb: 2, c: c, ldc: 2,
                        threads: 1, reference: reference) == [17, 23, 39, 53])
        }
    }

    func rowwise(_ ta: Bool, _ tb: Bool, m: Int, n: Int, k: Int, alpha: Float, beta: Float, a: [Float], lda: Int,
                 b: [Float], ldb: Int, c: [Float], ldc: Int, threads: Int) -> [Float] {
        var out = c
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                out.withUnsafeMutableBufferPointer { cp in
                    Kernels.gemmRowwise(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: ap.baseAddress!, lda: lda,
                                        b: bp.baseAddress!, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: ldc, threads: threads)
                }
            }
        }
        return out
    }

    /// The AVX-512 dot-row kernel behind transB row products: each row's sum against a double
    /// reference, and bit-identical whether the row runs in a group of four, in the single-row
    /// remainder, or from any start row (the grouping must not change a value).
    @Test func dotRowsKernelIsGroupingIndependent() throws {
        #if arch(x86_64)
        guard Kernels.VectorISA.best == .avx512 else {
            print("skipped: no AVX-512 on this CPU (the portable dot16 path is covered by rowwiseProductsAreRowIndependent)")
            return
        }
        var rng = KernelTestRNG(seed: 5150)
        for k in [1, 15, 16, 17, 33, 1280, 1283] {
            let n = 11
            let x = rng.floats(k), w = rng.floats(n * k)
            func sums(_ j0: Int, _ j1: Int) -> [Float] {
                var out = [Float](repeating: .nan, count: j1 - j0)
                x.withUnsafeBufferPointer { xp in
                    w.withUnsafeBufferPointer { wp in
                        out.withUnsafeMutableBufferPointer { shardcal_dot_rows_avx512(xp.baseAddress!, wp.baseAddress!, k, k, j0, j1, $0.baseAddress!) }
                    }
                }
                return out
            }
            let all = sums(0, n)
            for j in 0..<n {
                let exact = (0..<k).reduce(0.0) { $0 + Double(x[$1]) * Double(w[j * k + $1]) }
                #expect(abs(Double(all[j]) - exact) <= 1e-6 * Double(k) + 1e-6, "k \(k) row \(j)")
                #expect(sums(j, j + 1) == [all[j]], "k \(k) row \(j) alone")
            }
            #expect(sums(3, n) == Array(all[3...]), "k \(k) from row 3")
            #expect(sums(1, 9) == Array(all[1..<9]), "k \(k) rows 1..<9")
        }
        #endif
    }

    /// The row-by-row product (Gemm heads): the triple loop's values (hand case and random, all
    /// transposes, alpha/beta), and each row bit-identical whether computed alone, in any batch,
    /// or with any thread count.
    @Test func rowwiseProductsAreRowIndependent() {
        let a: [Float] = [1, 2, 3, 4], b: [Float] = [5, 6, 7, 8], c: [Float] = [1, 1, 1, 1]
        #expect(rowwise(false, false, m: 2, n: 2, k: 2, alpha: 2, beta: 1, a: a, lda: 2, b: b, ldb: 2, c: c, ldc: 2, threads: 1) == [39, 45, 87, 101])
        #expect(rowwise(true, false, m: 2, n: 2, k: 2, alpha: 1, beta: 0, a: a, lda: 2, b: b, ldb: 2, c: [.nan, .nan, .nan, .nan], ldc: 2,
                        threads: 1) == [26, 30, 38, 44])
        #expect(rowwise(false, true, m: 2, n: 2, k: 2, alpha: 1, beta: 0, a: a, lda: 2, b: b, ldb: 2, c: c, ldc: 2, threads: 1) == [17, 23, 39, 53])
        var rng = KernelTestRNG(seed: 77)
        let (m, n, k) = (7, 1000, 1283)
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let lda = ta ? m : k, ldb = tb ? k : n
            let a = rng.floats(m * k), b = rng.floats(k * n), c = rng.floats(m * n)
            let ref = run(ta, tb, m: m, n: n, k: k, alpha: 0.5, beta: 2, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: n,
                          threads: 1, reference: true)
            let all = rowwise(ta, tb, m: m, n: n, k: k, alpha: 0.5, beta: 2, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: n, threads: 1)
            #expect(kernelMaxAbsDiff(all, ref) <= 4e-6 * Float(k) + 1e-5, "ta \(ta) tb \(tb)")
            #expect(rowwise(ta, tb, m: m, n: n, k: k, alpha: 0.5, beta: 2, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: n, threads: 2) == all)
            for i in 0..<m {
                // Row i alone (op(A) row i as a one-row matrix).
                let rowA = ta ? (0..<k).map { a[$0 * lda + i] } : Array(a[(i * k)..<((i + 1) * k)])
                let single = rowwise(false, tb, m: 1, n: n, k: k, alpha: 0.5, beta: 2, a: rowA, lda: k, b: b, ldb: ldb,
                                     c: Array(c[(i * n)..<((i + 1) * n)]), ldc: n, threads: 1)
                #expect(single == Array(all[(i * n)..<((i + 1) * n)]), "row \(i) ta \(ta) tb \(tb)")
            }
        }
    }

    /// Products large enough to be cut into blocks (by columns, by rows), all transposes; single rows (sgemv).
    @Test(arguments: [(64, 1000, 200), (300, 100, 300), (1, 1000, 1280), (1, 300, 37)])
    func blockedProductsMatchReferenceForAnyThreadCount(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        var rng = KernelTestRNG(seed: UInt64(m * n + k))
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let lda = ta ? m : k, ldb = tb ? k : n
            let a = rng.floats(m * k), b = rng.floats(k * n), c = rng.floats(m * n)
            let ref = run(ta, tb, m: m, n: n, k: k, alpha: 1, beta: 1, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: n,
                          threads: 1, reference: true)
            let one = run(ta, tb, m: m, n: n, k: k, alpha: 1, beta: 1, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: n,
                          threads: 1, reference: false)
            #expect(kernelMaxAbsDiff(one, ref) <= 4e-6 * Float(k) + 1e-5, "m \(m) n \(n) k \(k) ta \(ta) tb \(tb)")
            for t in [2, 3] {
                let other = run(ta, tb, m: m, n: n, k: k, alpha: 1, beta: 1, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: n,
                                threads: t, reference: false)
                #expect(other == one, "threads \(t): m \(m) n \(n) k \(k) ta \(ta) tb \(tb)")
            }
        }
    }

    @Test func randomShapesMatchReference() {
        var rng = KernelTestRNG(seed: 9)
        for trial in 0..<60 {
            let ta = rng.int(0...1) == 1, tb = rng.int(0...1) == 1
            let big = trial % 6 == 0
            let m = rng.int(1...(big ? 300 : 40)), n = rng.int(1...(big ? 300 : 40)), k = rng.int(1...(big ? 64 : 40))
            let lda = (ta ? m : k) + rng.int(0...3), ldb = (tb ? k : n) + rng.int(0...3), ldc = n + rng.int(0...3)
            let a = rng.floats((ta ? k : m) * lda), b = rng.floats((tb ? n : k) * ldb), c = rng.floats(m * ldc)
            let alpha = rng.float() * 2, beta: Float = [0, 1, 0.5][rng.int(0...2)]
            let ref = run(ta, tb, m: m, n: n, k: k, alpha: alpha, beta: beta, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
                          threads: 1, reference: true)
            let one = run(ta, tb, m: m, n: n, k: k, alpha: alpha, beta: beta, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
                          threads: 1, reference: false)
            let two = run(ta, tb, m: m, n: n, k: k, alpha: alpha, beta: beta, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
                          threads: 2, reference: false)
            #expect(kernelMaxAbsDiff(one, ref) <= 4e-6 * Float(k) + 1e-5, "m \(m) n \(n) k \(k)")
            // Padding columns of C (beyond n) are untouched.
            for i in 0..<m { for j in n..<ldc { #expect(one[i * ldc + j] == c[i * ldc + j]) } }
            #expect(one == two, "threads 1 vs 2 differ: m \(m) n \(n) k \(k)")
        }
    }
}

@Suite("Kernels: pooling")
struct KernelsPoolTests {
    static let x3: [Float] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    // 3×3 input, 2×2 window, stride 1, pads (0,0,1,1).
    static let g3 = Pool2DGeometry(batch: 1, channels: 1, inHeight: 3, inWidth: 3, outHeight: 3, outWidth: 3,
                                   kernelHeight: 2, kernelWidth: 2, strideH: 1, strideW: 1,
                                   padTop: 0, padLeft: 0, padBottom: 1, padRight: 1)

    @Test func asymmetricPadsHandComputed() {
        for reference in [true, false] {
            #expect(kernelPool(Self.x3, Self.g3, .max, reference: reference) == [5, 6, 6, 8, 9, 9, 8, 9, 9])
            #expect(kernelPool(Self.x3, Self.g3, .avg(countIncludePad: false), reference: reference)
                    == [3, 4, 4.5, 6, 7, 7.5, 7.5, 8.5, 9])
            // Every window lies inside the padded 4×4 extent: divide by 4 (values from ONNX Runtime 1.32).
            #expect(kernelPool(Self.x3, Self.g3, .avg(countIncludePad: true), reference: reference)
                    == [3, 4, 2.25, 6, 7, 3.75, 3.75, 4.25, 2.25])
        }
    }

    @Test func ceilModeWindowsAreClipped() {
        // 4×4 input 1..16, 3×3 window, stride 2, pads 1, ceil_mode: 3×3 output; the last window
        // (start 3) reaches index 5, past input + pad (extent [-1, 5)), so it is clipped to 2 taps per axis.
        // Expected values computed by ONNX Runtime 1.32 (AveragePool opset 17).
        let x = (1...16).map(Float.init)
        let g = Pool2DGeometry(batch: 1, channels: 1, inHeight: 4, inWidth: 4, outHeight: 3, outWidth: 3,
                               kernelHeight: 3, kernelWidth: 3, strideH: 2, strideW: 2,
                               padTop: 1, padLeft: 1, padBottom: 1, padRight: 1)
        let include: [Float] = [14.0 / 9, 30.0 / 9, 2, 57.0 / 9, 11, 6, 4.5, 7.5, 4]
        let exclude: [Float] = [3.5, 5, 6, 9.5, 11, 12, 13.5, 15, 16]
        for reference in [true, false] {
            #expect(kernelMaxAbsDiff(kernelPool(x, g, .avg(countIncludePad: true), reference: reference), include) <= 1e-6)
            #expect(kernelPool(x, g, .avg(countIncludePad: false), reference: reference) == exclude)
            #expect(kernelPool(x, g, .max, reference: reference) == [6, 8, 8, 14, 16, 16, 14, 16, 16])
        }
    }

    @Test func dilatedMaxPool() {
        // 4×4 input 0..15 with x[0][0] = 100, 2×2 window, dilation 2: taps (r, c), (r, c+2), (r+2, c), (r+2, c+2).
        var x = (0..<16).map(Float.init); x[0] = 100
        let g = Pool2DGeometry(batch: 1, channels: 1, inHeight: 4, inWidth: 4, outHeight: 2, outWidth: 2,
                               kernelHeight: 2, kernelWidth: 2, strideH: 1, strideW: 1, dilationH: 2, dilationW: 2,
                               padTop: 0, padLeft: 0, padBottom: 0, padRight: 0)
        for reference in [true, false] {
            #expect(kernelPool(x, g, .max, reference: reference) == [100, 11, 14, 15])
        }
    }

    @Test func randomGeometriesMatchReference() {
        var rng = KernelTestRNG(seed: 13)
        for _ in 0..<120 {
            let kh = rng.int(1...4), kw = rng.int(1...4), sh = rng.int(1...3), sw = rng.int(1...3)
            let dh = rng.int(1...2), dw = rng.int(1...2)
            let pt = rng.int(0...(kh - 1)), pb = rng.int(0...(kh - 1)), pl = rng.int(0...(kw - 1)), pr = rng.int(0...(kw - 1))
            let h = rng.int((dh * (kh - 1) + 1)...12), w = rng.int((dw * (kw - 1) + 1)...12)
            let ceil = rng.int(0...1) == 1
            func outSize(_ n: Int, _ k: Int, _ s: Int, _ d: Int, _ p: Int) -> Int {
                let span = n + p - d * (k - 1) - 1
                return (ceil ? (span + s - 1) / s : span / s) + 1
            }
            let g = Pool2DGeometry(batch: rng.int(1...2), channels: rng.int(1...3), inHeight: h, inWidth: w,
                                   outHeight: outSize(h, kh, sh, dh, pt + pb), outWidth: outSize(w, kw, sw, dw, pl + pr),
                                   kernelHeight: kh, kernelWidth: kw, strideH: sh, strideW: sw, dilationH: dh, dilationW: dw,
                                   padTop: pt, padLeft: pl, padBottom: pb, padRight: pr)
            let x = rng.floats(g.batch * g.channels * h * w)
            for kind in [PoolKind.max, .avg(countIncludePad: false), .avg(countIncludePad: true)] {
                let ref = kernelPool(x, g, kind, reference: true)
                #expect(kernelPool(x, g, kind, threads: 1) == ref, "\(g) \(kind)")
                #expect(kernelPool(x, g, kind, threads: 2) == ref, "\(g) \(kind)")
            }
        }
    }

    @Test func globalPool() {
        // Two planes of 5 values: mean and max by hand.
        let x: [Float] = [1, 2, 3, 4, 5, -1, -7, 2, 0, 1]
        for reference in [true, false] {
            for isMax in [false, true] {
                var y = [Float](repeating: .nan, count: 2)
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        if reference {
                            Kernels.Reference.globalPool2d(input: xp.baseAddress!, output: yp.baseAddress!, batch: 1, channels: 2,
                                                           spatial: 5, isMax: isMax)
                        } else {
                            Kernels.globalPool2d(input: xp.baseAddress!, output: yp.baseAddress!, batch: 1, channels: 2,
                                                 spatial: 5, isMax: isMax, threads: 2)
                        }
                    }
                }
                #expect(y == (isMax ? [5, 2] : [3, -1]))
            }
        }
        // Random planes: optimised mean within rounding of the reference, max exact.
        var rng = KernelTestRNG(seed: 17)
        let spatial = 49, planes = 300
        let r = rng.floats(spatial * planes)
        for isMax in [false, true] {
            var a = [Float](repeating: 0, count: planes), b = a
            r.withUnsafeBufferPointer { xp in
                a.withUnsafeMutableBufferPointer { ap in
                    Kernels.Reference.globalPool2d(input: xp.baseAddress!, output: ap.baseAddress!, batch: 3, channels: 100,
                                                   spatial: spatial, isMax: isMax)
                }
                b.withUnsafeMutableBufferPointer { bp in
                    Kernels.globalPool2d(input: xp.baseAddress!, output: bp.baseAddress!, batch: 3, channels: 100,
                                         spatial: spatial, isMax: isMax, threads: 2)
                }
            }
            if isMax { #expect(a == b) } else { #expect(kernelMaxAbsDiff(a, b) <= 1e-6) }
        }
    }
}

@Suite("Kernels: elementwise")
struct KernelsElementwiseTests {
    @Test func clipHandComputedAndNaN() {
        let x: [Float] = [-7, -0.5, 0, 3, 6, 6.5, .nan, 100, -.infinity, .infinity, 2]
        var y = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                Kernels.clip(input: xp.baseAddress!, output: yp.baseAddress!, count: x.count, min: 0, max: 6)
            }
        }
        #expect(Array(y[0..<6]) == [0, 0, 0, 3, 6, 6])
        #expect(y[6].isNaN)
        #expect(Array(y[7...]) == [6, 0, 6, 2])
    }

    @Test func clipMatchesReferenceInPlaceAndThreaded() {
        var rng = KernelTestRNG(seed: 23)
        for n in [0, 1, 7, 8, 9, 63, 1000, 300_001] {
            let x = rng.floats(n).map { $0 * 10 }
            var ref = [Float](repeating: 0, count: n)
            x.withUnsafeBufferPointer { xp in
                ref.withUnsafeMutableBufferPointer { rp in
                    if n > 0 { Kernels.Reference.clip(input: xp.baseAddress!, output: rp.baseAddress!, count: n, min: -1, max: 2.5) }
                }
            }
            #expect(ref.allSatisfy { $0 >= -1 && $0 <= 2.5 })
            for t in [1, 2] {
                var y = x   // in place
                y.withUnsafeMutableBufferPointer { yp in
                    if n > 0 { Kernels.clip(input: yp.baseAddress!, output: yp.baseAddress!, count: n, min: -1, max: 2.5, threads: t) }
                }
                #expect(y == ref, "n \(n) threads \(t)")
            }
        }
    }
}

@Suite("Kernels: determinism and setup")
struct KernelsDeterminismTests {
    /// Each image is computed by the same calls whatever the batch it is part of, so shards with
    /// different batch sizes produce bit-identical activations for the same image.
    @Test func convResultsDoNotDependOnBatchSize() {
        var rng = KernelTestRNG(seed: 29)
        let shapes = [
            Conv2DGeometry(batch: 3, inChannels: 16, inHeight: 30, inWidth: 30, outChannels: 48, kernelHeight: 1, kernelWidth: 1),
            Conv2DGeometry(batch: 3, inChannels: 3, inHeight: 40, inWidth: 40, outChannels: 16, kernelHeight: 3, kernelWidth: 3,
                           strideH: 2, strideW: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1),
            Conv2DGeometry(batch: 3, inChannels: 24, inHeight: 28, inWidth: 28, outChannels: 24, kernelHeight: 5, kernelWidth: 5,
                           padTop: 2, padLeft: 2, padBottom: 2, padRight: 2, group: 24),
        ]
        for g in shapes {
            let x = rng.floats(g.batch * g.inChannels * g.inHeight * g.inWidth)
            let w = rng.floats(g.outChannels * (g.inChannels / g.group) * g.kernelHeight * g.kernelWidth)
            let b = rng.floats(g.outChannels)
            let all = kernelConv(x, w, b, g, threads: 2)
            let inSize = g.inChannels * g.inHeight * g.inWidth, outSize = g.outChannels * g.outHeight * g.outWidth
            var one = g; one.batch = 1
            for n in 0..<g.batch {
                let single = kernelConv(Array(x[(n * inSize)..<((n + 1) * inSize)]), w, b, one, threads: 1)
                #expect(single == Array(all[(n * outSize)..<((n + 1) * outSize)]), "\(g) image \(n)")
            }
        }
    }

    /// OpenBLAS 0.3.21 falls back to its Prescott (SSE3) kernels on CPUs it does not know; the
    /// setup must replace them when the CPU has AVX2 (unless the user forced a core).
    @Test func openBLASDoesNotRunFallbackKernelsOnAVX2() {
        let forced = KernelsDeterminismTests.environment("OPENBLAS_CORETYPE") != nil
        let name = Kernels.blasCoreName
        #expect(!name.isEmpty)
        if !forced && Kernels.VectorISA.avx2.isSupported {
            #expect(!["Prescott", "Core2", "Penryn", "Nehalem", "Katmai", "Northwood"].contains(name), "core \(name)")
        }
    }

    static func environment(_ key: String) -> String? {
        guard let p = getenv(key) else { return nil }
        return String(cString: p)
    }
}

@Suite("Kernels: fused clip")
struct KernelsFusedClipTests {
    @Test func fusedClipEqualsClipOfTheConvOutput() {
        var rng = KernelTestRNG(seed: 31)
        let shapes = [
            // pointwise, column blocks / row blocks / single block
            Conv2DGeometry(batch: 2, inChannels: 64, inHeight: 30, inWidth: 30, outChannels: 96, kernelHeight: 1, kernelWidth: 1),
            Conv2DGeometry(batch: 1, inChannels: 512, inHeight: 7, inWidth: 7, outChannels: 384, kernelHeight: 1, kernelWidth: 1),
            Conv2DGeometry(batch: 2, inChannels: 4, inHeight: 5, inWidth: 5, outChannels: 6, kernelHeight: 1, kernelWidth: 1, group: 2),
            // im2col
            Conv2DGeometry(batch: 2, inChannels: 3, inHeight: 33, inWidth: 35, outChannels: 8, kernelHeight: 3, kernelWidth: 3,
                           strideH: 2, strideW: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1),
            // depthwise, stride 1 and 2
            Conv2DGeometry(batch: 2, inChannels: 6, inHeight: 20, inWidth: 37, outChannels: 6, kernelHeight: 5, kernelWidth: 5,
                           padTop: 2, padLeft: 2, padBottom: 2, padRight: 2, group: 6),
            Conv2DGeometry(batch: 1, inChannels: 5, inHeight: 21, inWidth: 21, outChannels: 5, kernelHeight: 3, kernelWidth: 3,
                           strideH: 2, strideW: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1, group: 5),
        ]
        for g in shapes {
            let x = rng.floats(g.batch * g.inChannels * g.inHeight * g.inWidth).map { $0 * 3 }
            let w = rng.floats(g.outChannels * (g.inChannels / g.group) * g.kernelHeight * g.kernelWidth)
            let b = rng.floats(g.outChannels)
            let plain = kernelConv(x, w, b, g, threads: 1)
            let count = plain.count
            var y = [Float](repeating: .nan, count: count), clipped = y, expected = y
            plain.withUnsafeBufferPointer { pp in
                expected.withUnsafeMutableBufferPointer { ep in
                    Kernels.Reference.clip(input: pp.baseAddress!, output: ep.baseAddress!, count: count, min: 0, max: 1.5)
                }
            }
            for t in [1, 2] {
                x.withUnsafeBufferPointer { xp in
                    w.withUnsafeBufferPointer { wp in
                        b.withUnsafeBufferPointer { bp in
                            y.withUnsafeMutableBufferPointer { yp in
                                clipped.withUnsafeMutableBufferPointer { cp in
                                    Kernels.conv2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: bp.baseAddress!,
                                                   output: yp.baseAddress!, geometry: g, scratch: KernelScratch(), threads: t,
                                                   fusedClip: FusedClip(output: cp.baseAddress!, min: 0, max: 1.5))
                                }
                            }
                        }
                    }
                }
                #expect(y == plain, "\(g) threads \(t)")
                #expect(clipped == expected, "\(g) threads \(t)")
                #expect(expected.contains(0) && expected.contains(1.5), "test data should hit both bounds")
                // In place: the output itself is clipped.
                var inPlace = [Float](repeating: .nan, count: count)
                x.withUnsafeBufferPointer { xp in
                    w.withUnsafeBufferPointer { wp in
                        b.withUnsafeBufferPointer { bp in
                            inPlace.withUnsafeMutableBufferPointer { yp in
                                Kernels.conv2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: bp.baseAddress!,
                                               output: yp.baseAddress!, geometry: g, scratch: KernelScratch(), threads: t,
                                               fusedClip: FusedClip(output: yp.baseAddress!, min: 0, max: 1.5))
                            }
                        }
                    }
                }
                #expect(inPlace == expected, "\(g) threads \(t) in place")
            }
            // Depthwise shapes: every supported ISA (portable/AVX2 use the padded-copy path).
            guard g.group == g.inChannels && g.outChannels == g.inChannels else { continue }
            for isa in Kernels.VectorISA.allCases where isa.isSupported {
                let ref = depthwiseConv(x, w, b, g, isa: isa, threads: 1, scratch: KernelScratch())
                var yi = [Float](repeating: .nan, count: count), ci = yi, ei = yi
                ref.withUnsafeBufferPointer { rp in
                    ei.withUnsafeMutableBufferPointer { ep in
                        Kernels.Reference.clip(input: rp.baseAddress!, output: ep.baseAddress!, count: count, min: 0, max: 1.5)
                    }
                }
                x.withUnsafeBufferPointer { xp in
                    w.withUnsafeBufferPointer { wp in
                        b.withUnsafeBufferPointer { bp in
                            yi.withUnsafeMutableBufferPointer { yp in
                                ci.withUnsafeMutableBufferPointer { cp in
                                    Kernels.depthwiseConv2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: bp.baseAddress!,
                                                            output: yp.baseAddress!, geometry: g, scratch: KernelScratch(), threads: 2,
                                                            isa: isa, fusedClip: FusedClip(output: cp.baseAddress!, min: 0, max: 1.5))
                                }
                            }
                        }
                    }
                }
                #expect(yi == ref, "\(g) \(isa)")
                #expect(ci == ei, "\(g) \(isa)")
            }
        }
    }
}

@Suite("Kernels: pointwise convolution")
struct KernelsPointwiseTests {
    /// 1×1 convolutions (the AVX-512 C kernel where the CPU has it, else sgemm): every remainder of
    /// the 6-channel × 64-pixel register tile, no bias, groups, several tasks per image.
    @Test func pointwiseMatchesReferenceForAnyTileRemainder() {
        var rng = KernelTestRNG(seed: 57)
        var shapes: [Conv2DGeometry] = []
        for (oc, hw) in [(1, 1), (5, 17), (7, 49), (13, 35), (17, 200), (6, 64), (12, 65), (23, 129)] {
            shapes.append(Conv2DGeometry(batch: 2, inChannels: 11, inHeight: 1, inWidth: hw, outChannels: oc,
                                         kernelHeight: 1, kernelWidth: 1))
        }
        shapes.append(Conv2DGeometry(batch: 1, inChannels: 192, inHeight: 7, inWidth: 7, outChannels: 1152, kernelHeight: 1, kernelWidth: 1))
        shapes.append(Conv2DGeometry(batch: 1, inChannels: 16, inHeight: 112, inWidth: 112, outChannels: 96, kernelHeight: 1, kernelWidth: 1))
        shapes.append(Conv2DGeometry(batch: 3, inChannels: 6, inHeight: 9, inWidth: 10, outChannels: 9, kernelHeight: 1, kernelWidth: 1, group: 3))
        for (i, g) in shapes.enumerated() {
            let x = rng.floats(g.batch * g.inChannels * g.inHeight * g.inWidth)
            let w = rng.floats(g.outChannels * (g.inChannels / g.group))
            let b: [Float]? = i % 2 == 0 ? rng.floats(g.outChannels) : nil
            let ref = referenceConv(x, w, b, g)
            let one = kernelConv(x, w, b, g, threads: 1)
            let k = Float(g.inChannels / g.group)
            #expect(kernelMaxAbsDiff(one, ref) <= 2e-6 * k + 1e-6, "\(g)")
            for t in [2, 3] { #expect(kernelConv(x, w, b, g, threads: t) == one, "\(g) threads \(t)") }
        }
    }

    /// The epilogues of the pointwise kernel on every store path (the 64-pixel tiles and the dot
    /// products of a short last vector, pixels mod 16 = 1, 3, 4, 0): clip(y) and y + addend are
    /// exactly what a separate Clip or Add computes from the stored y, whether written beside y or
    /// in place (over y, or over the addend), and y itself is the plain convolution's.
    @Test(arguments: [1, 2]) func pointwiseEpiloguesAreExact(threads: Int) {
        var rng = KernelTestRNG(seed: 58)
        for (ic, oc, hw) in [(11, 13, 49), (40, 7, 35), (40, 20, 196), (33, 9, 64), (70, 12, 1)] {
            let g = Conv2DGeometry(batch: 2, inChannels: ic, inHeight: 1, inWidth: hw, outChannels: oc, kernelHeight: 1, kernelWidth: 1)
            let n = 2 * oc * hw
            let x = rng.floats(2 * ic * hw).map { $0 * 4 }, w = rng.floats(oc * ic), b = rng.floats(oc), r = rng.floats(n)
            // mode: 0 plain, 1 clip beside, 2 clip in place, 3 sum beside, 4 sum over y, 5 sum over the addend.
            func run(_ mode: Int) -> (y: [Float], extra: [Float]) {
                var y = [Float](repeating: .nan, count: n), extra = mode == 5 ? r : [Float](repeating: .nan, count: n)
                let addend = r
                x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in b.withUnsafeBufferPointer { bp in
                    addend.withUnsafeBufferPointer { ap in y.withUnsafeMutableBufferPointer { yp in extra.withUnsafeMutableBufferPointer { ep in
                        let y0 = yp.baseAddress!, e0 = ep.baseAddress!
                        let clip = mode == 1 || mode == 2 ? FusedClip(output: mode == 2 ? y0 : e0, min: -0.5, max: 0.75) : nil
                        let residual: FusedResidual? = switch mode {
                        case 3: FusedResidual(addend: ap.baseAddress!, sum: e0)
                        case 4: FusedResidual(addend: ap.baseAddress!, sum: y0)
                        case 5: FusedResidual(addend: UnsafePointer(e0), sum: e0)
                        default: nil
                        }
                        Kernels.conv2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: bp.baseAddress!, output: y0, geometry: g,
                                       scratch: KernelScratch(), threads: threads, fusedClip: clip, fusedResidual: residual)
                    } } }
                } } }
                return (y, extra)
            }
            let plain = run(0).y
            #expect(kernelMaxAbsDiff(plain, referenceConv(x, w, b, g)) <= 2e-6 * Float(ic) + 1e-6, "\(g)")
            let clipped = plain.map { $0 < -0.5 ? -0.5 : ($0 > 0.75 ? 0.75 : $0) }
            let summed = zip(plain, r).map { $0 + $1 }
            let beside = run(1), inPlace = run(2).y, sumBeside = run(3), sumOverY = run(4).y, sumOverAddend = run(5)
            let exact = [beside.y == plain, beside.extra == clipped, inPlace == clipped, sumBeside.y == plain,
                         sumBeside.extra == summed, sumOverY == summed, sumOverAddend.y == plain, sumOverAddend.extra == summed]
            #expect(exact.allSatisfy { $0 }, "\(g): \(exact)")
        }
    }

    /// Task cuts of the pointwise kernel: whole register tiles, covering every pixel and channel once.
    @Test func splitCoversTheProductInWholeTiles() {
        for (oc, ic, p) in [(16, 32, 12544), (96, 16, 12544), (1152, 192, 49), (1280, 320, 49), (112, 672, 196), (1, 1, 1), (7, 3, 5)] {
            let s = PointwiseSplit(outChannels: oc, inChannels: ic, pixels: p)
            #expect(s.channelBlock % 6 == 0)
            // Pixel blocks: consecutive, non-empty, whole tiles (but the last), sizes within one tile.
            let ranges = (0..<s.pixelBlocks).map { s.pixelRange($0, pixels: p) }
            #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == p)
            #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound && $0.upperBound % 64 == 0 })
            #expect(ranges.allSatisfy { !$0.isEmpty })
            let tiles = ranges.map { ($0.count + 63) / 64 }
            #expect(tiles.max()! - tiles.min()! <= 1, "\(tiles)")
            #expect(s.channelBlocks * s.channelBlock >= oc && (s.channelBlocks - 1) * s.channelBlock < oc)
            #expect(s.count >= 1 && s.count <= 32)
            if oc * ic * p >= 1 << 22 { #expect(s.count >= 2, "\(oc)×\(ic)×\(p) should be cut for two threads") }
        }
    }
}

@Suite("Kernels: flat depthwise (AVX-512)")
struct KernelsDepthwiseFlatTests {
    /// Runs the AVX-512 depthwise conv with the given kernel; `clip`: nil, separate output or in place.
    static func run(_ x: [Float], _ w: [Float], _ b: [Float]?, _ g: Conv2DGeometry, kernel: Kernels.DepthwiseAVX512Kernel,
                    threads: Int, clip: (min: Float, max: Float, inPlace: Bool)? = nil) -> (y: [Float], clipped: [Float]) {
        let count = g.batch * g.outChannels * g.outHeight * g.outWidth
        var y = [Float](repeating: .nan, count: count), c = y
        let bias = b ?? []
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                bias.withUnsafeBufferPointer { bp in
                    y.withUnsafeMutableBufferPointer { yp in
                        c.withUnsafeMutableBufferPointer { cp in
                            let fused = clip.map { FusedClip(output: $0.inPlace ? yp.baseAddress! : cp.baseAddress!, min: $0.min, max: $0.max) }
                            Kernels.depthwiseConv2d(input: xp.baseAddress!, weight: wp.baseAddress!, bias: b == nil ? nil : bp.baseAddress,
                                                    output: yp.baseAddress!, geometry: g, scratch: KernelScratch(), threads: threads,
                                                    isa: .avx512, fusedClip: fused, avx512Kernel: kernel)
                        }
                    }
                }
            }
        }
        return (y, c)
    }

    /// Stride-1 shapes with outW == inW (the flat kernel's domain): widths 1…20, heights 1…12,
    /// kernels up to 5×7, dilation 1–2, asymmetric pads (outH may differ from inH), channel counts
    /// that are not multiples of the 16-plane block, with and without bias. The flat kernel must match
    /// the reference within rounding and the direct kernel exactly (same FMA sequence per element).
    @Test func flatMatchesReferenceAndDirect() {
        guard Kernels.VectorISA.avx512.isSupported else { return }
        var rng = KernelTestRNG(seed: 91)
        var checked = 0, differentHeight = 0
        for W in 1...20 {
            for _ in 0..<4 {
                let kh = rng.int(1...5), kw = rng.int(1...7), dh = rng.int(1...2), dw = rng.int(1...2)
                let spanW = (kw - 1) * dw
                let pl = rng.int(0...spanW), pr = spanW - pl
                let H = rng.int(1...12)
                let pt = rng.int(0...(kh - 1) * dh), pb = rng.int(0...(kh - 1) * dh)
                let C = [1, 3, 5, 16, 17, 33][rng.int(0...5)]
                let g = Conv2DGeometry(batch: rng.int(1...3), inChannels: C, inHeight: H, inWidth: W, outChannels: C,
                                       kernelHeight: kh, kernelWidth: kw, strideH: 1, strideW: 1, dilationH: dh, dilationW: dw,
                                       padTop: pt, padLeft: pl, padBottom: pb, padRight: pr, group: C)
                if g.outHeight <= 0 { continue }
                #expect(g.outWidth == W)
                if g.outHeight != H { differentHeight += 1 }
                let x = rng.floats(g.batch * C * H * W), w = rng.floats(C * kh * kw)
                let b: [Float]? = rng.int(0...3) == 0 ? nil : rng.floats(C)
                let ref = referenceConv(x, w, b, g)
                let flat = Self.run(x, w, b, g, kernel: .flat, threads: 1).y
                let direct = Self.run(x, w, b, g, kernel: .direct, threads: 1).y
                #expect(kernelMaxAbsDiff(flat, ref) <= 2e-6 * Float(kh * kw) + 1e-6, "\(g)")
                #expect(flat == direct, "flat vs direct: \(g)")
                #expect(Self.run(x, w, b, g, kernel: .flat, threads: 2).y == flat, "threads: \(g)")
                checked += 1
            }
        }
        #expect(checked >= 60 && differentHeight >= 10, "checked \(checked), outH != inH \(differentHeight)")
    }

    /// Strides 2 (phase-split copy) and 1 with outW != inW, where the flat kernel declines some shapes
    /// (a phase wider than the output) and the direct kernel runs instead: results must still match.
    @Test func flatStridedMatchesReferenceAndDirect() {
        guard Kernels.VectorISA.avx512.isSupported else { return }
        var rng = KernelTestRNG(seed: 94)
        var checked = 0
        for W in 1...20 {
            for _ in 0..<4 {
                let kh = rng.int(1...5), kw = rng.int(1...5), dh = rng.int(1...2), dw = rng.int(1...2)
                let sh = rng.int(1...2), sw = rng.int(0...3) == 0 ? 1 : 2
                let H = rng.int(1...13)
                let pt = rng.int(0...3), pb = rng.int(0...3), pl = rng.int(0...3), pr = rng.int(0...3)
                let C = [1, 2, 5, 16, 17][rng.int(0...4)]
                let g = Conv2DGeometry(batch: rng.int(1...2), inChannels: C, inHeight: H, inWidth: W, outChannels: C,
                                       kernelHeight: kh, kernelWidth: kw, strideH: sh, strideW: sw, dilationH: dh, dilationW: dw,
                                       padTop: pt, padLeft: pl, padBottom: pb, padRight: pr, group: C)
                if g.outHeight <= 0 || g.outWidth <= 0 { continue }
                let x = rng.floats(g.batch * C * H * W), w = rng.floats(C * kh * kw)
                let b: [Float]? = rng.int(0...3) == 0 ? nil : rng.floats(C)
                let ref = referenceConv(x, w, b, g)
                let flat = Self.run(x, w, b, g, kernel: .flat, threads: 1).y
                #expect(kernelMaxAbsDiff(flat, ref) <= 2e-6 * Float(kh * kw) + 1e-6, "\(g)")
                #expect(flat == Self.run(x, w, b, g, kernel: .direct, threads: 1).y, "flat vs direct: \(g)")
                #expect(Self.run(x, w, b, g, kernel: .flat, threads: 2).y == flat, "threads: \(g)")
                let clipped = Self.run(x, w, b, g, kernel: .flat, threads: 1, clip: (-0.5, 0.5, false))
                #expect(clipped.y == flat && clipped.clipped == flat.map { $0 < -0.5 ? -0.5 : ($0 > 0.5 ? 0.5 : $0) }, "clip: \(g)")
                checked += 1
            }
        }
        #expect(checked >= 60, "checked \(checked)")
    }

    /// The direct kernel's stride-2 schedule (3×3 and 5×5, dilation 1): every output-width remainder
    /// of its 32-column tile pairs, heights that end in partial 4-row tiles, asymmetric pads. It must
    /// match the reference within rounding and the flat kernel (phase split, same FMA sequence per
    /// element) exactly, with and without a fused clip, on any thread count.
    @Test func strideTwoScheduleMatchesFlatAndReference() {
        guard Kernels.VectorISA.avx512.isSupported else { return }
        var rng = KernelTestRNG(seed: 95)
        var checked = 0
        for W in [1, 2, 5, 14, 28, 31, 33, 63, 64, 65, 112] {
            for k in [3, 5] {
                let H = rng.int(1...19), C = [1, 3, 17][rng.int(0...2)]
                let pt = rng.int(0...k - 1), pb = rng.int(0...k - 1), pl = rng.int(0...k - 1), pr = rng.int(0...k - 1)
                let g = Conv2DGeometry(batch: rng.int(1...2), inChannels: C, inHeight: H, inWidth: W, outChannels: C,
                                       kernelHeight: k, kernelWidth: k, strideH: 2, strideW: 2,
                                       padTop: pt, padLeft: pl, padBottom: pb, padRight: pr, group: C)
                if g.outHeight <= 0 || g.outWidth <= 0 { continue }
                let x = rng.floats(g.batch * C * H * W).map { $0 * 3 }, w = rng.floats(C * k * k)
                let b: [Float]? = rng.int(0...3) == 0 ? nil : rng.floats(C)
                let direct = Self.run(x, w, b, g, kernel: .direct, threads: 1).y
                #expect(kernelMaxAbsDiff(direct, referenceConv(x, w, b, g)) <= 2e-6 * Float(k * k) + 1e-6, "\(g)")
                let flat = Self.run(x, w, b, g, kernel: .flat, threads: 1).y
                #expect(direct == flat, "direct vs flat: \(g)")
                #expect(Self.run(x, w, b, g, kernel: .auto, threads: 2).y == direct, "auto, 2 threads: \(g)")
                let clipped = Self.run(x, w, b, g, kernel: .direct, threads: 1, clip: (-0.5, 0.5, false))
                #expect(clipped.y == direct && clipped.clipped == direct.map { $0 < -0.5 ? -0.5 : ($0 > 0.5 ? 0.5 : $0) }, "clip: \(g)")
                let inPlace = Self.run(x, w, b, g, kernel: .direct, threads: 1, clip: (-0.5, 0.5, true)).y
                #expect(inPlace == clipped.clipped, "clip in place: \(g)")
                checked += 1
            }
        }
        #expect(checked >= 18, "checked \(checked)")
    }

    /// The clip fused into the flat kernel's store: separate output (y and clip(y)) and in place.
    @Test func flatFusedClip() {
        guard Kernels.VectorISA.avx512.isSupported else { return }
        var rng = KernelTestRNG(seed: 92)
        for (H, W, k, C, s) in [(7, 7, 5, 19, 1), (14, 14, 3, 5, 1), (3, 13, 3, 2, 1), (9, 1, 3, 4, 1), (5, 17, 5, 18, 1),
                                (14, 14, 5, 17, 2), (11, 9, 3, 3, 2)] {
            let g = Conv2DGeometry(batch: 2, inChannels: C, inHeight: H, inWidth: W, outChannels: C, kernelHeight: k, kernelWidth: k,
                                   strideH: s, strideW: s, padTop: k / 2, padLeft: k / 2, padBottom: k / 2, padRight: k / 2, group: C)
            let x = rng.floats(g.batch * C * H * W).map { $0 * 4 }, w = rng.floats(C * k * k), b = rng.floats(C)
            let plain = Self.run(x, w, b, g, kernel: .flat, threads: 1).y
            let expected = plain.map { $0 < 0 ? 0 : ($0 > 1.5 ? 1.5 : $0) }
            #expect(expected.contains(0) && expected.contains(1.5), "test data should hit both bounds")
            let both = Self.run(x, w, b, g, kernel: .flat, threads: 2, clip: (0, 1.5, false))
            #expect(both.y == plain, "\(g)")
            #expect(both.clipped == expected, "\(g)")
            #expect(Self.run(x, w, b, g, kernel: .flat, threads: 1, clip: (0, 1.5, true)).y == expected, "\(g) in place")
        }
    }

    /// The automatic choice runs the flat kernel on narrow planes and gives the same result as forcing it.
    @Test func automaticChoiceMatchesForcedKernel() {
        guard Kernels.VectorISA.avx512.isSupported else { return }
        var rng = KernelTestRNG(seed: 93)
        for (H, W, k, s) in [(7, 7, 5, 1), (14, 14, 5, 1), (28, 28, 3, 1), (56, 56, 3, 1), (14, 14, 5, 2), (28, 28, 3, 2)] {
            let C = 20
            let g = Conv2DGeometry(batch: 1, inChannels: C, inHeight: H, inWidth: W, outChannels: C, kernelHeight: k, kernelWidth: k,
                                   strideH: s, strideW: s, padTop: k / 2, padLeft: k / 2, padBottom: k / 2, padRight: k / 2, group: C)
            let x = rng.floats(C * H * W), w = rng.floats(C * k * k), b = rng.floats(C)
            let auto = Self.run(x, w, b, g, kernel: .auto, threads: 1).y
            let flat = Self.run(x, w, b, g, kernel: .flat, threads: 1).y
            #expect(auto == flat, "\(g)")
            #expect(kernelMaxAbsDiff(auto, referenceConv(x, w, b, g)) <= 2e-6 * Float(k * k) + 1e-6, "\(g)")
        }
    }
}
