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
    /// Its `openConnections` is where the counts are published.
    private let handle: LoopHandle

    init(handle: LoopHandle) {
        self.handle = handle
    }

    func opened(_ fd: Int32, origin: String) {
        byFD[fd] = origin
        handle.openConnections.withLock { $0[origin, default: 0] += 1 }
    }

    func closed(_ fd: Int32) {
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
        transfer.ledger.opened(fd, origin: transfer.job?.origin ?? "unknown")
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
