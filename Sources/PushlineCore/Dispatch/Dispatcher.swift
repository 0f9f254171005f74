import Logging
import Synchronization

/// Carries out every protocol command: parses arguments, talks to the registry,
/// fans notifications out to the providers and renders the per-device results.
///
/// ```swift
/// let d = Dispatcher(config: config, registry: registry, providers: providers, logger: log)
/// let result = try await d.handle(["cmd": "stats"])
/// ```
public final class Dispatcher: RequestHandler {
    public let config: PushlineConfig
    public let registry: any DeviceRegistry
    public let providers: ProviderSet
    let logger: Logger
    /// When the daemon started (monotonic ns); a reloaded dispatcher keeps the first one's.
    let startedAt: UInt64
    /// Notifications accepted and not yet answered, for `busy`.
    let pending = Atomic<Int>(0)
    let sentCount = Atomic<Int>(0)
    let failedCount = Atomic<Int>(0)
    /// Set by the daemon so `stats` can report open connections.
    public let connectionCount: @Sendable () -> Int
    /// The durable outbox for `"async": true` requests and `job`/`jobs`/`cancel`; nil: refused.
    public let outbox: OutboxContext?

    public init(config: PushlineConfig, registry: any DeviceRegistry, providers: ProviderSet, logger: Logger,
                connectionCount: @escaping @Sendable () -> Int = { 0 }, startedAt: UInt64 = monotonicNanos(),
                outbox: OutboxContext? = nil) {
        self.outbox = outbox
        self.startedAt = startedAt
        self.config = config
        self.registry = registry
        self.providers = providers
        self.logger = logger
        self.connectionCount = connectionCount
    }

    public func handle(_ request: JSONObject) async throws(CommandError) -> JSONObject {
        guard let cmdValue = request["cmd"] else { throw .invalid("cmd", "is required") }
        guard let cmd = cmdValue.stringValue else { throw .invalid("cmd", "expected a string, got \(cmdValue.typeName)") }
        var a = Arguments(request)
        try checkApps(cmd: cmd, request)
        switch cmd {
        case "ping":
            try a.finish()
            return ["version": .string(PushlineVersion.daemon), "protocol": .string(PushlineVersion.proto)]
        case "register": return try await register(&a)
        case "unregister": return try await unregister(&a)
        case "devices": return try await devices(&a)
        case "update": return try await update(&a)
        case "prune": return try await prune(&a)
        case "stats": return try await stats(&a)
        case "send" where a.has("async"), "bulk" where a.has("async"): return try await acceptAsync(&a, bulk: cmd == "bulk")
        case "topic" where a.has("async"): return try await acceptAsync(&a, bulk: false, topic: true)
        case "job": return try await jobCommand(&a)
        case "jobs": return try await jobsCommand(&a)
        case "cancel": return try await cancelCommand(&a)
        case "send": return try await withResultsMode(&a) { (a: inout Arguments) async throws(CommandError) in try await send(&a, bulk: false) }
        case "bulk": return try await withResultsMode(&a) { (a: inout Arguments) async throws(CommandError) in try await send(&a, bulk: true) }
        case "topic": return try await topic(&a)
        case "subscribe": return try await subscription(&a, subscribe: true)
        case "unsubscribe": return try await subscription(&a, subscribe: false)
        case "topics": return try await topics(&a)
        case "subscribers": return try await subscribers(&a)
        case "events": return try await events(&a)
        default:
            throw CommandError(.unknownCommand, "unknown command '\(cmd.count > 40 ? String(cmd.prefix(40)) + "..." : cmd)'")
        }
    }

    // MARK: registry commands

    func register(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        if a.has("devices") {
            guard let list = try a.list("devices") else { throw .invalid("devices", "is required") }
            try a.finish()
            guard !list.isEmpty else { throw .invalid("devices", "must not be empty") }
            var inputs: [DeviceInput] = []
            inputs.reserveCapacity(list.count)
            for (i, v) in list.enumerated() {
                guard let o = v.objectValue else { throw .invalid("devices[\(i)]", "expected a device object, got \(v.typeName)") }
                do throws(CommandError) {
                    inputs.append(try DeviceInput(parsing: o))
                } catch {
                    throw error.prefixed("devices[\(i)]")
                }
            }
            let out: [RegisterOutcome]
            do throws(CommandError) {
                out = try await registry.register(inputs, updateOnDuplicate: config.updateOnDuplicateRegId)
            } catch {
                throw Self.withDuplicateField(error, batch: true)
            }
            try checkApps(out.map(\.device))
            return [
                "created": .int(Int64(out.filter(\.created).count)),
                "updated": .int(Int64(out.filter(\.updated).count)),
                "devices": .array(out.map(\.device.json)),
            ]
        }
        var fields = a.object
        fields["cmd"] = nil
        let input = try DeviceInput(parsing: fields)
        let outs: [RegisterOutcome]
        do throws(CommandError) {
            outs = try await registry.register([input], updateOnDuplicate: config.updateOnDuplicateRegId)
        } catch {
            throw Self.withDuplicateField(error, batch: false)
        }
        guard let out = outs.first else { throw CommandError(.internalError, "register returned no device") }
        return ["created": .bool(out.created), "updated": .bool(out.updated), "device": out.device.json]
    }

