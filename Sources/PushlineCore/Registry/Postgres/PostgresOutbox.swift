import Logging
import Synchronization

/// The outbox on PostgreSQL, shared by every daemon of a fleet: `SQLiteOutbox`'s semantics
/// (protocol.md, `async`; `Outbox`) with the tables of `PostgresMigrations.outbox`.
///
/// What a fleet adds:
/// - Claims take due rows with `FOR UPDATE SKIP LOCKED` in a CTE, so daemons claiming at once
///   get disjoint rows without waiting; each claim sets the lease (owner, `lease_until`) and
///   bumps `fence`, the fencing token `complete` checks (a stale owner's results are dropped).
/// - A leased row stays its owner's while the owner is alive: every third of the lease the
///   heartbeat renews the daemon's row in `outbox_owners` (`alive_until`), one row however many
///   deliveries it holds. A daemon killed with -9 stops beating, and the others claim its rows
///   once both its `alive_until` and the rows' `lease_until` have passed. A row its owner never
///   completes is let go `maxHoldMs` after its lease, alive or not. (The heartbeat used to
///   extend every held row's `lease_until`: thousands of row updates a beat, which under load
///   took longer than a 2 s lease, so live daemons' rows were taken over and sent again.)
///   Rows leased by a daemon without an `outbox_owners` row (a version before it) are taken
///   once their `lease_until` passes, as then.
/// - A job's target is resolved by one daemon at a time: `startable` leases the job
///   (`resolver`, `resolve_until`) and `appendDeliveries` applies only for the resolver and the
///   cursor it was handed, so no chunk is appended twice.
/// - Idempotency keys: a transaction-level advisory lock on (app, key) orders two daemons that
///   accept the same key at once; the second sees the first's job.
/// - After a commit that made work claimable, `NOTIFY pushline_outbox` (at most one per
///   transaction: PostgreSQL folds duplicates) wakes the idle daemons; their listener also
///   wakes them every `poll_ms`.
/// - Lease owners are `<instance>/<worker owner>`: a daemon restarted with the same instance
///   (host and socket) takes back its previous process's leases at once (`recover`); another
///   daemon's leases are only taken when they expire.
public final class PostgresOutbox: Outbox {
    let registry: PostgresRegistry
    /// This daemon in the fleet (host and socket path).
    let instance: String
    let logger: Logger?

    /// Notifications without a final result (the `max_queued` admission).
    let queued: OutboxQueuedCount

    /// What this daemon holds. Claims are made under `<instance>/<worker owner>#<epoch>`; a
    /// database error in a claim or a completion (a claim may have committed unseen, a result
    /// could not be recorded) starts a new epoch, and the previous name is kept alive only while
    /// rows this daemon knows it claimed under it are still being sent: then the rows it lost
    /// track of are let go a lease later, as a dead daemon's are, instead of being held while the
    /// daemon lives (a 1-device job stayed pending 120 s after PostgreSQL came back).
    struct InFlight {
        /// `<instance>/<worker owner>`, once this daemon claimed anything.
        var base = ""
        var epoch = 0
        var leaseMs: Int64 = 30_000
        /// The `alive_until` last written for the current name (Unix ms).
        var aliveUntil: Int64 = 0
        /// Rows claimed and not completed, by the name they were claimed under.
        var rows: [RowKey: String] = [:]
        var held: [String: Int] = [:]

        var current: String { base + "#" + String(epoch) }
        /// The names to keep alive: the current one, and earlier ones still holding rows.
        var alive: [String] { base.isEmpty ? [] : Array(Set(held.keys).union([current])) }

        mutating func newEpoch() {
            epoch += 1
            aliveUntil = 0
        }

        mutating func release(_ key: RowKey) {
            guard let name = rows.removeValue(forKey: key) else { return }
            let left = (held[name] ?? 1) - 1
            held[name] = left > 0 ? left : nil
        }
    }
    struct RowKey: Hashable { var job: String; var n: Int64; var fence: Int64 }
    let inFlight = Mutex(InFlight())
    /// Jobs this daemon was handed to resolve, with the cursor it was handed (job id -> (seq, cursor)).
    let resolving = Mutex<[String: (seq: Int64, cursor: String?)]>([:])
    private let heartbeat = Mutex<Task<Void, Never>?>(nil)
    /// Wakes the heartbeat when a claim changed the lease (or this outbox stops).
    private let leaseChanged = EventSignal()

    /// Accepts, group-committed (`acceptBatch`).
    let accepts: PGGroupCommit<AcceptCall, AcceptResult>
    /// Completions, group-committed (`completeBatch`).
    let completes: PGGroupCommit<CompleteCall, CompleteResult>

    public init(registry: PostgresRegistry, instance: String, logger: Logger? = nil) {
        self.registry = registry
        self.instance = instance
        self.logger = logger
        let queued = OutboxQueuedCount()
        self.queued = queued
        accepts = PGGroupCommit(pool: registry.pool, maxBatch: 1000) { s, calls in try Self.acceptBatch(s, calls, queued: queued) }
        completes = PGGroupCommit(pool: registry.pool, maxBatch: 64) { s, calls in try Self.completeBatch(s, calls) }
    }

