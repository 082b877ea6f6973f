import COpenBLAS
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// OpenBLAS is only ever called single-threaded: its own threading is not bit-reproducible across
// thread counts (measured: sgemm 261×98×64 differs between 1 and 2 OpenBLAS threads). Instead every
// product is cut into blocks chosen from the matrix shape alone, and the blocks are spread over
// `threads` workers; each output element is computed by the same sgemm call whatever the thread count.

/// One-time OpenBLAS setup, run before the first BLAS call of the process.
enum BLASSetup {
    /// Name of the OpenBLAS kernel set in use after setup (e.g. "SkylakeX").
    nonisolated(unsafe) static var coreName = ""
    /// Non-nil when setup replaced the core OpenBLAS detected by itself: "<old> -> <new>".
    nonisolated(unsafe) static var coreUpgrade: String?

    static let once: Void = {
        upgradeCoreIfDetectionFellBack()
        openblas_set_num_threads(1)
        stopServerThreads()
        coreName = currentCoreName()
    }()

    /// OpenBLAS starts its own thread pool when the library loads (one thread per further core),
    /// and those threads keep waking to sched_yield although shardcal never gives them work:
    /// measured ~4% of a core per process (11 of 300 clock ticks beside a 1-thread engine run),
    /// taken from the other worker when calibration workers fill every core. Stops them with
    /// OpenBLAS's exported `blas_thread_shutdown_` (what its fork handler calls; a multi-threaded
    /// call would start them again, and shardcal makes none). Looked up at run time, so builds
    /// without a thread server are left alone. OPENBLAS_NUM_THREADS=1 has the same effect.
    static func stopServerThreads() {
        #if os(Linux)
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "blas_thread_shutdown_") else { return }
        typealias IntFn = @convention(c) () -> Int32
        _ = unsafeBitCast(sym, to: IntFn.self)()
        #endif
    }

    static func currentCoreName() -> String {
        guard let p = openblas_get_corename() else { return "" }
        return String(cString: p)
    }

    /// OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not know recent Xeon models (e.g. family 6 model 207) and
    /// falls back to its Prescott (SSE3) kernels, ~6× slower than the AVX-512 ones on sgemm here.
    /// Unless the user chose a core with OPENBLAS_CORETYPE, re-run OpenBLAS's core selection with the
    /// best core the CPU flags support. Uses OpenBLAS's exported gotoblas_dynamic_quit/init (looked up
    /// at run time, so non-DYNAMIC_ARCH builds are simply left alone).
    static func upgradeCoreIfDetectionFellBack() {
        #if os(Linux) && arch(x86_64)
        if getenv("OPENBLAS_CORETYPE") != nil { return }
        let detected = currentCoreName()
        let generic: Set<String> = ["Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Katmai", "Coppermine",
                                    "Northwood", "Banias", "Atom", "Unknown", ""]
        guard generic.contains(detected) else { return }
        let flags = CPUFlags.current
        let target: String
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(flags.contains) {
            target = "SkylakeX"
        } else if ["avx2", "fma"].allSatisfy(flags.contains) {
            target = "Haswell"
        } else {
            return
        }
        guard let quitSym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "gotoblas_dynamic_quit"),
              let initSym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "gotoblas_dynamic_init") else { return }
        typealias VoidFn = @convention(c) () -> Void
        setenv("OPENBLAS_CORETYPE", target, 1)
        unsafeBitCast(quitSym, to: VoidFn.self)()
        unsafeBitCast(initSym, to: VoidFn.self)()
        unsetenv("OPENBLAS_CORETYPE")
        coreUpgrade = "\(detected) -> \(currentCoreName())"
        #endif
    }
}

/// How a product is cut into independent blocks: a function of the shape only.
struct GemmSplit: Equatable {
    var alongN: Bool
    var block: Int
    var count: Int

    /// Blocks of at least ~4 M multiply-adds (≈80 µs on one core; smaller blocks measured slower), at most 32 of them. Columns are cut
    /// when there are at least 256 of them, else rows when there are at least 32; block sizes are
    /// multiples of 16.
    init(m: Int, n: Int, k: Int) {
        let want = min(32, max(1, (m * n * max(k, 1)) >> 22))
        if want > 1 && n >= 256 {
            self.init(alongN: true, extent: n, want: want)
        } else if want > 1 && m >= 32 {
            self.init(alongN: false, extent: m, want: want)
        } else {
            self.init(alongN: true, extent: n, want: 1)
        }
    }

