/// The PostgreSQL schema, as a list of migrations recorded in `pushline_schema_migrations`.
///
/// Every daemon runs `migrate` at start, in one transaction that first takes a transaction-level
/// advisory lock (`pg_advisory_xact_lock`, PostgreSQL manual 9.27.10): of ten daemons starting
/// at once on one database, the first migrates and the others wait for its commit, then find
/// nothing to do. The versions table has one row per applied migration (its primary key would
/// refuse a second run). Never edit a shipped migration: append one (other branches append
/// theirs too; the order is fixed at merge time).
enum PostgresMigrations {
    /// The advisory lock's key ("pushline" as ASCII, packed into 63 bits): shared by every daemon.
    static let lockKey: Int64 = 0x70_7573_686C_696E

    static let all: [(name: String, sql: String)] = [
        ("registry", v1), ("outbox and event order", outbox), ("outbox lease owners", outboxOwners),
    ]

    /// The outbox's lease owners and how long each is alive (Unix ms): a daemon's heartbeat
    /// renews its one row, instead of the lease of every delivery it holds (thousands of row
    /// updates a beat, which under load took longer than a short lease: test_fleet.py's kill -9).
    static let outboxOwners = """
        CREATE TABLE outbox_owners (
            owner text PRIMARY KEY,
            alive_until bigint NOT NULL
        );
        """

    /// v1: the registry as SQLite's migrations v1-v4 left it (devices with `user_id`, kv, topic
    /// subscriptions, maintained device counts, the inactive index) and the `events` feed table
    /// of SQLite's v3 with `seq bigserial`.
    ///
    /// `device_counts` is kept by statement-level triggers with transition tables, so a batch of
    /// 1,000 registrations updates each count row once, not 1,000 times; rows are touched in key
    /// order to keep concurrent writers from deadlocking (a deadlock left is retried by the pool).
    static let v1 = """
        CREATE TABLE devices (
            id bigserial PRIMARY KEY,
            platform text NOT NULL,
            app text NOT NULL,
            registration_id text NOT NULL,
            name text,
            user_id text,
            device_id text,
            active boolean NOT NULL DEFAULT true,
            created_at bigint NOT NULL,
            updated_at bigint NOT NULL,
            p256dh text,
            auth text,
            browser text,
            inactive_reason text,
            inactive_at bigint,
            CONSTRAINT devices_token UNIQUE (app, platform, registration_id)
        );
        CREATE INDEX devices_user ON devices (user_id, id);
        CREATE INDEX devices_app_platform_active ON devices (app, platform, active, id);
        CREATE INDEX devices_inactive ON devices (inactive_at) WHERE NOT active;
        CREATE TABLE kv (
            key text PRIMARY KEY,
            value text NOT NULL
        );
        CREATE TABLE topic_subscriptions (
            device_id bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
            topic text NOT NULL,
            created_at bigint NOT NULL,
            PRIMARY KEY (device_id, topic)
        );
        CREATE INDEX topic_subscriptions_topic_device ON topic_subscriptions (topic, device_id);
        CREATE TABLE device_counts (
            app text NOT NULL,
            platform text NOT NULL,
            active boolean NOT NULL,
            n bigint NOT NULL,
            PRIMARY KEY (app, platform, active)
        );
        CREATE FUNCTION pushline_count_delta(d_app text, d_platform text, d_active boolean, d bigint) RETURNS void
        LANGUAGE sql AS $$
            INSERT INTO device_counts (app, platform, active, n) VALUES (d_app, d_platform, d_active, d)
            ON CONFLICT (app, platform, active) DO UPDATE SET n = device_counts.n + excluded.n
        $$;
        CREATE FUNCTION pushline_devices_counted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                PERFORM pushline_count_delta(app, platform, active, k)
                FROM (SELECT app, platform, active, count(*) AS k FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3) g;
            ELSIF TG_OP = 'DELETE' THEN
                PERFORM pushline_count_delta(app, platform, active, -k)
                FROM (SELECT app, platform, active, count(*) AS k FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3) g;
            ELSE
                PERFORM pushline_count_delta(app, platform, active, k)
                FROM (
                    SELECT app, platform, active, sum(k) AS k FROM (
                        SELECT o.app, o.platform, o.active, -1 AS k FROM old_rows o JOIN new_rows n ON n.id = o.id
                        WHERE (o.app, o.platform, o.active) IS DISTINCT FROM (n.app, n.platform, n.active)
                        UNION ALL
                        SELECT n.app, n.platform, n.active, 1 FROM old_rows o JOIN new_rows n ON n.id = o.id
                        WHERE (o.app, o.platform, o.active) IS DISTINCT FROM (n.app, n.platform, n.active)
                    ) c GROUP BY 1, 2, 3 HAVING sum(k) <> 0 ORDER BY 1, 2, 3
                ) g;
            END IF;
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER devices_count_insert AFTER INSERT ON devices REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION pushline_devices_counted();
        CREATE TRIGGER devices_count_delete AFTER DELETE ON devices REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION pushline_devices_counted();
        CREATE TRIGGER devices_count_update AFTER UPDATE ON devices REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION pushline_devices_counted();
        CREATE TABLE events (
            seq bigserial PRIMARY KEY,
            type text NOT NULL,
            at bigint NOT NULL,
            body text NOT NULL
        );
        CREATE INDEX events_at ON events (at);
        """

