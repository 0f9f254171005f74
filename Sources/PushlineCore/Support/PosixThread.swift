import CPushlineShims
import Glibc

/// Launches a named, joinable POSIX thread running one closure: the one place PushlineCore
/// starts threads (the transport's event loops and the metrics server through
/// `TransportThread`, the registry's database thread through `RegistryThread`).
///
/// Foundation's Thread is avoided to keep PushlineCore free of Foundation.
///
/// ```swift
/// let tid = try PosixThread.start(name: "pushline-db") { runLoop() }
/// pthread_join(tid, nil)
/// ```
enum PosixThread {
    struct StartError: Error, CustomStringConvertible {
        var rc: Int32
        var description: String { "pthread_create failed: \(String(cString: strerror(rc)))" }
    }

    /// Starts `body` on a new joinable thread named `name` (the kernel keeps 15 bytes; nil: the
    /// body names its thread itself) and returns it; the caller joins (or detaches) it once.
    /// `sending` lets the compiler check that what `body` captures (a non-Sendable handle) is
    /// used by that thread only.
    static func start(name: String?, _ body: sending @escaping () -> Void) throws(StartError) -> pthread_t {
        let box = Unmanaged.passRetained(ThreadBody(name: name, body: body)).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, posixThreadEntry, box)
        guard rc == 0 else {
            Unmanaged<ThreadBody>.fromOpaque(box).release()
            throw StartError(rc: rc)
        }
        return tid
    }
}

/// What a new thread runs; handed over through pthread_create's argument.
///
/// Not Sendable, and it needs not be: the body was passed `sending`, so nothing on the
/// starting thread still references what it captures, and only the new thread calls it.
private final class ThreadBody {
    let name: String?
    let body: () -> Void
    init(name: String?, body: @escaping () -> Void) {
        self.name = name
        self.body = body
    }
}

/// The pthread start routine: a file-scope function so it converts to a C function pointer.
private func posixThreadEntry(_ arg: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    // `arg` is the retained ThreadBody passed by `PosixThread.start`; it is never nil.
    guard let arg else { return nil }
    let box = Unmanaged<ThreadBody>.fromOpaque(arg).takeRetainedValue()
    if let name = box.name { pl_set_thread_name(name) }
    box.body()
    return nil
}
