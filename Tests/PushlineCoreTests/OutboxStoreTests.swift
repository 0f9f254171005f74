import Testing

@testable import PushlineCore

/// The outbox store's state machine on SQLite (issue 13): accept and idempotency, resolution
/// into deliveries, claims under a lease with a fencing token, stale completions dropped,
/// retries, cancel, `done` with its event, recovery and pruning.
@Suite struct OutboxStoreTests {
    func spec(_ id: String, estimate: Int = 3, key: String? = nil, sendAt: Int64 = 1000, now: Int64 = 1000) -> OutboxJobSpec {
        OutboxJobSpec(
            id: id, app: "default", messages: [["ids": [1, 2, 3], "message": "hi"]], indexed: false, sendAt: sendAt,
            deadline: sendAt + 86_400_000, idempotencyKey: key, estimate: estimate, createdAt: now)
    }

    func rows(_ ids: [Int64]) -> [OutboxNewDelivery] {
        ids.map { OutboxNewDelivery(message: nil, deviceId: $0, raw: nil, rejected: nil) }
    }

    func withStore(_ body: (SQLiteRegistry, SQLiteOutbox) async throws -> Void) async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let reg = try SQLiteRegistry(path: dir.db)
        defer { reg.close() }
        try await body(reg, SQLiteOutbox(registry: reg))
    }

    @Test func acceptIsIdempotentPerAppWithinTheWindow() async throws {
        try await withStore { _, o in
            let a = try await o.accept(spec("j1", key: "k"), maxQueued: 100, idempotencyWindowMs: 10_000)
            let b = try await o.accept(spec("j2", key: "k", now: 5000), maxQueued: 100, idempotencyWindowMs: 10_000)
            #expect(!a.duplicate && b.duplicate && b.job.id == "j1")
            // After the window the key is free again.
            let c = try await o.accept(spec("j3", key: "k", now: 20_000), maxQueued: 100, idempotencyWindowMs: 10_000)
            #expect(!c.duplicate && c.job.id == "j3")
        }
    }

    @Test func maxQueuedRefusesWithBusy() async throws {
        try await withStore { _, o in
            _ = try await o.accept(spec("j1", estimate: 8), maxQueued: 10, idempotencyWindowMs: 1)
            await #expect(throws: CommandError.self) {
                _ = try await o.accept(spec("j2", estimate: 5), maxQueued: 10, idempotencyWindowMs: 1)
            }
            do {
                _ = try await o.accept(spec("j2", estimate: 5), maxQueued: 10, idempotencyWindowMs: 1)
            } catch let e as CommandError {
                #expect(e.code == .busy && e.details["retry_after_ms"] != nil)
            }
            #expect(try await o.job("j2") == nil)
        }
    }

    @Test func scheduledJobsAreNotStartableBeforeSendAt() async throws {
        try await withStore { _, o in
            _ = try await o.accept(spec("j1", sendAt: 5000), maxQueued: 100, idempotencyWindowMs: 1)
            #expect(try await o.startable(now: 4999, limit: 10).isEmpty)
            #expect(try await o.startable(now: 5000, limit: 10).map(\.id) == ["j1"])
            #expect(try await o.job("j1")?.state(now: 1000) == .scheduled)
        }
    }

    @Test func claimLeasesFencesAndStaleCompletionsAreDropped() async throws {
        try await withStore { reg, o in
            _ = try await reg.register([try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t1"]),
                                        try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t2"])],
                                       updateOnDuplicate: false)
            _ = try await o.accept(spec("j1", estimate: 2), maxQueued: 100, idempotencyWindowMs: 1)
            #expect(try await o.appendDeliveries(job: "j1", rows([1, 2]), cursor: nil, now: 1000))
            let c1 = try await o.claim(owner: "a", now: 1000, leaseMs: 100, perJob: 10, maxJobs: 10, maxRows: 10)
            #expect(c1.count == 1 && c1[0].deliveries.count == 2)
            #expect(c1[0].deliveries.map(\.device?.registrationId) == ["t1", "t2"])
            // Leased: nobody else gets them until the lease expires.
            #expect(try await o.claim(owner: "b", now: 1050, leaseMs: 100, perJob: 10, maxJobs: 10, maxRows: 10).isEmpty)
            let c2 = try await o.claim(owner: "b", now: 1200, leaseMs: 100, perJob: 10, maxJobs: 10, maxRows: 10)
            #expect(c2.count == 1 && c2[0].deliveries.allSatisfy { $0.fence == c1[0].deliveries[0].fence + 1 })
            // The first owner's results come late: dropped (fence moved on).
            let stale = c1[0].deliveries.map { OutboxOutcome(n: $0.n, fence: $0.fence, kind: .sent, result: ["status": "sent"]) }
            #expect(try await o.complete(job: "j1", stale, now: 1300) == 0)
            #expect(try await o.job("j1")?.sent == 0)
            // The current owner's: one sent, one retried.
            let d = c2[0].deliveries
            let applied = try await o.complete(job: "j1", [
                OutboxOutcome(n: d[0].n, fence: d[0].fence, kind: .sent, result: ["status": "sent"]),
                OutboxOutcome(n: d[1].n, fence: d[1].fence, kind: .retry(nextAt: 5000), result: ["status": "failed"]),
            ], now: 1300)
            #expect(applied == 2)
            #expect(try await o.claim(owner: "b", now: 4999, leaseMs: 100, perJob: 10, maxJobs: 10, maxRows: 10).isEmpty)
            #expect(try await o.nextDue() == 5000)
            let c3 = try await o.claim(owner: "b", now: 5000, leaseMs: 100, perJob: 10, maxJobs: 10, maxRows: 10)
            #expect(c3.first?.deliveries.map(\.attempts) == [1])
            let x = try #require(c3.first?.deliveries.first)
            #expect(try await o.complete(job: "j1", [OutboxOutcome(n: x.n, fence: x.fence, kind: .failed, result: ["status": "failed"])], now: 5001) == 1)
            let job = try #require(try await o.job("j1"))
            #expect(job.stored == .done && job.sent == 1 && job.failed == 1 && job.pending == 0 && job.finishedAt == 5001)
            let events = try await reg.run(write: false) { s in
                try s.db.query("SELECT type, body FROM events ORDER BY seq") { ($0.text(0) ?? "", $0.text(1) ?? "") }
            }
            #expect(events.count == 1 && events.first?.0 == "job_done")
            // A completion after the end changes nothing.
            #expect(try await o.complete(job: "j1", [OutboxOutcome(n: x.n, fence: x.fence, kind: .sent, result: [:])], now: 6000) == 0)
        }
    }

    @Test func cancelCountsPendingAndUnresolvedAndWritesAnEvent() async throws {
        try await withStore { reg, o in
            _ = try await o.accept(spec("j1", estimate: 10), maxQueued: 100, idempotencyWindowMs: 1)
            #expect(try await o.appendDeliveries(job: "j1", rows([1, 2, 3, 4]), cursor: "{\"m\":0}", now: 1000))
            let c = try await o.claim(owner: "a", now: 1000, leaseMs: 1000, perJob: 1, maxJobs: 1, maxRows: 1)
            let job = try #require(try await o.cancel(job: "j1", now: 1100))
            #expect(job.stored == .canceled && job.devices == 10 && job.canceled == 10 && job.pending == 0)
            // The delivery that was on the wire when it was canceled reports sent: counted so.
            let x = try #require(c.first?.deliveries.first)
            #expect(try await o.complete(job: "j1", [OutboxOutcome(n: x.n, fence: x.fence, kind: .sent, result: ["k": "wire"])], now: 1200) == 1)
            let after = try #require(try await o.job("j1"))
            #expect(after.sent == 1 && after.canceled == 9 && after.stored == .canceled)
            // Its result is kept (in `outbox_sent_results`, as every sent row's).
            let res = try await o.results(job: "j1", after: -1, limit: 10)
            #expect(res.map(\.state) == ["sent", "canceled", "canceled", "canceled"])
            #expect(res.first?.result?["k"]?.stringValue == "wire")
            // No more resolution and no more claims.
            #expect(try await !o.appendDeliveries(job: "j1", rows([5]), cursor: nil, now: 1300))
            #expect(try await o.claim(owner: "a", now: 9000, leaseMs: 1000, perJob: 10, maxJobs: 10, maxRows: 10).isEmpty)
            let types = try await reg.run(write: false) { s in try s.db.query("SELECT type FROM events") { $0.text(0) ?? "" } }
            #expect(types == ["job_canceled"])
        }
    }

    @Test func aClaimDoesNotTakeBackItsOwnOwnersRowsStillOnTheWire() async throws {
        try await withStore { reg, o in
            _ = try await reg.register([try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t1"]),
                                        try DeviceInput(parsing: ["platform": "fcm", "registration_id": "t2"])],
                                       updateOnDuplicate: false)
            _ = try await o.accept(spec("j1", estimate: 2), maxQueued: 100, idempotencyWindowMs: 1)
            #expect(try await o.appendDeliveries(job: "j1", rows([1, 2]), cursor: nil, now: 1000))
            let c1 = try await o.claim(owner: "w", now: 1000, leaseMs: 100, perJob: 10, maxJobs: 10, maxRows: 10)
            #expect(c1.first?.deliveries.count == 2)
            // Long after the lease: the same owner (this process, its batch still on the wire)
            // does not claim them again, and their lease was extended, so no one else does.
            #expect(try await o.claim(owner: "w", now: 5000, leaseMs: 100, perJob: 10, maxJobs: 10, maxRows: 10).isEmpty)
            let other = SQLiteOutbox(registry: reg)
            #expect(try await other.claim(owner: "x", now: 5050, leaseMs: 100, perJob: 10, maxJobs: 10, maxRows: 10).isEmpty)
            // Completed (one sent, one retried at once): only the retried row is claimed again.
            let d = try #require(c1.first?.deliveries)
            #expect(try await o.complete(job: "j1", [
                OutboxOutcome(n: d[0].n, fence: d[0].fence, kind: .sent, result: ["status": "sent"]),
                OutboxOutcome(n: d[1].n, fence: d[1].fence, kind: .retry(nextAt: 5000), result: ["status": "failed"]),
            ], now: 5060) == 2)
            let c2 = try await o.claim(owner: "w", now: 5070, leaseMs: 100, perJob: 10, maxJobs: 10, maxRows: 10)
            #expect(c2.first?.deliveries.map(\.n) == [d[1].n] && c2.first?.deliveries.first?.fence == d[1].fence + 1)
        }
    }

    /// A claim reads the rows it takes: not the job's finished rows before them, nor the rows
    /// on the wire (issue 13: claims read a job's rows in `n` order from its first, so a large
    /// job's claims grew with every finished row, and stepped over every leased row).
    @Test func aClaimReadsOnlyTheRowsItTakes() async throws {
        try await withStore { reg, o in
            let n = 20_000
            _ = try await o.accept(spec("j1", estimate: n), maxQueued: 100_000, idempotencyWindowMs: 1)
            for start in stride(from: 0, to: n, by: 5000) {
                #expect(try await o.appendDeliveries(
                    job: "j1", rows((start..<start + 5000).map { Int64($0 + 1) }), cursor: start + 5000 < n ? "{}" : nil, now: 1000))
            }
            // 18,000 finished with a result the size of a real one, then 1,000 on the wire.
            let result: JSONObject = ["status": "sent", "registration_id": .string(String(repeating: "a", count: 64)),
                                      "apns_id": .string(String(repeating: "b", count: 36)), "platform": "apns", "app": "default"]
            for _ in 0..<18 {
                let c = try await o.claim(owner: "w", now: 1000, leaseMs: 600_000, perJob: 1000, maxJobs: 1, maxRows: 1000)
                let d = try #require(c.first?.deliveries)
                #expect(try await o.complete(job: "j1", d.map { OutboxOutcome(n: $0.n, fence: $0.fence, kind: .sent, result: result) }, now: 1000) == 1000)
            }
            let onWire = try await o.claim(owner: "w", now: 1000, leaseMs: 600_000, perJob: 1000, maxJobs: 1, maxRows: 1000)
            #expect(onWire.first?.deliveries.first?.n == 18_000)
            _ = try await reg.run(write: false) { s in s.db.takePageFetches() }
            let c = try await o.claim(owner: "w", now: 1001, leaseMs: 600_000, perJob: 10, maxJobs: 1, maxRows: 10)
            let fetched = try await reg.run(write: false) { s in s.db.takePageFetches() }
            #expect(c.first?.deliveries.map(\.n) == Array(19_000..<19_010))
            // About 200 here; reading the finished and leased rows took thousands.
            #expect(fetched < 1000, "a claim of 10 rows fetched \(fetched) pages")
        }
    }

    /// A claim writes no delivery row (issue 13, background rate): its leases are kept in
    /// memory (`SQLiteOutboxLeases`), so each delivery is written twice (resolved, completed),
    /// not three times; before, a claim of 1,000 rows changed 1,000 rows (and their index entries).
    @Test func aClaimWritesNoDeliveryRow() async throws {
        try await withStore { reg, o in
            _ = try await o.accept(spec("j1", estimate: 1000), maxQueued: 100_000, idempotencyWindowMs: 1)
            #expect(try await o.appendDeliveries(job: "j1", rows((1...1000).map { Int64($0) }), cursor: nil, now: 1000))
            let changes: @Sendable () async throws -> Int64 = {
                try await reg.run(write: false) { s in try s.db.query("SELECT total_changes()") { $0.int(0) }.first ?? 0 }
            }
            let before = try await changes()
            let c = try await o.claim(owner: "w", now: 1000, leaseMs: 60_000, perJob: 1000, maxJobs: 1, maxRows: 1000)
            #expect(c.first?.deliveries.count == 1000)
            let written = try await changes() - before
            // The job's `served` time only.
            #expect(written <= 2, "a claim of 1,000 rows changed \(written) rows")
            // Leased all the same: nobody else takes them, and their completion applies once.
            #expect(try await o.claim(owner: "x", now: 1000, leaseMs: 60_000, perJob: 1000, maxJobs: 1, maxRows: 1000).isEmpty)
            let d = try #require(c.first?.deliveries)
            let out = d.map { OutboxOutcome(n: $0.n, fence: $0.fence, kind: .sent, result: ["status": "sent"]) }
            #expect(try await o.complete(job: "j1", out, now: 2000) == 1000)
            #expect(try await o.complete(job: "j1", out, now: 2001) == 0)
            #expect(try await o.job("j1")?.stored == .done)
        }
    }

    /// The results of sent rows are written once per completion, in `outbox_sent_results`
    /// (issue 13, background rate): the rows keep a NULL `result`, and `results` reads each
    /// sent row's result from its batch, pages across batches, and `prune` deletes them.
    @Test func sentResultsAreStoredOncePerCompletionAndReadBack() async throws {
        try await withStore { reg, o in
            _ = try await o.accept(spec("j1", estimate: 10), maxQueued: 100, idempotencyWindowMs: 1)
            #expect(try await o.appendDeliveries(job: "j1", rows((1...10).map { Int64($0) }), cursor: nil, now: 1000))
            let d = try #require(try await o.claim(owner: "w", now: 1000, leaseMs: 60_000, perJob: 10, maxJobs: 1, maxRows: 10).first?.deliveries)
            #expect(d.count == 10)
            let out = d.enumerated().map { k, x in
                let kind: OutboxOutcome.Kind = k < 5 ? .sent : k < 7 ? .failed : .retry(nextAt: 3000)
                let status: JSONValue = k < 5 ? "sent" : "failed"
                return OutboxOutcome(n: x.n, fence: x.fence, kind: kind, result: ["id": .int(Int64(k + 1)), "status": status, "k": .int(x.n)])
            }
            #expect(try await o.complete(job: "j1", out, now: 2000) == 10)
            let stored: @Sendable () async throws -> (Int64, Int64) = {
                try await reg.run(write: false) { s in
                    let a = try s.db.query("SELECT COUNT(*) FROM outbox_deliveries WHERE state = 1 AND result IS NOT NULL") { $0.int(0) }.first ?? -1
                    let b = try s.db.query("SELECT COUNT(*) FROM outbox_sent_results") { $0.int(0) }.first ?? -1
                    return (a, b)
                }
            }
            #expect(try await stored() == (0, 1))
            let all = try await o.results(job: "j1", after: -1, limit: 100)
            #expect(all.map(\.state) == Array(repeating: "sent", count: 5) + ["failed", "failed"] + Array(repeating: "pending", count: 3))
            // Every row's own result, sent or not.
            for (r, x) in zip(all, d) { #expect(r.result?["k"]?.intValue == x.n && r.n == x.n) }
            // The retried rows are sent later: a second batch; a page spans both.
            let again = try #require(try await o.claim(owner: "w", now: 3000, leaseMs: 60_000, perJob: 10, maxJobs: 1, maxRows: 10).first?.deliveries)
            #expect(again.map(\.n) == d[7...].map(\.n))
            let later = again.map { OutboxOutcome(n: $0.n, fence: $0.fence, kind: .sent, result: ["status": "sent", "k": .int($0.n + 100)]) }
            #expect(try await o.complete(job: "j1", later, now: 3100) == 3)
            #expect(try await stored() == (0, 2))
            let page = try await o.results(job: "j1", after: d[3].n, limit: 5)
            #expect(page.map(\.n) == d[4...8].map(\.n))
            #expect(page.map { $0.result?["k"]?.intValue } == [d[4].n, d[5].n, d[6].n, d[7].n + 100, d[8].n + 100])
            #expect(page.map(\.state) == ["sent", "failed", "failed", "sent", "sent"])
            #expect(try await o.job("j1")?.stored == .done)
            #expect(try await o.prune(finishedBefore: 3101) == 1)
            #expect(try await stored() == (0, 0))
        }
    }

    /// Rows of an earlier version (a delivery row per device, a sent row's result in the row)
    /// are claimed, completed and read back beside what this version writes.
    @Test func deliveryRowsOfAnEarlierVersionAreClaimedAndReadBack() async throws {
        try await withStore { reg, o in
            _ = try await o.accept(spec("j1", estimate: 2), maxQueued: 100, idempotencyWindowMs: 1)
            // As an earlier version resolved and half-completed it: row 0 sent (its result in
            // the row), row 1 pending.
            try await reg.run(write: true) { s in
                let seq = try s.db.query("SELECT seq FROM outbox_jobs WHERE id = 'j1'") { $0.int(0) }.first ?? -1
                try s.db.execute(
                    "INSERT INTO outbox_deliveries (job, n, device_id, state, next_at, attempts, result) VALUES (?, 0, 1, 1, 1000, 1, ?), (?, 1, 2, 0, 1000, 0, NULL)",
                    [.int(seq), .text(#"{"status":"sent","k":"old"}"#), .int(seq)])
                try s.db.execute("UPDATE outbox_jobs SET devices = 2, sent = 1, resolved = 1, state = 'running', started_at = 1000 WHERE seq = ?", [.int(seq)])
            }
            let d = try #require(try await o.claim(owner: "w", now: 1000, leaseMs: 60_000, perJob: 10, maxJobs: 1, maxRows: 10).first?.deliveries)
            #expect(d.map(\.n) == [1] && d.map(\.deviceId) == [2])
            #expect(try await o.complete(job: "j1", [OutboxOutcome(n: 1, fence: d[0].fence, kind: .sent, result: ["status": "sent", "k": "new"])], now: 2000) == 1)
            let all = try await o.results(job: "j1", after: -1, limit: 10)
            #expect(all.map(\.state) == ["sent", "sent"])
            #expect(all.map { $0.result?["k"]?.stringValue } == ["old", "new"])
            #expect(try await o.job("j1")?.stored == .done)
        }
    }

    func count(_ reg: SQLiteRegistry, _ sql: String) async throws -> Int64 {
        try await reg.run(write: false) { s in try s.db.query(sql) { $0.int(0) }.first ?? -1 }
    }

    /// Resolution writes chunks, not a row per device (issue 13, background rate): a claim
    /// reads them back (registry ids, token devices, message indexes), and a completion writes
    /// a delivery row only for a device that failed or is retried; the sent ones leave no row.
    @Test func resolutionWritesChunksAndCompletionsWriteRowsOnlyForFailures() async throws {
        try await withStore { reg, o in
            let n = 1000
            _ = try await o.accept(spec("j1", estimate: n), maxQueued: 100_000, idempotencyWindowMs: 1)
            var list: [OutboxNewDelivery] = []
            for k in 0..<n {
                if k == 300 {
                    list.append(OutboxNewDelivery(message: 0, deviceId: nil, raw: nil, rejected: ["status": "failed", "reason": "unknown_device"]))
                } else if k % 100 == 7 {
                    list.append(OutboxNewDelivery(
                        message: 1, deviceId: nil, raw: Device(id: -1, platform: .fcm, app: "default", registrationId: "tok\(k)", p256dh: nil, auth: nil),
                        rejected: nil))
                } else {
                    list.append(OutboxNewDelivery(message: k % 2, deviceId: Int64(k + 1), raw: nil, rejected: nil))
                }
            }
            #expect(try await o.appendDeliveries(job: "j1", list, cursor: nil, now: 1000))
            // Runs of at most `SQLiteOutboxChunk.size`, split at the refused one.
            #expect(try await count(reg, "SELECT COUNT(*) FROM outbox_deliveries") == 1)
            // 0-299 in 250 + 50, 301-999 in 250 + 250 + 199.
            #expect(try await count(reg, "SELECT COUNT(*) FROM outbox_chunks") == 5)
            #expect(try await count(reg, "SELECT SUM(last_n - first_n + 1) FROM outbox_chunks") == Int64(n - 1))
            let d = try #require(try await o.claim(owner: "w", now: 1000, leaseMs: 60_000, perJob: n, maxJobs: 1, maxRows: n).first?.deliveries)
            #expect(d.count == n - 1 && !d.contains { $0.n == 300 })
            for x in d {
                let k = Int(x.n)
                #expect(x.attempts == 0)
                if k % 100 == 7 {
                    #expect(x.message == 1 && x.deviceId == nil && x.device?.registrationId == "tok\(k)")
                } else {
                    #expect(x.message == k % 2 && x.deviceId == Int64(k + 1))
                }
            }
            // Every tenth fails, every tenth plus one is retried, the rest are sent.
            let out = d.map { x in
                let kind: OutboxOutcome.Kind = x.n % 10 == 0 ? .failed : x.n % 10 == 1 ? .retry(nextAt: 5000) : .sent
                return OutboxOutcome(n: x.n, fence: x.fence, kind: kind, result: ["status": x.n % 10 < 2 ? "failed" : "sent", "k": .int(x.n)])
            }
            #expect(try await o.complete(job: "j1", out, now: 2000) == n - 1)
            #expect(try await count(reg, "SELECT COUNT(*) FROM outbox_chunks") == 0)
            // The refused row, 99 failed (n = 300 was refused), 100 retried.
            #expect(try await count(reg, "SELECT COUNT(*) FROM outbox_deliveries") == 200)
            #expect(try await count(reg, "SELECT COUNT(*) FROM outbox_deliveries WHERE state = 0 AND attempts = 1 AND next_at = 5000") == 100)
            let job = try #require(try await o.job("j1"))
            #expect(job.sent == 800 && job.failed == 100 && job.pending == 100 && job.stored == .running)
            let res = try await o.results(job: "j1", after: 295, limit: 10)
            #expect(res.map(\.n) == Array(296...305))
            #expect(res.map(\.state) == ["sent", "sent", "sent", "sent", "failed", "pending", "sent", "sent", "sent", "sent"])
            #expect(res.map(\.attempts) == [1, 1, 1, 1, 0, 1, 1, 1, 1, 1])
            #expect(res[5].result?["k"]?.intValue == 301 && res[0].result?["k"]?.intValue == 296 && res[4].result?["reason"]?.stringValue == "unknown_device")
            // The retried ones come back from their rows, with their device.
            let again = try #require(try await o.claim(owner: "w", now: 5000, leaseMs: 60_000, perJob: n, maxJobs: 1, maxRows: n).first?.deliveries)
            #expect(again.count == 100 && again.allSatisfy { $0.n % 10 == 1 && $0.attempts == 1 && $0.deviceId == $0.n + 1 })
        }
    }

    /// A chunk's lists (comma-separated, an empty entry for none) read back as written, and
    /// what a completion leaves of a chunk is one chunk per run, each with its own entries.
    @Test func chunkListsRoundTripAndTheRemainderKeepsEachDevicesEntries() {
        let list: [Int64?] = [1, nil, 300, nil, -4]
        #expect(SQLiteOutboxChunk.encodeInts(list) == "1,,300,,-4")
        #expect(SQLiteOutboxChunk.decodeInts(SQLiteOutboxChunk.encodeInts(list)) == list)
        #expect(SQLiteOutboxChunk.decodeInts(SQLiteOutboxChunk.encodeInts([nil, nil])) == [nil, nil])
        let c = SQLiteOutboxChunk(id: 7, firstN: 10, state: 0, nextAt: 5, ids: [1, 2, 3, nil, 5], messages: [0, 1, 0, 1, 0],
                                  raws: [nil, nil, nil, "r13", nil])
        #expect(c.lastN == 14 && c.contains(14) && !c.contains(15) && c.raw(13) == "r13" && c.deviceId(13) == nil && c.message(11) == 1)
        let rest = c.remainder(without: [11, 14])
        #expect(rest.map(\.firstN) == [10, 12] && rest.map(\.lastN) == [10, 13])
        #expect(rest[1].ids == [3, nil] && rest[1].messages == [0, 1] && rest[1].raws == [nil, "r13"] && rest[1].nextAt == 5)
        #expect(c.remainder(without: Set(10...14)).isEmpty)
        // Lists shorter than the range (not written by this code) read as nil, without a trap.
        let short = SQLiteOutboxChunk(id: 1, firstN: 0, state: 0, nextAt: 0, ids: [1, 2, 3], messages: [4], raws: [])
        let r = short.remainder(without: [0])
        #expect(r.count == 1 && r[0].ids == [2, 3] && r[0].messages == [nil, nil] && r[0].raws == [nil, nil])
    }

    /// A claim that takes part of a chunk: its completion writes the rest back as a chunk, so
    /// the next claim takes the rest, and nothing is sent twice or lost.
    @Test func aPartialClaimOfAChunkLeavesTheRestClaimable() async throws {
        try await withStore { reg, o in
            _ = try await o.accept(spec("j1", estimate: 100), maxQueued: 1000, idempotencyWindowMs: 1)
            #expect(try await o.appendDeliveries(job: "j1", rows((1...100).map { Int64($0) }), cursor: nil, now: 1000))
            var seen: [Int64: Int] = [:]
            var retried: Set<Int64> = []
            var rounds = 0
            while rounds < 40 {
                rounds += 1
                // Claims of 7 (one beside the other: two batches on the wire), then completed.
                let a = try await o.claim(owner: "w", now: 1000, leaseMs: 60_000, perJob: 7, maxJobs: 1, maxRows: 7).first?.deliveries ?? []
                let b = try await o.claim(owner: "w", now: 1000, leaseMs: 60_000, perJob: 7, maxJobs: 1, maxRows: 7).first?.deliveries ?? []
                if a.isEmpty && b.isEmpty { break }
                for x in a + b { seen[x.n, default: 0] += 1 }
                #expect(Set(a.map(\.n)).isDisjoint(with: b.map(\.n)))
                // `b` first, sent; `a` sent, but its odd devices retried at once the first time.
                #expect(try await o.complete(job: "j1", b.map { OutboxOutcome(n: $0.n, fence: $0.fence, kind: .sent, result: [:]) }, now: 1000) == b.count)
                for x in a where x.n % 2 == 1 && x.attempts == 0 { retried.insert(x.n) }
                #expect(try await o.complete(job: "j1", a.map {
                    OutboxOutcome(n: $0.n, fence: $0.fence, kind: $0.n % 2 == 1 && $0.attempts == 0 ? .retry(nextAt: 1000) : .sent, result: [:])
                }, now: 1000) == a.count)
            }
            // Each device once from its chunk, and the retried ones once more from their rows.
            #expect(!retried.isEmpty && rounds < 40)
            #expect(Set(seen.keys) == Set(0..<100))
            for (n, times) in seen { #expect(times == (retried.contains(n) ? 2 : 1), "device \(n) claimed \(times) times") }
            let job = try #require(try await o.job("j1"))
            #expect(job.sent == 100 && job.pending == 0 && job.stored == .done)
            #expect(try await count(reg, "SELECT COUNT(*) FROM outbox_chunks") == 0)
            #expect(try await o.results(job: "j1", after: -1, limit: 1000).map(\.state) == Array(repeating: "sent", count: 100))
        }
    }

    /// Idle, the worker sleeps until the next due time: a leased row's is when its lease ends
    /// (it was its past `next_at`, so the worker polled until then).
    @Test func nextDueOfALeasedRowIsItsLeaseEnd() async throws {
        try await withStore { _, o in
            _ = try await o.accept(spec("j1", estimate: 2), maxQueued: 100, idempotencyWindowMs: 1)
            #expect(try await o.appendDeliveries(job: "j1", rows([1, 2]), cursor: nil, now: 1000))
            let d = try #require(try await o.claim(owner: "a", now: 1000, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 10).first?.deliveries)
            #expect(d.count == 2)
            #expect(try await o.nextDue() == 61_001)
            #expect(try await o.complete(job: "j1", [OutboxOutcome(n: d[0].n, fence: d[0].fence, kind: .retry(nextAt: 5000), result: [:])], now: 1100) == 1)
            #expect(try await o.nextDue() == 5000)
            // Claimable exactly then (a lease ends after its last millisecond).
            #expect(try await o.claim(owner: "a", now: 4999, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 10).isEmpty)
            #expect(try await o.claim(owner: "b", now: 61_000, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 10).first?.deliveries.map(\.n) == [d[0].n])
            #expect(try await o.claim(owner: "b", now: 61_001, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 10).first?.deliveries.map(\.n) == [d[1].n])
        }
    }

    @Test func recoverReleasesOtherOwnersLeasesAndPruneDeletesOldJobs() async throws {
        try await withStore { _, o in
            _ = try await o.accept(spec("j1", estimate: 2), maxQueued: 100, idempotencyWindowMs: 1)
            _ = try await o.appendDeliveries(job: "j1", rows([1, 2]), cursor: nil, now: 1000)
            _ = try await o.claim(owner: "dead", now: 1000, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 10)
            #expect(try await o.recover(owner: "me", now: 1001) == 2)
            let c = try await o.claim(owner: "me", now: 1002, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 10)
            #expect(c.first?.deliveries.count == 2)
            let out = (c.first?.deliveries ?? []).map { OutboxOutcome(n: $0.n, fence: $0.fence, kind: .sent, result: [:]) }
            _ = try await o.complete(job: "j1", out, now: 2000)
            #expect(try await o.prune(finishedBefore: 2000) == 0)
            #expect(try await o.prune(finishedBefore: 2001) == 1)
            #expect(try await o.job("j1") == nil)
        }
    }

    @Test func fairClaimsServeTheLeastRecentlyServedJobFirst() async throws {
        try await withStore { _, o in
            _ = try await o.accept(spec("big", estimate: 100), maxQueued: 1000, idempotencyWindowMs: 1)
            _ = try await o.appendDeliveries(job: "big", rows((1...100).map { Int64($0) }), cursor: nil, now: 1000)
            _ = try await o.claim(owner: "a", now: 1000, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 10)
            _ = try await o.accept(spec("small", estimate: 2), maxQueued: 1000, idempotencyWindowMs: 1)
            _ = try await o.appendDeliveries(job: "small", rows([1, 2]), cursor: nil, now: 1001)
            let c = try await o.claim(owner: "a", now: 1002, leaseMs: 60_000, perJob: 10, maxJobs: 10, maxRows: 10)
            #expect(c.map(\.job.id) == ["small", "big"])
            #expect(c.map(\.deliveries.count) == [2, 8])
        }
    }
}
