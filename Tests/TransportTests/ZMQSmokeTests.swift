import Foundation
import Testing
@testable import Transport

@Suite("libzmq wrapper smoke tests")
struct ZMQSmokeTests {
    @Test("linked libzmq reports version 4.x or newer")
    func version() {
        let v = ZMQ.version
        print("libzmq \(ZMQ.versionString)")
        #expect(v.major >= 4)
        #expect(ZMQ.versionString == "\(v.major).\(v.minor).\(v.patch)")
    }

    /// DEALER sends [a, b, empty, c]; the ROUTER sees [routing-id, a, b, empty, c] with the routing id
    /// we set; it replies to that id and the DEALER gets exactly the reply frames back.
    private func roundTrip(bindTo endpoint: String) throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let router = try ZMQSocket(ctx, type: .router)
        try router.setLinger(0)
        try router.setReceiveTimeout(5000)
        try router.bind(endpoint)
        let resolved = try router.lastEndpoint
        let dealer = try ZMQSocket(ctx, type: .dealer)
        try dealer.setLinger(0)
        try dealer.setReceiveTimeout(5000)
        try dealer.setRoutingID(Array("worker-7".utf8))
        try dealer.connect(resolved)

        let big = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let sent: [[UInt8]] = [Array("SHC1".utf8), big, [], [0, 255, 1]]
        #expect(try dealer.send(sent))
        let got = try #require(try router.receive())
        #expect(got.count == 5)
        #expect(got[0] == Array("worker-7".utf8))
        #expect(Array(got.dropFirst()) == sent)

        #expect(try router.send([got[0], Array("reply".utf8), [42]]))
        let reply = try #require(try dealer.receive())
        #expect(reply == [Array("reply".utf8), [42]])

        // Nothing more queued: a non-blocking receive says "nothing" rather than throwing.
        #expect(try dealer.receive(dontWait: true) == nil)
        router.close()
        dealer.close()
    }

    @Test("ROUTER/DEALER multipart round trip over inproc://")
    func inprocRoundTrip() throws {
        try roundTrip(bindTo: "inproc://smoke-\(UUID().uuidString)")
    }

    @Test("ROUTER/DEALER multipart round trip over tcp loopback with an OS-chosen port")
    func tcpRoundTrip() throws {
        try roundTrip(bindTo: "tcp://127.0.0.1:*")
    }

    @Test("errors keep errno and libzmq's text")
    func errorsCarryErrno() throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let s = try ZMQSocket(ctx, type: .dealer)
        try s.setLinger(0)
        do {
            try s.bind("nonsense://x")
            Issue.record("bind to an unknown transport must fail")
        } catch let e as ZMQError {
            #expect(e.errno == EPROTONOSUPPORT)
            #expect(e.message == String(cString: strerror(EPROTONOSUPPORT)))
            #expect(e.description.contains("nonsense://x"))
        }
        s.close()
    }

    @Test("poller reports readable only once a message is queued; receive timeout yields nil")
    func pollerAndTimeout() throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let a = try ZMQSocket(ctx, type: .pair)
        let b = try ZMQSocket(ctx, type: .pair)
        try a.setLinger(0); try b.setLinger(0)
        try a.bind("inproc://poll-test")
        try b.connect("inproc://poll-test")
        var poller = ZMQPoller()
        poller.add(a)
        #expect(try poller.poll(timeoutMs: 0) == [[]])
        try b.setReceiveTimeout(50)
        let start = Date()
        #expect(try b.receive() == nil)
        #expect(Date().timeIntervalSince(start) < 4)
        try b.send([[1, 2, 3]])
        let ready = try poller.poll(timeoutMs: 2000)
        #expect(ready[0].contains(.readable))
        #expect(try a.receive() == [[1, 2, 3]])
        a.close(); b.close()
    }
}
