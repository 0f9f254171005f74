import ArgumentParser
import CPushlineShims
import Logging
import Dispatch
import PushlineCore

#if canImport(Glibc)
import Glibc
#endif

/// `pushline`: the daemon and its command-line tools.
struct Pushline: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pushline",
        abstract: "A push-notification sidecar: APNs, FCM, WebPush and WNS behind a Unix socket.",
        version: PushlineVersion.daemon,
        subcommands: [Serve.self, CheckConfig.self, Call.self, Devices.self, SendTest.self, Health.self, Stats.self, Vapid.self, ImportDPN.self]
    )
}

/// Options shared by the commands that load a config.
struct ConfigOptions: ParsableArguments {
    @Option(help: "JSON config file (default: the embedded default, or $PUSHLINE_CONFIG).")
    var config: String?

    func load() throws -> PushlineConfig {
        let path = config ?? env("PUSHLINE_CONFIG")
        guard let path else { return PushlineConfig() }
        do { return try PushlineConfig.load(path: path) } catch { throw ValidationError("config: \(error)") }
    }
}

func env(_ name: String) -> String? {
    guard let v = getenv(name) else { return nil }
    let s = String(cString: v)
    return s.isEmpty ? nil : s
}

func writeStderr(_ s: String) { writeAll(2, Array(s.utf8)) }

func writeStdout(_ bytes: [UInt8]) { writeAll(1, bytes) }

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the daemon.")
    @OptionGroup var options: ConfigOptions
    @Option(help: "Unix socket path (overrides the config).") var socket: String?
    @Option(help: "SQLite database path, sqlite:PATH, or a postgresql:// URI (overrides the config).") var database: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String?

    func run() throws {
        var config = try options.load()
        if let socket { config.socket = socket }
        if let database { config.database = database }
        if let logLevel { config.logLevel = logLevel }
        PushlineLogging.bootstrap(level: Logger.Level(rawValue: config.logLevel) ?? .info, json: config.logFormat == "json")
        let source = DaemonHandler.Source(configPath: options.config ?? env("PUSHLINE_CONFIG"), socket: socket,
                                          database: database, logLevel: logLevel)
        let code = Daemon.run(config: config, source: source)
        if code != 0 { throw ExitCode(code) }
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config", abstract: "Validate a config file and say exactly what is wrong.",
        discussion: """
            Reports every error, not only the first: JSON syntax errors with line and column, unknown keys \
            with the nearest known one, credential files that are not what they should be, and what Apple \
            and Google would refuse (an APNs key_id or team_id that is not 10 characters, token auth \
            without a topic). Exits 0 when the file is usable, 1 otherwise.
            """)
    @Argument(help: "The JSON config file.") var file: String

    func run() throws {
        let (config, errors) = ConfigCheck.run(path: file)
        guard let config, errors.isEmpty else {
            for e in errors { writeStderr("\(file): \(e)\n") }
            if errors.count > 1 { writeStderr("\(file): \(errors.count) errors\n") }
            throw ExitCode(1)
        }
        var lines = ["\(file): OK", "socket: \(config.socket) (mode \(String(config.socketMode, radix: 8)))", Self.describeDatabase(config)]
        if let m = config.metricsListen { lines.append("metrics: \(m)") }
        for (name, app) in config.apps.sorted(by: { $0.key < $1.key }) {
            let p = Platform.allCases.filter { app.isConfigured($0) }.map(\.rawValue)
            lines.append("app \(name): \(p.isEmpty ? "no providers" : p.joined(separator: ", "))")
        }
        writeStdout(Array((lines.joined(separator: "\n") + "\n").utf8))
    }

    /// The backend and where it is, the password of a URI hidden (the config already parsed it).
    static func describeDatabase(_ config: PushlineConfig) -> String {
        switch try? DatabaseLocation(config.database) {
        case .postgres(let c)?: return "database: PostgreSQL \(DatabaseLocation.redact(c)) (pool of \(config.databasePool))"
        case .sqlite(let path)?: return "database: \(path)"
        case nil: return "database: \(DatabaseLocation.redact(config.database))"
        }
    }
}

