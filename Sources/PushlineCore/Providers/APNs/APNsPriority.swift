/// APNs' `apns-priority` values and the provider-neutral levels of `PushNotification.Priority`
/// they stand for: 10 sends at once, 5 with the device's power in mind, 1 prioritizes power
/// ("Sending notification requests to APNs", apns-priority). A request may give these numbers
/// as its `priority` (protocol.md, notification fields); FCM's `apns` block uses them too.
enum APNsPriority {
    /// The `apns-priority` header value of a level.
    static func value(_ level: PushNotification.Priority) -> Int {
        switch level {
        case .high: return 10
        case .normal: return 5
        case .low: return 1
        }
    }

    /// The level an `apns-priority` number in a request stands for; nil for any other number.
    static func level(_ value: Int64) -> PushNotification.Priority? {
        switch value {
        case 10: return .high
        case 5: return .normal
        case 1: return .low
        default: return nil
        }
    }
}
