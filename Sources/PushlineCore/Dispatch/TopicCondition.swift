/// A topic or an FCM-style condition over the registry's recorded topics, for devices that
/// are not FCM (APNs, WebPush, WNS): `topic` sends reach them by fan-out (protocol.md 5.10).
///
/// A backend-neutral tree: each registry renders it in its own SQL (`SQLiteTopicCondition`,
/// `PostgresTopicCondition`), and the conformance suite checks both against the same devices.
///
/// ```swift
/// let c = try TopicCondition.parse("'a' in topics && ('b' in topics || !('c' in topics))")
/// c == .and(.topic("a"), .or(.topic("b"), .not(.topic("c"))))
/// ```
public indirect enum TopicCondition: Sendable, Equatable {
    case topic(String)
    case and(TopicCondition, TopicCondition)
    case or(TopicCondition, TopicCondition)
    case not(TopicCondition)

    /// Parses a condition FCMTopicName.checkCondition accepted: `&&` binds tighter than `||`
    /// (as in FCM), `!` tightest.
    public static func parse(_ condition: String) throws(CommandError) -> TopicCondition {
        try FCMTopicName.checkCondition(condition)
        var p = Parser(b: Array(condition.utf8))
        guard let c = p.or(), p.atEnd else { throw .invalid("condition", "cannot be evaluated over the registry") }
        return c
    }

    struct Parser {
        let b: [UInt8]
        var i = 0
        var atEnd: Bool {
            mutating get { spaces(); return i == b.count }
        }
        mutating func spaces() { while i < b.count, b[i] == 0x20 || b[i] == 0x09 { i += 1 } }
        mutating func eat(_ s: String) -> Bool {
            spaces()
            let u = Array(s.utf8)
            guard i + u.count <= b.count, Array(b[i..<i + u.count]) == u else { return false }
            i += u.count
            return true
        }
        mutating func or() -> TopicCondition? {
            guard var left = and() else { return nil }
            while eat("||") {
                guard let right = and() else { return nil }
                left = .or(left, right)
            }
            return left
        }
        mutating func and() -> TopicCondition? {
            guard var left = term() else { return nil }
            while eat("&&") {
                guard let right = term() else { return nil }
                left = .and(left, right)
            }
            return left
        }
        mutating func term() -> TopicCondition? {
            spaces()
            guard i < b.count else { return nil }
            if b[i] == UInt8(ascii: "!") {
                i += 1
                return term().map { .not($0) }
            }
            if b[i] == UInt8(ascii: "(") {
                i += 1
                guard let e = or(), eat(")") else { return nil }
                return e
            }
            let q = b[i]
            guard q == UInt8(ascii: "'") || q == UInt8(ascii: "\"") else { return nil }
            i += 1
            let start = i
            while i < b.count, b[i] != q { i += 1 }
            guard i < b.count else { return nil }
            let name = String(decoding: b[start..<i], as: UTF8.self)
            i += 1
            guard eat("in"), eat("topics") else { return nil }
            return .topic(name)
        }
    }
}
