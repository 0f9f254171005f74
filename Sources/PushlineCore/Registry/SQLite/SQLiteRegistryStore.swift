/// The registry's operations on one `Database`, synchronous and thread-confined.
///
/// `SQLiteRegistry` runs these on its database thread, inside a transaction it opens
/// (group commit), so nothing here begins or commits a transaction. Errors are
/// `CommandError`s for the client or `DatabaseError`s (mapped to `internal_error`).
final class SQLiteRegistryStore {
    let db: Database

    init(path: String) throws(DatabaseError) {
        db = try Database(path: path)
        try Migrations.migrate(db)
    }

    /// A store on a connection that only reads (`SQLiteDirectReads`): the database is already
    /// migrated by the registry's own connection, and `query_only` refuses any write. There is
    /// one such connection per thread, each reading a few devices at a time: a 1 MB page cache
    /// (the registry's own connection has 8 MB) holds the indexes' inner pages. A WAL reader is
    /// rarely kept waiting (recovery after a crash); it waits at most 100 ms, and a read that
    /// fails is answered by the database thread instead.
    init(readerOf path: String) throws(DatabaseError) {
        db = try Database(path: path)
        try db.exec("PRAGMA query_only = ON; PRAGMA cache_size = -1024; PRAGMA busy_timeout = 100;")
    }

    static let columns =
        "id, platform, app, registration_id, name, user_id, device_id, active, created_at, updated_at, p256dh, auth, browser, inactive_reason, inactive_at"

    /// The platform in column 1 of a device row (its id in column 0).
    static func platform(_ s: Statement) throws(DatabaseError) -> Platform {
        let p = s.text(1) ?? ""
        guard let platform = Platform(rawValue: p) else {
            throw DatabaseError(code: 1, message: "device \(s.int(0)) has unknown platform '\(p)'", sql: s.sql)
        }
        return platform
    }

    static func device(_ s: Statement) throws(DatabaseError) -> Device {
        let platform = try platform(s)
        return Device(
            id: s.int(0), platform: platform, app: s.text(2) ?? "", registrationId: s.text(3) ?? "", name: s.text(4),
            user: s.text(5), deviceId: s.text(6), active: s.int(7) != 0, createdAt: s.int(8), updatedAt: s.int(9),
            p256dh: s.text(10), auth: s.text(11), browser: s.text(12), inactiveReason: s.text(13), inactiveAt: s.optionalInt(14))
    }

    /// The devices of `ids` with what sending to them needs (platform, app, token, WebPush keys
    /// and browser, active), in no order: the outbox's claim reads each device it sends to
    /// (issue 13: the whole row cost the claim a third of the database thread's time).
    func sendingDevices(_ ids: [Int64]) throws(DatabaseError) -> [Device] {
        try db.query(
            "SELECT id, platform, app, registration_id, p256dh, auth, browser, active FROM devices WHERE id IN (SELECT value FROM json_each(?))",
            [.text(Self.jsonArray(ids))]
        ) { s throws(DatabaseError) in
            Device(
                id: s.int(0), platform: try Self.platform(s), app: s.text(2) ?? "", registrationId: s.text(3) ?? "", active: s.int(7) != 0,
                p256dh: s.text(4), auth: s.text(5), browser: s.text(6))
        }
    }

    static func describe(_ key: DeviceKey) -> String {
        switch key {
        case .id(let id): return "device \(id)"
        case .token(let app, let platform, let t): return "\(platform.rawValue) device '\(DeviceInput.redact(t))' in app '\(app)'"
        }
    }

    /// The WHERE clause and arguments selecting one device.
    func whereKey(_ key: DeviceKey) throws(CommandError) -> (String, [SQLValue]) {
        switch key {
        case .id(let id): return ("id = ?", [.int(id)])
        case .token(let app, let platform, let t):
            let token = DeviceInput.canonicalToken(t, platform: platform)
            return ("app = ? AND platform = ? AND registration_id = ?", [.text(app), .text(platform.rawValue), .text(token)])
        }
    }

    // MARK: register

