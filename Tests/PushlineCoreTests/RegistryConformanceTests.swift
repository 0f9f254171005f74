import Glibc
import Testing

@testable import PushlineCore

/// The storage conformance suite: every test runs on SQLite and, when `PUSHLINE_TEST_PG_HOST`
/// names a PostgreSQL socket directory (`make test` starts a throwaway cluster and sets it), on
/// PostgreSQL too, each on a fresh database. The same assertions on both backends.
@Suite struct RegistryConformanceTests {
    @Test(arguments: TestBackend.all) func registerAndFetch(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        let before = nowMillis()
        let out = try await reg.register(
            [try DeviceInput(parsing: ["platform": "apns", "registration_id": .string(apnsToken(1)), "user": 5, "name": "iPhone"]),
             try DeviceInput(parsing: Fixtures.webpush(["browser": "CHROME"]))],
            updateOnDuplicate: false)
        #expect(out.count == 2)
        #expect(out.allSatisfy { $0.created && !$0.updated })
        let a = out[0].device
        #expect(a.registrationId == apnsToken(1).lowercased())
        #expect(a.user == "5" && a.name == "iPhone" && a.active)
        #expect(a.createdAt >= before && a.createdAt == a.updatedAt)
        #expect(out[1].device.id > a.id)
        #expect(try await reg.device(.id(a.id)) == a)
        #expect(try await reg.device(.token(app: "default", platform: .apns, registrationId: apnsToken(1))) == a)
        #expect(try await reg.device(.id(999)) == nil)
        let w = try await reg.device(.id(out[1].device.id))
        #expect(w?.p256dh == Fixtures.p256dh && w?.auth == Fixtures.auth && w?.browser == "CHROME")
    }

    @Test(arguments: TestBackend.all) func duplicateWithoutUpdateFailsAndChangesNothing(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        let token = "secret-fcm-token-abcdefghijklmnop"
        let first = try await reg.register([try fcm(token, user: "a")], updateOnDuplicate: false)[0].device
        let err = await expectError(.duplicateRegistration) { () async throws(CommandError) in
            _ = try await reg.register([try fcm("other-token-1"), try fcm("other-token-2"), try fcm(token, user: "b")], updateOnDuplicate: false)
        }
        #expect(err?.message.contains("devices[2]") == true)
        #expect(err?.message.contains("default") == true && err?.message.contains("fcm") == true)
        #expect(err?.message.contains(token) == false, "full token leaked: \(err?.message ?? "")")
        // Batch atomicity: the two good devices before the duplicate were not written either.
        let all = try await reg.devices(DeviceFilter())
        #expect(all == [first])
        // Same token in another app is not a duplicate.
        #expect(try await reg.register([try fcm(token, app: "other")], updateOnDuplicate: false)[0].created)
    }

    @Test(arguments: TestBackend.all) func duplicateInsideOneBatch(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        let upper = try DeviceInput(platform: .apns, registrationId: apnsToken(3))
        let lower = try DeviceInput(platform: .apns, registrationId: apnsToken(3).lowercased())
        for update in [false, true] {
            let err = await expectError(.duplicateRegistration) { () async throws(CommandError) in
                _ = try await reg.register([try fcm("x1"), upper, lower], updateOnDuplicate: update)
            }
            #expect(err?.message.contains("devices[2]") == true && err?.message.contains("devices[1]") == true)
        }
        #expect(try await reg.stats().total == 0)
        // The same existing token twice: the second would update the row the first updated.
        _ = try await reg.register([try fcm("old")], updateOnDuplicate: false)
        let err = await expectError(.duplicateRegistration) { () async throws(CommandError) in
            _ = try await reg.register([try fcm("new"), try fcm("old"), try fcm("old")], updateOnDuplicate: true)
        }
        #expect(err?.message.contains("devices[2]") == true && err?.message.contains("devices[1]") == true)
        #expect(try await reg.devices(DeviceFilter()).map(\.registrationId) == ["old"])
    }

