import Logging

/// The WebPush provider. PLACEHOLDER: the WebPush work replaces this file.
public final class WebPushProvider: PushProvider {
    public let platform: Platform = .webpush
    public init(app: String, config: WebPushConfig, context: ProviderContext) throws(ConfigError) {}
    public func validate(_ notification: Notification) throws(CommandError) {}
    public func send(_ notification: Notification, to devices: [Device]) async -> [DeliveryResult] {
        devices.map { .failed($0, reason: "not implemented", retryable: false) }
    }
}
