import Logging

/// A target of `send`/`bulk`/`subscribe`/`topics` (protocol.md section 4).
enum Target: Sendable {
    case ids([Int64])
    case tokens(app: String, platform: Platform, [String])
    case users([String], app: String?, platform: Platform?)
    case filter(app: String?, platform: Platform?, user: String?)
    /// Tokens the app keeps itself (`tokens`): devices with negative ids, never in the registry.
    case raw(app: String, platform: Platform, [Device])

    static let keys: Set<String> = ["ids", "registration_ids", "platform", "app", "users", "filter", "tokens"]

    /// Reads exactly one target from the arguments.
    static func parse(_ a: inout Arguments) throws(CommandError) -> Target {
        let present = ["ids", "registration_ids", "users", "filter", "tokens"].filter { a.has($0) }
        guard present.count == 1 else {
            throw .invalid(
                present.first ?? "ids",
                present.isEmpty
                    ? "a target is required: one of ids, registration_ids, users, filter, tokens"
                    : "give exactly one target, got \(present.joined(separator: ", "))")
        }
        switch present[0] {
        case "ids":
            guard let ids = try a.idList("ids") else { throw .invalid("ids", "is required") }
            if a.has("app") { throw .invalid(a.path("app"), "does not go with ids: a registry id names one device of one app") }
            if a.has("platform") { throw .invalid("platform", "only goes with registration_ids, users or filter") }
            return .ids(ids)
        case "registration_ids":
            guard let tokens = try a.stringList("registration_ids") else { throw .invalid("registration_ids", "is required") }
            guard let p = try a.platform("platform") else { throw .invalid("platform", "is required with registration_ids") }
            return .tokens(app: try a.app() ?? "default", platform: p, tokens)
        case "tokens":
            return try parseRaw(&a)
        case "users":
            guard let users = try a.userList("users") else { throw .invalid("users", "is required") }
            return .users(users, app: try a.app(), platform: try a.platform("platform"))
        default:
            guard let v = a.value("filter") else { throw .invalid("filter", "is required") }
            var f = Arguments(v.objectValue ?? JSONObject(), prefix: "filter")
            guard v.objectValue != nil else { throw .invalid("filter", "expected an object, got \(v.typeName)") }
            let app = try f.app()
            let platform = try f.platform("platform")
            let user = try f.user("user")
            let all = try f.bool("all")
            try f.finish()
            if let all {
                guard all else { throw .invalid("filter.all", "only true is allowed (a broadcast to every active device)") }
                if app != nil || platform != nil || user != nil {
                    throw .invalid("filter.all", "goes alone: drop it to narrow by app, platform or user")
                }
            } else if app == nil && platform == nil && user == nil {
                throw .invalid("filter", "give at least one of app, platform, user (or \"all\": true to send to every active device)")
            }
            if a.has("app") || a.has("platform") { throw .invalid("filter", "put app and platform inside filter") }
            return .filter(app: app, platform: platform, user: user)
        }
    }
}

/// A target resolved against the registry: devices to send to, and entries that fail at once.
struct Resolved: Sendable {
    var devices: [Device] = []
    /// Results for targets that are unknown or inactive, reported rather than skipped.
    var rejected: [DeliveryResult] = []
}

extension Dispatcher {
    func resolve(_ t: Target, includeInactive: Bool = false) async throws(CommandError) -> Resolved {
        var r = Resolved()
        switch t {
        case .ids(let ids):
            var f = DeviceFilter()
            f.ids = ids
            let found = try await registry.devices(f)
            var byId: [Int64: Device] = [:]
            for d in found { byId[d.id] = d }
            for id in ids {
                guard let d = byId[id] else {
                    r.rejected.append(DeliveryResult(deviceId: id, platform: .apns, registrationId: "", status: .failed, reason: "not_registered"))
                    continue
                }
                if d.active || includeInactive { r.devices.append(d) } else { r.rejected.append(.failed(d, reason: "inactive")) }
            }
        case .tokens(let app, let platform, let tokens):
            let found = try await registry.resolveTokens(app: app, platform: platform, tokens)
            for (i, d) in found.enumerated() {
                guard let d else {
                    r.rejected.append(DeliveryResult(deviceId: nil, platform: platform, registrationId: tokens[i], status: .failed, reason: "not_registered"))
                    continue
                }
                if d.active || includeInactive { r.devices.append(d) } else { r.rejected.append(.failed(d, reason: "inactive")) }
            }
        case .users(let users, let app, let platform):
            var f = DeviceFilter()
            f.users = users
            f.app = app
            f.platform = platform
            if !includeInactive { f.active = true }
            r.devices = try await registry.devices(f)
        case .filter(let app, let platform, let user):
            var f = DeviceFilter()
            f.app = app
            f.platform = platform
            f.user = user
            if !includeInactive { f.active = true }
            r.devices = try await registry.devices(f)
        case .raw(_, _, let devices):
            r.devices = devices
        }
        return r
    }