    /// Starts the heartbeat: every third of the lease, this daemon's `alive_until`.
    public func start() {
        let t = Task { [self] in
            var last = nowMillis()
            while !Task.isCancelled {
                // One timer until the next beat is due (it used to look every 100 ms, idle or
                // not); a claim with another lease (the first: `lease_ms` is only known then)
                // wakes it to count again.
                let seen = leaseChanged.generation
                let now = nowMillis()
                let (names, leaseMs) = inFlight.withLock { ($0.alive, $0.leaseMs) }
                guard now - last >= leaseMs / 3, !names.isEmpty else {
                    let wait = names.isEmpty ? leaseMs / 3 : last + leaseMs / 3 - now
                    await leaseChanged.wait(seen: seen, until: .now + .milliseconds(max(10, wait)))
                    if Task.isCancelled || leaseChanged.isClosed { return }
                    continue
                }
                last = now
                do throws(CommandError) {
                    try await beat(names, leaseMs: leaseMs)
                } catch {
                    logger?.warning("outbox: heartbeat failed", metadata: ["error": "\(error.message)"])
                }
            }
        }
        heartbeat.withLock { $0 = t }
    }

    /// How long a row stays leased past its `lease_until` while its owner is alive but does not
    /// complete it (well beyond a provider request's timeout): then another claim sends it.
    static let maxHoldMs: Int64 = 120_000

    public func stop() {
        heartbeat.withLock { $0?.cancel() }
        leaseChanged.close()
    }

    func leaseOwner(_ owner: String) -> String { instance + "/" + owner }

    /// Renews the `alive_until` of `names`, ahead of the queued work (a beat waiting behind a
    /// backlog could let the lease lapse), from when it runs.
    func beat(_ names: [String], leaseMs: Int64) async throws(CommandError) {
        let until = try await registry.run(write: true, urgent: true) { s in
            let until = nowMillis() + leaseMs
            try Self.markAlive(s.c, names, until: until)
            return until
        }
        inFlight.withLock { f in if names.contains(f.current) { f.aliveUntil = max(f.aliveUntil, until) } }
    }

    static func markAlive(_ c: PGConnection, _ names: [String], until: Int64) throws {
        try c.query(
            """
            INSERT INTO outbox_owners (owner, alive_until) SELECT unnest($1::text[]), $2
            ON CONFLICT (owner) DO UPDATE SET alive_until = greatest(outbox_owners.alive_until, excluded.alive_until)
            """, [PGConnection.array(names.map { Optional($0) }), .int(until)])
    }

    /// SQL: delivery `d` (state 0) may be claimed at `now` (a parameter such as `$1`): not
    /// leased, or its lease passed and its owner is dead (or never beat: an older version), or
    /// its owner held it `maxHoldMs` past the lease.
    static func claimable(now: String) -> String {
        """
        (d.lease_until IS NULL OR d.lease_until < \(now) AND (d.lease_until < \(now) - \(maxHoldMs) OR NOT EXISTS (
            SELECT 1 FROM outbox_owners o WHERE o.owner = d.lease_owner AND o.alive_until >= \(now))))
        """
    }

    static let jobColumns =
        "seq, id, app, messages, indexed, state, send_at, deadline, idem_key, estimate, devices, sent, failed, canceled, resolved, cursor, created_at, started_at, finished_at"

    static func job(_ r: PGResult, _ i: Int) -> OutboxJob {
        let text = r.text(i, 3) ?? "[]"
        let messages = (try? JSONValue.parse(text))?.arrayValue?.compactMap(\.objectValue) ?? []
        return OutboxJob(
            id: r.text(i, 1) ?? "", app: r.text(i, 2) ?? "", messages: messages, indexed: r.bool(i, 4),
            stored: OutboxJobState(rawValue: r.text(i, 5) ?? "") ?? .queued, sendAt: r.int(i, 6), deadline: r.int(i, 7),
            idempotencyKey: r.text(i, 8), estimate: Int(r.int(i, 9)), devices: Int(r.int(i, 10)), sent: Int(r.int(i, 11)),
            failed: Int(r.int(i, 12)), canceled: Int(r.int(i, 13)), resolved: r.bool(i, 14), cursor: r.text(i, 15),
            createdAt: r.int(i, 16), startedAt: r.optionalInt(i, 17), finishedAt: r.optionalInt(i, 18))
    }

    static func load(_ c: PGConnection, id: String, lock: Bool = false) throws -> (seq: Int64, job: OutboxJob)? {
        let r = try c.query("SELECT \(jobColumns) FROM outbox_jobs WHERE id = $1" + (lock ? " FOR UPDATE" : ""), [.text(id)])
        return r.rows == 0 ? nil : (r.int(0, 0), job(r, 0))
    }

    static let queuedSQL = """
        SELECT coalesce(sum(greatest(CASE WHEN resolved THEN devices ELSE greatest(devices, estimate) END - sent - failed - canceled, 0)), 0),
               min(created_at), count(*)
        FROM outbox_jobs WHERE state IN ('queued', 'running')
        """

    /// An answered accept, a recorded result or a cancel survives a crash of the server even
    /// where the cluster runs with `synchronous_commit = off` (as SQLiteOutbox's `durable`).
    static func durable(_ c: PGConnection) throws {
        try c.exec("SET LOCAL synchronous_commit = on")
    }

    static func notifyWork(_ c: PGConnection) throws {
        try c.query("SELECT pg_notify('pushline_outbox', '')")
    }

    public func accept(_ spec: OutboxJobSpec, maxQueued: Int, idempotencyWindowMs: Int64) async throws(CommandError) -> (job: OutboxJob, duplicate: Bool) {
        let a = try await accepts.submit(AcceptCall(spec: spec, maxQueued: maxQueued, windowMs: idempotencyWindowMs)).get()
        return (a.job, a.duplicate)
    }

