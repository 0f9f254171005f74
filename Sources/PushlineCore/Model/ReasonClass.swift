/// The class of a failed result's `reason` (protocol.md section 4, "Reason classes"): a closed
/// set a client can program against, where `reason` itself is the provider's open set of strings.
///
/// ```swift
/// ReasonClass.of(reason: "BadDeviceToken", deactivate: true, retryable: false) // .invalidToken
/// ReasonClass.of(reason: "timeout", deactivate: false, retryable: true)        // .transport
/// ```
public enum ReasonClass: String, Sendable, CaseIterable {
    /// The provider says the token is invalid or gone (the device is, or would be, deactivated).
    case invalidToken = "invalid_token"
    /// The target is not in the registry, or is inactive there (Pushline's `not_registered`, `inactive`).
    case notRegistered = "not_registered"
    /// The provider throttles: slow down and retry later.
    case rateLimited = "rate_limited"
    /// The provider failed on its side (5xx, unavailable, internal): retry later.
    case providerError = "provider_error"
    /// No HTTP answer: timeout, connection lost, TLS or connect failure.
    case transport = "transport"
    /// The provider refused the daemon's credentials (APNs provider token, FCM OAuth, WNS token, VAPID).
    case auth = "auth"
    /// The notification was refused as malformed or too large for this device.
    case badRequest = "bad_request"
    /// The app or platform is not set up for this device (no credentials, wrong topic/bundle).
    case configuration = "configuration"
    /// Anything else.
    case unknown = "unknown"

    static let invalidTokenReasons: Set<String> = [
        "BadDeviceToken", "Unregistered", "ExpiredToken", "DeviceTokenNotForTopic", "UNREGISTERED",
        "SENDER_ID_MISMATCH", "not_found", "gone", "channel_expired", "invalid_channel_uri",
    ]
    static let rateLimitedReasons: Set<String> = [
        "TooManyRequests", "TooManyProviderTokenUpdates", "QUOTA_EXCEEDED", "too_many_requests", "throttled",
        "channelthrottled",
    ]
    static let providerErrorReasons: Set<String> = [
        "InternalServerError", "ServiceUnavailable", "Shutdown", "UNAVAILABLE", "INTERNAL", "dropped",
    ]
    static let transportReasons: Set<String> = ["timeout", "connection_lost", "tls_error", "connect_error"]
    static let authReasons: Set<String> = [
        "InvalidProviderToken", "ExpiredProviderToken", "MissingProviderToken", "Forbidden", "BadCertificate",
        "BadCertificateEnvironment", "THIRD_PARTY_AUTH_ERROR", "AUTH_ERROR", "PERMISSION_DENIED", "unauthorized",
        "forbidden",
    ]
    static let configurationReasons: Set<String> = [
        "provider_not_configured", "TopicDisallowed", "BadTopic", "MissingTopic", "InvalidPushType",
    ]
    static let badRequestReasons: Set<String> = [
        "PayloadTooLarge", "PayloadEmpty", "BadCollapseId", "BadExpirationDate", "BadMessageId", "BadPriority",
        "BadPath", "MethodNotAllowed", "DuplicateHeaders", "BadDate", "MissingDeviceToken", "INVALID_ARGUMENT",
        "payload_too_large", "bad_request", "encryption_failed",
    ]

    /// Classifies a failed result. A result the daemon deactivates (or would, `still_active`) is
    /// `invalid_token` whatever its reason; otherwise the reason's first word decides (`bad_request: ...`),
    /// then HTTP statuses (`http_503`, `HTTP 500`), then retryability.
    public static func of(reason: String, deactivate: Bool, retryable: Bool) -> ReasonClass {
        if deactivate { return .invalidToken }
        if reason == "not_registered" || reason == "inactive" { return .notRegistered }
        let head = reason.split(separator: ":", maxSplits: 1).first.map { String($0) } ?? reason
        if transportReasons.contains(head) { return .transport }
        if invalidTokenReasons.contains(head) || head == "invalid_subscription" { return .invalidToken }
        if rateLimitedReasons.contains(head) { return .rateLimited }
        if providerErrorReasons.contains(head) { return .providerError }
        if authReasons.contains(head) || head == "token_error" || head.hasPrefix("cannot sign") { return .auth }
        if configurationReasons.contains(head) { return .configuration }
        if badRequestReasons.contains(head) { return .badRequest }
        if let status = httpStatus(head) {
            switch status {
            case 429: return .rateLimited
            case 401, 403: return .auth
            case 404, 410: return .invalidToken
            case 400, 413: return .badRequest
            case 500...599: return .providerError
            default: return retryable ? .providerError : .unknown
            }
        }
        return .unknown
    }

    /// `http_503` or `HTTP 503` → 503.
    static func httpStatus(_ s: String) -> Int? {
        for prefix in ["http_", "HTTP "] where s.hasPrefix(prefix) {
            return Int(s.dropFirst(prefix.count).prefix(3))
        }
        return nil
    }
}
