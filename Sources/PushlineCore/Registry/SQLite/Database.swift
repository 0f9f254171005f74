import CPushlineShims
import CSQLite

/// A failed SQLite call: the result code, `sqlite3_errmsg`, and the SQL it ran.
///
/// SQL text never contains device tokens (values are always bound), so it is safe to show.
public struct DatabaseError: Error, Sendable, CustomStringConvertible {
    /// The (extended) SQLite result code.
    public var code: Int32
    public var message: String
    public var sql: String?

    public var description: String {
        if let sql { return "sqlite error \(code): \(message) (in: \(sql))" }
        return "sqlite error \(code): \(message)"
    }

    /// The backend-neutral failure: SQLite's primary result code (the low byte of the extended
    /// one) decides the case; the column of a constraint comes from SQLite's message
    /// ("UNIQUE constraint failed: devices.app, devices.platform, devices.registration_id").
    public var failure: RegistryFailure {
        switch code & 0xff {
        case SQLITE_BUSY, SQLITE_LOCKED: return .busy(description)
        case SQLITE_CONSTRAINT:
            let columns = message.split(separator: ":").last.map { $0.split(separator: ",").map { $0.split(separator: ".").last.map(String.init) ?? "" } } ?? []
            let field = columns.last.map { $0.trimmingCharacters(in: " ") }
            return .constraint(field: field.flatMap { $0.isEmpty ? nil : $0 }, description)
        case SQLITE_IOERR, SQLITE_FULL, SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_CANTOPEN, SQLITE_PERM:
            return .io(description)
        default: return .other(description)
        }
    }

    /// The protocol error for a client (see `RegistryFailure.commandError`).
    public var commandError: CommandError { failure.commandError }
}

/// A value bound to a statement parameter.
public enum SQLValue: Sendable, Equatable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByNilLiteral {
    case null
    case int(Int64)
    case text(String)

    public init(stringLiteral v: String) { self = .text(v) }
    public init(integerLiteral v: Int64) { self = .int(v) }
    public init(nilLiteral: ()) { self = .null }

    public static func from(_ s: String?) -> SQLValue { s.map { .text($0) } ?? .null }
    public static func from(_ i: Int64?) -> SQLValue { i.map { .int($0) } ?? .null }
    public static func from(_ b: Bool) -> SQLValue { .int(b ? 1 : 0) }
}

/// One SQLite connection (GRDB style): prepared statements cached by SQL text.
///
/// Not Sendable: the handle is confined to the thread that uses it (the
/// registry's database thread). `deinit` finalizes the cached statements and
/// closes the connection.
///
/// ```swift
/// let db = try Database(path: "/tmp/x.db")
/// try db.execute("INSERT INTO kv(key, value) VALUES (?, ?)", ["a", "b"])
/// let v = try db.query("SELECT value FROM kv WHERE key = ?", ["a"]) { $0.text(0) }
/// ```
public final class Database {
    let handle: OpaquePointer
    private var cache: [String: Statement] = [:]
    public let path: String