    func register(_ inputs: [DeviceInput], updateOnDuplicate: Bool, now: Int64) throws -> [RegisterOutcome] {
        let insert = try db.statement(
            """
            INSERT INTO devices (platform, app, registration_id, name, user_id, device_id, active, created_at, updated_at,
                p256dh, auth, browser, inactive_reason, inactive_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (app, platform, registration_id) DO NOTHING
            """)
        var out: [RegisterOutcome] = []
        out.reserveCapacity(inputs.count)
        // Duplicates inside the batch are found through the UNIQUE index rather than by
        // hashing every token: a conflicting row that this call inserted (rowids only grow
        // within the transaction, and jobs run one after another) or updated is one.
        var firstInserted: Int64 = .max
        var updatedIds = Set<Int64>()
        func sameBatch(_ id: Int64, _ i: Int, _ d: DeviceInput) -> CommandError? {
            guard id >= firstInserted || updatedIds.contains(id) else { return nil }
            return RegistryBookkeeping.sameInRequest(i, as: out.firstIndex(where: { $0.device.id == id }) ?? -1, d)
        }
        for (i, d) in inputs.enumerated() {
            let (reason, at) = RegistryBookkeeping.inactive(d.active, now: now)
            try insert.bind([
                .text(d.platform.rawValue), .text(d.app), .text(d.registrationId), .from(d.name), .from(d.user),
                .from(d.deviceId), .from(d.active), .int(d.createdAt ?? now), .int(now), .from(d.p256dh), .from(d.auth), .from(d.browser),
                .from(reason), .from(at),
            ])
            defer { insert.reset() }
            _ = try insert.step()
            if db.changes == 1 {
                let id = db.lastInsertRowID
                if firstInserted == .max { firstInserted = id }
                out.append(.init(device: RegistryBookkeeping.inserted(d, id: id, now: now), created: true, updated: false))
                continue
            }
            guard updateOnDuplicate else {
                let existing = try db.query(
                    "SELECT id FROM devices WHERE app = ? AND platform = ? AND registration_id = ?",
                    [.text(d.app), .text(d.platform.rawValue), .text(d.registrationId)]
                ) { $0.int(0) }
                if let id = existing.first, let e = sameBatch(id, i, d) { throw e }
                throw RegistryBookkeeping.alreadyRegistered(i, d)
            }
            let rows = try db.query(
                """
                UPDATE devices SET name = ?, user_id = ?, device_id = ?, p256dh = ?, auth = ?, browser = ?, active = ?,
                    inactive_reason = ?, inactive_at = ?, updated_at = ?
                WHERE app = ? AND platform = ? AND registration_id = ?
                RETURNING \(Self.columns)
                """,
                [
                    .from(d.name), .from(d.user), .from(d.deviceId), .from(d.p256dh), .from(d.auth), .from(d.browser),
                    .from(d.active), .from(reason), .from(at), .int(now), .text(d.app), .text(d.platform.rawValue),
                    .text(d.registrationId),
                ], Self.device)
            guard let dev = rows.first else {
                throw DatabaseError(code: 1, message: "devices[\(i)]: conflicting row vanished", sql: nil)
            }
            if let e = sameBatch(dev.id, i, d) { throw e }
            updatedIds.insert(dev.id)
            out.append(.init(device: dev, created: false, updated: true))
        }
        return out
    }

    // MARK: lookups

    func unregister(_ keys: [DeviceKey]) throws -> (deleted: Int, missing: [Int]) {
        var deleted = 0
        var missing: [Int] = []
        for (i, k) in keys.enumerated() {
            let (w, args) = try whereKey(k)
            try db.execute("DELETE FROM devices WHERE \(w)", args)
            if db.changes > 0 { deleted += db.changes } else { missing.append(i) }
        }
        return (deleted, missing)
    }

    func device(_ key: DeviceKey) throws -> Device? {
        let (w, args) = try whereKey(key)
        return try db.query("SELECT \(Self.columns) FROM devices WHERE \(w)", args, Self.device).first
    }

    static func jsonArray(_ ids: [Int64]) -> String { "[" + ids.map(String.init).joined(separator: ",") + "]" }
    static func jsonArray(_ strings: [String]) -> String { JSONValue.array(strings.map { .string($0) }).jsonString }