/// check-config's whole-file check: every error, one per key path.
enum ConfigCheck {
    /// The config (when usable) and every error found, each naming its key path or line and column.
    static func run(path: String) -> (PushlineConfig?, [String]) {
        guard let raw = readFile(path) else { return (nil, ["cannot read config file '\(path)'"]) }
        let bytes = PushlineConfig.blankingLineComments(raw)
        var json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch {
            let (line, column) = lineColumn(bytes, offset: error.offset)
            return (nil, ["line \(line), column \(column): not valid JSON: \(error.message)"])
        }
        var errors: [String] = []
        var removed = Set<String>()
        var vendorErrors: [String]?
        // Each error's key is taken out and the rest checked again, so independent errors all
        // show; an error about a key already taken out (e.g. "is required") drops its block.
        for _ in 0..<100 {
            do {
                let config = try PushlineConfig(json: json)
                if vendorErrors == nil { vendorErrors = appleAndGoogleChecks(config) }
                _ = try ProviderSet(config: config, context: ProviderContext(
                    transport: HTTPTransport(options: TransportOptions(threads: 1)), store: NullStore(), logger: Logger(label: "check-config")))
                errors += vendorErrors ?? []
                return (errors.isEmpty ? config : nil, errors)
            } catch {
                var target = error.path
                if target.isEmpty {
                    errors.append(error.description)
                    return (nil, errors)
                }
                if removed.contains(target) {
                    target = parent(of: target, in: json)
                } else if removed.contains(where: { $0.hasPrefix(target + ".") }) {
                    // A complaint about a block whose bad key was taken out: a consequence, not news.
                } else {
                    errors.append(error.description)
                    removed.insert(target)
                }
                guard !target.isEmpty, let pruned = removing(target, from: json) else { return (nil, errors + (vendorErrors ?? [])) }
                json = pruned
            }
        }
        return (nil, errors + (vendorErrors ?? []))
    }

    /// What Apple and Google refuse although the file parses.
    static func appleAndGoogleChecks(_ config: PushlineConfig) -> [String] {
        var out: [String] = []
        for (name, app) in config.apps.sorted(by: { $0.key < $1.key }) {
            guard let apns = app.apns, case .token(_, let keyId, let teamId) = apns.auth else { continue }
            let alnum: (String) -> Bool = { $0.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) } }
            if keyId.utf8.count != 10 || !alnum(keyId) {
                out.append("apps.\(name).apns.key_id: Apple key ids are 10 upper-case letters and digits (from AuthKey_<KEYID>.p8), got \(keyId.utf8.count) characters")
            }
            if teamId.utf8.count != 10 || !alnum(teamId) {
                out.append("apps.\(name).apns.team_id: Apple team ids are 10 upper-case letters and digits (Membership details), got \(teamId.utf8.count) characters")
            }
            if apns.topic == nil {
                out.append("apps.\(name).apns.topic: is required with token auth (the app's bundle id; Apple refuses token-auth requests without apns-topic)")
            }
        }
        return out
    }

    static func lineColumn(_ bytes: [UInt8], offset: Int) -> (Int, Int) {
        var line = 1
        var column = 1
        for b in bytes.prefix(min(offset, bytes.count)) {
            if b == 0x0A {
                line += 1
                column = 1
            } else if b & 0xC0 != 0x80 {
                column += 1
            }
        }
        return (line, column)
    }

    /// Splits a key path into the object keys it names (app names may contain dots).
    static func components(_ path: String, in value: JSONValue) -> [String]? {
        var parts = path.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        var out: [String] = []
        var v = value
        while !parts.isEmpty {
            guard let o = v.objectValue else { return nil }
            var matched = false
            for n in stride(from: parts.count, through: 1, by: -1) {
                let key = parts[0..<n].joined(separator: ".")
                if let next = o[key] {
                    out.append(key)
                    v = next
                    parts.removeFirst(n)
                    matched = true
                    break
                }
            }
            if !matched {
                // The last component may name a missing key ("is required"): its parent is what exists.
                return parts.count == 1 ? out + parts : nil
            }
        }
        return out
    }

    static func parent(of path: String, in value: JSONValue) -> String {
        guard let c = components(path, in: value), c.count > 1 else { return "" }
        return c.dropLast().joined(separator: ".")
    }

    static func removing(_ path: String, from value: JSONValue) -> JSONValue? {
        guard let c = components(path, in: value), !c.isEmpty else { return nil }
        func remove(_ v: JSONValue, _ keys: ArraySlice<String>) -> JSONValue? {
            guard var o = v.objectValue, let first = keys.first else { return nil }
            guard let idx = o.pairs.firstIndex(where: { $0.0 == first }) else { return nil }
            if keys.count == 1 {
                o.pairs.remove(at: idx)
            } else {
                guard let inner = remove(o.pairs[idx].1, keys.dropFirst()) else { return nil }
                o.pairs[idx].1 = inner
            }
            return .object(o)
        }
        return remove(value, c[...])
    }
}

