/// `pushline import-dpn`: copies the devices of a django-push-notifications (3.x) database into
/// the registry, on either backend.
///
/// Reads `push_notifications_apnsdevice`, `_gcmdevice` (FCM and GCM rows alike: FCM tokens in
/// 3.x), `_webpushdevice` and `_wnsdevice` of a Django SQLite file (opened read-only) or a
/// PostgreSQL database: `application_id` becomes `app` (`default` when null), `user_id` the
/// `user` (as a string), `date_created` `created_at`, with `active`, `name`, `device_id` and
/// WebPush's `p256dh`, `auth`, `browser`. Each row is validated as `register` validates a device;
/// a row that fails is refused with the reason (its token never shown whole). A token already in
/// the registry is left as it is, so a second run adds nothing.
///
/// ```swift
/// let report = try await DPNImport.run(from: "/srv/app/db.sqlite3", into: registry)
/// report.map(\.summary)   // ["push_notifications_apnsdevice: 120 read, 118 imported, 0 already present, 2 refused", ...]
/// ```
public enum DPNImport {
    /// One source table and the platform of its rows.
    static let tables: [(name: String, platform: Platform, extra: [String])] = [
        ("push_notifications_apnsdevice", .apns, ["device_id"]),
        ("push_notifications_gcmdevice", .fcm, ["device_id"]),
        ("push_notifications_webpushdevice", .webpush, ["p256dh", "auth", "browser"]),
        ("push_notifications_wnsdevice", .wns, ["device_id"]),
    ]

    /// What happened to one table.
    public struct TableReport: Sendable {
        public var table: String
        public var read = 0
        public var imported = 0
        public var alreadyPresent = 0
        /// Source row id and why it was not imported.
        public var refused: [(id: String, reason: String)] = []
        /// Source row id and what was not carried over (a GCM `device_id` is an Android hex id, not a UUID).
        public var notes: [(id: String, note: String)] = []

        public var summary: String {
            "\(table): \(read) read, \(imported) imported, \(alreadyPresent) already present, \(refused.count) refused"
        }
    }

    /// A source row, every value as text (NULL as nil).
    struct Row: Sendable {
        var id: String
        var name: String?
        var active: Bool
        var user: String?
        var createdMs: Int64?
        var app: String?
        var token: String
        var extra: [String: String?]
    }

    /// Reads one table of the source: SQLite read-only, or PostgreSQL. Nil if the table is missing.
    static func read(from source: String, table: String, extra: [String]) throws(CommandError) -> [Row]? {
        let cols = ["id", "name", "active", "user_id", "date_created", "application_id", "registration_id"] + extra
        if source.hasPrefix("postgresql://") || source.hasPrefix("postgres://") {
            do {
                let c = try PGConnection(conninfo: source)
                let exists = try c.query("SELECT to_regclass($1) IS NOT NULL", [.text(table)])
                guard exists.bool(0, 0) else { return nil }
                let select = cols.map { col -> String in
                    switch col {
                    case "date_created": return "(extract(epoch FROM date_created) * 1000)::bigint::text"
                    case "active": return "CASE WHEN active THEN '1' ELSE '0' END"
                    default: return "\(col)::text"
                    }
                }
                let r = try c.query("SELECT \(select.joined(separator: ", ")) FROM \(table) ORDER BY id")
                return (0..<r.rows).map { i in row((0..<cols.count).map { r.text(i, $0) }, extra: extra) }
            } catch {
                throw CommandError(error.failure.commandError.code, "\(DatabaseLocation.redact(source)): \(error.description)")
            }
        }
        let path = source.hasPrefix("sqlite:") ? String(source.dropFirst("sqlite:".count)) : source
        do {
            let db = try Database(path: path, readOnly: true)
            let n = try db.query("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", [.text(table)]) { $0.int(0) }
            guard n.first == 1 else { return nil }
            let select = cols.map { col -> String in
                switch col {
                // Django stores "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC (USE_TZ) as text.
                case "date_created": return "CAST(ROUND((julianday(date_created) - 2440587.5) * 86400000) AS INTEGER)"
                default: return "CAST(\(col) AS TEXT)"
                }
            }
            return try db.query("SELECT \(select.joined(separator: ", ")) FROM \(table) ORDER BY id") { s in
                row((0..<cols.count).map { s.text(Int32($0)) }, extra: extra)
            }
        } catch {
            throw CommandError(.internalError, "\(path): \(error.description)")
        }
    }

