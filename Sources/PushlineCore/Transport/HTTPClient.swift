/// What the providers need from an HTTP/2 client: one request, or many at once.
///
/// `HTTPTransport` (libcurl, pooled HTTP/2 connections) is the daemon's implementation;
/// Swift unit tests use an in-memory one that answers from a closure, so the dispatcher,
/// the providers' result mapping and the send pipeline can be tested without sockets.
///
/// ```swift
/// let client: any HTTPClient = HTTPTransport(options: config.transportOptions)
/// let answer = await client.perform(request)          // never throws: a TransportError is a value
/// ```
///
/// Class-bound: a client is shared by identity (FCM token sources are kept per client).
public protocol HTTPClient: AnyObject, Sendable {
    /// Performs one request; never waits past `request.timeoutMs`.
    func perform(_ request: HTTPRequest) async -> Result<HTTPResponse, TransportError>
    /// Performs many requests concurrently; `results[i]` answers `requests[i]`.
    func performAll(_ requests: [HTTPRequest]) async -> [Result<HTTPResponse, TransportError>]
    /// Stops reusing the connections of pool `pool` (`HTTPRequest.connectionPool`): each is
    /// closed once its streams end (APNs: the connections that carried a replaced token).
    func retireConnectionPool(_ pool: UInt32)
}

extension HTTPTransport: HTTPClient {}
