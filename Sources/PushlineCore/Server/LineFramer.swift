#if canImport(Glibc)
import Glibc
#endif

/// Splits a connection's byte stream into newline-terminated request lines: the server's
/// framing, as a pure value with no socket so that it can be unit-tested and fuzzed
/// (Tests/fuzz/targets/framing.swift).
///
/// A line is the bytes before a `\n` (without it). A line longer than `maxLineBytes` is
/// reported once as `.tooLong`, as soon as that is known, and its bytes are discarded up
/// to and including the next `\n`. Blank lines and a trailing `\r` are the caller's business.
///
/// ```swift
/// var f = LineFramer(maxLineBytes: 1 << 20)
/// bytes.withUnsafeBufferPointer { p in
///     f.feed(p) { event in
///         if case .line(let line) = event { handle(line) }
///         return true   // false: stop here and keep the rest for `resume`
///     }
/// }
/// ```
struct LineFramer {
    enum Event {
        /// A complete line; the pointer is valid only during the callback.
        case line(UnsafeBufferPointer<UInt8>)
        /// A line longer than `maxLineBytes`; its bytes are being discarded.
        case tooLong
    }

    let maxLineBytes: Int
    /// The start of an incomplete line (or, after a stop, the unprocessed rest of a chunk).
    private(set) var buffer: [UInt8] = []
    /// Inside a too-long line: dropping bytes until the next newline.
    private(set) var discarding = false

    init(maxLineBytes: Int) {
        self.maxLineBytes = maxLineBytes
    }

    /// Frames `chunk`, calling `emit` for each event in order. When `emit` returns false,
    /// the bytes after that event are kept in `buffer` and `feed` returns; `resume` goes on.
    mutating func feed(_ chunk: UnsafeBufferPointer<UInt8>, _ emit: (Event) -> Bool) {
        let count = chunk.count
        guard let base = chunk.baseAddress else { return }
        var start = 0
        while start < count {
            // Find the next newline in chunk[start..<count].
            var nl = -1
            if let hit = memchr(base + start, 0x0A, count - start) {
                nl = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
            }
            if discarding {
                if nl < 0 { return }
                discarding = false
                start = nl + 1
                continue
            }
            var go = true
            if nl < 0 {
                buffer.append(contentsOf: UnsafeBufferPointer(rebasing: chunk[start..<count]))
                if buffer.count > maxLineBytes {
                    buffer.removeAll(keepingCapacity: false)
                    discarding = true
                    _ = emit(.tooLong)
                }
                return
            }
            if buffer.isEmpty {
                if nl - start > maxLineBytes {
                    go = emit(.tooLong)
                } else {
                    go = emit(.line(UnsafeBufferPointer(rebasing: chunk[start..<nl])))
                }
            } else {
                buffer.append(contentsOf: UnsafeBufferPointer(rebasing: chunk[start..<nl]))
                if buffer.count > maxLineBytes {
                    go = emit(.tooLong)
                } else {
                    // `emit` cannot reach the framer (exclusive access): the buffer stays as it is.
                    go = buffer.withUnsafeBufferPointer { emit(.line($0)) }
                }
                // A long line's buffer (a 100k-device bulk is ~7 MB) is not kept for the next one;
                // cleared after the line is handled so that a kept buffer is not copied.
                buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
            }
            start = nl + 1
            if !go {
                if start < count { buffer.append(contentsOf: UnsafeBufferPointer(rebasing: chunk[start..<count])) }
                return
            }
        }
    }

    /// Frames what a stopped `feed` kept, before any new bytes are fed.
    mutating func resume(_ emit: (Event) -> Bool) {
        guard !buffer.isEmpty else { return }
        let pending = buffer
        buffer.removeAll(keepingCapacity: true)
        pending.withUnsafeBufferPointer { feed($0, emit) }
    }
}
