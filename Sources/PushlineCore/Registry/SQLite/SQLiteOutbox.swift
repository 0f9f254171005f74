import Synchronization

/// The outbox in the registry's SQLite database, run on its thread through `SQLiteRegistry.run`:
/// accepts from many connections share one transaction (group commit), and every outbox write
/// commits with `synchronous=FULL` (`durable`), so an answered accept survives power loss.
public final class SQLiteOutbox: Outbox {
    let registry: SQLiteRegistry

    /// Notifications without a final result (the `max_queued` admission).
    let queued = OutboxQueuedCount()

    public init(registry: SQLiteRegistry) { self.registry = registry }

    /// The leases of this registry's outbox, in memory (see `SQLiteOutboxLeases`).
    var leases: SQLiteOutboxLeases { registry.outboxLeases }

    static let jobColumns =
        "seq, id, app, messages, indexed, state, send_at, deadline, idem_key, estimate, devices, sent, failed, canceled, resolved, cursor, created_at, started_at, finished_at"

    static func job(_ s: Statement) -> OutboxJob {
        let text = s.text(3) ?? "[]"
        let messages = (try? JSONValue.parse(text))?.arrayValue?.compactMap(\.objectValue) ?? []
        return OutboxJob(
            id: s.text(1) ?? "", app: s.text(2) ?? "", messages: messages, indexed: s.int(4) != 0,
            stored: OutboxJobState(rawValue: s.text(5) ?? "") ?? .queued, sendAt: s.int(6), deadline: s.int(7),
            idempotencyKey: s.text(8), estimate: Int(s.int(9)), devices: Int(s.int(10)), sent: Int(s.int(11)),
            failed: Int(s.int(12)), canceled: Int(s.int(13)), resolved: s.int(14) != 0, cursor: s.text(15),
            createdAt: s.int(16), startedAt: s.optionalInt(17), finishedAt: s.optionalInt(18))
    }

    static func load(_ db: Database, id: String) throws -> (seq: Int64, job: OutboxJob)? {
        try db.query("SELECT \(jobColumns) FROM outbox_jobs WHERE id = ?", [.text(id)]) { s in (s.int(0), job(s)) }.first
    }

    /// A job's key, without reading (and parsing) the rest of its row as `load` does.
    static func seq(_ db: Database, id: String) throws -> Int64? {
        try db.query("SELECT seq FROM outbox_jobs WHERE id = ?", [.text(id)]) { $0.int(0) }.first
    }

    static func queued(_ db: Database) throws -> Int {
        let r = try db.query(
            """
            SELECT COALESCE(SUM(MAX(CASE WHEN resolved = 1 THEN devices ELSE MAX(devices, estimate) END - sent - failed - canceled, 0)), 0),
                   MIN(created_at), COUNT(*)
            FROM outbox_jobs WHERE state IN ('queued', 'running')
            """
        ) { s in (Int(s.int(0)), s.optionalInt(1), Int(s.int(2))) }
        return r.first?.0 ?? 0
    }

    public func accept(_ spec: OutboxJobSpec, maxQueued: Int, idempotencyWindowMs: Int64) async throws(CommandError) -> (job: OutboxJob, duplicate: Bool) {
        // The messages' JSON text is made here, not on the database thread every accept waits for.
        let messages = OutboxJob.messagesText(spec)
        return try await registry.run(write: true, durable: true) { store in
            let db = store.db
            if let key = spec.idempotencyKey {
                let found = try db.query(
                    "SELECT id FROM outbox_jobs WHERE app = ? AND idem_key = ? AND created_at > ? ORDER BY seq DESC LIMIT 1",
                    [.text(spec.app), .text(key), .int(spec.createdAt - idempotencyWindowMs)]
                ) { $0.text(0) ?? "" }
                if let id = found.first, let j = try Self.load(db, id: id) { return (j.job, true) }
            }
            try self.queued.admit(spec, maxQueued: maxQueued) { try Self.queued(db) }
            try db.execute(
                """
                INSERT INTO outbox_jobs (id, app, messages, indexed, state, send_at, deadline, idem_key, estimate, created_at)
                VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)
                """,
                [.text(spec.id), .text(spec.app), .text(messages), .from(spec.indexed), .int(spec.sendAt),
                 .int(spec.deadline), .from(spec.idempotencyKey), .int(Int64(spec.estimate)), .int(spec.createdAt)])
            let job = OutboxJob(accepted: spec)
            return (job, false)
        }
    }

    public func startable(now: Int64, limit: Int) async throws(CommandError) -> [OutboxJob] {
        try await registry.run(write: false, background: true) { store in
            try store.db.query(
                """
                SELECT \(Self.jobColumns) FROM outbox_jobs
                WHERE resolved = 0 AND state IN ('queued', 'running') AND send_at <= ? ORDER BY send_at, seq LIMIT ?
                """, [.int(now), .int(Int64(limit))]
            ) { s in Self.job(s) }
        }
    }

