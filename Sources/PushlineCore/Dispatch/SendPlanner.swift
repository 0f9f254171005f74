import Logging

// The send planner (issue 12 "Sending"): a request's targets and notification parsed, resolved
// against the registry and checked against the configured (app, platform) providers before
// anything is sent. Send.swift holds the entry point; SendPipeline.swift delivers chunks.

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
                r.rejected.append(DeliveryResult(deviceId: id, platform: .apns, registrationId: "", status: .failed, reason: "not_registered"))
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
}

extension Dispatcher {
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
        _ n: PushNotification, app: String, platform: Platform, tokens: [String], started: UInt64, bulk: Bool
    ) async throws(CommandError) -> JSONObject {
        guard providers.provider(app: app, platform: platform) != nil else { throw Self.notConfigured(app: app, platform: platform) }
        try validate(n, groups: [(app, platform)])
        return try await sendListPipelined(n, count: tokens.count, reserving: tokens.count, started: started, bulk: bulk) {
            .tokens(app: app, platform: platform, Array(tokens[$0]))
        }
    }

    /// A large send to device ids: their active devices' (app, platform) groups are counted and
    /// checked first (as for a filter), then the ids go through the pipeline a chunk at a time.
    func sendIdsPipelined(_ n: PushNotification, ids: [Int64], started: UInt64, bulk: Bool) async throws(CommandError) -> JSONObject {
        var f = DeviceFilter()
        f.ids = ids
        f.active = true
        let total = try await checkGroups(n, f)
        return try await sendListPipelined(n, count: ids.count, reserving: total, started: started, bulk: bulk) { .ids(Array(ids[$0])) }
    }

    /// Sends to a long list of targets a chunk at a time: `target(range)` is the chunk of the
    /// list to resolve; unknown and inactive entries are reported chunk by chunk.
    func sendListPipelined(
        _ n: PushNotification, count: Int, reserving total: Int, started: UInt64, bulk: Bool,
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
    func checkGroups(_ n: PushNotification, _ f: DeviceFilter) async throws(CommandError) -> Int {
        try await checkedGroups(n, f).reduce(0) { $0 + $1.count }
    }

    /// `checkGroups`, returning the groups (sorted by app, platform).
    func checkedGroups(_ n: PushNotification, _ f: DeviceFilter) async throws(CommandError) -> [DeviceGroup] {
        let groups = try await registry.groups(f).sorted { ($0.app, $0.platform.rawValue) < ($1.app, $1.platform.rawValue) }
        let configured = groups.filter { providers.provider(app: $0.app, platform: $0.platform) != nil }
        if configured.isEmpty, let first = groups.first { throw Self.notConfigured(app: first.app, platform: first.platform) }
        try validate(n, groups: configured.map { ($0.app, $0.platform) })
        return groups
    }

    /// The parts a send to users or a filter reads, each an index search in id order (see
    /// `SQLiteRegistry.page`): one per user (sorted, once each), or one per (app, platform) group of a
    /// filter without a user. Paging the whole filter by id instead would have each page read and
    /// sort every remaining match when no index gives id order (`users`, `app` alone).
    static func pageParts(_ f: DeviceFilter, groups: [DeviceGroup]) -> [DeviceFilter] {
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
    func sendFilterPipelined(_ n: PushNotification, target: Target, started: UInt64, bulk: Bool) async throws(CommandError) -> JSONObject {
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
        var cursor: PageCursor? = PageCursor()
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
    func validate(_ n: PushNotification, groups: [(String, Platform)]) throws(CommandError) {
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
}
