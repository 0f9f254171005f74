/// The outcome of one notification to one device, as a provider reports it.
public struct DeliveryResult: Sendable {
    public enum Status: String, Sendable { case sent, failed }

    /// Registry id of the device, nil for a device not in the registry (e.g. FCM topic sends).
    public var deviceId: Int64?
    public var platform: Platform
    public var registrationId: String
    public var status: Status
    /// Why it failed (nil when sent): a provider's reason verbatim under its class, a transport
    /// failure, or one of Pushline's own.
    public var failure: FailureReason?
    /// The protocol's `reason` on failure (Apple's `reason`, Google's error status, a transport
    /// error...): `failure.wire`. Setting a string reads it back with `FailureReason(wire:)`.
    public var reason: String? {
        get { failure?.wire }
        set { failure = newValue.map { FailureReason(wire: $0) } }
    }
    /// The protocol's `reason_class`: `invalid_token` for a device the daemon deactivates (or
    /// would), else the class of `failure`.
    public var reasonClass: ReasonClass {
        deactivate ? .invalidToken : failure?.reasonClass(retryable: retryable) ?? .unknown
    }
    /// Whether trying again later may succeed.
    public var retryable: Bool
    /// The provider says the device is gone for good: the dispatcher marks it inactive.
    public var deactivate: Bool
    /// When the provider says the device became invalid (Unix ms; Apple's 410 `timestamp`), if it says.
    public var invalidSince: Int64?
    /// Provider-specific members for the result entry (`apns_id`, `message_id`, `wns_status`...).
    public var extra: JSONObject

    /// A result whose reason is a wire string (read with `FailureReason(wire:)`).
    public init(
        deviceId: Int64?, platform: Platform, registrationId: String, status: Status, reason: String? = nil,
        retryable: Bool = false, deactivate: Bool = false, invalidSince: Int64? = nil, extra: JSONObject = JSONObject()
    ) {
        self.init(
            deviceId: deviceId, platform: platform, registrationId: registrationId, status: status,
            failure: reason.map { FailureReason(wire: $0) }, retryable: retryable, deactivate: deactivate,
            invalidSince: invalidSince, extra: extra)
    }

    public init(
        deviceId: Int64?, platform: Platform, registrationId: String, status: Status, failure: FailureReason?,
        retryable: Bool = false, deactivate: Bool = false, invalidSince: Int64? = nil, extra: JSONObject = JSONObject()
    ) {
        self.deviceId = deviceId
        self.platform = platform
        self.registrationId = registrationId
        self.status = status
        self.failure = failure
        self.retryable = retryable
        self.deactivate = deactivate
        self.invalidSince = invalidSince
        self.extra = extra
    }

    public static func sent(_ device: Device, extra: JSONObject = JSONObject()) -> DeliveryResult {
        DeliveryResult(deviceId: device.id, platform: device.platform, registrationId: device.registrationId, status: .sent, extra: extra)
    }

    /// A failed result whose reason is a wire string (read with `FailureReason(wire:)`).
    public static func failed(
        _ device: Device, reason: String, retryable: Bool = false, deactivate: Bool = false, invalidSince: Int64? = nil,
        extra: JSONObject = JSONObject()
    ) -> DeliveryResult {
        .failed(
            device, FailureReason(wire: reason), retryable: retryable, deactivate: deactivate, invalidSince: invalidSince,
            extra: extra)
    }

    public static func failed(
        _ device: Device, _ failure: FailureReason, retryable: Bool = false, deactivate: Bool = false,
        invalidSince: Int64? = nil, extra: JSONObject = JSONObject()
    ) -> DeliveryResult {
        DeliveryResult(
            deviceId: device.id, platform: device.platform, registrationId: device.registrationId, status: .failed,
            failure: failure, retryable: retryable, deactivate: deactivate, invalidSince: invalidSince, extra: extra)
    }

    /// A device whose request got no HTTP answer: the transport's reason and retryability, and
    /// its message (or `message`, e.g. with the token taken out) under `error`.
    public static func transportFailed(_ device: Device, _ e: TransportError, message: String? = nil) -> DeliveryResult {
        .failed(device, .transport(e.protocolReason), retryable: e.retryable, extra: ["error": .string(message ?? e.message)])
    }
}
