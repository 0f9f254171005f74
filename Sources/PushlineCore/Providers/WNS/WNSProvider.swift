import Logging

/// The WNS provider. PLACEHOLDER: the WNS work replaces this file.
public final class WNSProvider: PushProvider {
    public let platform: Platform = .wns
    public init(app: String, config: WNSConfig, context: ProviderContext) throws(ConfigError) {}
    public func validate(_ notification: Notification) throws(CommandError) {}
    public func send(_ notification: Notification, to devices: [Device]) async -> [DeliveryResult] {
        devices.map { .failed($0, reason: "not implemented", retryable: false) }
    }
}
