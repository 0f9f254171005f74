/// A run of a job's pending deliveries stored as one `outbox_chunks` row (issue 13, background
/// rate; see `Migrations.outboxChunks`): the devices `first_n...last_n`, resolved together and
/// never attempted. A chunk holds only deliveries with no result: a completion takes its
/// devices out (sent ones into `outbox_sent_results`, failed and retried ones into
/// `outbox_deliveries` rows) and writes back what is left, so every delivery number of a job
/// is in exactly one of: a chunk (pending, or canceled with the job), a delivery row, or a
/// sent batch of `outbox_sent_results`.
struct SQLiteOutboxChunk {
    /// The chunk's rowid.
    var id: Int64
    var firstN: Int64
    var lastN: Int64
    /// 0 pending, 3 canceled (the delivery states of `outbox_deliveries`).
    var state: Int64
    var nextAt: Int64
    /// Per device (index `n - firstN`): its registry id, nil for a device named by token.
    var ids: [Int64?]
    /// Per device: the index of its message in the job, or nil for all when the job has one.
    var messages: [Int?]?
    /// Per device: the `raw` text of a device named by token (see `OutboxNewDelivery.rawText`).
    var raws: [String?]?

    /// Devices per chunk at resolution: a claim of `OutboxWorker.batch` takes whole chunks, and
    /// one of `OutboxWorker.smallClaim` leaves a chunk of the rest.
    static let size = 250

    static let columns = "id, first_n, last_n, state, next_at, ids, messages, raws"

    /// Reads a chunk from a statement that selected `columns`.
    init(_ s: Statement) {
        id = s.int(0)
        firstN = s.int(1)
        lastN = s.int(2)
        state = s.int(3)
        nextAt = s.int(4)
        ids = Self.decodeInts(s.text(5) ?? "").map { $0 }
        messages = s.text(6).map { Self.decodeInts($0).map { $0.map { Int($0) } } }
        raws = s.text(7).flatMap { (try? JSONValue.parse($0))?.arrayValue?.map(\.stringValue) }
        // A chunk whose lists disagree with its range (not written by this code): its devices
        // keep their numbers; a missing entry reads as a device without a registry row.
        let count = Int(lastN - firstN + 1)
        if ids.count != count { ids = (0..<count).map { $0 < ids.count ? ids[$0] : nil } }
    }

    init(id: Int64, firstN: Int64, state: Int64, nextAt: Int64, ids: [Int64?], messages: [Int?]?, raws: [String?]?) {
        self.id = id
        self.firstN = firstN
        self.lastN = firstN + Int64(ids.count) - 1
        self.state = state
        self.nextAt = nextAt
        self.ids = ids
        self.messages = messages
        self.raws = raws
    }

    func contains(_ n: Int64) -> Bool { n >= firstN && n <= lastN }

    func message(_ n: Int64) -> Int? { messages.flatMap { m in Int(n - firstN) < m.count ? m[Int(n - firstN)] : nil } }
    func deviceId(_ n: Int64) -> Int64? { ids[Int(n - firstN)] }
    func raw(_ n: Int64) -> String? { raws.flatMap { r in Int(n - firstN) < r.count ? r[Int(n - firstN)] : nil } }

    /// The chunks (one per contiguous run) of this chunk's devices not in `taken`.
    func remainder(without taken: Set<Int64>) -> [SQLiteOutboxChunk] {
        var out: [SQLiteOutboxChunk] = []
        var start: Int64?
        func flush(_ end: Int64) {
            guard let s = start else { return }
            let a = Int(s - firstN), b = Int(end - firstN)
            // Entry by entry: a list shorter than the range (not written by this code) reads as nil.
            func part<T>(_ list: [T?]) -> [T?] { (a...b).map { $0 < list.count ? list[$0] : nil } }
            out.append(SQLiteOutboxChunk(
                id: 0, firstN: s, state: state, nextAt: nextAt, ids: part(ids), messages: messages.map(part), raws: raws.map(part)))
            start = nil
        }
        for n in firstN...lastN {
            if taken.contains(n) { flush(n - 1) } else if start == nil { start = n }
        }
        flush(lastN)
        return out
    }

    /// Stores the chunk (a new row).
    func insert(_ db: Database, job: Int64) throws(DatabaseError) {
        try db.execute(
            "INSERT INTO outbox_chunks (job, first_n, last_n, state, next_at, ids, messages, raws) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [.int(job), .int(firstN), .int(lastN), .int(state), .int(nextAt), .text(Self.encodeInts(ids)),
             .from(messages.map { Self.encodeInts($0.map { $0.map { Int64($0) } }) }),
             .from(raws.map { r in JSONValue.array(r.map { $0.map { .string($0) } ?? .null }).jsonString })])
    }

    /// `1,2,,4`: a comma-separated list, an empty entry for nil.
    static func encodeInts(_ list: [Int64?]) -> String {
        var s = ""
        s.reserveCapacity(list.count * 8)
        for (k, v) in list.enumerated() {
            if k > 0 { s.append(",") }
            if let v { s.append(String(v)) }
        }
        return s
    }

    static func decodeInts(_ text: String) -> [Int64?] {
        var out: [Int64?] = []
        var value: Int64 = 0
        var digits = false
        var negative = false
        for b in text.utf8 {
            switch b {
            case UInt8(ascii: ","):
                out.append(digits ? (negative ? -value : value) : nil)
                value = 0
                digits = false
                negative = false
            case UInt8(ascii: "-"):
                negative = true
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                value = value &* 10 &+ Int64(b - UInt8(ascii: "0"))
                digits = true
            default:
                break
            }
        }
        if !text.isEmpty { out.append(digits ? (negative ? -value : value) : nil) }
        return out
    }

    /// The chunk of `job` holding delivery `n`, if any.
    static func containing(_ db: Database, job: Int64, n: Int64) throws(DatabaseError) -> SQLiteOutboxChunk? {
        try db.query(
            "SELECT \(columns) FROM outbox_chunks WHERE job = ? AND first_n <= ? ORDER BY first_n DESC LIMIT 1", [.int(job), .int(n)]
        ) { SQLiteOutboxChunk($0) }.first.flatMap { $0.contains(n) ? $0 : nil }
    }
}
