import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `"async": true` on `send`/`bulk` (issue 13; protocol.md "Asynchronous sends"): the request is
/// planned and checked as a synchronous one would be, then stored in the outbox; the answer
/// comes after COMMIT. `job`, `jobs` and `cancel` read and steer what was stored.
extension Dispatcher {
    /// Keys of an async request that are not part of the stored message.
    static let asyncKeys: Set<String> = ["cmd", "async", "send_at", "idempotency_key", "results"]

    func acceptAsync(_ a: inout Arguments, bulk: Bool) async throws(CommandError) -> JSONObject {
        guard let outbox else { throw CommandError(.unavailable, "this daemon has no outbox", details: ["retry_after_ms": 1000]) }
        guard let isAsync = try a.bool("async") else { throw .invalid("async", "expected true or false") }
        guard isAsync else {
            // `"async": false` is a synchronous send.
            var o = a.object
            o["async"] = nil
            var rest = Arguments(o)
            return try await withResultsMode(&rest) { (r: inout Arguments) async throws(CommandError) in try await send(&r, bulk: bulk) }
        }
        let now = nowMillis()
        var sendAt = now
        if let v = a.value("send_at") {
            guard let s = v.intValue, case .int = v, s >= 0, s < 100_000_000_000 else {
                throw .invalid("send_at", "expected Unix seconds (an integer), got \(v.typeName)")
            }
            sendAt = max(now, s * 1000)
        }
        let key = try a.string("idempotency_key")
        if let key {
            guard !key.isEmpty, key.utf8.count <= 255 else { throw .invalid("idempotency_key", "must be 1 to 255 bytes") }
        }
        if let r = try a.string("results"), !["all", "failed", "none"].contains(r) {
            throw .invalid("results", "expected one of \"all\", \"failed\", \"none\", got \"\(r.prefix(40))\"")
        }
        // The stored messages are the request as sent, without the async keys; the worker parses
        // them again with the same code.
        var messages: [JSONObject] = []
        var jobs: [PlannedMessage] = []
        var indexed = false
        if bulk, a.has("messages") {
            guard let list = try a.list("messages", max: 10_000) else { throw .invalid("messages", "is required") }
            try a.finish()
            guard !list.isEmpty else { throw .invalid("messages", "must not be empty") }
            for (i, m) in list.enumerated() {
                guard let o = m.objectValue else { throw .invalid("messages[\(i)]", "expected an object, got \(m.typeName)") }
                var ma = Arguments(o, prefix: "messages[\(i)]")
                jobs.append(try parseJob(&ma))
                messages.append(o)
            }
            indexed = true
        } else {
            jobs.append(try parseJob(&a))
            var o = a.object
            for k in Self.asyncKeys { o[k] = nil }
            messages.append(o)
        }
        var estimate = 0
        var apps: Set<String> = []
        var deadline: Int64 = 0
        for (i, j) in jobs.enumerated() {
            do throws(CommandError) {
                let (count, app) = try await planAsync(j)
                estimate += count
                if let app { apps.insert(app) }
            } catch {
                var e = error
                if indexed {
                    e.details["message"] = .int(Int64(i))
                    e.details["message_index"] = .int(Int64(i))
                }
                throw e
            }
            deadline = max(deadline, Self.deadline(j.notification, sendAt: sendAt, maxDelay: config.maxDeliveryDelay))
        }
        let spec = OutboxJobSpec(
            id: Self.newJobId(), app: apps.count == 1 ? apps.first ?? "" : "", messages: messages, indexed: indexed,
            sendAt: sendAt, deadline: deadline, idempotencyKey: key, estimate: estimate, createdAt: now)
        let accepted: (job: OutboxJob, duplicate: Bool)
        do throws(CommandError) {
            accepted = try await outbox.store.accept(spec, maxQueued: config.maxQueued, idempotencyWindowMs: 86_400_000)
        } catch {
            throw Self.storageError(error, doing: "queue the job")
        }
        if !accepted.duplicate { outbox.wake() }
        var o: JSONObject = ["job": ["id": .string(accepted.job.id), "state": .string(accepted.job.state(now: nowMillis()).rawValue)]]
        if accepted.duplicate { o["duplicate"] = true }
        return o
    }

    /// A database failure (full disk, I/O error, closed) becomes `unavailable` (retryable).
    static func storageError(_ e: CommandError, doing what: String) -> CommandError {
        guard e.code == .internalError || e.code == .shuttingDown else { return e }
        return CommandError(.unavailable, "could not \(what): \(e.message)", details: ["retry_after_ms": 1000])
    }

