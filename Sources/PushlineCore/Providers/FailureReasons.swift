/// Reading a wire `reason` back into a `FailureReason`: Pushline's own reasons and HTTP
/// statuses (Model/), then each provider's codes (APNs, FCM, WebPush/WNS). Providers build
/// their results' failures directly; this serves results made from a string
/// (`DeliveryResult.failed(_:reason:)`) and `ReasonClass.of(reason:...)`.
extension FailureReason {
    /// ```swift
    /// FailureReason(wire: "Unregistered")      // .invalidToken("Unregistered")
    /// FailureReason(wire: "timeout")           // .transport("timeout")
    /// FailureReason(wire: "NewAppleReason")    // .unknown("NewAppleReason")
    /// ```
    public init(wire: String) {
        self =
            FailureReason.common(wire) ?? APNsError.failure(parsing: wire) ?? FCMReasons.failure(parsing: wire)
            ?? WebWNS.failure(parsing: wire) ?? .unknown(wire)
    }
}

extension ReasonClass {
    /// Classifies a failed result from its wire reason. A result the daemon deactivates (or
    /// would, `still_active`) is `invalid_token` whatever its reason; otherwise the reason's
    /// first word decides (`bad_request: ...`), then HTTP statuses (`http_503`, `HTTP 500`),
    /// then retryability. The same as `DeliveryResult.reasonClass` of a result with that reason.
    ///
    /// ```swift
    /// ReasonClass.of(reason: "BadDeviceToken", deactivate: true, retryable: false) // .invalidToken
    /// ReasonClass.of(reason: "timeout", deactivate: false, retryable: true)        // .transport
    /// ```
    public static func of(reason: String, deactivate: Bool, retryable: Bool) -> ReasonClass {
        deactivate ? .invalidToken : FailureReason(wire: reason).reasonClass(retryable: retryable)
    }
}