    struct AcceptCall: Sendable {
        var spec: OutboxJobSpec
        var maxQueued: Int
        var windowMs: Int64
    }
    struct AcceptResult: Sendable { var job: OutboxJob; var duplicate: Bool }

    /// Stores a batch of accepts in the caller's transaction and returns each one's answer, in
    /// order. What concerns one accept alone (over `max_queued`, a duplicate idempotency key, a
    /// row the database refuses) is that accept's answer and leaves the others alone; what
    /// throws (the connection, a deadlock) fails the whole transaction, and so every accept of it.
    static func acceptBatch(_ s: PostgresStore, _ batch: [AcceptCall], queued: OutboxQueuedCount) throws -> [Result<AcceptResult, CommandError>] {
        let c = s.c
        guard !batch.isEmpty else { return [] }
        try durable(c)
        var out = [Result<AcceptResult, CommandError>?](repeating: nil, count: batch.count)
        // Idempotency keys: one transaction-level advisory lock per distinct (app, key), taken in
        // hash order (so two batches sharing keys cannot deadlock): an accept of the same key on
        // another connection or daemon waits for this commit, then finds this job. Then the live
        // job of each key, if any, in one query.
        let keyed = batch.indices.filter { batch[$0].spec.idempotencyKey != nil }
        var existing: [Int: OutboxJob] = [:]
        if !keyed.isEmpty {
            // (The lock's key is a hash of app and key: a collision only makes two accepts wait for
            // one another. Text parameters end at a NUL, so none is used as a separator.)
            let apps = PGConnection.array(keyed.map { Optional(batch[$0].spec.app) })
            let keys = PGConnection.array(keyed.map { batch[$0].spec.idempotencyKey })
            try c.query(
                """
                SELECT pg_advisory_xact_lock($1, h) FROM (
                    SELECT DISTINCT hashtext(a || '/' || k) AS h FROM unnest($2::text[], $3::text[]) AS u(a, k) ORDER BY 1) l
                """, [.int(0x706C_6964), apps, keys])
            let r = try c.query(
                """
                SELECT \(Self.jobColumns.split(separator: ",").map { "o." + $0.filter { $0 != " " } }.joined(separator: ", ")), u.ord
                FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS u(app, key, since, ord)
                CROSS JOIN LATERAL (
                    SELECT * FROM outbox_jobs j WHERE j.app = u.app AND j.idem_key = u.key AND j.created_at > u.since
                    ORDER BY j.seq DESC LIMIT 1) o
                """,
                [apps, keys, PGConnection.array(keyed.map { batch[$0].spec.createdAt - batch[$0].windowMs })])
            for row in 0..<r.rows {
                let k = Int(r.int(row, 19)) - 1
                if k >= 0 && k < keyed.count { existing[keyed[k]] = Self.job(r, row) }
            }
        }
        // In batch order, as one accept after another would be answered.
        var firstOfKey: [String: Int] = [:]
        var inserts: [Int] = []
        for (i, p) in batch.enumerated() {
            if let j = existing[i] {
                out[i] = .success(AcceptResult(job: j, duplicate: true))
                continue
            }
            if let key = p.spec.idempotencyKey {
                let name = p.spec.app + "\u{0}" + key
                if let f = firstOfKey[name], batch[f].spec.createdAt > p.spec.createdAt - p.windowMs {
                    // Accepted earlier in this batch: answered as that job once it commits (or as
                    // its failure, if the database refuses it below).
                    continue
                }
                firstOfKey[name] = i
            }
            do {
                try queued.admit(p.spec, maxQueued: p.maxQueued) { Int(try c.query(Self.queuedSQL).int(0, 0)) }
            } catch let e as CommandError {
                out[i] = .failure(e)
                if let key = p.spec.idempotencyKey { firstOfKey[p.spec.app + "\u{0}" + key] = nil }
                continue
            }
            inserts.append(i)
        }
        if !inserts.isEmpty {
            // One INSERT for all; should the database refuse a row, each is inserted again under a
            // savepoint of its own, so only that accept fails.
            try c.exec("SAVEPOINT accepts")
            do {
                try insertJobs(c, inserts.map { batch[$0].spec })
                for i in inserts { out[i] = .success(AcceptResult(job: OutboxJob(accepted: batch[i].spec), duplicate: false)) }
            } catch let e as PGError where !e.connectionLost && c.isOK {
                try c.exec("ROLLBACK TO SAVEPOINT accepts")
                for i in inserts {
                    try c.exec("SAVEPOINT one")
                    do {
                        try insertJobs(c, [batch[i].spec])
                        try c.exec("RELEASE SAVEPOINT one")
                        out[i] = .success(AcceptResult(job: OutboxJob(accepted: batch[i].spec), duplicate: false))
                    } catch let e as PGError where !e.connectionLost && c.isOK {
                        try c.exec("ROLLBACK TO SAVEPOINT one")
                        out[i] = .failure(e.failure.commandError)
                    }
                }
            }
            if inserts.contains(where: { if case .success = out[$0] { return true } else { return false } }) {
                try notifyWork(c)
            }
        }
        // A repeated key in the batch gets its first accept's answer.
        return batch.enumerated().map { i, p in
            if let r = out[i] { return r }
            let first = p.spec.idempotencyKey.flatMap { firstOfKey[p.spec.app + "\u{0}" + $0] }
            guard let f = first, let r = out[f] else {
                return .failure(CommandError(.internalError, "accept \(i) of a batch was not answered"))
            }
            return r.map { AcceptResult(job: $0.job, duplicate: true) }
        }
    }

