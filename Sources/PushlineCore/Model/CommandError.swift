/// An error answered to a client: a code from protocol.md's closed list and a message for a human.
///
/// Messages never carry a full device token, key or secret.
///
/// ```swift
/// throw CommandError(.invalidArgument, "field 'platform': expected one of apns, fcm, webpush, wns")
/// ```
public struct CommandError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The closed list of protocol error codes (protocol.md, "Error codes").
    public enum Code: String, Sendable, CaseIterable {
        case badJSON = "bad_json"
        case lineTooLong = "line_too_long"
        case unknownCommand = "unknown_command"
        case invalidArgument = "invalid_argument"
        case notFound = "not_found"
        case duplicateRegistration = "duplicate_registration"
        case providerNotConfigured = "provider_not_configured"
        case payloadTooLarge = "payload_too_large"
        case busy = "busy"
        case forbidden = "forbidden"
        case shuttingDown = "shutting_down"
        /// The database cannot be reached (PostgreSQL down or restarting) or could not take a write
        /// (full disk, I/O error at an async accept): retry after `retry_after_ms`.
        case unavailable = "unavailable"
        case providerError = "provider_error"
        case internalError = "internal_error"
    }

    public var code: Code
    public var message: String
    /// Extra members of the error object (e.g. `retry_after_ms` for `busy`, `size`/`limit` for `payload_too_large`).
    public var details: JSONObject
    /// Members of the failure response beside `error` (empty for nearly every error): a send
    /// that failed part way carries what it did there (`sent`, `failed`, `results`, `not_attempted`).
    public var reply: JSONObject = JSONObject()

    public init(_ code: Code, _ message: String, details: JSONObject = JSONObject()) {
        self.code = code
        self.message = message
        self.details = details
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// The `error` member of a response.
    public var json: JSONValue {
        var o: JSONObject = ["code": .string(code.rawValue), "message": .string(message)]
        for (k, v) in details.pairs { o[k] = v }
        return .object(o)
    }

    public static func invalid(_ field: String, _ why: String) -> CommandError {
        CommandError(.invalidArgument, "field '\(field)': \(why)", details: ["field": .string(field)])
    }
}
