/// The durable outbox (issue 13): jobs accepted by `"async": true` requests and their
/// per-device deliveries, claimed by workers under a lease and completed under a fencing token.
///
/// One protocol, one implementation per storage backend: `SQLiteOutbox` (in the registry's
/// database, on its thread, group-committed) here; a PostgreSQL one implements the same calls
/// with `INSERT ... ON CONFLICT` for idempotency keys and `FOR UPDATE SKIP LOCKED` claims.
/// Every call is one transaction; an answer comes after COMMIT.
///
/// Lifecycle of a job: accepted (`queued`, shown `scheduled` before `send_at`), started when
/// a worker resolves its target chunk by chunk into delivery rows (`running`), `done` when it
/// is fully resolved and no delivery is pending, or `canceled`. A delivery is `pending` until a
/// final result (`sent`, `failed`) or `canceled`; a claim leases pending rows (owner, expiry)
/// and bumps each row's `fence`; a completion applies only where the fence is unchanged.
public protocol Outbox: Sendable {
    /// Stores a new job, or returns the live job of the same (app, idempotency key) accepted
    /// within `idempotencyWindowMs` (then `duplicate` is true and nothing is stored).
    /// Refuses with `busy` (`retry_after_ms`) when `queued + spec.estimate > maxQueued`.
    func accept(_ spec: OutboxJobSpec, maxQueued: Int, idempotencyWindowMs: Int64) async throws(CommandError) -> (job: OutboxJob, duplicate: Bool)

    /// Jobs due (`send_at <= now`) whose target is not fully resolved yet, oldest first.
    func startable(now: Int64, limit: Int) async throws(CommandError) -> [OutboxJob]

    /// Adds the next resolved chunk of a job's target and where resolution resumes (`cursor`,
    /// nil when the target is exhausted), in one transaction. False if the job is no longer
    /// live (canceled): nothing is added. Marks the job running (and done if nothing is pending).
    func appendDeliveries(job: String, _ rows: [OutboxNewDelivery], cursor: String?, now: Int64) async throws(CommandError) -> Bool

    /// Leases up to `perJob` due pending deliveries of each of up to `maxJobs` jobs, at most
    /// `maxRows` in all (the jobs served least recently first, so a small job is never stuck
    /// behind a large one).
    /// Jobs whose ids are in `excluding` are left out (the worker's extra claim on a wake-up
    /// takes only jobs it is not already delivering).
    func claim(owner: String, now: Int64, leaseMs: Int64, perJob: Int, maxJobs: Int, maxRows: Int, excluding: Set<String>) async throws(CommandError) -> [OutboxClaim]

    /// Applies results where the fence still matches (a stale worker's results are dropped);
    /// updates the job's counts, finishes it (with a `job_done` event) when nothing is pending.
    /// Returns how many outcomes applied.
    func complete(job: String, _ outcomes: [OutboxOutcome], now: Int64) async throws(CommandError) -> Int

    /// Cancels a live job: pending deliveries become `canceled`, a `job_canceled` event is
    /// written. A finished job is returned as it is; nil if unknown.
    func cancel(job: String, now: Int64) async throws(CommandError) -> OutboxJob?

    func job(_ id: String) async throws(CommandError) -> OutboxJob?
    /// Final (and pending) results of a job in delivery order, after `after` (a delivery index).
    func results(job: String, after: Int64, limit: Int) async throws(CommandError) -> [OutboxResultRow]
    /// Jobs, newest first, filtered; `after` is a job id from a previous page.
    func jobs(state: OutboxJobState?, app: String?, after: String?, limit: Int) async throws(CommandError) -> [OutboxJob]

    /// Makes every lease not held by `owner` claimable now (SQLite: one daemon per file, so a
    /// starting daemon owns everything; PostgreSQL waits for leases to expire instead).
    func recover(owner: String, now: Int64) async throws(CommandError) -> Int
    /// Deletes jobs (and their deliveries) finished before `before`.
    func prune(finishedBefore before: Int64) async throws(CommandError) -> Int
    /// Notifications accepted and not yet final, and when the oldest live job was accepted.
    func depth() async throws(CommandError) -> OutboxDepth
    /// The earliest time something becomes due (a `send_at`, a retry's `next_at`), if any.
    func nextDue() async throws(CommandError) -> Int64?
    /// Whether a wake-up of the worker adds a batch of any job (up to twice the usual number on
    /// the wire), not only of jobs not on the wire (`OutboxWorker.claimLimit`).
    var wakeUpsAddBatches: Bool { get }
}

extension Outbox {
    /// SQLite: no (see `OutboxWorker.claimLimit`).
    public var wakeUpsAddBatches: Bool { false }

    /// A claim over every job.
    public func claim(owner: String, now: Int64, leaseMs: Int64, perJob: Int, maxJobs: Int, maxRows: Int) async throws(CommandError) -> [OutboxClaim] {
        try await claim(owner: owner, now: now, leaseMs: leaseMs, perJob: perJob, maxJobs: maxJobs, maxRows: maxRows, excluding: [])
    }
}