    static func insertJobs(_ c: PGConnection, _ specs: [OutboxJobSpec]) throws {
        try c.query(
            """
            INSERT INTO outbox_jobs (id, app, messages, indexed, state, send_at, deadline, idem_key, estimate, created_at)
            SELECT id, app, messages, indexed, 'queued', send_at, deadline, idem_key, estimate, created_at
            FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[],
                $9::bigint[]) WITH ORDINALITY AS u(id, app, messages, indexed, send_at, deadline, idem_key, estimate, created_at, ord)
            ORDER BY ord
            """,
            [PGConnection.array(specs.map { Optional($0.id) }), PGConnection.array(specs.map { Optional($0.app) }),
             PGConnection.array(specs.map { Optional(OutboxJob.messagesText($0)) }), PGConnection.array(specs.map(\.indexed)),
             PGConnection.array(specs.map(\.sendAt)), PGConnection.array(specs.map(\.deadline)),
             PGConnection.array(specs.map(\.idempotencyKey)), PGConnection.array(specs.map { Int64($0.estimate) }),
             PGConnection.array(specs.map(\.createdAt))])
    }

    /// Due unresolved jobs no other daemon is resolving; each is leased to this daemon for
    /// resolution (`resolver`) until `resolve_until`.
    public func startable(now: Int64, limit: Int) async throws(CommandError) -> [OutboxJob] {
        let me = instance
        let leaseMs = inFlight.withLock { $0.leaseMs }
        let rows: [(Int64, OutboxJob)] = try await registry.run(write: true) { s in
            let r = try s.c.query(
                """
                WITH j AS (
                    SELECT seq FROM outbox_jobs
                    WHERE NOT resolved AND state IN ('queued', 'running') AND send_at <= $1
                      AND (resolver IS NULL OR resolver = $2 OR resolve_until < $1)
                    ORDER BY send_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED)
                UPDATE outbox_jobs o SET resolver = $2, resolve_until = $1 + $4 FROM j WHERE o.seq = j.seq
                RETURNING \(Self.jobColumns.split(separator: ",").map { "o." + $0.filter { $0 != " " } }.joined(separator: ", "))
                """, [.int(now), .text(me), .int(Int64(limit)), .int(leaseMs)])
            return (0..<r.rows).map { (r.int($0, 0), Self.job(r, $0)) }.sorted { ($0.1.sendAt, $0.0) < ($1.1.sendAt, $1.0) }
        }
        resolving.withLock { m in for (seq, j) in rows { m[j.id] = (seq, j.cursor) } }
        return rows.map(\.1)
    }

    public func appendDeliveries(job: String, _ rows: [OutboxNewDelivery], cursor: String?, now: Int64) async throws(CommandError) -> Bool {
        guard let handed = resolving.withLock({ $0.removeValue(forKey: job) }) else { return false }
        let me = instance
        let leaseMs = inFlight.withLock { $0.leaseMs }
        let (appended, crossed) = try await registry.run(write: true) { s -> (Bool, Bool) in
            let c = s.c
            guard let (seq, j) = try Self.load(c, id: job, lock: true), j.stored == .queued || j.stored == .running, !j.resolved,
                  seq == handed.seq, j.cursor == handed.cursor
            else { return (false, false) }
            // Another daemon took the resolution over (this one was too slow): its chunk wins.
            let mine = try c.query("SELECT 1 FROM outbox_jobs WHERE seq = $1 AND resolver = $2", [.int(seq), .text(me)])
            guard mine.rows == 1 else { return (false, false) }
            var n = Int64(j.devices)
            var failed = 0
            var ns: [Int64] = [], messages: [String?] = [], ids: [String?] = [], raws: [String?] = [], states: [Int64] = [], results: [String?] = []
            for r in rows {
                if r.rejected != nil { failed += 1 }
                ns.append(n)
                messages.append(r.message.map { String($0) })
                ids.append(r.deviceId.map { String($0) })
                raws.append(r.rawText)
                states.append(r.rejected == nil ? 0 : 2)
                results.append(r.rejectedText)
                n += 1
            }
            if !rows.isEmpty {
                try c.query(
                    """
                    INSERT INTO outbox_deliveries (job, n, message, device_id, raw, state, next_at, result)
                    SELECT $1, u.n, u.message, u.device_id, u.raw, u.state, $2, u.result
                    FROM unnest($3::bigint[], $4::integer[], $5::bigint[], $6::text[], $7::smallint[], $8::text[])
                        AS u(n, message, device_id, raw, state, result)
                    """,
                    [.int(seq), .int(now), PGConnection.array(ns), PGConnection.array(messages), PGConnection.array(ids),
                     PGConnection.array(raws), PGConnection.array(states), PGConnection.array(results)])
            }
            try c.query(
                """
                UPDATE outbox_jobs SET devices = $1, failed = failed + $2, cursor = $3, resolved = $4, state = 'running',
                    started_at = coalesce(started_at, $5), resolve_until = $5 + $7 WHERE seq = $6
                """,
                [.int(n), .int(Int64(failed)), cursor.map { .text($0) } ?? .null, .text(cursor == nil ? "t" : "f"), .int(now), .int(seq),
                 .int(leaseMs)])
            if cursor == nil { try Self.finishIfDone(s, seq: seq, id: job, now: now) }
            if !rows.isEmpty { try Self.notifyWork(c) }
            return (true, Self.analyzeAt.contains { Int64(j.devices) < $0 && $0 <= n })
        }
        if appended && crossed {
            // Fresh statistics for the new job's rows. Until autovacuum's next ANALYZE (its
            // naptime is a minute) PostgreSQL believed a new job had about one row (the last
            // ANALYZE saw only older jobs), and planned the completion's `n = ANY(...)` lookup
            // and `UPDATE ... FROM unnest(...)` as a scan of every row of the job: 240-790 ms a
            // statement at 300,000 rows, and a 3-daemon fleet delivering at half its rate in
            // the runs that started before autovacuum came by (auto_explain, pg_outbox_bench).
            // Its own statement, after the commit: a wait for a running autovacuum is short
            // (PostgreSQL cancels an autovacuum that blocks a lock request).
            do throws(CommandError) {
                try await registry.run(write: true) { s in _ = try s.c.query("ANALYZE outbox_deliveries") }
            } catch {
                logger?.warning("outbox: ANALYZE outbox_deliveries failed", metadata: ["error": "\(error.message)"])
            }
        }
        return appended
    }

