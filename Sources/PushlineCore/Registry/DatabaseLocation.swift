import CPostgres
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Where the registry lives, from the config's `database`: a `postgresql://` (or `postgres://`)
/// URI in libpq's syntax (host, port, dbname, user, sslmode, a Unix-socket directory as `host`;
/// the password from the URI, `PGPASSWORD` or `~/.pgpass`), or an SQLite path (`sqlite:PATH`, or
/// any other string).
///
/// ```swift
/// try DatabaseLocation("postgresql://app:secret@db.internal/pushline")  // .postgres(...)
/// DatabaseLocation.redact("postgresql://app:secret@db/p")              // "postgresql://app:***@db/p"
/// try DatabaseLocation("/var/lib/pushline/pushline.db")                 // .sqlite(...)
/// ```
public enum DatabaseLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(conninfo: String)

    /// Parses `database`; a PostgreSQL URI is checked by libpq's own parser (`PQconninfoParse`),
    /// whose message names what is wrong (and never echoes a password).
    public init(_ database: String) throws(ConfigError) {
        if database.hasPrefix("postgresql://") || database.hasPrefix("postgres://") {
            var err: UnsafeMutablePointer<CChar>?
            guard let opts = PQconninfoParse(database, &err) else {
                let msg = err.map { String(cString: $0) } ?? "out of memory"
                if let err { PQfreemem(err) }
                throw ConfigError("database", "not a valid PostgreSQL URI: \(msg.split(separator: "\n").first.map(String.init) ?? msg)")
            }
            PQconninfoFree(opts)
            self = .postgres(conninfo: database)
        } else if database.hasPrefix("sqlite:") {
            let path = String(database.dropFirst("sqlite:".count))
            guard !path.isEmpty else { throw ConfigError("database", "sqlite: needs a path (sqlite:/var/lib/pushline/pushline.db)") }
            self = .sqlite(path: path)
        } else {
            guard !database.isEmpty else { throw ConfigError("database", "expected an SQLite path or a postgresql:// URI") }
            self = .sqlite(path: database)
        }
    }

    /// The location as logs and `check-config` may show it: a URI's password (in the user part or
    /// a `password=` parameter) replaced by `***`.
    public static func redact(_ database: String) -> String {
        guard let scheme = database.range(of: "://") else { return database }
        var s = database
        let afterScheme = scheme.upperBound
        let authorityEnd = s[afterScheme...].firstIndex(where: { $0 == "/" || $0 == "?" }) ?? s.endIndex
        if let at = s[afterScheme..<authorityEnd].lastIndex(of: "@"),
           let colon = s[afterScheme..<at].firstIndex(of: ":")
        {
            s.replaceSubrange(s.index(after: colon)..<at, with: "***")
        }
        if let q = s.firstIndex(of: "?") {
            let params = s[s.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false).map { p -> String in
                p.lowercased().hasPrefix("password=") ? "password=***" : String(p)
            }
            s = String(s[...q]) + params.joined(separator: "&")
        }
        return s
    }

    public var description: String {
        switch self {
        case .sqlite(let path): return path
        case .postgres(let c): return Self.redact(c)
        }
    }

    /// The SQLite file, if that is the backend (its directory is created by `serve`).
    public var sqlitePath: String? {
        if case .sqlite(let p) = self { return p }
        return nil
    }

    /// Opens the registry this location names.
    /// `pollMs`: PostgreSQL only, how often the feed and the outbox are looked at when no
    /// NOTIFY arrives (behind PgBouncer in transaction mode none does).
    public func open(poolSize: Int, pollMs: Int = 1000, logger: Logger?) throws(CommandError) -> any DeviceRegistry {
        switch self {
        case .sqlite(let path): return try SQLiteRegistry(path: path, logger: logger)
        case .postgres(let conninfo): return try PostgresRegistry(conninfo: conninfo, poolSize: poolSize, pollMs: pollMs, logger: logger)
        }
    }
}
