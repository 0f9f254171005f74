import Testing

@testable import PushlineCore

/// PostgresOutbox leases across daemons (issue 14): a live daemon's heartbeat keeps every row it
/// holds however long its lease is overdue; once it stops beating (killed) another daemon takes
/// the rows over, and the dead one's late results are fenced out. Real clock, 6 s leases; runs
/// when a PostgreSQL test cluster is set (`make test`).
@Suite struct PostgresOutboxLeaseTests {
    static var backends: [TestBackend] { TestBackend.all.filter { $0 == .postgres } }

    @Test(arguments: backends) func aliveOwnerKeepsItsRowsDeadOwnersAreTakenOver(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = try #require(fixture.reg as? PostgresRegistry)
        let (a, b) = (PostgresOutbox(registry: reg, instance: "host-a"), PostgresOutbox(registry: reg, instance: "host-b"))
        let now = nowMillis()
        _ = try await a.accept(
            OutboxJobSpec(
                id: "j1", app: "default", messages: [["ids": [1, 2, 3], "message": "hi"]], indexed: false, sendAt: now,
                deadline: now + 86_400_000, idempotencyKey: nil, estimate: 3, createdAt: now),
            maxQueued: 100, idempotencyWindowMs: 1)
        #expect(try await a.startable(now: now, limit: 10).map(\.id) == ["j1"])
        let rows = (1...3).map { OutboxNewDelivery(message: nil, deviceId: Int64($0), raw: nil, rejected: nil) }
        #expect(try await a.appendDeliveries(job: "j1", rows, cursor: nil, now: now))

        // Beats every 2 s: only a stall of more than 4 s could lose the rows (with 2 s leases a
        // 1.3 s stall did, once, at load 11-14).
        let lease: Int64 = 6000
        let held = try await a.claim(owner: "w", now: nowMillis(), leaseMs: lease, perJob: 10, maxJobs: 10, maxRows: 10)
        #expect(held.first?.deliveries.count == 3)
        a.start()  // beats every lease / 3
        // Well past the rows' own lease: still A's while A beats.
        try await Task.sleep(for: .milliseconds(lease + 1500))
        #expect(try await b.claim(owner: "w", now: nowMillis(), leaseMs: lease, perJob: 10, maxJobs: 10, maxRows: 10).isEmpty)
        // A dies (no more beats): B takes the rows over once A's alive_until has passed (at most
        // a lease after A's last beat; B looks every 250 ms for up to 5 leases).
        a.stop()
        let stopped = nowMillis()
        var taken: [OutboxClaim] = []
        while taken.isEmpty && nowMillis() - stopped < 5 * lease {
            try await Task.sleep(for: .milliseconds(250))
            taken = try await b.claim(owner: "w", now: nowMillis(), leaseMs: lease, perJob: 10, maxJobs: 10, maxRows: 10)
        }
        // Not before A's last alive_until: at least lease - lease / 3 after it stopped beating.
        #expect(nowMillis() - stopped >= lease * 2 / 3 - 250)
        let d = try #require(taken.first?.deliveries)
        #expect(d.count == 3 && d.allSatisfy { x in held[0].deliveries.contains { $0.n == x.n && $0.fence + 1 == x.fence } })
        // A's results arrive late: fenced out; B's apply.
        let late = held[0].deliveries.map { OutboxOutcome(n: $0.n, fence: $0.fence, kind: .sent, result: ["status": "sent"]) }
        #expect(try await a.complete(job: "j1", late, now: nowMillis()) == 0)
        let mine = d.map { OutboxOutcome(n: $0.n, fence: $0.fence, kind: .sent, result: ["status": "sent"]) }
        #expect(try await b.complete(job: "j1", mine, now: nowMillis()) == 3)
        #expect(try await b.job("j1")?.stored == .done)
    }
}
