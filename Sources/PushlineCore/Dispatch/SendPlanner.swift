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
        case .users, .filter:
            guard var f = t.activeFilter else { break }
            if includeInactive { f.active = nil }
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
        // The one bounded fan-out (Batches.map); the first failure in target order fails them all.
        let results = await Batches.map(targets, width: Self.resolveWidth) { t in await self.resolveResult(t) }
        var done: [Resolved] = []
        done.reserveCapacity(results.count)
        for r in results { done.append(try r.get()) }
        return done
    }

    func resolveResult(_ t: Target) async -> Result<Resolved, CommandError> {
        do throws(CommandError) { return .success(try await resolve(t)) } catch { return .failure(error) }
    }

    /// Targets of a `bulk` resolved at once.
    static let resolveWidth = 64

    /// Tokens per chunk of a pipelined send.
    static let chunkSize = 5000

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
}

extension Target {
    /// The registry filter of a `users` or `filter` target's active devices; nil for the others.
    var activeFilter: DeviceFilter? {
        var f = DeviceFilter()
        f.active = true
        switch self {
        case .users(let users, let app, let platform):
            f.users = users
            f.app = app
            f.platform = platform
        case .filter(let app, let platform, let user):
            f.app = app
            f.platform = platform
            f.user = user
        case .ids, .tokens, .raw:
            return nil
        }
        return f
    }

    /// The one (app, platform) a `registration_ids` or `tokens` target names, and its entries.
    var namedGroup: DeviceGroup? {
        switch self {
        case .tokens(let app, let platform, let list): DeviceGroup(app: app, platform: platform, count: list.count)
        case .raw(let app, let platform, let list): DeviceGroup(app: app, platform: platform, count: list.count)
        case .ids, .users, .filter: nil
        }
    }
}

/// The commands that send, as the planner reads them.
enum SendCommand: Sendable {
    /// `send`: one message (its arguments at the top level).
    case send
    /// `bulk`: one message, or a list of them under `messages` (then indexed).
    case bulk
    /// `topic`: Google's topic message and the registry's other subscribers.
    case topic
}

/// One message of a send: a target and its notification (a `topic` request's message has
/// `topic` set; its devices are the registry's subscribers, `topic.subscribers`).
struct PlannedMessage: Sendable {
    var target: Target
    var notification: PushNotification
    var topic: Dispatcher.TopicRequest? = nil
}

/// What a request sends, decided and checked in one place (`Dispatcher.plan`) before anything
/// is sent or queued: every command that sends (send, bulk, topic; synchronous or async) gets
/// its plan there, so each is refused the same way for the same reason.
struct SendPlan: Sendable {
    /// The messages, in request order.
    var messages: [PlannedMessage] = []
    /// Each message's request object as given (what an async job stores).
    var sources: [JSONObject] = []
    /// A `bulk` with `messages`: errors and results carry the message's index.
    var indexed = false
    /// Per message, the (app, platform) groups it reaches with their device counts; a
    /// `registration_ids` or `tokens` target's named pair is always among them, and a
    /// `topic`'s first group is Google's topic message (app, fcm) when the app has FCM.
    var groups: [[DeviceGroup]] = []
    /// Per message, its targets resolved when the plan read them to know their groups (a
    /// synchronous send that is not streamed, see `streams`); the pipeline sends these.
    var resolved: [Resolved]?
    /// How many notifications the plan holds (`max_pending`, `max_queued`): per message its
    /// resolved devices, else every entry of an `ids`/`registration_ids`/`tokens` list, else
    /// the devices of its groups.
    var estimate = 0

    /// The app of message `j` when it names or reaches one: an async job's `app`.
    func app(_ j: Int) -> String? {
        let m = messages[j]
        if let t = m.topic { return t.app }
        switch m.target {
        case .tokens(let app, _, _), .raw(let app, _, _): return app
        case .ids: return groups[j].count == 1 ? groups[j].first?.app : nil
        case .users(_, let app, _), .filter(let app, _, _): return app
        }
    }
}

