import Logging

/// The providers of every configured (app, platform), built once at start-up.
public struct ProviderSet: Sendable {
    public struct Key: Hashable, Sendable {
        public var app: String
        public var platform: Platform
    }
    public private(set) var providers: [Key: any PushProvider] = [:]

    public init() {}

    /// A set of given providers (tests: in-memory providers).
    init(_ providers: [Key: any PushProvider]) {
        self.providers = providers
    }

    /// Builds one provider per configured block; a bad credential file fails with its key path.
    public init(config: PushlineConfig, context: ProviderContext) throws(ConfigError) {
        for (app, block) in config.apps.sorted(by: { $0.key < $1.key }) {
            if let c = block.apns { providers[Key(app: app, platform: .apns)] = try APNsProvider(app: app, config: c, context: context) }
            if let c = block.fcm { providers[Key(app: app, platform: .fcm)] = try FCMProvider(app: app, config: c, context: context) }
            if let c = block.webpush {
                providers[Key(app: app, platform: .webpush)] = try WebPushProvider(app: app, config: c, context: context)
            }
            if let c = block.wns { providers[Key(app: app, platform: .wns)] = try WNSProvider(app: app, config: c, context: context) }
        }
    }

    public func provider(app: String, platform: Platform) -> (any PushProvider)? {
        providers[Key(app: app, platform: platform)]
    }
}