    @Test(arguments: TestBackend.all) func duplicateWithUpdateReplacesFieldsAndReactivates(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        let d0 = try await reg.register([try fcm("tok-1", user: "old")], updateOnDuplicate: false)[0].device
        let deactivated = await reg.deactivate([.init(id: d0.id, reason: "UNREGISTERED", at: nowMillis())])
        #expect(deactivated == [d0.id])
        usleep(3000)
        var input = try fcm("tok-1", user: "new")
        input.name = "Pixel"
        let out = try await reg.register([input, try fcm("tok-2")], updateOnDuplicate: true)
        #expect(!out[0].created && out[0].updated)
        #expect(out[1].created && !out[1].updated)
        let d1 = out[0].device
        #expect(d1.id == d0.id)
        #expect(d1.user == "new" && d1.name == "Pixel")
        #expect(d1.active && d1.inactiveReason == nil && d1.inactiveAt == nil)
        #expect(d1.createdAt == d0.createdAt && d1.updatedAt > d0.updatedAt)
        #expect(try await reg.device(.id(d0.id)) == d1)
    }

    @Test(arguments: TestBackend.all) func deactivateRespectsInvalidSince(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        let devs = try await reg.register((0..<4).map { i in try fcm("tok-\(i)") }, updateOnDuplicate: false).map(\.device)
        let t = devs[0].updatedAt
        let now = nowMillis()
        let set = await reg.deactivate([
            .init(id: devs[0].id, reason: "Unregistered", at: now, invalidSince: t - 1),  // re-registered after: stays
            .init(id: devs[1].id, reason: "Unregistered", at: now, invalidSince: t + 1),  // invalid after registration: goes
            .init(id: devs[2].id, reason: "BadDeviceToken", at: now),  // no timestamp: goes
            .init(id: 9999, reason: "x", at: now),  // missing: ignored
        ])
        #expect(set == [devs[1].id, devs[2].id])
        let d0 = try await reg.device(.id(devs[0].id))
        let d1 = try await reg.device(.id(devs[1].id))
        #expect(d0?.active == true)
        #expect(d1?.active == false && d1?.inactiveReason == "Unregistered" && d1?.inactiveAt == now)
        // Already inactive: not reported again.
        #expect(await reg.deactivate([.init(id: devs[1].id, reason: "again", at: now)]).isEmpty)
        #expect(try await reg.device(.id(devs[1].id))?.inactiveReason == "Unregistered")
    }

    @Test(arguments: TestBackend.all) func filtersAndPaging(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        var inputs: [DeviceInput] = []
        for i in 0..<25 { inputs.append(try fcm("tok-\(i)", app: i % 2 == 0 ? "even" : "odd", user: "u\(i % 5)")) }
        let ids = try await reg.register(inputs, updateOnDuplicate: false).map(\.device.id)
        var pages: [[Int64]] = []
        var f = DeviceFilter()
        f.limit = 10
        while true {
            let page = try await reg.devices(f)
            if page.isEmpty { break }
            pages.append(page.map(\.id))
            f.afterId = page.last?.id
        }
        #expect(pages.map(\.count) == [10, 10, 5])
        #expect(pages.flatMap { $0 } == ids)

        var g = DeviceFilter()
        g.app = "even"
        #expect(try await reg.devices(g).count == 13)
        g.user = "u0"
        #expect(try await reg.devices(g).map(\.registrationId) == ["tok-0", "tok-10", "tok-20"])
        var h = DeviceFilter()
        h.users = ["u1", "u2", "nobody"]
        #expect(try await reg.devices(h).count == 10)
        var k = DeviceFilter()
        k.ids = [ids[3], ids[7], 12345]
        #expect(try await reg.devices(k).map(\.id) == [ids[3], ids[7]])
        var r = DeviceFilter()
        r.registrationId = "tok-4"
        r.platform = .fcm
        #expect(try await reg.devices(r).map(\.id) == [ids[4]])
        r.platform = .apns
        #expect(try await reg.devices(r).isEmpty)
        _ = await reg.deactivate([.init(id: ids[0], reason: "x", at: 1)])
        var a = DeviceFilter()
        a.active = false
        #expect(try await reg.devices(a).map(\.id) == [ids[0]])
        a.active = true
        #expect(try await reg.devices(a).count == 24)
    }

