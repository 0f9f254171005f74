/// An app's `webpush` block.
public struct WebPushConfig: Sendable, Equatable {
    /// PEM file of the VAPID P-256 private key.
    public var vapidPrivateKeyPath: String
    /// `mailto:` or `https:` contact (the VAPID `sub` claim).
    public var subject: String
    /// Default TTL in seconds when a notification gives none.
    public var ttl: Int
    public var connection: ProviderConnectionConfig

    public init(reading r: inout ConfigReader) throws(ConfigError) {
        guard let p = try r.file("vapid_private_key_path") else {
            throw ConfigError(r.keyPath("vapid_private_key_path"), "is required")
        }
        vapidPrivateKeyPath = p
        let s = try r.requiredString("subject")
        guard s.hasPrefix("mailto:") || s.hasPrefix("https://") else {
            throw ConfigError(r.keyPath("subject"), "expected a mailto: or https: URL")
        }
        subject = s
        ttl = try r.int("ttl", range: 0...2_419_200) ?? 86_400
        connection = try ProviderConnectionConfig(reading: &r)
    }
}