    public func appendDeliveries(job: String, _ rows: [OutboxNewDelivery], cursor: String?, now: Int64) async throws(CommandError) -> Bool {
        // Not `durable`: rows and cursor commit together and are derived from the (durable) job,
        // so a power loss only makes the worker resolve that chunk again.
        try await registry.run(write: true, background: true) { store in
            let db = store.db
            guard let (seq, j) = try Self.load(db, id: job), j.stored == .queued || j.stored == .running, !j.resolved else { return false }
            // A row refused at resolution is a delivery row with its final result; the devices
            // to send to are chunks (`SQLiteOutboxChunk`) of contiguous numbers.
            let insert = try db.statement(
                "INSERT INTO outbox_deliveries (job, n, message, device_id, raw, state, next_at, result) VALUES (?, ?, ?, ?, ?, 2, ?, ?)")
            var n = Int64(j.devices)
            var failed = 0
            var run = SQLiteOutboxChunk(id: 0, firstN: n, state: 0, nextAt: now, ids: [], messages: nil, raws: nil)
            var runMessages: [Int?] = []
            var runRaws: [String?] = []
            func flush() throws(DatabaseError) {
                guard !run.ids.isEmpty else { return }
                run.lastN = run.firstN + Int64(run.ids.count) - 1
                run.messages = runMessages.contains { $0 != nil } ? runMessages : nil
                run.raws = runRaws.contains { $0 != nil } ? runRaws : nil
                try run.insert(db, job: seq)
                run.ids.removeAll(keepingCapacity: true)
                runMessages.removeAll(keepingCapacity: true)
                runRaws.removeAll(keepingCapacity: true)
            }
            for r in rows {
                if let rejected = r.rejectedText {
                    try flush()
                    failed += 1
                    try insert.bind([
                        .int(seq), .int(n), .from(r.message.map { Int64($0) }), .from(r.deviceId), .from(r.rawText), .int(now), .text(rejected),
                    ])
                    defer { insert.reset() }
                    _ = try insert.step()
                } else {
                    if run.ids.isEmpty { run.firstN = n }
                    run.ids.append(r.deviceId)
                    runMessages.append(r.message)
                    runRaws.append(r.rawText)
                    if run.ids.count == SQLiteOutboxChunk.size { try flush() }
                }
                n += 1
            }
            try flush()
            try db.execute(
                """
                UPDATE outbox_jobs SET devices = ?, failed = failed + ?, cursor = ?, resolved = ?, state = 'running',
                    started_at = COALESCE(started_at, ?) WHERE seq = ?
                """,
                [.int(n), .int(Int64(failed)), .from(cursor), .from(cursor == nil), .int(now), .int(seq)])
            if cursor == nil { try Self.finishIfDone(store, seq: seq, id: job, now: now) }
            return true
        }
    }

    /// Marks a resolved job with nothing pending `done` and writes its `job_done` event.
    static func finishIfDone(_ store: SQLiteRegistryStore, seq: Int64, id: String, now: Int64) throws {
        let db = store.db
        let pending = try db.query(
            "SELECT 1 FROM outbox_deliveries INDEXED BY outbox_deliveries_claim WHERE job = ? AND state = 0 LIMIT 1", [.int(seq)]
        ) { $0.int(0) }
        guard pending.isEmpty else { return }
        let chunks = try db.query("SELECT 1 FROM outbox_chunks WHERE job = ? AND state = 0 LIMIT 1", [.int(seq)]) { $0.int(0) }
        guard chunks.isEmpty else { return }
        let rows = try db.query(
            """
            UPDATE outbox_jobs SET state = 'done', finished_at = ? WHERE seq = ? AND state = 'running' AND resolved = 1
            RETURNING devices, sent, failed, canceled
            """, [.int(now), .int(seq)]
        ) { s in (s.int(0), s.int(1), s.int(2), s.int(3)) }
        guard let c = rows.first else { return }
        try store.appendEvents([.jobDone(id, at: now, devices: c.0, sent: c.1, failed: c.2, canceled: c.3)])
    }

