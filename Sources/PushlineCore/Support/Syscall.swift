import CPushlineShims

#if canImport(Glibc)
import Glibc
#endif

/// What a system call on a non-blocking descriptor gave: its result, or "it would have blocked".
enum IOResult<T: Sendable>: Sendable {
    case processed(T)
    case wouldBlock
}

/// A system call failed: which call and its errno.
public struct SyscallError: Error, Sendable, CustomStringConvertible {
    public let call: String
    public let errno: Int32
    public var description: String { "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// Runs one system call (a closure returning the call's result, -1 on failure) the one way
/// the server calls them, as swift-nio's `syscall(blocking:where:)` does:
/// errno is read right after the call returns -1, before anything else can change it;
/// `EINTR` retries the call; `EAGAIN`/`EWOULDBLOCK` is `.wouldBlock` when `blocking` is true
/// (the call may block, i.e. it is a read, write or accept on a non-blocking descriptor);
/// any other errno is thrown with the call's name.
///
/// ```swift
/// switch try syscall(blocking: true, where: "read") { read(fd, buf, n) } {
/// case .processed(let n): ...
/// case .wouldBlock: return
/// }
/// ```
@inline(__always)
func syscall<T: FixedWidthInteger & Sendable>(
    blocking: Bool, where call: @autoclosure () -> String, _ body: () -> T
) throws(SyscallError) -> IOResult<T> {
    while true {
        let r = body()
        if r != -1 { return .processed(r) }
        let e = pl_errno()
        if e == EINTR { continue }
        if blocking && (e == EAGAIN || e == EWOULDBLOCK) { return .wouldBlock }
        throw SyscallError(call: call(), errno: e)
    }
}

/// `syscall` for a call that cannot report "would block" (epoll_ctl, getsockopt): its result.
@inline(__always)
@discardableResult
func syscall<T: FixedWidthInteger & Sendable>(where call: @autoclosure () -> String, _ body: () -> T) throws(SyscallError) -> T {
    switch try syscall(blocking: false, where: call(), body) {
    case .processed(let r): return r
    case .wouldBlock: throw SyscallError(call: call(), errno: EAGAIN)  // unreachable: blocking is false
    }
}