    /// Opens (creating if needed) the database at `path` with WAL, synchronous=NORMAL,
    /// busy_timeout 5000 ms and foreign keys on.
    ///
    /// `readOnly` opens an existing file without changing it (no WAL switch, no pragmas): how
    /// `import-dpn` reads a Django database.
    public init(path: String, readOnly: Bool = false) throws(DatabaseError) {
        self.path = path
        Self.configureOnce
        var db: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            // sqlite3_open_v2 allocates a handle even on failure; it must be closed.
            if let db { sqlite3_close_v2(db) }
            throw DatabaseError(code: rc, message: "cannot open database '\(path)': \(msg)", sql: nil)
        }
        handle = db
        let erc = sqlite3_extended_result_codes(db, 1)
        guard erc == SQLITE_OK else { throw error(erc, sql: "sqlite3_extended_result_codes") }
        let brc = sqlite3_busy_timeout(db, 5000)
        guard brc == SQLITE_OK else { throw error(brc, sql: "sqlite3_busy_timeout") }
        if readOnly { return }
        let mode = try query("PRAGMA journal_mode = WAL") { $0.text(0) }.first ?? nil
        guard mode?.lowercased() == "wal" else {
            throw DatabaseError(code: SQLITE_ERROR, message: "cannot enable WAL (journal_mode is \(mode ?? "unknown"))", sql: "PRAGMA journal_mode = WAL")
        }
        // 8 MB page cache (default 2 MB): index pages of a few hundred thousand devices
        // stay in memory. Pages are allocated only as they are used. Checkpoint every
        // 4000 pages (WAL up to ~16 MB on disk) so hot index pages are copied back less
        // often: about 7% less CPU per device in batched registers.
        try exec("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -8000; PRAGMA wal_autocheckpoint = 4000;")
    }

    /// Process-wide SQLite settings, applied before the first connection opens.
    /// The result is ignored: SQLITE_MISUSE only means SQLite was already initialised
    /// (by another library), and then the default (memory statistics on) stays.
    private static let configureOnce: Void = { _ = pl_sqlite3_disable_memstatus() }()

    deinit {
        // Statements must be finalized before the connection; close_v2 also defers
        // the close until any statement still alive is finalized. Its result is not
        // actionable in deinit: with close_v2 it is SQLITE_OK for a valid handle.
        cache.removeAll()
        sqlite3_close_v2(handle)
    }

    /// The error for result code `rc`, with `sqlite3_errmsg` and the SQL.
    func error(_ rc: Int32, sql: String?) -> DatabaseError {
        DatabaseError(code: rc, message: String(cString: sqlite3_errmsg(handle)), sql: sql)
    }

    /// Runs one or more SQL statements without parameters (`sqlite3_exec`).
    public func exec(_ sql: String) throws(DatabaseError) {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &err)
        guard rc == SQLITE_OK else {
            let msg = err.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(err)
            throw DatabaseError(code: rc, message: msg, sql: sql)
        }
    }

    /// The cached prepared statement for `sql`, prepared on first use.
    public func statement(_ sql: String) throws(DatabaseError) -> Statement {
        if let s = cache[sql] { return s }
        let s = try Statement(db: self, sql: sql)
        cache[sql] = s
        return s
    }

    /// How many times SQLite prepared the cached statements again by itself
    /// (`SQLITE_STMTSTATUS_REPREPARE`: a schema change, or a bound value the planner looked at,
    /// which makes every new binding a parse). Tests check the hot queries stay at zero.
    public var reprepares: Int {
        cache.values.reduce(0) { $0 + Int(sqlite3_stmt_status($1.handle, SQLITE_STMTSTATUS_REPREPARE, 0)) }
    }

    /// Runs a statement that returns no rows (or whose rows are ignored).
    public func execute(_ sql: String, _ args: [SQLValue] = []) throws(DatabaseError) {
        let s = try statement(sql)
        try s.bind(args)
        defer { s.reset() }
        while try s.step() {}
    }

    /// Runs a query and maps each row.
    public func query<T>(_ sql: String, _ args: [SQLValue] = [], _ row: (Statement) throws(DatabaseError) -> T) throws(DatabaseError) -> [T] {
        let s = try statement(sql)
        try s.bind(args)
        defer { s.reset() }
        var out: [T] = []
        while try s.step() { out.append(try row(s)) }
        return out
    }

    /// Rows changed by the last INSERT/UPDATE/DELETE.
    /// SQLite's message for the last failed call on this connection (`sqlite3_errmsg`).
    public var lastErrorMessage: String { String(cString: sqlite3_errmsg(handle)) }

    public var changes: Int { Int(sqlite3_changes(handle)) }
    /// The rowid of the last INSERT.
    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }
    /// Whether a transaction is open.
    public var inTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }

    /// Pages this connection fetched from its page cache (hits and misses) since the last call:
    /// how much of the file its statements read (a test's measure of a query's reach).
    func takePageFetches() -> Int {
        var total = 0
        for op in [SQLITE_DBSTATUS_CACHE_HIT, SQLITE_DBSTATUS_CACHE_MISS] {
            var current: Int32 = 0
            var highwater: Int32 = 0
            if sqlite3_db_status(handle, op, &current, &highwater, 1) == SQLITE_OK { total += Int(current) }
        }
        return total
    }

    /// Runs `body` in `BEGIN IMMEDIATE ... COMMIT`, rolling back if it throws.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let r = try body()
            try execute("COMMIT")
            return r
        } catch {
            if inTransaction { try? execute("ROLLBACK") }
            throw error
        }
    }

    /// `PRAGMA user_version`.
    public var userVersion: Int {
        get throws(DatabaseError) { Int(try query("PRAGMA user_version") { $0.int(0) }.first ?? 0) }
    }
}

