/// The registry's operations on one PostgreSQL connection: the PostgreSQL twin of
/// `SQLiteRegistryStore`, with the same results and errors (the conformance suite runs both).
///
/// The pool runs each call inside the transaction it opened for a write, so nothing here begins
/// or commits. Lists travel as one array parameter (`= ANY($1::bigint[])`, `unnest`), so a batch
/// is one round trip rather than one per device.
struct PostgresStore {
    let c: PGConnection

    static let columns = SQLiteRegistryStore.columns
    /// `devices` columns prefixed with `d.`.
    static let dColumns = columns.split(separator: ",").map { "d." + $0.filter { $0 != " " } }.joined(separator: ", ")

    static func device(_ r: PGResult, _ i: Int, offset o: Int = 0) throws(PGError) -> Device {
        let p = r.text(i, o + 1) ?? ""
        guard let platform = Platform(rawValue: p) else {
            throw PGError(context: "devices", sqlstate: nil, message: "device \(r.int(i, o)) has unknown platform '\(p)'", connectionLost: false)
        }
        return Device(
            id: r.int(i, o), platform: platform, app: r.text(i, o + 2) ?? "", registrationId: r.text(i, o + 3) ?? "",
            name: r.text(i, o + 4), user: r.text(i, o + 5), deviceId: r.text(i, o + 6), active: r.bool(i, o + 7),
            createdAt: r.int(i, o + 8), updatedAt: r.int(i, o + 9), p256dh: r.text(i, o + 10), auth: r.text(i, o + 11),
            browser: r.text(i, o + 12), inactiveReason: r.text(i, o + 13), inactiveAt: r.optionalInt(i, o + 14))
    }

    static func devices(_ r: PGResult) throws(PGError) -> [Device] {
        var out: [Device] = []
        out.reserveCapacity(r.rows)
        for i in 0..<r.rows { out.append(try device(r, i)) }
        return out
    }

    /// Collects parameters and hands out their `$n` placeholders.
    struct Params {
        var values: [SQLValue] = []
        mutating func add(_ v: SQLValue) -> String { values.append(v); return "$\(values.count)" }
    }

    func whereKey(_ key: DeviceKey, _ p: inout Params) -> String {
        switch key {
        case .id(let id): return "id = \(p.add(.int(id)))"
        case .token(let app, let platform, let t):
            let token = DeviceInput.canonicalToken(t, platform: platform)
            return "app = \(p.add(.text(app))) AND platform = \(p.add(.text(platform.rawValue))) AND registration_id = \(p.add(.text(token)))"
        }
    }

    // MARK: register

    struct TokenKey: Hashable { var app: String; var platform: String; var token: String }

