import Testing

@testable import PushlineCore

/// Claims on both backends: the worker's extra claim on a wake-up (`excluding`) takes only jobs
/// it is not already delivering (issue 13, fairness: a small job accepted during a large one).
@Suite struct OutboxClaimTests {
    func open(_ backend: TestBackend) throws -> (any Outbox, () -> Void) {
        let t = try backend.open()
        if let pg = t.reg as? PostgresRegistry { return (PostgresOutbox(registry: pg, instance: "test"), { t.remove() }) }
        guard let sq = t.reg as? SQLiteRegistry else { throw TestSetupError("unknown registry") }
        return (SQLiteOutbox(registry: sq), { t.remove() })
    }

    @Test(arguments: TestBackend.all) func claimExcludingLeavesThoseJobsOut(_ backend: TestBackend) async throws {
        let (o, close) = try open(backend)
        defer { close() }
        let now = nowMillis()
        let jobs = [("large", 50), ("small", 3), ("other", 2)]
        for (id, n) in jobs {
            let spec = OutboxJobSpec(
                id: id, app: "default", messages: [["ids": [1], "message": "hi"]], indexed: false, sendAt: now,
                deadline: now + 86_400_000, idempotencyKey: nil, estimate: n, createdAt: now)
            _ = try await o.accept(spec, maxQueued: 1_000_000, idempotencyWindowMs: 1)
        }
        // Handed out for resolution (PostgreSQL appends only for the job's resolver), then resolved.
        #expect(try await o.startable(now: now, limit: 10).count == 3)
        for (id, n) in jobs {
            let rows = (1...n).map { OutboxNewDelivery(message: nil, deviceId: Int64($0), raw: nil, rejected: nil) }
            #expect(try await o.appendDeliveries(job: id, rows, cursor: nil, now: now))
        }
        // A batch of the large job is on the wire; an extra claim leaving it out takes the others.
        let first = try await o.claim(owner: "w", now: now, leaseMs: 60_000, perJob: 10, maxJobs: 1, maxRows: 10)
        #expect(first.map(\.job.id) == ["large"] && first[0].deliveries.count == 10)
        let extra = try await o.claim(owner: "w", now: now, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 100, excluding: ["large"])
        #expect(Set(extra.map(\.job.id)) == ["small", "other"])
        #expect(extra.reduce(0) { $0 + $1.deliveries.count } == 5)
        // Nothing new: an extra claim excluding every job on the wire takes nothing.
        #expect(try await o.claim(owner: "w", now: now, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 100,
                                  excluding: ["large", "small", "other"]).isEmpty)
        // Without `excluding`, the large job's next rows.
        let next = try await o.claim(owner: "w", now: now, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 100)
        #expect(next.map(\.job.id) == ["large"] && next[0].deliveries.count == 10)
    }
}

/// The worker's batches on the wire (issue 13/14, fairness): a wake-up with every slot taken
/// still gets a claim, of the jobs not on the wire only.
@Suite struct OutboxClaimLimitTests {
    /// "limit" or "limit excluding", as `claimLimit` answers.
    func plan(_ running: Int, woken: Bool, sync: Bool, any: Bool) -> String {
        let p = OutboxWorker.claimLimit(running: running, woken: woken, syncPending: sync, wakeUpsAddBatches: any)
        return want(p.limit, p.excluding)
    }
    func want(_ limit: Int, _ excluding: Bool) -> String { excluding ? "\(limit) excluding" : "\(limit)" }

    @Test func sqliteWakeUpsAddBatchesOnlyForJobsNotOnTheWire() {
        let m = OutboxWorker.maxInFlight, x = OutboxWorker.extraBatches
        func got(_ r: Int, woken: Bool, sync: Bool) -> String { self.plan(r, woken: woken, sync: sync, any: false) }
        // Not woken: the usual limit (one batch while a synchronous send is in flight).
        #expect(got(0, woken: false, sync: false) == want(m, false))
        #expect(got(m + 2, woken: false, sync: false) == want(m, false))
        #expect(got(0, woken: false, sync: true) == want(1, false))
        // Woken with a slot free: an ordinary claim (the new job comes first in it).
        #expect(got(m - 1, woken: true, sync: false) == want(m, false))
        // Woken with every slot taken: an extra claim of the jobs not on the wire; bounded.
        #expect(got(m, woken: true, sync: false) == want(m + 1, true))
        #expect(got(m + x - 1, woken: true, sync: false) == want(m + x, true))
        #expect(got(m + x, woken: true, sync: false) == want(m, false))
        // A synchronous send in flight: one batch, and extra ones for new jobs only.
        #expect(got(1, woken: true, sync: true) == want(2, true))
    }

    @Test func postgreSQLWakeUpsAddBatchesThenOnlyForJobsNotOnTheWire() {
        let m = OutboxWorker.maxInFlight, x = OutboxWorker.extraBatches
        func got(_ r: Int, woken: Bool, sync: Bool) -> String { self.plan(r, woken: woken, sync: sync, any: true) }
        #expect(got(m + 2, woken: false, sync: false) == want(m, false))
        // Woken: a batch of anything, up to twice the limit.
        #expect(got(m, woken: true, sync: false) == want(m + 1, false))
        #expect(got(1, woken: true, sync: true) == want(2, false))
        #expect(got(2 * m - 1, woken: true, sync: false) == want(2 * m, false))
        // Every slot taken (NOTIFY and poll_ms wake-ups fill them with a large job): an extra
        // claim of the jobs not on the wire; bounded.
        #expect(got(2 * m, woken: true, sync: false) == want(2 * m + 1, true))
        #expect(got(2 * m + x - 1, woken: true, sync: true) == want(2 * m + x, true))
        #expect(got(2 * m + x, woken: true, sync: false) == want(m, false))
    }

    @Test(arguments: TestBackend.all) func wakeUpsAddBatchesPerBackend(_ backend: TestBackend) throws {
        let t = try backend.open()
        defer { t.remove() }
        if let pg = t.reg as? PostgresRegistry {
            #expect(PostgresOutbox(registry: pg, instance: "test").wakeUpsAddBatches)
        } else {
            guard let sq = t.reg as? SQLiteRegistry else { throw TestSetupError("unknown registry") }
            #expect(!SQLiteOutbox(registry: sq).wakeUpsAddBatches)
        }
    }
}
