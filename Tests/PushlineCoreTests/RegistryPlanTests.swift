import Testing

@testable import PushlineCore

/// The query plans of the registry's hot queries (issue 11): each reads through an index or the
/// primary key from where it starts, never scans the devices table where a search is expected, and
/// never sorts in a temporary B-tree (a sort makes every page of a paging read all the matches).
/// Plans without ANALYZE do not depend on the data, so a small registry shows the plans of a large one.
@Suite struct RegistryPlanTests {
    /// The plan's detail lines, joined by " | ".
    static func plan(_ db: Database, _ sql: String, _ args: [SQLValue]) throws -> String {
        try db.query("EXPLAIN QUERY PLAN " + sql, args) { $0.text(3) ?? "" }.joined(separator: " | ")
    }

    static func store(_ dir: TempDir) throws -> SQLiteRegistryStore {
        let s = try SQLiteRegistryStore(path: dir.db)
        try s.db.exec("BEGIN")
        var inputs: [DeviceInput] = []
        for i in 0..<60 {
            inputs.append(try DeviceInput(platform: i % 2 == 0 ? .apns : .fcm, app: i % 3 == 0 ? "other" : "default",
                                          registrationId: i % 2 == 0 ? apnsToken(i) : "f-\(i)", user: "u\(i % 7)"))
        }
        _ = try s.register(inputs, updateOnDuplicate: false, now: 1)
        try s.db.exec("COMMIT")
        return s
    }

    static func expectSearch(_ p: String, _ using: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(p.contains("SEARCH devices USING \(using)") || p.contains("SEARCH devices USING COVERING \(using)"),
                "plan: \(p)", sourceLocation: sourceLocation)
        #expect(!p.contains("SCAN devices"), "full scan: \(p)", sourceLocation: sourceLocation)
        #expect(!p.contains("TEMP B-TREE"), "temporary sort: \(p)", sourceLocation: sourceLocation)
    }