    func register(_ inputs: [DeviceInput], updateOnDuplicate: Bool, now: Int64) throws -> [RegisterOutcome] {
        // The same token twice in one batch is an error at the second; rows before it decide first
        // (as on SQLite, which meets them in order).
        var firstIndex: [TokenKey: Int] = [:]
        var dup: (i: Int, j: Int)?
        for (i, d) in inputs.enumerated() {
            let k = TokenKey(app: d.app, platform: d.platform.rawValue, token: d.registrationId)
            if let j = firstIndex[k] { dup = (i, j); break }
            firstIndex[k] = i
        }
        let considered = Array(inputs[0..<(dup?.i ?? inputs.count)])
        var ids: [TokenKey: Int64] = [:]
        // The id each considered input was inserted under (nil: it conflicted with an existing row).
        var insertedIds = [Int64?](repeating: nil, count: considered.count)
        if !considered.isEmpty {
            let r = try insertNew(considered, now: now)
            // RETURNING lists the inserted rows in insertion order (the SELECT's ORDER BY ord): walk
            // both in step, comparing tokens; a row that does not match is a conflict (skipped).
            // Should the order ever differ, the tokens would not match and the map below takes over.
            var j = 0
            var inOrder = true
            for i in considered.indices where j < r.rows {
                let d = considered[i]
                if r.equals(j, 3, d.registrationId) && r.equals(j, 1, d.app) && r.equals(j, 2, d.platform.rawValue) {
                    insertedIds[i] = r.int(j, 0)
                    j += 1
                }
            }
            if j != r.rows { inOrder = false }
            if !inOrder {
                insertedIds = [Int64?](repeating: nil, count: considered.count)
                for i in 0..<r.rows {
                    ids[TokenKey(app: r.text(i, 1) ?? "", platform: r.text(i, 2) ?? "", token: r.text(i, 3) ?? "")] = r.int(i, 0)
                }
                for (i, d) in considered.enumerated() {
                    if let id = ids[TokenKey(app: d.app, platform: d.platform.rawValue, token: d.registrationId)] { insertedIds[i] = id }
                }
            }
        }
        let conflicts = considered.indices.filter { insertedIds[$0] == nil }
        if !updateOnDuplicate, let i = conflicts.first { throw RegistryBookkeeping.alreadyRegistered(i, inputs[i]) }
        if let (i, j) = dup { throw RegistryBookkeeping.sameInRequest(i, as: j, inputs[i]) }
        var updated: [TokenKey: Device] = [:]
        if !conflicts.isEmpty {
            let rows = conflicts.map { considered[$0] }
            let r = try c.query(
                """
                UPDATE devices d SET name = t.name, user_id = t.user_id, device_id = t.device_id, p256dh = t.p256dh, auth = t.auth,
                    browser = t.browser, active = t.active, inactive_reason = CASE WHEN t.active THEN NULL ELSE $12 END,
                    inactive_at = CASE WHEN t.active THEN NULL ELSE $11::bigint END, updated_at = $11
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[], $8::text[],
                    $9::text[], $10::text[]) AS t(platform, app, registration_id, name, user_id, device_id, active, p256dh, auth, browser)
                WHERE d.app = t.app AND d.platform = t.platform AND d.registration_id = t.registration_id
                RETURNING \(Self.dColumns)
                """,
                Self.columnsOf(rows) + [.int(now), .text(SQLiteRegistry.clientDeactivationReason)])
            for dev in try Self.devices(r) {
                updated[TokenKey(app: dev.app, platform: dev.platform.rawValue, token: dev.registrationId)] = dev
            }
        }
        var out: [RegisterOutcome] = []
        out.reserveCapacity(inputs.count)
        for (i, d) in inputs.enumerated() {
            if let id = insertedIds[i] {
                out.append(.init(device: RegistryBookkeeping.inserted(d, id: id, now: now), created: true, updated: false))
            } else if let dev = updated[TokenKey(app: d.app, platform: d.platform.rawValue, token: d.registrationId)] {
                out.append(.init(device: dev, created: false, updated: true))
            } else {
                // Deleted by another daemon between our insert and update: the batch is retried whole.
                throw RegistryFailure.busy("devices[\(i)]: the conflicting row vanished")
            }
        }
        return out
    }

    /// Batches of at least this many devices first try a plain INSERT (see `insertNew`).
    static let plainInsertMin = 64

    static let insertColumns = """
        INSERT INTO devices (platform, app, registration_id, name, user_id, device_id, active, created_at, updated_at,
            p256dh, auth, browser, inactive_reason, inactive_at)
        SELECT platform, app, registration_id, name, user_id, device_id, active, coalesce(created, $11), $11, p256dh, auth,
            browser, CASE WHEN active THEN NULL ELSE $12 END, CASE WHEN active THEN NULL ELSE $11::bigint END
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[], $8::text[],
            $9::text[], $10::text[], $13::bigint[]) WITH ORDINALITY AS t(platform, app, registration_id, name, user_id, device_id,
            active, p256dh, auth, browser, created, ord)
        ORDER BY ord
        """

