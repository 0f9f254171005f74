/// The `events` command (issue 13; protocol.md, "events"): the durable feed read by cursor,
/// long-polling up to `wait_ms` when nothing is newer.
extension Dispatcher {
    /// The longest `wait_ms` accepted (a minute): long enough to make polling cheap, short
    /// enough that a reader behind a dead proxy or a restarted daemon notices within a minute.
    public static let eventsMaxWaitMs: Int64 = 60_000
    /// The most events one answer carries (and the default `limit`).
    public static let eventsMaxLimit: Int64 = 1000

    /// The storage's event feed: the registry, when its backend keeps one.
    var eventLog: (any EventLog)? { registry as? any EventLog }

    func events(_ a: inout Arguments) async throws(CommandError) -> JSONObject {
        let after = try a.int("after", range: 0...Int64.max) ?? 0
        let limit = Int(try a.int("limit", range: 1...Self.eventsMaxLimit) ?? Self.eventsMaxLimit)
        let waitMs = try a.int("wait_ms", range: 0...Self.eventsMaxWaitMs) ?? 0
        try a.finish()
        guard let log = eventLog else {
            throw CommandError(.internalError, "this storage backend keeps no events feed")
        }
        let signal = log.eventSignal
        let deadline = ContinuousClock.now + .milliseconds(waitMs)
        var checkedCursor = false
        while true {
            // Read before the query: an event committed after it moves the generation on, and
            // the wait below returns at once (no lost wake-up).
            let seen = signal.generation
            let page = try await log.events(after: after, limit: limit)
            if let last = page.last {
                return ["events": .array(page.map(\.json)), "next": .int(last.seq)]
            }
            if !checkedCursor {
                // A cursor beyond every seq ever given belongs to another database (the file
                // was replaced): waiting on it would hide every new event until seq caught up.
                let latest = try await log.latestEventSeq()
                if after > latest {
                    var e = CommandError.invalid(
                        "after", "\(after) is beyond the newest event ever written (\(latest)): the cursor comes from another database (start again from 0)")
                    e.details["latest"] = .int(latest)
                    throw e
                }
                checkedCursor = true
            }
            // Canceled: the client hung up (the server drops the answer).
            if waitMs == 0 || signal.isClosed || Task.isCancelled || ContinuousClock.now >= deadline {
                return ["events": .array([]), "next": .int(after)]
            }
            await signal.wait(seen: seen, until: deadline)
        }
    }
}