    public func claim(owner: String, now: Int64, leaseMs: Int64, perJob: Int, maxJobs: Int, maxRows: Int, excluding: Set<String>) async throws(CommandError) -> [OutboxClaim] {
        let skip = excluding.isEmpty ? "" : " AND j.id NOT IN (SELECT value FROM json_each(?3))"
        let args: [SQLValue] = [.int(now), .int(Int64(maxJobs))]
            + (excluding.isEmpty ? [] : [.text(JSONValue.array(excluding.map { .string($0) }).jsonString)])
        let leases = self.leases
        // The leases this claim took, let go again should its transaction not commit.
        let taken = Mutex<[(seq: Int64, n: Int64, fence: Int64)]>([])
        do {
            return try await registry.run(write: true, background: true) { store in
                let db = store.db
                leases.keepAlive(owner: owner, now: now, leaseMs: leaseMs)
                // Jobs with due work, least recently served first (fairness between large and small
                // jobs). Due work: a pending row or chunk whose `next_at` has come (maybe on the
                // wire: the claim then finds nothing), or one of an expired lease of the database (written by
                // an earlier version, until `recover`), or an expired lease in memory.
                let expiredJobs = leases.jobsWithExpiredLeases(now: now)
                let jobs = try db.query(
                    """
                    SELECT \(Self.jobColumns) FROM outbox_jobs j
                    WHERE j.state = 'running' AND (EXISTS (
                        SELECT 1 FROM outbox_deliveries d INDEXED BY outbox_deliveries_claim
                        WHERE d.job = j.seq AND d.state = 0 AND d.lease_until IS NULL AND d.next_at <= ?1
                      ) OR EXISTS (
                        SELECT 1 FROM outbox_deliveries d INDEXED BY outbox_deliveries_claim
                        WHERE d.job = j.seq AND d.state = 0 AND d.lease_until < ?1 AND d.next_at <= ?1
                      ) OR EXISTS (SELECT 1 FROM outbox_chunks c WHERE c.job = j.seq AND c.state = 0 AND c.next_at <= ?1)\(
                            expiredJobs.isEmpty ? "" : " OR j.seq IN (\(expiredJobs.map(String.init).joined(separator: ",")))"))\(skip)
                    ORDER BY j.served, j.seq LIMIT ?2
                    """, args
                ) { s in (s.int(0), Self.job(s)) }
                var out: [OutboxClaim] = []
                // The rows of an expired lease first (the older work: in memory, then of the
                // database), then the due rows not leased, oldest due first: each an index range
                // in its order (covering: `n` and `state` are in the index), the rows on the wire
                // stepped over in the index alone.
                let selects = try ["lease_until < ?2 AND next_at <= ?2 ORDER BY lease_until, next_at, n",
                                   "lease_until IS NULL AND next_at <= ?2 ORDER BY next_at, n"].map { range throws(DatabaseError) in
                    try db.statement(
                        """
                        SELECT n FROM outbox_deliveries INDEXED BY outbox_deliveries_claim
                        WHERE job = ?1 AND state = 0 AND \(range)
                        """)
                }
                let read = try db.statement(
                    "SELECT message, device_id, raw, attempts, fence, state FROM outbox_deliveries WHERE job = ? AND n = ?")
                // A job's pending devices not in a delivery row are in its chunks, read whole.
                let chunkRanges = try db.statement(
                    "SELECT id, first_n, last_n FROM outbox_chunks WHERE job = ? AND state = 0 AND next_at <= ? ORDER BY first_n")
                let chunkRead = try db.statement("SELECT \(SQLiteOutboxChunk.columns) FROM outbox_chunks WHERE id = ?")
                var total = 0
                for (seq, job) in jobs where total < maxRows {
                    var rows: [(n: Int64, message: Int?, deviceId: Int64?, raw: String?, attempts: Int, fence: Int64, inChunk: Bool)] = []
                    let want = min(perJob, maxRows - total)
                    var candidates = leases.expired(job: seq, now: now, limit: want)
                    var seen = Set(candidates)
                    // `held` is let go before `leases.take` changes the same map (kept, it would
                    // make that change copy every lease of the job).
                    do {
                        let held = leases.snapshot(job: seq)
                        for select in selects where candidates.count < want {
                            try select.bind([.int(seq), .int(now)])
                            defer { select.reset() }
                            while candidates.count < want, try select.step() {
                                let n = select.int(0)
                                if held[n] == nil, seen.insert(n).inserted { candidates.append(n) }
                            }
                        }
                        // The chunk last read (an expired lease's device not in a row is in one).
                        var chunk: SQLiteOutboxChunk?
                        for n in candidates {
                            try read.bind([.int(seq), .int(n)])
                            defer { read.reset() }
                            if try read.step() {
                                guard read.int(5) == 0 else { continue }
                                rows.append((n, read.optionalInt(0).map { Int($0) }, read.optionalInt(1), read.text(2), Int(read.int(3)), read.int(4), false))
                                continue
                            }
                            if chunk?.contains(n) != true { chunk = try SQLiteOutboxChunk.containing(db, job: seq, n: n) }
                            guard let c = chunk, c.state == 0 else { continue }
                            rows.append((n, c.message(n), c.deviceId(n), c.raw(n), 0, 0, true))
                        }
                        if rows.count < want {
                            try chunkRanges.bind([.int(seq), .int(now)])
                            defer { chunkRanges.reset() }
                            while rows.count < want, try chunkRanges.step() {
                                let (id, first, last) = (chunkRanges.int(0), chunkRanges.int(1), chunkRanges.int(2))
                                var free: [Int64] = []
                                var n = first
                                while n <= last && rows.count + free.count < want {
                                    if held[n] == nil && !seen.contains(n) { free.append(n) }
                                    n += 1
                                }
                                guard !free.isEmpty else { continue }
                                try chunkRead.bind([.int(id)])
                                defer { chunkRead.reset() }
                                guard try chunkRead.step() else { continue }
                                let c = SQLiteOutboxChunk(chunkRead)
                                for n in free where c.contains(n) {
                                    seen.insert(n)
                                    rows.append((n, c.message(n), c.deviceId(n), c.raw(n), 0, 0, true))
                                }
                            }
                        }
                    }
                    var devices: [Int64: Device] = [:]
                    let ids = rows.compactMap { $0.raw == nil ? $0.deviceId : nil }
                    if !ids.isEmpty {
                        devices.reserveCapacity(ids.count)
                        for d in try store.sendingDevices(ids) { devices[d.id] = d }
                    }
                    var list: [OutboxDelivery] = []
                    list.reserveCapacity(rows.count)
                    let fences = leases.take(
                        job: seq, id: job.id, rows.map { ($0.n, $0.fence, $0.inChunk) }, owner: owner, until: now + leaseMs, now: now)
                    taken.withLock { t in for (k, r) in rows.enumerated() { t.append((seq, r.n, fences[k])) } }
                    for ((n, message, deviceId, raw, attempts, _, _), fence) in zip(rows, fences) {
                        var device: Device?
                        if let raw { device = Self.rawDevice(raw) } else if let deviceId { device = devices[deviceId] }
                        list.append(OutboxDelivery(n: n, message: message, device: device, deviceId: deviceId, attempts: attempts, fence: fence))
                    }
                    // Served at `now`: the next claims take the jobs served longest ago first.
                    try db.execute("UPDATE outbox_jobs SET served = ? WHERE seq = ?", [.int(now), .int(seq)])
                    total += list.count
                    if !list.isEmpty { out.append(OutboxClaim(job: job, deliveries: list)) }
                }
                return out
            }
        } catch {
            // Not committed: the rows are not this claim's (nothing was sent).
            leases.drop(taken.withLock { $0 })
            throw error
        }
    }

