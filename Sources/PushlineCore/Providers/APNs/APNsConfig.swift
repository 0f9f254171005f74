/// An app's `apns` block.
public struct APNsConfig: Sendable, Equatable {
    public enum Auth: Sendable, Equatable {
        /// Token auth: a .p8 key, its key id and the team id.
        case token(keyPath: String, keyId: String, teamId: String)
        /// Certificate auth: a PEM with certificate and key, maybe encrypted.
        case certificate(path: String, password: String?)
    }
    public enum Environment: String, Sendable { case production, sandbox }

    public var auth: Auth
    /// The bundle id (apns-topic).
    public var topic: String?
    public var environment: Environment
    public var useAlternativePort: Bool
    public var connection: ProviderConnectionConfig

    public init(reading r: inout ConfigReader) throws(ConfigError) {
        let keyPath = try r.file("key_path")
        let keyId = try r.string("key_id")
        let teamId = try r.string("team_id")
        let certPath = try r.file("certificate_path")
        let certPassword = try r.string("certificate_password")
        if let keyPath {
            guard certPath == nil else {
                throw ConfigError(r.keyPath("certificate_path"), "give either key_path (token auth) or certificate_path, not both")
            }
            guard let keyId else { throw ConfigError(r.keyPath("key_id"), "is required with key_path") }
            guard let teamId else { throw ConfigError(r.keyPath("team_id"), "is required with key_path") }
            auth = .token(keyPath: keyPath, keyId: keyId, teamId: teamId)
        } else if let certPath {
            auth = .certificate(path: certPath, password: certPassword)
        } else {
            throw ConfigError(r.path, "needs key_path, key_id and team_id (token auth) or certificate_path")
        }
        topic = try r.string("topic")
        let env = try r.string("environment") ?? "production"
        guard let e = Environment(rawValue: env) else {
            throw ConfigError(r.keyPath("environment"), "expected \"production\" or \"sandbox\", got \"\(env)\"")
        }
        environment = e
        useAlternativePort = try r.bool("use_alternative_port") ?? false
        connection = try ProviderConnectionConfig(reading: &r)
    }
}
