/// FCM topic commands: `topic`, `subscribe`, `unsubscribe`, `topics`, `subscribers`.
extension Dispatcher {
    func topicProvider(app: String) throws(CommandError) -> any TopicProvider {
        guard let p = providers.provider(app: app, platform: .fcm) else { throw Self.notConfigured(app: app, platform: .fcm) }
        guard let tp = p as? any TopicProvider else {
            throw CommandError(.providerNotConfigured, "the fcm provider of app '\(app)' cannot manage topics",
                               details: ["app": .string(app), "platform": "fcm"])
        }
        return tp
    }

    /// A `topic` request's parts: where it goes and what.
    struct TopicRequest {
        var app: String
        var topic: TopicName?
        var condition: String?
        var notification: PushNotification
        /// The registry's APNs/WebPush/WNS subscribers of the topic or condition.
        var subscribers: DeviceFilter
    }

    /// Parses a `topic` request (every argument left unread must be a notification field); also
    /// used by the outbox worker on a stored async `topic` message.
    func parseTopic(_ a: inout Arguments) throws(CommandError) -> TopicRequest {
        let app = try a.app() ?? "default"
        let topic = try a.string("topic").map { t throws(CommandError) in try TopicName(parsing: t, field: "topic") }
        let condition = try a.string("condition")
        guard (topic == nil) != (condition == nil) else { throw .invalid("topic", "give exactly one of topic, condition") }
        if let condition, condition.isEmpty || condition.utf8.count > 1000 {
            throw .invalid("condition", "must be 1 to 1000 bytes")
        }
        if let condition { try FCMTopicName.checkCondition(condition) }
        var fields = JSONObject()
        for k in a.unread {
            guard PushNotification.allKeys.contains(k), k != "topic" else { throw .invalid(k, "unknown argument '\(k)'") }
            if let v = a.value(k) { fields[k] = v }
        }
        let n = try PushNotification(parsing: fields)
        // APNs, WebPush and WNS subscribers recorded in the registry get the notification by
        // fan-out through the send pipeline (1.1); FCM devices through Google's topic API.
        var f = DeviceFilter()
        f.app = app
        f.active = true
        f.notPlatform = .fcm
        f.topics = try condition.map { c throws(CommandError) in try TopicCondition.parse(c) } ?? topic.map { .topic($0.name) }
        return TopicRequest(app: app, topic: topic, condition: condition, notification: n, subscribers: f)
    }

    func topic(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        let plan = try await plan(&a, .topic, sync: true)
        guard let t = plan.messages[0].topic else { throw CommandError(.internalError, "topic: no topic in the plan") }
        let (app, n) = (t.app, t.notification)
        try reserve(plan.estimate)
        defer { pending.subtract(plan.estimate, ordering: .relaxed) }
        var fcmResult: JSONObject?
        if providers.provider(app: app, platform: .fcm) != nil {
            let fcm = try topicProvider(app: app)
            let r = await fcm.sendToTopic(n, topic: t.topic, condition: t.condition)
            let renderer = await applyDeactivations([r], devices: [], app: app)
            if r.status == .sent { sentCount.add(1, ordering: .relaxed) } else { failedCount.add(1, ordering: .relaxed) }
            fcmResult = renderer.json(r)
        }
        // The subscribers get it by fan-out when one of their (app, platform) pairs is configured.
        let subscribers = plan.groups[0].filter { g in g.platform != .fcm && providers.provider(app: g.app, platform: g.platform) != nil }
        guard !subscribers.isEmpty else {
            let ok = fcmResult?["status"] == .string("sent")
            return ["sent": .int(ok ? 1 : 0), "failed": .int(ok ? 0 : 1), "results": .array(fcmResult.map { [.object($0)] } ?? [])]
        }
        var out = try await fanOut(n, filter: t.subscribers)
        guard let first = fcmResult else { return out }
        // The FCM topic's result goes first in the results array.
        let ok = first["status"] == .string("sent")
        out["sent"] = .int((out["sent"]?.intValue ?? 0) + (ok ? 1 : 0))
        out["failed"] = .int((out["failed"]?.intValue ?? 0) + (ok ? 0 : 1))
        var head: [UInt8] = [UInt8(ascii: "[")]
        JSONValue.object(first).write(to: &head)
        if case .raw(var segments)? = out["results"], var lead = segments.first {
            if lead == Array("[]".utf8) {
                segments = [head + [UInt8(ascii: "]")]]
            } else {
                lead[0] = UInt8(ascii: ",")
                segments[0] = lead
                segments.insert(head, at: 0)
            }
            out["results"] = .raw(segments)
        }
        return out
    }

