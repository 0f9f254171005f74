import Glibc
import Synchronization
import Testing

@testable import PushlineCore

/// A storage backend for the conformance suite. PostgreSQL runs when `PUSHLINE_TEST_PG_HOST`
/// names the socket directory of a cluster whose superuser is `pushline` (Tests/pg/cluster.sh,
/// started by `make test`); `PUSHLINE_TEST_REQUIRE_PG=1` (also set by `make test`) makes its
/// absence a failure instead of a skip.
enum TestBackend: String, Sendable, CustomStringConvertible, CaseIterable {
    case sqlite, postgres

    var description: String { rawValue }

    static var pgHost: String? { getenv("PUSHLINE_TEST_PG_HOST").map { String(cString: $0) } }

    static var all: [TestBackend] {
        if pgHost == nil && getenv("PUSHLINE_TEST_REQUIRE_PG") == nil { return [.sqlite] }
        return [.sqlite, .postgres]
    }

    private static let counter = Atomic<Int>(0)

    /// A URI for database `name` on the test cluster.
    static func pgURI(_ name: String) throws -> String {
        guard let host = pgHost else { throw TestSetupError("PUSHLINE_TEST_PG_HOST is not set (make test starts a cluster)") }
        return "postgresql://pushline@/\(name)?host=\(host)"
    }

    /// Creates a fresh, empty PostgreSQL database; returns its name.
    static func createDatabase() throws -> String {
        let name = "t_\(getpid())_\(counter.add(1, ordering: .relaxed).newValue)"
        let admin = try PGConnection(conninfo: try pgURI("postgres"))
        try admin.exec("CREATE DATABASE \(name)")
        return name
    }

    static func dropDatabase(_ name: String) {
        guard let uri = try? pgURI("postgres"), let admin = try? PGConnection(conninfo: uri) else { return }
        try? admin.exec("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// A registry on a fresh database of this backend.
    func open() throws -> TestRegistry {
        switch self {
        case .sqlite:
            let dir = TempDir()
            return TestRegistry(reg: try SQLiteRegistry(path: dir.db), remove: { dir.remove() })
        case .postgres:
            let name = try Self.createDatabase()
            return TestRegistry(reg: try PostgresRegistry(conninfo: try Self.pgURI(name), poolSize: 4), remove: { Self.dropDatabase(name) })
        }
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A registry under test and how to throw its database away.
final class TestRegistry {
    let reg: any DeviceRegistry
    private let cleanup: () -> Void
    init(reg: any DeviceRegistry, remove: @escaping () -> Void) {
        self.reg = reg
        cleanup = remove
    }
    func remove() {
        reg.close()
        cleanup()
    }
}
