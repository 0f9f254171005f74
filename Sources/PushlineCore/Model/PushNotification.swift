/// A notification as a client sends it: flat, as in django-push-notifications' `send_message`.
///
/// The common fields are typed here; provider-specific keys (`interruption_level`,
/// `use_fcm_notifications`, `wns_type`, the raw `apns`/`android`/`webpush`/`wns` blocks...)
/// stay in `fields` for the provider to read. Validation of the common fields happens
/// in `init(parsing:)`; each provider validates its own keys in `PushProvider.validate`.
///
/// ```swift
/// let n = try PushNotification(parsing: ["message": "Hello", "badge": 3])
/// n.badge // 3
/// ```
public struct PushNotification: Sendable {
    /// How urgently to deliver, in provider-neutral levels; each provider maps a level to its
    /// own value. A request names a level `"high"` or `"normal"`, or by a provider's own value
    /// (see `init(requestValue:)` in Providers/NotificationKeys.swift).
    public enum Priority: Sendable, Equatable {
        case high, normal
        /// Below normal: the device's power comes first.
        case low
    }

    /// `message`: a string, or an alert object (`title`, `subtitle`, `body`, `loc_key`...).
    public var message: JSONValue?
    public var title: String?
    public var badge: Int?
    /// A sound name, or (APNs) a critical-sound object.
    public var sound: JSONValue?
    /// Custom data: APNs top-level keys, FCM `data`, WebPush payload fields.
    public var extra: JSONObject?
    public var threadId: String?
    public var category: String?
    public var contentAvailable: Bool
    public var mutableContent: Bool
    public var priority: Priority?
    /// Unix time in seconds after which the provider may drop the notification.
    public var expiration: Int64?
    public var collapseId: String?
    public var pushType: String?
    /// Seconds the provider may keep the notification (FCM android.ttl, WebPush TTL, APNs expiration from now).
    public var timeToLive: Int64?
    /// APNs topic override (bundle id).
    public var topic: String?
    /// Validate and build everything without sending.
    public var dryRun: Bool
    /// Every notification key of the request, typed ones included, for providers.
    public var fields: JSONObject
    /// The outbox job this notification is being delivered for: set by the outbox worker,
    /// never from a request. APNs gives each device that carries its delivery number
    /// (`Device.outboxDelivery`) the `apns-id` made of both (`APNsProvider.outboxApnsId`), the
    /// same on every attempt and after a crash.
    public var outboxJob: String? = nil

    /// The notification keys common to every provider.
    public static let commonKeys: Set<String> = [
        "message", "title", "body", "badge", "sound", "extra", "thread_id", "category", "content_available",
        "mutable_content", "priority", "expiration", "collapse_id", "push_type", "time_to_live", "topic", "dry_run",
    ]

    // `allKeys` (the common keys and every provider's own) is declared in Providers/NotificationKeys.swift:
    // each provider declares its keys beside its code, and this model knows none of them.

    public init(parsing o: JSONObject) throws(CommandError) {
        fields = o
        message = nil
        if let m = o["message"], !m.isNull {
            switch m {
            case .string, .object: message = m
            default: throw .invalid("message", "expected a string or an alert object, got \(m.typeName)")
            }
        }
        if message == nil, let b = o["body"], !b.isNull {
            guard case .string = b else { throw .invalid("body", "expected a string, got \(b.typeName)") }
            message = b
        }
        title = try Self.string(o, "title")
        if let b = o["badge"], !b.isNull {
            guard let v = b.intValue, v >= 0, v <= Int64(Int32.max) else {
                throw .invalid("badge", "expected a non-negative integer")
            }
            badge = Int(v)
        }
        if let s = o["sound"], !s.isNull {
            switch s {
            case .string, .object: sound = s
            default: throw .invalid("sound", "expected a sound name or a sound object, got \(s.typeName)")
            }
        }
        if let e = o["extra"], !e.isNull {
            guard let eo = e.objectValue else { throw .invalid("extra", "expected an object, got \(e.typeName)") }
            extra = eo
        }
        threadId = try Self.string(o, "thread_id")
        category = try Self.string(o, "category")
        contentAvailable = try Self.bool(o, "content_available") ?? false
        mutableContent = try Self.bool(o, "mutable_content") ?? false
        if let p = o["priority"], !p.isNull {
            guard let level = Priority(requestValue: p) else { throw .invalid("priority", Priority.expectedValues) }
            priority = level
        }
        expiration = try Self.int(o, "expiration", min: 0)
        collapseId = try Self.string(o, "collapse_id")
        pushType = try Self.string(o, "push_type")
        timeToLive = try Self.int(o, "time_to_live", min: 0, max: Self.maxTimeToLive)
        topic = try Self.string(o, "topic")
        dryRun = try Self.bool(o, "dry_run") ?? false
    }

    /// The alert body: `message` when it is a string, or its `body` member.
    public var bodyText: String? {
        switch message {
        case .string(let s): return s
        case .object(let o): return o["body"]?.stringValue
        default: return nil
        }
    }

    /// The title: `title`, or the alert object's `title`.
    public var titleText: String? {
        if let title { return title }
        if case .object(let o) = message { return o["title"]?.stringValue }
        return nil
    }

    static func string(_ o: JSONObject, _ k: String) throws(CommandError) -> String? {
        guard let v = o[k], !v.isNull else { return nil }
        guard let s = v.stringValue else { throw .invalid(k, "expected a string, got \(v.typeName)") }
        return s
    }
    static func bool(_ o: JSONObject, _ k: String) throws(CommandError) -> Bool? {
        guard let v = o[k], !v.isNull else { return nil }
        if let b = v.boolValue { return b }
        if let i = v.intValue, i == 0 || i == 1 { return i == 1 }
        throw .invalid(k, "expected a boolean, got \(v.typeName)")
    }
    static func int(_ o: JSONObject, _ k: String, min: Int64, max: Int64 = .max) throws(CommandError) -> Int64? {
        guard let v = o[k], !v.isNull else { return nil }
        guard let i = v.intValue else { throw .invalid(k, "expected an integer, got \(v.typeName)") }
        guard i >= min else { throw .invalid(k, "must be at least \(min)") }
        guard i <= max else { throw .invalid(k, "must be at most \(max)") }
        return i
    }

    /// The largest `time_to_live` (2^31 - 1 seconds, 68 years): APNs and FCM add it to the
    /// current time, which overflowed (and stopped the daemon) for values near 2^63.
    public static let maxTimeToLive = Int64(Int32.max)
}
