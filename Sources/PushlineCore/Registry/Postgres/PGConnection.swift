import CPostgres
import CPushlineShims

#if canImport(Glibc)
import Glibc
#endif

/// A failed libpq call: what was being done, PostgreSQL's SQLSTATE (nil for a connection-level
/// failure) and its primary message only. SQL text never carries values (they are always
/// parameters), and the DETAIL line (which quotes keys, i.e. tokens) is never read, so this is
/// safe to show. Never contains the connection string (which may hold a password).
struct PGError: Error, CustomStringConvertible {
    var context: String
    var sqlstate: String?
    var message: String
    var constraint: String?
    var column: String?
    /// The connection is gone (or was never made): a new one may succeed.
    var connectionLost: Bool

    /// A deadlock or a serialization failure: the transaction was rolled back and may simply be run again.
    var isTransient: Bool { sqlstate == "40001" || sqlstate == "40P01" }

    var description: String {
        "postgresql \(sqlstate.map { "error \($0)" } ?? "connection failure"): \(message) (in: \(context))"
    }

    /// SQLSTATE classes (PostgreSQL documentation, appendix A "Error Codes").
    var failure: RegistryFailure {
        if connectionLost { return .unavailable(description, retryAfterMs: PostgresRegistry.retryAfterMs) }
        guard let s = sqlstate else { return .other(description) }
        switch s {
        // serialization failure, deadlock, lock_timeout, statement_timeout: the client may retry
        case "40001", "40P01", "55P03", "57014": return .busy(description)
        case "57P01", "57P02", "57P03": return .unavailable(description, retryAfterMs: PostgresRegistry.retryAfterMs)  // shutdown, cannot connect now
        default: break
        }
        switch s.prefix(2) {
        case "08": return .unavailable(description, retryAfterMs: PostgresRegistry.retryAfterMs)  // connection exception
        case "23":  // integrity constraint violation
            let field = column ?? constraint.map { $0 == "devices_token" ? "registration_id" : $0 }
            return .constraint(field: field, description)
        case "53", "58": return .io(description)  // insufficient resources, system error (disk full, I/O)
        default: return .other(description)
        }
    }
}

/// One PostgreSQL connection (libpq `PGconn`): prepared statements cached by SQL text.
///
/// Not Sendable: confined to the pool thread that made it; `deinit` closes it (`PQfinish`).
/// Every result is checked; a failure throws a `PGError` with the SQL it ran.
///
/// ```swift
/// let c = try PGConnection(conninfo: "postgresql:///pushline?host=/run/postgresql")
/// let r = try c.query("SELECT value FROM kv WHERE key = $1", [.text("a")])
/// r.text(0, 0)
/// ```
final class PGConnection {
    private let conn: OpaquePointer
    private var prepared: [String: String] = [:]

    /// Connects (blocking, at most `connect_timeout` if the conninfo sets one). The error never
    /// includes `conninfo` (libpq's messages name host and port, never the password).
    init(conninfo: String) throws(PGError) {
        // Defaults first, then the URI (`expand_dbname`): what the URI sets wins. A dead host is
        // given up after 5 s, a silent TCP peer noticed in about 25 s (keepalives), so no
        // command waits for the operating system's two-hour defaults.
        let keys = ["connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count", "application_name", "dbname"]
        let vals = ["5", "10", "5", "3", "pushline", conninfo]
        let ck = keys.map { strdup($0) }
        let cv = vals.map { strdup($0) }
        defer {
            for p in ck { free(p) }
            for p in cv { free(p) }
        }
        let kp: [UnsafePointer<CChar>?] = ck.map { $0.map { UnsafePointer($0) } } + [nil]
        let vp: [UnsafePointer<CChar>?] = cv.map { $0.map { UnsafePointer($0) } } + [nil]
        guard let c = PQconnectdbParams(kp, vp, 1) else {
            throw PGError(context: "connect", sqlstate: nil, message: "out of memory", connectionLost: true)
        }
        guard PQstatus(c) == CONNECTION_OK else {
            let msg = Self.trim(String(cString: PQerrorMessage(c)))
            PQfinish(c)
            throw PGError(context: "connect", sqlstate: nil, message: msg, connectionLost: true)
        }
        conn = c
        pl_pq_silence_notices(c)
        // A statement stuck behind a lock fails (and the client hears it) instead of hanging.
        try exec("SET lock_timeout = '10s'; SET statement_timeout = '120s'")
    }

