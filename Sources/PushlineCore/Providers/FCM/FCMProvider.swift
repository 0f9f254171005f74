import Logging

/// The FCM provider. PLACEHOLDER: the FCM work replaces this file.
public final class FCMProvider: PushProvider {
    public let platform: Platform = .fcm
    public init(app: String, config: FCMConfig, context: ProviderContext) throws(ConfigError) {}
    public func validate(_ notification: Notification) throws(CommandError) {}
    public func send(_ notification: Notification, to devices: [Device]) async -> [DeliveryResult] {
        devices.map { .failed($0, reason: "not implemented", retryable: false) }
    }
}
