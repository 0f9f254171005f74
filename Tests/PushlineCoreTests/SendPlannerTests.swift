// The send planner (issue 12 "Sending"): every command that sends, synchronous or async, is
// planned and checked by `Dispatcher.plan`, so each refuses the same request the same way,
// before anything is sent or queued. On both registry backends, with in-memory providers.
import Logging
import Synchronization
import Testing

@testable import PushlineCore

/// An in-memory provider that counts what it is asked to send and refuses (as a payload over
/// the limit) a notification whose `message` is "too big".
final class CheckingProvider: PushProvider {
    let platform: Platform
    let sent = Mutex<[String]>([])
    init(_ platform: Platform) { self.platform = platform }

    func validate(_ notification: PushlineCore.PushNotification) throws(CommandError) {
        if notification.fields["message"] == "too big" {
            throw CommandError(.payloadTooLarge, "payload over the test limit", details: ["size": 9999, "limit": 10])
        }
    }

    func send(_ notification: PushlineCore.PushNotification, to devices: [Device]) async -> [DeliveryResult] {
        sent.withLock { $0 += devices.map(\.registrationId) }
        return devices.map { .sent($0) }
    }
}

@Suite struct SendPlannerTests {
    /// A dispatcher with an outbox: app `default` has APNs (a `CheckingProvider`) and no FCM;
    /// APNs devices of user "a" (subscribed to topic "news"), FCM devices of user "f".
    struct Env {
        let backend: TestRegistry
        let apns = CheckingProvider(.apns)
        let dispatcher: Dispatcher
        let outbox: any Outbox
        var apnsIds: [Int64] = []
        var fcmIds: [Int64] = []

        init(_ b: TestBackend) async throws {
            backend = try b.open()
            if let pg = backend.reg as? PostgresRegistry {
                outbox = PostgresOutbox(registry: pg, instance: "test")
            } else if let sq = backend.reg as? SQLiteRegistry {
                outbox = SQLiteOutbox(registry: sq)
            } else {
                throw TestSetupError("unknown registry")
            }
            dispatcher = Dispatcher(
                config: PushlineConfig(), registry: backend.reg,
                providers: ProviderSet([ProviderSet.Key(app: "default", platform: .apns): apns]),
                logger: Logger(label: "test.planner"), outbox: OutboxContext(store: outbox))
            let inputs = try (1...3).map { i throws(CommandError) in
                try DeviceInput(parsing: ["platform": "apns", "registration_id": .string(apnsToken(i)), "user": "a"])
            } + (1...2).map { i throws(CommandError) in
                try DeviceInput(parsing: ["platform": "fcm", "registration_id": .string("fcm-token-\(i)"), "user": "f"])
            }
            let devices = try await backend.reg.register(inputs, updateOnDuplicate: false).map(\.device)
            apnsIds = devices.filter { $0.platform == .apns }.map(\.id)
            fcmIds = devices.filter { $0.platform == .fcm }.map(\.id)
            try await backend.reg.subscribe(apnsIds, topic: try TopicName(parsing: "news", field: "topic"))
        }

        func call(_ o: JSONObject) async throws(CommandError) -> JSONObject { try await dispatcher.handle(o) }

        /// `o` sent synchronously and with `"async": true`: both must be refused with `code`.
        func refused(_ o: JSONObject, _ code: CommandError.Code) async -> [CommandError?] {
            var out: [CommandError?] = []
            for async in [false, true] {
                var r = o
                if async { r["async"] = true }
                out.append(await expectError(code) { () async throws(CommandError) in _ = try await call(r) })
            }
            return out
        }

        /// Whether no provider was asked to send and no job was queued.
        func nothingSentOrQueued() async throws -> Bool {
            let queued = try await jobs()
            return apns.sent.withLock { $0 }.isEmpty && queued == 0
        }

        /// Jobs the outbox holds.
        func jobs() async throws -> Int { try await outbox.jobs(state: nil, app: nil, after: nil, limit: 100).count }

        func close() { backend.remove() }
    }

    static func ints(_ ids: [Int64]) -> JSONValue { .array(ids.map { .int($0) }) }

    /// Every form of a sending request for `message` (the target's keys and the notification),
    /// synchronous and async: send, bulk (plain and with `messages`).
    static func everyCommand(_ message: JSONObject) -> [JSONObject] {
        var out: [JSONObject] = []
        for async in [false, true] {
            for cmd in ["send", "bulk"] {
                var o = message
                o["cmd"] = .string(cmd)
                if async { o["async"] = true }
                out.append(o)
            }
            var b: JSONObject = ["cmd": "bulk", "messages": .array([.object(message)])]
            if async { b["async"] = true }
            out.append(b)
        }
        return out
    }

