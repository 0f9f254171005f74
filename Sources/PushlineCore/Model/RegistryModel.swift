/// The registry's value types, shared by every storage backend (`DeviceRegistry`; issue 12).

/// The outcome of registering one device.
public struct RegisterOutcome: Sendable {
    public var device: Device
    /// A new row was inserted.
    public var created: Bool
    /// An existing row (same app, platform and token) was updated (`update_on_duplicate`).
    public var updated: Bool
    public init(device: Device, created: Bool, updated: Bool) {
        self.device = device
        self.created = created
        self.updated = updated
    }
}

/// Identifies one device: by registry id or by token.
public enum DeviceKey: Sendable, Equatable {
    case id(Int64)
    case token(app: String, platform: Platform, registrationId: String)

    /// Whether the device is named by its registry id.
    public var isId: Bool { if case .id = self { return true } else { return false } }
}

struct UnregisterResult: Sendable { var deleted: Int; var missing: [Int] }

/// Which devices `devices(_:)` returns: every set field must match.
public struct DeviceFilter: Sendable {
    public var ids: [Int64]?
    public var app: String?
    public var platform: Platform?
    public var user: String?
    public var users: [String]?
    public var active: Bool?
    public var registrationId: String?
    /// Only devices with an id greater than this (paging).
    public var afterId: Int64?
    /// At most this many (nil: no limit).
    public var limit: Int?
    /// Devices of any platform but this one.
    public var notPlatform: Platform?
    /// Devices whose recorded topics satisfy this (a topic, or an FCM-style condition).
    public var topics: TopicCondition?
    public init() {}
}

/// Where `page(_:from:limit:)` resumes: the part, and the last id returned in it.
public struct PageCursor: Sendable, Equatable {
    public var part = 0
    public var afterId: Int64 = 0
    public init() {}
}

struct PageResult: Sendable { var devices: [Device]; var next: PageCursor? }
struct PageIdsResult: Sendable { var ids: [Int64]; var next: PageCursor? }

/// How many devices of each (app, platform) a filter selects (`afterId`/`limit` ignored).
public struct DeviceGroup: Sendable, Equatable {
    public var app: String
    public var platform: Platform
    public var count: Int
}

/// Changes to one device; nil leaves a field as it is, `.some(nil)` clears it.
public struct DeviceUpdate: Sendable {
    public var name: String??
    public var user: String??
    public var deviceId: String??
    public var active: Bool?
    /// A new token (validated for the device's platform); the id and topic subscriptions stay.
    public var registrationId: String?
    /// New WebPush subscription keys (WebPush devices only).
    public var p256dh: String?
    public var auth: String?
    public init() {}
}

/// Device counts.
public struct RegistryStats: Sendable {
    public var total: Int
    /// One row per (app, platform, active) with at least one device, ordered by app, platform, active first.
    public var rows: [(app: String, platform: Platform, active: Bool, count: Int)]
    public init(total: Int, rows: [(app: String, platform: Platform, active: Bool, count: Int)]) {
        self.total = total
        self.rows = rows
    }
}

/// A provider's verdict that a device is gone.
public struct Deactivation: Sendable {
    public var id: Int64
    public var reason: String
    /// When (Unix ms).
    public var at: Int64
    /// Since when the provider considers the token invalid (Apple's 410 `timestamp`, Unix ms).
    public var invalidSince: Int64?
    public init(id: Int64, reason: String, at: Int64, invalidSince: Int64? = nil) {
        self.id = id
        self.reason = reason
        self.at = at
        self.invalidSince = invalidSince
    }
}