    /// Columns only (for im2col convolutions, whose unfolded input is built per column block):
    /// blocks of at least 2^`minWorkLog2` multiply-adds, at most 32. sgemm wants ~4 M per call
    /// (22); the AVX-512 pointwise kernel, whose results do not depend on the cut, runs ~1 M
    /// blocks (20) as fast, and more blocks balance two threads better and keep each unfolded
    /// block in L2 (a 3-channel 3×3 stem at 112×112 was 2 blocks of 677 KB).
    init(columnsOf n: Int, m: Int, k: Int, minWorkLog2: Int = 22) {
        let want = min(32, max(1, (m * n * max(k, 1)) >> minWorkLog2))
        self.init(alongN: true, extent: n, want: want)
    }

    private init(alongN: Bool, extent: Int, want: Int) {
        self.alongN = alongN
        let blocks = max(1, min(want, extent / (alongN ? 64 : 16)))
        block = max(1, ((extent + blocks - 1) / blocks + 15) / 16 * 16)
        count = (extent + block - 1) / block
    }
}

extension Kernels {
    /// Runs the one-time OpenBLAS setup now (single-threaded BLAS; on CPUs OpenBLAS 0.3.21 does not
    /// know, replacing its SSE3 fallback kernels, which briefly sets OPENBLAS_CORETYPE in the process
    /// environment). It otherwise happens on the first kernel call; call this early in `main`, before
    /// other threads start, so the environment change cannot race with another thread's getenv.
    public static func setUp() { _ = BLASSetup.once }

    /// Name of the OpenBLAS kernel set in use (after the one-time setup), for benchmark reports.
    public static var blasCoreName: String { _ = BLASSetup.once; return BLASSetup.coreName }
    /// "<detected> -> <used>" when the setup replaced a fallback core OpenBLAS picked, else nil.
    public static var blasCoreUpgrade: String? { _ = BLASSetup.once; return BLASSetup.coreUpgrade }

    /// Makes sure OpenBLAS is set up and single-threaded before a call.
    @inline(__always)
    static func prepareBLAS() {
        _ = BLASSetup.once
        if openblas_get_num_threads() != 1 { openblas_set_num_threads(1) }
    }

    /// Row-major single-threaded sgemm (caller has run `prepareBLAS`).
    @inline(__always)
    static func sgemmRaw(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                         a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                         beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 || alpha == 0 {
            // BLAS semantics: C = beta * C (beta == 0 clears, even NaNs).
            for i in 0..<m {
                let row = c + i * ldc
                if beta == 0 { for j in 0..<n { row[j] = 0 } } else if beta != 1 { for j in 0..<n { row[j] *= beta } }
            }
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }

    /// sgemm cut by `GemmSplit` into blocks spread over `threads` workers.
    static func gemmImpl(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                         a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                         beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int) {
        prepareBLAS()
        if m == 1 && k > 0 && alpha != 0 {
            // A single row (a batch-1 fully connected layer): sgemv reads B once. sgemm would first
            // pack all of B (5 MB for EfficientNet's classifier) on every call. Column blocks of
            // 256, fixed by the shape, let two threads share it.
            let block = 256, blocks = (n + block - 1) / block
            let incA = transA ? lda : 1
            parallelTasks(blocks, threads: threads) { t in
                let lo = t * block, w = min(block, n - lo)
                if transB {
                    // C[lo..<lo+w] = alpha · B[lo..<lo+w, :] · a + beta · C
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, blasint(w), blasint(k), alpha, b + lo * ldb, blasint(ldb),
                                a, blasint(incA), beta, c + lo, 1)
                } else {
                    // C[lo..<lo+w] = alpha · B[:, lo..<lo+w]ᵀ · a + beta · C
                    cblas_sgemv(CblasRowMajor, CblasTrans, blasint(k), blasint(w), alpha, b + lo, blasint(ldb),
                                a, blasint(incA), beta, c + lo, 1)
                }
            }
            return
        }
        let split = GemmSplit(m: m, n: n, k: k)
        parallelTasks(split.count, threads: threads) { t in
            let lo = t * split.block
            if split.alongN {
                let w = min(split.block, n - lo)
                sgemmRaw(transA: transA, transB: transB, m: m, n: w, k: k, alpha: alpha, a: a, lda: lda,
                         b: transB ? b + lo * ldb : b + lo, ldb: ldb, beta: beta, c: c + lo, ldc: ldc)
            } else {
                let h = min(split.block, m - lo)
                sgemmRaw(transA: transA, transB: transB, m: h, n: n, k: k, alpha: alpha,
                         a: transA ? a + lo : a + lo * lda, lda: lda, b: b, ldb: ldb,
                         beta: beta, c: c + lo * ldc, ldc: ldc)
            }
        }
    }
}
