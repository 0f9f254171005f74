import Synchronization
@testable import PushlineCore

/// An `HTTPClient` that answers from a closure, in memory: for unit tests of the dispatcher,
/// the providers' result mapping and the send pipeline without sockets or TLS.
///
/// It records every request it was asked to perform, in order of arrival.
final class InMemoryHTTPClient: HTTPClient {
    typealias Handler = @Sendable (HTTPRequest) -> Result<HTTPResponse, TransportError>
    private let handler: Handler
    private let log = Mutex<[HTTPRequest]>([])
    /// Largest number of requests handed over in one `performAll`.
    private let largestBatch = Atomic<Int>(0)

    init(_ handler: @escaping Handler) {
        self.handler = handler
    }

    func perform(_ request: HTTPRequest) async -> Result<HTTPResponse, TransportError> {
        log.withLock { $0.append(request) }
        return handler(request)
    }

    func performAll(_ requests: [HTTPRequest]) async -> [Result<HTTPResponse, TransportError>] {
        log.withLock { $0.append(contentsOf: requests) }
        _ = largestBatch.max(requests.count, ordering: .relaxed)
        return requests.map(handler)
    }

    private let retired = Mutex<[UInt32]>([])

    func retireConnectionPool(_ pool: UInt32) {
        retired.withLock { $0.append(pool) }
    }

    var requests: [HTTPRequest] { log.withLock { $0 } }
    /// The pools retired, in order.
    var retiredPools: [UInt32] { retired.withLock { $0 } }
    var biggestBatch: Int { largestBatch.load(ordering: .relaxed) }
}

extension HTTPRequest {
    /// The value of a request header (names compared case-insensitively).
    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}
