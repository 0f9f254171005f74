import CPushlineShims
import Glibc

/// A joinable POSIX thread running one closure (the transport's event loops).
///
/// Foundation's Thread is avoided to keep PushlineCore free of Foundation.
final class TransportThread: Sendable {
    private let thread: pthread_t

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept by the kernel).
    init(name: String, _ body: sending @escaping () -> Void) throws(TransportError) {
        let box = Unmanaged.passRetained(ThreadBody(name: name, body: body)).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, transportThreadEntry, box)
        guard rc == 0 else {
            Unmanaged<ThreadBody>.fromOpaque(box).release()
            throw TransportError(.unavailable, "pthread_create failed: \(String(cString: strerror(rc)))")
        }
        thread = tid
    }

    /// Waits for the thread to end. Call once.
    func join() {
        // Fails only for a thread already joined or detached, which `HTTPTransport.shutdown` prevents.
        _ = pthread_join(thread, nil)
    }
}

/// What a new thread runs; handed over through pthread_create's argument.
private final class ThreadBody {
    let name: String
    let body: () -> Void
    init(name: String, body: @escaping () -> Void) {
        self.name = name
        self.body = body
    }
}

/// The pthread start routine: a file-scope function so it converts to a C function pointer.
private func transportThreadEntry(_ arg: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let arg else { return nil }
    let box = Unmanaged<ThreadBody>.fromOpaque(arg).takeRetainedValue()
    pl_set_thread_name(box.name)
    box.body()
    return nil
}