    /// Inserts the devices whose token is not registered yet (in input order) and returns
    /// `id, app, platform, registration_id` of each row inserted, in insertion order.
    ///
    /// `ON CONFLICT DO NOTHING` costs PostgreSQL a speculative insertion per row (a probe of the
    /// token index before the insert, a lock and a confirming WAL record after it): 10 us of
    /// backend CPU a device against 7 for a plain INSERT (20,000-device batches, PostgreSQL 15).
    /// So a large batch first tries a plain INSERT under a savepoint: when no token exists yet
    /// (an import, a new fleet of devices) that is the whole work; a unique violation (a token
    /// already registered, here or by another daemon meanwhile) rolls back to the savepoint and
    /// the batch is inserted again with `ON CONFLICT DO NOTHING`, the outcome being the same.
    func insertNew(_ ds: [DeviceInput], now: Int64) throws -> PGResult {
        var params = Self.columnsOf(ds)
        params += [
            .int(now), .text(SQLiteRegistry.clientDeactivationReason),
            PGConnection.column(ds.map(\.createdAt)),
        ]
        let returning = " RETURNING id, app, platform, registration_id"
        if ds.count >= Self.plainInsertMin {
            try c.exec("SAVEPOINT register_plain")
            do {
                let r = try c.query(Self.insertColumns + returning, params)
                try c.exec("RELEASE SAVEPOINT register_plain")
                return r
            } catch {
                guard error.sqlstate == "23505" && !error.connectionLost && c.isOK else { throw error }
                try c.exec("ROLLBACK TO SAVEPOINT register_plain")
            }
        }
        return try c.query(Self.insertColumns + " ON CONFLICT (app, platform, registration_id) DO NOTHING" + returning, params)
    }

    /// The ten array parameters of `register`'s unnest, in its column order (an optional column nobody set is `{}`: see `PGConnection.column`).
    static func columnsOf(_ ds: [DeviceInput]) -> [SQLValue] {
        [
            PGConnection.array(ds.map { $0.platform.rawValue }), PGConnection.array(ds.map { $0.app }),
            PGConnection.array(ds.map { $0.registrationId }), PGConnection.column(ds.map { $0.name }),
            PGConnection.column(ds.map { $0.user }), PGConnection.column(ds.map { $0.deviceId }),
            PGConnection.array(ds.map { $0.active }), PGConnection.column(ds.map { $0.p256dh }),
            PGConnection.column(ds.map { $0.auth }), PGConnection.column(ds.map { $0.browser }),
        ]
    }

    // MARK: lookups

    func unregister(_ keys: [DeviceKey]) throws -> (deleted: Int, missing: [Int]) {
        var deleted = 0
        var missing: [Int] = []
        for (i, k) in keys.enumerated() {
            var p = Params()
            let w = whereKey(k, &p)
            let n = try c.query("DELETE FROM devices WHERE \(w)", p.values).affected
            if n > 0 { deleted += n } else { missing.append(i) }
        }
        return (deleted, missing)
    }

    func device(_ key: DeviceKey) throws -> Device? {
        var p = Params()
        let w = whereKey(key, &p)
        return try Self.devices(c.query("SELECT \(Self.columns) FROM devices WHERE \(w)", p.values)).first
    }

    /// The WHERE clause (empty for none) of a filter, its parameters added to `p`.
    func whereFilter(_ f: DeviceFilter, _ p: inout Params) -> String {
        var conds: [String] = []
        if let ids = f.ids { conds.append("id = ANY(\(p.add(PGConnection.array(ids)))::bigint[])") }
        if let app = f.app { conds.append("app = \(p.add(.text(app)))") }
        if let pl = f.platform { conds.append("platform = \(p.add(.text(pl.rawValue)))") }
        if let u = f.user { conds.append("user_id = \(p.add(.text(u)))") }
        if let us = f.users { conds.append("user_id = ANY(\(p.add(PGConnection.array(us.map { Optional($0) })))::text[])") }
        if let a = f.active { conds.append("active = \(p.add(.from(a)))") }
        if let r = f.registrationId {
            let token = f.platform.map { DeviceInput.canonicalToken(r, platform: $0) } ?? r
            conds.append("registration_id = \(p.add(.text(token)))")
        }
        if let np = f.notPlatform { conds.append("platform <> \(p.add(.text(np.rawValue)))") }
        if let t = f.topics { conds.append(PostgresTopicCondition.render(t, &p)) }
        if let after = f.afterId { conds.append("id > \(p.add(.int(after)))") }
        return conds.isEmpty ? "" : " WHERE " + conds.joined(separator: " AND ")
    }

