import Synchronization

/// What both outboxes (`SQLiteOutbox`, `PostgresOutbox`) decide the same way outside their SQL:
/// the `max_queued` admission of an accept, the job an accept answers with, a delivery row's
/// `raw` device and a finished job's event. One place, so the backends cannot drift apart (the
/// storage conformance suite runs both).

/// Notifications without a final result, as last summed from the database (`value`) and when
/// (`at`, Unix ms), plus what accepts admitted since. The sum over live jobs is read at most once
/// a second; accepts in between add to it.
final class OutboxQueuedCount: Sendable {
    private let state = Mutex<(value: Int, at: Int64)>((0, Int64.min / 2))

    init() {}

    /// Admits a job of `spec.estimate` notifications, or refuses it with `busy` (and a
    /// `retry_after_ms` growing with the excess) when `queued + estimate > maxQueued` and
    /// something is queued (a job larger than `max_queued` alone is still accepted). `read` sums
    /// the live jobs in the database; it is called when the last sum is more than a second older
    /// than `spec.createdAt`.
    func admit(_ spec: OutboxJobSpec, maxQueued: Int, read: () throws -> Int) throws {
        try state.withLock { q throws in
            if spec.createdAt - q.at > 1000 || spec.createdAt < q.at {
                q = (try read(), spec.createdAt)
            }
            let queued = q.value
            if queued + spec.estimate > maxQueued && queued > 0 {
                throw CommandError(
                    .busy, "the outbox holds \(queued) notifications, over max_queued \(maxQueued); retry later",
                    details: ["retry_after_ms": .int(Int64(max(1000, min(60_000, (queued + spec.estimate - maxQueued) / 20))))])
            }
            q.value += spec.estimate
        }
    }
}

extension OutboxJob {
    /// The job an accept has just stored: queued, nothing resolved or counted yet.
    init(accepted spec: OutboxJobSpec) {
        self.init(
            id: spec.id, app: spec.app, messages: spec.messages, indexed: spec.indexed, stored: .queued, sendAt: spec.sendAt,
            deadline: spec.deadline, idempotencyKey: spec.idempotencyKey, estimate: spec.estimate, devices: 0, sent: 0,
            failed: 0, canceled: 0, resolved: false, cursor: nil, createdAt: spec.createdAt, startedAt: nil, finishedAt: nil)
    }

    /// The stored text of the job's messages (a JSON array of objects).
    static func messagesText(_ spec: OutboxJobSpec) -> String {
        JSONValue.array(spec.messages.map { .object($0) }).jsonString
    }
}

extension OutboxNewDelivery {
    /// The `raw` column of the delivery row: the device a token target named (not in the
    /// registry), as JSON; nil for a registered device (its row is read at claim time).
    var rawText: String? {
        guard let d = raw else { return nil }
        var o: JSONObject = ["id": .int(d.id), "app": .string(d.app), "platform": .string(d.platform.rawValue),
                             "registration_id": .string(d.registrationId)]
        if let k = d.p256dh { o["p256dh"] = .string(k) }
        if let k = d.auth { o["auth"] = .string(k) }
        return JSONValue.object(o).jsonString
    }

    /// The `result` column of a row refused at resolution (final, `failed`), nil otherwise.
    var rejectedText: String? { rejected.map { JSONValue.object($0).jsonString } }
}

extension PushEvent {
    /// The `job_done` event of a job whose counts were just made final.
    static func jobDone(_ id: String, at now: Int64, devices: Int64, sent: Int64, failed: Int64, canceled: Int64) -> PushEvent {
        PushEvent(.jobDone, at: now, [
            "job": .string(id), "devices": .int(devices), "sent": .int(sent), "failed": .int(failed), "canceled": .int(canceled),
        ])
    }
}
