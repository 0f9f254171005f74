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
            r = Self.resolved(ids: ids, byId, includeInactive: includeInactive)
        case .tokens(let app, let platform, let tokens):
            let found = try await registry.resolveTokens(app: app, platform: platform, tokens)
            r = Self.resolved(tokens: tokens[...], platform: platform, found[...], includeInactive: includeInactive)
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

    /// An `ids` target resolved from the devices found: unknown ids and inactive devices rejected.
    static func resolved(ids: [Int64], _ byId: [Int64: Device], includeInactive: Bool) -> Resolved {
        var r = Resolved()
        for id in ids {
            guard let d = byId[id] else {
                r.rejected.append(DeliveryResult(target: .unknownId(id), status: .failed, failure: .notRegistered))
                continue
            }
            if d.active || includeInactive { r.devices.append(d) } else { r.rejected.append(.failed(d, reason: "inactive")) }
        }
        return r
    }

    /// A `registration_ids` target resolved from the registry's answer (parallel to `tokens`).
    static func resolved(
        tokens: ArraySlice<String>, platform: Platform, _ found: ArraySlice<Device?>, includeInactive: Bool
    ) -> Resolved {
        var r = Resolved()
        for (token, d) in zip(tokens, found) {
            guard let d else {
                r.rejected.append(DeliveryResult(deviceId: nil, platform: platform, registrationId: token, status: .failed, reason: "not_registered"))
                continue
            }
            if d.active || includeInactive { r.devices.append(d) } else { r.rejected.append(.failed(d, reason: "inactive")) }
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
        var resolved = try await resolveAll(jobs.map(\.target))
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

        // Messages are packed into chunks of up to `chunkSize` devices (a message larger than
        // that spans several), and a chunk's messages are delivered together: a bulk of many
        // small messages keeps as many requests in flight as one send to as many devices.
        var j = 0
        var offset = 0
        // One message (at most `chunkSize` devices here, e.g. a web worker's single send) is one
        // chunk: sent inline, without a child task (and its two thread hops) per send.
        return try await runPipeline(messages: jobs.count, started: started, bulk: bulk, inline: jobs.count == 1) { () async throws(CommandError) -> Chunk? in
            var chunk = Chunk(parts: [])
            var size = 0
            while j < jobs.count && size < Self.chunkSize {
                let devices = resolved[j].devices
                let take = min(devices.count - offset, Self.chunkSize - size)
                var part = Resolved(devices: offset == 0 && take == devices.count ? devices : Array(devices[offset..<offset + take]))
                offset += take
                size += take
                if offset == devices.count {
                    // The message's last part carries its rejected targets; its devices are released.
                    part.rejected = resolved[j].rejected
                    size += part.rejected.count
                    resolved[j] = Resolved()
                    chunk.parts.append(Chunk.Part(resolved: part, notification: jobs[j].notification, message: indexed ? j : nil))
                    j += 1
                    offset = 0
                } else {
                    chunk.parts.append(Chunk.Part(resolved: part, notification: jobs[j].notification, message: indexed ? j : nil))
                }
            }
            return chunk.parts.isEmpty ? nil : chunk
        }
    }

    /// Resolves the targets of a `bulk`'s messages, in order; the first failure fails them all.
    ///
    /// The ids of every `ids` target are read together, and the tokens of every
    /// `registration_ids` target of one (app, platform), a few thousand per registry call (a
    /// bulk of 10,000 one-device messages makes 2 reads, not 10,000); `users` and `filter`
    /// targets are read one by one, many at once.
    func resolveAll(_ targets: [Target]) async throws(CommandError) -> [Resolved] {
        if targets.count == 1 { return [try await resolve(targets[0])] }
        var out = [Resolved](repeating: Resolved(), count: targets.count)
        var ids: [Int64] = []
        var idTargets: [Int] = []
        struct TokenGroup {
            var tokens: [String] = []
            /// (message, start in `tokens`, count)
            var targets: [(Int, Int, Int)] = []
        }
        var tokenGroups: [ProviderSet.Key: TokenGroup] = [:]
        var others: [Int] = []
        for (i, t) in targets.enumerated() {
            switch t {
            case .ids(let list):
                ids += list
                idTargets.append(i)
            case .tokens(let app, let platform, let list):
                let key = ProviderSet.Key(app: app, platform: platform)
                tokenGroups[key, default: TokenGroup()].targets.append((i, tokenGroups[key]?.tokens.count ?? 0, list.count))
                tokenGroups[key]?.tokens += list
            default:
                others.append(i)
            }
        }
        if !idTargets.isEmpty {
            let unique = Array(Set(ids))
            var byId: [Int64: Device] = [:]
            byId.reserveCapacity(unique.count)
            for start in stride(from: 0, to: unique.count, by: Self.chunkSize) {
                var f = DeviceFilter()
                f.ids = Array(unique[start..<min(start + Self.chunkSize, unique.count)])
                for d in try await registry.devices(f) { byId[d.id] = d }
            }
            for i in idTargets {
                guard case .ids(let list) = targets[i] else { continue }
                out[i] = Self.resolved(ids: list, byId, includeInactive: false)
            }
        }
        for (key, group) in tokenGroups {
            var found: [Device?] = []
            found.reserveCapacity(group.tokens.count)
            for start in stride(from: 0, to: group.tokens.count, by: Self.chunkSize) {
                let slice = Array(group.tokens[start..<min(start + Self.chunkSize, group.tokens.count)])
                found += try await registry.resolveTokens(app: key.app, platform: key.platform, slice)
            }
            for (i, start, count) in group.targets {
                out[i] = Self.resolved(
                    tokens: group.tokens[start..<start + count], platform: key.platform, found[start..<start + count],
                    includeInactive: false)
            }
        }
        for (k, r) in try await resolveEach(others.map { targets[$0] }).enumerated() { out[others[k]] = r }
        return out
    }

    /// Resolves targets one by one, up to `resolveWidth` at once (the registry runs the queued
    /// reads together), in order; the first failure fails them all.
    func resolveEach(_ targets: [Target]) async throws(CommandError) -> [Resolved] {
        if targets.count <= 1 { return try await targets.isEmpty ? [] : [resolve(targets[0])] }
        // The group's state lives in its closure and is returned (no outer variable is captured).
        let out = await withTaskGroup(of: (Int, Result<Resolved, CommandError>).self, returning: Result<[Resolved], CommandError>.self) {
            group in
            var done = [Resolved](repeating: Resolved(), count: targets.count)
            var failure: (index: Int, error: CommandError)?
            var next = 0
            var running = 0
            while true {
                while next < targets.count && running < Self.resolveWidth && failure == nil {
                    let i = next
                    let t = targets[i]
                    group.addTask { (i, await self.resolveResult(t)) }
                    next += 1
                    running += 1
                }
                guard running > 0, let (i, r) = await group.next() else { break }
                running -= 1
                switch r {
                case .success(let x): done[i] = x
                case .failure(let e): if i < failure?.index ?? Int.max { failure = (i, e) }
                }
            }
            if let failure { return .failure(failure.error) }
            return .success(done)
        }
        return try out.get()
    }

    func resolveResult(_ t: Target) async -> Result<Resolved, CommandError> {
        do throws(CommandError) { return .success(try await resolve(t)) } catch { return .failure(error) }
    }

    /// Targets of a `bulk` resolved at once.
    static let resolveWidth = 64

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
        return try await runPipeline(
            messages: 1, started: started, bulk: bulk,
            next: { () async throws(CommandError) -> Chunk? in
                guard offset < count else { return nil }
                let range = offset..<min(offset + Self.chunkSize, count)
                let chunk = Chunk(resolved: try await self.resolve(target(range)), notification: n, message: nil)
                offset = range.upperBound
                return chunk
            },
            notAttempted: { ["from_index": .int(Int64(offset))] })
    }

    /// Counts the devices of a filter per (app, platform), checks the notification with every
    /// configured provider, and returns how many devices match; `provider_not_configured` if
    /// none of the groups has credentials.
    func checkGroups(_ n: Notification, _ f: DeviceFilter) async throws(CommandError) -> Int {
        try await checkedGroups(n, f).reduce(0) { $0 + $1.count }
    }

    /// `checkGroups`, returning the groups (sorted by app, platform).
    func checkedGroups(_ n: Notification, _ f: DeviceFilter) async throws(CommandError) -> [Registry.Group] {
        let groups = try await registry.groups(f).sorted { ($0.app, $0.platform.rawValue) < ($1.app, $1.platform.rawValue) }
        let configured = groups.filter { providers.provider(app: $0.app, platform: $0.platform) != nil }
        if configured.isEmpty, let first = groups.first { throw Self.notConfigured(app: first.app, platform: first.platform) }
        try validate(n, groups: configured.map { ($0.app, $0.platform) })
        return groups
    }

    /// The parts a send to users or a filter reads, each an index search in id order (see
    /// `Registry.page`): one per user (sorted, once each), or one per (app, platform) group of a
    /// filter without a user. Paging the whole filter by id instead would have each page read and
    /// sort every remaining match when no index gives id order (`users`, `app` alone).
    static func pageParts(_ f: DeviceFilter, groups: [Registry.Group]) -> [DeviceFilter] {
        if let users = f.users {
            return Array(Set(users)).sorted().map { u in
                var p = f
                p.users = nil
                p.user = u
                return p
            }
        }
        if f.user != nil { return [f] }
        return groups.map { g in
            var p = f
            p.app = g.app
            p.platform = g.platform
            return p
        }
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
        let groups = try await checkedGroups(n, f)
        let total = groups.reduce(0) { $0 + $1.count }
        try reserve(total)
        defer { pending.subtract(total, ordering: .relaxed) }
        let parts = Self.pageParts(f, groups: groups)
        var cursor: Registry.PageCursor? = Registry.PageCursor()
        return try await runPipeline(messages: 1, started: started, bulk: bulk) { () async throws(CommandError) -> Chunk? in
            while let at = cursor {
                let (devices, next) = try await self.registry.page(parts, from: at, limit: Self.chunkSize)
                cursor = next
                if !devices.isEmpty { return Chunk(resolved: Resolved(devices: devices), notification: n, message: nil) }
            }
            return nil
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

    /// A piece of a send: up to about `chunkSize` devices (and rejected targets), as parts
    /// that each have their own notification (one part for a `send`, many for a `bulk` of
    /// small messages); `message` is the index in a `bulk` with `messages`, which each of the
    /// part's results then carries.
    struct Chunk: Sendable {
        struct Part: Sendable {
            var resolved: Resolved
            var notification: Notification
            var message: Int?
        }
        var parts: [Part]

        init(parts: [Part]) { self.parts = parts }

        init(resolved: Resolved, notification: Notification, message: Int?) {
            parts = [Part(resolved: resolved, notification: notification, message: message)]
        }
    }

    /// Sends chunk after chunk: the next chunk is read while two are being sent, and each chunk's
    /// results are rendered as soon as it is done, so only two chunks' devices and results are held.
    ///
    /// If reading a chunk fails after earlier chunks were sent, the chunks in flight are finished
    /// and the error is thrown with what was done (protocol.md, "Partial failure"): `sent`,
    /// `failed`, `results` of every device attempted, and `not_attempted` (from `notAttempted`,
    /// evaluated after the failing read) saying which part of the target was not. By default
    /// (a `users` or `filter` target) that is every device of the target without a result.
    /// With `inline`, chunks are sent one after another in the caller's task (no child task).
    func runPipeline(
        messages: Int, started: UInt64, bulk: Bool, inline: Bool = false, next: () async throws(CommandError) -> Chunk?,
        notAttempted: () -> JSONObject = { ["not_in_results": true] }
    ) async throws(CommandError) -> JSONObject {
        typealias Part = (bytes: [UInt8], sent: Int, failed: Int)
        var parts: [Int: Part] = [:]
        var failure: CommandError?
        // Chunks' results go out in chunk order into a spool that moves to a temporary file past
        // a few MB (issue 11): a send's memory stays bounded by its chunks, not its size.
        let collected = ResultCollector(spool: ByteSpool(directory: resultSpoolDirectory, memoryLimit: Self.resultMemoryLimit))
        var chunksStarted = 0
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
                        k += 1
                        if inline {
                            parts[index] = await self.sendChunk(chunk)
                            collected.take(from: &parts)
                            continue
                        }
                        group.addTask { (index, await self.sendChunk(chunk)) }
                        running += 1
                    } catch {
                        failure = error
                    }
                }
                guard running > 0, let (i, part) = await group.next() else { break }
                running -= 1
                parts[i] = part
                collected.take(from: &parts)
            }
            chunksStarted = k
        }
        let (sent, failed) = (collected.sent, collected.failed)
        let results: JSONValue
        switch collected.finish() {
        case .success(let v): results = v
        case .failure(let e):
            logger.error("send results lost", metadata: ["error": "\(e.message)", "sent": "\(sent)", "failed": "\(failed)"])
            throw CommandError(.internalError, "the send was carried out (\(sent) sent, \(failed) failed) but its results were lost: \(e.message)")
        }
        sentCount.add(sent, ordering: .relaxed)
        failedCount.add(failed, ordering: .relaxed)
        if var failure {
            logger.error("send stopped part way", metadata: [
                "error": "\(failure.message)", "chunks_done": "\(chunksStarted)", "sent": "\(sent)", "failed": "\(failed)",
            ])
            // Nothing was sent: the plain error (a rejected request changes nothing).
            guard chunksStarted > 0 else { throw failure }
            failure.details["partial"] = .bool(true)
            failure.reply = [
                "sent": .int(Int64(sent)), "failed": .int(Int64(failed)), "results": results,
                "not_attempted": .object(notAttempted()),
            ]
            throw failure
        }
        logger.info("\(bulk ? "bulk" : "send") done", metadata: [
            "messages": "\(messages)", "sent": "\(sent)", "failed": "\(failed)", "ms": "\((monotonicNanos() - started) / 1_000_000)",
        ])
        return ["sent": .int(Int64(sent)), "failed": .int(Int64(failed)), "results": results]
    }

    /// One chunk of a pipelined send: its results as JSON objects each led by a comma, and counts.
    /// A chunk's parts (messages) are delivered concurrently; results keep the parts' order.
    func sendChunk(_ c: Chunk) async -> (bytes: [UInt8], sent: Int, failed: Int) {
        var delivered: [[DeliveryResult]]
        if c.parts.count == 1 {
            delivered = [await deliver(c.parts[0].notification, to: c.parts[0].resolved.devices)]
        } else {
            delivered = await deliver(c.parts.map { Addressed($0.notification, to: $0.resolved.devices) })
        }
        // One registry transaction for the whole chunk's deactivations.
        let renderer: ResultRenderer
        if c.parts.count == 1 {
            let r = c.parts[0].resolved
            renderer = await applyDeactivations(r.rejected.isEmpty ? delivered[0] : delivered[0] + r.rejected, devices: r.devices)
        } else {
            renderer = await applyDeactivations(
                delivered.flatMap { $0 } + c.parts.flatMap(\.resolved.rejected), devices: c.parts.flatMap(\.resolved.devices))
        }
        var bytes: [UInt8] = []
        var sent = 0
        var count = 0
        let mode = Self.resultsMode
        for (k, part) in c.parts.enumerated() {
            for list in [delivered[k], part.resolved.rejected] {
                for result in list {
                    count += 1
                    if result.status == .sent { sent += 1 }
                    if mode == .none || (mode == .failed && result.status == .sent) { continue }
                    bytes.append(UInt8(ascii: ","))
                    var o = renderer.json(result)
                    if let m = part.message {
                        o.pairs.insert(("message_index", .int(Int64(m))), at: 0)
                        o.pairs.insert(("message", .int(Int64(m))), at: 0)
                    }
                    JSONValue.object(o).write(to: &bytes)
                }
            }
            delivered[k] = []
        }
        return (bytes, sent, count - sent)
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

    /// Sends several notifications (a chunk of a `bulk`'s messages) to their devices: each
    /// (app, platform) provider gets all its messages in one call, providers concurrently.
    /// One result list per message, in its devices' order.
    func deliver(_ messages: [Addressed]) async -> [[DeliveryResult]] {
        // Per provider: the messages' devices of that (app, platform), and where each came from.
        struct Group {
            var messages: [Addressed] = []
            /// (message, index of each device in the message) per entry of `messages`.
            var origin: [(Int, [Int])] = []
        }
        var groups: [ProviderSet.Key: Group] = [:]
        var out = messages.map { [DeliveryResult?](repeating: nil, count: $0.devices.count) }
        for (k, m) in messages.enumerated() {
            guard let first = m.devices.first else { continue }
            if m.devices.allSatisfy({ $0.app == first.app && $0.platform == first.platform }) {
                let key = ProviderSet.Key(app: first.app, platform: first.platform)
                groups[key, default: Group()].messages.append(m)
                groups[key]?.origin.append((k, Array(m.devices.indices)))
                continue
            }
            var split: [ProviderSet.Key: [Int]] = [:]
            for (i, d) in m.devices.enumerated() { split[ProviderSet.Key(app: d.app, platform: d.platform), default: []].append(i) }
            for (key, idx) in split {
                groups[key, default: Group()].messages.append(Addressed(m.notification, to: idx.map { m.devices[$0] }))
                groups[key]?.origin.append((k, idx))
            }
        }
        await withTaskGroup(of: (ProviderSet.Key, [[DeliveryResult]]).self) { group in
            for (key, g) in groups {
                guard let p = providers.provider(app: key.app, platform: key.platform) else {
                    for (m, (k, idx)) in zip(g.messages, g.origin) {
                        for (j, i) in idx.enumerated() { out[k][i] = .failed(m.devices[j], reason: "provider_not_configured") }
                    }
                    continue
                }
                group.addTask { (key, await p.send(g.messages)) }
            }
            for await (key, results) in group {
                guard let g = groups[key] else { continue }
                for (e, (k, idx)) in g.origin.enumerated() where e < results.count {
                    for (j, i) in idx.enumerated() where j < results[e].count { out[k][i] = results[e][j] }
                }
            }
        }
        return out.enumerated().map { k, list in
            list.enumerated().map { i, r in
                r ?? .failed(messages[k].devices[i], reason: "provider returned no result", retryable: true)
            }
        }
    }

    /// Sends to devices grouped by (app, platform), groups concurrently; results keep the devices' order.
    func deliver(_ n: Notification, to devices: [Device]) async -> [DeliveryResult] {
        // One (app, platform), the usual case: hand the list over as it is, no index or copy.
        if let first = devices.first, devices.allSatisfy({ $0.app == first.app && $0.platform == first.platform }) {
            guard let p = providers.provider(app: first.app, platform: first.platform) else {
                return devices.map { .failed($0, reason: "provider_not_configured") }
            }
            ProviderHealth.shared.begin(app: first.app, platform: first.platform, count: devices.count)
            let r = await p.send(n, to: devices)
            ProviderHealth.shared.finish(app: first.app, platform: first.platform, results: r, count: devices.count)
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
                    ProviderHealth.shared.begin(app: key.app, platform: key.platform, count: subset.count)
                    let r = await p.send(n, to: subset)
                    ProviderHealth.shared.finish(app: key.app, platform: key.platform, results: r, count: subset.count)
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
            let unknownId = if case .unknownId = r.target { true } else { false }
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
        if !done.isEmpty {
            logger.info("devices deactivated", metadata: ["count": "\(done.count)"])
            var counts: [String: (app: String, platform: Platform, reason: String, n: Int)] = [:]
            for r in results where r.deactivate {
                guard let id = r.deviceId, done.contains(id) else { continue }
                let devApp = appOf[id] ?? app ?? "default"
                let reason = r.reason ?? "invalid"
                counts["\(devApp)\u{0}\(r.platform.rawValue)\u{0}\(reason)", default: (devApp, r.platform, reason, 0)].n += 1
            }
            for c in counts.values { ProviderHealth.shared.deactivated(app: c.app, platform: c.platform, reason: c.reason, count: c.n) }
        }
        return ResultRenderer(done: done, appOf: appOf, app: app)
    }
}
