import CPushlineShims

#if canImport(Glibc)
import Glibc
#endif

/// A blocking newline-JSON client of the daemon's socket, for the CLI and tools.
///
/// ```swift
/// let c = try LineClient(path: "./var/pushline.sock")
/// let pong = try c.request(["cmd": "ping"])
/// ```
/// Not Sendable: one thread uses it; the fd is closed in deinit.
public final class LineClient {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }
    let fd: Int32
    var buffer: [UInt8] = []
    var start = 0

    public init(path: String) throws(Failure) {
        let fd = pl_unix_connect(path)
        guard fd >= 0 else {
            throw Failure(description: "cannot connect to '\(path)': \(String(cString: strerror(pl_errno()))) (is the daemon running? set --socket or PUSHLINE_SOCKET)")
        }
        self.fd = fd
    }

    deinit { close(fd) }

    public func write(_ bytes: [UInt8]) throws(Failure) {
        guard writeAll(fd, bytes) else { throw Failure(description: "write failed: \(String(cString: strerror(pl_errno())))") }
    }

    private func takeLine() -> [UInt8]? {
        guard let nl = buffer[start...].firstIndex(of: 0x0A) else { return nil }
        let line = Array(buffer[start..<nl])
        start = nl + 1
        if start > 65536 {
            buffer.removeFirst(start)
            start = 0
        }
        return line
    }

    private func fill(block: Bool) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let flags = block ? Int32(0) : Int32(MSG_DONTWAIT)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, flags) }
            if n > 0 {
                buffer.append(contentsOf: chunk[0..<n])
                return true
            }
            if n < 0 && pl_errno() == EINTR { continue }
            return false
        }
    }

    /// Reads one response line, blocking; nil when the daemon closed the connection.
    public func readLine() -> [UInt8]? {
        while true {
            if let l = takeLine() { return l }
            guard fill(block: true) else { return nil }
        }
    }

    /// A response line if one is already available.
    public func readLineIfReady() -> [UInt8]? {
        if let l = takeLine() { return l }
        _ = fill(block: false)
        return takeLine()
    }

    /// Writes one request and waits for its response.
    public func request(_ v: JSONValue) throws(Failure) -> JSONValue {
        try write(v.serialized() + [0x0A])
        guard let line = readLine() else { throw Failure(description: "the daemon closed the connection") }
        do { return try JSONValue.parse(line) } catch { throw Failure(description: "bad response: \(error)") }
    }
}

/// Reads stdin line by line (without the newline), no Foundation.
public struct StdinLines {
    var buffer: [UInt8] = []
    var eof = false
    public init() {}

    public mutating func next() -> [UInt8]? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = Array(buffer[..<nl])
                buffer.removeSubrange(...nl)
                return line
            }
            if eof {
                if buffer.isEmpty { return nil }
                let line = buffer
                buffer = []
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { pl_read(0, $0.baseAddress, 65536) }
            if n <= 0 { eof = true } else { buffer.append(contentsOf: chunk[0..<n]) }
        }
    }
}