    /// How a device listing reaches its rows in id order (see `whereFilter`).
    enum Access: Equatable {
        /// `id IN (...)`: one primary-key lookup per id.
        case ids
        /// `devices_user (user_id, id)`: one user's devices, already in id order.
        case user
        /// `devices_user` for each of several users; the rows need a sort (unpaged use only).
        case users
        /// `devices_app_platform_active (app, platform, active, id)`.
        case appPlatformActive
        /// The UNIQUE (app, platform, registration_id) index: at most one row.
        case token
        /// The table itself from `afterId` on, in id order, other conditions checked per row.
        case table

        init(_ f: DeviceFilter) {
            if f.ids != nil {
                self = .ids
            } else if f.user != nil {
                self = .user
            } else if f.users != nil {
                self = .users
            } else if f.app != nil && f.platform != nil && f.registrationId != nil {
                self = .token
            } else if f.app != nil && f.platform != nil && f.active != nil {
                self = .appPlatformActive
            } else {
                self = .table
            }
        }
    }

    /// The WHERE clause (empty for none) and arguments of a device filter, `limit` aside.
    ///
    /// With `ordered` (a listing by id, paged with `afterId`), the conditions that the chosen
    /// `Access` path does not search on are written `+column = ?`, which keeps SQLite from using
    /// another index for them: an index on a prefix that does not end in the id (say `app` alone
    /// on `(app, platform, active)`) would make every page read and sort every matching device,
    /// quadratic over a paging. So every page is a search that starts at `afterId` and stops at
    /// `limit` (tests assert the plans: RegistryPlanTests).
    func whereFilter(_ f: DeviceFilter, ordered: Bool = false) -> (String, [SQLValue]) {
        var conds: [String] = []
        var args: [SQLValue] = []
        let access = Access(f)
        func col(_ name: String, searched: Bool) -> String { !ordered || searched ? name : "+" + name }
        if let ids = f.ids {
            conds.append("id IN (SELECT value FROM json_each(?))")
            args.append(.text(Self.jsonArray(ids)))
        }
        let keyed = access == .appPlatformActive || access == .token
        if let app = f.app { conds.append("\(col("app", searched: keyed)) = ?"); args.append(.text(app)) }
        if let p = f.platform { conds.append("\(col("platform", searched: keyed)) = ?"); args.append(.text(p.rawValue)) }
        if let u = f.user { conds.append("\(col("user_id", searched: access == .user)) = ?"); args.append(.text(u)) }
        if let us = f.users {
            conds.append("\(col("user_id", searched: access == .users)) IN (SELECT value FROM json_each(?))")
            args.append(.text(Self.jsonArray(us)))
        }
        // `active` as a literal, not a parameter: the partial index `devices_inactive` (WHERE
        // active = 0) makes SQLite's planner peek at a bound `active` to see whether the index
        // applies, and such a statement is prepared again at every new binding
        // (sqlite3Reprepare from sqlite3_step: one SQL parse every async accept and every send
        // to `ids`).
        if let a = f.active { conds.append("\(col("active", searched: access == .appPlatformActive)) = \(a ? 1 : 0)") }
        if let r = f.registrationId {
            let token = f.platform.map { DeviceInput.canonicalToken(r, platform: $0) } ?? r
            conds.append("\(col("registration_id", searched: access == .token)) = ?")
            args.append(.text(token))
        }
        if let p = f.notPlatform { conds.append("platform <> ?"); args.append(.text(p.rawValue)) }
        if let t = f.topics { conds.append(SQLiteTopicCondition.render(t, into: &args)) }
        if let after = f.afterId { conds.append("id > ?"); args.append(.int(after)) }
        return (conds.isEmpty ? "" : " WHERE " + conds.joined(separator: " AND "), args)
    }

    /// The listing query of a filter: the SQL and its arguments.
    func devicesQuery(_ f: DeviceFilter, columns: String = SQLiteRegistryStore.columns) -> (String, [SQLValue]) {
        var (w, args) = whereFilter(f, ordered: true)
        var sql = "SELECT \(columns) FROM devices\(w) ORDER BY id"
        if let limit = f.limit { sql += " LIMIT ?"; args.append(.int(Int64(max(0, limit)))) }
        return (sql, args)
    }

