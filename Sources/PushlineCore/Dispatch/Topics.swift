/// FCM topic commands: `topic`, `subscribe`, `unsubscribe`, `topics`, `subscribers`.
extension Dispatcher {
    /// FCM topic names: `[a-zA-Z0-9-_.~%]+`, with or without the `/topics/` prefix.
    static func topicName(_ raw: String, field: String) throws(CommandError) -> String {
        let name = raw.hasPrefix("/topics/") ? String(raw.dropFirst(8)) : raw
        let ok = !name.isEmpty && name.utf8.count <= 900 && name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == 0x2D || c == 0x5F || c == 0x2E || c == 0x7E || c == 0x25
        }
        guard ok else { throw .invalid(field, "an FCM topic name matches [a-zA-Z0-9-_.~%]+") }
        return name
    }

    func topicProvider(app: String) throws(CommandError) -> any TopicProvider {
        guard let p = providers.provider(app: app, platform: .fcm) else { throw Self.notConfigured(app: app, platform: .fcm) }
        guard let tp = p as? any TopicProvider else {
            throw CommandError(.providerNotConfigured, "the fcm provider of app '\(app)' cannot manage topics",
                               details: ["app": .string(app), "platform": "fcm"])
        }
        return tp
    }

    func topic(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        let app = try a.app() ?? "default"
        let topic = try a.string("topic").map { t throws(CommandError) in try Self.topicName(t, field: "topic") }
        let condition = try a.string("condition")
        guard (topic == nil) != (condition == nil) else { throw .invalid("topic", "give exactly one of topic, condition") }
        if let condition, condition.isEmpty || condition.utf8.count > 1000 {
            throw .invalid("condition", "must be 1 to 1000 bytes")
        }
        if let condition { try FCMTopicName.checkCondition(condition) }
        var fields = JSONObject()
        for k in a.unread {
            guard Notification.allKeys.contains(k), k != "topic" else { throw .invalid(k, "unknown argument '\(k)'") }
            if let v = a.value(k) { fields[k] = v }
        }
        let n = try Notification(parsing: fields)
        let p = try topicProvider(app: app)
        try p.validate(n)
        try reserve(1)
        defer { pending.subtract(1, ordering: .relaxed) }
        let r = await p.sendToTopic(n, topic: topic, condition: condition)
        let renderer = await applyDeactivations([r], devices: [], app: app)
        if r.status == .sent { sentCount.add(1, ordering: .relaxed) } else { failedCount.add(1, ordering: .relaxed) }
        return [
            "sent": .int(r.status == .sent ? 1 : 0), "failed": .int(r.status == .sent ? 0 : 1),
            "results": [.object(renderer.json(r))],
        ]
    }

    func subscription(_ a: inout Arguments, subscribe: Bool) async throws(CommandError) -> JSONObject {
        guard let raw = try a.string("topic") else { throw .invalid("topic", "is required") }
        let topic = try Self.topicName(raw, field: "topic")
        let target = try Target.parse(&a)
        try a.finish()
        var appName = "default"
        switch target {
        case .tokens(let app, _, _): appName = app
        case .users(_, let app, _): appName = app ?? "default"
        case .filter(let app, _, _): appName = app ?? "default"
        case .ids: break
        }
        let resolved = try await resolve(target)
        var results: [DeliveryResult] = resolved.rejected
        var byApp: [String: [Device]] = [:]
        for d in resolved.devices {
            if d.platform == .fcm { byApp[d.app, default: []].append(d) } else {
                results.append(.failed(d, reason: "not an FCM device: topics are an FCM feature"))
            }
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
        let resolved = try await resolve(target, includeInactive: true)
        let ids = resolved.devices.map(\.id)
        let map = try await registry.topics(of: ids)
        return ["devices": .array(ids.map { id in ["id": .int(id), "topics": .array((map[id] ?? []).sorted().map { .string($0) })] })]
    }

    func subscribers(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        guard let raw = try a.string("topic") else { throw .invalid("topic", "is required") }
        let topic = try Self.topicName(raw, field: "topic")
        let app = try a.app() ?? "default"
        try a.finish()
        let list = try await registry.subscribers(of: topic).filter { $0.app == app }
        return ["devices": .array(list.map(\.json))]
    }
}