    static func row(_ v: [String?], extra: [String]) -> Row {
        var e: [String: String?] = [:]
        for (k, name) in extra.enumerated() { e[name] = v[7 + k] }
        return Row(id: v[0] ?? "?", name: v[1], active: v[2] == "1" || v[2] == "t" || v[2] == "true", user: v[3],
                   createdMs: v[4].flatMap { Int64($0) }, app: v[5], token: v[6] ?? "", extra: e)
    }

    /// Imports every table; throws only if the source cannot be read or the registry fails.
    public static func run(from source: String, into registry: any DeviceRegistry, batch: Int = 1000) async throws(CommandError) -> [TableReport] {
        var reports: [TableReport] = []
        var found = false
        for t in tables {
            guard let rows = try read(from: source, table: t.name, extra: t.extra) else { continue }
            found = true
            var rep = TableReport(table: t.name)
            rep.read = rows.count
            var start = 0
            while start < rows.count {
                let slice = rows[start..<min(start + batch, rows.count)]
                start += batch
                try await importBatch(Array(slice), platform: t.platform, into: registry, report: &rep)
            }
            reports.append(rep)
        }
        if !found {
            throw CommandError(.notFound, "no django-push-notifications table (push_notifications_*device) in \(DatabaseLocation.redact(source))")
        }
        return reports
    }

    static func importBatch(_ rows: [Row], platform: Platform, into registry: any DeviceRegistry, report rep: inout TableReport) async throws(CommandError) {
        var inputs: [(row: Row, input: DeviceInput)] = []
        var seen: [String: String] = [:]
        for r in rows {
            var deviceId = r.extra["device_id"] ?? nil
            if platform == .fcm, deviceId != nil {
                rep.notes.append((r.id, "device_id (an Android hex id, not a UUID) not carried over"))
                deviceId = nil
            }
            do {
                var d = try DeviceInput(
                    platform: platform, app: r.app ?? "default", registrationId: r.token, name: r.name, user: r.user,
                    deviceId: deviceId, active: r.active, p256dh: r.extra["p256dh"] ?? nil, auth: r.extra["auth"] ?? nil,
                    browser: r.extra["browser"] ?? nil)
                d.createdAt = r.createdMs
                let key = "\(d.app)\u{0}\(d.registrationId)"
                if let first = seen[key] {
                    rep.refused.append((r.id, "same token as row \(first) of this table"))
                    continue
                }
                seen[key] = r.id
                inputs.append((r, d))
            } catch {
                rep.refused.append((r.id, error.message))
            }
        }
        // Tokens already in the registry stay as they are (a second run adds nothing).
        var byApp: [String: [Int]] = [:]
        for (i, x) in inputs.enumerated() { byApp[x.input.app, default: []].append(i) }
        var present = Set<Int>()
        for (app, idx) in byApp {
            let found = try await registry.resolveTokens(app: app, platform: platform, idx.map { inputs[$0].input.registrationId })
            for (k, dev) in found.enumerated() where dev != nil { present.insert(idx[k]) }
        }
        rep.alreadyPresent += present.count
        let fresh = inputs.indices.filter { !present.contains($0) }.map { inputs[$0].input }
        if !fresh.isEmpty {
            rep.imported += try await registry.register(fresh, updateOnDuplicate: false).count
        }
    }
}
