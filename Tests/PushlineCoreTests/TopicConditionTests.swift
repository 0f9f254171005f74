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

    @Test("SQL keeps the arguments in the order of the placeholders")
    func sql() throws {
        let (sql, args) = try TopicCondition.parse("'a' in topics && ('b' in topics || !('c' in topics))").sql
        #expect(args == ["a", "b", "c"])
        #expect(sql.components(separatedBy: "?").count - 1 == 3)
        #expect(sql.hasPrefix("(EXISTS") && sql.contains(" OR (NOT EXISTS"))
    }

    @Test("what FCM refuses is refused", arguments: ["", "'a' in topics &&", "a in topics", "'a' in topic", "('a' in topics"])
    func refused(condition: String) {
        #expect(throws: CommandError.self) { try TopicCondition.parse(condition) }
    }
}