/// A prepared statement owned by a `Database` (which caches it by SQL text).
///
/// Not Sendable; used only on its database's thread.
public final class Statement {
    let handle: OpaquePointer
    let db: OpaquePointer
    public let sql: String

    init(db database: Database, sql: String) throws(DatabaseError) {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(database.handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else {
            throw rc == SQLITE_OK
                ? DatabaseError(code: SQLITE_MISUSE, message: "empty statement", sql: sql)
                : database.error(rc, sql: sql)
        }
        handle = stmt
        db = database.handle
        self.sql = sql
    }

    // sqlite3_finalize only repeats the last step's error, already reported by step().
    deinit { sqlite3_finalize(handle) }

    func fail(_ rc: Int32) -> DatabaseError {
        DatabaseError(code: rc, message: String(cString: sqlite3_errmsg(db)), sql: sql)
    }

    /// Binds `args` to parameters 1...n.
    public func bind(_ args: [SQLValue]) throws(DatabaseError) {
        let n = Int(sqlite3_bind_parameter_count(handle))
        guard n == args.count else {
            throw DatabaseError(code: SQLITE_RANGE, message: "statement has \(n) parameters, \(args.count) given", sql: sql)
        }
        for (i, a) in args.enumerated() {
            let idx = Int32(i + 1)
            let rc: Int32
            switch a {
            case .null: rc = sqlite3_bind_null(handle, idx)
            case .int(let v): rc = sqlite3_bind_int64(handle, idx, v)
            case .text(let s):
                var s = s
                rc = s.withUTF8 { buf in
                    // A nil pointer would bind NULL, not "": give SQLite a real empty string.
                    guard let base = buf.baseAddress, buf.count > 0 else {
                        return pl_sqlite3_bind_text_transient(handle, idx, "", 0)
                    }
                    return base.withMemoryRebound(to: CChar.self, capacity: buf.count) {
                        pl_sqlite3_bind_text_transient(handle, idx, $0, Int32(buf.count))
                    }
                }
            }
            guard rc == SQLITE_OK else {
                sqlite3_clear_bindings(handle)
                throw fail(rc)
            }
        }
    }

    /// Steps once: true if a row is available, false when done.
    public func step() throws(DatabaseError) -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw fail(rc)
    }

    /// Resets for reuse and clears the bindings (bound copies are freed).
    public func reset() {
        // sqlite3_reset repeats the last step's error, which step() already reported;
        // sqlite3_clear_bindings always returns SQLITE_OK.
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    /// Whether column `col` (0-based) of the current row is NULL.
    public func isNull(_ col: Int32) -> Bool { sqlite3_column_type(handle, col) == SQLITE_NULL }
    /// Column `col` as an integer (0 for NULL).
    public func int(_ col: Int32) -> Int64 { sqlite3_column_int64(handle, col) }
    /// Column `col` as an integer, nil for NULL.
    public func optionalInt(_ col: Int32) -> Int64? { isNull(col) ? nil : int(col) }
    /// Column `col` as text, nil for NULL.
    public func text(_ col: Int32) -> String? {
        guard let p = sqlite3_column_text(handle, col) else { return nil }
        let n = Int(sqlite3_column_bytes(handle, col))
        return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
    }
}
