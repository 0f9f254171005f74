/// TLS settings of a request. Connections are pooled per origin and per TLS settings.
public struct TLSOptions: Sendable, Hashable {
    /// PEM bundle of trusted CAs; nil means the system trust store.
    public var caFile: String?
    /// PEM file holding a client certificate and its private key (APNs certificate auth).
    public var clientCertFile: String?
    /// Passphrase of an encrypted client key.
    public var clientKeyPassword: String?

    public init(caFile: String? = nil, clientCertFile: String? = nil, clientKeyPassword: String? = nil) {
        self.caFile = caFile
        self.clientCertFile = clientCertFile
        self.clientKeyPassword = clientKeyPassword
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

    public init(
        method: String = "POST", url: String, headers: [(String, String)] = [], body: [UInt8] = [],
        tls: TLSOptions = TLSOptions(), timeoutMs: Int = 30_000
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.tls = tls
        self.timeoutMs = timeoutMs
    }
}

/// An HTTP response. Header names are lowercase.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        let n = name.lowercased()
        return headers.first { $0.0 == n }?.1
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