    /// One message of a send: a target and its notification.
    struct Job {
        var target: Target
        var notification: Notification
    }

    static let sendOnlyKeys: Set<String> = ["cmd", "messages"]

    func parseJob(_ a: inout Arguments) throws(CommandError) -> Job {
        let target = try Target.parse(&a)
        var fields = JSONObject()
        for k in a.unread {
            guard Notification.allKeys.contains(k) else { throw .invalid(a.path(k), "unknown argument '\(k)'") }
            if let v = a.value(k) { fields[k] = v }
        }
        do throws(CommandError) {
            return Job(target: target, notification: try Notification(parsing: fields))
        } catch {
            throw a.root.isEmpty ? error : error.prefixed(a.root)
        }
    }

    func send(_ a: inout Arguments, bulk: Bool) async throws(CommandError) -> JSONObject {
        let started = monotonicNanos()
        var jobs: [Job] = []
        var indexed = false
        if bulk, a.has("messages") {
            guard let list = try a.list("messages", max: 10_000) else { throw .invalid("messages", "is required") }
            try a.finish()
            guard !list.isEmpty else { throw .invalid("messages", "must not be empty") }
            for (i, m) in list.enumerated() {
                guard let o = m.objectValue else { throw .invalid("messages[\(i)]", "expected an object, got \(m.typeName)") }
                var ma = Arguments(o, prefix: "messages[\(i)]")
                jobs.append(try parseJob(&ma))
            }
            indexed = true
        } else {
            jobs.append(try parseJob(&a))
        }
        if jobs.count == 1 {
            switch jobs[0].target {
            case .tokens(let app, let platform, let tokens) where tokens.count > Self.chunkSize:
                return try await sendTokensPipelined(jobs[0].notification, app: app, platform: platform, tokens: tokens, started: started, bulk: bulk)
            case .ids(let ids) where ids.count > Self.chunkSize:
                return try await sendIdsPipelined(jobs[0].notification, ids: ids, started: started, bulk: bulk)
            case .raw(let app, let platform, let devices) where devices.count > Self.chunkSize:
                // `tokens`: chunk by chunk as for registration_ids, without the registry lookup.
                guard providers.provider(app: app, platform: platform) != nil else { throw Self.notConfigured(app: app, platform: platform) }
                try validate(jobs[0].notification, groups: [(app, platform)])
                return try await sendListPipelined(
                    jobs[0].notification, count: devices.count, reserving: devices.count, started: started, bulk: bulk
                ) { .raw(app: app, platform: platform, Array(devices[$0])) }
            case .users, .filter:
                return try await sendFilterPipelined(jobs[0].notification, target: jobs[0].target, started: started, bulk: bulk)
            default: break
            }
        }

        // Resolve every target and check every provider before anything is sent.
        var resolved: [Resolved] = []
        for job in jobs { resolved.append(try await resolve(job.target)) }
        var anyConfigured = false
        var firstMissing: (String, Platform)?
        var total = 0
        for (j, r) in resolved.enumerated() {
            var checked: Set<ProviderSet.Key> = []
            for d in r.devices {
                let key = ProviderSet.Key(app: d.app, platform: d.platform)
                guard !checked.contains(key) else { continue }
                checked.insert(key)
                if let p = providers.provider(app: d.app, platform: d.platform) {
                    anyConfigured = true
                    do throws(CommandError) {
                        try p.validate(jobs[j].notification)
                    } catch {
                        var e = error
                        e.details["platform"] = .string(d.platform.rawValue)
                        if indexed {
                            e.details["message"] = .int(Int64(j))
                            e.details["message_index"] = .int(Int64(j))
                        }
                        throw e
                    }
                } else if firstMissing == nil {
                    firstMissing = (d.app, d.platform)
                }
            }
            total += r.devices.count
        }
        if !anyConfigured {
            if let (app, platform) = firstMissing {
                throw Self.notConfigured(app: app, platform: platform)
            }
            if case .tokens(let app, let platform, _) = jobs.first?.target, providers.provider(app: app, platform: platform) == nil {
                throw Self.notConfigured(app: app, platform: platform)
            }
        }
        try reserve(total)
        defer { pending.subtract(total, ordering: .relaxed) }

        var j = 0
        return try await runPipeline(messages: jobs.count, started: started, bulk: bulk) { () async throws(CommandError) -> Chunk? in
            guard j < jobs.count else { return nil }
            defer { j += 1 }
            return Chunk(resolved: resolved[j], notification: jobs[j].notification, message: indexed ? j : nil)
        }
    }

