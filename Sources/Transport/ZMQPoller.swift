import CZeroMQ

/// `zmq_poll` over a fixed set of sockets, all owned by the calling thread.
public struct ZMQPoller {
    public struct Events: OptionSet, Sendable {
        public let rawValue: Int16
        public init(rawValue: Int16) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: Int16(ZMQ_POLLIN))
        public static let writable = Events(rawValue: Int16(ZMQ_POLLOUT))
    }

    private var sockets: [ZMQSocket] = []
    private var interest: [Events] = []

    public init() {}

    /// Adds a socket; returns its index in the result of `poll`.
    @discardableResult
    public mutating func add(_ socket: ZMQSocket, events: Events = .readable) -> Int {
        sockets.append(socket)
        interest.append(events)
        return sockets.count - 1
    }

    /// Waits up to `timeoutMs` (-1 = forever, 0 = just check) and returns the ready events of each
    /// socket in the order added. EINTR is reported as "nothing ready", not as an error.
    public func poll(timeoutMs: Int) throws -> [Events] {
        var items = zip(sockets, interest).map { socket, events in
            zmq_pollitem_t(socket: socket.raw, fd: 0, events: events.rawValue, revents: 0)
        }
        let rc = items.withUnsafeMutableBufferPointer { buf in
            zmq_poll(buf.baseAddress, Int32(buf.count), timeoutMs)
        }
        if rc < 0 {
            let e = zmq_errno()
            if e == EINTR { return Array(repeating: [], count: items.count) }
            throw ZMQError(operation: "zmq_poll", errno: e)
        }
        return items.map { Events(rawValue: $0.revents) }
    }
}
