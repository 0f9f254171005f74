import Glibc
import Synchronization
import Testing

@testable import PushlineCore

/// A fresh temporary directory (mkdtemp), removed with its files by `remove()`.
struct TempDir {
    let path: String

    init() {
        var tmpl = Array("/tmp/pushline-registry-XXXXXX".utf8CString)
        let p = tmpl.withUnsafeMutableBufferPointer { buf -> String? in
            guard let base = buf.baseAddress else { return nil }
            return mkdtemp(base).map { String(cString: $0) }
        }
        guard let p else { fatalError("mkdtemp failed") }
        path = p
    }

    var db: String { path + "/registry.db" }

    func remove() {
        for f in ["registry.db", "registry.db-wal", "registry.db-shm"] { unlink(path + "/" + f) }
        rmdir(path)
    }
}

func apnsToken(_ n: Int) -> String {
    let hex = Array("0123456789ABCDEF")
    var s = ""
    var v = UInt64(n) &* 0x9E37_79B9_7F4A_7C15 | 1
    for _ in 0..<64 {
        s.append(hex[Int(v & 15)])
        v = v >> 4 | (v << 60)
        v = v &* 6364136223846793005 &+ 1442695040888963407
    }
    return s
}

func fcm(_ token: String, app: String = "default", user: String? = nil) throws(CommandError) -> DeviceInput {
    try DeviceInput(platform: .fcm, app: app, registrationId: token, user: user)
}

@discardableResult
func expectError(_ code: CommandError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws(CommandError) -> Void) async -> CommandError? {
    do {
        try await body()
        Issue.record("expected \(code.rawValue)", sourceLocation: sourceLocation)
        return nil
    } catch {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        return error
    }
}

@Suite struct RegistryTests {
    @Test func reopenKeepsDataAndMigrationsAreIdempotent() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        var ids: [Int64] = []
        do {
            let reg = try SQLiteRegistry(path: dir.db)
            ids = try await reg.register((0..<5).map { i in try fcm("tok-\(i)") }, updateOnDuplicate: false).map(\.device.id)
            await reg.kvSet("apns.jwt", "abc")
            reg.close()
            await expectError(.shuttingDown) { () async throws(CommandError) in _ = try await reg.stats() }
            reg.close()  // twice is harmless
        }
        let reg = try SQLiteRegistry(path: dir.db)
        #expect(try await reg.devices(DeviceFilter()).map(\.id) == ids)
        #expect(await reg.kvGet("apns.jwt") == "abc")
        reg.close()
        // Direct: the version is the latest and migrating again changes nothing.
        let db = try Database(path: dir.db)
        #expect(try db.userVersion == Migrations.latest)
        try Migrations.migrate(db)
        #expect(try db.userVersion == Migrations.latest)
        #expect(try db.query("SELECT COUNT(*) FROM devices") { $0.int(0) } == [5])
        #expect(try db.query("PRAGMA journal_mode") { $0.text(0) } == ["wal"])
        #expect(try db.query("PRAGMA foreign_keys") { $0.int(0) } == [1])
    }

    @Test func newerSchemaIsRefused() throws {
        let dir = TempDir()
        defer { dir.remove() }
        do {
            let db = try Database(path: dir.db)
            try db.exec("PRAGMA user_version = \(Migrations.latest + 1)")
        }
        #expect(throws: CommandError.self) { try SQLiteRegistry(path: dir.db) }
        #expect(throws: CommandError.self) { try SQLiteRegistry(path: dir.path + "/missing-dir/registry.db") }
    }

    @Test func databaseErrorsCarrySQLAndMessage() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let db = try Database(path: dir.db)
        do {
            try db.execute("SELECT * FROM no_such_table")
            Issue.record("expected an error")
        } catch {
            #expect(error.message.contains("no such table"))
            #expect(error.sql == "SELECT * FROM no_such_table")
            #expect(error.commandError.code == .internalError)
        }
    }
}

/// The database thread's queue keeps the outbox worker's jobs apart from clients' (an async
/// accept must not share a transaction with a 5,000-row append) and alternates between them.
@Suite struct RegistryJobQueueTests {
    final class Log: Sendable { let m = Mutex<[String]>([]) }

    static func job(_ tag: String, background: Bool, into log: Log) -> RegistryJob {
        var j = RegistryJob(
            write: true,
            run: { _ in
                log.m.withLock { $0.append(tag) }
                return (true, { _ in })
            },
            abort: { _ in })
        j.background = background
        return j
    }

    /// The tags of a batch, by running each job's closure through a log.
    static func tags(_ batch: [RegistryJob]?, _ log: Log) throws -> [String] {
        let dir = TempDir()
        defer { dir.remove() }
        let store = try SQLiteRegistryStore(path: dir.db)
        log.m.withLock { $0.removeAll() }
        for j in batch ?? [] { _ = j.run(store) }
        return log.m.withLock { $0 }
    }

    @Test func backgroundAndClientJobsNeverShareABatchAndTakeTurns() throws {
        let q = RegistryJobQueue()
        let log = Log()
        for i in 0..<3 { #expect(q.push(Self.job("b\(i)", background: true, into: log))) }
        for i in 0..<5 { #expect(q.push(Self.job("c\(i)", background: false, into: log))) }
        // Clients first (nothing was taken before), then the worker's, then clients again.
        #expect(try Self.tags(q.take(max: 2), log) == ["c0", "c1"])
        #expect(try Self.tags(q.take(max: 2), log) == ["b0", "b1"])
        #expect(try Self.tags(q.take(max: 1000), log) == ["c2", "c3", "c4"])
        #expect(try Self.tags(q.take(max: 1000), log) == ["b2"])
        // One kind alone is taken whole, batch after batch.
        for i in 5..<8 { #expect(q.push(Self.job("c\(i)", background: false, into: log))) }
        #expect(try Self.tags(q.take(max: 2), log) == ["c5", "c6"])
        #expect(try Self.tags(q.take(max: 2), log) == ["c7"])
        q.closeAndJoin()
        #expect(q.take(max: 10) == nil)
    }
}