    static func rawDevice(_ text: String) -> Device? {
        guard let o = (try? JSONValue.parse(text))?.objectValue, let p = o["platform"]?.stringValue.flatMap(Platform.init(rawValue:)) else {
            return nil
        }
        return Device(
            id: o["id"]?.intValue ?? -1, platform: p, app: o["app"]?.stringValue ?? "default",
            registrationId: o["registration_id"]?.stringValue ?? "", p256dh: o["p256dh"]?.stringValue, auth: o["auth"]?.stringValue)
    }

    public func complete(job: String, _ outcomes: [OutboxOutcome], now: Int64) async throws(CommandError) -> Int {
        let leases = self.leases
        // The results' JSON text (written by the worker) is gathered here, not on the database
        // thread, into one buffer, each result a range of it: a row's `result` is made of its
        // range (a failure, a retry), the sent ones' array by copying theirs (no string per result).
        var json: [UInt8] = []
        json.reserveCapacity(outcomes.count * 224)
        var spans: [Range<Int>] = []
        spans.reserveCapacity(outcomes.count)
        for o in outcomes {
            let start = json.count
            json.append(contentsOf: o.json)
            spans.append(start..<json.count)
        }
        let texts = json
        let ranges = spans
        do {
            let (seq, applied) = try await registry.run(write: true, durable: true, background: true) { store in
                let db = store.db
                guard let seq = try Self.seq(db, id: job) else { return (Int64?.none, 0) }
                let read = try db.statement("SELECT state FROM outbox_deliveries WHERE job = ? AND n = ?")
                // The row is pending (or canceled while on the wire), and still this claim's: its
                // fence is the lease's in memory (a later claim of it, after the lease expired, has
                // a higher one). The fence is written with the result: the next claim's is higher.
                let update = try db.statement(
                    """
                    UPDATE outbox_deliveries SET state = ?1, next_at = ?2, attempts = attempts + 1, lease_owner = NULL, lease_until = NULL,
                        result = ?3, fence = ?6 WHERE job = ?4 AND n = ?5
                    """)
                // The usual case in one statement: the row still pending.
                let pending = try db.statement(
                    """
                    UPDATE outbox_deliveries SET state = ?1, next_at = ?2, attempts = attempts + 1, lease_owner = NULL, lease_until = NULL,
                        result = ?3, fence = ?6 WHERE job = ?4 AND n = ?5 AND state = 0
                    """)
                var applied = 0
                var (sent, failed, uncanceled) = (0, 0, 0)
                // The results of the rows sent: one `outbox_sent_results` row for them all (see
                // `Migrations.outboxSentResults`); the rows themselves keep a NULL `result`.
                var sentNs: [Int64] = []
                var sentTexts: [UInt8] = [UInt8(ascii: "[")]
                func sentText(_ r: Range<Int>) {
                    if sentTexts.count > 1 { sentTexts.append(UInt8(ascii: ",")) }
                    sentTexts.append(contentsOf: texts[r])
                }
                let current = leases.held(job: seq, outcomes.map(\.n))
                // A device claimed from a chunk: its result goes to `outbox_sent_results` (sent) or
                // a new delivery row (failed, retried), and the chunk is written back without it.
                let insertRow = try db.statement(
                    """
                    INSERT INTO outbox_deliveries (job, n, message, device_id, raw, state, next_at, attempts, fence, result)
                    VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
                    """)
                var chunk: SQLiteOutboxChunk?
                var touched: [Int64: (chunk: SQLiteOutboxChunk, taken: Set<Int64>)] = [:]
                for ((o, lease), range) in zip(zip(outcomes, current), ranges) {
                    var text: String { String(decoding: texts[range], as: UTF8.self) }
                    // A stale claim (the row was claimed again, or completed): dropped.
                    guard let lease, lease.fence == o.fence else { continue }
                    let (newState, nextAt): (Int64, Int64) = switch o.kind {
                    case .sent: (1, now)
                    case .failed: (2, now)
                    case .retry(let at): (0, at)
                    }
                    if lease.inChunk {
                        if chunk?.contains(o.n) != true { chunk = try SQLiteOutboxChunk.containing(db, job: seq, n: o.n) }
                        if let c = chunk {
                            // Canceled while on the wire: a final result is counted, a retry is not made.
                            if c.state == 3 && newState == 0 { continue }
                            if newState == 1 {
                                sent += 1
                                sentNs.append(o.n)
                                sentText(range)
                            } else {
                                if newState == 2 { failed += 1 }
                                try insertRow.bind([.int(seq), .int(o.n), .from(c.message(o.n).map { Int64($0) }), .from(c.deviceId(o.n)),
                                                    .from(c.raw(o.n)), .int(newState), .int(nextAt), .int(o.fence), .text(text)])
                                defer { insertRow.reset() }
                                _ = try insertRow.step()
                            }
                            if c.state == 3 { uncanceled += 1 }
                            touched[c.id, default: (c, [])].taken.insert(o.n)
                            applied += 1
                            continue
                        }
                        // Not in a chunk: its delivery row.
                    }
                    let stored: SQLValue = newState == 1 ? .null : .text(text)
                    try pending.bind([.int(newState), .int(nextAt), stored, .int(seq), .int(o.n), .int(o.fence)])
                    _ = try pending.step()
                    pending.reset()
                    if db.changes == 1 {
                        if newState == 1 {
                            sent += 1
                            sentNs.append(o.n)
                            sentText(range)
                        } else if newState == 2 {
                            failed += 1
                        }
                        applied += 1
                        continue
                    }
                    // Otherwise: final already, or canceled while on the wire.
                    try read.bind([.int(seq), .int(o.n)])
                    let state: Int64? = try read.step() ? read.int(0) : nil
                    read.reset()
                    guard let state, state == 3 else { continue }
                    switch o.kind {
                    case .sent: sent += 1
                    case .failed: failed += 1
                    // A canceled row is not retried.
                    case .retry: continue
                    }
                    uncanceled += 1
                    try update.bind([.int(newState), .int(nextAt), newState == 1 ? .null : .text(text), .int(seq), .int(o.n), .int(o.fence)])
                    defer { update.reset() }
                    _ = try update.step()
                    if newState == 1 {
                        sentNs.append(o.n)
                        sentText(range)
                    }
                    applied += 1
                }
                for (id, t) in touched {
                    try db.execute("DELETE FROM outbox_chunks WHERE id = ?", [.int(id)])
                    for rest in t.chunk.remainder(without: t.taken) { try rest.insert(db, job: seq) }
                }
                if let first = sentNs.min(), let last = sentNs.max() {
                    try db.execute(
                        "INSERT INTO outbox_sent_results (job, first_n, last_n, ns, results) VALUES (?, ?, ?, ?, ?)",
                        [.int(seq), .int(first), .int(last), .text("[" + sentNs.map(String.init).joined(separator: ",") + "]"),
                         .text(String(decoding: sentTexts + [UInt8(ascii: "]")], as: UTF8.self))])
                }
                if sent + failed > 0 {
                    try db.execute(
                        "UPDATE outbox_jobs SET sent = sent + ?, failed = failed + ?, canceled = canceled - ? WHERE seq = ?",
                        [.int(Int64(sent)), .int(Int64(failed)), .int(Int64(uncanceled)), .int(seq)])
                }
                try Self.finishIfDone(store, seq: seq, id: job, now: now)
                return (Optional(seq), applied)
            }
            // Committed: these rows are no longer on the wire, nor leased.
            if let seq { leases.release(job: seq, outcomes.map { ($0.n, $0.fence) }) }
            return applied
        } catch {
            // Not recorded: the rows are let go (no longer kept alive by their owner's claims)
            // and claimed again when their lease ends (at-least-once).
            leases.letGo(job: job, outcomes.map { ($0.n, $0.fence) })
            throw error
        }
    }

