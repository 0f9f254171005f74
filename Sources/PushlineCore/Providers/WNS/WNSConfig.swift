/// An app's `wns` block.
///
/// ```json
/// "wns": {"package_sid": "ms-app://s-1-15-2-...", "client_secret": "...",
///         "token_url": "https://login.live.com/accesstoken.srf", "ca_file": "/etc/ssl/extra.pem"}
/// ```
/// `endpoint`, when set, replaces the origin of every channel URI (tests, proxies).
public struct WNSConfig: Sendable, Equatable {
    /// The package SID / client id.
    public var clientId: String
    public var clientSecret: String
    /// OAuth token URL (default Microsoft's).
    public var tokenURL: String
    public var connection: ProviderConnectionConfig

    public static let defaultTokenURL = "https://login.live.com/accesstoken.srf"

    public init(reading r: inout ConfigReader) throws(ConfigError) {
        let cid = try r.string("client_id")
        let sid = try r.string("package_sid")
        guard let id = cid ?? sid else { throw ConfigError(r.keyPath("client_id"), "is required (or package_sid)") }
        clientId = id
        clientSecret = try r.requiredString("client_secret")
        tokenURL = try r.url("token_url") ?? Self.defaultTokenURL
        connection = try ProviderConnectionConfig(reading: &r)
    }

    /// A config built in code (tests, tools).
    public init(
        clientId: String, clientSecret: String, tokenURL: String = WNSConfig.defaultTokenURL,
        connection: ProviderConnectionConfig = ProviderConnectionConfig()
    ) {
        self.clientId = clientId
        self.clientSecret = clientSecret
        self.tokenURL = tokenURL
        self.connection = connection
    }
}
