import Glibc
import Testing

@testable import PushlineCore

/// A large send's results move to an unlinked temporary file past the memory limit (issue 11) and
/// come back byte for byte; without a usable directory they stay in memory.
/// Serialized: the tests count this process's open result files.
@Suite(.serialized) struct SpoolTests {
    static func pieces(_ n: Int) -> [[UInt8]] {
        (0..<n).map { i in Array(",{\"i\":\(i),\"pad\":\"\(String(repeating: "x", count: i % 50))\"}".utf8) }
    }

    /// Open descriptors of this process whose target contains `name`.
    static func openFiles(containing name: String) -> Int {
        guard let dir = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(dir) }
        var n = 0
        while let e = readdir(dir) {
            let fd = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            var buf = [CChar](repeating: 0, count: 4096)
            let len = readlink("/proc/self/fd/" + fd, &buf, buf.count - 1)
            if len > 0, String(decoding: buf[0..<len].map { UInt8(bitPattern: $0) }, as: UTF8.self).contains(name) { n += 1 }
        }
        return n
    }

    @Test func spoolsPastTheLimitAndReadsBackTheSameBytes() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let spool = ByteSpool(directory: dir.path, memoryLimit: 10_000)
        let parts = Self.pieces(2000)
        for p in parts { spool.append(p) }
        #expect(spool.spooled)
        // The file is unlinked at once: the directory stays empty.
        #expect(opendir(dir.path).map { d in defer { closedir(d) }; var k = 0; while readdir(d) != nil { k += 1 }; return k } == 2)
        guard case .success(.spooled(let file)) = spool.finish() else {
            Issue.record("expected spooled results")
            return
        }
        let all = parts.flatMap { $0 }
        #expect(file.count == all.count)
        #expect(try file.readAll().get() == all)
        // Pieces from an offset, as the server reads them; the last one is short.
        #expect(try file.read(at: 100, max: 50).get() == Array(all[100..<150]))
        #expect(try file.read(at: all.count - 10, max: 4096).get() == Array(all[(all.count - 10)...]))
        #expect(Self.openFiles(containing: ".pushline-results-") == 1)
        // The JSON layer hands the file over as its own part, and joins to the same text.
        let v = JSONValue.object(["ok": .bool(true), "results": .spooled(file)])
        let parts2 = v.serializedParts()
        #expect(parts2.count == 3 && parts2[1] == .spooled(file))
        #expect(v.serializedSegments().flatMap { $0 } == Array(#"{"ok":true,"results":"#.utf8) + all + [UInt8(ascii: "}")])
    }

    @Test func theFileIsClosedWithItsLastReference() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let before = Self.openFiles(containing: dir.path)
        do {
            let spool = ByteSpool(directory: dir.path, memoryLimit: 100)
            for p in Self.pieces(50) { spool.append(p) }
            _ = spool.finish()
        }
        #expect(Self.openFiles(containing: dir.path) == before)
    }

    /// The server hands a written response's file to `closeInBackground` (deleting 170 MB took
    /// its one loop thread 2-14 ms): the file is closed off the caller's thread, later reads fail
    /// with a clear error, and releasing the object then does not close the descriptor number
    /// again (by then it may belong to another file).
    @Test func closeInBackgroundClosesOnceElsewhere() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let before = Self.openFiles(containing: dir.path)
        let spool = ByteSpool(directory: dir.path, memoryLimit: 100)
        for p in Self.pieces(50) { spool.append(p) }
        guard case .success(.spooled(let file)) = spool.finish() else {
            Issue.record("expected spooled results")
            return
        }
        #expect(Self.openFiles(containing: dir.path) == before + 1)
        file.closeInBackground()
        for _ in 0..<1000 where Self.openFiles(containing: dir.path) != before {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(Self.openFiles(containing: dir.path) == before)
        guard case .failure(let e) = file.read(at: 0, max: 10) else {
            Issue.record("a read after closeInBackground succeeded")
            return
        }
        #expect(e.message.contains("closed"))
        file.closeInBackground()  // a second call does nothing
        // The lowest free number is reused by the next open: it must survive the release.
        let other = open("/dev/null", O_RDONLY)
        #expect(other >= 0)
        defer { close(other) }
        _ = consume file
        #expect(fcntl(other, F_GETFD) >= 0)
    }

    @Test func smallResultsAndUnusableDirectoriesStayInMemory() {
        let small = ByteSpool(directory: "/nonexistent-dir", memoryLimit: 1 << 20)
        small.append(Array("[1".utf8))
        small.append(Array("]".utf8))
        #expect(!small.spooled)
        guard case .success(.raw(let segs)) = small.finish() else { Issue.record("expected raw"); return }
        #expect(segs.flatMap { $0 } == Array("[1]".utf8))
        // Past the limit but the file cannot be made: everything stays, in order.
        let big = ByteSpool(directory: "/nonexistent-dir", memoryLimit: 100)
        let parts = Self.pieces(100)
        for p in parts { big.append(p) }
        #expect(!big.spooled)
        guard case .success(.raw(let all)) = big.finish() else { Issue.record("expected raw"); return }
        #expect(all.flatMap { $0 } == parts.flatMap { $0 })
    }
}