    public func cancel(job: String, now: Int64) async throws(CommandError) -> OutboxJob? {
        try await registry.run(write: true, durable: true) { store in
            let db = store.db
            guard let (seq, j) = try Self.load(db, id: job) else { return nil }
            guard j.stored == .queued || j.stored == .running else { return j }
            try db.execute("UPDATE outbox_deliveries SET state = 3 WHERE job = ? AND state = 0", [.int(seq)])
            let rows = db.changes
            let chunked = try db.query(
                "SELECT COALESCE(SUM(last_n - first_n + 1), 0) FROM outbox_chunks WHERE job = ? AND state = 0", [.int(seq)]) { Int($0.int(0)) }.first ?? 0
            try db.execute("UPDATE outbox_chunks SET state = 3 WHERE job = ? AND state = 0", [.int(seq)])
            // Devices of the target not resolved yet are canceled too (counted by the plan's estimate).
            let unresolved = j.resolved ? 0 : max(0, j.estimate - j.devices)
            let n = rows + chunked + unresolved
            try db.execute(
                "UPDATE outbox_jobs SET state = 'canceled', canceled = canceled + ?, devices = devices + ?, resolved = 1, finished_at = ? WHERE seq = ?",
                [.int(Int64(n)), .int(Int64(unresolved)), .int(now), .int(seq)])
            guard let (_, after) = try Self.load(db, id: job) else { return nil }
            try store.appendEvents([PushEvent(.jobCanceled, at: now, [
                "job": .string(job), "devices": .int(Int64(after.devices)), "sent": .int(Int64(after.sent)),
                "failed": .int(Int64(after.failed)), "canceled": .int(Int64(after.canceled)),
            ])])
            return after
        }
    }

