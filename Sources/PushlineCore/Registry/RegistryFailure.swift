/// A storage failure, whatever the backend: SQLite's result codes and PostgreSQL's SQLSTATEs
/// are mapped into these cases inside each implementation, so nothing else sees a raw code.
///
/// ```swift
/// throw RegistryFailure.unavailable("cannot connect to PostgreSQL", retryAfterMs: 1000)
/// RegistryFailure.busy("database is locked").commandError.code   // .busy
/// ```
public enum RegistryFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// Another writer holds a lock, or the transaction lost a serialization race: retry.
    case busy(String)
    /// A constraint refused a write; `field` names the column when the backend says it.
    case constraint(field: String?, String)
    /// The storage failed reading or writing (disk full, I/O error, read-only, corrupt).
    case io(String)
    /// The database cannot be reached (connection refused or lost); retry after the delay.
    case unavailable(String, retryAfterMs: Int)
    /// The schema is not one this build can use (written by a newer Pushline, a failed migration).
    case schema(String)
    /// Anything else the backend reported (a bug, a misuse): not retryable.
    case other(String)

    public var description: String {
        switch self {
        case .busy(let m): return "database busy: \(m)"
        case .constraint(let f, let m): return "constraint failed\(f.map { " on '\($0)'" } ?? ""): \(m)"
        case .io(let m): return "database I/O error: \(m)"
        case .unavailable(let m, let ms): return "database unavailable: \(m) (retry in \(ms) ms)"
        case .schema(let m): return "database schema: \(m)"
        case .other(let m): return "database error: \(m)"
        }
    }

    /// Whether the same request may succeed if retried later.
    public var isRetryable: Bool {
        switch self {
        case .busy, .unavailable: return true
        default: return false
        }
    }

    /// The protocol error a client gets: `busy` and `unavailable` carry `retry_after_ms`; a
    /// unique constraint on the token (a race between two daemons on one database) is
    /// `duplicate_registration`; the rest `internal_error`.
    public var commandError: CommandError {
        switch self {
        case .busy:
            return CommandError(.busy, description, details: ["retry_after_ms": .int(100)])
        case .unavailable(_, let ms):
            return CommandError(.unavailable, description, details: ["retry_after_ms": .int(Int64(ms))])
        case .constraint(let field, _) where field == "registration_id":
            return CommandError(.duplicateRegistration, description, details: ["field": .string("registration_id")])
        default:
            return CommandError(.internalError, description)
        }
    }
}
