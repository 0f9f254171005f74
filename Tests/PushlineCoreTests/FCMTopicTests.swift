import Testing

@testable import PushlineCore

/// FCM topic names and conditions.
@Suite struct FCMTopicTests {
    @Test func topicNames() throws {
        #expect(try FCMTopicName.normalize("news") == "news")
        #expect(try FCMTopicName.normalize("/topics/news") == "news")
        #expect(try FCMTopicName.normalize("a-b_c.d~e%20") == "a-b_c.d~e%20")
        for bad in ["", "/topics/", "with space", "sl/ash", "é", "a,b"] {
            #expect(throws: CommandError.self) { try FCMTopicName.normalize(bad) }
        }
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