    public func job(_ id: String) async throws(CommandError) -> OutboxJob? {
        try await registry.run(write: false) { store in try Self.load(store.db, id: id)?.job }
    }

    public func results(job: String, after: Int64, limit: Int) async throws(CommandError) -> [OutboxResultRow] {
        try await registry.run(write: false) { store in
            let db = store.db
            guard let seq = try Self.seq(db, id: job) else { return [] }
            let states = ["pending", "sent", "failed", "canceled"]
            // A job's deliveries are numbered without gaps from 0, each in one place: a delivery
            // row, a chunk (pending or canceled, never attempted), or a sent batch of
            // `outbox_sent_results` (sent from a chunk). A page is the numbers `lo...hi` found.
            let lo = after + 1
            let hi = after + Int64(max(0, min(limit, 100_000)))
            guard hi >= lo else { return [] }
            var found: [Int64: OutboxResultRow] = [:]
            _ = try db.query(
                "SELECT n, state, attempts, result FROM outbox_deliveries WHERE job = ? AND n >= ? AND n <= ?",
                [.int(seq), .int(lo), .int(hi)]
            ) { s in
                let st = Int(s.int(1))
                found[s.int(0)] = OutboxResultRow(
                    n: s.int(0), state: st < states.count ? states[st] : "pending", attempts: Int(s.int(2)),
                    result: s.text(3).flatMap { (try? JSONValue.parse($0))?.objectValue })
            }
            // Chunks overlap no other: the ones ending at `lo` or later, from the last one
            // starting at `hi` or before, down.
            let chunks = try db.statement(
                "SELECT first_n, last_n, state FROM outbox_chunks WHERE job = ? AND first_n <= ? ORDER BY first_n DESC")
            try chunks.bind([.int(seq), .int(hi)])
            defer { chunks.reset() }
            while try chunks.step() {
                let (first, last, st) = (chunks.int(0), chunks.int(1), Int(chunks.int(2)))
                if last < lo { break }
                for n in max(first, lo)...min(last, hi) where found[n] == nil {
                    found[n] = OutboxResultRow(n: n, state: st < states.count ? states[st] : "pending", attempts: 0, result: nil)
                }
            }
            // Sent results of a completion, for rows sent since `outboxSentResults` (their
            // `result` is NULL) and devices sent from a chunk (no row).
            let batches = try db.query(
                "SELECT ns, results FROM outbox_sent_results WHERE job = ? AND last_n >= ? AND first_n <= ?",
                [.int(seq), .int(lo), .int(hi)]
            ) { s in (s.text(0) ?? "[]", s.text(1) ?? "[]") }
            for (nsText, resultsText) in batches {
                guard let ns = (try? JSONValue.parse(nsText))?.arrayValue, let results = (try? JSONValue.parse(resultsText))?.arrayValue,
                      ns.count == results.count else { continue }
                for (n, r) in zip(ns, results) {
                    guard let n = n.intValue, n >= lo, n <= hi else { continue }
                    if let row = found[n] {
                        if row.state == "sent" && row.result == nil { found[n]?.result = r.objectValue }
                    } else {
                        let result = r.objectValue
                        found[n] = OutboxResultRow(n: n, state: "sent", attempts: Int(result?["attempts"]?.intValue ?? 1), result: result)
                    }
                }
            }
            return found.values.sorted { $0.n < $1.n }
        }
    }

    public func jobs(state: OutboxJobState?, app: String?, after: String?, limit: Int) async throws(CommandError) -> [OutboxJob] {
        try await registry.run(write: false) { store in
            let db = store.db
            var seqBound = Int64.max
            if let after {
                guard let (seq, _) = try Self.load(db, id: after) else { throw CommandError.invalid("after", "no job '\(after)'") }
                seqBound = seq
            }
            var sql = "SELECT \(Self.jobColumns) FROM outbox_jobs WHERE seq < ?"
            var args: [SQLValue] = [.int(seqBound)]
            let now = nowMillis()
            switch state {
            case .scheduled?: sql += " AND state = 'queued' AND send_at > ?"; args.append(.int(now))
            case .queued?: sql += " AND state = 'queued' AND send_at <= ?"; args.append(.int(now))
            case let s?: sql += " AND state = ?"; args.append(.text(s.rawValue))
            case nil: break
            }
            if let app { sql += " AND app = ?"; args.append(.text(app)) }
            sql += " ORDER BY seq DESC LIMIT ?"
            args.append(.int(Int64(limit)))
            return try db.query(sql, args) { s in Self.job(s) }
        }
    }

    public func recover(owner: String, now: Int64) async throws(CommandError) -> Int {
        let leases = self.leases
        return try await registry.run(write: true, durable: true, background: true) { store in
            // Leases written by an earlier version (this one keeps them in memory).
            try store.db.execute(
                "UPDATE outbox_deliveries SET lease_owner = NULL, lease_until = NULL WHERE state = 0 AND lease_until IS NOT NULL AND lease_owner IS NOT ?",
                [.text(owner)])
            return store.db.changes + leases.dropAll(notOwnedBy: owner)
        }
    }

