/// Which notification keys a request may carry: the keys common to every provider
/// (`PushNotification.commonKeys`, in Model/) and each provider's own, which the provider declares
/// beside its code (`APNsNotificationKeys`, `FCMNotificationKeys`, `WebPushNotificationKeys`,
/// `WNSNotificationKeys`). A new provider adds its keys here.
enum ProviderNotificationKeys {
    /// Each platform's own keys (beyond the common ones).
    static let byPlatform: [Platform: Set<String>] = [
        .apns: APNsNotificationKeys.keys, .fcm: FCMNotificationKeys.keys, .webpush: WebPushNotificationKeys.keys,
        .wns: WNSNotificationKeys.keys,
    ]
}

extension PushNotification {
    /// Every key a notification may carry: the common ones and each provider's own. Built once
    /// (as a computed property, the unions were a third of a 10,000-message bulk's CPU: each
    /// message's keys are checked against it).
    public static let allKeys: Set<String> = ProviderNotificationKeys.byPlatform.values.reduce(commonKeys) { $0.union($1) }
}

extension PushNotification.Priority {
    /// A request's `priority`: a level by name, or a provider's own value for one (APNs' 10, 5
    /// and 1, `APNsPriority`); nil for anything else.
    init?(requestValue v: JSONValue) {
        switch v {
        case .string("high"): self = .high
        case .string("normal"): self = .normal
        case .int(let i):
            guard let level = APNsPriority.level(i) else { return nil }
            self = level
        default: return nil
        }
    }

    /// What `init(requestValue:)` accepts, for the error message.
    static let expectedValues = "expected \"high\", \"normal\" or (APNs) 10, 5 or 1"
}
