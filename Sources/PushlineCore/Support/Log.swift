import Logging
import Synchronization

/// A swift-log handler writing one structured line per event to stderr:
/// `2026-11-29T01:00:00.123Z info  server: listening socket=./var/pushline.sock`.
///
/// Values are written as given: callers never pass a full token, key or secret
/// (use `redact(_:)`).
public struct StderrLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    /// One JSON object per line (`log_format: "json"`) instead of `key=value` text.
    private let json: Bool

    public init(label: String, level: Logger.Level = .info, json: Bool = false) {
        self.label = label
        self.logLevel = level
        self.json = json
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        if json {
            // {"ts":"2026-11-29T01:00:00.123Z","level":"info","logger":"pushline","msg":"ready","pid":"12"}
            var o: JSONObject = ["ts": .string(formatTimestamp(nowMillis())), "level": .string(event.level.rawValue),
                                 "logger": .string(label), "msg": .string(event.message.description)]
            var all = metadata
            if let m = event.metadata { all.merge(m) { $1 } }
            for (k, v) in all.sorted(by: { $0.key < $1.key }) where o[k] == nil { o[k] = .string("\(v)") }
            writeAll(2, JSONValue.object(o).serialized() + [0x0A])
            return
        }
        var line = formatTimestamp(nowMillis())
        line += " "
        line += event.level.rawValue
        line += " "
        line += label
        line += ": "
        line += event.message.description
        var all = metadata
        if let m = event.metadata { all.merge(m) { $1 } }
        for (k, v) in all.sorted(by: { $0.key < $1.key }) {
            let s = "\(v)"
            line += " \(k)="
            if s.contains(" ") || s.contains("\"") || s.isEmpty {
                line += "\"" + s.replacingQuotes() + "\""
            } else {
                line += s
            }
        }
        line += "\n"
        writeAll(2, Array(line.utf8))
    }
}

extension String {
    fileprivate func replacingQuotes() -> String {
        var out = ""
        for c in self {
            if c == "\"" { out += "\\\"" } else if c == "\n" { out += "\\n" } else { out.append(c) }
        }
        return out
    }
}

/// Process-wide logging setup; call once at start-up.
public enum PushlineLogging {
    private static let done = Mutex(false)
    public static func bootstrap(level: Logger.Level, json: Bool = false) {
        done.withLock { d in
            guard !d else { return }
            d = true
            LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: level, json: json) }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
