import Testing

@testable import PushlineCore

/// FCM-style conditions evaluated over the registry's topics (`topic` fan-out, protocol 1.1).
@Suite struct TopicConditionTests {
    @Test("&& binds tighter than ||, ! tightest, parentheses group")
    func precedence() throws {
        #expect(try TopicCondition.parse("'a' in topics || 'b' in topics && 'c' in topics")
            == .or(.topic("a"), .and(.topic("b"), .topic("c"))))
        #expect(try TopicCondition.parse("('a' in topics || 'b' in topics) && !('c' in topics)")
            == .and(.or(.topic("a"), .topic("b")), .not(.topic("c"))))
        #expect(try TopicCondition.parse("!'a' in topics && \"b\" in topics") == .and(.not(.topic("a")), .topic("b")))
    }

    @Test("SQLite renders ? placeholders with the topics as arguments in their order")
    func sqliteRendering() throws {
        var args: [SQLValue] = [.text("default")]  // a filter's earlier argument stays first
        let sql = SQLiteTopicCondition.render(try TopicCondition.parse("'a' in topics && ('b' in topics || !('c' in topics))"), into: &args)
        #expect(args == [.text("default"), .text("a"), .text("b"), .text("c")])
        #expect(sql.components(separatedBy: "?").count - 1 == 3)
        #expect(!sql.contains("$"))
        #expect(sql.hasPrefix("(EXISTS") && sql.contains(" AND (EXISTS") && sql.contains(" OR (NOT EXISTS"))
    }

    @Test("PostgreSQL numbers its placeholders after the filter's earlier parameters")
    func postgresRendering() throws {
        var p = PostgresStore.Params()
        _ = p.add(.text("default"))
        _ = p.add(.text("fcm"))
        let sql = PostgresTopicCondition.render(try TopicCondition.parse("'a' in topics && ('b' in topics || !('c' in topics))"), &p)
        #expect(p.values == [.text("default"), .text("fcm"), .text("a"), .text("b"), .text("c")])
        #expect(!sql.contains("?"))
        // $3, $4, $5 in reading order, each once.
        let placeholders = sql.split(separator: "$").dropFirst().map { $0.prefix(while: \.isNumber) }
        #expect(placeholders == ["3", "4", "5"])
        #expect(sql.hasPrefix("(EXISTS") && sql.contains(" AND (EXISTS") && sql.contains(" OR (NOT EXISTS"))
    }

    @Test("a topic holding quotes or a question mark is an argument, not SQL")
    func topicIsNeverSpliced() throws {
        let c = TopicCondition.or(.topic("x?y"), .topic("o'k $1"))
        var args: [SQLValue] = []
        let lite = SQLiteTopicCondition.render(c, into: &args)
        #expect(args == [.text("x?y"), .text("o'k $1")] && !lite.contains("x?y") && !lite.contains("o'k"))
        var p = PostgresStore.Params()
        let pg = PostgresTopicCondition.render(c, &p)
        #expect(p.values == [.text("x?y"), .text("o'k $1")] && !pg.contains("x?y") && !pg.contains("o'k"))
    }

    @Test("what FCM refuses is refused", arguments: ["", "'a' in topics &&", "a in topics", "'a' in topic", "('a' in topics"])
    func refused(condition: String) {
        #expect(throws: CommandError.self) { try TopicCondition.parse(condition) }
    }
}