    func devices(_ f: DeviceFilter) throws -> [Device] {
        let (sql, args) = devicesQuery(f)
        return try db.query(sql, args, Self.device)
    }

    /// Up to `limit` devices of `parts`, walked one after another, each in id order, from `cursor`
    /// on; the cursor to continue from, or nil when every part is done.
    ///
    /// Each part is a filter whose listing is a search (one user; or app, platform and active):
    /// a page costs what it returns, however large the registry (a send's paging).
    func page(_ parts: [DeviceFilter], from cursor: PageCursor, limit: Int) throws -> ([Device], PageCursor?) {
        try walk(parts, from: cursor, limit: limit, read: devices, id: \.id)
    }

    /// `page`'s ids only: `SELECT id` with the page's conditions, answered from the index the
    /// page walks when it holds them all (`devices_app_platform_active`, `devices_user`).
    func pageIds(_ parts: [DeviceFilter], from cursor: PageCursor, limit: Int) throws -> ([Int64], PageCursor?) {
        try walk(parts, from: cursor, limit: limit, read: { f in
            let (sql, args) = self.devicesQuery(f, columns: "id")
            return try self.db.query(sql, args) { $0.int(0) }
        }, id: { $0 })
    }

    /// Pages through `parts` one after another, `read` giving a part's rows in id order.
    private func walk<T>(_ parts: [DeviceFilter], from cursor: PageCursor, limit: Int, read: (DeviceFilter) throws -> [T], id: (T) -> Int64) throws -> ([T], PageCursor?) {
        var out: [T] = []
        var c = cursor
        while c.part < parts.count && out.count < limit {
            let want = limit - out.count
            var f = parts[c.part]
            f.afterId = c.afterId
            f.limit = want
            let rows = try read(f)
            out.append(contentsOf: rows)
            if let last = rows.last, rows.count == want {
                c.afterId = id(last)
            } else {
                c.part += 1
                c.afterId = 0
            }
        }
        return (out, c.part < parts.count ? c : nil)
    }

    /// Ids per `groups` query: a long id list is counted a slice at a time, so the query's
    /// temporary list stays small.
    static let groupIdSlice = 5000

    /// How many devices match a filter, per (app, platform).
    ///
    /// A filter on app, platform and active only is answered from `device_counts` (a few rows);
    /// others read the matching devices through their index once.
    func groups(_ f: DeviceFilter) throws -> [DeviceGroup] {
        // Only app, platform and active: the maintained counts answer. Any other condition
        // (ids, users, a topic condition, a platform excluded...) counts the matching rows.
        if f.ids == nil && f.user == nil && f.users == nil && f.registrationId == nil && f.afterId == nil
            && f.notPlatform == nil && f.topics == nil
        {
            var conds = ["n > 0"]
            var args: [SQLValue] = []
            if let app = f.app { conds.append("app = ?"); args.append(.text(app)) }
            if let p = f.platform { conds.append("platform = ?"); args.append(.text(p.rawValue)) }
            if let a = f.active { conds.append("active = ?"); args.append(.from(a)) }
            return try groupRows(
                "SELECT app, platform, SUM(n) FROM device_counts WHERE \(conds.joined(separator: " AND ")) GROUP BY app, platform",
                args)
        }
        if let ids = f.ids, ids.count > Self.groupIdSlice {
            var sums: [DeviceGroup] = []
            var start = 0
            while start < ids.count {
                var slice = f
                slice.ids = Array(ids[start..<min(start + Self.groupIdSlice, ids.count)])
                start += Self.groupIdSlice
                for g in try groups(slice) {
                    if let i = sums.firstIndex(where: { $0.app == g.app && $0.platform == g.platform }) {
                        sums[i].count += g.count
                    } else {
                        sums.append(g)
                    }
                }
            }
            return sums
        }
        let (w, args) = whereFilter(f)
        return try groupRows("SELECT app, platform, COUNT(*) FROM devices\(w) GROUP BY app, platform", args)
    }

    private func groupRows(_ sql: String, _ args: [SQLValue]) throws(DatabaseError) -> [DeviceGroup] {
        try db.query(sql, args) { s throws(DatabaseError) in
            let p = s.text(1) ?? ""
            guard let platform = Platform(rawValue: p) else {
                throw DatabaseError(code: 1, message: "unknown platform '\(p)'", sql: s.sql)
            }
            return DeviceGroup(app: s.text(0) ?? "", platform: platform, count: Int(s.int(2)))
        }
    }