    /// Names the field of a `duplicate_registration` (`registration_id`, or `devices[3].registration_id`).
    static func withDuplicateField(_ e: CommandError, batch: Bool) -> CommandError {
        guard e.code == .duplicateRegistration else { return e }
        var e = e
        let index = e.details["index"]?.intValue ?? 0
        e.details["field"] = .string(batch ? "devices[\(index)].registration_id" : "registration_id")
        if !batch {
            e.details["index"] = nil
            if e.message.hasPrefix("devices[0]: ") { e.message = String(e.message.dropFirst("devices[0]: ".count)) }
        }
        return e
    }

    /// Devices of apps the config does not name are accepted (an app's credentials may come later), but logged.
    func checkApps(_ devices: [Device]) throws(CommandError) {
        for d in devices where config.apps[d.app] == nil {
            logger.notice("device registered for an app the config does not name", metadata: ["app": "\(d.app)"])
            break
        }
    }

    func deviceKeys(_ a: inout Arguments, single: String) throws(CommandError) -> [DeviceKey] {
        let one = try a.int(single, range: 1...Int64.max)
        let ids = try a.idList("ids")
        let token = try a.string("registration_id")
        let tokens = try a.stringList("registration_ids")
        let given = [one != nil, ids != nil, token != nil, tokens != nil].filter { $0 }.count
        guard given == 1 else {
            throw .invalid(single, "give exactly one of '\(single)', 'ids', 'registration_id', 'registration_ids'")
        }
        if let one { return [.id(one)] }
        if let ids { return ids.map { .id($0) } }
        guard let platform = try a.platform("platform") else { throw .invalid("platform", "is required with registration_id(s)") }
        let app = try a.app() ?? "default"
        return (tokens ?? [token ?? ""]).map { .token(app: app, platform: platform, registrationId: $0) }
    }

    func unregister(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        let keys = try deviceKeys(&a, single: "device")
        try a.finish()
        let r = try await registry.unregister(keys)
        let missing: [JSONValue] = r.missing.map { i in
            switch keys[i] {
            case .id(let id): return .int(id)
            case .token(_, _, let t): return .string(t)
            }
        }
        return ["deleted": .int(Int64(r.deleted)), "not_found": .array(missing)]
    }

    func devices(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        var f = DeviceFilter()
        f.app = try a.app()
        f.platform = try a.platform("platform")
        f.user = try a.user("user")
        f.active = try a.bool("active")
        f.registrationId = try a.string("registration_id")
        f.ids = try a.idList("ids")
        f.afterId = try a.int("after", range: 0...Int64.max)
        let limit = Int(try a.int("limit", range: 1...1000) ?? 100)
        try a.finish()
        f.limit = limit + 1
        var list = try await registry.devices(f)
        var next: JSONValue = .null
        if list.count > limit {
            list.removeLast(list.count - limit)
            if let last = list.last { next = .int(last.id) }
        }
        return ["devices": .array(list.map(\.json)), "next": next]
    }