    @Test(arguments: TestBackend.all) func pruneDeletesInactiveOnly(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        let ids = try await reg.register((0..<5).map { i in try fcm("tok-\(i)") }, updateOnDuplicate: false).map(\.device.id)
        _ = await reg.deactivate([
            .init(id: ids[0], reason: "x", at: 1000), .init(id: ids[1], reason: "x", at: 5000), .init(id: ids[2], reason: "x", at: 9000),
        ])
        #expect(try await reg.prune(inactiveBefore: 5000) == 1)
        #expect(try await reg.device(.id(ids[0])) == nil)
        #expect(try await reg.device(.id(ids[1])) != nil)
        #expect(try await reg.prune(inactiveBefore: nil) == 2)
        #expect(try await reg.devices(DeviceFilter()).map(\.id) == [ids[3], ids[4]])
        #expect(try await reg.prune(inactiveBefore: nil) == 0)
    }

    @Test(arguments: TestBackend.all) func statsCountsPerAppPlatformAndState(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        let out = try await reg.register(
            [try fcm("a"), try fcm("b"), try fcm("c", app: "z"), try DeviceInput(platform: .apns, registrationId: apnsToken(1))],
            updateOnDuplicate: false)
        _ = await reg.deactivate([.init(id: out[1].device.id, reason: "x", at: 1)])
        let s = try await reg.stats()
        #expect(s.total == 4)
        let rows = s.rows.map { "\($0.app)/\($0.platform.rawValue)/\($0.active)/\($0.count)" }
        #expect(rows == ["default/apns/true/1", "default/fcm/true/1", "default/fcm/false/1", "z/fcm/true/1"])
    }

    @Test(arguments: TestBackend.all) func keyValueStore(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        #expect(await reg.get("k") == nil)
        await reg.set("k", "v1")
        await reg.set("k", "v2")
        #expect(await reg.get("k") == "v2")
        let store: any KeyValueStore = reg
        await store.set("other", "")
        #expect(await store.get("other") == "")
        #expect(await store.get("k") == "v2")
    }

    @Test(arguments: TestBackend.all) func keyValueCompareAndSet(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let store: any KeyValueStore = fixture.reg
        // Insert if absent.
        #expect(await store.compareAndSet("tok", expected: nil, new: "a") == .swapped)
        #expect(await store.compareAndSet("tok", expected: nil, new: "b") == .conflict(current: "a"))
        #expect(await store.get("tok") == "a")
        // Conditional update.
        #expect(await store.compareAndSet("tok", expected: "x", new: "c") == .conflict(current: "a"))
        #expect(await store.compareAndSet("tok", expected: "a", new: "c") == .swapped)
        #expect(await store.get("tok") == "c")
        #expect(await store.compareAndSet("absent", expected: "a", new: "z") == .conflict(current: nil))
        #expect(await store.get("absent") == nil)
        // Many swappers from the same value at once (on PostgreSQL over the pool's 4 connections,
        // as daemons of a fleet): exactly one wins, every loser is told the winner's value.
        for expected in [String?.none, "c"] {
            let key = expected == nil ? "race" : "tok"
            let outcomes = await withTaskGroup(of: (String, KVSwap).self, returning: [(String, KVSwap)].self) { g in
                for i in 0..<24 {
                    g.addTask { ("v\(i)", await store.compareAndSet(key, expected: expected, new: "v\(i)")) }
                }
                var out: [(String, KVSwap)] = []
                for await o in g { out.append(o) }
                return out
            }
            let winners = outcomes.filter { $0.1 == .swapped }.map(\.0)
            #expect(winners.count == 1, "\(outcomes)")
            let stored = await store.get(key)
            #expect(stored == winners.first)
            #expect(outcomes.allSatisfy { $0.1 == .swapped || $0.1 == .conflict(current: stored) }, "\(outcomes)")
        }
    }