    /// A job's row count at which the appending daemon analyzes `outbox_deliveries` (see
    /// `appendDeliveries`): a few times a large job, never for small ones.
    static let analyzeAt: [Int64] = [10_000, 100_000, 1_000_000, 10_000_000]

    /// Marks a resolved job with nothing pending `done` and writes its `job_done` event.
    @discardableResult
    static func finishIfDone(_ s: PostgresStore, seq: Int64, id: String, now: Int64) throws -> Bool {
        let c = s.c
        let pending = try c.query("SELECT 1 FROM outbox_deliveries WHERE job = $1 AND state = 0 LIMIT 1", [.int(seq)])
        guard pending.rows == 0 else { return false }
        let r = try c.query(
            """
            UPDATE outbox_jobs SET state = 'done', finished_at = $1 WHERE seq = $2 AND state = 'running' AND resolved
            RETURNING devices, sent, failed, canceled
            """, [.int(now), .int(seq)])
        guard r.rows == 1 else { return false }
        try s.appendEvents([.jobDone(id, at: now, devices: r.int(0, 0), sent: r.int(0, 1), failed: r.int(0, 2), canceled: r.int(0, 3))])
        return true
    }

    /// Yes: its NOTIFY and `poll_ms` wake-ups deepen a large job's pipeline to 8 batches, which
    /// the fleet's rate relies on (claims and completions are round trips to a server the fleet
    /// shares: with extra batches of new jobs only, the 3-daemon fleet test delivered at about
    /// half the rate). Always 8 instead made clean stops and kills leave more on the wire than
    /// test_outbox.py's SIGTERM and kill -9 tests allow under load.
    public var wakeUpsAddBatches: Bool { true }

