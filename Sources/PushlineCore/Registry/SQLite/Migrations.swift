/// The registry schema, as a list of migrations numbered by `PRAGMA user_version`.
///
/// Migration `i` (0-based) brings the schema from version `i` to `i + 1`. Each runs
/// in its own transaction together with the `user_version` bump, so a crash leaves
/// the database at a whole version. Never edit a shipped migration: append one.
enum Migrations {
    static let all: [@Sendable (Database) throws -> Void] = [v1, v2, v3, renameUserColumn, outbox, outboxClaimIndex, outboxCoveringClaimIndex, outboxSentResults,
                                                                     outboxChunks]

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

    /// v2: what keeps large paths linear in what they touch (issue 11).
    ///
    /// - `device_counts`: exact device counts per (app, platform, active), kept by triggers on
    ///   every insert, delete and change of app, platform or active, so `stats` and the group
    ///   counts of a send read a handful of rows instead of the whole registry. Filled here from
    ///   the existing devices. Rows may reach 0; readers skip them.
    /// - `devices_inactive`: a partial index of inactive devices by `inactive_at`, so `prune`
    ///   reads only the inactive devices instead of scanning the table.
    /// - `topic_subscriptions (topic, device_id)` replaces `(topic)`: a topic's subscribers come
    ///   out in device order, without a temporary sort.
    @Sendable static func v2(_ db: Database) throws {
        try db.exec(
            """
            CREATE TABLE device_counts (
                app TEXT NOT NULL,
                platform TEXT NOT NULL,
                active INTEGER NOT NULL,
                n INTEGER NOT NULL,
                PRIMARY KEY (app, platform, active)
            ) WITHOUT ROWID;
            INSERT INTO device_counts (app, platform, active, n)
                SELECT app, platform, active, COUNT(*) FROM devices GROUP BY app, platform, active;
            CREATE TRIGGER devices_count_insert AFTER INSERT ON devices BEGIN
                INSERT INTO device_counts (app, platform, active, n) VALUES (new.app, new.platform, new.active, 1)
                    ON CONFLICT (app, platform, active) DO UPDATE SET n = n + 1;
            END;
            CREATE TRIGGER devices_count_delete AFTER DELETE ON devices BEGIN
                UPDATE device_counts SET n = n - 1 WHERE app = old.app AND platform = old.platform AND active = old.active;
            END;
            CREATE TRIGGER devices_count_update AFTER UPDATE OF app, platform, active ON devices
            WHEN old.app IS NOT new.app OR old.platform IS NOT new.platform OR old.active IS NOT new.active BEGIN
                UPDATE device_counts SET n = n - 1 WHERE app = old.app AND platform = old.platform AND active = old.active;
                INSERT INTO device_counts (app, platform, active, n) VALUES (new.app, new.platform, new.active, 1)
                    ON CONFLICT (app, platform, active) DO UPDATE SET n = n + 1;
            END;
            CREATE INDEX devices_inactive ON devices (inactive_at) WHERE active = 0;
            CREATE INDEX topic_subscriptions_topic_device ON topic_subscriptions (topic, device_id);
            DROP INDEX topic_subscriptions_topic;
            """)
    }

    /// v3: the durable `events` feed (issue 13). `seq` only grows (AUTOINCREMENT never reuses
    /// a pruned number), so a reader's cursor stays valid across pruning and restarts; `body`
    /// is the event's fields as a JSON object; `at` is Unix ms, indexed for retention pruning.
    @Sendable static func v3(_ db: Database) throws {
        try db.exec(
            """
            CREATE TABLE events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                type TEXT NOT NULL,
                at INTEGER NOT NULL,
                body TEXT NOT NULL
            );
            CREATE INDEX events_at ON events (at);
            """)
    }

    /// The `devices.user` column becomes `user_id` (issue 12): `user` is a reserved word in
    /// PostgreSQL, and both backends now share column names. SQLite (3.25+) renames it in the
    /// index `devices_user` and the count triggers too. The protocol's field stays `user`.
    @Sendable static func renameUserColumn(_ db: Database) throws {
        try db.exec("ALTER TABLE devices RENAME COLUMN user TO user_id")
    }

    /// The durable outbox (issue 13, `SQLiteOutbox`): jobs and their per-device deliveries.
    /// `seq` orders jobs; `id` is the client's handle. Delivery `state`: 0 pending, 1 sent,
    /// 2 failed, 3 canceled; `fence` grows at every claim (the fencing token).
    @Sendable static func outbox(_ db: Database) throws {
        try db.exec(
            """
            CREATE TABLE outbox_jobs (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                app TEXT NOT NULL,
                messages TEXT NOT NULL,
                indexed INTEGER NOT NULL,
                state TEXT NOT NULL,
                send_at INTEGER NOT NULL,
                deadline INTEGER NOT NULL,
                idem_key TEXT,
                estimate INTEGER NOT NULL,
                devices INTEGER NOT NULL DEFAULT 0,
                sent INTEGER NOT NULL DEFAULT 0,
                failed INTEGER NOT NULL DEFAULT 0,
                canceled INTEGER NOT NULL DEFAULT 0,
                resolved INTEGER NOT NULL DEFAULT 0,
                cursor TEXT,
                served INTEGER NOT NULL DEFAULT 0,
                created_at INTEGER NOT NULL,
                started_at INTEGER,
                finished_at INTEGER
            );
            CREATE INDEX outbox_jobs_live ON outbox_jobs (state, seq);
            CREATE INDEX outbox_jobs_served ON outbox_jobs (state, served, seq);
            CREATE INDEX outbox_jobs_unresolved ON outbox_jobs (send_at, seq) WHERE resolved = 0 AND state IN ('queued', 'running');
            CREATE INDEX outbox_jobs_idem ON outbox_jobs (app, idem_key, created_at) WHERE idem_key IS NOT NULL;
            CREATE INDEX outbox_jobs_finished ON outbox_jobs (finished_at) WHERE finished_at IS NOT NULL;
            CREATE TABLE outbox_deliveries (
                job INTEGER NOT NULL,
                n INTEGER NOT NULL,
                message INTEGER,
                device_id INTEGER,
                raw TEXT,
                state INTEGER NOT NULL,
                next_at INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                lease_owner TEXT,
                lease_until INTEGER,
                fence INTEGER NOT NULL DEFAULT 0,
                result TEXT,
                PRIMARY KEY (job, n)
            ) WITHOUT ROWID;
            CREATE INDEX outbox_deliveries_due ON outbox_deliveries (job, state, next_at) WHERE state = 0;
            """)
    }

