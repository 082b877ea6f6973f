import CZeroMQ

/// A failed libzmq call. The errno is kept so callers can branch on it; `message` is libzmq's
/// own `zmq_strerror` text. Would-block (EAGAIN) is never reported through this type: the
/// non-blocking calls return `false`/`nil` instead.
public struct ZMQError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The libzmq call that failed, e.g. "zmq_bind(tcp://127.0.0.1:0)".
    public let operation: String
    /// The errno value reported by `zmq_errno()`.
    public let errno: Int32
    /// `zmq_strerror(errno)`.
    public let message: String

    public init(operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
        if let text = zmq_strerror(errno) {
            self.message = String(cString: text)
        } else {
            self.message = "errno \(errno)"
        }
    }

    /// Builds an error from the current thread's `zmq_errno()`.
    static func last(_ operation: String) -> ZMQError {
        ZMQError(operation: operation, errno: zmq_errno())
    }

    public var description: String { "\(operation) failed: \(message) (errno \(errno))" }

    /// True when the context was terminated (ETERM): the owning loop should close its socket and exit.
    public var isContextTerminated: Bool { errno == ETERM }
}
