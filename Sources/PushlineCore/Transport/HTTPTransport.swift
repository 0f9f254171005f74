/// Settings of the shared transport.
public struct TransportOptions: Sendable {
    /// Event-loop threads, each with its own libcurl multi handle.
    public var threads: Int
    /// Connections per origin per thread.
    public var maxConnectionsPerHost: Int
    /// Streams per connection we ask for (the server's SETTINGS_MAX_CONCURRENT_STREAMS still rules).
    public var maxConcurrentStreams: Int
    public init(threads: Int = 2, maxConnectionsPerHost: Int = 1, maxConcurrentStreams: Int = 1000) {
        self.threads = threads
        self.maxConnectionsPerHost = maxConnectionsPerHost
        self.maxConcurrentStreams = maxConcurrentStreams
    }
}

/// The shared HTTP/2 client: libcurl multi handles on their own threads, fed by a queue.
///
/// PLACEHOLDER: the transport work replaces this body.
public final class HTTPTransport: Sendable {
    public init(options: TransportOptions = TransportOptions()) {}

    /// Performs one request; never hangs past `request.timeoutMs`.
    public func perform(_ request: HTTPRequest) async -> Result<HTTPResponse, TransportError> {
        .failure(TransportError(.unavailable, "transport not implemented"))
    }

    public func shutdown() {}
}