    /// The outbox's pending deliveries indexed by lease, then due time (issue 13, background
    /// rate): a claim reads the unleased due rows (`lease_until IS NULL`, by `next_at` then `n`)
    /// and the expired leases (`lease_until < now`) as two index ranges, without stepping over
    /// the rows on the wire (leased until later) or the job's finished rows. Before, the claim
    /// read the job's rows in `n` order through the primary key (every finished row again at
    /// each claim: a 100,000-device job's claims took 57% of the database thread, 22 ms each
    /// half-way) and the due index (`job, state, next_at`) stepped over the leased rows.
    @Sendable static func outboxClaimIndex(_ db: Database) throws {
        try db.exec(
            """
            DROP INDEX outbox_deliveries_due;
            CREATE INDEX outbox_deliveries_claim ON outbox_deliveries (job, lease_until, next_at) WHERE state = 0;
            """)
    }

    /// The claim index covers what a claim and `nextDue` read of it (`n`, `state`), so they
    /// step over the rows on the wire without reading them (issue 13, background rate): leases
    /// are kept in memory (`SQLiteOutboxLeases`), so a row on the wire is in the index's
    /// unleased range and each claim steps over it. Before, a claim leased each row with an
    /// UPDATE (the row and its index entry written again: about 3 µs a delivery of the
    /// database thread's 12); `state` is in the key because SQLite 3.40 does not count a
    /// partial index's own WHERE term as covered.
    @Sendable static func outboxCoveringClaimIndex(_ db: Database) throws {
        try db.exec(
            """
            DROP INDEX outbox_deliveries_claim;
            CREATE INDEX outbox_deliveries_claim ON outbox_deliveries (job, lease_until, next_at, n, state) WHERE state = 0;
            """)
    }

    /// The results of the deliveries sent, one row per completion instead of one per delivery
    /// (issue 13, background rate): a completion writes each sent row's new state with a
    /// NULL `result`, and the batch's results in one row here, in the same transaction.
    /// Before, every sent row grew by its result's JSON (about 190 bytes for APNs) in place,
    /// splitting its page in the middle of the table: the database thread spent a median of
    /// 11.9 µs per background delivery before, 10.1 µs after (3 alternating runs of 100,000
    /// deliveries; an experiment storing nothing for sent rows: 9.4). `ns` and `results` are JSON arrays of the same length (the rows' `n`, their
    /// results); `first_n` and `last_n` bound `ns` for `results` paging. Rows written as failed,
    /// retried or canceled keep their result in `outbox_deliveries.result`, as do sent rows
    /// written before this version.
    @Sendable static func outboxSentResults(_ db: Database) throws {
        try db.exec(
            """
            CREATE TABLE outbox_sent_results (
                job INTEGER NOT NULL,
                batch INTEGER PRIMARY KEY,
                first_n INTEGER NOT NULL,
                last_n INTEGER NOT NULL,
                ns TEXT NOT NULL,
                results TEXT NOT NULL
            );
            CREATE INDEX outbox_sent_results_range ON outbox_sent_results (job, last_n, first_n);
            """)
    }

    /// Pending deliveries stored as runs (`SQLiteOutboxChunk`), not a row per device (issue
    /// 13, background rate): resolution writes one row per `SQLiteOutboxChunk.size` devices; a
    /// claim reads whole chunks; a completion deletes the chunk (writing back what it did not
    /// cover) and writes a delivery row only for a device that failed or is retried. Before,
    /// each delivery was written twice (inserted at resolution with its claim index entry,
    /// updated at completion out of the index) and read twice (claim index, row).
    /// `ids` and `messages` are comma-separated integers (an empty entry for none), `raws` a
    /// JSON array of the `raw` texts of devices named by token (NULL when there are none).
    /// Rows of `outbox_deliveries` written by earlier versions are claimed as before.
    @Sendable static func outboxChunks(_ db: Database) throws {
        try db.exec(
            """
            CREATE TABLE outbox_chunks (
                id INTEGER PRIMARY KEY,
                job INTEGER NOT NULL,
                first_n INTEGER NOT NULL,
                last_n INTEGER NOT NULL,
                state INTEGER NOT NULL,
                next_at INTEGER NOT NULL,
                ids TEXT NOT NULL,
                messages TEXT,
                raws TEXT
            );
            CREATE UNIQUE INDEX outbox_chunks_range ON outbox_chunks (job, first_n);
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
