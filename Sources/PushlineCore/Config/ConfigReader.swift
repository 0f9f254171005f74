/// A configuration problem, naming the key path (`apps.shop.apns.key_id`).
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var message: String
    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// Reads typed values out of a JSON config object, naming the key path in every error,
/// and rejecting keys nobody read (typos).
///
/// ```swift
/// var r = try ConfigReader(value, path: "apps.default.fcm")
/// let project = try r.string("project_id")
/// try r.finish()   // throws for an unknown key
/// ```
public struct ConfigReader {
    public let object: JSONObject
    public let path: String
    private var used: Set<String> = []

    public init(_ value: JSONValue, path: String) throws(ConfigError) {
        guard let o = value.objectValue else { throw ConfigError(path, "expected an object, got \(value.typeName)") }
        object = o
        self.path = path
    }

    public func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    public mutating func value(_ key: String) -> JSONValue? {
        used.insert(key)
        guard let v = object[key], !v.isNull else { return nil }
        return v
    }
    public mutating func string(_ key: String) throws(ConfigError) -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v.stringValue else { throw ConfigError(keyPath(key), "expected a string, got \(v.typeName)") }
        guard !s.isEmpty else { throw ConfigError(keyPath(key), "must not be empty") }
        return s
    }
    public mutating func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let s = try string(key) else { throw ConfigError(keyPath(key), "is required") }
        return s
    }
    public mutating func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let v = value(key) else { return nil }
        guard let b = v.boolValue else { throw ConfigError(keyPath(key), "expected true or false, got \(v.typeName)") }
        return b
    }
    public mutating func int(_ key: String, range: ClosedRange<Int>) throws(ConfigError) -> Int? {
        guard let v = value(key) else { return nil }
        guard let i = v.intValue, case .int = v else { throw ConfigError(keyPath(key), "expected an integer, got \(v.typeName)") }
        guard range.contains(Int(i)) else {
            throw ConfigError(keyPath(key), "must be between \(range.lowerBound) and \(range.upperBound), got \(i)")
        }
        return Int(i)
    }
    /// An https (or, for tests, http) URL; returned without a trailing slash.
    public mutating func url(_ key: String) throws(ConfigError) -> String? {
        guard let s = try string(key) else { return nil }
        guard s.hasPrefix("https://") || s.hasPrefix("http://") else {
            throw ConfigError(keyPath(key), "expected an http(s) URL")
        }
        return s.hasSuffix("/") ? String(s.dropLast()) : s
    }
    /// A path to a file that must exist and be readable.
    public mutating func file(_ key: String) throws(ConfigError) -> String? {
        guard let s = try string(key) else { return nil }
        guard access(s, R_OK) == 0 else { throw ConfigError(keyPath(key), "cannot read file '\(s)'") }
        return s
    }
    /// Throws for any key that was never read, suggesting the closest key this block knows.
    public func finish() throws(ConfigError) {
        for k in object.keys where !used.contains(k) {
            if let near = Self.closest(to: k, in: used) {
                throw ConfigError(keyPath(k), "unknown key (did you mean '\(near)'?)")
            }
            throw ConfigError(keyPath(k), "unknown key")
        }
    }

    /// The known key nearest to `key` (edit distance at most 2, and less than half its
    /// length; `gcm` suggests `fcm`, `log_levle` suggests `log_level`), or nil.
    static func closest(to key: String, in known: Set<String>) -> String? {
        let a = Array(key.lowercased().utf8)
        var best: (String, Int)?
        for k in known.sorted() {
            let b = Array(k.utf8)
            var prev = Array(0...b.count)
            for i in 1...max(1, a.count) where !a.isEmpty {
                var cur = [i] + [Int](repeating: 0, count: b.count)
                for j in stride(from: 1, through: b.count, by: 1) {
                    cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
                }
                prev = cur
            }
            let d = a.isEmpty ? b.count : prev[b.count]
            if d <= 2 && d * 2 < max(a.count, b.count) && d < (best?.1 ?? Int.max) { best = (k, d) }
        }
        return best?.0
    }
}

#if canImport(Glibc)
import Glibc
#endif
