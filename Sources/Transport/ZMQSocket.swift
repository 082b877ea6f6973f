import CZeroMQ
import Foundation

/// Socket types used by shardcal (values are libzmq's).
public enum ZMQSocketType: Int32, Sendable {
    case pair = 0, pub = 1, sub = 2, req = 3, rep = 4, dealer = 5, router = 6, pull = 7, push = 8
}

/// A received zmq_msg_t handed to a `Data` deallocator (which may run on any thread: closing a
/// message is not tied to its socket's thread).
private struct OwnedMessage: @unchecked Sendable {
    let msg: UnsafeMutablePointer<zmq_msg_t>
    init(_ msg: UnsafeMutablePointer<zmq_msg_t>) { self.msg = msg }
    func release() {
        zmq_msg_close(msg)
        msg.deallocate()
    }
}

/// A libzmq socket. NOT thread-safe (libzmq's rule): create it, use it and close it on one thread.
/// It is deliberately not `Sendable`, so Swift's checker keeps it on its owning thread.
public final class ZMQSocket {
    private var handle: UnsafeMutableRawPointer?
    public let type: ZMQSocketType
    /// Keeps the context alive as long as the socket.
    public let context: ZMQContext

    public init(_ context: ZMQContext, type: ZMQSocketType) throws {
        guard let h = zmq_socket(context.handle, type.rawValue) else {
            throw ZMQError.last("zmq_socket(\(type))")
        }
        self.handle = h
        self.type = type
        self.context = context
    }

    deinit { close() }

    /// Closes the socket (idempotent). Pending outgoing messages are kept for `linger` ms.
    public func close() {
        if let h = handle {
            zmq_close(h)
            handle = nil
        }
    }

    var raw: UnsafeMutableRawPointer {
        guard let h = handle else { preconditionFailure("ZMQSocket used after close()") }
        return h
    }

    // MARK: endpoints

    public func bind(_ endpoint: String) throws {
        if zmq_bind(raw, endpoint) != 0 { throw ZMQError.last("zmq_bind(\(endpoint))") }
    }

    public func connect(_ endpoint: String) throws {
        if zmq_connect(raw, endpoint) != 0 { throw ZMQError.last("zmq_connect(\(endpoint))") }
    }

    public func disconnect(_ endpoint: String) throws {
        if zmq_disconnect(raw, endpoint) != 0 { throw ZMQError.last("zmq_disconnect(\(endpoint))") }
    }

