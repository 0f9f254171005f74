#if canImport(Glibc)
import Glibc
#endif

extension Dispatcher {
    /// Result bytes a send keeps in memory before it moves them to a temporary file (`ByteSpool`).
    /// A 5,000-device chunk renders about 1 MB; a 100,000-device send about 17 MB.
    static let resultMemoryLimit = 8 << 20

    /// Where large sends spool their results: the SQLite database's directory (a disk the daemon
    /// writes already; `/tmp` may be memory). On PostgreSQL, systemd's `$STATE_DIRECTORY`
    /// (the unit's `StateDirectory=`), else the working directory. The files are unlinked as soon
    /// as they are made.
    var resultSpoolDirectory: String {
        guard let path = (try? DatabaseLocation(config.database))?.sqlitePath else {
            if let state = getenv("STATE_DIRECTORY"), let first = String(cString: state).split(separator: ":").first {
                return String(first)
            }
            return "."
        }
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}

/// A pipelined send's results: each chunk's bytes (results led by a comma) are appended in chunk
/// order as soon as the chunks before it are done, the first comma becoming the opening bracket.
/// Confined to the send's task.
final class ResultCollector {
    let spool: ByteSpool
    private(set) var sent = 0
    private(set) var failed = 0
    private var next = 0
    /// Chunks taken so far.
    var chunks: Int { next }
    private var started = false

    init(spool: ByteSpool) { self.spool = spool }

    /// Moves the parts that are next in order out of `parts` into the spool.
    func take(from parts: inout [Int: (bytes: [UInt8], sent: Int, failed: Int)]) {
        while var part = parts.removeValue(forKey: next) {
            next += 1
            sent += part.sent
            failed += part.failed
            guard !part.bytes.isEmpty else { continue }
            if !started { part.bytes[0] = UInt8(ascii: "[") }
            started = true
            spool.append(part.bytes)
        }
    }

    /// Closes the array and returns it (`.raw` or `.spooled`).
    func finish() -> Result<JSONValue, SpoolError> {
        spool.append(started ? [UInt8(ascii: "]")] : Array("[]".utf8))
        return spool.finish()
    }
}
