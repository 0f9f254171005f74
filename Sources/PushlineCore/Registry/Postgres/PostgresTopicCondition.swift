/// PostgreSQL's rendering of a topic condition (`TopicCondition`, the backend-neutral tree the
/// condition parser builds): a condition on the `devices` table (its `id`) whose topics are
/// parameters added to `p`, each with the next `$n` (so it composes with the rest of a WHERE).
///
/// ```swift
/// var p = PostgresStore.Params()
/// _ = p.add(.text("default"))
/// let sql = PostgresTopicCondition.render(.or(.topic("a"), .topic("b")), &p)
/// // "(EXISTS (... ts.topic = $2) OR EXISTS (... ts.topic = $3))"
/// ```
enum PostgresTopicCondition {
    static func render(_ c: TopicCondition, _ p: inout PostgresStore.Params) -> String {
        switch c {
        case .topic(let t):
            return "EXISTS (SELECT 1 FROM topic_subscriptions ts WHERE ts.device_id = devices.id AND ts.topic = \(p.add(.text(t))))"
        case .and(let a, let b):
            let x = render(a, &p)
            let y = render(b, &p)
            return "(\(x) AND \(y))"
        case .or(let a, let b):
            let x = render(a, &p)
            let y = render(b, &p)
            return "(\(x) OR \(y))"
        case .not(let a):
            return "(NOT \(render(a, &p)))"
        }
    }
}
