import Foundation
import Testing

@testable import PushlineCore

/// `HTTPRequest.connectionPool` and `HTTPTransport.retireConnectionPool` against a real HTTP/2
/// TLS server (Tests/fakes/h2sink.py numbers its connections): what APNs token changes rely on.
@Suite("HTTPTransport connection pools", .serialized)
struct TransportPoolTests {
    /// The sink's number for the connection that carried a request of `pool`.
    func connection(_ t: HTTPTransport, _ sink: H2SinkProcess, pool: UInt32, query: String = "") async throws -> Int {
        let r = try await t.perform(
            HTTPRequest(method: "GET", url: sink.base + "/echo/p\(pool)" + query, tls: sink.tls, connectionPool: pool)
        ).get()
        return Int(try #require(JSONValue.parse(r.body)["conn"]?.intValue))
    }

    /// The numbers of the sink's open connections and its stream count (asked on pool 0).
    func sinkState(_ t: HTTPTransport, _ sink: H2SinkProcess) async throws -> (open: Set<Int>, streams: Int) {
        let r = try await t.perform(HTTPRequest(method: "GET", url: sink.base + "/stats", tls: sink.tls)).get()
        let v = try JSONValue.parse(r.body)
        guard case .array(let open)? = v["open"] else { throw H2SinkProcess.StartError(description: "no open list") }
        return (Set(open.compactMap { $0.intValue.map(Int.init) }), Int(v["streams"]?.intValue ?? -1))
    }

    /// Polls `cond` every 20 ms for up to 5 s (a bound no healthy run comes near: closing takes
    /// one event-loop pass).
    func eventually(_ cond: () async throws -> Bool) async throws -> Bool {
        for _ in 0..<250 {
            if try await cond() { return true }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        return try await cond()
    }

    @Test("pools never share a connection; each pool reuses its own")
    func poolsAreSeparate() async throws {
        let sink = try H2SinkProcess()
        // One loop, one connection per host: without pools everything would share one connection.
        let t = HTTPTransport(options: TransportOptions(threads: 1, maxConnectionsPerHost: 1))
        defer { t.shutdown() }
        let a = try await connection(t, sink, pool: 1)
        #expect(try await connection(t, sink, pool: 1) == a)
        let b = try await connection(t, sink, pool: 2)
        let shared = try await connection(t, sink, pool: 0)
        #expect(b != a && shared != a && shared != b)
        #expect(try await connection(t, sink, pool: 2) == b)
        #expect(try await connection(t, sink, pool: 0) == shared)
        // Pool 1 busy (a stream held 500 ms) does not push pool 2 onto its connection, nor the reverse.
        async let slow = connection(t, sink, pool: 1, query: "?delay_ms=500")
        try await Task.sleep(nanoseconds: 50_000_000)
        #expect(try await connection(t, sink, pool: 2) == b)
        #expect(try await slow == a)
        #expect(t.stats.connectionsOpened == 3)
    }

    @Test("a retired pool's connection closes when its last transfer ends, and is never reused")
    func retiredPoolCloses() async throws {
        let sink = try H2SinkProcess()
        let t = HTTPTransport(options: TransportOptions(threads: 1, maxConnectionsPerHost: 1))
        defer { t.shutdown() }
        let old = try await connection(t, sink, pool: 1)
        let other = try await connection(t, sink, pool: 2)
        let before = try await sinkState(t, sink).streams
        // A pool-1 transfer is in flight (answered after 6 s: the retire below comes within
        // milliseconds, or seconds on a starved machine) when pool 1 is retired.
        async let slow = connection(t, sink, pool: 1, query: "?delay_ms=6000")
        #expect(try await eventually { try await sinkState(t, sink).streams > before })
        t.retireConnectionPool(1)
        t.retireConnectionPool(1)  // idempotent
        let during = try await sinkState(t, sink).open
        #expect(during.contains(old))  // not cut under its stream
        #expect(try await slow == old)
        #expect(try await eventually { try await !sinkState(t, sink).open.contains(old) })
        #expect(try await sinkState(t, sink).open.contains(other))  // other pools untouched
        // A late request of the retired pool goes out on a new connection, closed after it.
        let late = try await connection(t, sink, pool: 1)
        #expect(late != old && late != other)
        #expect(try await eventually { try await !sinkState(t, sink).open.contains(late) })
        // The surviving pool still reuses its connection.
        #expect(try await connection(t, sink, pool: 2) == other)
    }
}
