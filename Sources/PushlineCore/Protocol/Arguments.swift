/// Reads a request's arguments, naming the field in every error and rejecting
/// arguments nobody read (typos).
///
/// ```swift
/// var a = Arguments(request)
/// let limit = try a.int("limit", range: 1...1000) ?? 100
/// try a.finish()
/// ```
public struct Arguments {
    public private(set) var object: JSONObject
    private var used: Set<String> = ["cmd"]
    private let prefix: String

    public init(_ object: JSONObject, prefix: String = "") {
        self.object = object
        self.prefix = prefix
    }

    /// The key path of these arguments (`messages[2]`), empty at the top level.
    public var root: String { prefix }

    public func path(_ key: String) -> String { prefix.isEmpty ? key : "\(prefix).\(key)" }
    public func has(_ key: String) -> Bool { if let v = object[key] { return !v.isNull } else { return false } }

    public mutating func markUsed(_ keys: some Sequence<String>) { used.formUnion(keys) }

    public mutating func value(_ key: String) -> JSONValue? {
        used.insert(key)
        guard let v = object[key], !v.isNull else { return nil }
        return v
    }
    public mutating func string(_ key: String) throws(CommandError) -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v.stringValue else { throw .invalid(path(key), "expected a string, got \(v.typeName)") }
        return s
    }
    public mutating func bool(_ key: String) throws(CommandError) -> Bool? {
        guard let v = value(key) else { return nil }
        guard let b = v.boolValue else { throw .invalid(path(key), "expected true or false, got \(v.typeName)") }
        return b
    }
    public mutating func int(_ key: String, range: ClosedRange<Int64>? = nil) throws(CommandError) -> Int64? {
        guard let v = value(key) else { return nil }
        guard let i = v.intValue else { throw .invalid(path(key), "expected an integer, got \(v.typeName)") }
        if let range, !range.contains(i) {
            throw .invalid(path(key), "must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return i
    }
    public mutating func platform(_ key: String) throws(CommandError) -> Platform? {
        guard let s = try string(key) else { return nil }
        guard let p = Platform(rawValue: s) else {
            throw .invalid(path(key), "expected one of apns, fcm, webpush, wns, got \"\(clipped(s))\"")
        }
        return p
    }
    public mutating func list(_ key: String, max: Int = 100_000) throws(CommandError) -> [JSONValue]? {
        guard let v = value(key) else { return nil }
        guard let a = v.arrayValue else { throw .invalid(path(key), "expected a list, got \(v.typeName)") }
        guard a.count <= max else { throw .invalid(path(key), "at most \(max) entries, got \(a.count)") }
        return a
    }
    public mutating func stringList(_ key: String, max: Int = 100_000) throws(CommandError) -> [String]? {
        guard let a = try list(key, max: max) else { return nil }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for (i, v) in a.enumerated() {
            guard let s = v.stringValue else { throw .invalid("\(path(key))[\(i)]", "expected a string, got \(v.typeName)") }
            out.append(s)
        }
        return out
    }
    /// A list of user ids: strings, or integers turned into their decimal string.
    public mutating func userList(_ key: String) throws(CommandError) -> [String]? {
        guard let a = try list(key) else { return nil }
        var out: [String] = []
        for (i, v) in a.enumerated() {
            switch v {
            case .string(let s): out.append(s)
            case .int(let n): out.append(String(n))
            default: throw .invalid("\(path(key))[\(i)]", "expected a string, got \(v.typeName)")
            }
        }
        return out
    }
    public mutating func idList(_ key: String) throws(CommandError) -> [Int64]? {
        guard let a = try list(key) else { return nil }
        var out: [Int64] = []
        out.reserveCapacity(a.count)
        for (i, v) in a.enumerated() {
            guard case .int(let n) = v, n > 0 else { throw .invalid("\(path(key))[\(i)]", "expected a positive integer id") }
            out.append(n)
        }
        return out
    }
    public mutating func user(_ key: String) throws(CommandError) -> String? {
        guard let v = value(key) else { return nil }
        switch v {
        case .string(let s): return s
        case .int(let n): return String(n)
        default: throw .invalid(path(key), "expected a string, got \(v.typeName)")
        }
    }
    public mutating func app(_ key: String = "app") throws(CommandError) -> String? {
        guard let s = try string(key) else { return nil }
        guard AppConfig.isValidName(s) else { throw .invalid(path(key), "not a valid app name") }
        return s
    }

    /// Throws `invalid_argument` for the first argument nobody read.
    public func finish() throws(CommandError) {
        for k in object.keys where !used.contains(k) {
            throw .invalid(path(k), "unknown argument '\(k)'")
        }
    }

    /// The arguments nobody read yet.
    public var unread: [String] { object.keys.filter { !used.contains($0) } }
}

extension CommandError {
    /// Re-roots an `invalid_argument` field path under `prefix` (e.g. `devices[3]`).
    public func prefixed(_ prefix: String) -> CommandError {
        guard case .string(let f) = details["field"] ?? .null else { return self }
        var e = self
        let newField = "\(prefix).\(f)"
        e.details["field"] = .string(newField)
        e.message = message.replacingFirst("field '\(f)'", with: "field '\(newField)'")
        return e
    }
}

extension String {
    func replacingFirst(_ what: String, with: String) -> String {
        guard !what.isEmpty, let r = range(of: what) else { return self }
        return String(self[..<r.lowerBound]) + with + String(self[r.upperBound...])
    }

    func range(of what: String) -> Range<String.Index>? {
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(what) { return i..<index(i, offsetBy: what.count) }
            i = index(after: i)
        }
        return nil
    }
}
