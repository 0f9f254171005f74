/// Why a notification to one device failed: Pushline's own reasons by name, and a provider's
/// reason kept verbatim (its code, and any explanation after ": ") under the class the provider
/// gives it. The protocol's `reason` is `wire`, unchanged; its `reason_class` is derived from the
/// case (`reasonClass`), not from the text.
///
/// Model/ knows no provider's codes: each provider maps its own (`APNsError.failure`,
/// `FCMReasons.failure`, `WebWNS.failure`); `FailureReason(wire:)` (Providers/FailureReasons.swift)
/// reads a wire string back, asking every provider.
///
/// ```swift
/// let r = FailureReason.invalidToken("Unregistered")
/// r.wire          // "Unregistered"
/// r.reasonClass   // .invalidToken
/// FailureReason.unknown("SomethingNew").reasonClass   // .unknown
/// ```
public enum FailureReason: Sendable, Hashable, CustomStringConvertible {
    /// `not_registered`: the target is not in the registry.
    case notRegistered
    /// `inactive`: the device is in the registry but inactive.
    case inactive
    /// `provider_not_configured`: the device's app has no block for its platform.
    case providerNotConfigured
    /// No HTTP answer: `timeout`, `connection_lost`, `tls_error`, `connect_error`
    /// (`TransportError.protocolReason`), verbatim.
    case transport(String)
    /// A failure inside Pushline (`internal: no result`, `provider returned no result`), verbatim.
    case internalError(String)
    /// The provider says the token is invalid or gone (`Unregistered`, `UNREGISTERED`, `gone`...).
    case invalidToken(String)
    /// The provider throttles (`TooManyRequests`, `QUOTA_EXCEEDED`, `too_many_requests`...).
    case rateLimited(String)
    /// The provider failed on its side (`InternalServerError`, `UNAVAILABLE`, `http_503`...).
    case providerError(String)
    /// The provider refused the daemon's credentials (`InvalidProviderToken`, `THIRD_PARTY_AUTH_ERROR`...).
    case auth(String)
    /// The app or platform is not set up for this device (`TopicDisallowed`, `BadTopic`...).
    case configuration(String)
    /// The notification was refused as malformed or too large (`PayloadTooLarge`, `INVALID_ARGUMENT`...).
    case badRequest(String)
    /// A reason no provider classifies (one a provider added later), verbatim.
    case unknown(String)

    /// The protocol's `reason` string (protocol.md section 4), as it always was.
    public var wire: String {
        switch self {
        case .notRegistered: return "not_registered"
        case .inactive: return "inactive"
        case .providerNotConfigured: return "provider_not_configured"
        case .transport(let s), .internalError(let s), .invalidToken(let s), .rateLimited(let s), .providerError(let s), .auth(let s),
            .configuration(let s), .badRequest(let s), .unknown(let s):
            return s
        }
    }

    public var description: String { wire }

    /// The reason's class (protocol.md section 4, "Reason classes"). A result the daemon
    /// deactivates is `invalid_token` whatever its reason: see `DeliveryResult.reasonClass`.
    /// `retryable` decides an unclassified HTTP status (`http_418`): provider error or unknown.
    public func reasonClass(retryable: Bool = false) -> ReasonClass {
        switch self {
        case .notRegistered, .inactive: return .notRegistered
        case .providerNotConfigured: return .configuration
        case .transport: return .transport
        case .invalidToken: return .invalidToken
        case .rateLimited: return .rateLimited
        case .providerError: return .providerError
        case .auth: return .auth
        case .configuration: return .configuration
        case .badRequest: return .badRequest
        case .internalError(let s), .unknown(let s):
            return retryable && ReasonClass.httpStatus(Self.head(s)) != nil ? .providerError : .unknown
        }
    }

    /// `wire` under `reasonClass` (a provider's mapping): the case of that class, or nil for the
    /// classes only Pushline's own reasons have (`not_registered`, `transport`).
    public static func classified(_ c: ReasonClass, _ wire: String) -> FailureReason? {
        switch c {
        case .invalidToken: return .invalidToken(wire)
        case .rateLimited: return .rateLimited(wire)
        case .providerError: return .providerError(wire)
        case .auth: return .auth(wire)
        case .configuration: return .configuration(wire)
        case .badRequest: return .badRequest(wire)
        case .unknown: return .unknown(wire)
        case .notRegistered, .transport: return nil
        }
    }

    /// Pushline's own reasons and HTTP statuses, which mean the same for every provider; nil for
    /// anything else (a provider's code).
    public static func common(_ wire: String) -> FailureReason? {
        switch wire {
        case "not_registered": return .notRegistered
        case "inactive": return .inactive
        case "provider_not_configured": return .providerNotConfigured
        default: break
        }
        let h = head(wire)
        if transportReasons.contains(h) { return .transport(wire) }
        if h == "provider_not_configured" { return .configuration(wire) }
        if h == "internal" || wire == "provider returned no result" { return .internalError(wire) }
        if h == "payload_too_large" { return .badRequest(wire) }
        if let status = ReasonClass.httpStatus(h) {
            switch status {
            case 429: return .rateLimited(wire)
            case 401, 403: return .auth(wire)
            case 404, 410: return .invalidToken(wire)
            case 400, 413: return .badRequest(wire)
            case 500...599: return .providerError(wire)
            default: return .unknown(wire)
            }
        }
        return nil
    }

    /// What `TransportError.protocolReason` gives: a request that got no HTTP answer.
    static let transportReasons: Set<Substring> = ["timeout", "connection_lost", "tls_error", "connect_error"]

    /// The reason's code: the text before the first ":" (`bad_request: ...` → `bad_request`).
    public static func head(_ wire: String) -> Substring {
        wire.split(separator: ":", maxSplits: 1).first ?? Substring(wire)
    }
}