    @Test(arguments: TestBackend.all) func unregisterUpdateAndResolve(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        let out = try await reg.register(
            [try DeviceInput(platform: .apns, registrationId: apnsToken(1)), try fcm("f1"), try fcm("f2")], updateOnDuplicate: false)
        let ids = out.map(\.device.id)

        let resolved = try await reg.resolveTokens(app: "default", platform: .apns, [apnsToken(2), apnsToken(1), "zz"])
        #expect(resolved.map { $0?.id } == [nil, ids[0], nil])

        var u = DeviceUpdate()
        u.name = .some("Phone")
        u.user = .some("7")
        u.deviceId = .some("0A1B2C3D-4E5F-6789-ABCD-EF0123456789")
        var d = try await reg.update(.id(ids[1]), u)
        #expect(d.name == "Phone" && d.user == "7" && d.deviceId == "0a1b2c3d-4e5f-6789-abcd-ef0123456789")
        var clear = DeviceUpdate()
        clear.name = .some(nil)
        clear.active = false
        d = try await reg.update(.token(app: "default", platform: .fcm, registrationId: "f1"), clear)
        #expect(d.name == nil && d.user == "7" && !d.active)
        #expect(d.inactiveReason == SQLiteRegistry.clientDeactivationReason && d.inactiveAt != nil)
        var on = DeviceUpdate()
        on.active = true
        d = try await reg.update(.id(ids[1]), on)
        #expect(d.active && d.inactiveReason == nil && d.inactiveAt == nil)
        await expectError(.notFound) { () async throws(CommandError) in _ = try await reg.update(.id(777), on) }
        var bad = DeviceUpdate()
        bad.deviceId = .some("not-a-uuid")
        await expectError(.invalidArgument) { () async throws(CommandError) in _ = try await reg.update(.id(ids[1]), bad) }

        // Unregister: APNs token matched case-insensitively; missing keys reported by index.
        let r = try await reg.unregister([
            .token(app: "default", platform: .apns, registrationId: apnsToken(1)), .id(555), .id(ids[2]),
            .token(app: "other", platform: .fcm, registrationId: "f1"),
        ])
        #expect(r.deleted == 2 && r.missing == [1, 3])
        #expect(try await reg.devices(DeviceFilter()).map(\.id) == [ids[1]])
    }

    @Test(arguments: TestBackend.all) func topics(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        let ids = try await reg.register((0..<3).map { i in try fcm("t\(i)") }, updateOnDuplicate: false).map(\.device.id)
        try await reg.subscribe([ids[0], ids[1]], topic: "news")
        try await reg.subscribe([ids[0], ids[1]], topic: "news")  // idempotent
        try await reg.subscribe([ids[1]], topic: "sport")
        #expect(try await reg.subscribers(of: "news", app: nil).map(\.id) == [ids[0], ids[1]])
        let t = try await reg.topics(of: [ids[0], ids[1], ids[2]])
        #expect(t == [ids[0]: ["news"], ids[1]: ["news", "sport"], ids[2]: []])
        // Unknown device: not_found and nothing written.
        await expectError(.notFound) { () async throws(CommandError) in try await reg.subscribe([ids[2], 999], topic: "weather") }
        #expect(try await reg.subscribers(of: "weather", app: nil).isEmpty)
        #expect(throws: CommandError.self) { try TopicName(parsing: "bad topic") }  // never reaches the registry
        try await reg.unsubscribe([ids[0]], topic: "news")
        #expect(try await reg.subscribers(of: "news", app: nil).map(\.id) == [ids[1]])
        // Deleting a device deletes its subscriptions.
        _ = try await reg.unregister([.id(ids[1])])
        #expect(try await reg.subscribers(of: "news", app: nil).isEmpty)
        #expect(try await reg.subscribers(of: "sport", app: nil).isEmpty)
    }

