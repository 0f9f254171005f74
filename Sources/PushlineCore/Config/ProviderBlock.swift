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
    /// HTTP CONNECT proxy, `http://[user:pass@]host:port`; nil: direct.
    public var proxy: String?

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
        if let p = try r.string("proxy") {
            // The error never repeats the value: it may hold a password.
            guard Self.isProxyURL(p) else {
                throw ConfigError(r.keyPath("proxy"), "expected http://[user:password@]host:port (an HTTP proxy that allows CONNECT)")
            }
            proxy = p
        }
    }

    /// `http://[user[:password]@]host:port` with a port of 1-65535.
    static func isProxyURL(_ s: String) -> Bool {
        guard s.hasPrefix("http://") else { return false }
        var rest = Substring(s.dropFirst(7))
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        guard !rest.contains("/"), let colon = rest.lastIndex(of: ":"), colon != rest.startIndex,
            let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port)
        else { return false }
        return true
    }

    /// The proxy with its password replaced by `***` (for logs and check-config).
    public var redactedProxy: String? {
        guard let proxy, let at = proxy.lastIndex(of: "@") else { return proxy }
        let userinfo = proxy[proxy.index(proxy.startIndex, offsetBy: 7)..<at]
        let user = userinfo.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
        return "http://\(user):***@" + proxy[proxy.index(after: at)...]
    }
}