    public func prune(finishedBefore before: Int64) async throws(CommandError) -> Int {
        try await registry.run(write: true, background: true) { store in
            let db = store.db
            let seqs = try db.query(
                "SELECT seq FROM outbox_jobs WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT 100", [.int(before)]) { $0.int(0) }
            for seq in seqs {
                try db.execute("DELETE FROM outbox_deliveries WHERE job = ?", [.int(seq)])
                try db.execute("DELETE FROM outbox_sent_results WHERE job = ?", [.int(seq)])
                try db.execute("DELETE FROM outbox_chunks WHERE job = ?", [.int(seq)])
                try db.execute("DELETE FROM outbox_jobs WHERE seq = ?", [.int(seq)])
            }
            return seqs.count
        }
    }

    public func depth() async throws(CommandError) -> OutboxDepth {
        try await registry.run(write: false, background: true) { store in
            let r = try store.db.query(
                """
                SELECT COALESCE(SUM(MAX(CASE WHEN resolved = 1 THEN devices ELSE MAX(devices, estimate) END - sent - failed - canceled, 0)), 0),
                       MIN(created_at), COUNT(*)
                FROM outbox_jobs WHERE state IN ('queued', 'running')
                """
            ) { s in OutboxDepth(queued: Int(s.int(0)), oldestQueuedAt: s.optionalInt(1), liveJobs: Int(s.int(2))) }
            return r.first ?? OutboxDepth(queued: 0, oldestQueuedAt: nil, liveJobs: 0)
        }
    }

    public func nextDue() async throws(CommandError) -> Int64? {
        let leases = self.leases
        return try await registry.run(write: false, background: true) { store in
            let db = store.db
            let a = try db.query(
                "SELECT MIN(send_at) FROM outbox_jobs WHERE resolved = 0 AND state IN ('queued', 'running')") { $0.optionalInt(0) }.first ?? nil
            // A pending row not leased is due at `next_at`; a leased one (a batch on the wire, or
            // one whose completion failed) when its lease ends: in memory, or in the database
            // (an earlier version's, until `recover`). The rows on the wire are stepped over in
            // the claim index.
            var due: [Int64?] = [a, leases.earliestEnd().map { $0 + 1 }]
            let b = try db.query(
                """
                SELECT MIN((SELECT MIN(lease_until) FROM outbox_deliveries d INDEXED BY outbox_deliveries_claim
                            WHERE d.job = j.seq AND d.state = 0 AND d.lease_until IS NOT NULL)) + 1
                FROM outbox_jobs j WHERE j.state = 'running'
                """) { $0.optionalInt(0) }.first ?? nil
            due.append(b)
            let seqs = try db.query("SELECT seq FROM outbox_jobs WHERE state = 'running'") { $0.int(0) }
            let first = try db.statement(
                """
                SELECT n, next_at FROM outbox_deliveries INDEXED BY outbox_deliveries_claim
                WHERE job = ? AND state = 0 AND lease_until IS NULL ORDER BY next_at, n
                """)
            // A chunk is due at its `next_at` while a device of it is not on the wire.
            let chunks = try db.statement("SELECT first_n, last_n, next_at FROM outbox_chunks WHERE job = ? AND state = 0 ORDER BY first_n")
            for seq in seqs {
                let held = leases.snapshot(job: seq)
                for (statement, isChunk) in [(first, false), (chunks, true)] {
                    try statement.bind([.int(seq)])
                    defer { statement.reset() }
                    scan: while try statement.step() {
                        if isChunk {
                            for n in statement.int(0)...max(statement.int(0), statement.int(1)) where held[n] == nil {
                                due.append(statement.int(2))
                                break scan
                            }
                        } else if held[statement.int(0)] == nil {
                            due.append(statement.int(1))
                            break
                        }
                    }
                }
            }
            return due.compactMap { $0 }.min()
        }
    }
}

/// The SQLite outbox's leases, in memory: which pending deliveries are claimed (on the wire),
/// by which owner, until when, under which fence.
///
/// SQLite has one daemon per database file, so a lease only has to hold within this process:
/// after a crash or a restart, `recover` makes every pending row claimable anyway (the rows that
/// were on the wire go out again; nothing else does). Kept in memory, a claim writes nothing per
/// row (before, an UPDATE of the row and its index entry: about 3 µs of the database thread per
/// delivery, issue 13's background rate); the completion writes the fence with the result, so
/// the next claim of a retried row gets a higher one. Expiry, keep-alive and stale completions
/// behave as the leases in the database did:
/// - each claim first extends its owner's leases that end within half a lease (a batch on the
///   wire longer than `lease_ms`, e.g. waiting for a Retry-After, is not claimed and sent again);
/// - an expired lease of another owner (or one let go by a failed completion) is claimed again,
///   with a higher fence; the first owner's late completion is then dropped;
/// - leases held longer than `maxHoldMs` are dropped (a completion that never came).
/// Every call but `letGo` and `drop` (after a failed transaction) runs on the database thread,
/// in the transaction of the claim or completion it belongs to.
final class SQLiteOutboxLeases: Sendable {
    struct Held: Sendable {
        var owner: String
        var fence: Int64
        var until: Int64
        var since: Int64
        /// Claimed from a chunk (`SQLiteOutboxChunk`), not a delivery row.
        var inChunk: Bool
    }
    struct State {
        /// Per job (its `seq`): the leased rows by delivery number.
        var jobs: [Int64: [Int64: Held]] = [:]
        /// Job id to `seq` of the jobs in `jobs` (a failed completion names its job by id).
        var seqOf: [String: Int64] = [:]
    }
    let state = Mutex(State())