    deinit { PQfinish(conn) }

    /// Whether the connection is still usable (libpq noticed no loss).
    var isOK: Bool { PQstatus(conn) == CONNECTION_OK }

    /// Whether a transaction is open (or failed and not yet rolled back).
    var inTransaction: Bool {
        let s = PQtransactionStatus(conn)
        return s == PQTRANS_INTRANS || s == PQTRANS_INERROR
    }

    /// The connection's socket (for poll(2) while waiting for notifications).
    var socket: Int32 { PQsocket(conn) }

    /// Reads what the server sent (without blocking) and returns the channels of the
    /// notifications received (LISTEN/NOTIFY), in order.
    func notifications() throws(PGError) -> [String] {
        guard PQconsumeInput(conn) == 1 else {
            throw PGError(context: "LISTEN", sqlstate: nil, message: Self.trim(String(cString: PQerrorMessage(conn))),
                          connectionLost: PQstatus(conn) != CONNECTION_OK)
        }
        var out: [String] = []
        while let n = PQnotifies(conn) {
            out.append(String(cString: n.pointee.relname))
            PQfreemem(n)
        }
        return out
    }

    static func trim(_ s: String) -> String {
        var t = Substring(s)
        while let last = t.last, last == "\n" || last == " " { t = t.dropLast() }
        return t.replacingNewlines()
    }

    /// Runs SQL without parameters, possibly several statements (migrations, BEGIN/COMMIT).
    func exec(_ sql: String) throws(PGError) {
        let r = try check(PQexec(conn, sql), sql)
        _ = r
    }

    /// Runs one statement with parameters (prepared once per connection) and returns its rows.
    @discardableResult
    func query(_ sql: String, _ params: [SQLValue] = []) throws(PGError) -> PGResult {
        let name: String
        if let n = prepared[sql] {
            name = n
        } else {
            name = "s\(prepared.count + 1)"
            _ = try check(PQprepare(conn, name, sql, Int32(params.count), nil), sql)
            prepared[sql] = name
        }
        // Text parameters: C strings that live until PQexecPrepared returns.
        let cstrings: [UnsafeMutablePointer<CChar>?] = params.map { v in
            switch v {
            case .null: return nil
            case .int(let i): return strdup(String(i))
            case .text(let s): return strdup(s)
            }
        }
        defer { for p in cstrings { free(p) } }
        let values: [UnsafePointer<CChar>?] = cstrings.map { $0.map { UnsafePointer($0) } }
        let res = params.isEmpty
            ? PQexecPrepared(conn, name, 0, nil, nil, nil, 0)
            : PQexecPrepared(conn, name, Int32(params.count), values, nil, nil, 0)
        return try check(res, sql)
    }

    /// Turns a result into a `PGResult`, or throws what went wrong (the result is freed).
    private func check(_ res: OpaquePointer?, _ sql: String) throws(PGError) -> PGResult {
        guard let res else {
            throw PGError(context: sql, sqlstate: nil, message: Self.trim(String(cString: PQerrorMessage(conn))),
                          connectionLost: PQstatus(conn) != CONNECTION_OK)
        }
        let r = PGResult(res)
        let st = PQresultStatus(res)
        if st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY { return r }
        let state = pl_pq_sqlstate(res).map { String(cString: $0) }
        let primary = pl_pq_primary_message(res).map { String(cString: $0) } ?? Self.trim(String(cString: PQerrorMessage(conn)))
        throw PGError(
            context: sql, sqlstate: state, message: primary,
            constraint: pl_pq_constraint_name(res).map { String(cString: $0) },
            column: pl_pq_column_name(res).map { String(cString: $0) },
            connectionLost: PQstatus(conn) != CONNECTION_OK)
    }