    /// Tokens per chunk of a pipelined send.
    static let chunkSize = 5000

    /// A large send to tokens of one (app, platform): the provider is checked first, then the
    /// tokens go through the pipeline a chunk at a time.
    func sendTokensPipelined(
        _ n: Notification, app: String, platform: Platform, tokens: [String], started: UInt64, bulk: Bool
    ) async throws(CommandError) -> JSONObject {
        guard providers.provider(app: app, platform: platform) != nil else { throw Self.notConfigured(app: app, platform: platform) }
        try validate(n, groups: [(app, platform)])
        return try await sendListPipelined(n, count: tokens.count, reserving: tokens.count, started: started, bulk: bulk) {
            .tokens(app: app, platform: platform, Array(tokens[$0]))
        }
    }

    /// A large send to device ids: their active devices' (app, platform) groups are counted and
    /// checked first (as for a filter), then the ids go through the pipeline a chunk at a time.
    func sendIdsPipelined(_ n: Notification, ids: [Int64], started: UInt64, bulk: Bool) async throws(CommandError) -> JSONObject {
        var f = DeviceFilter()
        f.ids = ids
        f.active = true
        let total = try await checkGroups(n, f)
        return try await sendListPipelined(n, count: ids.count, reserving: total, started: started, bulk: bulk) { .ids(Array(ids[$0])) }
    }

    /// Sends to a long list of targets a chunk at a time: `target(range)` is the chunk of the
    /// list to resolve; unknown and inactive entries are reported chunk by chunk.
    func sendListPipelined(
        _ n: Notification, count: Int, reserving total: Int, started: UInt64, bulk: Bool,
        target: @escaping (Range<Int>) -> Target
    ) async throws(CommandError) -> JSONObject {
        try reserve(total)
        defer { pending.subtract(total, ordering: .relaxed) }
        var offset = 0
        return try await runPipeline(messages: 1, started: started, bulk: bulk) { () async throws(CommandError) -> Chunk? in
            guard offset < count else { return nil }
            let range = offset..<min(offset + Self.chunkSize, count)
            offset = range.upperBound
            return Chunk(resolved: try await self.resolve(target(range)), notification: n, message: nil)
        }
    }

    /// Counts the devices of a filter per (app, platform), checks the notification with every
    /// configured provider, and returns how many devices match; `provider_not_configured` if
    /// none of the groups has credentials.
    func checkGroups(_ n: Notification, _ f: DeviceFilter) async throws(CommandError) -> Int {
        let groups = try await registry.groups(f).sorted { ($0.app, $0.platform.rawValue) < ($1.app, $1.platform.rawValue) }
        let configured = groups.filter { providers.provider(app: $0.app, platform: $0.platform) != nil }
        if configured.isEmpty, let first = groups.first { throw Self.notConfigured(app: first.app, platform: first.platform) }
        try validate(n, groups: configured.map { ($0.app, $0.platform) })
        return groups.reduce(0) { $0 + $1.count }
    }