    func update(_ key: DeviceKey, _ u: DeviceUpdate, now: Int64) throws -> Device {
        guard let existing = try device(key) else { throw CommandError(.notFound, "\(Self.describe(key)) not found") }
        let sets = try RegistryBookkeeping.updateColumns(u, of: existing, key: key, now: now) { token in
            try db.query(
                "SELECT id FROM devices WHERE app = ? AND platform = ? AND registration_id = ? AND id <> ?",
                [.text(existing.app), .text(existing.platform.rawValue), .text(token), .int(existing.id)]
            ) { $0.int(0) }.first
        }
        var args = sets.map(\.value)
        args.append(.int(existing.id))
        let rows = try db.query(
            "UPDATE devices SET \(sets.map { "\($0.column) = ?" }.joined(separator: ", ")) WHERE id = ? RETURNING \(Self.columns)", args,
            Self.device)
        guard let d = rows.first else { throw CommandError(.notFound, "\(Self.describe(key)) not found") }
        return d
    }

    func prune(inactiveBefore: Int64?) throws -> Int {
        if let t = inactiveBefore {
            try db.execute("DELETE FROM devices WHERE active = 0 AND inactive_at < ?", [.int(t)])
        } else {
            try db.execute("DELETE FROM devices WHERE active = 0")
        }
        return db.changes
    }

    static let statsSQL = "SELECT app, platform, active, n FROM device_counts WHERE n > 0 ORDER BY app, platform, active"

    func stats() throws -> RegistryStats {
        // Maintained by triggers (migration v2): exact, and a few rows to read at any registry size.
        let rows = try db.query(Self.statsSQL) { s throws(DatabaseError) -> (app: String, platform: Platform, active: Bool, count: Int) in
            let p = s.text(1) ?? ""
            guard let platform = Platform(rawValue: p) else {
                throw DatabaseError(code: 1, message: "unknown platform '\(p)' in devices", sql: s.sql)
            }
            return (app: s.text(0) ?? "", platform: platform, active: s.int(2) != 0, count: Int(s.int(3)))
        }
        // Active first within each (app, platform): a sort of a handful of rows here, not in SQL.
        let ordered = rows.sorted { a, b in (a.app, a.platform.rawValue, a.active ? 0 : 1) < (b.app, b.platform.rawValue, b.active ? 0 : 1) }
        return RegistryStats(total: rows.reduce(0) { $0 + $1.count }, rows: ordered)
    }

    /// Marks devices inactive and appends one `device_deactivated` event per device actually
    /// deactivated (in `list` order), in the caller's transaction: a device already inactive,
    /// missing, or listed twice gives no second event.
    func deactivate(_ list: [Deactivation]) throws -> Set<Int64> {
        var done = Set<Int64>()
        var events: [PushEvent] = []
        for d in list {
            // A device re-registered (updated) after the provider's "invalid since" keeps its new token.
            let rows = try db.query(
                """
                UPDATE devices SET active = 0, inactive_reason = ?1, inactive_at = ?2
                WHERE id = ?3 AND active = 1 AND (?4 IS NULL OR updated_at <= ?4)
                RETURNING id, app, platform, registration_id
                """,
                [.text(d.reason), .int(d.at), .int(d.id), .from(d.invalidSince)]
            ) { s in (s.int(0), s.text(1) ?? "", s.text(2) ?? "", s.text(3) ?? "") }
            for (id, app, platform, token) in rows {
                done.insert(id)
                events.append(PushEvent(.deviceDeactivated, at: d.at, [
                    "device": .int(id), "app": .string(app), "platform": .string(platform),
                    "registration_id": .string(token), "reason": .string(d.reason),
                ]))
            }
        }
        try appendEvents(events)
        return done
    }

