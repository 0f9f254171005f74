/// A push platform: the provider that delivers to a device.
public enum Platform: String, Sendable, CaseIterable, Hashable {
    case apns, fcm, webpush, wns
}
