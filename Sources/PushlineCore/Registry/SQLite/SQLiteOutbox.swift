import Synchronization

/// The outbox in the registry's SQLite database, run on its thread through `SQLiteRegistry.run`:
/// accepts from many connections share one transaction (group commit), and every outbox write
/// commits with `synchronous=FULL` (`durable`), so an answered accept survives power loss.
public final class SQLiteOutbox: Outbox {
    let registry: SQLiteRegistry

    /// Notifications without a final result (the `max_queued` admission).
    let queued = OutboxQueuedCount()

    public init(registry: SQLiteRegistry) { self.registry = registry }

    /// A delivery this process claimed and has not completed yet (a batch on the wire).
    struct HeldKey: Hashable { var job: String; var n: Int64 }
    struct Held { var owner: String; var fence: Int64; var until: Int64; var since: Int64 }
    /// This process's claims not completed yet, with their owner, fence, lease end and claim time.
    ///
    /// SQLite has one daemon per database file, so the only claim that can take a delivery
    /// whose lease ran out is this process's own: a round longer than `lease_ms` (a slow
    /// provider, retries waiting for Retry-After) would otherwise be claimed and sent again
    /// while it is still on the wire, and its first completion dropped as stale. So each claim
    /// first extends the leases of these rows that run out within half a lease (a heartbeat
    /// that needs no timer: nothing but a claim reads leases). A completion, applied or failed,
    /// lets its rows go: a failed one's rows are claimed again when their lease ends
    /// (at-least-once), and the fence still drops a stale completion. Only the claims of the
    /// same owner (the worker) keep its rows: another owner takes them once the lease ends.
    let held = Mutex<[HeldKey: Held]>([:])
    /// How long a claimed row is kept alive at most, should its completion never come: beyond
    /// any round (request timeouts, and providers honour a Retry-After of up to an hour twice).
    static let maxHoldMs: Int64 = 3 * 3_600_000

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
            let insert = try db.statement(
                "INSERT INTO outbox_deliveries (job, n, message, device_id, raw, state, next_at, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            var n = Int64(j.devices)
            var failed = 0
            for r in rows {
                if r.rejected != nil { failed += 1 }
                try insert.bind([
                    .int(seq), .int(n), .from(r.message.map { Int64($0) }), .from(r.deviceId), .from(r.rawText),
                    .int(r.rejected == nil ? 0 : 2), .int(now), .from(r.rejectedText),
                ])
                defer { insert.reset() }
                _ = try insert.step()
                n += 1
            }
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
        let (out, extended): ([OutboxClaim], [(HeldKey, Int64)]) = try await registry.run(write: true, background: true) { store in
            let db = store.db
            let extended = try self.keepHeldLeases(db, owner: owner, now: now, leaseMs: leaseMs)
            // Jobs with due work, least recently served first (fairness between large and small jobs).
            // Due work: a pending row not leased, or whose lease expired (two ranges of the
            // claim index each, see `Migrations.outboxClaimIndex`).
            let jobs = try db.query(
                """
                SELECT \(Self.jobColumns) FROM outbox_jobs j
                WHERE j.state = 'running' AND (EXISTS (
                    SELECT 1 FROM outbox_deliveries d INDEXED BY outbox_deliveries_claim
                    WHERE d.job = j.seq AND d.state = 0 AND d.lease_until IS NULL AND d.next_at <= ?1
                  ) OR EXISTS (
                    SELECT 1 FROM outbox_deliveries d INDEXED BY outbox_deliveries_claim
                    WHERE d.job = j.seq AND d.state = 0 AND d.lease_until < ?1 AND d.next_at <= ?1))\(skip)
                ORDER BY j.served, j.seq LIMIT ?2
                """, args
            ) { s in (s.int(0), Self.job(s)) }
            var out: [OutboxClaim] = []
            // The rows of an expired lease first (the older work), then the due rows not leased,
            // oldest due first: each an index range in its order, no row on the wire stepped over.
            let selects = try ["lease_until < ?2 AND next_at <= ?2 ORDER BY lease_until, next_at, n",
                               "lease_until IS NULL AND next_at <= ?2 ORDER BY next_at, n"].map { range throws(DatabaseError) in
                try db.statement(
                    """
                    SELECT n, message, device_id, raw, attempts, fence FROM outbox_deliveries INDEXED BY outbox_deliveries_claim
                    WHERE job = ?1 AND state = 0 AND \(range) LIMIT ?3
                    """)
            }
            let lease = try db.statement(
                "UPDATE outbox_deliveries SET lease_owner = ?, lease_until = ?, fence = fence + 1 WHERE job = ? AND n = ?")
            var total = 0
            for (seq, job) in jobs where total < maxRows {
                var rows: [(n: Int64, message: Int?, deviceId: Int64?, raw: String?, attempts: Int, fence: Int64)] = []
                let want = min(perJob, maxRows - total)
                for select in selects where rows.count < want {
                    try select.bind([.int(seq), .int(now), .int(Int64(want - rows.count))])
                    defer { select.reset() }
                    while try select.step() {
                        rows.append((select.int(0), select.optionalInt(1).map { Int($0) }, select.optionalInt(2), select.text(3),
                                     Int(select.int(4)), select.int(5)))
                    }
                }
                var devices: [Int64: Device] = [:]
                let ids = rows.compactMap { $0.raw == nil ? $0.deviceId : nil }
                if !ids.isEmpty {
                    var f = DeviceFilter()
                    f.ids = ids
                    for d in try store.devices(f) { devices[d.id] = d }
                }
                var list: [OutboxDelivery] = []
                list.reserveCapacity(rows.count)
                for (n, message, deviceId, raw, attempts, fence) in rows {
                    try lease.bind([.text(owner), .int(now + leaseMs), .int(seq), .int(n)])
                    defer { lease.reset() }
                    _ = try lease.step()
                    var device: Device?
                    if let raw { device = Self.rawDevice(raw) } else if let deviceId { device = devices[deviceId] }
                    list.append(OutboxDelivery(n: n, message: message, device: device, deviceId: deviceId, attempts: attempts, fence: fence + 1))
                }
                // Served at `now`: the next claims take the jobs served longest ago first.
                try db.execute("UPDATE outbox_jobs SET served = ? WHERE seq = ?", [.int(now), .int(seq)])
                total += list.count
                if !list.isEmpty { out.append(OutboxClaim(job: job, deliveries: list)) }
            }
            return (out, extended)
        }
        // Committed: the new leases and the extended ones are this process's to keep alive.
        held.withLock { h in
            for (k, fence) in extended where h[k]?.fence == fence { h[k]?.until = now + leaseMs }
            for c in out {
                for x in c.deliveries {
                    h[HeldKey(job: c.job.id, n: x.n)] = Held(owner: owner, fence: x.fence, until: now + leaseMs, since: now)
                }
            }
        }
        return out
    }