/// A key-value store that keeps nothing (for check-config).
struct NullStore: KeyValueStore {
    func get(_ key: String) async -> String? { nil }
    func set(_ key: String, _ value: String) async {}
    func compareAndSet(_ key: String, expected: String?, new: String) async -> KVSwap { .unavailable }
}

/// Where the client commands connect: --socket, $PUSHLINE_SOCKET, the config's socket, the default.
struct SocketOptions: ParsableArguments {
    @Option(help: "Daemon socket (default: $PUSHLINE_SOCKET, else ./var/pushline.sock).") var socket: String?
    var path: String { socket ?? env("PUSHLINE_SOCKET") ?? PushlineConfig().socket }
}

struct Call: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send request lines from stdin to the daemon; print the response lines.",
        discussion: "Exits 0 when every response was ok, 1 when any was not, 2 when the daemon cannot be reached.")
    @OptionGroup var socket: SocketOptions

    func run() throws {
        let client: LineClient
        do { client = try LineClient(path: socket.path) } catch {
            writeStderr("pushline call: \(error)\n")
            throw ExitCode(2)
        }
        var allOK = true
        var sent = 0
        var received = 0
        // Pipeline: write every line as it is read, read responses as they come.
        var input = StdinLines()
        var inputDone = false
        while !inputDone || received < sent {
            if !inputDone {
                if let line = input.next() {
                    if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
                    do { try client.write(line + [0x0A]) } catch {
                        writeStderr("pushline call: \(error)\n")
                        throw ExitCode(2)
                    }
                    sent += 1
                    // Drain responses already available so neither side's buffer fills up.
                    while received < sent, let resp = client.readLineIfReady() {
                        received += 1
                        if !Self.isOK(resp) { allOK = false }
                        writeStdout(resp + [0x0A])
                    }
                    continue
                }
                inputDone = true
                continue
            }
            guard let resp = client.readLine() else {
                writeStderr("pushline call: the daemon closed the connection\n")
                throw ExitCode(2)
            }
            received += 1
            if !Self.isOK(resp) { allOK = false }
            writeStdout(resp + [0x0A])
        }
        if !allOK { throw ExitCode(1) }
    }

    static func isOK(_ line: [UInt8]) -> Bool {
        (try? JSONValue.parse(line))?["ok"] == .bool(true)
    }
}

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List registered devices as a table (the admin panel's device list).")
    @OptionGroup var socket: SocketOptions
    @Option(help: "Only this app.") var app: String?
    @Option(help: "Only this platform (apns, fcm, webpush, wns).") var platform: String?
    @Option(help: "Only this user.") var user: String?
    @Flag(help: "Only inactive devices.") var inactive = false
    @Flag(help: "Print JSON lines instead of a table.") var json = false

    func run() throws {
        let client: LineClient
        do { client = try LineClient(path: socket.path) } catch {
            writeStderr("pushline devices: \(error)\n")
            throw ExitCode(2)
        }
        var after: Int64 = 0
        var headerDone = json
        while true {
            var req: JSONObject = ["cmd": "devices", "limit": 1000, "after": .int(after)]
            if let app { req["app"] = .string(app) }
            if let platform { req["platform"] = .string(platform) }
            if let user { req["user"] = .string(user) }
            if inactive { req["active"] = false }
            let resp = try client.request(.object(req))
            guard resp["ok"] == .bool(true) else {
                writeStderr("pushline devices: \(resp["error"]?["message"]?.stringValue ?? "error")\n")
                throw ExitCode(1)
            }
            if !headerDone {
                // Only after the first answer: an error is printed alone.
                writeStdout(Array("ID       PLATFORM  APP          USER         ACTIVE  TOKEN              NAME\n".utf8))
                headerDone = true
            }
            for d in resp["devices"]?.arrayValue ?? [] {
                if json {
                    writeStdout(d.serialized() + [0x0A])
                    continue
                }
                func col(_ s: String, _ w: Int) -> String { s.count >= w ? String(s.prefix(w - 1)) + " " : s + String(repeating: " ", count: w - s.count) }
                let tok = d["registration_id"]?.stringValue ?? ""
                let line = col(String(d["id"]?.intValue ?? 0), 9) + col(d["platform"]?.stringValue ?? "", 10)
                    + col(d["app"]?.stringValue ?? "", 13) + col(d["user"]?.stringValue ?? "-", 13)
                    + col(d["active"] == .bool(true) ? "yes" : "no", 8) + col(redact(tok), 19) + (d["name"]?.stringValue ?? "")
                writeStdout(Array((line + "\n").utf8))
            }
            guard let next = resp["next"]?.intValue else { break }
            after = next
        }
    }
}

