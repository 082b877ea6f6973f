// Products whose rows are samples of the batch (Gemm and 2-D MatMul: the classifier heads of CNNs).
//
// OpenBLAS picks its code path from the whole matrix shape (SkylakeX has separate "small matrix"
// kernels, and edge rows of a block go through narrower micro-kernels), so the same sample's row can
// come out different in the last bit depending on how many rows the call had, i.e. on the batch
// size and on where the batch was cut. Calibration promises the same histograms whatever the batching,
// so these products are computed one row at a time with a fixed summation order: each output element
// is a function of its own input row and the weights only.

import CConvKernels

extension Kernels {
    /// C[m×n] = alpha · op(A) · op(B) + beta · C (row-major, as cblas_sgemm), every row of C computed
    /// independently of the others and of `m`: bit-identical for any batch size or split, and for any
    /// `threads` (output columns are split, never a sum).
    public static func gemmRowwise(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                                   a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                                   beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int) {
        if m == 0 || n == 0 { return }
        // One contiguous copy of each op(A) row (strided when A is transposed).
        let row = UnsafeMutablePointer<Float>.allocate(capacity: max(k, 1))
        defer { row.deallocate() }
        // Column chunks of 64 per task: the split never changes what an element sums, or in which order.
        let chunk = 64
        let tasks = (n + chunk - 1) / chunk
        for i in 0..<m {
            if transA { for p in 0..<k { row[p] = a[p * lda + i] } } else { row.update(from: a + i * lda, count: k) }
            let x = UnsafePointer(row)
            let y = c + i * ldc
            parallelTasks(tasks, threads: k * n >= 1 << 16 ? threads : 1) { t in
                let lo = t * chunk, hi = min(n, lo + chunk)
                if transB {
                    // y[j] = Σ_p x[p] · B[j][p]: contiguous dot products, 16 lanes then a fixed lane sum.
                    #if arch(x86_64)
                    if VectorISA.best == .avx512 {
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: hi - lo) { sums in
                            shardcal_dot_rows_avx512(x, b, ldb, k, lo, hi, sums.baseAddress!)
                            for j in lo..<hi { y[j] = finish(sums[j - lo], alpha: alpha, beta: beta, old: y[j]) }
                        }
                        return
                    }
                    #endif
                    for j in lo..<hi { y[j] = finish(dot16(x, b + j * ldb, k), alpha: alpha, beta: beta, old: y[j]) }
                } else {
                    // y[j] = Σ_p x[p] · B[p][j], p ascending: contiguous rows of B, scaled and added.
                    rowTimesMatrix(x, b, ldb: ldb, k: k, columns: lo..<hi, alpha: alpha, beta: beta, y: y)
                }
            }
        }
    }

    @inline(__always)
    static func finish(_ sum: Float, alpha: Float, beta: Float, old: Float) -> Float {
        let scaled = alpha == 1 ? sum : alpha * sum
        return beta == 0 ? scaled : scaled + beta * old
    }

    /// Σ x[p]·y[p] with 16 partial sums (lane l takes p ≡ l mod 16), then the tail, then a fixed-order lane sum.
    @inline(__always)
    static func dot16(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ k: Int) -> Float {
        var acc = SIMD16<Float>(repeating: 0)
        var p = 0
        let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
        while p + 16 <= k {
            let vx = rx.loadUnaligned(fromByteOffset: p * 4, as: SIMD16<Float>.self)
            let vy = ry.loadUnaligned(fromByteOffset: p * 4, as: SIMD16<Float>.self)
            acc += vx * vy
            p += 16
        }
        var tail: Float = 0
        while p < k {
            tail += x[p] * y[p]
            p += 1
        }
        // Pairwise lane sum in a fixed order.
        let h8 = acc.lowHalf + acc.highHalf
        let h4 = h8.lowHalf + h8.highHalf
        let h2 = h4.lowHalf + h4.highHalf
        return (h2[0] + h2[1]) + tail
    }

    /// y[j] = finish(Σ_p x[p]·B[p][j]) for j in `columns`, accumulating p in ascending order.
    @inline(__always)
    static func rowTimesMatrix(_ x: UnsafePointer<Float>, _ b: UnsafePointer<Float>, ldb: Int, k: Int, columns: Range<Int>,
                               alpha: Float, beta: Float, y: UnsafeMutablePointer<Float>) {
        // On the stack: this runs per output row and column chunk.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: columns.count) { acc in
            acc.initialize(repeating: 0)
            let width = columns.count
            let vectors = width / 16
            let out = UnsafeMutableRawPointer(acc.baseAddress!)
            for p in 0..<k {
                let xp = x[p]
                let sp = SIMD16<Float>(repeating: xp)
                let rb = b + p * ldb + columns.lowerBound
                let rowB = UnsafeRawPointer(rb)
                for v in 0..<vectors {
                    let cur = out.loadUnaligned(fromByteOffset: v * 64, as: SIMD16<Float>.self)
                    out.storeBytes(of: cur + sp * rowB.loadUnaligned(fromByteOffset: v * 64, as: SIMD16<Float>.self),
                                   toByteOffset: v * 64, as: SIMD16<Float>.self)
                }
                for j in (vectors * 16)..<width { acc[j] += xp * rb[j] }
            }
            for (o, j) in columns.enumerated() { y[j] = finish(acc[o], alpha: alpha, beta: beta, old: y[j]) }
        }
    }
}
