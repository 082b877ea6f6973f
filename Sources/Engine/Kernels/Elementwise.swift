// Elementwise kernels the executor may use for activations.

extension Kernels {
    /// y[i] = min(max(x[i], lo), hi) with NaN passed through (as `x < lo ? lo : (x > hi ? hi : x)`,
    /// ONNX Runtime's behaviour). In place (input == output) is allowed. Relu is clip(0, +inf).
    public static func clip(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, count: Int,
                            min lo: Float, max hi: Float, threads: Int = 1) {
        // Chunks of 64 Ki values: parallel only when there is enough work to pay for it.
        let chunk = 1 << 16
        let chunks = (count + chunk - 1) / chunk
        parallelTasks(chunks, threads: count >= 1 << 17 ? threads : 1) { c in
            let start = c * chunk
            clipRange(input + start, output + start, min(chunk, count - start), lo, hi)
        }
    }

    @inline(__always)
    static func clipRange(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ lo: Float, _ hi: Float) {
        typealias V = SIMD8<Float>
        let vlo = V(repeating: lo), vhi = V(repeating: hi)
        var i = 0
        while i &+ 8 <= n {
            var v = UnsafeRawPointer(x + i).loadUnaligned(as: V.self)
            v.replace(with: vlo, where: v .< vlo)
            v.replace(with: vhi, where: v .> vhi)
            UnsafeMutableRawPointer(y + i).storeBytes(of: v, as: V.self)
            i &+= 8
        }
        while i < n {
            let v = x[i]
            y[i] = v < lo ? lo : (v > hi ? hi : v)
            i &+= 1
        }
    }
}

extension Kernels.Reference {
    /// Scalar clip: the oracle for `Kernels.clip`.
    public static func clip(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, count: Int, min lo: Float, max hi: Float) {
        for i in 0..<count {
            let v = input[i]
            output[i] = v < lo ? lo : (v > hi ? hi : v)
        }
    }
}