struct ImportDPN: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-dpn", abstract: "Import the devices of a django-push-notifications database into the registry.",
        discussion: """
            Reads push_notifications_apnsdevice, _gcmdevice (FCM and GCM rows: FCM tokens), _webpushdevice and \
            _wnsdevice from a Django SQLite file (opened read-only) or a postgresql:// URI, and registers them in \
            the config's database (or --database), SQLite or PostgreSQL. application_id becomes app ("default" \
            when null), user_id user, date_created created_at. Tokens already registered are left as they are, so \
            running it again adds nothing. Prints counts per table and every refused row with the reason. Exits 0 \
            when every row was imported or already present, 1 if some were refused, 2 if it could not run.
            """)
    @OptionGroup var options: ConfigOptions
    @Option(help: "The Django database: a SQLite path (or sqlite:PATH) or a postgresql:// URI.") var from: String
    @Option(help: "The registry to import into (overrides the config's database).") var database: String?

    func run() throws {
        var config = try options.load()
        if let database { config.database = database }
        let target: DatabaseLocation
        do { target = try DatabaseLocation(config.database) } catch {
            writeStderr("pushline import-dpn: \(error)\n")
            throw ExitCode(2)
        }
        let registry: any DeviceRegistry
        do { registry = try target.open(poolSize: 2, logger: nil) } catch {
            writeStderr("pushline import-dpn: cannot open \(target.description): \(error.message)\n")
            throw ExitCode(2)
        }
        let source = from
        let outcome = blockingWait { () async -> Result<[DPNImport.TableReport], CommandError> in
            do throws(CommandError) { return .success(try await DPNImport.run(from: source, into: registry)) } catch { return .failure(error) }
        }
        registry.close()
        let reports: [DPNImport.TableReport]
        switch outcome {
        case .success(let r): reports = r
        case .failure(let e):
            writeStderr("pushline import-dpn: \(e.message)\n")
            throw ExitCode(2)
        }
        var out = "from \(DatabaseLocation.redact(from)) into \(target.description)\n"
        for r in reports {
            out += r.summary + "\n"
            for x in r.refused { out += "  refused \(r.table) id \(x.id): \(x.reason)\n" }
            for x in r.notes { out += "  note \(r.table) id \(x.id): \(x.note)\n" }
        }
        let refused = reports.reduce(0) { $0 + $1.refused.count }
        out += "total: \(reports.reduce(0) { $0 + $1.imported }) imported, \(reports.reduce(0) { $0 + $1.alreadyPresent }) already present, \(refused) refused\n"
        writeStdout(Array(out.utf8))
        if refused > 0 { throw ExitCode(1) }
    }
}

/// Runs async work to completion from synchronous CLI code (a command's `run`).
final class BlockingBox<T>: @unchecked Sendable {
    // Written once by the task before it signals; read after the wait: ordered by the semaphore.
    var value: T?
}

func blockingWait<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let box = BlockingBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        box.value = await body()
        done.signal()
    }
    done.wait()
    // The task always stores a value before signalling.
    guard let v = box.value else { fatalError("blockingWait: the task ended without a value") }
    return v
}