    /// A send to users or a filter: the (app, platform) groups are counted and checked first,
    /// then the devices are read page by page (by id) through the pipeline.
    func sendFilterPipelined(_ n: Notification, target: Target, started: UInt64, bulk: Bool) async throws(CommandError) -> JSONObject {
        var f = DeviceFilter()
        f.active = true
        switch target {
        case .users(let users, let app, let platform):
            f.users = users
            f.app = app
            f.platform = platform
        case .filter(let app, let platform, let user):
            f.app = app
            f.platform = platform
            f.user = user
        default:
            throw CommandError(.internalError, "pipeline: unexpected target")
        }
        let total = try await checkGroups(n, f)
        try reserve(total)
        defer { pending.subtract(total, ordering: .relaxed) }
        var after: Int64 = 0
        var done = false
        return try await runPipeline(messages: 1, started: started, bulk: bulk) { () async throws(CommandError) -> Chunk? in
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

    /// Checks the notification with each (app, platform) provider before anything is sent.
    func validate(_ n: Notification, groups: [(String, Platform)]) throws(CommandError) {
        for (app, platform) in groups {
            guard let p = providers.provider(app: app, platform: platform) else { continue }
            do throws(CommandError) {
                try p.validate(n)
            } catch {
                var e = error
                e.details["platform"] = .string(platform.rawValue)
                throw e
            }
        }
    }

    /// A piece of a send: devices (and rejected targets) and the notification for them;
    /// `message` is the index in a `bulk` with `messages`, which each result then carries.
    struct Chunk: Sendable {
        var resolved: Resolved
        var notification: Notification
        var message: Int?
    }

    /// Sends chunk after chunk: the next chunk is read while two are being sent, and each chunk's
    /// results are rendered as soon as it is done, so only two chunks' devices and results are held.
    func runPipeline(
        messages: Int, started: UInt64, bulk: Bool, next: () async throws(CommandError) -> Chunk?
    ) async throws(CommandError) -> JSONObject {
        typealias Part = (bytes: [UInt8], sent: Int, failed: Int)
        var parts: [Int: Part] = [:]
        var failure: CommandError?
        await withTaskGroup(of: (Int, Part).self) { group in
            var k = 0
            var running = 0
            var exhausted = false
            while true {
                while !exhausted && running < 2 && failure == nil {
                    do throws(CommandError) {
                        guard let chunk = try await next() else {
                            exhausted = true
                            break
                        }
                        let index = k
                        group.addTask { (index, await self.sendChunk(chunk)) }
                        k += 1
                        running += 1
                    } catch {
                        failure = error
                    }
                }
                guard running > 0, let (i, part) = await group.next() else { break }
                running -= 1
                parts[i] = part
            }
        }
        if let failure {
            logger.error("send stopped part way", metadata: ["error": "\(failure.message)", "chunks_done": "\(parts.count)"])
            throw failure
        }
        // The results array is the chunks' bytes as they are (each result led by a comma; the
        // first comma becomes the opening bracket): nothing is concatenated or copied.
        var segments: [[UInt8]] = []
        var sent = 0
        var failed = 0
        for i in parts.keys.sorted() {
            guard var part = parts.removeValue(forKey: i) else { continue }
            sent += part.sent
            failed += part.failed
            guard !part.bytes.isEmpty else { continue }
            if segments.isEmpty { part.bytes[0] = UInt8(ascii: "[") }
            segments.append(part.bytes)
        }
        segments.append(segments.isEmpty ? Array("[]".utf8) : [UInt8(ascii: "]")])
        sentCount.add(sent, ordering: .relaxed)
        failedCount.add(failed, ordering: .relaxed)
        logger.info("\(bulk ? "bulk" : "send") done", metadata: [
            "messages": "\(messages)", "sent": "\(sent)", "failed": "\(failed)", "ms": "\((monotonicNanos() - started) / 1_000_000)",
        ])
        return ["sent": .int(Int64(sent)), "failed": .int(Int64(failed)), "results": .raw(segments)]
    }

    /// One chunk of a pipelined send: its results as JSON objects each led by a comma, and counts.
    func sendChunk(_ c: Chunk) async -> (bytes: [UInt8], sent: Int, failed: Int) {
        let r = c.resolved
        let results = await deliver(c.notification, to: r.devices)
        let all = r.rejected.isEmpty ? results : results + r.rejected
        let renderer = await applyDeactivations(all, devices: r.devices)
        var bytes: [UInt8] = []
        var sent = 0
        let mode = Self.resultsMode
        for result in all {
            if result.status == .sent { sent += 1 }
            if mode == .none || (mode == .failed && result.status == .sent) { continue }
            bytes.append(UInt8(ascii: ","))
            var o = renderer.json(result)
            if let m = c.message {
                o.pairs.insert(("message_index", .int(Int64(m))), at: 0)
                o.pairs.insert(("message", .int(Int64(m))), at: 0)
            }
            JSONValue.object(o).write(to: &bytes)
        }
        return (bytes, sent, all.count - sent)
    }

    static func notConfigured(app: String, platform: Platform) -> CommandError {
        CommandError(
            .providerNotConfigured, "app '\(app)' has no \(platform.rawValue) credentials",
            details: ["app": .string(app), "platform": .string(platform.rawValue)])
    }

    /// Takes `n` notifications of the daemon's budget or throws `busy`.
    func reserve(_ n: Int) throws(CommandError) {
        let now = pending.add(n, ordering: .relaxed).newValue
        if now > config.maxPending && now != n {
            pending.subtract(n, ordering: .relaxed)
            let over = now - config.maxPending
            // Roughly how long the backlog takes to drain at ~30k notifications/s, at least 50 ms.
            let retry = max(50, min(30_000, over / 30 + 50))
            throw CommandError(
                .busy, "the daemon has \(now - n) notifications in flight, over max_pending \(config.maxPending); retry later",
                details: ["retry_after_ms": .int(Int64(retry))])
        }
    }

    /// Sends to devices grouped by (app, platform), groups concurrently; results keep the devices' order.
    func deliver(_ n: Notification, to devices: [Device]) async -> [DeliveryResult] {
        // One (app, platform), the usual case: hand the list over as it is, no index or copy.
        if let first = devices.first, devices.allSatisfy({ $0.app == first.app && $0.platform == first.platform }) {
            guard let p = providers.provider(app: first.app, platform: first.platform) else {
                return devices.map { .failed($0, reason: "provider_not_configured") }
            }
            let r = await p.send(n, to: devices)
            if r.count == devices.count { return r }
            return devices.enumerated().map { i, d in i < r.count ? r[i] : .failed(d, reason: "provider returned no result", retryable: true) }
        }
        var groups: [ProviderSet.Key: [Int]] = [:]
        for (i, d) in devices.enumerated() { groups[ProviderSet.Key(app: d.app, platform: d.platform), default: []].append(i) }
        var results = [DeliveryResult?](repeating: nil, count: devices.count)
        await withTaskGroup(of: [(Int, DeliveryResult)].self) { group in
            for (key, idx) in groups {
                let subset = idx.map { devices[$0] }
                guard let p = providers.provider(app: key.app, platform: key.platform) else {
                    for (k, i) in idx.enumerated() { results[i] = .failed(subset[k], reason: "provider_not_configured") }
                    continue
                }
                group.addTask {
                    let r = await p.send(n, to: subset)
                    return idx.enumerated().map { k, i in
                        (i, k < r.count ? r[k] : .failed(subset[k], reason: "provider returned no result", retryable: true))
                    }
                }
            }
            for await pairs in group { for (i, r) in pairs { results[i] = r } }
        }
        return results.enumerated().map { i, r in r ?? .failed(devices[i], reason: "internal: no result", retryable: true) }
    }

    /// Renders results for the protocol once the registry knows which devices it deactivated.
    struct ResultRenderer {
        var done: Set<Int64>
        var appOf: [Int64: String]
        var app: String?

        func json(_ r: DeliveryResult) -> JSONObject {
            let unknownId = r.reason == "not_registered" && r.registrationId.isEmpty
            // Negative ids are `tokens` entries: not registry devices.
            let registered = (r.deviceId ?? 0) > 0
            var o: JSONObject = [
                "id": registered ? r.deviceId.map { .int($0) } ?? .null : .null,
                "platform": unknownId ? .null : .string(r.platform.rawValue),
                "app": (r.deviceId.flatMap { appOf[$0] } ?? app).map { .string($0) } ?? .null,
                "registration_id": unknownId ? .null : .string(r.registrationId),
                "status": .string(r.status.rawValue),
            ]
            if r.status == .failed {
                o["reason"] = .string(r.reason ?? "unknown")
                o["reason_class"] = .string(Dispatcher.reasonClass(r))
                o["retryable"] = .bool(r.retryable)
                let deactivated = r.deviceId.map { done.contains($0) } ?? false
                o["deactivated"] = .bool(deactivated)
                if r.deactivate && !deactivated && registered { o["still_active"] = .bool(true) }
            }
            for (k, v) in r.extra.pairs { o[k] = v }
            return o
        }
    }

    /// Marks dead devices inactive (one transaction) and returns how to render each result.
    func applyDeactivations(_ results: [DeliveryResult], devices: [Device], app: String? = nil) async -> ResultRenderer {
        var appOf: [Int64: String] = [:]
        for d in devices { appOf[d.id] = d.app }
        let now = nowMillis()
        let list = results.compactMap { r -> Registry.Deactivation? in
            guard r.deactivate, let id = r.deviceId, id > 0 else { return nil }
            return Registry.Deactivation(id: id, reason: r.reason ?? "invalid", at: now, invalidSince: r.invalidSince)
        }
        let done: Set<Int64> = list.isEmpty ? [] : await registry.deactivate(list)
        if !done.isEmpty { logger.info("devices deactivated", metadata: ["count": "\(done.count)"]) }
        return ResultRenderer(done: done, appOf: appOf, app: app)
    }
}
