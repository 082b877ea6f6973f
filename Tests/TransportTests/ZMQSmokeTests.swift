import Foundation
import Testing
import Calibration
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

@Suite("receiving large frames without a copy")
struct ZMQLargeFrameTests {
    /// A RESULT with a payload above the threshold arrives with that frame in `large` (its slot in
    /// `frames` empty), still intact after the socket and the context are gone, and decodes to the
    /// result that was sent; small frames are plain arrays as before.
    @Test("large frames stay in libzmq's buffer and decode to the sent RESULT", arguments: ["inproc", "tcp"])
    func largeResultFrame(transport: String) throws {
        var tensors: [NamedHistogram] = []
        for t in 0..<8 {
            var h = Histogram()
            h.accumulate((0..<50_000).map { Float(($0 * 7919 + t * 104_729) % 65_536) * 0.001 - 20 })
            tensors.append(NamedHistogram(name: "layer\(t)/out", histogram: h))
        }
        let sent = ShardResult(shard: 12, sampleCount: 5, computeSeconds: 0.5, tensors: tensors)
        let frames = WireCodec.encode(.result(sent))
        #expect(frames[3].count > 16_000)

        let ctx = try ZMQContext()
        let router = try ZMQSocket(ctx, type: .router)
        try router.setLinger(0)
        try router.setReceiveTimeout(5000)
        try router.bind(transport == "tcp" ? "tcp://127.0.0.1:*" : "inproc://large-\(UUID().uuidString)")
        let dealer = try ZMQSocket(ctx, type: .dealer)
        try dealer.setLinger(0)
        try dealer.setRoutingID(Array("w1".utf8))
        try dealer.connect(try router.lastEndpoint)
        #expect(try dealer.send(frames))
        let received = try #require(try router.receive(largeFrameBytes: 16_000))
        router.close()
        dealer.close()
        ctx.terminate()

        #expect(received.frames.count == 5)
        #expect(received.frames[0] == Array("w1".utf8))
        #expect(received.frames[4].isEmpty)
        #expect(Array(received.large.keys) == [4])
        #expect(Array(received.large[4]!) == frames[3])
        var large: [Int: Data] = [:]
        for (i, d) in received.large { large[i - 1] = d }
        let message = try WireCodec.decode(Array(received.frames.dropFirst()), large: large)
        guard case .result(let r) = message else { Issue.record("not a RESULT: \(message.typeName)"); return }
        #expect(r.encoded != nil)
        #expect(r == sent)
        #expect(r.tensors == tensors)
    }

    /// A large frame in a message that is not a RESULT is copied back in and decoded as usual.
    @Test("a large frame of another message type is decoded like a copied one")
    func largeJobFrame() throws {
        let job = Job(jobID: "j", toolVersion: "t", modelDigest: "m", configDigest: "c", heartbeatIntervalMs: 100,
                      livenessTimeoutMs: 1000, config: Array("a: 1\n".utf8), model: (0..<70_000).map { UInt8($0 % 251) })
        var frames = WireCodec.encode(.job(job))
        let model = Data(frames[4])
        frames[4] = []
        #expect(try WireCodec.decode(frames, large: [4: model]) == .job(job))
    }
}