struct SendTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send-test", abstract: "Send a test message to one device (the admin panel's 'send test message').")
    @OptionGroup var socket: SocketOptions
    @Argument(help: "SQLiteRegistry id of the device.") var device: Int64
    @Option(help: "Message text.") var message = "Test message from Pushline"
    @Flag(help: "Build and check, send nothing.") var dryRun = false
    @Flag(help: "Print the send response as JSON.") var json = false

    func run() throws {
        let client: LineClient
        do { client = try LineClient(path: socket.path) } catch {
            writeStderr("pushline send-test: \(error)\n")
            throw ExitCode(2)
        }
        let resp = try client.request(["cmd": "send", "ids": [.int(device)], "message": .string(message), "dry_run": .bool(dryRun)])
        if json {
            writeStdout(resp.serialized() + [0x0A])
            guard resp["ok"] == .bool(true), resp["failed"] == .int(0) else { throw ExitCode(1) }
            return
        }
        guard resp["ok"] == .bool(true) else {
            writeStderr("pushline send-test: \(resp["error"]?["message"]?.stringValue ?? "error")\n")
            throw ExitCode(1)
        }
        var failed = false
        var lines: [String] = []
        for r in resp["results"]?.arrayValue ?? [] {
            let who = "device \(r["id"]?.intValue.map(String.init) ?? "?") (\(r["app"]?.stringValue ?? "?")/\(r["platform"]?.stringValue ?? "?"), \(redact(r["registration_id"]?.stringValue ?? "")))"
            if r["status"] == .string("sent") {
                lines.append("\(who): \(dryRun ? "checked (dry run, nothing sent)" : "sent")")
                continue
            }
            failed = true
            let reason = r["reason"]?.stringValue ?? "unknown"
            if reason == "not_found" || reason == "not_registered" {
                lines.append("no device \(device)")
                continue
            }
            var l = "\(who): failed: \(reason)"
            if r["retryable"] == .bool(true) { l += " (may succeed later)" }
            if r["deactivated"] == .bool(true) { l += "; the device is now inactive" }
            if let e = r["error"]?.stringValue { l += ": \(e)" }
            lines.append(l)
        }
        if lines.isEmpty {
            lines.append("no device \(device)")
            failed = true
        }
        writeStdout(Array((lines.joined(separator: "\n") + "\n").utf8))
        if failed { throw ExitCode(1) }
    }
}

/// Connects for a client command; exits `code` with the reason when the daemon cannot be reached.
func connect(_ socket: SocketOptions, command: String, code: Int32 = 2) throws -> LineClient {
    do { return try LineClient(path: socket.path) } catch {
        writeStderr("pushline \(command): cannot reach the daemon at \(socket.path): \(error)\n")
        throw ExitCode(code)
    }
}

/// "3 min ago" for a Unix-ms timestamp, or "never".
func ago(_ ms: Int64?) -> String {
    guard let ms else { return "never" }
    let s = max(0, (nowMillis() - ms) / 1000)
    if s < 120 { return "\(s) s ago" }
    if s < 7200 { return "\(s / 60) min ago" }
    return "\(s / 3600) h ago"
}

struct Health: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Say whether the daemon is healthy (database writable, providers answering).",
        discussion: "Exits 0 when healthy, 1 when not or when the daemon cannot be reached.")
    @OptionGroup var socket: SocketOptions
    @Flag(help: "Print the health response as JSON.") var json = false

    func run() throws {
        let client = try connect(socket, command: "health", code: 1)
        let resp: JSONValue
        do { resp = try client.request(["cmd": "health"]) } catch {
            writeStderr("pushline health: cannot reach the daemon at \(socket.path): \(error)\n")
            throw ExitCode(1)
        }
        guard resp["ok"] == .bool(true) else {
            writeStderr("pushline health: \(resp["error"]?["message"]?.stringValue ?? "error")\n")
            throw ExitCode(1)
        }
        if json {
            writeStdout(resp.serialized() + [0x0A])
        } else {
            let healthy = resp["healthy"] == .bool(true)
            var lines = [healthy ? "healthy" : "NOT healthy"]
            let db = resp["database"]
            if db?["ok"] == .bool(true) {
                lines.append("database: ok (write in \(String(format2(db?["latency_ms"]?.doubleValue ?? 0))) ms)")
            } else {
                lines.append("database: FAILED: \(db?["error"]?.stringValue ?? "unknown")")
            }
            let providers = resp["providers"]?.arrayValue ?? []
            if providers.isEmpty { lines.append("providers: none configured") }
            for p in providers {
                let name = "\(p["app"]?.stringValue ?? "?")/\(p["platform"]?.stringValue ?? "?")"
                var l = "\(name): \(p["healthy"] == .bool(true) ? "ok" : "FAILING")"
                l += ", last success \(ago(p["last_success"]?.intValue))"
                if let f = p["last_failure"]?.intValue {
                    l += ", last failure \(ago(f)) (\(p["last_failure_reason"]?.stringValue ?? "?"))"
                }
                let n = p["consecutive_failures"]?.intValue ?? 0
                if n > 0 { l += ", \(n) failures in a row" }
                l += ", \(p["in_flight"]?.intValue ?? 0) in flight"
                if let open = p["open_connections"]?.intValue { l += ", \(open) connection\(open == 1 ? "" : "s") open" }
                lines.append(l)
            }
            lines.append("client connections: \(resp["socket_connections"]?.intValue ?? 0)")
            writeStdout(Array((lines.joined(separator: "\n") + "\n").utf8))
            if !healthy { throw ExitCode(1) }
            return
        }
        if resp["healthy"] != .bool(true) { throw ExitCode(1) }
    }
}

