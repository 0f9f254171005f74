import CPushlineShims

#if canImport(Glibc)
import Glibc
#endif

/// Reads a whole file, or nil if it cannot be opened or read.
public func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 65536) }
        if n < 0 {
            if errno == EINTR { continue }
            return nil
        }
        if n == 0 { return out }
        out.append(contentsOf: buf[0..<n])
    }
}

/// Writes all of `bytes` to a blocking descriptor (EINTR is retried by `pl_write`).
/// Returns false, with errno set, if a write fails before the end.
@discardableResult
public func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { p in
        var off = 0
        while off < p.count {
            let n = pl_write(fd, p.baseAddress.map { $0 + off }, p.count - off)
            guard n > 0 else { return false }
            off += n
        }
        return true
    }
}

/// The current time in Unix milliseconds.
public func nowMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// A monotonic clock in nanoseconds.
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