    // MARK: array parameters (text form, PostgreSQL's array input syntax)

    static func array(_ ints: [Int64]) -> SQLValue { .text("{" + ints.map(String.init).joined(separator: ",") + "}") }
    static func array(_ bools: [Bool]) -> SQLValue { .text("{" + bools.map { $0 ? "t" : "f" }.joined(separator: ",") + "}") }
    /// A column of a multi-array `unnest` in FROM: as `array`, but `{}` when every element is nil.
    /// `unnest(a, b, ...)` pads the shorter arrays with NULLs (PostgreSQL manual 9.19, "Array
    /// Functions"), so an empty array reads as a column of NULLs, and PostgreSQL parses two bytes
    /// instead of 20,000 `NULL`s (a register batch has five such columns when only tokens are given).
    static func column(_ strings: [String?]) -> SQLValue {
        strings.contains { $0 != nil } ? array(strings) : .text("{}")
    }
    static func column(_ ints: [Int64?]) -> SQLValue {
        guard ints.contains(where: { $0 != nil }) else { return .text("{}") }
        return .text("{" + ints.map { $0.map(String.init) ?? "NULL" }.joined(separator: ",") + "}")
    }
    /// Each element double-quoted, `\` and `"` escaped; nil is NULL. Built as UTF-8 bytes (a
    /// 20,000-token batch is about 1.5 MB; appending scalars to a String cost 5% of a register).
    static func array(_ strings: [String?]) -> SQLValue {
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(strings.reduce(2) { $0 + ($1?.utf8.count ?? 4) + 3 })
        for (i, s) in strings.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            guard let s else { out.append(contentsOf: "NULL".utf8); continue }
            out.append(UInt8(ascii: "\""))
            for b in s.utf8 {
                if b == UInt8(ascii: "\\") || b == UInt8(ascii: "\"") { out.append(UInt8(ascii: "\\")) }
                out.append(b)
            }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        return .text(String(decoding: out, as: UTF8.self))
    }
}

/// One libpq result, freed (`PQclear`) in deinit; values read as text.
final class PGResult {
    let res: OpaquePointer
    init(_ res: OpaquePointer) { self.res = res }
    deinit { PQclear(res) }

    var rows: Int { Int(PQntuples(res)) }
    func isNull(_ row: Int, _ col: Int) -> Bool { PQgetisnull(res, Int32(row), Int32(col)) != 0 }
    func text(_ row: Int, _ col: Int) -> String? {
        if isNull(row, col) { return nil }
        return String(cString: PQgetvalue(res, Int32(row), Int32(col)))
    }
    func int(_ row: Int, _ col: Int) -> Int64 { optionalInt(row, col) ?? 0 }
    func optionalInt(_ row: Int, _ col: Int) -> Int64? {
        if isNull(row, col) { return nil }
        // Parsed from the C string directly (no String allocation per value).
        return strtoll(PQgetvalue(res, Int32(row), Int32(col)), nil, 10)
    }
    func bool(_ row: Int, _ col: Int) -> Bool {
        if isNull(row, col) { return false }
        return PQgetvalue(res, Int32(row), Int32(col)).pointee == CChar(UInt8(ascii: "t"))
    }
    /// Whether the value is not NULL and equal to `s` (compared in place, no String made).
    func equals(_ row: Int, _ col: Int, _ s: String) -> Bool {
        if isNull(row, col) { return false }
        let v = PQgetvalue(res, Int32(row), Int32(col))
        var s = s
        let n = Int(PQgetlength(res, Int32(row), Int32(col)))
        return s.withUTF8 { u in
            guard n == u.count else { return false }
            guard n > 0 else { return true }
            guard let v, let b = u.baseAddress else { return false }
            return memcmp(v, b, n) == 0
        }
    }
    /// The number of rows an UPDATE/DELETE/INSERT touched.
    var affected: Int { Int(String(cString: PQcmdTuples(res))) ?? 0 }
}

extension Substring {
    fileprivate func replacingNewlines() -> String { String(self.map { $0 == "\n" ? " " : $0 }) }
}
