// The events feed on SQLite (see EventLog.swift).

extension SQLiteRegistry: EventLog {
    public func events(after: Int64, limit: Int) async throws(CommandError) -> [FeedEvent] {
        try await run(write: false) { s in try s.events(after: after, limit: limit) }
    }

    public func latestEventSeq() async throws(CommandError) -> Int64 {
        try await run(write: false) { s in try s.latestEventSeq() }
    }

    /// Deletes in slices of `EventPruning.slice`, each its own job, so a large
    /// backlog does not hold the database thread in one long transaction.
    public func pruneEvents(before: Int64) async throws(CommandError) -> Int {
        try await EventPruning.run { max throws(CommandError) in
            try await run(write: true) { s in try s.pruneEvents(before: before, max: max) }
        }
    }
}

extension SQLiteRegistryStore {
    /// Events deleted per pruning transaction.
    static let eventPruneSlice = EventPruning.slice

    func events(after: Int64, limit: Int) throws -> [FeedEvent] {
        try db.query(
            "SELECT seq, type, at, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            [.int(after), .int(Int64(max(0, limit)))]
        ) { s throws(DatabaseError) -> FeedEvent in
            let body = s.text(3) ?? "{}"
            let parsed: JSONValue
            do throws(JSONParseError) {
                parsed = try JSONValue.parse(body)
            } catch {
                throw DatabaseError(code: 1, message: "event \(s.int(0)) has a body that is not JSON: \(error)", sql: s.sql)
            }
            guard let fields = parsed.objectValue else {
                throw DatabaseError(code: 1, message: "event \(s.int(0)) has a body that is not a JSON object", sql: s.sql)
            }
            return FeedEvent(seq: s.int(0), type: s.text(1) ?? "", at: s.int(2), fields: fields)
        }
    }

    /// The AUTOINCREMENT high-water mark (`sqlite_sequence`), which pruning does not lower.
    func latestEventSeq() throws -> Int64 {
        let seq = try db.query("SELECT seq FROM sqlite_sequence WHERE name = 'events'") { $0.int(0) }.first
        return seq ?? 0
    }

    func pruneEvents(before: Int64, max: Int) throws -> Int {
        // `events_at` finds the old rows; the oldest are also the lowest seqs.
        try db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE at < ? ORDER BY at LIMIT ?)",
            [.int(before), .int(Int64(max))])
        return db.changes
    }
}
