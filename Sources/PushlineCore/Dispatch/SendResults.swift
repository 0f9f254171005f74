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

extension Dispatcher {
    /// Renders results for the protocol once the registry knows which devices it deactivated.
    struct ResultRenderer {
        var done: Set<Int64>
        var appOf: [Int64: String]
        var app: String?

        /// A result as the protocol shows it; `message`: the index of its message in a `bulk`
        /// with `messages` (the only place results get `message` and `message_index`).
        func json(_ r: DeliveryResult, message: Int? = nil) -> JSONObject {
            let unknownId = if case .unknownId = r.target { true } else { false }
            // Negative ids are `tokens` entries: not registry devices.
            let registered = (r.deviceId ?? 0) > 0
            var o: JSONObject = [
                "id": registered ? r.deviceId.map { .int($0) } ?? .null : .null,
                "platform": unknownId ? .null : .string(r.platform.rawValue),
                "app": (r.deviceId.flatMap { appOf[$0] } ?? app).map { .string($0) } ?? .null,
                "registration_id": unknownId ? .null : .string(r.registrationId),
                "status": .string(r.status.rawValue),
            ]
            if r.status == .failed {
                o["reason"] = .string(r.reason ?? "unknown")
                o["reason_class"] = .string(Dispatcher.reasonClass(r))
                o["retryable"] = .bool(r.retryable)
                let deactivated = r.deviceId.map { done.contains($0) } ?? false
                o["deactivated"] = .bool(deactivated)
                if r.deactivate && !deactivated && registered { o["still_active"] = .bool(true) }
            }
            for (k, v) in r.extra.pairs { o[k] = v }
            if let message {
                o.pairs.insert(("message_index", .int(Int64(message))), at: 0)
                o.pairs.insert(("message", .int(Int64(message))), at: 0)
            }
            return o
        }

        /// Keys a sent result's own fields use: an `extra` pair of one of these replaces a
        /// field in place (`JSONObject`'s setter), which only `json` reproduces.
        /// (A list compared in turn, not a hashed set: short keys compare as a few words,
        /// cheaper than hashing each key of each sent result.)
        static let sentKeys: [String] = ["id", "platform", "app", "registration_id", "status", "attempts", "message", "message_index"]

        /// Writes `json(r, message:)` with `"attempts": attempts` set, exactly as
        /// `JSONValue.object(_:).write(to:)` writes that object. A sent result (most of an
        /// outbox job's) is written field by field without building the object (issue 13: the
        /// worker rendered each delivery's result as an object, then wrote it).
        func write(_ r: DeliveryResult, message: Int?, attempts: Int, to out: inout [UInt8]) {
            let unknownId = if case .unknownId = r.target { true } else { false }
            let extra = r.extra.pairs
            // (An extra key given twice is also left to `json`, whose setter keeps one.)
            let plain = extra.indices.allSatisfy { i in !Self.sentKeys.contains(extra[i].0) && !extra[..<i].contains { $0.0 == extra[i].0 } }
            guard r.status == .sent, !unknownId, plain else {
                var o = json(r, message: message)
                o["attempts"] = .int(Int64(attempts))
                JSONValue.object(o).write(to: &out)
                return
            }
            let start = out.count
            // Bytes appended as they are (no String or UTF8View on the way: a sent result is
            // written for every delivery of an outbox job).
            func raw(_ s: StaticString) { out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount)) }
            func key(_ k: StaticString) {
                out.append(UInt8(ascii: out.count == start ? "{" : ","))
                out.append(UInt8(ascii: "\""))
                raw(k)
                out.append(UInt8(ascii: "\""))
                out.append(UInt8(ascii: ":"))
            }
            func int(_ v: Int64) {
                if v < 0 { out.append(UInt8(ascii: "-")) }
                var m = v.magnitude
                var div: UInt64 = 1
                while m / div >= 10 { div &*= 10 }
                while div > 0 {
                    out.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: m / div))
                    m %= div
                    div /= 10
                }
            }
            if let message {
                key("message")
                int(Int64(message))
                key("message_index")
                int(Int64(message))
            }
            key("id")
            if let id = r.deviceId, id > 0 { int(id) } else { raw("null") }
            key("platform")
            JSONValue.writeString(r.platform.rawValue, to: &out)
            key("app")
            if let a = r.deviceId.flatMap({ appOf[$0] }) ?? app { JSONValue.writeString(a, to: &out) } else { raw("null") }
            key("registration_id")
            JSONValue.writeString(r.registrationId, to: &out)
            key("status")
            raw("\"sent\"")
            for (k, v) in extra {
                out.append(UInt8(ascii: ","))
                JSONValue.writeString(k, to: &out)
                out.append(UInt8(ascii: ":"))
                v.write(to: &out)
            }
            key("attempts")
            int(Int64(attempts))
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Marks dead devices inactive (one transaction) and returns how to render each result.
    func applyDeactivations(_ results: [DeliveryResult], devices: [Device], app: String? = nil) async -> ResultRenderer {
        var appOf: [Int64: String] = [:]
        for d in devices { appOf[d.id] = d.app }
        let now = nowMillis()
        let list = results.compactMap { r -> Deactivation? in
            guard r.deactivate, let id = r.deviceId, id > 0 else { return nil }
            return Deactivation(id: id, reason: r.reason ?? "invalid", at: now, invalidSince: r.invalidSince)
        }
        let done: Set<Int64> = list.isEmpty ? [] : await registry.deactivate(list)
        if !done.isEmpty {
            logger.info("devices deactivated", metadata: ["count": "\(done.count)"])
            var counts: [String: (app: String, platform: Platform, reason: String, n: Int)] = [:]
            for r in results where r.deactivate {
                guard let id = r.deviceId, done.contains(id) else { continue }
                let devApp = appOf[id] ?? app ?? "default"
                let reason = r.reason ?? "invalid"
                counts["\(devApp)\u{0}\(r.platform.rawValue)\u{0}\(reason)", default: (devApp, r.platform, reason, 0)].n += 1
            }
            for c in counts.values { ProviderHealth.shared.deactivated(app: c.app, platform: c.platform, reason: c.reason, count: c.n) }
        }
        return ResultRenderer(done: done, appOf: appOf, app: app)
    }
}
