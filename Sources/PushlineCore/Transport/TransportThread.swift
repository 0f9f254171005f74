import Glibc

/// A joinable POSIX thread running one closure (the transport's event loops), started by
/// `PosixThread`.
final class TransportThread: Sendable {
    private let thread: pthread_t

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept by the kernel).
    init(name: String, _ body: sending @escaping () -> Void) throws(TransportError) {
        do {
            thread = try PosixThread.start(name: name, body)
        } catch {
            throw TransportError(.unavailable, error.description)
        }
    }

    /// Waits for the thread to end. Call once.
    func join() {
        // Fails only for a thread already joined or detached, which `HTTPTransport.shutdown` prevents.
        _ = pthread_join(thread, nil)
    }
}