    /// Each backend renders a topic condition in its own SQL (SQLiteTopicCondition,
    /// PostgresTopicCondition): both select exactly the devices the condition means, alone and
    /// beside the filter's other parameters (app, platform, active), whose placeholders come first.
    @Test(arguments: TestBackend.all) func topicConditionsSelectTheSameDevices(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        // Eight devices, one per subset of {a, b, c}; two more in another app.
        let names = ["a", "b", "c"]
        var topicsOf: [Int64: Set<String>] = [:]
        let ids = try await reg.register((0..<8).map { i in try fcm("s\(i)") } + [try fcm("o0", app: "other"), try fcm("o1", app: "other")],
                                         updateOnDuplicate: false).map(\.device.id)
        for (i, id) in ids.enumerated() {
            let mask = i < 8 ? i : 7
            topicsOf[id] = Set(names.indices.filter { mask & (1 << $0) != 0 }.map { names[$0] })
            for t in topicsOf[id] ?? [] { try await reg.subscribe([id], topic: try TopicName(parsing: t)) }
        }
        func meaning(_ c: TopicCondition, _ t: Set<String>) -> Bool {
            switch c {
            case .topic(let x): return t.contains(x)
            case .and(let l, let r): return meaning(l, t) && meaning(r, t)
            case .or(let l, let r): return meaning(l, t) || meaning(r, t)
            case .not(let x): return !meaning(x, t)
            }
        }
        let conditions = [
            "'a' in topics", "!('a' in topics)", "'a' in topics && 'b' in topics", "'a' in topics || 'b' in topics && 'c' in topics",
            "('a' in topics || 'b' in topics) && !('c' in topics)", "!('a' in topics && 'b' in topics) && 'c' in topics",
            "'zzz' in topics || !'b' in topics",
        ]
        for text in conditions {
            let c = try TopicCondition.parse(text)
            var any = DeviceFilter()
            any.topics = c
            let all = try await reg.devices(any).map(\.id)
            #expect(all == ids.filter { meaning(c, topicsOf[$0] ?? []) }, "\(backend): \(text)")
            var f = DeviceFilter()
            (f.app, f.platform, f.active, f.topics) = ("default", .fcm, true, c)
            let inApp = try await reg.devices(f).map(\.id)
            #expect(inApp == ids.prefix(8).filter { meaning(c, topicsOf[$0] ?? []) }, "\(backend): \(text) in app default")
        }
    }

    @Test(arguments: TestBackend.all) func concurrentRegistersGroupCommitIsolatesFailures(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        _ = try await reg.register([try fcm("dup-0"), try fcm("dup-1")], updateOnDuplicate: false)
        let results = await withTaskGroup(of: (Int, Bool).self) { group in
            for i in 0..<400 {
                group.addTask {
                    // Every 100th job writes a fresh device, then collides with an existing
                    // token: it must fail alone, and its fresh device must be rolled back.
                    let batch = i % 100 == 0 ? ["fresh-\(i)", "dup-\(i / 200)"] : ["c-\(i)"]
                    do {
                        _ = try await reg.register(try batch.map { t throws(CommandError) in try fcm(t) }, updateOnDuplicate: false)
                        return (i, true)
                    } catch {
                        return (i, false)
                    }
                }
            }
            var r: [Int: Bool] = [:]
            for await (i, ok) in group { r[i] = ok }
            return r
        }
        let failed = results.filter { !$0.value }.map(\.key).sorted()
        #expect(failed == [0, 100, 200, 300])
        #expect(try await reg.stats().total == 2 + 396)
        var f = DeviceFilter()
        f.registrationId = "fresh-100"
        #expect(try await reg.devices(f).isEmpty)
    }