    func devices(_ f: DeviceFilter) throws -> [Device] {
        var p = Params()
        var sql = "SELECT \(Self.columns) FROM devices\(whereFilter(f, &p)) ORDER BY id"
        if let limit = f.limit { sql += " LIMIT \(p.add(.int(Int64(max(0, limit)))))" }
        return try Self.devices(c.query(sql, p.values))
    }

    func page(_ parts: [DeviceFilter], from cursor: PageCursor, limit: Int) throws -> ([Device], PageCursor?) {
        var out: [Device] = []
        var cur = cursor
        while cur.part < parts.count && out.count < limit {
            let want = limit - out.count
            var f = parts[cur.part]
            f.afterId = cur.afterId
            f.limit = want
            let rows = try devices(f)
            out.append(contentsOf: rows)
            if let last = rows.last, rows.count == want {
                cur.afterId = last.id
            } else {
                cur.part += 1
                cur.afterId = 0
            }
        }
        return (out, cur.part < parts.count ? cur : nil)
    }

    func groups(_ f: DeviceFilter) throws -> [DeviceGroup] {
        var p = Params()
        let sql: String
        if f.ids == nil && f.user == nil && f.users == nil && f.registrationId == nil && f.afterId == nil
            && f.notPlatform == nil && f.topics == nil
        {
            var conds = ["n > 0"]
            if let app = f.app { conds.append("app = \(p.add(.text(app)))") }
            if let pl = f.platform { conds.append("platform = \(p.add(.text(pl.rawValue)))") }
            if let a = f.active { conds.append("active = \(p.add(.from(a)))") }
            sql = "SELECT app, platform, sum(n) FROM device_counts WHERE \(conds.joined(separator: " AND ")) GROUP BY app, platform"
        } else {
            sql = "SELECT app, platform, count(*) FROM devices\(whereFilter(f, &p)) GROUP BY app, platform"
        }
        let r = try c.query(sql, p.values)
        var out: [DeviceGroup] = []
        for i in 0..<r.rows {
            let pl = r.text(i, 1) ?? ""
            guard let platform = Platform(rawValue: pl) else {
                throw PGError(context: sql, sqlstate: nil, message: "unknown platform '\(pl)'", connectionLost: false)
            }
            out.append(DeviceGroup(app: r.text(i, 0) ?? "", platform: platform, count: Int(r.int(i, 2))))
        }
        return out
    }

    /// Whether `idGroups` answers this filter: a list of ids, perhaps with `active`, nothing else.
    static func idGroupsApply(_ f: DeviceFilter) -> Bool {
        f.ids != nil && f.app == nil && f.platform == nil && f.user == nil && f.users == nil && f.registrationId == nil
            && f.afterId == nil && f.limit == nil && f.notPlatform == nil && f.topics == nil
    }

    /// `groups` of many id-list filters (`idGroupsApply`) in one statement, each filter's groups
    /// in order. A send to a few ids counted its devices with a query of its own, which PostgreSQL
    /// planned again every time (a custom plan: the array's length changes its cost): about
    /// 100 us of the server's CPU per async send accepted, against a few for the accept itself.
    /// An id listed twice in one filter counts once, as in `id = ANY(...)`.
    func idGroups(_ fs: [DeviceFilter]) throws -> [[DeviceGroup]] {
        var ids: [Int64] = []
        var ks: [Int64] = []
        var actives: [String?] = []
        for (k, f) in fs.enumerated() {
            let a: String? = f.active.map { $0 ? "t" : "f" }
            for id in f.ids ?? [] {
                ids.append(id)
                ks.append(Int64(k))
                actives.append(a)
            }
        }
        var out = [[DeviceGroup]](repeating: [], count: fs.count)
        guard !ids.isEmpty else { return out }
        let r = try c.query(
            """
            SELECT u.k, d.app, d.platform, count(*)
            FROM (SELECT DISTINCT id, k, active FROM unnest($1::bigint[], $2::bigint[], $3::boolean[]) AS u(id, k, active)) u
            JOIN devices d ON d.id = u.id
            WHERE u.active IS NULL OR d.active = u.active
            GROUP BY u.k, d.app, d.platform
            """,
            [PGConnection.array(ids), PGConnection.array(ks), PGConnection.column(actives)])
        for i in 0..<r.rows {
            let k = Int(r.int(i, 0))
            let pl = r.text(i, 2) ?? ""
            guard let platform = Platform(rawValue: pl) else {
                throw PGError(context: "idGroups", sqlstate: nil, message: "unknown platform '\(pl)'", connectionLost: false)
            }
            if k >= 0 && k < out.count { out[k].append(DeviceGroup(app: r.text(i, 1) ?? "", platform: platform, count: Int(r.int(i, 3)))) }
        }
        return out
    }

