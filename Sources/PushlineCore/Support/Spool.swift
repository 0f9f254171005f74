#if canImport(Glibc)
import Glibc
#endif
import CPushlineShims
import Synchronization

/// Bytes kept in an unlinked temporary file: the results of a large send, so that the daemon's
/// memory does not grow with the send's size (1,000,000 results are about 170 MB). The server
/// writes them to the socket a piece at a time (`read(at:max:)`).
///
/// The size never changes and `pread` uses no file offset, so it is Sendable; the descriptor is
/// an atomic only so that `closeInBackground()` can take it. The file is closed in `deinit`
/// (or by `closeInBackground()`), which deletes it (it was unlinked when created).
public final class SpooledBytes: Sendable, Equatable {
    private let descriptor: Atomic<Int32>
    /// How many bytes the file holds.
    public let count: Int

    init(fd: Int32, count: Int) {
        descriptor = Atomic(fd)
        self.count = count
    }

    deinit {
        let fd = descriptor.exchange(-1, ordering: .acquiringAndReleasing)
        if fd >= 0 { close(fd) }
    }

    /// Closes the file off the caller's thread. Closing deletes it, and deleting 170 MB frees its
    /// blocks and page cache: about 2-6 ms measured at 1,000,000 results, which the server's
    /// one event-loop thread would otherwise spend before it reads the connection's next
    /// request. Only once every byte has been read: later reads fail.
    public func closeInBackground() {
        let fd = descriptor.exchange(-1, ordering: .acquiringAndReleasing)
        guard fd >= 0 else { return }
        Task.detached(priority: .utility) { close(fd) }
    }

    /// Up to `max` bytes from `offset` (fewer at the end), or the read error.
    public func read(at offset: Int, max: Int) -> Result<[UInt8], SpoolError> {
        let n = Swift.max(0, Swift.min(max, count - offset))
        let fd = descriptor.load(ordering: .acquiring)
        guard fd >= 0 || n == 0 else { return .failure(SpoolError(message: "cannot read spooled results: the file was closed")) }
        var out = [UInt8](repeating: 0, count: n)
        var done = 0
        while done < n {
            let r = out.withUnsafeMutableBytes { p in pread(fd, p.baseAddress.map { $0 + done }, n - done, off_t(offset + done)) }
            if r > 0 {
                done += r
            } else if r < 0 && pl_errno() == EINTR {
                continue
            } else {
                return .failure(SpoolError(message: "cannot read spooled results: \(r == 0 ? "file shorter than written" : String(cString: strerror(pl_errno())))"))
            }
        }
        return .success(out)
    }

    /// Every byte (for callers that need one buffer; the server reads a piece at a time).
    public func readAll() -> Result<[UInt8], SpoolError> { read(at: 0, max: count) }

    public static func == (a: SpooledBytes, b: SpooledBytes) -> Bool { a === b }
}

public struct SpoolError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Collects byte segments in memory and moves them to an unlinked temporary file in `directory`
/// once they pass `memoryLimit`, so a send holds at most about `memoryLimit` bytes of results.
///
/// If the file cannot be made or written (disk full), the bytes stay in (or come back to)
/// memory: the send still answers, as before spooling existed. Confined to one task (the send's
/// pipeline).
final class ByteSpool {
    private var segments: [[UInt8]] = []
    private var inMemory = 0
    private var fd: Int32 = -1
    private var written = 0
    private var unusable = false
    private var lost: SpoolError?
    let directory: String
    let memoryLimit: Int

    init(directory: String, memoryLimit: Int) {
        self.directory = directory
        self.memoryLimit = memoryLimit
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Whether the bytes went to a file (for tests and logs).
    var spooled: Bool { fd >= 0 }

    /// Appends bytes (their order is kept).
    func append(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        if fd < 0 && !unusable && inMemory + bytes.count > memoryLimit { moveToFile() }
        if fd >= 0 {
            spoolWrite(bytes)
        } else {
            segments.append(bytes)
            inMemory += bytes.count
        }
    }

    /// The bytes as a JSON value: `.raw` segments, or `.spooled` once they went to the file;
    /// an error only if bytes written to the file could not be read back after a failed write.
    func finish() -> Result<JSONValue, SpoolError> {
        if let lost { return .failure(lost) }
        guard fd >= 0 else { return .success(.raw(segments)) }
        let f = fd
        fd = -1
        return .success(.spooled(SpooledBytes(fd: f, count: written)))
    }

    private func moveToFile() {
        let dir = directory.isEmpty ? "." : directory
        var template = Array((dir + "/.pushline-results-XXXXXX").utf8CString)
        let f = template.withUnsafeMutableBufferPointer { p in p.baseAddress.map { mkstemp($0) } ?? -1 }
        guard f >= 0 else {
            unusable = true
            return
        }
        // Unlinked at once: the file lives as long as its descriptor; nothing is left behind.
        _ = template.withUnsafeBufferPointer { p in p.baseAddress.map { unlink($0) } }
        fd = f
        let held = segments
        segments = []
        inMemory = 0
        for s in held {
            if fd >= 0 {
                spoolWrite(s)
            } else {
                segments.append(s)
                inMemory += s.count
            }
        }
    }

    /// Writes `bytes` to the file. On failure what the file holds comes back into memory, then
    /// `bytes`, and the file is dropped for the rest of this send.
    private func spoolWrite(_ bytes: [UInt8]) {
        var done = 0
        while done < bytes.count {
            let r = bytes.withUnsafeBytes { p in write(fd, p.baseAddress.map { $0 + done }, bytes.count - done) }
            if r > 0 {
                done += r
                continue
            }
            if r < 0 && pl_errno() == EINTR { continue }
            let failure = r < 0 ? String(cString: strerror(pl_errno())) : "nothing written"
            let partial = SpooledBytes(fd: fd, count: written)  // closes the file when released
            fd = -1
            unusable = true
            switch partial.readAll() {
            case .success(let back):
                segments = back.isEmpty ? [bytes] : [back, bytes]
                inMemory = back.count + bytes.count
            case .failure(let e):
                lost = SpoolError(message: "spooling results failed (\(failure)) and reading them back failed: \(e.message)")
                segments = [bytes]
                inMemory = bytes.count
            }
            written = 0
            return
        }
        written += bytes.count
    }
}