    /// Sends to every device of a registry filter, read page by page (by id) through the send
    /// pipeline: memory stays bounded by two chunks whatever the number of subscribers. The
    /// caller planned and reserved the send.
    func fanOut(_ n: PushNotification, filter f: DeviceFilter) async throws(CommandError) -> JSONObject {
        var after: Int64 = 0
        var done = false
        return try await runPipeline(messages: 1, started: monotonicNanos(), bulk: false) { () async throws(CommandError) -> Chunk? in
            guard !done else { return nil }
            var page = f
            page.afterId = after
            page.limit = Self.chunkSize
            let devices = try await self.registry.devices(page)
            guard let last = devices.last else { return nil }
            after = last.id
            done = devices.count < Self.chunkSize
            return Chunk(resolved: Resolved(devices: devices), notification: n, message: nil)
        }
    }

    func subscription(_ a: inout Arguments, subscribe: Bool) async throws(CommandError) -> JSONObject {
        guard let raw = try a.string("topic") else { throw .invalid("topic", "is required") }
        let topic = try TopicName(parsing: raw, field: "topic")
        let target = try Target.parse(&a)
        try a.finish()
        var appName = "default"
        switch target {
        case .tokens(let app, _, _): appName = app
        case .users(_, let app, _): appName = app ?? "default"
        case .filter(let app, _, _): appName = app ?? "default"
        case .ids: break
        case .raw: throw .invalid("tokens", "only send and bulk take tokens: subscriptions are recorded in the registry")
        }
        let resolved = try await resolve(target)
        var results: [DeliveryResult] = resolved.rejected
        var byApp: [String: [Device]] = [:]
        var recorded: [Device] = []
        for d in resolved.devices {
            // FCM devices are (un)subscribed at Google too; the others only in the registry (1.1),
            // where `topic` finds them for its fan-out.
            if d.platform == .fcm { byApp[d.app, default: []].append(d) } else { recorded.append(d) }
        }
        if !recorded.isEmpty {
            let ids = recorded.map(\.id)
            if subscribe { try await registry.subscribe(ids, topic: topic) } else { try await registry.unsubscribe(ids, topic: topic) }
            results.append(contentsOf: recorded.map { .sent($0) })
        }
        if byApp.isEmpty && results.isEmpty { _ = try topicProvider(app: appName) }
        // Every app's devices go to Google at once (one app's batches waiting on a distant
        // server do not hold the next app's back); the registry records them in app order.
        let apps = byApp.sorted(by: { $0.key < $1.key })
        var answers = [[DeliveryResult]](repeating: [], count: apps.count)
        await withTaskGroup(of: (Int, [DeliveryResult]).self) { group in
            for (k, (app, devices)) in apps.enumerated() {
                guard let p = providers.provider(app: app, platform: .fcm) as? any TopicProvider else {
                    answers[k] = devices.map { .failed($0, reason: "provider_not_configured") }
                    continue
                }
                group.addTask { (k, subscribe ? await p.subscribe(devices, topic: topic) : await p.unsubscribe(devices, topic: topic)) }
            }
            for await (k, r) in group { answers[k] = r }
        }
        for r in answers {
            let ok = r.compactMap { $0.status == .sent ? $0.deviceId : nil }
            if !ok.isEmpty {
                if subscribe { try await registry.subscribe(ok, topic: topic) } else { try await registry.unsubscribe(ok, topic: topic) }
            }
            results.append(contentsOf: r)
        }
        let renderer = await applyDeactivations(results, devices: resolved.devices)
        let okWord = subscribe ? "subscribed" : "unsubscribed"
        var succeeded = 0
        let out: [JSONValue] = results.map { r in
            var o = renderer.json(r)
            if r.status == .sent {
                succeeded += 1
                o["status"] = .string(okWord)
            }
            return .object(o)
        }
        return ["succeeded": .int(Int64(succeeded)), "failed": .int(Int64(out.count - succeeded)), "results": .array(out)]
    }

    func topics(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        let target = try Target.parse(&a)
        try a.finish()
        if case .raw = target { throw .invalid("tokens", "only send and bulk take tokens: topics are recorded in the registry") }
        let resolved = try await resolve(target, includeInactive: true)
        let ids = resolved.devices.map(\.id)
        let map = try await registry.topics(of: ids)
        return ["devices": .array(ids.map { id in ["id": .int(id), "topics": .array((map[id] ?? []).sorted().map { .string($0) })] })]
    }

    func subscribers(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        guard let raw = try a.string("topic") else { throw .invalid("topic", "is required") }
        let topic = try TopicName(parsing: raw, field: "topic")
        let app = try a.app() ?? "default"
        try a.finish()
        let list = try await registry.subscribers(of: topic, app: app)
        return ["devices": .array(list.map(\.json))]
    }
}