    func update(_ key: DeviceKey, _ u: DeviceUpdate, now: Int64) throws -> Device {
        guard let existing = try device(key) else { throw CommandError(.notFound, "\(SQLiteRegistryStore.describe(key)) not found") }
        let columns = try RegistryBookkeeping.updateColumns(u, of: existing, key: key, now: now) { token in
            let taken = try c.query(
                "SELECT id FROM devices WHERE app = $1 AND platform = $2 AND registration_id = $3 AND id <> $4",
                [.text(existing.app), .text(existing.platform.rawValue), .text(token), .int(existing.id)])
            return taken.rows > 0 ? taken.int(0, 0) : nil
        }
        var p = Params()
        let sets = columns.map { "\($0.column) = \(p.add($0.value))" }
        let idParam = p.add(.int(existing.id))
        let rows = try Self.devices(c.query(
            "UPDATE devices SET \(sets.joined(separator: ", ")) WHERE id = \(idParam) RETURNING \(Self.columns)", p.values))
        guard let d = rows.first else { throw CommandError(.notFound, "\(SQLiteRegistryStore.describe(key)) not found") }
        return d
    }

    func prune(inactiveBefore: Int64?) throws -> Int {
        if let t = inactiveBefore {
            return try c.query("DELETE FROM devices WHERE NOT active AND inactive_at < $1", [.int(t)]).affected
        }
        return try c.query("DELETE FROM devices WHERE NOT active").affected
    }

    func stats() throws -> RegistryStats {
        let r = try c.query("SELECT app, platform, active, n FROM device_counts WHERE n > 0")
        var rows: [(app: String, platform: Platform, active: Bool, count: Int)] = []
        for i in 0..<r.rows {
            let pl = r.text(i, 1) ?? ""
            guard let platform = Platform(rawValue: pl) else {
                throw PGError(context: "stats", sqlstate: nil, message: "unknown platform '\(pl)' in devices", connectionLost: false)
            }
            rows.append((app: r.text(i, 0) ?? "", platform: platform, active: r.bool(i, 2), count: Int(r.int(i, 3))))
        }
        // Sorted here exactly as SQLiteRegistryStore.stats sorts (not by the database's collation), active first.
        let ordered = rows.sorted { a, b in (a.app, a.platform.rawValue, a.active ? 0 : 1) < (b.app, b.platform.rawValue, b.active ? 0 : 1) }
        return RegistryStats(total: rows.reduce(0) { $0 + $1.count }, rows: ordered)
    }

