import Foundation
import Glibc
import Synchronization
import Testing

@testable import PushlineCore

/// What only the PostgreSQL backend has: migrations under the advisory lock, the schema
/// version table, SQLSTATE mapping, the URI syntax. Needs the test cluster (see TestBackend).
@Suite(.enabled(if: TestBackend.all.contains(.postgres), "needs PUSHLINE_TEST_PG_HOST (make test)"))
struct PostgresRegistryTests {
    /// Ten registries (as ten daemons) opening one fresh database at the same instant: every one
    /// starts, and each migration ran exactly once (one row per version; a second run of v1
    /// would have failed on CREATE TABLE devices).
    @Test func tenConcurrentOpensMigrateOnce() async throws {
        let name = try TestBackend.createDatabase()
        defer { TestBackend.dropDatabase(name) }
        let uri = try TestBackend.pgURI(name)
        let errors = Mutex<[String]>([])
        let opened = Mutex<Int>(0)
        let start = DispatchSemaphore(value: 0)
        let done = DispatchGroup()
        for _ in 0..<10 {
            done.enter()
            let t = Thread {
                start.wait()
                do {
                    let r = try PostgresRegistry(conninfo: uri, poolSize: 1)
                    r.close()
                    opened.withLock { $0 += 1 }
                } catch {
                    errors.withLock { $0.append("\(error)") }
                }
                done.leave()
            }
            t.start()
        }
        for _ in 0..<10 { start.signal() }
        done.wait()
        #expect(errors.withLock { $0 } == [])
        #expect(opened.withLock { $0 } == 10)
        let c = try PGConnection(conninfo: uri)
        let r = try c.query("SELECT version, count(*) OVER () FROM pushline_schema_migrations ORDER BY version")
        #expect(r.rows == PostgresMigrations.latest)
        #expect((0..<r.rows).map { r.int($0, 0) } == (1...PostgresMigrations.latest).map(Int64.init))
    }

    @Test func reopenKeepsDataAndNewerSchemaIsRefused() async throws {
        let name = try TestBackend.createDatabase()
        defer { TestBackend.dropDatabase(name) }
        let uri = try TestBackend.pgURI(name)
        var ids: [Int64] = []
        do {
            let reg = try PostgresRegistry(conninfo: uri)
            ids = try await reg.register((0..<5).map { i in try fcm("tok-\(i)") }, updateOnDuplicate: false).map(\.device.id)
            await reg.set("apns.jwt", "abc")
            reg.close()
            await expectError(.shuttingDown) { () async throws(CommandError) in _ = try await reg.stats() }
            reg.close()
        }
        let reg = try PostgresRegistry(conninfo: uri)
        #expect(try await reg.devices(DeviceFilter()).map(\.id) == ids)
        #expect(await reg.get("apns.jwt") == "abc")
        reg.close()
        let c = try PGConnection(conninfo: uri)
        try c.query("INSERT INTO pushline_schema_migrations (version, name) VALUES ($1, 'future')", [.int(Int64(PostgresMigrations.latest + 1))])
        #expect(throws: CommandError.self) { try PostgresRegistry(conninfo: uri) }
    }

    /// A unique violation maps to `constraint` on `registration_id` and shows neither the DETAIL
    /// line nor the key (a token); a missing table is `other`; SQLSTATE class 08 is `unavailable`.
    @Test func errorsAreMappedWithoutValues() throws {
        let name = try TestBackend.createDatabase()
        defer { TestBackend.dropDatabase(name) }
        let uri = try TestBackend.pgURI(name)
        do { let r = try PostgresRegistry(conninfo: uri); r.close() }
        let c = try PGConnection(conninfo: uri)
        let secret = "very-secret-token-0123456789"
        let insert = "INSERT INTO devices (platform, app, registration_id, created_at, updated_at) VALUES ('fcm', 'default', $1, 0, 0)"
        try c.query(insert, [.text(secret)])
        do {
            try c.query(insert, [.text(secret)])
            Issue.record("expected a unique violation")
        } catch {
            #expect(error.sqlstate == "23505")
            #expect(error.failure == .constraint(field: "registration_id", error.description))
            #expect(error.failure.commandError.code == .duplicateRegistration)
            #expect(!error.description.contains(secret), "\(error.description)")
        }
        do {
            try c.query("SELECT * FROM no_such_table")
            Issue.record("expected an error")
        } catch {
            #expect(error.sqlstate == "42P01" && error.description.contains("no_such_table"))
            #expect(error.failure.commandError.code == .internalError)
        }
        #expect(PGError(context: "x", sqlstate: "08006", message: "m", connectionLost: false).failure.isRetryable)
    }

    /// No server behind the socket directory: `unavailable` at once, naming no password.
    @Test func unreachableDatabaseIsUnavailable() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let start = monotonicNanos()
        do {
            _ = try PostgresRegistry(conninfo: "postgresql://pushline:hunter2secret@/nodb?host=\(dir.path)")
            Issue.record("expected unavailable")
        } catch {
            #expect(error.code == .unavailable, "\(error)")
            #expect(error.details["retry_after_ms"] != nil)
            #expect(!error.message.contains("hunter2secret"), "\(error.message)")
        }
        #expect(monotonicNanos() - start < 5_000_000_000)
    }
}

@Suite struct DatabaseLocationTests {
    @Test func parsesAndRedacts() throws {
        #expect(try DatabaseLocation("/var/lib/p.db") == .sqlite(path: "/var/lib/p.db"))
        #expect(try DatabaseLocation("sqlite:rel/p.db") == .sqlite(path: "rel/p.db"))
        #expect(try DatabaseLocation("postgresql://u@/db?host=/run/pg") == .postgres(conninfo: "postgresql://u@/db?host=/run/pg"))
        #expect(try DatabaseLocation("postgres://h:5433/db") == .postgres(conninfo: "postgres://h:5433/db"))
        #expect(throws: ConfigError.self) { try DatabaseLocation("postgresql://h/db?nosuchoption=1") }
        #expect(throws: ConfigError.self) { try DatabaseLocation("sqlite:") }
        #expect(DatabaseLocation.redact("postgresql://app:s3cr%40t@db.internal:5432/p?sslmode=require")
            == "postgresql://app:***@db.internal:5432/p?sslmode=require")
        #expect(DatabaseLocation.redact("postgresql://app@db/p?password=abc&sslmode=disable") == "postgresql://app@db/p?password=***&sslmode=disable")
        #expect(DatabaseLocation.redact("postgresql://app@db/p") == "postgresql://app@db/p")
        #expect(DatabaseLocation.redact("/var/lib/p.db") == "/var/lib/p.db")
        // A bad URI's error does not echo the password.
        do {
            _ = try DatabaseLocation("postgresql://u:topsecret@h/db?bogus=1")
        } catch {
            #expect(!error.description.contains("topsecret"), "\(error.description)")
        }
    }
}