    func resolveTokens(app: String, platform: Platform, _ tokens: [String]) throws -> [Device?] {
        var out: [Device?] = []
        out.reserveCapacity(tokens.count)
        let select = try db.statement(
            "SELECT \(Self.columns) FROM devices WHERE app = ? AND platform = ? AND registration_id = ?")
        for t in tokens {
            try select.bind([.text(app), .text(platform.rawValue), .text(DeviceInput.canonicalToken(t, platform: platform))])
            defer { select.reset() }
            out.append(try select.step() ? try Self.device(select) : nil)
        }
        return out
    }

    // MARK: kv

    func kvGet(_ key: String) throws -> String? {
        try db.query("SELECT value FROM kv WHERE key = ?", [.text(key)]) { $0.text(0) }.first ?? nil
    }

    func kvSet(_ key: String, _ value: String) throws {
        try db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [.text(key), .text(value)])
    }

    /// `KeyValueStore.compareAndSet` inside the caller's write transaction (BEGIN IMMEDIATE: no
    /// other writer between the conditional write and the read of the winner's value).
    func kvCompareAndSet(_ key: String, expected: String?, new: String) throws -> KVSwap {
        if let expected {
            try db.execute("UPDATE kv SET value = ? WHERE key = ? AND value = ?", [.text(new), .text(key), .text(expected)])
        } else {
            try db.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", [.text(key), .text(new)])
        }
        if db.changes == 1 { return .swapped }
        return .conflict(current: try kvGet(key))
    }

    // MARK: events

    /// Appends events to the feed inside the caller's transaction (they commit, or vanish,
    /// with what they report); `eventsAppended` counts them so the runner can wake readers
    /// waiting for newer events once the transaction has committed.
    func appendEvents(_ events: [PushEvent]) throws {
        guard !events.isEmpty else { return }
        let insert = try db.statement("INSERT INTO events (type, at, body) VALUES (?, ?, ?)")
        for e in events {
            try insert.bind([.text(e.kind.rawValue), .int(e.at), .text(JSONValue.object(e.fields).jsonString)])
            defer { insert.reset() }
            _ = try insert.step()
        }
        eventsAppended += events.count
    }

    /// Events appended since the runner last reset it (see `appendEvents`).
    var eventsAppended = 0

    // MARK: topics

    // Topic names arrive as `TopicName`, checked where the request was parsed.

    func subscribe(_ ids: [Int64], topic: TopicName, now: Int64) throws {
        for id in ids {
            let exists = try db.query("SELECT 1 FROM devices WHERE id = ?", [.int(id)]) { $0.int(0) }
            guard !exists.isEmpty else { throw CommandError(.notFound, "device \(id) not found") }
            try db.execute(
                "INSERT INTO topic_subscriptions (device_id, topic, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [.int(id), .text(topic.name), .int(now)])
        }
    }

    func unsubscribe(_ ids: [Int64], topic: TopicName) throws {
        try db.execute(
            "DELETE FROM topic_subscriptions WHERE topic = ? AND device_id IN (SELECT value FROM json_each(?))",
            [.text(topic.name), .text(Self.jsonArray(ids))])
    }

    func topics(of ids: [Int64]) throws -> [Int64: [String]] {
        var out: [Int64: [String]] = [:]
        for id in ids { out[id] = [] }
        let rows = try db.query(
            "SELECT device_id, topic FROM topic_subscriptions WHERE device_id IN (SELECT value FROM json_each(?)) ORDER BY device_id, topic",
            [.text(Self.jsonArray(ids))]
        ) { s in (s.int(0), s.text(1) ?? "") }
        for (id, t) in rows { out[id, default: []].append(t) }
        return out
    }

    /// Devices subscribed to `topic` (of `app` if given), by id: the subscriptions come in device
    /// order from `topic_subscriptions (topic, device_id)`, each device by its primary key.
    func subscribers(of topic: TopicName, app: String? = nil) throws -> [Device] {
        try db.query(Self.subscribersSQL, [.text(topic.name), .from(app)], Self.device)
    }

    static let subscribersSQL = """
        SELECT \(columns.split(separator: ",").map { "d." + $0.trimmingSpaces() }.joined(separator: ", "))
        FROM topic_subscriptions t CROSS JOIN devices d ON d.id = t.device_id
        WHERE t.topic = ?1 AND (?2 IS NULL OR d.app = ?2) ORDER BY t.device_id
        """
}

extension Substring {
    fileprivate func trimmingSpaces() -> String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