    /// Batches as large as imports send (at least `PostgresStore.plainInsertMin`, where PostgreSQL
    /// first tries a plain INSERT and falls back to `ON CONFLICT` on a token already registered):
    /// the same outcomes as small batches, on both backends.
    @Test(arguments: TestBackend.all) func largeBatches(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let reg = fixture.reg
        let n = max(200, PostgresStore.plainInsertMin * 2)
        // All new, optional fields set on a few devices only (and none at all in `bare`).
        var inputs: [DeviceInput] = []
        for i in 0..<n {
            var d = try fcm("big-\(i)", user: i % 7 == 0 ? "u\(i)" : nil)
            if i == 5 { d.name = "five" }
            if i == 9 { d.active = false }
            inputs.append(d)
        }
        inputs[11] = try DeviceInput(parsing: Fixtures.webpush(["browser": "FIREFOX"]))
        let out = try await reg.register(inputs, updateOnDuplicate: false)
        #expect(out.count == n && out.allSatisfy { $0.created && !$0.updated })
        #expect(out.map(\.device.registrationId) == inputs.map(\.registrationId))
        #expect(zip(out, out.dropFirst()).allSatisfy { $0.device.id < $1.device.id }, "ids follow the request's order")
        #expect(try await reg.devices(DeviceFilter()) == out.map(\.device))
        #expect(out[5].device.name == "five" && out[6].device.name == nil && out[7].device.user == "u7" && out[8].device.user == nil)
        #expect(!out[9].device.active && out[9].device.inactiveReason == SQLiteRegistry.clientDeactivationReason)
        #expect(out[11].device.p256dh == Fixtures.p256dh && out[11].device.browser == "FIREFOX" && out[10].device.p256dh == nil)
        let bare = try await reg.register((0..<n).map { i in try fcm("bare-\(i)") }, updateOnDuplicate: false)
        var bareFilter = DeviceFilter()
        bareFilter.ids = bare.map(\.device.id)
        #expect(try await reg.devices(bareFilter) == bare.map(\.device))
        #expect(bare.allSatisfy { $0.device.user == nil && $0.device.name == nil && $0.device.active })
        let total = 2 * n

        // A token registered before, late in a large batch: refused without update, nothing written.
        var again = try (0..<n).map { i in try fcm("again-\(i)") }
        again[n - 20] = try fcm("big-3", user: "moved")
        let err = await expectError(.duplicateRegistration) { () async throws(CommandError) in
            _ = try await reg.register(again, updateOnDuplicate: false)
        }
        #expect(err?.message.contains("devices[\(n - 20)]") == true)
        #expect(try await reg.stats().total == total)
        // With update: that device is updated in place, the others created in order.
        let up = try await reg.register(again, updateOnDuplicate: true)
        #expect(up[n - 20].updated && !up[n - 20].created && up[n - 20].device.id == out[3].device.id && up[n - 20].device.user == "moved")
        let created = up.enumerated().filter { $0.offset != n - 20 }.map(\.element)
        #expect(created.allSatisfy { $0.created } && zip(created, created.dropFirst()).allSatisfy { $0.device.id < $1.device.id })
        #expect(try await reg.stats().total == total + n - 1)
        #expect(try await reg.device(.id(out[3].device.id)) == up[n - 20].device)

        // The same token twice in one large batch: refused at the second, nothing written.
        var twice = try (0..<n).map { i in try fcm("twice-\(i)") }
        twice[n - 1] = twice[n / 2]
        for update in [false, true] {
            let e = await expectError(.duplicateRegistration) { () async throws(CommandError) in
                _ = try await reg.register(twice, updateOnDuplicate: update)
            }
            #expect(e?.message.contains("devices[\(n - 1)]") == true && e?.message.contains("devices[\(n / 2)]") == true)
        }
        #expect(try await reg.stats().total == total + n - 1)

        // Two large batches at once sharing one new token (on PostgreSQL on two connections: one
        // waits for the other's commit, then finds the token taken): both succeed with update, the
        // token is created once and updated once.
        let shared = try fcm("shared-token")
        let batches = try (0..<2).map { k in
            var batch = try (0..<n).map { i in try fcm("race-\(k)-\(i)") }
            batch[n / 2] = shared
            return batch
        }
        let results = await withTaskGroup(of: [RegisterOutcome]?.self, returning: [[RegisterOutcome]].self) { g in
            for batch in batches {
                g.addTask { try? await reg.register(batch, updateOnDuplicate: true) }
            }
            var all: [[RegisterOutcome]] = []
            for await r in g { if let r { all.append(r) } }
            return all
        }
        #expect(results.count == 2)
        #expect(results.map { $0[n / 2].created }.sorted { !$0 && $1 } == [false, true])
        #expect(results.allSatisfy { $0.enumerated().allSatisfy { $0.offset == n / 2 || $0.element.created } })
        #expect(try await reg.stats().total == total + n - 1 + 2 * n - 1)
    }

