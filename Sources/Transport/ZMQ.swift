import CZeroMQ
import Foundation

/// Library-level facts about the linked libzmq.
public enum ZMQ {
    /// The libzmq version actually linked at run time.
    public static var version: (major: Int, minor: Int, patch: Int) {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return (Int(major), Int(minor), Int(patch))
    }

    /// `"major.minor.patch"`.
    public static var versionString: String {
        let v = version
        return "\(v.major).\(v.minor).\(v.patch)"
    }
}

/// A libzmq context. Contexts are thread-safe in libzmq, so this type is `Sendable`; sockets are not.
/// `terminate()` (or deinit) blocks until every socket of the context is closed: close sockets
/// first, or set a short linger so pending messages do not hold shutdown.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    private let lock = NSLock()
    private var terminated = false

    public init(ioThreads: Int = 1) throws {
        guard let h = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        handle = h
        if ioThreads != 1 {
            _ = zmq_ctx_set(h, ZMQ_IO_THREADS, Int32(ioThreads))
        }
    }

    /// Makes every blocking call on this context's sockets return ETERM, then waits for them to close.
    public func terminate() {
        let already = lock.withLock { () -> Bool in
            let was = terminated
            terminated = true
            return was
        }
        if already { return }
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }

    /// Makes blocking calls return ETERM without waiting for sockets to close (safe from any thread).
    public func shutdown() {
        _ = zmq_ctx_shutdown(handle)
    }

    deinit { terminate() }
}