    func deactivate(_ list: [Deactivation]) throws -> Set<Int64> {
        guard !list.isEmpty else { return [] }
        let r = try c.query(
            """
            UPDATE devices d SET active = false, inactive_reason = t.reason, inactive_at = t.at
            FROM (SELECT DISTINCT ON (id) id, reason, at, since
                  FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) WITH ORDINALITY AS u(id, reason, at, since, ord)
                  ORDER BY id, ord) t
            WHERE d.id = t.id AND d.active AND (t.since IS NULL OR d.updated_at <= t.since)
            RETURNING d.id, d.app, d.platform, d.registration_id
            """,
            [
                PGConnection.array(list.map { $0.id }), PGConnection.array(list.map { Optional($0.reason) }),
                PGConnection.array(list.map { $0.at }),
                .text("{" + list.map { $0.invalidSince.map(String.init) ?? "NULL" }.joined(separator: ",") + "}"),
            ])
        var done = Set<Int64>()
        for i in 0..<r.rows { done.insert(r.int(i, 0)) }
        // One event per device actually deactivated, in `list` order (as SQLiteRegistryStore.deactivate).
        var byId: [Int64: (String, String, String)] = [:]
        for i in 0..<r.rows { byId[r.int(i, 0)] = (r.text(i, 1) ?? "", r.text(i, 2) ?? "", r.text(i, 3) ?? "") }
        var events: [PushEvent] = []
        for d in list {
            guard let (app, platform, token) = byId.removeValue(forKey: d.id) else { continue }
            events.append(PushEvent(.deviceDeactivated, at: d.at, [
                "device": .int(d.id), "app": .string(app), "platform": .string(platform),
                "registration_id": .string(token), "reason": .string(d.reason),
            ]))
        }
        try appendEvents(events)
        return done
    }

    // MARK: events

    /// Appends events in the caller's transaction. Their seqs come from the single row of
    /// `pushline_event_counter`, locked until this transaction ends: event writers commit in
    /// seq order across the fleet (see `PostgresMigrations.outbox`). Take it last in a
    /// transaction (every writer does), so no writer waits for it while holding what another
    /// holder wants. `NOTIFY pushline_events` is delivered at COMMIT (and not at all on
    /// ROLLBACK): every daemon's listener wakes its waiting readers.
    func appendEvents(_ events: [PushEvent]) throws {
        guard !events.isEmpty else { return }
        let last = try c.query("UPDATE pushline_event_counter SET last = last + $1 WHERE id = 1 RETURNING last", [.int(Int64(events.count))])
        guard last.rows == 1 else {
            throw PGError(context: "events", sqlstate: nil, message: "pushline_event_counter has no row", connectionLost: false)
        }
        let first = last.int(0, 0) - Int64(events.count) + 1
        try c.query(
            """
            INSERT INTO events (seq, type, at, body)
            SELECT $1::bigint + u.ord - 1, u.type, u.at, u.body
            FROM unnest($2::text[], $3::bigint[], $4::text[]) WITH ORDINALITY AS u(type, at, body, ord)
            """,
            [.int(first), PGConnection.array(events.map { Optional($0.kind.rawValue) }), PGConnection.array(events.map { $0.at }),
             PGConnection.array(events.map { Optional(JSONValue.object($0.fields).jsonString) })])
        try c.query("SELECT pg_notify('pushline_events', '')")
    }

    func events(after: Int64, limit: Int) throws -> [FeedEvent] {
        let r = try c.query("SELECT seq, type, at, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2", [.int(after), .int(Int64(max(0, limit)))])
        var out: [FeedEvent] = []
        out.reserveCapacity(r.rows)
        for i in 0..<r.rows {
            let seq = r.int(i, 0)
            guard let fields = (try? JSONValue.parse(r.text(i, 3) ?? "{}"))?.objectValue else {
                throw PGError(context: "events", sqlstate: nil, message: "event \(seq) has a body that is not a JSON object", connectionLost: false)
            }
            out.append(FeedEvent(seq: seq, type: r.text(i, 1) ?? "", at: r.int(i, 2), fields: fields))
        }
        return out
    }

    /// The committed high-water mark (the counter row, which pruning does not lower).
    func latestEventSeq() throws -> Int64 {
        let r = try c.query("SELECT last FROM pushline_event_counter WHERE id = 1")
        return r.rows == 1 ? r.int(0, 0) : 0
    }

