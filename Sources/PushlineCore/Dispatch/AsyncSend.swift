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

    /// `topic`: the stored message is the request (without the async keys) with `"cmd": "topic"`;
    /// the worker resolves it to Google's topic message (one delivery, if the app has FCM) and
    /// the registry's subscribers (see `OutboxWorker.resolveChunk`).
    func acceptAsync(_ a: inout Arguments, bulk: Bool, topic isTopic: Bool = false) async throws(CommandError) -> JSONObject {
        guard let outbox else { throw CommandError(.unavailable, "this daemon has no outbox", details: ["retry_after_ms": 1000]) }
        guard let isAsync = try a.bool("async") else { throw .invalid("async", "expected true or false") }
        guard isAsync else {
            // `"async": false` is a synchronous send.
            var o = a.object
            o["async"] = nil
            var rest = Arguments(o)
            if isTopic { return try await topic(&rest) }
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
        // `topic` takes no `results` (refused as a synchronous topic refuses it).
        if isTopic, a.has("results") { throw .invalid("results", "unknown argument 'results'") }
        if let r = try a.string("results"), !["all", "failed", "none"].contains(r) {
            throw .invalid("results", "expected one of \"all\", \"failed\", \"none\", got \"\(r.prefix(40))\"")
        }
        // Planned and checked as a synchronous send is; the stored messages are the request as
        // sent, without the async keys (the worker parses them again with the same code).
        let plan = try await plan(&a, isTopic ? .topic : bulk ? .bulk : .send, sync: false)
        var messages = plan.sources
        if !plan.indexed {
            for k in Self.asyncKeys { messages[0][k] = nil }
            if isTopic { messages[0]["cmd"] = "topic" }
        }
        let apps = Set(plan.messages.indices.compactMap { plan.app($0) })
        let deadline = plan.messages.reduce(Int64(0)) { max($0, Self.deadline($1.notification, sendAt: sendAt, maxDelay: config.maxDeliveryDelay)) }
        let (indexed, estimate) = (plan.indexed, plan.estimate)
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

    /// Whether a stored message is an async `topic` request.
    static func isTopicMessage(_ m: JSONObject) -> Bool { m["cmd"] == .string("topic") }

    /// A database failure (full disk, I/O error, closed) becomes `unavailable` (retryable).
    static func storageError(_ e: CommandError, doing what: String) -> CommandError {
        guard e.code == .internalError || e.code == .shuttingDown else { return e }
        return CommandError(.unavailable, "could not \(what): \(e.message)", details: ["retry_after_ms": 1000])
    }

    /// When an async notification stops being worth sending (Unix ms): its `expiration`, else
    /// `send_at` + `time_to_live`, else `send_at` + `max_delivery_delay`.
    static func deadline(_ n: PushNotification, sendAt: Int64, maxDelay: Int64) -> Int64 {
        if let e = n.expiration, e > 0 { return e * 1000 }
        if let t = n.timeToLive { return sendAt + t * 1000 }
        return sendAt + maxDelay * 1000
    }

    /// A job id: 32 hex digits, the creation time in Unix milliseconds (12 digits) then 10
    /// random bytes (20 digits; 80 bits, so ids are not guessable from one another).
    ///
    /// The time prefix makes new ids sort after older ones, so inserting a job writes the
    /// right edge of the `id` index instead of a random page of it: with 16 random bytes,
    /// 40,000 async single sends wrote 3.6 WAL pages an accept (a group commit of ~400
    /// accepts dirtied ~250 of the index's 441 leaf pages).
    static func newJobId(now: Int64 = nowMillis()) -> String {
        var g = SystemRandomNumberGenerator()
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(32)
        let t = UInt64(max(0, min(now, 0xFFFF_FFFF_FFFF)))
        for i in stride(from: 44, through: 0, by: -4) { out.append(hex[Int((t >> UInt64(i)) & 15)]) }
        // Two reads of the system generator (a getrandom call each), not one per byte.
        let (r1, r2) = (g.next(), g.next())
        for i in stride(from: 60, through: 0, by: -4) { out.append(hex[Int((r1 >> UInt64(i)) & 15)]) }
        for i in stride(from: 12, through: 0, by: -4) { out.append(hex[Int((r2 >> UInt64(i)) & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// 8 random hex digits (a worker's owner name: the random part of a job id).
    static func randomTag() -> String { String(newJobId().suffix(8)) }

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
                if r.state == "pending" || r.state == "canceled" || x["status"] == nil { x["status"] = .string(r.state) }
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