    @Test("an unconfigured (app, platform) is refused identically by every sending command, before anything happens",
          arguments: TestBackend.all)
    func unconfiguredIsRefusedEverywhere(_ b: TestBackend) async throws {
        let env = try await Env(b)
        defer { env.close() }
        let targets: [JSONObject] = [
            ["ids": Self.ints(env.fcmIds)],
            ["users": ["f"]],
            ["filter": ["platform": "fcm"]],
            ["registration_ids": ["fcm-token-1"], "platform": "fcm"],
            // Not registered: still names an unconfigured pair (1.2's one rule; a synchronous
            // send to a list of at most 5,000 tokens used to answer `ok` with every entry failed).
            ["registration_ids": ["fcm-nobody"], "platform": "fcm"],
        ]
        for t in targets {
            var m = t
            m["message"] = "hi"
            for request in Self.everyCommand(m) {
                let e = await expectError(.providerNotConfigured) { () async throws(CommandError) in _ = try await env.call(request) }
                #expect(e?.details["app"] == "default" && e?.details["platform"] == "fcm", "\(request)")
                #expect(e?.details["message_index"] == nil, "\(request)")
            }
        }
        // A bulk whose second message names the unconfigured pair (none of its entries is
        // registered) and whose first reaches no device: refused as a whole, sync and async
        // (the synchronous bulk used to check only the first message's named pair).
        let bulk: JSONObject = ["cmd": "bulk", "messages": .array([
            .object(["ids": [999_999], "message": "hi"]), .object(["registration_ids": ["fcm-nobody"], "platform": "fcm", "message": "hi"]),
        ])]
        for e in await env.refused(bulk, .providerNotConfigured) {
            #expect(e?.details["platform"] == "fcm" && e?.details["message_index"] == nil)
        }
        // A topic no configured provider reaches: no FCM, no APNs subscriber of "sports".
        for e in await env.refused(["cmd": "topic", "topic": "sports", "message": "hi"], .providerNotConfigured) {
            #expect(e?.details["platform"] == "fcm")
        }
        #expect(try await env.nothingSentOrQueued())
    }

    @Test("a notification a configured provider refuses is refused by every sending command, naming the platform and the message",
          arguments: TestBackend.all)
    func refusedNotificationIsRefusedEverywhere(_ b: TestBackend) async throws {
        let env = try await Env(b)
        defer { env.close() }
        let targets: [JSONObject] = [
            ["ids": Self.ints(env.apnsIds)],
            ["users": ["a", "f"]],
            ["filter": ["user": "a"]],
            ["registration_ids": .array([.string(apnsToken(1))]), "platform": "apns"],
        ]
        for t in targets {
            var m = t
            m["message"] = "too big"
            for request in Self.everyCommand(m) {
                let e = await expectError(.payloadTooLarge) { () async throws(CommandError) in _ = try await env.call(request) }
                #expect(e?.details["platform"] == "apns", "\(request)")
            }
            // In a bulk with messages, the refused message is named: here the second.
            var ok = t
            ok["message"] = "fine"
            for e in await env.refused(["cmd": "bulk", "messages": .array([.object(ok), .object(m)])], .payloadTooLarge) {
                #expect(e?.details["message"] == 1 && e?.details["message_index"] == 1 && e?.details["platform"] == "apns", "\(t)")
            }
        }
        for e in await env.refused(["cmd": "topic", "topic": "news", "message": "too big"], .payloadTooLarge) {
            #expect(e?.details["platform"] == "apns")
        }
        #expect(try await env.nothingSentOrQueued())
    }

    @Test("an unconfigured pair beside a configured one: accepted by every command; its devices fail one by one",
          arguments: TestBackend.all)
    func unconfiguredBesideConfiguredIsSentOrQueued(_ b: TestBackend) async throws {
        let env = try await Env(b)
        defer { env.close() }
        // A bulk whose second message reaches only FCM: the command as a whole reaches APNs.
        let messages: JSONValue = .array([
            .object(["users": ["a"], "message": "one"]), .object(["ids": Self.ints(env.fcmIds), "message": "two"]),
        ])
        let r = try await env.call(["cmd": "bulk", "messages": messages])
        #expect(r["sent"] == .int(3) && r["failed"] == .int(2))
        guard case .raw(let segments) = r["results"] else { Issue.record("results not rendered as segments"); return }
        let results = try JSONValue.parse(segments.flatMap { $0 }).arrayValue ?? []
        let failed = results.filter { $0["status"] == "failed" }
        #expect(failed.map { $0["reason"] } == ["provider_not_configured", "provider_not_configured"])
        #expect(failed.map { $0["message_index"] } == [1, 1])
        let queued = try await env.call(["cmd": "bulk", "messages": messages, "async": true])
        #expect(queued["job"]?["id"]?.stringValue != nil)
        #expect(try await env.jobs() == 1)
    }

