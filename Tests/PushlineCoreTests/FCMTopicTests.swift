import Testing

@testable import PushlineCore

/// FCM topic names and conditions.
@Suite struct FCMTopicTests {
    @Test func topicNames() throws {
        #expect(try TopicName(parsing: "news").name == "news")
        #expect(try TopicName(parsing: "/topics/news").name == "news")
        #expect(try TopicName(parsing: "a-b_c.d~e%20").name == "a-b_c.d~e%20")
        #expect(try TopicName(parsing: String(repeating: "a", count: 256)).name.utf8.count == 256)
        #expect(try TopicName(parsing: "/topics/" + String(repeating: "a", count: 256)).name.utf8.count == 256)
        for bad in ["", "/topics/", "with space", "sl/ash", "é", "a,b", String(repeating: "a", count: 257)] {
            #expect(throws: CommandError.self) { try TopicName(parsing: bad) }
        }
        do {
            _ = try TopicName(parsing: String(repeating: "t", count: 300), field: "topic")
            Issue.record("a 300-byte topic was accepted")
        } catch {
            #expect(error.code == .invalidArgument && error.details["field"] == "topic")
            #expect(error.message.contains("256"))
        }
        // Condition topics follow the same rule.
        #expect(throws: CommandError.self) { try FCMTopicName.checkCondition("'\(String(repeating: "a", count: 257))' in topics") }
    }

    @Test func conditions() throws {
        #expect(try FCMTopicName.checkCondition("'a' in topics") == ["a"])
        #expect(
            try FCMTopicName.checkCondition("'a' in topics && ('b' in topics || 'c' in topics)") == ["a", "b", "c"])
        #expect(try FCMTopicName.checkCondition("!('a' in topics) && \"b\" in topics") == ["a", "b"])
        let bad = [
            "", "a in topics", "'a' in topics &&", "('a' in topics", "'a' in topics 'b' in topics", "'a b' in topics",
            "'a' in topics && 'b' in topics && 'c' in topics && 'd' in topics && 'e' in topics && 'f' in topics",
            "'a' topics",
        ]
        for c in bad {
            #expect(throws: CommandError.self, "\(c)") { try FCMTopicName.checkCondition(c) }
        }
    }

    @Test func conditionErrorNamesField() {
        do {
            try FCMTopicName.checkCondition("'a' in")
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.details["field"] == "condition")
        }
    }
}

/// Tests name topics by literal; an invalid literal is a bug in the test.
extension TopicName: ExpressibleByStringLiteral {
    public init(stringLiteral s: String) {
        self = try! TopicName(parsing: s)
    }
}
