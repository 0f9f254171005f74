import Synchronization
import Testing

@testable import PushlineCore

/// Accepts under concurrency on both backends (issue 14): many accepts at once share
/// transactions (group commit: SQLite's registry batches, PostgresOutbox's accept batches), and
/// still each gets exactly its own answer: one job per idempotency key, `max_queued` counted
/// accept by accept, and an accept the database refuses fails alone.
@Suite struct OutboxAcceptTests {
    func spec(_ id: String, estimate: Int = 1, key: String? = nil, now: Int64 = 1000) -> OutboxJobSpec {
        OutboxJobSpec(
            id: id, app: "default", messages: [["ids": [1], "message": "hi"]], indexed: false, sendAt: now + 3_600_000,
            deadline: now + 86_400_000, idempotencyKey: key, estimate: estimate, createdAt: now)
    }

    /// A fresh outbox on `backend`, and a function that closes it and drops its database.
    func open(_ backend: TestBackend) throws -> (any Outbox, PostgresOutbox?, () -> Void) {
        let t = try backend.open()
        if let pg = t.reg as? PostgresRegistry {
            let o = PostgresOutbox(registry: pg, instance: "test")
            return (o, o, { t.remove() })
        }
        guard let sq = t.reg as? SQLiteRegistry else { throw TestSetupError("unknown registry") }
        return (SQLiteOutbox(registry: sq), nil, { t.remove() })
    }

    /// Runs all `specs` at once; the answers in the same order (a failure as its error).
    func acceptAll(_ o: any Outbox, _ specs: [OutboxJobSpec], maxQueued: Int = 1_000_000) async -> [Result<(OutboxJob, Bool), CommandError>] {
        await withTaskGroup(of: (Int, Result<(OutboxJob, Bool), CommandError>).self) { g in
            for (i, s) in specs.enumerated() {
                g.addTask {
                    do throws(CommandError) {
                        let r = try await o.accept(s, maxQueued: maxQueued, idempotencyWindowMs: 60_000)
                        return (i, .success((r.job, r.duplicate)))
                    } catch {
                        return (i, .failure(error))
                    }
                }
            }
            var out = [Result<(OutboxJob, Bool), CommandError>?](repeating: nil, count: specs.count)
            for await (i, r) in g { out[i] = r }
            return out.compactMap { $0 }
        }
    }

    @Test(arguments: TestBackend.all) func concurrentAcceptsOfOneKeyMakeOneJob(_ backend: TestBackend) async throws {
        let (o, pg, close) = try open(backend)
        defer { close() }
        // 40 keys, each accepted 5 times at once, among 100 accepts without a key.
        var specs: [OutboxJobSpec] = []
        for i in 0..<200 { specs.append(spec("k\(i)", key: "key-\(i % 40)")) }
        for i in 0..<100 { specs.append(spec("n\(i)")) }
        specs.shuffle()
        let before = pg?.accepts.transactions.load(ordering: .relaxed) ?? 0
        let out = await acceptAll(o, specs)
        var byKey: [String: Set<String>] = [:]
        var created = 0
        for (s, r) in zip(specs, out) {
            guard case .success(let (job, duplicate)) = r else { Issue.record("accept \(s.id) failed: \(r)"); continue }
            if let k = s.idempotencyKey { byKey[k, default: []].insert(job.id) }
            if !duplicate {
                created += 1
                #expect(job.id == s.id)
            }
        }
        #expect(byKey.count == 40 && byKey.values.allSatisfy { $0.count == 1 }, "\(byKey.filter { $0.value.count != 1 })")
        #expect(created == 140)
        #expect(try await o.jobs(state: nil, app: nil, after: nil, limit: 1000).count == 140)
        if let pg {
            // Group commit: 300 accepts at once share far fewer transactions (one each before).
            let transactions = pg.accepts.transactions.load(ordering: .relaxed) - before
            #expect(transactions >= 1 && transactions < 150, "\(transactions) transactions for 300 accepts")
        }
    }

    @Test(arguments: TestBackend.all) func maxQueuedIsCountedAcceptByAccept(_ backend: TestBackend) async throws {
        let (o, _, close) = try open(backend)
        defer { close() }
        // 30 jobs of 10 under max_queued 100: the first ten fit (the tenth reaches 100), the rest are busy.
        let out = await acceptAll(o, (0..<30).map { spec("q\($0)", estimate: 10) }, maxQueued: 100)
        let ok = out.filter { if case .success = $0 { return true } else { return false } }.count
        let busy = out.filter { if case .failure(let e) = $0 { return e.code == .busy } else { return false } }.count
        #expect(ok == 10 && busy == 20, "\(ok) accepted, \(busy) busy")
    }

    @Test(arguments: TestBackend.all) func anAcceptTheDatabaseRefusesFailsAlone(_ backend: TestBackend) async throws {
        let (o, _, close) = try open(backend)
        defer { close() }
        _ = try await o.accept(spec("taken"), maxQueued: 1_000_000, idempotencyWindowMs: 60_000)
        // Among 100 accepts at once, one reuses a stored job's id: only that one fails.
        var specs = (0..<99).map { spec("a\($0)") }
        specs.insert(spec("taken", key: "other"), at: 37)
        let out = await acceptAll(o, specs)
        for (s, r) in zip(specs, out) {
            switch r {
            case .success(let (job, duplicate)):
                #expect(s.id != "taken", "the accept reusing an id was answered \(job.id)")
                #expect(job.id == s.id && !duplicate)
            case .failure(let e):
                #expect(s.id == "taken", "accept \(s.id) failed: \(e.message)")
            }
        }
        #expect(try await o.jobs(state: nil, app: nil, after: nil, limit: 1000).count == 100)
        #expect(try await o.job("taken")?.idempotencyKey == nil)
    }

    /// Job ids: 32 lowercase hex digits, later ids sort after earlier ones (the `id` index is
    /// written at its right edge, not at a random page), and ids made in the same millisecond
    /// still differ in their 80 random bits.
    @Test func jobIdsSortByCreationAndStayUnguessable() {
        let ids = (0..<1000).map { Dispatcher.newJobId(now: 1_796_000_000_000 + Int64($0 / 10)) }
        let hex = Set("0123456789abcdef")
        #expect(ids.allSatisfy { $0.count == 32 && $0.allSatisfy(hex.contains) })
        #expect(Set(ids).count == ids.count)
        for (a, b) in zip(ids, ids.dropFirst(10)) { #expect(a < b) }
        #expect(ids[0].hasPrefix(String(1_796_000_000_000, radix: 16).leftPadded(to: 12)))
        // The random parts of one millisecond's ids differ in more than their last digits.
        let randomParts = Set(ids.prefix(10).map { $0.dropFirst(12).prefix(8) })
        #expect(randomParts.count == 10)
        #expect(Dispatcher.randomTag().count == 8)
    }
}

private extension String {
    func leftPadded(to n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}
