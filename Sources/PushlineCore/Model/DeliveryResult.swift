/// The outcome of one notification to one device, as a provider reports it.
public struct DeliveryResult: Sendable {
    public enum Status: String, Sendable { case sent, failed }

    /// Whom a result is about.
    public enum Target: Sendable, Equatable {
        /// A device: one in the registry (`id` > 0), a `tokens` entry (negative `id`), or a token,
        /// FCM topic or condition not in the registry (`id` nil).
        case device(id: Int64?, platform: Platform, registrationId: String)
        /// A registry id that names no device (`not_registered`): only the id is known, so the
        /// result has no platform and no registration id (rendered as null).
        case unknownId(Int64)
    }

    public var target: Target
    /// SQLiteRegistry id of the device, nil for a device not in the registry (e.g. FCM topic sends).
    public var deviceId: Int64? {
        get {
            switch target {
            case .device(let id, _, _): return id
            case .unknownId(let id): return id
            }
        }
        set {
            switch target {
            case .device(_, let p, let t): target = .device(id: newValue, platform: p, registrationId: t)
            case .unknownId: target = newValue.map { .unknownId($0) } ?? .device(id: nil, platform: .apns, registrationId: "")
            }
        }
    }
    /// The device's platform; `.apns` for an `unknownId` target, which has none (see `target`).
    public var platform: Platform {
        get {
            if case .device(_, let p, _) = target { return p }
            return .apns
        }
        set { target = .device(id: deviceId, platform: newValue, registrationId: registrationId) }
    }
    /// The device's token (or topic, condition); "" for an `unknownId` target, which has none.
    public var registrationId: String {
        get {
            if case .device(_, _, let t) = target { return t }
            return ""
        }
        set { target = .device(id: deviceId, platform: platform, registrationId: newValue) }
    }
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

    /// A result for a device given by its parts. The marker values older code used for an id
    /// that names no device (`registrationId: ""` with `not_registered`) make an `unknownId` target.
    public init(
        deviceId: Int64?, platform: Platform, registrationId: String, status: Status, failure: FailureReason?,
        retryable: Bool = false, deactivate: Bool = false, invalidSince: Int64? = nil, extra: JSONObject = JSONObject()
    ) {
        let target: Target =
            if let id = deviceId, registrationId.isEmpty, failure == .notRegistered { .unknownId(id) } else {
                .device(id: deviceId, platform: platform, registrationId: registrationId)
            }
        self.init(
            target: target, status: status, failure: failure, retryable: retryable, deactivate: deactivate,
            invalidSince: invalidSince, extra: extra)
    }

    public init(
        target: Target, status: Status, failure: FailureReason? = nil, retryable: Bool = false, deactivate: Bool = false,
        invalidSince: Int64? = nil, extra: JSONObject = JSONObject()
    ) {
        self.target = target
        self.status = status
        self.failure = failure
        self.retryable = retryable
        self.deactivate = deactivate
        self.invalidSince = invalidSince
        self.extra = extra
    }

    public static func sent(_ device: Device, extra: JSONObject = JSONObject()) -> DeliveryResult {
        DeliveryResult(target: device.target, status: .sent, extra: extra)
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
            target: device.target, status: .failed, failure: failure, retryable: retryable, deactivate: deactivate,
            invalidSince: invalidSince, extra: extra)
    }

    /// A device whose request got no HTTP answer: the transport's reason and retryability, and
    /// its message (or `message`, e.g. with the token taken out) under `error`.
    public static func transportFailed(_ device: Device, _ e: TransportError, message: String? = nil) -> DeliveryResult {
        .failed(device, .transport(e.protocolReason), retryable: e.retryable, extra: ["error": .string(message ?? e.message)])
    }
}

extension Device {
    /// This device as a result's target.
    var target: DeliveryResult.Target { .device(id: id, platform: platform, registrationId: registrationId) }
}