    public func claim(owner: String, now: Int64, leaseMs: Int64, perJob: Int, maxJobs: Int, maxRows: Int, excluding: Set<String>) async throws(CommandError) -> [OutboxClaim] {
        let skip = excluding.isEmpty ? "" : " AND NOT (j.id = ANY($3::text[]))"
        let skipArgs: [SQLValue] = excluding.isEmpty ? [] : [PGConnection.array(excluding.map { Optional($0) })]
        // Marked alive in the claim only when the heartbeat has not done so lately (the first
        // claim, a new epoch, or a heartbeat that failed): not a write on every claim.
        let (lo, markAlive, changed) = inFlight.withLock { f in
            f.base = leaseOwner(owner)
            let changed = f.leaseMs != leaseMs
            f.leaseMs = leaseMs
            return (f.current, f.aliveUntil - now < leaseMs * 2 / 3, changed)
        }
        if changed { leaseChanged.notify() }
        let out: [OutboxClaim]
        do throws(CommandError) {
            out = try await registry.run(write: true) { s in
                let c = s.c
                // The lease runs from when this transaction runs, not from when it was queued.
                let now = max(now, nowMillis())
                // Alive before holding anything (the heartbeat keeps it so).
                if markAlive { try Self.markAlive(c, [lo], until: now + leaseMs) }
                // Jobs with due work, least recently served first (fairness between large and small jobs).
                let jr = try c.query(
                    """
                    SELECT \(Self.jobColumns) FROM outbox_jobs j
                    WHERE j.state = 'running' AND EXISTS (
                        SELECT 1 FROM outbox_deliveries d WHERE d.job = j.seq AND d.state = 0 AND d.next_at <= $1
                          AND \(Self.claimable(now: "$1")))\(skip)
                    ORDER BY j.served, j.seq LIMIT $2
                    """, [.int(now), .int(Int64(maxJobs))] + skipArgs)
                var out: [OutboxClaim] = []
                var total = 0
                for i in 0..<jr.rows where total < maxRows {
                    let seq = jr.int(i, 0)
                    let job = Self.job(jr, i)
                    // Due rows in (next_at, n) order, the order of `outbox_deliveries_due`: the scan starts at
                    // the job's first pending row. In `n` order the planner walked the primary key past every
                    // row already sent (150 ms a claim half way through a 300,000-device job;
                    // bench/pg_outbox_bench.py). A claimed row's `next_at` moves to its lease's end, so
                    // the fleet's rows in flight lie beyond `now` in that index until then (a live
                    // owner's row held longer is back in range but still not `claimable`).
                    let r = try c.query(
                        """
                        WITH due AS (
                            SELECT d.job, d.n FROM outbox_deliveries d
                            WHERE d.job = $1 AND d.state = 0 AND d.next_at <= $2 AND \(Self.claimable(now: "$2"))
                            ORDER BY d.next_at, d.n LIMIT $3 FOR UPDATE OF d SKIP LOCKED)
                        UPDATE outbox_deliveries d SET lease_owner = $4, lease_until = $2 + $5, next_at = $2 + $5, fence = d.fence + 1
                        FROM due WHERE d.job = due.job AND d.n = due.n
                        RETURNING d.n, d.message, d.device_id, d.raw, d.attempts, d.fence
                        """, [.int(seq), .int(now), .int(Int64(min(perJob, maxRows - total))), .text(lo), .int(leaseMs)])
                    guard r.rows > 0 else { continue }
                    var rows: [(Int64, Int?, Int64?, String?, Int, Int64)] = (0..<r.rows).map { k in
                        (r.int(k, 0), r.optionalInt(k, 1).map { Int($0) }, r.optionalInt(k, 2), r.text(k, 3), Int(r.int(k, 4)), r.int(k, 5))
                    }
                    rows.sort { $0.0 < $1.0 }
                    var devices: [Int64: Device] = [:]
                    let ids = rows.compactMap { $0.3 == nil ? $0.2 : nil }
                    if !ids.isEmpty {
                        var f = DeviceFilter()
                        f.ids = ids
                        for d in try s.devices(f) { devices[d.id] = d }
                    }
                    var list: [OutboxDelivery] = []
                    list.reserveCapacity(rows.count)
                    for (n, message, deviceId, raw, attempts, fence) in rows {
                        var device: Device?
                        if let raw { device = SQLiteOutbox.rawDevice(raw) } else if let deviceId { device = devices[deviceId] }
                        list.append(OutboxDelivery(n: n, message: message, device: device, deviceId: deviceId, attempts: attempts, fence: fence))
                    }
                    // Served at `now` (fairness between jobs), unless another transaction holds the job's
                    // row (a completion waiting for its flush): then this claim leaves it as it is
                    // rather than wait, and a later claim records it.
                    try c.query(
                        "UPDATE outbox_jobs SET served = $1 WHERE seq = (SELECT seq FROM outbox_jobs WHERE seq = $2 FOR UPDATE SKIP LOCKED)",
                        [.int(now), .int(seq)])
                    total += list.count
                    out.append(OutboxClaim(job: job, deliveries: list))
                }
                return out
            }
        } catch {
            // It may have committed unseen: what it leased is let go once the rows this daemon
            // knows of under the current name are done.
            inFlight.withLock { $0.newEpoch() }
            throw error
        }
        inFlight.withLock { f in
            if markAlive && f.current == lo { f.aliveUntil = max(f.aliveUntil, now + leaseMs) }
            for cl in out {
                for d in cl.deliveries { f.rows[RowKey(job: cl.job.id, n: d.n, fence: d.fence)] = lo }
                f.held[lo, default: 0] += cl.deliveries.count
            }
        }
        return out
    }

    public func complete(job: String, _ outcomes: [OutboxOutcome], now: Int64) async throws(CommandError) -> Int {
        // These rows are no longer this daemon's to keep alive, whatever happens. If their
        // results cannot be recorded, a new epoch begins, so that their lease name is let go.
        var failed = true
        defer {
            inFlight.withLock { f in
                for o in outcomes { f.release(RowKey(job: job, n: o.n, fence: o.fence)) }
                if failed { f.newEpoch() }
            }
        }
        let r = try await completes.submit(CompleteCall(job: job, outcomes: outcomes, now: now)).get()
        failed = false
        if r.finished { registry.eventSignal.notify() }
        return r.applied
    }

    struct CompleteCall: Sendable {
        var job: String
        var outcomes: [OutboxOutcome]
        var now: Int64
    }
    struct CompleteResult: Sendable { var applied: Int; var finished: Bool }