    /// How long a claimed row is kept alive at most, should its completion never come: beyond
    /// any round (request timeouts, and providers honour a Retry-After of up to an hour twice).
    static let maxHoldMs: Int64 = 3 * 3_600_000

    /// Extends `owner`'s leases that end within half a lease; drops those held past `maxHoldMs`.
    func keepAlive(owner: String, now: Int64, leaseMs: Int64) {
        state.withLock { s in
            for (seq, rows) in s.jobs {
                var rows = rows
                var changed = false
                for (n, h) in rows {
                    if now - h.since >= Self.maxHoldMs {
                        rows[n] = nil
                        changed = true
                    } else if h.owner == owner && h.until - now < leaseMs / 2 {
                        rows[n]?.until = now + leaseMs
                        changed = true
                    }
                }
                if changed { s.jobs[seq] = rows.isEmpty ? nil : rows }
            }
            if s.jobs.count < s.seqOf.count { s.seqOf = s.seqOf.filter { s.jobs[$0.value] != nil } }
        }
    }

    /// Jobs with an expired lease at `now`.
    func jobsWithExpiredLeases(now: Int64) -> [Int64] {
        state.withLock { s in s.jobs.compactMap { seq, rows in rows.values.contains { $0.until < now } ? seq : nil } }
    }

    /// Up to `limit` rows of `job` whose lease expired, the oldest lease first.
    func expired(job: Int64, now: Int64, limit: Int) -> [Int64] {
        state.withLock { s in
            guard let rows = s.jobs[job] else { return [] }
            return rows.filter { $0.value.until < now }.sorted { ($0.value.until, $0.key) < ($1.value.until, $1.key) }.prefix(limit).map(\.key)
        }
    }

    /// `job`'s leased rows now (a copy on write: let it go before the next change).
    func snapshot(job: Int64) -> [Int64: Held] {
        state.withLock { s in s.jobs[job] ?? [:] }
    }

    /// Leases `rows` (number, fence written by the last completion) of `job` to `owner` until
    /// `until`; returns each row's new fence: higher than the stored one and than the lease it
    /// replaces (an expired one).
    func take(job: Int64, id: String, _ rows: [(n: Int64, stored: Int64, inChunk: Bool)], owner: String, until: Int64, now: Int64) -> [Int64] {
        guard !rows.isEmpty else { return [] }
        return state.withLock { s in
            s.seqOf[id] = job
            // Moved out and back (its only reference, so changed in place, not copied), grown
            // once for the batch: one hash of the job, not two a row, and no rehash on the way.
            var held = s.jobs.removeValue(forKey: job) ?? [:]
            held.reserveCapacity(held.count + rows.count)
            let fences = rows.map { r in
                let fence = max(r.stored, held[r.n]?.fence ?? 0) + 1
                held[r.n] = Held(owner: owner, fence: fence, until: until, since: now, inChunk: r.inChunk)
                return fence
            }
            s.jobs[job] = held
            return fences
        }
    }

    /// The fence of each row's lease, and whether it was claimed from a chunk (nil: not leased).
    func held(job: Int64, _ ns: [Int64]) -> [(fence: Int64, inChunk: Bool)?] {
        state.withLock { s in
            let held = s.jobs[job]
            return ns.map { n in held?[n].map { ($0.fence, $0.inChunk) } }
        }
    }

    /// Ends the leases of a recorded completion (those still under its fences).
    func release(job: Int64, _ rows: [(n: Int64, fence: Int64)]) {
        state.withLock { s in
            // Moved out and back, as in `take`.
            guard var held = s.jobs.removeValue(forKey: job) else { return }
            for (n, fence) in rows where held[n]?.fence == fence { held[n] = nil }
            if !held.isEmpty { s.jobs[job] = held }
        }
    }

    /// A completion that was not recorded: its leases (still under its fences) are no longer
    /// kept alive, and end at their expiry.
    func letGo(job id: String, _ rows: [(n: Int64, fence: Int64)]) {
        state.withLock { s in
            guard let job = s.seqOf[id] else { return }
            for (n, fence) in rows where s.jobs[job]?[n]?.fence == fence { s.jobs[job]?[n]?.owner = "" }
        }
    }

    /// Removes the leases of a claim that did not commit.
    func drop(_ rows: [(seq: Int64, n: Int64, fence: Int64)]) {
        guard !rows.isEmpty else { return }
        state.withLock { s in
            for r in rows where s.jobs[r.seq]?[r.n]?.fence == r.fence { s.jobs[r.seq]?[r.n] = nil }
            s.jobs = s.jobs.filter { !$0.value.isEmpty }
        }
    }

    /// Drops every lease not held by `owner` (`recover`); returns how many.
    func dropAll(notOwnedBy owner: String) -> Int {
        state.withLock { s in
            var count = 0
            for (seq, rows) in s.jobs {
                let kept = rows.filter { $0.value.owner == owner }
                count += rows.count - kept.count
                s.jobs[seq] = kept.isEmpty ? nil : kept
            }
            return count
        }
    }

    /// The earliest end of a lease, if any.
    func earliestEnd() -> Int64? {
        state.withLock { s in s.jobs.values.flatMap { $0.values.map(\.until) }.min() }
    }
}
