import Testing

@testable import PushlineCore

/// A large job's rows get fresh planner statistics when they are appended (issue 14): before,
/// PostgreSQL estimated a new job at about one row until autovacuum's next ANALYZE and looked
/// its completions up by scanning every row of the job (240-790 ms a statement at 300,000 rows;
/// the 3-daemon fleet at half its rate in those runs). Runs when a PostgreSQL test cluster is set.
@Suite struct PostgresOutboxStatisticsTests {
    static var backends: [TestBackend] { TestBackend.all.filter { $0 == .postgres } }

    static func job(_ id: String, _ now: Int64, devices: Int) -> OutboxJobSpec {
        OutboxJobSpec(
            id: id, app: "default", messages: [["ids": [1], "message": "hi"]], indexed: false, sendAt: now,
            deadline: now + 86_400_000, idempotencyKey: nil, estimate: devices, createdAt: now)
    }

    /// Appends `count` rows to a started job, in chunks of 5,000 as the resolver does.
    static func fill(_ o: PostgresOutbox, _ id: String, count: Int, now: Int64) async throws {
        #expect(try await o.startable(now: now, limit: 10).map(\.id).contains(id))
        var done = 0
        while done < count {
            let k = min(5000, count - done)
            let rows = (0..<k).map { i in OutboxNewDelivery(message: nil, deviceId: Int64(done + i + 1), raw: nil, rejected: nil) }
            done += k
            #expect(try await o.appendDeliveries(job: id, rows, cursor: done < count ? "c\(done)" : nil, now: now))
            if done < count { #expect(try await o.startable(now: now, limit: 10).map(\.id).contains(id)) }
        }
    }

    @Test(arguments: backends) func aNewLargeJobsRowsAreInThePlannersStatistics(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = try #require(fixture.reg as? PostgresRegistry)
        let o = PostgresOutbox(registry: reg, instance: "host-a")
        let now = nowMillis()
        // An older job the last ANALYZE saw (all the table's rows were its own).
        _ = try await o.accept(Self.job("old", now, devices: 20_000), maxQueued: 10_000_000, idempotencyWindowMs: 1)
        try await Self.fill(o, "old", count: 20_000, now: now)
        try await reg.run(write: true) { s in _ = try s.c.query("ANALYZE outbox_deliveries") }
        // A new large job.
        _ = try await o.accept(Self.job("new", now, devices: 20_000), maxQueued: 10_000_000, idempotencyWindowMs: 1)
        try await Self.fill(o, "new", count: 20_000, now: now)
        // The planner's estimate of the new job's rows (its completions are planned from it;
        // with about 1 it scanned the job's whole range, see `PostgresOutbox.analyzeAt`).
        let estimate = try await reg.run(write: false) { s -> Int in
            // With the job's number as a value, as the daemon's statements are planned (custom plans).
            let seq = try s.c.query("SELECT seq FROM outbox_jobs WHERE id = 'new'").int(0, 0)
            let line = try s.c.query("EXPLAIN SELECT 1 FROM outbox_deliveries WHERE job = \(seq)").text(0, 0) ?? ""
            guard let r = line.range(of: "rows=") else { return -1 }
            return Int(line[r.upperBound...].prefix(while: \.isNumber)) ?? -1
        }
        #expect(estimate >= 5_000, "the planner estimates the new job of 20,000 rows at \(estimate)")
    }
}