    /// Checks one message as a synchronous send would (provider configured, notification valid
    /// for every configured (app, platform) it reaches); returns how many notifications it
    /// holds (for `max_queued`) and its app if there is one.
    func planAsync(_ j: PlannedMessage) async throws(CommandError) -> (Int, String?) {
        switch j.target {
        case .tokens(let app, let platform, let tokens):
            guard providers.provider(app: app, platform: platform) != nil else { throw Self.notConfigured(app: app, platform: platform) }
            try validate(j.notification, groups: [(app, platform)])
            return (tokens.count, app)
        case .raw(let app, let platform, let devices):
            guard providers.provider(app: app, platform: platform) != nil else { throw Self.notConfigured(app: app, platform: platform) }
            try validate(j.notification, groups: [(app, platform)])
            return (devices.count, app)
        case .ids(let ids):
            var f = DeviceFilter()
            f.ids = ids
            f.active = true
            let groups = try await checkedGroups(j.notification, f)
            return (ids.count, groups.count == 1 ? groups.first?.app : nil)
        case .users(let users, let app, let platform):
            var f = DeviceFilter()
            f.active = true
            f.users = users
            f.app = app
            f.platform = platform
            return (try await checkGroups(j.notification, f), app)
        case .filter(let app, let platform, let user):
            var f = DeviceFilter()
            f.active = true
            f.app = app
            f.platform = platform
            f.user = user
            return (try await checkGroups(j.notification, f), app)
        }
    }

    /// When an async notification stops being worth sending (Unix ms): its `expiration`, else
    /// `send_at` + `time_to_live`, else `send_at` + `max_delivery_delay`.
    static func deadline(_ n: PushNotification, sendAt: Int64, maxDelay: Int64) -> Int64 {
        if let e = n.expiration, e > 0 { return e * 1000 }
        if let t = n.timeToLive { return sendAt + t * 1000 }
        return sendAt + maxDelay * 1000
    }

    /// 16 random bytes in hex (job ids are not guessable from one another).
    static func newJobId() -> String {
        var g = SystemRandomNumberGenerator()
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for _ in 0..<16 {
            let b = UInt8.random(in: 0...255, using: &g)
            out.append(hex[Int(b >> 4)])
            out.append(hex[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    func requireOutbox() throws(CommandError) -> OutboxContext {
        guard let outbox else { throw CommandError(.unavailable, "this daemon has no outbox", details: ["retry_after_ms": 1000]) }
        return outbox
    }

    func jobId(_ a: inout Arguments) throws(CommandError) -> String {
        guard let id = try a.string("job") else { throw .invalid("job", "is required (a job id)") }
        guard !id.isEmpty, id.utf8.count <= 64 else { throw .invalid("job", "is not a job id") }
        return id
    }

    func jobCommand(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        let outbox = try requireOutbox()
        let id = try jobId(&a)
        let withResults = try a.bool("results") ?? false
        let after = try a.int("after", range: -1...Int64.max) ?? -1
        let limit = Int(try a.int("limit", range: 1...1000) ?? 1000)
        try a.finish()
        guard let job = try await outbox.store.job(id) else { throw CommandError(.notFound, "no job '\(id)'", details: ["job": .string(id)]) }
        var o: JSONObject = ["job": .object(job.json(now: nowMillis()))]
        if withResults {
            let rows = try await outbox.store.results(job: id, after: after, limit: limit + 1)
            var list: [JSONValue] = []
            for r in rows.prefix(limit) {
                var x = r.result ?? JSONObject()
                if r.state == "pending" || r.state == "canceled" { x["status"] = .string(r.state) }
                x["attempts"] = .int(Int64(r.attempts))
                x["n"] = .int(r.n)
                list.append(.object(x))
            }
            o["results"] = .array(list)
            o["next"] = rows.count > limit ? rows.prefix(limit).last.map { .int($0.n) } ?? .null : .null
        }
        return o
    }

    func jobsCommand(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        let outbox = try requireOutbox()
        var state: OutboxJobState?
        if let s = try a.string("state") {
            guard let st = OutboxJobState(rawValue: s) else {
                throw .invalid("state", "expected one of \(OutboxJobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            state = st
        }
        let app = try a.app()
        let after = try a.string("after")
        let limit = Int(try a.int("limit", range: 1...1000) ?? 100)
        try a.finish()
        let list = try await outbox.store.jobs(state: state, app: app, after: after, limit: limit + 1)
        let now = nowMillis()
        return [
            "jobs": .array(list.prefix(limit).map { .object($0.json(now: now)) }),
            "next": list.count > limit ? list.prefix(limit).last.map { .string($0.id) } ?? .null : .null,
        ]
    }

    func cancelCommand(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        let outbox = try requireOutbox()
        let id = try jobId(&a)
        try a.finish()
        let job: OutboxJob?
        do throws(CommandError) { job = try await outbox.store.cancel(job: id, now: nowMillis()) } catch {
            throw Self.storageError(error, doing: "cancel the job")
        }
        guard let job else { throw CommandError(.notFound, "no job '\(id)'", details: ["job": .string(id)]) }
        return ["job": .object(job.json(now: nowMillis()))]
    }
}