    /// Records the results of several completions in the caller's transaction (one durable
    /// COMMIT for all). Delivery rows are locked first, call by call; then each job's row once,
    /// in seq order, with the summed counts: completions of one job from this daemon's claim
    /// rounds no longer take turns holding that row's lock through a flush each (what made a
    /// fleet of 3 daemons slower than one on a 300,000-device job, bench/pg_outbox_bench.py).
    static func completeBatch(_ s: PostgresStore, _ calls: [CompleteCall]) throws -> [Result<CompleteResult, CommandError>] {
        let c = s.c
        try durable(c)
        struct JobDelta { var id: String; var now: Int64; var sent = 0; var failed = 0; var uncanceled = 0 }
        var jobs: [Int64: JobDelta] = [:]
        var seqOf = [Int64?](repeating: nil, count: calls.count)
        var applied = [Int](repeating: 0, count: calls.count)
        for (k, call) in calls.enumerated() {
            guard let (seq, _) = try load(c, id: call.job) else { continue }
            seqOf[k] = seq
            var delta = jobs[seq] ?? JobDelta(id: call.job, now: call.now)
            delta.now = max(delta.now, call.now)
            defer { jobs[seq] = delta }
            guard !call.outcomes.isEmpty else { continue }
            let now = call.now
            let cur = try c.query(
                "SELECT n, state, fence FROM outbox_deliveries WHERE job = $1 AND n = ANY($2::bigint[]) ORDER BY n FOR UPDATE",
                [.int(seq), PGConnection.array(call.outcomes.map(\.n))])
            var rows: [Int64: (Int64, Int64)] = [:]
            for i in 0..<cur.rows { rows[cur.int(i, 0)] = (cur.int(i, 1), cur.int(i, 2)) }
            var ns: [Int64] = [], states: [Int64] = [], nexts: [Int64] = [], results: [String?] = []
            var seen = Set<Int64>()
            for o in call.outcomes {
                // A stale claim (fence moved on), or a row already final: dropped.
                guard let (state, fence) = rows[o.n], fence == o.fence, state == 0 || state == 3, seen.insert(o.n).inserted else { continue }
                let newState: Int64
                var nextAt = now
                switch o.kind {
                case .sent: newState = 1; delta.sent += 1
                case .failed: newState = 2; delta.failed += 1
                case .retry(let at):
                    if state == 3 { continue }
                    newState = 0
                    nextAt = at
                }
                if state == 3 { delta.uncanceled += 1 }
                ns.append(o.n)
                states.append(newState)
                nexts.append(nextAt)
                results.append(String(decoding: o.json, as: UTF8.self))
            }
            if !ns.isEmpty {
                try c.query(
                    """
                    UPDATE outbox_deliveries d SET state = u.state, next_at = u.next_at, attempts = d.attempts + 1,
                        lease_owner = NULL, lease_until = NULL, result = u.result
                    FROM unnest($2::bigint[], $3::smallint[], $4::bigint[], $5::text[]) AS u(n, state, next_at, result)
                    WHERE d.job = $1 AND d.n = u.n
                    """,
                    [.int(seq), PGConnection.array(ns), PGConnection.array(states), PGConnection.array(nexts), PGConnection.array(results)])
            }
            applied[k] = ns.count
        }
        var finished = Set<Int64>()
        for (seq, d) in jobs.sorted(by: { $0.key < $1.key }) {
            if d.sent + d.failed > 0 {
                try c.query(
                    "UPDATE outbox_jobs SET sent = sent + $1, failed = failed + $2, canceled = canceled - $3 WHERE seq = $4",
                    [.int(Int64(d.sent)), .int(Int64(d.failed)), .int(Int64(d.uncanceled)), .int(seq)])
            }
            if try finishIfDone(s, seq: seq, id: d.id, now: d.now) { finished.insert(seq) }
        }
        return calls.indices.map { k in
            .success(CompleteResult(applied: applied[k], finished: seqOf[k].map { finished.contains($0) } ?? false))
        }
    }

    public func cancel(job: String, now: Int64) async throws(CommandError) -> OutboxJob? {
        let (result, wrote): (OutboxJob?, Bool) = try await registry.run(write: true) { s in
            let c = s.c
            try Self.durable(c)
            // No lock on the job row first: rows are locked before the job row everywhere (as complete does).
            guard let (seq, j0) = try Self.load(c, id: job) else { return (nil, false) }
            guard j0.stored == .queued || j0.stored == .running else { return (j0, false) }
            let cancelPending = "UPDATE outbox_deliveries SET state = 3 WHERE job = $1 AND state = 0"
            var changed = try c.query(cancelPending, [.int(seq)]).affected
            // Then the job row, locked (rows before the job row, as complete does). A resolver
            // appends a chunk while it holds this lock, so once we have it every appended chunk
            // has committed (or will see the job canceled and append nothing): cancel what the
            // first statement's snapshot missed, and count the unresolved rest from the fresh row
            // (counting it from the first read made `devices` 25,000 of a 20,000-device job when
            // a chunk landed in between; test_outbox.py::test_cancel_half_way on PostgreSQL).
            guard let (_, j) = try Self.load(c, id: job, lock: true) else { return (nil, false) }
            guard j.stored == .queued || j.stored == .running else { return (j, false) }
            changed += try c.query(cancelPending, [.int(seq)]).affected
            // Devices of the target not resolved yet are canceled too (counted by the plan's estimate).
            let unresolved = j.resolved ? 0 : max(0, j.estimate - j.devices)
            let n = changed + unresolved
            try c.query(
                """
                UPDATE outbox_jobs SET state = 'canceled', canceled = canceled + $1, devices = devices + $2, resolved = true,
                    finished_at = $3 WHERE seq = $4
                """,
                [.int(Int64(n)), .int(Int64(unresolved)), .int(now), .int(seq)])
            guard let (_, after) = try Self.load(c, id: job) else { return (nil, false) }
            try s.appendEvents([PushEvent(.jobCanceled, at: now, [
                "job": .string(job), "devices": .int(Int64(after.devices)), "sent": .int(Int64(after.sent)),
                "failed": .int(Int64(after.failed)), "canceled": .int(Int64(after.canceled)),
            ])])
            return (after, true)
        }
        if wrote { registry.eventSignal.notify() }
        return result
    }

    public func job(_ id: String) async throws(CommandError) -> OutboxJob? {
        try await registry.run(write: false) { s in try Self.load(s.c, id: id)?.job }
    }

