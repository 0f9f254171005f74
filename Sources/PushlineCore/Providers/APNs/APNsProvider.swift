import Logging

/// The APNs provider. PLACEHOLDER: the APNs work replaces this file.
public final class APNsProvider: PushProvider {
    public let platform: Platform = .apns
    public init(app: String, config: APNsConfig, context: ProviderContext) throws(ConfigError) {}
    public func validate(_ notification: Notification) throws(CommandError) {}
    public func send(_ notification: Notification, to devices: [Device]) async -> [DeliveryResult] {
        devices.map { .failed($0, reason: "not implemented", retryable: false) }
    }
}