extension CommandError {
    /// The error of message `j` of a `bulk` with `messages` (`message` and, 1.1, `message_index`).
    func inMessage(_ j: Int?) -> CommandError {
        guard let j else { return self }
        var e = self
        e.details["message"] = .int(Int64(j))
        e.details["message_index"] = .int(Int64(j))
        return e
    }
}

extension Dispatcher {
    static let sendOnlyKeys: Set<String> = ["cmd", "messages"]

    func parseJob(_ a: inout Arguments) throws(CommandError) -> PlannedMessage {
        let target = try Target.parse(&a)
        var fields = JSONObject()
        for k in a.unread {
            guard PushNotification.allKeys.contains(k) else { throw .invalid(a.path(k), "unknown argument '\(k)'") }
            if let v = a.value(k) { fields[k] = v }
        }
        do throws(CommandError) {
            return PlannedMessage(target: target, notification: try PushNotification(parsing: fields))
        } catch {
            throw a.root.isEmpty ? error : error.prefixed(a.root)
        }
    }

    /// Whether a synchronous send of this one message streams its target through the pipeline
    /// a chunk at a time (read from the registry while earlier chunks are sent) rather than
    /// resolving it whole first: a `users` or `filter` target, or a list over `chunkSize`.
    static func streams(_ m: PlannedMessage) -> Bool {
        switch m.target {
        case .users, .filter: true
        case .ids(let list): list.count > chunkSize
        case .tokens(_, _, let list): list.count > chunkSize
        case .raw(_, _, let list): list.count > chunkSize
        }
    }

    /// The send planner: parses a sending command's request (`sync`: for a synchronous send,
    /// which resolves the targets it does not stream), finds the (app, platform) groups each
    /// message reaches, and checks them (`check`). Every sending command, synchronous or async,
    /// goes through here; nothing has been sent or written when it throws.
    func plan(_ a: inout Arguments, _ command: SendCommand, sync: Bool) async throws(CommandError) -> SendPlan {
        var p = SendPlan()
        switch command {
        case .topic:
            let t = try parseTopic(&a)
            p.messages = [PlannedMessage(target: .ids([]), notification: t.notification, topic: t)]
            p.sources = [a.object]
        case .bulk where a.has("messages"):
            guard let list = try a.list("messages", max: 10_000) else { throw .invalid("messages", "is required") }
            try a.finish()
            guard !list.isEmpty else { throw .invalid("messages", "must not be empty") }
            for (i, m) in list.enumerated() {
                guard let o = m.objectValue else { throw .invalid("messages[\(i)]", "expected an object, got \(m.typeName)") }
                var ma = Arguments(o, prefix: "messages[\(i)]")
                p.messages.append(try parseJob(&ma))
                p.sources.append(o)
            }
            p.indexed = true
        case .send, .bulk:
            p.messages = [try parseJob(&a)]
            p.sources = [a.object]
        }
        if sync && p.messages[0].topic == nil && !(p.messages.count == 1 && Self.streams(p.messages[0])) {
            // Resolved whole before anything is sent: the groups are those of the devices found.
            let resolved = try await resolveAll(p.messages.map(\.target))
            p.groups = zip(p.messages, resolved).map { m, r in Self.groups(of: r.devices, naming: m.target.namedGroup) }
            p.estimate = resolved.reduce(0) { $0 + $1.devices.count }
            p.resolved = resolved
        } else {
            for m in p.messages {
                let g = try await groups(m)
                p.groups.append(g)
                switch m.target {
                case .ids(let list) where m.topic == nil: p.estimate += list.count
                case .tokens(_, _, let list): p.estimate += list.count
                case .raw(_, _, let list): p.estimate += list.count
                default: p.estimate += g.reduce(0) { $0 + $1.count }
                }
            }
        }
        try check(p)
        return p
    }

