import CCurl
import CPushlineShims
import Glibc

/// The provider connections one event loop has open, by origin (for `metrics` and `health`).
///
/// libcurl creates and closes every connection's socket through CURLOPT_OPENSOCKETFUNCTION and
/// CURLOPT_CLOSESOCKETFUNCTION, set on each easy handle (`Transfer.configure`): the open callback
/// gets the `Transfer` connecting (so the origin of its job), the close callback this ledger,
/// which libcurl keeps with the connection (url.c: `conn->closesocket_client`) and may call after
/// the transfer that opened it is gone. Both run on the loop thread, inside libcurl calls, so
/// `byFD` needs no lock; the per-origin counts are published under a mutex for other threads.
///
/// Owned by the loop's `CurlMulti`, which frees it only after curl_multi_cleanup (which closes
/// the cached connections through the close callback).
final class ConnectionLedger {
    private var byFD: [Int32: String] = [:]
    /// The TCP connection sockets (IPv4 or IPv6) among them: the ones `cork` holds back.
    private var tcp: [Int32] = []
    /// Its `openConnections` is where the counts are published.
    private let handle: LoopHandle

    init(handle: LoopHandle) {
        self.handle = handle
    }

    func opened(_ fd: Int32, origin: String, tcp isTCP: Bool) {
        byFD[fd] = origin
        if isTCP { tcp.append(fd) }
        handle.openConnections.withLock { $0[origin, default: 0] += 1 }
    }

    /// Corks every TCP connection (TCP_CORK) for a pass of curl_multi_perform that starts
    /// requests; `uncork` after the pass sends what the pass wrote, together. Returns whether
    /// anything was corked.
    ///
    /// libcurl 7.88 writes each HTTP/2 frame in a TLS record of its own, with a send() each: a
    /// request's HEADERS, then its DATA (the body), for each request the pass starts. Uncorked,
    /// each send went out as a TCP segment of its own (2 segments per request, each a loopback
    /// transmit on this thread and a read for the provider); corked, a pass's requests leave in
    /// one. A failed setsockopt (not expected on a TCP socket) only loses the batching: the
    /// socket is then left as it is (an uncork that fails finds the socket not corked either).
    func cork() -> Bool {
        for fd in tcp { _ = pl_tcp_cork(fd, 1) }  // See above: a failure only loses the batching.
        return !tcp.isEmpty
    }

    /// Sends what a corked pass wrote (see `cork`). Sockets opened during the pass were never
    /// corked; uncorking them is a no-op.
    func uncork() {
        for fd in tcp { _ = pl_tcp_cork(fd, 0) }  // See `cork`.
    }

    func closed(_ fd: Int32) {
        if let i = tcp.firstIndex(of: fd) { tcp.remove(at: i) }
        guard let origin = byFD.removeValue(forKey: fd) else { return }
        handle.openConnections.withLock { m in
            let n = (m[origin] ?? 0) - 1
            if n > 0 { m[origin] = n } else { m[origin] = nil }
        }
    }
}

/// CURLOPT_OPENSOCKETFUNCTION: creates the socket as libcurl would and records a connection
/// socket (not a DNS or other helper socket) under the connecting transfer's origin.
func transferOpenSocket(
    _ clientp: UnsafeMutableRawPointer?, _ purpose: curlsocktype, _ address: UnsafeMutablePointer<curl_sockaddr>?
) -> curl_socket_t {
    guard let address else { return CURL_SOCKET_BAD }
    let fd = pl_curl_open_socket(address)
    if fd != CURL_SOCKET_BAD, purpose == CURLSOCKTYPE_IPCXN, let clientp {
        let transfer = Unmanaged<Transfer>.fromOpaque(clientp).takeUnretainedValue()
        let family = Int32(address.pointee.family)
        transfer.ledger.opened(fd, origin: transfer.job?.origin ?? "unknown", tcp: family == AF_INET || family == AF_INET6)
    }
    return fd
}

/// CURLOPT_CLOSESOCKETFUNCTION: forgets the socket in the ledger, then closes it.
func transferCloseSocket(_ clientp: UnsafeMutableRawPointer?, _ fd: curl_socket_t) -> Int32 {
    if let clientp {
        Unmanaged<ConnectionLedger>.fromOpaque(clientp).takeUnretainedValue().closed(fd)
    }
    return Glibc.close(fd)
}