    @Test func sendPagesAreIndexSearchesInIdOrder() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try Self.store(dir)
        // A send's parts (Dispatcher.pageParts): one (app, platform) group, or one user, from an id on.
        var group = DeviceFilter()
        group.app = "default"
        group.platform = .apns
        group.active = true
        group.afterId = 10
        group.limit = 5000
        var (sql, args) = s.devicesQuery(group)
        Self.expectSearch(try Self.plan(s.db, sql, args), "INDEX devices_app_platform_active (app=? AND platform=? AND active=? AND rowid>?)")
        var user = DeviceFilter()
        user.user = "u3"
        user.app = "default"
        user.platform = .apns
        user.active = true
        user.afterId = 10
        user.limit = 5000
        (sql, args) = s.devicesQuery(user)
        Self.expectSearch(try Self.plan(s.db, sql, args), "INDEX devices_user (user_id=? AND rowid>?)")
        // A users target becomes one part per user, a filter without a user one per group.
        var users = DeviceFilter()
        users.users = ["u2", "u1", "u2"]
        users.active = true
        let parts = Dispatcher.pageParts(users, groups: [])
        #expect(parts.map(\.user) == ["u1", "u2"] && parts.allSatisfy { $0.users == nil && $0.active == true })
        var filter = DeviceFilter()
        filter.platform = .apns
        filter.active = true
        let groups = [DeviceGroup(app: "default", platform: .apns, count: 1), DeviceGroup(app: "other", platform: .apns, count: 1)]
        let gparts = Dispatcher.pageParts(filter, groups: groups)
        #expect(gparts.map(\.app) == ["default", "other"] && gparts.allSatisfy { $0.platform == .apns && $0.active == true })
    }

    @Test func devicesListingNeverSorts() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try Self.store(dir)
        // Every filter combination the `devices` command can page with.
        var cases: [(DeviceFilter, String)] = []
        func add(_ using: String, _ set: (inout DeviceFilter) -> Void) {
            var f = DeviceFilter()
            set(&f)
            f.afterId = 5
            f.limit = 101
            cases.append((f, using))
        }
        add("INTEGER PRIMARY KEY (rowid>?)") { _ in }
        add("INTEGER PRIMARY KEY (rowid>?)") { $0.app = "default" }
        add("INTEGER PRIMARY KEY (rowid>?)") { $0.platform = .apns }
        add("INTEGER PRIMARY KEY (rowid>?)") { $0.active = false }
        add("INTEGER PRIMARY KEY (rowid>?)") { $0.app = "default"; $0.platform = .apns }
        add("INTEGER PRIMARY KEY (rowid>?)") { $0.app = "default"; $0.active = true }
        add("INTEGER PRIMARY KEY (rowid>?)") { $0.registrationId = "f-1" }
        add("INDEX devices_app_platform_active (app=? AND platform=? AND active=? AND rowid>?)") {
            $0.app = "default"; $0.platform = .fcm; $0.active = true
        }
        add("INDEX sqlite_autoindex_devices_1 (app=? AND platform=? AND registration_id=?)") {
            $0.app = "default"; $0.platform = .fcm; $0.registrationId = "f-1"
        }
        add("INDEX sqlite_autoindex_devices_1 (app=? AND platform=? AND registration_id=?)") {
            $0.app = "default"; $0.platform = .fcm; $0.registrationId = "f-1"; $0.active = true
        }
        add("INDEX devices_user (user_id=? AND rowid>?)") { $0.user = "u1" }
        add("INDEX devices_user (user_id=? AND rowid>?)") { $0.user = "u1"; $0.app = "default"; $0.platform = .fcm; $0.active = true }
        add("INTEGER PRIMARY KEY (rowid=?)") { $0.ids = [3, 1, 2]; $0.user = "u1"; $0.app = "default" }
        for (f, using) in cases {
            let (sql, args) = s.devicesQuery(f)
            let p = try Self.plan(s.db, sql, args)
            #expect(p.contains("SEARCH devices USING \(using)") || p.contains("SEARCH devices USING COVERING \(using)"), "plan: \(p) for \(sql)")
            #expect(!p.contains("SCAN devices") && !p.contains("TEMP B-TREE"), "plan: \(p) for \(sql)")
            // And the listing returns what the filter selects, in id order.
            let got = try s.devices(f)
            #expect(got.map(\.id) == got.map(\.id).sorted())
        }
    }

    @Test func countsStatsPruneTopicsAndLookupsUseTheirIndexes() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try Self.store(dir)
        // stats and a filter's group counts read device_counts, never the devices.
        let stats = try Self.plan(s.db, SQLiteRegistryStore.statsSQL, [])
        #expect(!stats.contains("devices ") && !stats.contains("TEMP B-TREE"), "plan: \(stats)")
        // prune reads only the inactive devices (a partial index), with or without a date.
        Self.expectSearch(try Self.plan(s.db, "DELETE FROM devices WHERE active = 0 AND inactive_at < ?", [.int(5)]),
                          "INDEX devices_inactive (inactive_at<?)")
        let all = try Self.plan(s.db, "DELETE FROM devices WHERE active = 0", [])
        #expect(all.hasPrefix("SCAN devices USING INDEX devices_inactive") && !all.contains("TEMP B-TREE"), "plan: \(all)")
        // A topic's subscribers come in device order from the (topic, device_id) index.
        let sub = try Self.plan(
            s.db,
            SQLiteRegistryStore.subscribersSQL,
            [.text("news"), .text("default")])
        #expect(sub.contains("SEARCH t USING COVERING INDEX topic_subscriptions_topic_device (topic=?)")
                && sub.contains("SEARCH d USING INTEGER PRIMARY KEY (rowid=?)") && !sub.contains("TEMP B-TREE"), "plan: \(sub)")
        // Token lookups (registration_ids), deactivations and unregisters by id.
        Self.expectSearch(try Self.plan(s.db, "SELECT \(SQLiteRegistryStore.columns) FROM devices WHERE app = ? AND platform = ? AND registration_id = ?",
                                        [.text("default"), .text("fcm"), .text("f-1")]),
                          "INDEX sqlite_autoindex_devices_1 (app=? AND platform=? AND registration_id=?)")
        Self.expectSearch(try Self.plan(s.db, "UPDATE devices SET active = 0, inactive_reason = ?1, inactive_at = ?2 WHERE id = ?3 AND active = 1 AND (?4 IS NULL OR updated_at <= ?4) RETURNING id",
                                        [.text("x"), .int(1), .int(1), .null]), "INTEGER PRIMARY KEY (rowid=?)")
        // A long id list is counted a slice at a time through the primary key.
        var ids = DeviceFilter()
        ids.ids = [1, 2, 3]
        ids.active = true
        let (w, args) = s.whereFilter(ids)
        let g = try Self.plan(s.db, "SELECT app, platform, COUNT(*) FROM devices\(w) GROUP BY app, platform", args)
        #expect(g.contains("SEARCH devices USING INTEGER PRIMARY KEY (rowid=?)") && !g.contains("SCAN devices"), "plan: \(g)")
    }

    /// device_counts stays exact through every write path, and migration v2 fills it from v1 data.
    @Test func maintainedCountsAreExact() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        // A v1 database with devices, then migrated.
        do {
            let db = try Database(path: dir.db)
            try db.exec("BEGIN")
            try Migrations.v1(db)
            try db.exec("PRAGMA user_version = 1; COMMIT")
            try db.exec("""
                INSERT INTO devices (platform, app, registration_id, active, created_at, updated_at, inactive_at)
                VALUES ('fcm', 'default', 'a', 1, 1, 1, NULL), ('fcm', 'default', 'b', 0, 1, 1, 1), ('apns', 'x', 'c', 1, 1, 1, NULL)
                """)
        }
        let reg = try SQLiteRegistry(path: dir.db)
        defer { reg.close() }
        func counts() async throws -> [String] {
            try await reg.stats().rows.map { "\($0.app)/\($0.platform.rawValue)/\($0.active ? 1 : 0)=\($0.count)" }
        }
        func truth() async throws -> [String] {
            let all = try await reg.devices(DeviceFilter())
            var m: [String: Int] = [:]
            for d in all { m["\(d.app)/\(d.platform.rawValue)/\(d.active ? 1 : 0)", default: 0] += 1 }
            return m.sorted { a, b in
                let (x, y) = (a.key.split(separator: "/"), b.key.split(separator: "/"))
                return (x[0], x[1], x[2] == "1" ? 0 : 1) < (y[0], y[1], y[2] == "1" ? 0 : 1)
            }.map { "\($0.key)=\($0.value)" }
        }
        #expect(try await counts() == ["default/fcm/1=1", "default/fcm/0=1", "x/apns/1=1"])
        let made = try await reg.register((0..<4).map { i in try fcm("n\(i)", user: "u") }, updateOnDuplicate: false)
        #expect(try await counts() == truth())
        var u = DeviceUpdate()
        u.active = false
        _ = try await reg.update(.id(made[0].device.id), u)
        _ = await reg.deactivate([.init(id: made[1].device.id, reason: "gone", at: 5)])
        #expect(try await counts() == truth())
        // Re-registering an inactive token with update_on_duplicate makes it active again.
        _ = try await reg.register([try fcm("n0", user: "v")], updateOnDuplicate: true)
        _ = try await reg.unregister([.id(made[2].device.id)])
        #expect(try await counts() == truth())
        #expect(try await reg.prune(inactiveBefore: nil) == 2)
        #expect(try await counts() == truth())
        #expect(try await reg.stats().total == (try await reg.devices(DeviceFilter())).count)
        // Group counts of a filter come from the same counters.
        var f = DeviceFilter()
        f.platform = .fcm
        f.active = true
        #expect(try await reg.groups(f) == [DeviceGroup(app: "default", platform: .fcm, count: 3)])
    }

    /// `page` walks its parts one after another, a limit at a time, and ends with a nil cursor.
    @Test func pageWalksPartsInOrder() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let reg = try SQLiteRegistry(path: dir.db)
        defer { reg.close() }
        let made = try await reg.register((0..<7).map { i in try fcm("p\(i)", user: "u\(i % 3)") }, updateOnDuplicate: false)
        var u = DeviceUpdate()
        u.active = false
        _ = try await reg.update(.id(made[3].device.id), u)  // u0, inactive: skipped
        var base = DeviceFilter()
        base.users = ["u2", "u0", "nobody", "u0"]
        base.active = true
        let parts = Dispatcher.pageParts(base, groups: [])
        var cursor: PageCursor? = PageCursor()
        var pages: [[Int64]] = []
        while let c = cursor {
            let (devices, next) = try await reg.page(parts, from: c, limit: 2)
            pages.append(devices.map(\.id))
            cursor = next
        }
        let ids = made.map(\.device.id)
        // u0: devices 0 and 6 (3 is inactive); nobody: none; u2: devices 2 and 5.
        #expect(pages.flatMap { $0 } == [ids[0], ids[6], ids[2], ids[5]])
        #expect(pages.allSatisfy { $0.count <= 2 })
    }

    /// The queries of an async accept's plan (`groups` of an `ids` target) and of a send to
    /// `ids` (`devices`) are prepared once: a bound `active` made SQLite's planner look at its
    /// value (for the partial index `devices_inactive`), so every new binding parsed the
    /// statement again (one parse an accept).
    @Test func idQueriesAreNotPreparedAgainAtEveryBinding() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let s = try Self.store(dir)
        for i in 1...20 {
            for active in [true, false] {
                var f = DeviceFilter()
                f.ids = [Int64(i)]
                f.active = active
                _ = try s.groups(f)
                _ = try s.devices(f)
            }
            // A send to `registration_ids` (the single-send path).
            _ = try s.resolveTokens(app: "default", platform: .apns, [apnsToken(2 * i), apnsToken(2 * i + 1)])
        }
        #expect(s.db.reprepares == 0)
    }
}
