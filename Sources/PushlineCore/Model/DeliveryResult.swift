/// The outcome of one notification to one device, as a provider reports it.
public struct DeliveryResult: Sendable {
    public enum Status: String, Sendable { case sent, failed }

    /// SQLiteRegistry id of the device, nil for a device not in the registry (e.g. FCM topic sends).
    public var deviceId: Int64?
    public var platform: Platform
    public var registrationId: String
    public var status: Status
    /// The provider's reason on failure (Apple's `reason`, Google's error status, a transport error...).
    public var reason: String?
    /// Whether trying again later may succeed.
    public var retryable: Bool
    /// The provider says the device is gone for good: the dispatcher marks it inactive.
    public var deactivate: Bool
    /// When the provider says the device became invalid (Unix ms; Apple's 410 `timestamp`), if it says.
    public var invalidSince: Int64?
    /// Provider-specific members for the result entry (`apns_id`, `message_id`, `wns_status`...).
    public var extra: JSONObject

    public init(
        deviceId: Int64?, platform: Platform, registrationId: String, status: Status, reason: String? = nil,
        retryable: Bool = false, deactivate: Bool = false, invalidSince: Int64? = nil, extra: JSONObject = JSONObject()
    ) {
        self.deviceId = deviceId
        self.platform = platform
        self.registrationId = registrationId
        self.status = status
        self.reason = reason
        self.retryable = retryable
        self.deactivate = deactivate
        self.invalidSince = invalidSince
        self.extra = extra
    }

    public static func sent(_ device: Device, extra: JSONObject = JSONObject()) -> DeliveryResult {
        DeliveryResult(deviceId: device.id, platform: device.platform, registrationId: device.registrationId, status: .sent, extra: extra)
    }

    public static func failed(
        _ device: Device, reason: String, retryable: Bool = false, deactivate: Bool = false, invalidSince: Int64? = nil,
        extra: JSONObject = JSONObject()
    ) -> DeliveryResult {
        DeliveryResult(
            deviceId: device.id, platform: device.platform, registrationId: device.registrationId, status: .failed,
            reason: reason, retryable: retryable, deactivate: deactivate, invalidSince: invalidSince, extra: extra)
    }

    /// A device whose request got no HTTP answer: the transport's reason and retryability, and
    /// its message (or `message`, e.g. with the token taken out) under `error`.
    public static func transportFailed(_ device: Device, _ e: TransportError, message: String? = nil) -> DeliveryResult {
        .failed(device, reason: e.protocolReason, retryable: e.retryable, extra: ["error": .string(message ?? e.message)])
    }
}