/// Two decimals without Foundation.
func format2(_ v: Double) -> String {
    let c = Int64((v * 100).rounded())
    let frac = abs(c % 100)
    return "\(c / 100).\(frac < 10 ? "0" : "")\(frac)"
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show device counts and activity in a table.")
    @OptionGroup var socket: SocketOptions
    @Flag(help: "Print the stats response as JSON.") var json = false

    func run() throws {
        let client = try connect(socket, command: "stats")
        let resp = try client.request(["cmd": "stats"])
        guard resp["ok"] == .bool(true) else {
            writeStderr("pushline stats: \(resp["error"]?["message"]?.stringValue ?? "error")\n")
            throw ExitCode(1)
        }
        if json {
            writeStdout(resp.serialized() + [0x0A])
            return
        }
        let d = resp["devices"]
        var lines = [
            "devices: \(d?["total"]?.intValue ?? 0) (\(d?["active"]?.intValue ?? 0) active, \(d?["inactive"]?.intValue ?? 0) inactive)",
        ]
        func col(_ s: String, _ w: Int) -> String { s.count >= w ? s + " " : s + String(repeating: " ", count: w - s.count) }
        if let byApp = d?["by_app"]?.objectValue, !byApp.isEmpty {
            lines.append(col("APP", 16) + col("PLATFORM", 10) + col("ACTIVE", 10) + "INACTIVE")
            for (app, platforms) in byApp.pairs.sorted(by: { $0.0 < $1.0 }) {
                for (platform, counts) in (platforms.objectValue?.pairs ?? []).sorted(by: { $0.0 < $1.0 }) {
                    lines.append(col(app, 16) + col(platform, 10) + col(String(counts["active"]?.intValue ?? 0), 10)
                                 + String(counts["inactive"]?.intValue ?? 0))
                }
            }
        }
        let n = resp["notifications"]
        lines.append("notifications since start: \(n?["sent"]?.intValue ?? 0) sent, \(n?["failed"]?.intValue ?? 0) failed")
        lines.append("in flight: \(resp["pending"]?.intValue ?? 0); client connections: \(resp["connections"]?.intValue ?? 0); up \(Int(resp["uptime_s"]?.doubleValue ?? 0)) s")
        writeStdout(Array((lines.joined(separator: "\n") + "\n").utf8))
    }
}

struct Vapid: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "WebPush VAPID keys.", subcommands: [Generate.self, Show.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a new VAPID private key and print the applicationServerKey.")
        @Option(help: "Directory for vapid_private.pem.") var out = "."
        func run() throws {
            do {
                let r = try VAPIDTool.generate(outDir: out)
                writeStdout(Array("private key: \(r.privateKeyPath)\napplicationServerKey: \(r.applicationServerKey)\n".utf8))
            } catch {
                writeStderr("pushline vapid generate: \(error)\n")
                throw ExitCode(1)
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the applicationServerKey of an app's configured VAPID key.")
        @OptionGroup var options: ConfigOptions
        @Option(help: "App name.") var app = "default"
        func run() throws {
            let config = try options.load()
            guard let wp = config.apps[app]?.webpush else {
                writeStderr("pushline vapid show: app '\(app)' has no webpush block\n")
                throw ExitCode(1)
            }
            do {
                writeStdout(Array((try VAPIDTool.publicKey(privateKeyPath: wp.vapidPrivateKeyPath) + "\n").utf8))
            } catch {
                writeStderr("pushline vapid show: \(error)\n")
                throw ExitCode(1)
            }
        }
    }
}

// `serve` blocks SIGTERM/SIGINT from the start, so one that arrives while the daemon
// starts waits for its handlers (Daemon.run unblocks them) instead of killing it.
if CommandLine.arguments.dropFirst().first == "serve" { pl_block_term_signals() }
Pushline.main()
