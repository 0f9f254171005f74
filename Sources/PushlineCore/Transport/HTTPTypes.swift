/// TLS settings of a request. Connections are pooled per origin and per TLS settings.
public struct TLSOptions: Sendable, Hashable {
    /// PEM bundle of trusted CAs; nil means the system trust store.
    public var caFile: String?
    /// PEM file holding a client certificate and its private key (APNs certificate auth).
    public var clientCertFile: String?
    /// Passphrase of an encrypted client key.
    public var clientKeyPassword: String?
    /// HTTP proxy to tunnel through with CONNECT (`http://[user:pass@]host:port`, a provider
    /// block's `proxy`); nil: direct (libcurl still honours `https_proxy` from the environment).
    public var proxy: String?

    public init(caFile: String? = nil, clientCertFile: String? = nil, clientKeyPassword: String? = nil, proxy: String? = nil) {
        self.caFile = caFile
        self.clientCertFile = clientCertFile
        self.clientKeyPassword = clientKeyPassword
        self.proxy = proxy
    }
}

/// One HTTP/2 request. Header names are sent as given (HTTP/2 lowercases them).
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]
    public var tls: TLSOptions
    /// Deadline for the whole exchange, connect included.
    public var timeoutMs: Int
    /// Most connections to this request's origin (a provider block's `max_connections`);
    /// nil: as many as the transport allows (`threads × maxConnectionsPerHost`).
    public var maxConnections: Int?
    /// The connections this request may use: requests of different pools never share a
    /// connection (0, the default, is the shared pool). A pool given up with
    /// `HTTPTransport.retireConnectionPool` gets no new connection reuse: its connections are
    /// closed once their transfers end. APNs uses one pool per provider token (see
    /// `APNsTokenCache`): a new token goes out on new connections.
    public var connectionPool: UInt32
    /// How many of the first `headers` differ from one request to the next (an outbox delivery's
    /// `apns-id`): the libcurl transport keeps a header list per easy handle for the others and
    /// puts these ahead of it, instead of building the whole list again for every request. Never
    /// `accept` or `content-type` (the kept list decides whether libcurl adds its own).
    public var uniqueLeadingHeaders: Int

    public init(
        method: String = "POST", url: String, headers: [(String, String)] = [], body: [UInt8] = [],
        tls: TLSOptions = TLSOptions(), timeoutMs: Int = 30_000, maxConnections: Int? = nil, connectionPool: UInt32 = 0,
        uniqueLeadingHeaders: Int = 0
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.tls = tls
        self.timeoutMs = timeoutMs
        self.maxConnections = maxConnections
        self.connectionPool = connectionPool
        self.uniqueLeadingHeaders = uniqueLeadingHeaders
    }
}

/// An HTTP response. Header names are lowercase.
public struct HTTPResponse: Sendable {
    public var status: Int
    /// The headers as `name NUL value NUL` pairs in one buffer: a response costs one
    /// allocation for its headers, and only the values asked for become Strings.
    var rawHeaders: [UInt8]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        var raw: [UInt8] = []
        for (name, value) in headers { Self.appendHeader(name.lowercased().utf8, value.utf8, to: &raw) }
        self.rawHeaders = raw
        self.body = body
    }

    init(status: Int, rawHeaders: [UInt8], body: [UInt8]) {
        self.status = status
        self.rawHeaders = rawHeaders
        self.body = body
    }

    /// Appends one header (name already lowercase) to a raw header buffer.
    static func appendHeader<N: Collection<UInt8>, V: Collection<UInt8>>(_ name: N, _ value: V, to raw: inout [UInt8]) {
        raw.append(contentsOf: name)
        raw.append(0)
        raw.append(contentsOf: value)
        raw.append(0)
    }

    /// Every header, in order.
    public var headers: [(String, String)] {
        var out: [(String, String)] = []
        forEachHeader { name, value in
            out.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
            return true
        }
        return out
    }

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        var found: String?
        var wanted = name
        wanted.withUTF8 { n in
            forEachHeader { have, value in
                guard have.count == n.count else { return true }
                for i in 0..<n.count {
                    let c = n[i]
                    if have[i] != (c >= 65 && c <= 90 ? c + 32 : c) { return true }
                }
                found = String(decoding: value, as: UTF8.self)
                return false
            }
        }
        return found
    }

    /// Calls `body` with each (name, value) until it returns false.
    private func forEachHeader(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Bool) {
        rawHeaders.withUnsafeBytes { raw in
            var i = 0
            while i < raw.count {
                var j = i
                while j < raw.count, raw[j] != 0 { j += 1 }
                var k = j + 1
                while k < raw.count, raw[k] != 0 { k += 1 }
                guard j < raw.count else { return }
                let name = UnsafeRawBufferPointer(rebasing: raw[i..<j])
                let value = UnsafeRawBufferPointer(rebasing: raw[(j + 1)..<min(k, raw.count)])
                if !body(name, value) { return }
                i = k + 1
            }
        }
    }
}

/// Why a request got no HTTP response.
public struct TransportError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// The deadline passed.
        case timeout
        /// Could not connect (refused, DNS, ...).
        case connect
        /// TLS handshake or certificate problem (a configuration error, not retried).
        case tls
        /// The connection broke or the server refused the stream (GOAWAY, RST_STREAM REFUSED_STREAM):
        /// the server did not process the request, safe to send again.
        case connectionLost
        /// The transport is shut down or over its limits.
        case unavailable
        case other
    }
    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// Pushline's per-device reason for a request that got no HTTP answer (protocol.md, section 4).
    public var protocolReason: String {
        switch kind {
        case .timeout: return "timeout"
        case .connect: return "connect_error"
        case .tls: return "tls_error"
        case .connectionLost, .unavailable, .other: return "connection_lost"
        }
    }

    /// Whether the server surely did not process the request (no connection, or the connection
    /// was lost before an answer), so sending it again cannot deliver twice. A timeout may have
    /// been delivered: it is not safe.
    public var safeToResend: Bool { kind == .connectionLost || kind == .connect }

    /// Whether sending again may work.
    public var retryable: Bool { kind != .tls }
    public var description: String { "\(kind.rawValue): \(message)" }
}
