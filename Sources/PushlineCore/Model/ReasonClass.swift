/// The class of a failed result's `reason` (protocol.md section 4, "Reason classes"): a closed
/// set a client can program against, where `reason` itself is the provider's open set of strings
/// (`FailureReason`, whose case gives the class).
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

    // Which reasons fall in which class: `FailureReason.reasonClass` (the case decides), each
    // provider's mapping (Providers/), and `ReasonClass.of(reason:...)` for a wire string
    // (Providers/FailureReasons.swift).

    /// `http_503` or `HTTP 503` → 503.
    static func httpStatus<S: StringProtocol>(_ s: S) -> Int? {
        for prefix in ["http_", "HTTP "] where s.hasPrefix(prefix) {
            return Int(s.dropFirst(prefix.count).prefix(3))
        }
        return nil
    }
}