    /// The outbox (SQLite's outbox migration, same tables and columns, PostgreSQL types) and the
    /// events feed's order counter.
    ///
    /// `pushline_event_counter` is one row holding the highest `seq` handed out. A transaction that
    /// appends events takes its seqs by updating that row, whose lock it holds until it commits:
    /// event writers of the whole fleet commit one after another in seq order, so a reader that
    /// has seen seq n can never later find an event n-1 committed behind it (a `bigserial` alone
    /// hands out 5 to T1 and 6 to T2, T2 commits first, a reader moves its cursor to 6 and skips 5
    /// for ever). The committed row is also the high-water mark `latestEventSeq` (never lowered by
    /// pruning; a rolled-back writer's seqs were never visible and are given again).
    ///
    /// `outbox_jobs.resolver`/`resolve_until`: which daemon resolves a job's target (a lease like
    /// the deliveries'), so two daemons never append the same chunk.
    static let outbox = """
        CREATE TABLE pushline_event_counter (
            id integer PRIMARY KEY CHECK (id = 1),
            last bigint NOT NULL
        );
        INSERT INTO pushline_event_counter (id, last) SELECT 1, coalesce((SELECT max(seq) FROM events), 0);
        CREATE TABLE outbox_jobs (
            seq bigserial PRIMARY KEY,
            id text NOT NULL UNIQUE,
            app text NOT NULL,
            messages text NOT NULL,
            indexed boolean NOT NULL,
            state text NOT NULL,
            send_at bigint NOT NULL,
            deadline bigint NOT NULL,
            idem_key text,
            estimate bigint NOT NULL,
            devices bigint NOT NULL DEFAULT 0,
            sent bigint NOT NULL DEFAULT 0,
            failed bigint NOT NULL DEFAULT 0,
            canceled bigint NOT NULL DEFAULT 0,
            resolved boolean NOT NULL DEFAULT false,
            cursor text,
            served bigint NOT NULL DEFAULT 0,
            created_at bigint NOT NULL,
            started_at bigint,
            finished_at bigint,
            resolver text,
            resolve_until bigint
        );
        CREATE INDEX outbox_jobs_live ON outbox_jobs (state, seq);
        CREATE INDEX outbox_jobs_served ON outbox_jobs (state, served, seq);
        CREATE INDEX outbox_jobs_unresolved ON outbox_jobs (send_at, seq) WHERE NOT resolved AND state IN ('queued', 'running');
        CREATE INDEX outbox_jobs_idem ON outbox_jobs (app, idem_key, created_at) WHERE idem_key IS NOT NULL;
        CREATE INDEX outbox_jobs_finished ON outbox_jobs (finished_at) WHERE finished_at IS NOT NULL;
        CREATE TABLE outbox_deliveries (
            job bigint NOT NULL,
            n bigint NOT NULL,
            message integer,
            device_id bigint,
            raw text,
            state smallint NOT NULL,
            next_at bigint NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            lease_owner text,
            lease_until bigint,
            fence bigint NOT NULL DEFAULT 0,
            result text,
            PRIMARY KEY (job, n)
        );
        CREATE INDEX outbox_deliveries_due ON outbox_deliveries (job, next_at, n) WHERE state = 0;
        """

    static var latest: Int { all.count }

    /// Brings the database to the latest version under the advisory lock; a no-op when there.
    /// Refuses a database migrated by a newer Pushline.
    static func migrate(_ c: PGConnection) throws(PGError) {
        try c.exec("BEGIN")
        do throws(PGError) {
            try c.query("SELECT pg_advisory_xact_lock($1)", [.int(lockKey)])
            try c.exec(
                """
                CREATE TABLE IF NOT EXISTS pushline_schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """)
            let current = Int(try c.query("SELECT coalesce(max(version), 0) FROM pushline_schema_migrations").int(0, 0))
            if current > latest {
                throw PGError(
                    context: "migrate", sqlstate: nil,
                    message: "database schema version \(current) is newer than this Pushline's (\(latest))", connectionLost: false)
            }
            for v in current..<latest {
                try c.exec(all[v].sql)
                try c.query("INSERT INTO pushline_schema_migrations (version, name) VALUES ($1, $2)", [.int(Int64(v + 1)), .text(all[v].name)])
            }
            try c.exec("COMMIT")
        } catch {
            if c.isOK { try? c.exec("ROLLBACK") }
            throw error
        }
    }
}