public enum OutboxJobState: String, Sendable, CaseIterable {
    case scheduled, queued, running, done, canceled
}

/// What an accept stores.
public struct OutboxJobSpec: Sendable {
    public var id: String
    /// The request's app (idempotency keys are per app; "" when the target names none).
    public var app: String
    /// The request's messages, each a target and its notification fields, as the client sent them.
    public var messages: [JSONObject]
    /// Whether the results carry `message` indexes (a `bulk` with `messages`).
    public var indexed: Bool
    public var sendAt: Int64
    public var deadline: Int64
    public var idempotencyKey: String?
    /// Notifications the job is expected to hold (the planner's count), for `max_queued`.
    public var estimate: Int
    public var createdAt: Int64
}

public struct OutboxJob: Sendable {
    public var id: String
    public var app: String
    public var messages: [JSONObject]
    public var indexed: Bool
    public var stored: OutboxJobState
    public var sendAt: Int64
    public var deadline: Int64
    public var idempotencyKey: String?
    public var estimate: Int
    public var devices: Int
    public var sent: Int
    public var failed: Int
    public var canceled: Int
    /// The target is fully resolved into deliveries.
    public var resolved: Bool
    /// Where resolution resumes (the worker's own format), nil before it starts.
    public var cursor: String?
    public var createdAt: Int64
    public var startedAt: Int64?
    public var finishedAt: Int64?

    /// The state shown to clients at `now`.
    public func state(now: Int64) -> OutboxJobState {
        if stored == .queued && sendAt > now { return .scheduled }
        return stored
    }

    /// Devices without a final result (before resolution ends: the planner's estimate counts).
    public var pending: Int {
        max(0, (resolved ? devices : max(devices, estimate)) - sent - failed - canceled)
    }

    public func json(now: Int64) -> JSONObject {
        var o: JSONObject = [
            "id": .string(id), "state": .string(state(now: now).rawValue),
            "devices": .int(Int64(resolved ? devices : max(devices, estimate))),
            "sent": .int(Int64(sent)), "failed": .int(Int64(failed)), "pending": .int(Int64(pending)), "canceled": .int(Int64(canceled)),
            "created_at": .string(formatTimestamp(createdAt)),
            "started_at": startedAt.map { .string(formatTimestamp($0)) } ?? .null,
            "finished_at": finishedAt.map { .string(formatTimestamp($0)) } ?? .null,
            "send_at": .int(sendAt / 1000),
            "deadline": .int(deadline / 1000),
        ]
        o["app"] = app.isEmpty ? .null : .string(app)
        if let k = idempotencyKey { o["idempotency_key"] = .string(k) }
        return o
    }
}

/// A delivery row made when a job's target is resolved.
public struct OutboxNewDelivery: Sendable {
    public var message: Int?
    /// A registry device (read again when claimed), or a device the app named by token.
    public var deviceId: Int64?
    /// Devices not in the registry (`tokens` targets): stored as they are.
    public var raw: Device?
    /// A target refused at resolution (unknown id, inactive): its final result.
    public var rejected: JSONObject?
    public init(message: Int?, deviceId: Int64?, raw: Device?, rejected: JSONObject?) {
        self.message = message
        self.deviceId = deviceId
        self.raw = raw
        self.rejected = rejected
    }
}

/// Leased deliveries of one job.
public struct OutboxClaim: Sendable {
    public var job: OutboxJob
    public var deliveries: [OutboxDelivery]
}

public struct OutboxDelivery: Sendable {
    public var n: Int64
    public var message: Int?
    /// The device to send to; nil when its registry row is gone (then it fails `not_registered`).
    public var device: Device?
    public var deviceId: Int64?
    /// Attempts made before this one.
    public var attempts: Int
    /// The fencing token of this claim.
    public var fence: Int64
}

public struct OutboxOutcome: Sendable {
    public enum Kind: Sendable, Equatable {
        case sent, failed
        /// Transient failure: pending again from `nextAt`.
        case retry(nextAt: Int64)
    }
    public var n: Int64
    public var fence: Int64
    public var kind: Kind
    /// The result as `job` shows it (with `attempts`), as JSON text: its own bytes, or its
    /// slice of the buffer the worker writes a batch's results into (no object, and no
    /// allocation, per delivery).
    public var json: ArraySlice<UInt8>
    public init(n: Int64, fence: Int64, kind: Kind, result: JSONObject) {
        self.init(n: n, fence: fence, kind: kind, json: ArraySlice(JSONValue.object(result).serialized()))
    }
    public init(n: Int64, fence: Int64, kind: Kind, json: ArraySlice<UInt8>) {
        self.n = n
        self.fence = fence
        self.kind = kind
        self.json = json
    }
}

public struct OutboxResultRow: Sendable {
    public var n: Int64
    public var state: String
    public var attempts: Int
    public var result: JSONObject?
}

public struct OutboxDepth: Sendable {
    public var queued: Int
    public var oldestQueuedAt: Int64?
    public var liveJobs: Int
}