    @Test("the plan: groups, estimate and resolution of each kind of request", arguments: TestBackend.all)
    func planShapes(_ b: TestBackend) async throws {
        let env = try await Env(b)
        defer { env.close() }
        let d = env.dispatcher
        // A synchronous send of a short list is resolved whole by the planner; its groups are
        // the devices found (the unknown id is a rejected entry, not a device).
        var a = Arguments(["cmd": "send", "ids": Self.ints(env.apnsIds + env.fcmIds + [999_999]), "message": "hi"])
        _ = try a.string("cmd")
        var p = try await d.plan(&a, .send, sync: true)
        #expect(p.resolved?.first?.devices.count == 5 && p.resolved?.first?.rejected.count == 1)
        #expect(p.groups == [[DeviceGroup(app: "default", platform: .apns, count: 3), DeviceGroup(app: "default", platform: .fcm, count: 2)]])
        #expect(p.estimate == 5 && !p.indexed)
        // Async: not resolved; the registry's groups, and every entry of the list counted.
        a = Arguments(["cmd": "send", "ids": Self.ints(env.apnsIds + [999_999]), "message": "hi"])
        _ = try a.string("cmd")
        p = try await d.plan(&a, .send, sync: false)
        #expect(p.resolved == nil && p.estimate == 4 && p.app(0) == "default")
        #expect(p.groups == [[DeviceGroup(app: "default", platform: .apns, count: 3)]])
        // Users are streamed even when synchronous: groups from the registry.
        a = Arguments(["cmd": "send", "users": ["a", "f"], "message": "hi"])
        _ = try a.string("cmd")
        p = try await d.plan(&a, .send, sync: true)
        #expect(p.resolved == nil && p.estimate == 5 && p.groups[0].map(\.platform) == [.apns, .fcm])
        // A topic: the subscribers' groups (no FCM provider, so no topic message).
        a = Arguments(["cmd": "topic", "topic": "news", "message": "hi"])
        _ = try a.string("cmd")
        p = try await d.plan(&a, .topic, sync: true)
        #expect(p.messages.first?.topic?.app == "default" && p.estimate == 3)
        #expect(p.groups == [[DeviceGroup(app: "default", platform: .apns, count: 3)]])
        // A bulk with messages is indexed; its sources are the messages as given.
        let list: [JSONValue] = [.object(["users": ["a"], "message": "x"]), .object(["users": ["a"], "message": "y"])]
        a = Arguments(["cmd": "bulk", "messages": .array(list)])
        _ = try a.string("cmd")
        p = try await d.plan(&a, .bulk, sync: false)
        #expect(p.indexed && p.sources.map { JSONValue.object($0) } == list && p.estimate == 6)
    }

    @Test("outbox deliveries: APNs sends each with its own stable apns-id, in a batch and alone; a client's apns_id wins; no number, no id")
    func outboxApnsIds() async throws {
        let client = InMemoryHTTPClient(apnsAnswers())
        let h = try DispatchHarness(client: client)
        defer { h.close() }
        let apns = try #require(h.dispatcher.providers.provider(app: "default", platform: .apns))
        let job = "0123456789abcdef0123456789abcdef"
        func token(_ k: Int) -> String {
            let hex = String(k, radix: 16)
            return String(repeating: "0", count: 64 - hex.count) + hex
        }
        // A batch of 1000 (the bulk path), each device with its delivery number but the last.
        var devices = (0..<1000).map { k in
            var d = Device(id: Int64(k + 1), platform: .apns, app: "default", registrationId: token(k))
            d.outboxDelivery = Int64(k * 3)
            return d
        }
        devices[999].outboxDelivery = nil
        var n = try PushlineCore.PushNotification(parsing: ["message": "hi"])
        n.outboxJob = job
        let results = await apns.send(n, to: devices)
        #expect(results.count == 1000 && results.allSatisfy { $0.status == .sent })
        var idOf: [String: [String]] = [:]
        for r in client.requests {
            let t = String(r.url.split(separator: "/").last ?? "")
            idOf[t, default: []].append(contentsOf: r.headers.filter { $0.0 == "apns-id" }.map(\.1))
            #expect(r.uniqueLeadingHeaders == (r.header("apns-id") == nil ? 0 : 1))
        }
        #expect(idOf[token(7)] == ["01234567-89ab-cdef-0123-000000000015"])
        #expect(idOf[token(998)] == [APNsProvider.outboxApnsId(job: job, n: 998 * 3)])
        #expect(Set(idOf.values.compactMap(\.first)).count == 999)
        #expect(idOf[token(999)] == [])
        // Alone (one device: its own request path), the same delivery gets the same id again.
        let before = client.requests.count
        _ = await apns.send(n, to: [devices[7]])
        #expect(client.requests[before...].map { $0.header("apns-id") } == ["01234567-89ab-cdef-0123-000000000015"])
        // A client's own apns_id wins, once, for every device.
        var own = try PushlineCore.PushNotification(parsing: ["message": "hi", "apns_id": "11111111-2222-3333-4444-555555555555"])
        own.outboxJob = job
        let mark = client.requests.count
        _ = await apns.send(own, to: Array(devices[0..<3]))
        #expect(client.requests[mark...].map { $0.headers.filter { $0.0 == "apns-id" }.map(\.1) }
            == Array(repeating: ["11111111-2222-3333-4444-555555555555"], count: 3))
        // Not an outbox delivery (no job): no apns-id of ours.
        let plain = client.requests.count
        _ = await apns.send(try PushlineCore.PushNotification(parsing: ["message": "hi"]), to: Array(devices[0..<2]))
        #expect(client.requests[plain...].allSatisfy { $0.header("apns-id") == nil })
    }
}
