/// A registered device, as stored in the registry and shown by `devices`.
///
/// Field names follow django-push-notifications. Timestamps are Unix milliseconds.
public struct Device: Sendable, Equatable {
    public var id: Int64
    public var platform: Platform
    public var app: String
    public var registrationId: String
    public var name: String?
    public var user: String?
    public var deviceId: String?
    public var active: Bool
    public var createdAt: Int64
    public var updatedAt: Int64
    /// WebPush only: the subscription's public key (base64url, 65-byte P-256 point).
    public var p256dh: String?
    /// WebPush only: the subscription's auth secret (base64url, 16 bytes).
    public var auth: String?
    /// WebPush only: the browser name, informative.
    public var browser: String?
    /// Why the device went inactive (a provider's reason or "unregistered by client"), if it did.
    public var inactiveReason: String?
    /// When the device went inactive (Unix ms), if it did.
    public var inactiveAt: Int64?
    /// The outbox delivery (its number in the job) this device is addressed for: set by the
    /// outbox worker on the copy it hands to the providers, never stored. With the
    /// notification's `outboxJob` it makes the delivery's APNs `apns-id`.
    public var outboxDelivery: Int64? = nil

    public init(
        id: Int64, platform: Platform, app: String, registrationId: String, name: String? = nil, user: String? = nil,
        deviceId: String? = nil, active: Bool = true, createdAt: Int64 = 0, updatedAt: Int64 = 0, p256dh: String? = nil,
        auth: String? = nil, browser: String? = nil, inactiveReason: String? = nil, inactiveAt: Int64? = nil
    ) {
        self.id = id
        self.platform = platform
        self.app = app
        self.registrationId = registrationId
        self.name = name
        self.user = user
        self.deviceId = deviceId
        self.active = active
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.p256dh = p256dh
        self.auth = auth
        self.browser = browser
        self.inactiveReason = inactiveReason
        self.inactiveAt = inactiveAt
    }
}