    func update(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        let key: DeviceKey
        var u = DeviceUpdate()
        var any = false
        if let id = try a.int("device", range: 1...Int64.max) {
            key = .id(id)
            // Named by id, `registration_id` is the new token (a rotated APNs/FCM token, a
            // renewed WNS channel, a new WebPush endpoint).
            if let token = try a.string("registration_id") {
                u.registrationId = token
                any = true
            }
        } else if let token = try a.string("registration_id") {
            guard let p = try a.platform("platform") else { throw .invalid("platform", "is required with registration_id") }
            key = .token(app: try a.app() ?? "default", platform: p, registrationId: token)
        } else {
            throw .invalid("device", "name the device with 'device' (its id) or 'registration_id' and 'platform'")
        }
        if let token = try a.string("new_registration_id") {
            if u.registrationId != nil { throw .invalid("new_registration_id", "give the new token once (registration_id with device, or new_registration_id)") }
            u.registrationId = token
            any = true
        }
        for field in ["p256dh", "auth"] {
            if let v = try a.string(field) {
                if field == "p256dh" { u.p256dh = v } else { u.auth = v }
                any = true
            }
        }
        for field in ["name", "user", "device_id"] where a.object[field] != nil {
            any = true
            let v: String?
            if a.object[field] == .null {
                _ = a.value(field)
                v = nil
            } else if field == "user" {
                v = try a.user(field)
            } else {
                v = try a.string(field)
            }
            switch field {
            case "name": u.name = .some(v)
            case "user": u.user = .some(v)
            default:
                if let v {
                    u.deviceId = .some(try DeviceInput.normalizeUUID(v))
                } else {
                    u.deviceId = .some(nil)
                }
            }
        }
        if let active = try a.bool("active") {
            any = true
            u.active = active
        }
        try a.finish()
        guard any else { throw .invalid("name", "nothing to update: give name, user, device_id, active, new_registration_id, p256dh or auth") }
        let before = u.registrationId == nil ? nil : try await registry.device(key)
        let d = try await registry.update(key, u)
        var out: JSONObject = ["device": d.json]
        if let before, before.registrationId != d.registrationId, d.platform == .fcm {
            out["resubscribed"] = try await resubscribe(d)
        }
        return out
    }

    /// After an FCM token changed: subscribes the new token at Google to every topic the
    /// registry records for the device (Google's subscriptions belong to the old token).
    /// Answers `[{"topic": t, "status": "subscribed" | "failed", "reason"?}]`.
    func resubscribe(_ d: Device) async throws(CommandError) -> JSONValue {
        let topics = (try await registry.topics(of: [d.id])[d.id] ?? []).sorted()
        guard !topics.isEmpty else { return .array([]) }
        guard let p = providers.provider(app: d.app, platform: .fcm) as? any TopicProvider else {
            return .array(topics.map { ["topic": .string($0), "status": "failed", "reason": "provider_not_configured"] })
        }
        var out: [JSONValue] = []
        for t in topics {
            guard let name = try? TopicName(parsing: t) else {
                out.append(["topic": .string(t), "status": "failed", "reason": "invalid topic name"])
                continue
            }
            let r = await p.subscribe([d], topic: name).first
            var o: JSONObject = ["topic": .string(t), "status": .string(r?.status == .sent ? "subscribed" : "failed")]
            if let r, r.status != .sent { o["reason"] = .string(r.reason ?? "unknown") }
            out.append(.object(o))
        }
        return .array(out)
    }

    func prune(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        var before: Int64?
        if let v = a.value("inactive_before") {
            guard let ms = parseTimestamp(v) else {
                throw .invalid("inactive_before", "expected Unix seconds or an ISO 8601 date such as 2026-11-01 or 2026-11-01T00:00:00Z")
            }
            before = ms
        }
        try a.finish()
        return ["deleted": .int(Int64(try await registry.prune(inactiveBefore: before)))]
    }

    func stats(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        try a.finish()
        let s = try await registry.stats()
        var byApp: [String: [Platform: (Int, Int)]] = [:]
        var active = 0
        for row in s.rows {
            var e = byApp[row.app, default: [:]][row.platform, default: (0, 0)]
            if row.active { e.0 += row.count; active += row.count } else { e.1 += row.count }
            byApp[row.app, default: [:]][row.platform] = e
        }
        var apps = JSONObject()
        for (app, plats) in byApp.sorted(by: { $0.key < $1.key }) {
            var po = JSONObject()
            for (p, c) in plats.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                po[p.rawValue] = ["active": .int(Int64(c.0)), "inactive": .int(Int64(c.1))]
            }
            apps[app] = .object(po)
        }
        let uptime = Double(monotonicNanos() - startedAt) / 1e9
        return [
            "devices": [
                "total": .int(Int64(s.total)), "active": .int(Int64(active)), "inactive": .int(Int64(s.total - active)),
                "by_app": .object(apps),
            ],
            "uptime_s": .double((uptime * 10).rounded() / 10),
            "connections": .int(Int64(connectionCount())),
            "pending": .int(Int64(pending.load(ordering: .relaxed))),
            "notifications": ["sent": .int(Int64(sentCount.load(ordering: .relaxed))), "failed": .int(Int64(failedCount.load(ordering: .relaxed)))],
        ]
    }
}