    /// The endpoint actually bound last (resolves `tcp://127.0.0.1:*` to the OS-chosen port).
    public var lastEndpoint: String {
        get throws {
            var buffer = [CChar](repeating: 0, count: 1024)
            var size = buffer.count
            if zmq_getsockopt(raw, ZMQ_LAST_ENDPOINT, &buffer, &size) != 0 {
                throw ZMQError.last("zmq_getsockopt(ZMQ_LAST_ENDPOINT)")
            }
            let bytes = buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    // MARK: options

    public func setOption(_ option: Int32, _ value: Int32, name: String = "") throws {
        var v = value
        if zmq_setsockopt(raw, option, &v, MemoryLayout<Int32>.size) != 0 {
            throw ZMQError.last("zmq_setsockopt(\(name.isEmpty ? String(option) : name)=\(value))")
        }
    }

    public func setOption(_ option: Int32, _ value: Int64, name: String = "") throws {
        var v = value
        if zmq_setsockopt(raw, option, &v, MemoryLayout<Int64>.size) != 0 {
            throw ZMQError.last("zmq_setsockopt(\(name.isEmpty ? String(option) : name)=\(value))")
        }
    }

    public func setOption(_ option: Int32, bytes: [UInt8], name: String = "") throws {
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(raw, option, $0.baseAddress, $0.count) }
        if rc != 0 { throw ZMQError.last("zmq_setsockopt(\(name.isEmpty ? String(option) : name))") }
    }

    public func getInt32Option(_ option: Int32) throws -> Int32 {
        var v: Int32 = 0
        var size = MemoryLayout<Int32>.size
        if zmq_getsockopt(raw, option, &v, &size) != 0 { throw ZMQError.last("zmq_getsockopt(\(option))") }
        return v
    }

    /// Milliseconds pending messages are kept after close (0 = drop at once, -1 = forever).
    public func setLinger(_ ms: Int) throws { try setOption(ZMQ_LINGER, Int32(ms), name: "ZMQ_LINGER") }
    /// Identity this socket presents to a ROUTER peer (1...255 bytes).
    public func setRoutingID(_ id: [UInt8]) throws { try setOption(ZMQ_ROUTING_ID, bytes: id, name: "ZMQ_ROUTING_ID") }
    /// ZMTP-level heartbeats: ping every `interval` ms, drop the connection after `timeout` ms of
    /// silence; `ttl` tells the peer how long to wait for us.
    public func setHeartbeat(intervalMs: Int, timeoutMs: Int, ttlMs: Int? = nil) throws {
        try setOption(ZMQ_HEARTBEAT_IVL, Int32(intervalMs), name: "ZMQ_HEARTBEAT_IVL")
        try setOption(ZMQ_HEARTBEAT_TIMEOUT, Int32(timeoutMs), name: "ZMQ_HEARTBEAT_TIMEOUT")
        if let ttl = ttlMs { try setOption(ZMQ_HEARTBEAT_TTL, Int32(ttl), name: "ZMQ_HEARTBEAT_TTL") }
    }
    /// Largest single inbound frame accepted; a peer sending more is disconnected by libzmq.
    public func setMaxMessageSize(_ bytes: Int64) throws { try setOption(ZMQ_MAXMSGSIZE, bytes, name: "ZMQ_MAXMSGSIZE") }
    /// Receive timeout in ms for blocking receives (-1 = forever); expiry returns nil, not an error.
    public func setReceiveTimeout(_ ms: Int) throws { try setOption(ZMQ_RCVTIMEO, Int32(ms), name: "ZMQ_RCVTIMEO") }
    /// Send timeout in ms for blocking sends (-1 = forever).
    public func setSendTimeout(_ ms: Int) throws { try setOption(ZMQ_SNDTIMEO, Int32(ms), name: "ZMQ_SNDTIMEO") }
    public func setSendHighWaterMark(_ n: Int) throws { try setOption(ZMQ_SNDHWM, Int32(n), name: "ZMQ_SNDHWM") }
    public func setReceiveHighWaterMark(_ n: Int) throws { try setOption(ZMQ_RCVHWM, Int32(n), name: "ZMQ_RCVHWM") }
    /// ROUTER: fail with EHOSTUNREACH instead of silently dropping messages to unknown peers.
    public func setRouterMandatory(_ on: Bool) throws { try setOption(ZMQ_ROUTER_MANDATORY, Int32(on ? 1 : 0), name: "ZMQ_ROUTER_MANDATORY") }
    /// ROUTER: a new connection with a routing id already in use takes it over (a reconnecting peer
    /// is not locked out while its old connection is still being torn down).
    public func setRouterHandover(_ on: Bool) throws { try setOption(ZMQ_ROUTER_HANDOVER, Int32(on ? 1 : 0), name: "ZMQ_ROUTER_HANDOVER") }
    /// Reconnect backoff for connecting sockets: first retry after `initialMs`, doubling up to `maxMs`.
    public func setReconnect(initialMs: Int, maxMs: Int) throws {
        try setOption(ZMQ_RECONNECT_IVL, Int32(initialMs), name: "ZMQ_RECONNECT_IVL")
        try setOption(ZMQ_RECONNECT_IVL_MAX, Int32(maxMs), name: "ZMQ_RECONNECT_IVL_MAX")
    }
    /// SUB: receive messages whose first frame starts with `prefix` (empty = everything).
    public func subscribe(_ prefix: [UInt8]) throws { try setOption(ZMQ_SUBSCRIBE, bytes: prefix, name: "ZMQ_SUBSCRIBE") }
    public func subscribe(_ prefix: String) throws { try subscribe(Array(prefix.utf8)) }

    // MARK: send / receive

    /// Sends all frames as one multipart message. Returns false if it would block (only when
    /// `dontWait` is set or a send timeout expires); throws for real errors (e.g. EHOSTUNREACH).
    @discardableResult
    public func send(_ frames: [[UInt8]], dontWait: Bool = false) throws -> Bool {
        precondition(!frames.isEmpty, "a ZeroMQ message has at least one frame")
        return try sendCopied(frames, moreAfterLast: false, dontWait: dontWait)
    }

    /// Sends `frames` with `zmq_send` (which copies), the last one flagged SNDMORE only if
    /// `moreAfterLast`. Returns false if the first frame would block; later frames of a started
    /// message always queue.
    private func sendCopied(_ frames: [[UInt8]], moreAfterLast: Bool, dontWait: Bool) throws -> Bool {
        for (i, frame) in frames.enumerated() {
            var flags: Int32 = dontWait ? ZMQ_DONTWAIT : 0
            if moreAfterLast || i < frames.count - 1 { flags |= ZMQ_SNDMORE }
            let rc = frame.withUnsafeBytes { buf -> Int32 in
                // An empty frame still needs a non-null pointer on some builds.
                var dummy: UInt8 = 0
                if buf.count == 0 { return zmq_send(raw, &dummy, 0, flags) }
                return zmq_send(raw, buf.baseAddress, buf.count, flags)
            }
            if rc < 0 {
                let e = zmq_errno()
                if e == EAGAIN && i == 0 { return false }
                throw ZMQError(operation: "zmq_send", errno: e)
            }
        }
        return true
    }

    /// Sends `frames` followed by one last frame that libzmq reads in place instead of copying.
    /// `borrowed` must stay valid and unchanged until libzmq has sent it, i.e. for as long as the
    /// socket's context lives (for a buffer that outlives the context, e.g. a benchmark payload).
    @discardableResult
    public func send(_ frames: [[UInt8]], borrowing borrowed: UnsafeRawBufferPointer, dontWait: Bool = false) throws -> Bool {
        precondition(borrowed.count > 0, "a borrowed frame must not be empty")
        if !(try sendCopied(frames, moreAfterLast: true, dontWait: dontWait)) { return false }
        var msg = zmq_msg_t()
        // No free function: the caller owns the buffer.
        zmq_msg_init_data(&msg, UnsafeMutableRawPointer(mutating: borrowed.baseAddress!), borrowed.count, nil, nil)
        let rc = zmq_msg_send(&msg, raw, dontWait && frames.isEmpty ? ZMQ_DONTWAIT : 0)
        if rc < 0 {
            let e = zmq_errno()
            zmq_msg_close(&msg)
            if e == EAGAIN && frames.isEmpty { return false }
            throw ZMQError(operation: "zmq_msg_send", errno: e)
        }
        return true
    }

    /// Receives one whole multipart message, like `receive`, but frames of at least `largeFrameBytes`
    /// are not copied: they come back in `large` (by frame index) as `Data` that holds libzmq's own
    /// buffer until released, and their slot in `frames` is left empty. A coordinator receives
    /// ~1 MB of histogram counts per result; copying them out cost as much as merging them.
    public func receive(dontWait: Bool = false, largeFrameBytes: Int) throws -> (frames: [[UInt8]], large: [Int: Data])? {
        var frames: [[UInt8]] = []
        var large: [Int: Data] = [:]
        while true {
            let msg = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
            zmq_msg_init(msg)
            var kept = false
            defer {
                if !kept {
                    zmq_msg_close(msg)
                    msg.deallocate()
                }
            }
            let flags: Int32 = (dontWait && frames.isEmpty) ? ZMQ_DONTWAIT : 0
            let rc = zmq_msg_recv(msg, raw, flags)
            if rc < 0 {
                let e = zmq_errno()
                if e == EINTR { continue }
                if e == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError(operation: "zmq_msg_recv", errno: e)
            }
            let size = zmq_msg_size(msg)
            let more = zmq_msg_more(msg) != 0
            if size >= largeFrameBytes, size > 0, let data = zmq_msg_data(msg) {
                kept = true
                let owned = OwnedMessage(msg)
                large[frames.count] = Data(bytesNoCopy: data, count: size, deallocator: .custom { _, _ in owned.release() })
                frames.append([])
            } else if size > 0, let data = zmq_msg_data(msg) {
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            } else {
                frames.append([])
            }
            if !more { return (frames, large) }
        }
    }

    /// Receives one whole multipart message. Returns nil when nothing is available (`dontWait`) or
    /// the receive timeout expires. EINTR is retried.
    public func receive(dontWait: Bool = false) throws -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        while true {
            var msg = zmq_msg_t()
            zmq_msg_init(&msg)
            defer { zmq_msg_close(&msg) }
            // Later frames of a multipart message are already here (atomic delivery): never wait on them.
            let flags: Int32 = (dontWait && frames.isEmpty) ? ZMQ_DONTWAIT : 0
            let rc = zmq_msg_recv(&msg, raw, flags)
            if rc < 0 {
                let e = zmq_errno()
                if e == EINTR { continue }
                if e == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError(operation: "zmq_msg_recv", errno: e)
            }
            let size = zmq_msg_size(&msg)
            if size > 0, let data = zmq_msg_data(&msg) {
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            } else {
                frames.append([])
            }
            if zmq_msg_more(&msg) == 0 { return frames }
        }
    }
}