    func pruneEvents(before: Int64, max: Int) throws -> Int {
        try c.query(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE at < $1 ORDER BY at LIMIT $2)",
            [.int(before), .int(Int64(max))]).affected
    }

    func resolveTokens(app: String, platform: Platform, _ tokens: [String]) throws -> [Device?] {
        guard !tokens.isEmpty else { return [] }
        let canon = tokens.map { Optional(DeviceInput.canonicalToken($0, platform: platform)) }
        let r = try c.query(
            """
            SELECT t.ord, \(Self.dColumns) FROM unnest($1::text[]) WITH ORDINALITY AS t(token, ord)
            JOIN devices d ON d.app = $2 AND d.platform = $3 AND d.registration_id = t.token
            """,
            [PGConnection.array(canon), .text(app), .text(platform.rawValue)])
        var out = [Device?](repeating: nil, count: tokens.count)
        for i in 0..<r.rows {
            let ord = Int(r.int(i, 0)) - 1
            if ord >= 0 && ord < out.count { out[ord] = try Self.device(r, i, offset: 1) }
        }
        return out
    }

    // MARK: kv

    func kvGet(_ key: String) throws -> String? {
        let r = try c.query("SELECT value FROM kv WHERE key = $1", [.text(key)])
        return r.rows > 0 ? r.text(0, 0) : nil
    }

    func kvSet(_ key: String, _ value: String) throws {
        try c.query(
            "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [.text(key), .text(value)])
    }

    /// `KeyValueStore.compareAndSet`. Atomic under READ COMMITTED: the UPDATE re-checks
    /// `value = expected` on the newest row version after waiting for a concurrent writer, and the
    /// INSERT waits for a concurrent insert of the key; the winner's value is then read by a new
    /// statement (a new snapshot, which sees that committed write).
    func kvCompareAndSet(_ key: String, expected: String?, new: String) throws -> KVSwap {
        let r: PGResult
        if let expected {
            r = try c.query("UPDATE kv SET value = $1 WHERE key = $2 AND value = $3", [.text(new), .text(key), .text(expected)])
        } else {
            r = try c.query("INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", [.text(key), .text(new)])
        }
        if r.affected == 1 { return .swapped }
        return .conflict(current: try kvGet(key))
    }

    // MARK: topics

    func subscribe(_ ids: [Int64], topic: TopicName, now: Int64) throws {
        guard !ids.isEmpty else { return }
        let missing = try c.query(
            """
            SELECT u.id FROM unnest($1::bigint[]) WITH ORDINALITY AS u(id, ord)
            WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = u.id) ORDER BY u.ord LIMIT 1
            """, [PGConnection.array(ids)])
        if missing.rows > 0 { throw CommandError(.notFound, "device \(missing.int(0, 0)) not found") }
        try c.query(
            """
            INSERT INTO topic_subscriptions (device_id, topic, created_at)
            SELECT DISTINCT u.id, $2, $3::bigint FROM unnest($1::bigint[]) AS u(id) ORDER BY u.id
            ON CONFLICT DO NOTHING
            """, [PGConnection.array(ids), .text(topic.name), .int(now)])
    }

    func unsubscribe(_ ids: [Int64], topic: TopicName) throws {
        try c.query("DELETE FROM topic_subscriptions WHERE topic = $1 AND device_id = ANY($2::bigint[])",
                    [.text(topic.name), PGConnection.array(ids)])
    }

    func topics(of ids: [Int64]) throws -> [Int64: [String]] {
        var out: [Int64: [String]] = [:]
        for id in ids { out[id] = [] }
        guard !ids.isEmpty else { return out }
        let r = try c.query(
            "SELECT device_id, topic FROM topic_subscriptions WHERE device_id = ANY($1::bigint[]) ORDER BY device_id, topic COLLATE \"C\"",
            [PGConnection.array(ids)])
        for i in 0..<r.rows { out[r.int(i, 0), default: []].append(r.text(i, 1) ?? "") }
        return out
    }

    func subscribers(of topic: TopicName, app: String?) throws -> [Device] {
        try Self.devices(c.query(
            """
            SELECT \(Self.dColumns) FROM topic_subscriptions t JOIN devices d ON d.id = t.device_id
            WHERE t.topic = $1 AND ($2::text IS NULL OR d.app = $2) ORDER BY t.device_id
            """, [.text(topic.name), .from(app)]))
    }
}
