/// A topic name (FCM topics), checked once where a request is parsed: 1 to 256 bytes of
/// `[a-zA-Z0-9-_.~%]`, given with or without the `/topics/` prefix (which is not kept).
/// Everything downstream (the FCM provider, the registry) takes a `TopicName`, so a name that
/// one of them would refuse never reaches the other: a rejected request changes nothing.
///
/// ```swift
/// let t = try TopicName(parsing: "/topics/news")   // t.name == "news"
/// ```
public struct TopicName: Sendable, Hashable, CustomStringConvertible {
    /// The name without the `/topics/` prefix.
    public let name: String
    /// The longest name, in bytes (what the registry has always stored; FCM takes these).
    public static let maxBytes = 256

    public init(parsing raw: String, field: String = "topic") throws(CommandError) {
        let name = raw.hasPrefix("/topics/") ? String(raw.dropFirst(8)) : raw
        guard !name.isEmpty, name.utf8.count <= Self.maxBytes else {
            throw .invalid(field, "a topic name is 1 to \(Self.maxBytes) bytes (without the /topics/ prefix), got \(name.utf8.count)")
        }
        guard name.utf8.allSatisfy(Self.isNameByte) else {
            throw .invalid(field, "a topic name matches [a-zA-Z0-9-_.~%]+ (optionally prefixed by /topics/)")
        }
        self.name = name
    }

    /// Whether `name` (without prefix) is a valid topic name.
    public static func isValid(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= maxBytes && name.utf8.allSatisfy(isNameByte)
    }

    /// A byte of the topic alphabet `[a-zA-Z0-9-_.~%]`.
    public static func isNameByte(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
            || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") || c == UInt8(ascii: "~")
            || c == UInt8(ascii: "%")
    }

    public var description: String { name }
}