    /// The groups of a message not resolved: a registry count of its active devices per (app,
    /// platform), or the pair its token list names; for a `topic`, Google's topic message
    /// (when the app has FCM; an FCM provider that cannot manage topics is refused) and the
    /// subscribers. Sorted by app, platform.
    func groups(_ m: PlannedMessage) async throws(CommandError) -> [DeviceGroup] {
        if let t = m.topic {
            let subscribers = try await sortedGroups(t.subscribers)
            let fcm = providers.provider(app: t.app, platform: .fcm) != nil
            // Google's topic API is required when no subscriber is reachable otherwise.
            if fcm || !subscribers.contains(where: { providers.provider(app: $0.app, platform: $0.platform) != nil }) {
                _ = try topicProvider(app: t.app)
            }
            return (fcm ? [DeviceGroup(app: t.app, platform: .fcm, count: 1)] : []) + subscribers
        }
        if let g = m.target.namedGroup { return [g] }
        var f = DeviceFilter()
        if case .ids(let ids) = m.target {
            f.ids = ids
            f.active = true
        } else if let af = m.target.activeFilter {
            f = af
        }
        return try await sortedGroups(f)
    }

    /// The registry's active-device counts of a filter per (app, platform), sorted by app, platform.
    func sortedGroups(_ f: DeviceFilter) async throws(CommandError) -> [DeviceGroup] {
        try await registry.groups(f).sorted { ($0.app, $0.platform.rawValue) < ($1.app, $1.platform.rawValue) }
    }

    /// The (app, platform) groups of resolved devices, in the devices' order, with the pair a
    /// token list names first (counted 0 when none of its tokens is registered and active).
    static func groups(of devices: [Device], naming named: DeviceGroup?) -> [DeviceGroup] {
        var out: [DeviceGroup] = []
        var at: [ProviderSet.Key: Int] = [:]
        if let n = named {
            out.append(DeviceGroup(app: n.app, platform: n.platform, count: 0))
            at[ProviderSet.Key(app: n.app, platform: n.platform)] = 0
        }
        for d in devices {
            let key = ProviderSet.Key(app: d.app, platform: d.platform)
            if let k = at[key] {
                out[k].count += 1
            } else {
                at[key] = out.count
                out.append(DeviceGroup(app: d.app, platform: d.platform, count: 1))
            }
        }
        return out
    }

    /// The one check of a plan (protocol.md 4, "Targets"): each message's notification is
    /// valid for every configured (app, platform) it reaches (the first refusal fails the
    /// command, naming the platform and, in a `bulk` with `messages`, the message); and if no
    /// group of the whole request is configured, the command is `provider_not_configured` for
    /// the first group. Groups of unconfigured pairs beside configured ones are sent and fail
    /// device by device (`provider_not_configured`).
    func check(_ p: SendPlan) throws(CommandError) {
        var configured = false
        var missing: DeviceGroup?
        for (j, m) in p.messages.enumerated() {
            for g in p.groups[j] {
                guard let provider = providers.provider(app: g.app, platform: g.platform) else {
                    if missing == nil { missing = g }
                    continue
                }
                configured = true
                do throws(CommandError) {
                    try provider.validate(m.notification)
                } catch {
                    var e = error
                    e.details["platform"] = .string(g.platform.rawValue)
                    throw e.inMessage(p.indexed ? j : nil)
                }
            }
        }
        if !configured, let g = missing { throw Self.notConfigured(app: g.app, platform: g.platform) }
    }

    /// The page parts of a `users`/`filter` target or a topic's subscribers (`f`), read again
    /// from the registry's groups when a stored job starts; with `reachableOnly`, none unless a
    /// group has a configured provider (a `topic` fans out only then).
    func pageParts(_ f: DeviceFilter, reachableOnly: Bool = false) async throws(CommandError) -> [DeviceFilter] {
        let groups = try await sortedGroups(f)
        if reachableOnly && !groups.contains(where: { providers.provider(app: $0.app, platform: $0.platform) != nil }) { return [] }
        return Self.pageParts(f, groups: groups)
    }
}
