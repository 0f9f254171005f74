/// SQLite's rendering of a topic condition (`TopicCondition`, the backend-neutral tree the
/// condition parser builds): a condition on the `devices` table (its `id`) with `?`
/// placeholders, whose arguments are appended to `args` in placeholder order.
///
/// ```swift
/// var args: [SQLValue] = []
/// let sql = SQLiteTopicCondition.render(.and(.topic("a"), .not(.topic("b"))), into: &args)
/// // "(EXISTS (... ts.topic = ?) AND (NOT EXISTS (... ts.topic = ?)))", args == ["a", "b"]
/// ```
enum SQLiteTopicCondition {
    static func render(_ c: TopicCondition, into args: inout [SQLValue]) -> String {
        switch c {
        case .topic(let t):
            args.append(.text(t))
            return "EXISTS (SELECT 1 FROM topic_subscriptions ts WHERE ts.device_id = devices.id AND ts.topic = ?)"
        case .and(let a, let b):
            let x = render(a, into: &args)
            let y = render(b, into: &args)
            return "(\(x) AND \(y))"
        case .or(let a, let b):
            let x = render(a, into: &args)
            let y = render(b, into: &args)
            return "(\(x) OR \(y))"
        case .not(let a):
            return "(NOT \(render(a, into: &args)))"
        }
    }
}
