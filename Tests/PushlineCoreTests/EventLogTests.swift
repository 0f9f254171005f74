import Logging
import Testing

@testable import PushlineCore

/// The store part of the `events` feed: what `SQLiteRegistry` (SQLite) does as an `EventLog`.
@Suite struct EventLogTests {
    func registry(_ dir: TempDir) throws -> SQLiteRegistry { try SQLiteRegistry(path: dir.db) }

    func registerFCM(_ reg: SQLiteRegistry, _ n: Int) async throws -> [Int64] {
        let inputs = try (1...n).map { i throws(CommandError) in try fcm("tok-\(i)") }
        return try await reg.register(inputs, updateOnDuplicate: false).map(\.device.id)
    }

    @Test func deactivateWritesOneEventPerDeviceActuallyDeactivated() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let reg = try registry(dir)
        defer { reg.close() }
        let ids = try await registerFCM(reg, 4)
        let before = reg.eventSignal.generation
        // ids[2] twice and a missing id: one event for ids[2], none for the missing one.
        let done = await reg.deactivate([
            .init(id: ids[2], reason: "UNREGISTERED", at: 1_000), .init(id: ids[0], reason: "SENDER_ID_MISMATCH", at: 2_000),
            .init(id: ids[2], reason: "UNREGISTERED", at: 3_000), .init(id: 999, reason: "UNREGISTERED", at: 4_000),
        ])
        #expect(done == [ids[0], ids[2]])
        #expect(reg.eventSignal.generation != before, "a committed batch with events wakes readers")
        let evs = try await reg.events(after: 0, limit: 100)
        #expect(evs.map(\.type) == ["device_deactivated", "device_deactivated"])
        #expect(evs.map { $0.fields["device"]?.intValue } == [ids[2], ids[0]])  // list order
        #expect(evs[0].seq < evs[1].seq)
        #expect(evs[0].at == 1_000 && evs[1].at == 2_000)
        #expect(evs[1].fields["app"] == .string("default") && evs[1].fields["platform"] == .string("fcm"))
        #expect(evs[1].fields["registration_id"] == .string("tok-1") && evs[1].fields["reason"] == .string("SENDER_ID_MISMATCH"))
        // Already inactive: nothing new, and no wake-up.
        let g = reg.eventSignal.generation
        #expect(await reg.deactivate([.init(id: ids[0], reason: "UNREGISTERED", at: 5_000)]).isEmpty)
        #expect(try await reg.events(after: 0, limit: 100).count == 2)
        #expect(reg.eventSignal.generation == g)
        // A client's own deactivation writes none.
        _ = try await reg.update(.id(ids[1]), { var u = DeviceUpdate(); u.active = false; return u }())
        #expect(try await reg.events(after: 0, limit: 100).count == 2)
    }

    @Test func rolledBackEventsAreNeitherReadNorAnnounced() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let reg = try registry(dir)
        defer { reg.close() }
        let g = reg.eventSignal.generation
        await expectError(.invalidArgument) { () async throws(CommandError) in
            try await reg.run(write: true) { s in
                try s.appendEvents([PushEvent(.jobDone, at: 1, ["job": "j1"])])
                throw CommandError(.invalidArgument, "fails after appending")
            }
        }
        #expect(try await reg.events(after: 0, limit: 10).isEmpty)
        #expect(try await reg.latestEventSeq() == 0)
        #expect(reg.eventSignal.generation == g)
    }

    @Test func pagingLatestSeqAndPruning() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let reg = try registry(dir)
        defer { reg.close() }
        try await reg.run(write: true) { s in
            try s.appendEvents((1...5).map { i in PushEvent(.jobDone, at: Int64(i) * 1000, ["job": .string("j\(i)")]) })
        }
        let first = try await reg.events(after: 0, limit: 2)
        #expect(first.map { $0.fields["job"] } == ["j1", "j2"])
        let rest = try await reg.events(after: first[1].seq, limit: 10)
        #expect(rest.map { $0.fields["job"] } == ["j3", "j4", "j5"])
        let latest = try await reg.latestEventSeq()
        #expect(latest == rest[2].seq)
        // Events before 3.5 s go; the rest stay, in order.
        #expect(try await reg.pruneEvents(before: 3_500) == 3)
        #expect(try await reg.events(after: 0, limit: 10).map { $0.fields["job"] } == ["j4", "j5"])
        // Pruning everything keeps the high-water mark: a stored cursor stays valid, new seqs are higher.
        #expect(try await reg.pruneEvents(before: 10_000) == 2)
        #expect(try await reg.latestEventSeq() == latest)
        try await reg.run(write: true) { s in try s.appendEvents([PushEvent(.jobCanceled, at: 20_000, ["job": "j6"])]) }
        let after = try await reg.events(after: latest, limit: 10)
        #expect(after.count == 1 && after[0].seq > latest && after[0].type == "job_canceled")
    }

    @Test func pruningLargeBacklogInSlices() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let reg = try registry(dir)
        defer { reg.close() }
        let n = SQLiteRegistryStore.eventPruneSlice * 2 + 7
        try await reg.run(write: true) { s in
            try s.appendEvents((0..<n).map { i in PushEvent(.jobDone, at: Int64(i), [:]) })
        }
        #expect(try await reg.pruneEvents(before: Int64(n)) == n)
        #expect(try await reg.events(after: 0, limit: 10).isEmpty)
    }

    @Test func feedEventJSONPutsFixedMembersFirst() {
        let e = FeedEvent(seq: 7, type: "device_deactivated", at: 1_764_980_000_123, fields: ["device": 3, "at": "ignored", "reason": "x"])
        #expect(e.json.jsonString == #"{"seq":7,"type":"device_deactivated","at":"2025-12-06T00:13:20.123Z","device":3,"reason":"x"}"#)
    }

    @Test func signalWaitEndsOnNotifyCloseOrDeadline() async {
        let s = EventSignal()
        // Generation already moved: returns at once.
        let seen = s.generation
        s.notify()
        await s.wait(seen: seen, until: .now + .seconds(600))
        // Deadline.
        let t0 = ContinuousClock.now
        await s.wait(seen: s.generation, until: .now + .milliseconds(50))
        #expect(ContinuousClock.now - t0 >= .milliseconds(50))
        #expect(s.waiting == 0)
        // Notify from elsewhere wakes a waiter long before its deadline.
        let g = s.generation
        let t1 = ContinuousClock.now
        async let woke: Void = s.wait(seen: g, until: .now + .seconds(600))
        while s.waiting == 0 { try? await Task.sleep(for: .milliseconds(5)) }
        s.notify()
        await woke
        #expect(ContinuousClock.now - t1 < .seconds(300))
        // Close wakes waiters, and later waits return at once.
        async let closed: Void = s.wait(seen: s.generation, until: .now + .seconds(600))
        while s.waiting == 0 { try? await Task.sleep(for: .milliseconds(5)) }
        s.close()
        await closed
        await s.wait(seen: s.generation, until: .now + .seconds(600))
        #expect(s.isClosed && s.waiting == 0)
    }

    @Test func signalWaitEndsWhenItsTaskIsCanceled() async {
        let s = EventSignal()
        let t0 = ContinuousClock.now
        let waiter = Task { await s.wait(seen: s.generation, until: .now + .seconds(600)) }
        while s.waiting == 0 { try? await Task.sleep(for: .milliseconds(5)) }
        waiter.cancel()
        await waiter.value
        #expect(ContinuousClock.now - t0 < .seconds(300) && s.waiting == 0)
        // Canceled before it suspends: returns at once.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await s.wait(seen: s.generation, until: .now + .seconds(600))
        }
        await early.value
        #expect(ContinuousClock.now - t0 < .seconds(300) && s.waiting == 0)
    }

    @Test func eventsCommandArgumentsAndWaiting() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let reg = try registry(dir)
        defer { reg.close() }
        let d = Dispatcher(config: PushlineConfig(), registry: reg, providers: ProviderSet(), logger: Logger(label: "test.events"))
        let empty = try await d.handle(["cmd": "events"])
        #expect(empty["events"] == .array([]) && empty["next"] == .int(0))
        for bad: JSONObject in [["cmd": "events", "limit": 0], ["cmd": "events", "limit": 1001], ["cmd": "events", "wait_ms": 60_001],
                                ["cmd": "events", "after": -1], ["cmd": "events", "after": 1], ["cmd": "events", "nope": 1]] {
            await expectError(.invalidArgument) { () async throws(CommandError) in _ = try await d.handle(bad) }
        }
        let ids = try await registerFCM(reg, 1)
        // A waiting call returns the event committed while it waits.
        async let waited = d.handle(["cmd": "events", "wait_ms": 60_000])
        while reg.eventSignal.waiting == 0 { try await Task.sleep(for: .milliseconds(5)) }
        _ = await reg.deactivate([.init(id: ids[0], reason: "UNREGISTERED", at: nowMillis())])
        let r = try await waited
        guard case .array(let evs)? = r["events"], let e = evs.first?.objectValue else {
            Issue.record("no event: \(r)")
            return
        }
        #expect(e["device"] == .int(ids[0]) && r["next"] == e["seq"])
    }
}