    public func results(job: String, after: Int64, limit: Int) async throws(CommandError) -> [OutboxResultRow] {
        try await registry.run(write: false) { s in
            guard let (seq, _) = try Self.load(s.c, id: job) else { return [] }
            let r = try s.c.query(
                "SELECT n, state, attempts, result FROM outbox_deliveries WHERE job = $1 AND n > $2 ORDER BY n LIMIT $3",
                [.int(seq), .int(after), .int(Int64(limit))])
            let states = ["pending", "sent", "failed", "canceled"]
            return (0..<r.rows).map { i in
                let st = Int(r.int(i, 1))
                return OutboxResultRow(
                    n: r.int(i, 0), state: st < states.count ? states[st] : "pending", attempts: Int(r.int(i, 2)),
                    result: r.text(i, 3).flatMap { (try? JSONValue.parse($0))?.objectValue })
            }
        }
    }

    public func jobs(state: OutboxJobState?, app: String?, after: String?, limit: Int) async throws(CommandError) -> [OutboxJob] {
        try await registry.run(write: false) { s in
            var seqBound = Int64.max
            if let after {
                guard let (seq, _) = try Self.load(s.c, id: after) else { throw CommandError.invalid("after", "no job '\(after)'") }
                seqBound = seq
            }
            var p = PostgresStore.Params()
            var sql = "SELECT \(Self.jobColumns) FROM outbox_jobs WHERE seq < \(p.add(.int(seqBound)))"
            let now = nowMillis()
            switch state {
            case .scheduled?: sql += " AND state = 'queued' AND send_at > \(p.add(.int(now)))"
            case .queued?: sql += " AND state = 'queued' AND send_at <= \(p.add(.int(now)))"
            case let st?: sql += " AND state = \(p.add(.text(st.rawValue)))"
            case nil: break
            }
            if let app { sql += " AND app = \(p.add(.text(app)))" }
            sql += " ORDER BY seq DESC LIMIT \(p.add(.int(Int64(limit))))"
            let r = try s.c.query(sql, p.values)
            return (0..<r.rows).map { Self.job(r, $0) }
        }
    }

    /// Takes back the leases (deliveries and resolutions) of this daemon's previous process
    /// (same instance, another worker owner); other daemons' leases expire on their own.
    public func recover(owner: String, now: Int64) async throws(CommandError) -> Int {
        let lo = leaseOwner(owner)
        let prefix = instance + "/"
        let me = instance
        return try await registry.run(write: true) { s in
            let n = try s.c.query(
                """
                UPDATE outbox_deliveries SET lease_owner = NULL, lease_until = NULL, next_at = least(next_at, $4)
                WHERE state = 0 AND lease_until IS NOT NULL AND left(lease_owner, $1) = $2 AND lease_owner <> $3
                """, [.int(Int64(prefix.count)), .text(prefix), .text(lo), .int(now)]).affected
            try s.c.query("UPDATE outbox_jobs SET resolve_until = NULL WHERE resolver = $1 AND NOT resolved", [.text(me)])
            return n
        }
    }

    public func prune(finishedBefore before: Int64) async throws(CommandError) -> Int {
        try await registry.run(write: true) { s in
            let r = try s.c.query(
                "SELECT seq FROM outbox_jobs WHERE finished_at IS NOT NULL AND finished_at < $1 LIMIT 100 FOR UPDATE SKIP LOCKED",
                [.int(before)])
            let seqs = (0..<r.rows).map { r.int($0, 0) }
            guard !seqs.isEmpty else { return 0 }
            try s.c.query("DELETE FROM outbox_deliveries WHERE job = ANY($1::bigint[])", [PGConnection.array(seqs)])
            try s.c.query("DELETE FROM outbox_jobs WHERE seq = ANY($1::bigint[])", [PGConnection.array(seqs)])
            return seqs.count
        }
    }

    public func depth() async throws(CommandError) -> OutboxDepth {
        try await registry.run(write: false) { s in
            let r = try s.c.query(Self.queuedSQL)
            return OutboxDepth(queued: Int(r.int(0, 0)), oldestQueuedAt: r.optionalInt(0, 1), liveJobs: Int(r.int(0, 2)))
        }
    }

    public func nextDue() async throws(CommandError) -> Int64? {
        try await registry.run(write: false) { s in
            let a = try s.c.query("SELECT min(send_at) FROM outbox_jobs WHERE NOT resolved AND state IN ('queued', 'running')").optionalInt(0, 0)
            // The next unleased delivery of each running job, through `outbox_deliveries_due`
            // (job, next_at, n): the scan per job passes the leased rows at the front of its
            // order (the claimed ones: thousands at most) instead of aggregating every pending
            // row (1M pending, 24,000 leased: median 267-524 ms before, 7-14 ms now, on a loaded
            // 2-core machine; bench/pg_next_due.py). Leased rows come due when
            // their owner dies: no sooner than the earliest live owner's `alive_until`. (Rows held
            // `maxHoldMs`, or leased by an older version, are found by the worker's polling.)
            let now = nowMillis()
            let b = try s.c.query(
                """
                SELECT least(
                    (SELECT min(x.next_at) FROM outbox_jobs j CROSS JOIN LATERAL (
                        SELECT d.next_at FROM outbox_deliveries d
                        WHERE d.job = j.seq AND d.state = 0 AND d.lease_until IS NULL ORDER BY d.next_at LIMIT 1) x
                     WHERE j.state = 'running'),
                    (SELECT min(alive_until) + 1 FROM outbox_owners WHERE alive_until >= $1))
                """, [.int(now)]).optionalInt(0, 0)
            return [a, b].compactMap { $0 }.min()
        }
    }
}