    /// Extends the leases of `owner`'s claims still on the wire that end within half a lease
    /// (see `held`); rows held past `maxHoldMs` are let go. Returns the rows extended
    /// (recorded in `held` once the claim commits).
    func keepHeldLeases(_ db: Database, owner: String, now: Int64, leaseMs: Int64) throws -> [(HeldKey, Int64)] {
        let due: [(HeldKey, Int64)] = held.withLock { h in
            h = h.filter { now - $0.value.since < Self.maxHoldMs }
            return h.compactMap { k, v in v.owner == owner && v.until - now < leaseMs / 2 ? (k, v.fence) : nil }
        }
        guard !due.isEmpty else { return [] }
        let extend = try db.statement(
            """
            UPDATE outbox_deliveries SET lease_until = ?
            WHERE job = (SELECT seq FROM outbox_jobs WHERE id = ?) AND n = ? AND fence = ? AND state = 0 AND lease_owner = ?
            """)
        for (k, fence) in due {
            try extend.bind([.int(now + leaseMs), .text(k.job), .int(k.n), .int(fence), .text(owner)])
            defer { extend.reset() }
            _ = try extend.step()
        }
        return due
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
        // Applied or not, these rows are no longer on the wire (see `held`).
        defer {
            held.withLock { h in
                for o in outcomes where h[HeldKey(job: job, n: o.n)]?.fence == o.fence { h[HeldKey(job: job, n: o.n)] = nil }
            }
        }
        return try await registry.run(write: true, durable: true, background: true) { store in
            let db = store.db
            guard let (seq, _) = try Self.load(db, id: job) else { return 0 }
            let read = try db.statement("SELECT state, fence FROM outbox_deliveries WHERE job = ? AND n = ?")
            let update = try db.statement(
                """
                UPDATE outbox_deliveries SET state = ?, next_at = ?, attempts = attempts + 1, lease_owner = NULL, lease_until = NULL,
                    result = ? WHERE job = ? AND n = ?
                """)
            // The usual case in one statement: the row still pending under this claim's fence.
            let pending = try db.statement(
                """
                UPDATE outbox_deliveries SET state = ?1, next_at = ?2, attempts = attempts + 1, lease_owner = NULL, lease_until = NULL,
                    result = ?3 WHERE job = ?4 AND n = ?5 AND fence = ?6 AND state = 0
                """)
            var applied = 0
            var (sent, failed, uncanceled) = (0, 0, 0)
            for o in outcomes {
                let (newState, nextAt): (Int64, Int64) = switch o.kind {
                case .sent: (1, now)
                case .failed: (2, now)
                case .retry(let at): (0, at)
                }
                let text = JSONValue.object(o.result).jsonString
                try pending.bind([.int(newState), .int(nextAt), .text(text), .int(seq), .int(o.n), .int(o.fence)])
                _ = try pending.step()
                pending.reset()
                if db.changes == 1 {
                    if newState == 1 { sent += 1 } else if newState == 2 { failed += 1 }
                    applied += 1
                    continue
                }
                // Otherwise: stale (fence moved on), final already, or canceled while on the wire.
                try read.bind([.int(seq), .int(o.n)])
                let row: (Int64, Int64)? = try read.step() ? (read.int(0), read.int(1)) : nil
                read.reset()
                // A stale claim (fence moved on), or a row already final: dropped.
                guard let (state, fence) = row, fence == o.fence, state == 0 || state == 3 else { continue }
                switch o.kind {
                case .sent: sent += 1
                case .failed: failed += 1
                // A canceled row is not retried.
                case .retry: if state == 3 { continue }
                }
                if state == 3 { uncanceled += 1 }
                try update.bind([.int(newState), .int(nextAt), .text(text), .int(seq), .int(o.n)])
                defer { update.reset() }
                _ = try update.step()
                applied += 1
            }
            if sent + failed > 0 {
                try db.execute(
                    "UPDATE outbox_jobs SET sent = sent + ?, failed = failed + ?, canceled = canceled - ? WHERE seq = ?",
                    [.int(Int64(sent)), .int(Int64(failed)), .int(Int64(uncanceled)), .int(seq)])
            }
            try Self.finishIfDone(store, seq: seq, id: job, now: now)
            return applied
        }
    }