    /// `groups` of id lists (what every send to `ids` counts first; batched on PostgreSQL): repeated,
    /// missing and inactive ids, with and without `active`, many calls at once.
    @Test(arguments: TestBackend.all) func groupsOfIdLists(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let registry = fixture.reg
        var inputs: [DeviceInput] = []
        for i in 0..<6 { inputs.append(try fcm("g\(i)", app: i < 4 ? "default" : "shop")) }
        inputs.append(try DeviceInput(platform: .apns, registrationId: apnsToken(7)))
        let ids = try await registry.register(inputs, updateOnDuplicate: false).map(\.device.id)
        _ = await registry.deactivate([.init(id: ids[1], reason: "x", at: 1)])
        func filter(_ list: [Int64], active: Bool?) -> DeviceFilter {
            var f = DeviceFilter()
            f.ids = list
            f.active = active
            return f
        }
        func key(_ gs: [DeviceGroup]) -> [String] { gs.map { "\($0.app)/\($0.platform.rawValue)/\($0.count)" }.sorted() }
        let cases: [(DeviceFilter, [String])] = [
            (filter([ids[0], ids[0], ids[1], ids[4], ids[6], 999_999], active: true), ["default/apns/1", "default/fcm/1", "shop/fcm/1"]),
            (filter([ids[0], ids[1], ids[1], ids[2]], active: nil), ["default/fcm/3"]),
            (filter([ids[1], ids[5]], active: false), ["default/fcm/1"]),
            (filter([], active: true), []),
            (filter([999_999], active: nil), []),
        ]
        for (f, want) in cases { #expect(key(try await registry.groups(f)) == want) }
        // Many at once (on PostgreSQL they share statements): each gets its own answer.
        let answers = await withTaskGroup(of: (Int, [String]?).self, returning: [Int: [String]?].self) { g in
            for i in 0..<60 {
                let (f, _) = cases[i % cases.count]
                g.addTask { (i, try? key(await registry.groups(f))) }
            }
            var out: [Int: [String]?] = [:]
            for await (i, a) in g { out[i] = a }
            return out
        }
        for i in 0..<60 { #expect(answers[i] == .some(cases[i % cases.count].1), "call \(i)") }
    }

    @Test(arguments: TestBackend.all) func groupsCountDevicesPerAppAndPlatform(_ backend: TestBackend) async throws {
        let fixture = try backend.open()
        defer { fixture.remove() }
        let registry = fixture.reg
        var inputs: [DeviceInput] = []
        for i in 0..<5 { inputs.append(try DeviceInput(parsing: ["platform": "fcm", "registration_id": .string("a\(i)"), "user": "u"])) }
        for i in 0..<2 {
            inputs.append(try DeviceInput(parsing: ["platform": "fcm", "registration_id": .string("b\(i)"), "app": "shop", "user": "u"]))
        }
        inputs.append(try DeviceInput(parsing: ["platform": "fcm", "registration_id": "c", "user": "v"]))
        _ = try await registry.register(inputs, updateOnDuplicate: false)
        var f = DeviceFilter()
        f.user = "u"
        f.limit = 1
        f.afterId = 3
        let groups = try await registry.groups(f).sorted { $0.app < $1.app }
        #expect(groups == [DeviceGroup(app: "default", platform: .fcm, count: 5), DeviceGroup(app: "shop", platform: .fcm, count: 2)])
        f.user = "nobody"
        #expect(try await registry.groups(f).isEmpty)
    }

}
