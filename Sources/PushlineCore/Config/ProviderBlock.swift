/// Settings every provider block shares: where to connect and how.
public struct ProviderConnectionConfig: Sendable, Equatable {
    /// Base URL override (tests, proxies); nil means the provider's real endpoint.
    public var endpoint: String?
    /// CA bundle override; nil means the system trust store.
    public var caFile: String?
    /// Connections per origin (default 2).
    public var maxConnections: Int
    /// Deadline of one request, connect included (default 30 s).
    public var requestTimeoutMs: Int

    public init(endpoint: String? = nil, caFile: String? = nil, maxConnections: Int = 2, requestTimeoutMs: Int = 30_000) {
        self.endpoint = endpoint
        self.caFile = caFile
        self.maxConnections = maxConnections
        self.requestTimeoutMs = requestTimeoutMs
    }

    /// Reads `endpoint`, `ca_file`, `max_connections`, `request_timeout_ms` from a provider block.
    public init(reading r: inout ConfigReader) throws(ConfigError) {
        endpoint = try r.url("endpoint")
        caFile = try r.file("ca_file")
        maxConnections = try r.int("max_connections", range: 1...64) ?? 2
        requestTimeoutMs = try r.int("request_timeout_ms", range: 100...600_000) ?? 30_000
    }
}