    public func cancel(job: String, now: Int64) async throws(CommandError) -> OutboxJob? {
        try await registry.run(write: true, durable: true) { store in
            let db = store.db
            guard let (seq, j) = try Self.load(db, id: job) else { return nil }
            guard j.stored == .queued || j.stored == .running else { return j }
            try db.execute("UPDATE outbox_deliveries SET state = 3 WHERE job = ? AND state = 0", [.int(seq)])
            // Devices of the target not resolved yet are canceled too (counted by the plan's estimate).
            let unresolved = j.resolved ? 0 : max(0, j.estimate - j.devices)
            let n = db.changes + unresolved
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
            guard let (seq, _) = try Self.load(store.db, id: job) else { return [] }
            return try store.db.query(
                "SELECT n, state, attempts, result FROM outbox_deliveries WHERE job = ? AND n > ? ORDER BY n LIMIT ?",
                [.int(seq), .int(after), .int(Int64(limit))]
            ) { s in
                let states = ["pending", "sent", "failed", "canceled"]
                let st = Int(s.int(1))
                return OutboxResultRow(
                    n: s.int(0), state: st < states.count ? states[st] : "pending", attempts: Int(s.int(2)),
                    result: s.text(3).flatMap { (try? JSONValue.parse($0))?.objectValue })
            }
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
        try await registry.run(write: true, durable: true, background: true) { store in
            try store.db.execute(
                "UPDATE outbox_deliveries SET lease_owner = NULL, lease_until = NULL WHERE state = 0 AND lease_until IS NOT NULL AND lease_owner IS NOT ?",
                [.text(owner)])
            return store.db.changes
        }
    }

    public func prune(finishedBefore before: Int64) async throws(CommandError) -> Int {
        try await registry.run(write: true, background: true) { store in
            let db = store.db
            let seqs = try db.query(
                "SELECT seq FROM outbox_jobs WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT 100", [.int(before)]) { $0.int(0) }
            for seq in seqs {
                try db.execute("DELETE FROM outbox_deliveries WHERE job = ?", [.int(seq)])
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
        try await registry.run(write: false, background: true) { store in
            let a = try store.db.query(
                "SELECT MIN(send_at) FROM outbox_jobs WHERE resolved = 0 AND state IN ('queued', 'running')") { $0.optionalInt(0) }.first ?? nil
            // A pending row not leased is due at `next_at`; a leased one (a batch on the wire,
            // or one whose completion failed) when its lease ends. Two index lookups per job.
            let b = try store.db.query(
                """
                SELECT MIN((SELECT MIN(next_at) FROM outbox_deliveries d INDEXED BY outbox_deliveries_claim
                            WHERE d.job = j.seq AND d.state = 0 AND d.lease_until IS NULL)),
                       MIN((SELECT MIN(lease_until) FROM outbox_deliveries d INDEXED BY outbox_deliveries_claim
                            WHERE d.job = j.seq AND d.state = 0 AND d.lease_until IS NOT NULL)) + 1
                FROM outbox_jobs j WHERE j.state = 'running'
                """) { ($0.optionalInt(0), $0.optionalInt(1)) }.first ?? (nil, nil)
            return [a, b.0, b.1].compactMap { $0 }.min()
        }
    }
}
