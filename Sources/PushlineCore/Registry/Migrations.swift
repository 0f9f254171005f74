/// The registry schema, as a list of migrations numbered by `PRAGMA user_version`.
///
/// Migration `i` (0-based) brings the schema from version `i` to `i + 1`. Each runs
/// in its own transaction together with the `user_version` bump, so a crash leaves
/// the database at a whole version. Never edit a shipped migration: append one.
enum Migrations {
    static let all: [@Sendable (Database) throws -> Void] = [v1]

    /// v1: devices, provider key-value state, topic subscriptions.
    @Sendable static func v1(_ db: Database) throws {
            try db.exec(
                """
                CREATE TABLE devices (
                    id INTEGER PRIMARY KEY,
                    platform TEXT NOT NULL,
                    app TEXT NOT NULL,
                    registration_id TEXT NOT NULL,
                    name TEXT,
                    user TEXT,
                    device_id TEXT,
                    active INTEGER NOT NULL DEFAULT 1,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    p256dh TEXT,
                    auth TEXT,
                    browser TEXT,
                    inactive_reason TEXT,
                    inactive_at INTEGER,
                    UNIQUE (app, platform, registration_id)
                );
                CREATE INDEX devices_user ON devices (user);
                CREATE INDEX devices_app_platform_active ON devices (app, platform, active);
                CREATE TABLE kv (
                    key TEXT PRIMARY KEY,
                    value TEXT NOT NULL
                );
                CREATE TABLE topic_subscriptions (
                    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
                    topic TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (device_id, topic)
                );
                CREATE INDEX topic_subscriptions_topic ON topic_subscriptions (topic);
                """)
    }

    /// The schema version this build writes.
    static var latest: Int { all.count }

    /// Brings `db` to the latest version; a no-op when it is already there.
    ///
    /// Refuses a database written by a newer Pushline (higher `user_version`).
    static func migrate(_ db: Database) throws(DatabaseError) {
        do {
            try migrateUnchecked(db)
        } catch let e as DatabaseError {
            throw e
        } catch {
            throw DatabaseError(code: 1, message: "migration failed: \(error)", sql: nil)
        }
    }

    static func migrateUnchecked(_ db: Database) throws {
        let current = try db.userVersion
        if current > latest {
            throw DatabaseError(
                code: 1, message: "database schema version \(current) is newer than this Pushline's (\(latest))", sql: nil)
        }
        for v in current..<latest {
            try db.exec("BEGIN IMMEDIATE")
            do {
                try all[v](db)
                try db.exec("PRAGMA user_version = \(v + 1)")
                try db.exec("COMMIT")
            } catch {
                if db.inTransaction { try? db.exec("ROLLBACK") }
                throw error
            }
        }
    }
}
