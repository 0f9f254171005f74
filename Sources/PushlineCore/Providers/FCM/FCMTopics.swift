/// FCM topic conditions: what Google accepts. (Topic names themselves are `TopicName`.)
///
/// ```swift
/// try FCMTopicName.checkCondition("'a' in topics && ('b' in topics || 'c' in topics)")
/// ```
public enum FCMTopicName {
    /// At most this many topics in one condition (Google's limit).
    public static let maxConditionTopics = 5


    /// Checks an FCM condition: `'a' in topics`, `!`, `&&`, `||`, parentheses, at most five topics.
    /// Returns the topic names it mentions.
    @discardableResult
    public static func checkCondition(_ condition: String) throws(CommandError) -> [String] {
        var p = ConditionParser(Array(condition.utf8))
        do throws(ConditionError) {
            try p.expression()
            p.skipSpaces()
            guard p.i == p.b.count else { throw p.fail("unexpected text") }
        } catch {
            throw .invalid("condition", "\(error.message) at offset \(error.offset); expected e.g. \"'a' in topics && ('b' in topics || 'c' in topics)\"")
        }
        guard !p.topics.isEmpty else { throw .invalid("condition", "names no topic") }
        guard p.topics.count <= maxConditionTopics else {
            throw .invalid("condition", "names \(p.topics.count) topics, FCM allows at most \(maxConditionTopics)")
        }
        return p.topics
    }

    struct ConditionError: Error {
        var message: String
        var offset: Int
    }

    /// expression := term (('&&' | '||') term)* ; term := '!' term | '(' expression ')' | quoted 'in topics'
    struct ConditionParser {
        let b: [UInt8]
        var i = 0
        var depth = 0
        var topics: [String] = []
        init(_ b: [UInt8]) { self.b = b }

        func fail(_ m: String) -> ConditionError { ConditionError(message: m, offset: i) }
        mutating func skipSpaces() { while i < b.count, b[i] == 0x20 || b[i] == 0x09 { i += 1 } }
        mutating func eat(_ s: String) -> Bool {
            let u = Array(s.utf8)
            guard i + u.count <= b.count, Array(b[i..<i + u.count]) == u else { return false }
            i += u.count
            return true
        }

        mutating func expression() throws(ConditionError) {
            try term()
            while true {
                skipSpaces()
                if eat("&&") || eat("||") { try term() } else { return }
            }
        }

        mutating func term() throws(ConditionError) {
            skipSpaces()
            guard i < b.count else { throw fail("unexpected end") }
            if b[i] == UInt8(ascii: "!") {
                i += 1
                try term()
            } else if b[i] == UInt8(ascii: "(") {
                depth += 1
                guard depth < 32 else { throw fail("too deeply nested") }
                i += 1
                try expression()
                skipSpaces()
                guard eat(")") else { throw fail("expected ')'") }
                depth -= 1
            } else if b[i] == UInt8(ascii: "'") || b[i] == UInt8(ascii: "\"") {
                let q = b[i]
                i += 1
                let start = i
                while i < b.count, b[i] != q { i += 1 }
                guard i < b.count else { throw fail("unterminated topic name") }
                let name = String(decoding: b[start..<i], as: UTF8.self)
                guard TopicName.isValid(name) else { throw ConditionError(message: "invalid topic name", offset: start) }
                i += 1
                skipSpaces()
                guard eat("in") else { throw fail("expected 'in topics'") }
                skipSpaces()
                guard eat("topics") else { throw fail("expected 'in topics'") }
                topics.append(name)
            } else {
                throw fail("expected a quoted topic name, '!' or '('")
            }
        }
    }
}

/// What happened to one token in a topic (un)subscription.
enum FCMTopicOutcome: Sendable, Equatable {
    case ok
    /// Google's code (`NOT_FOUND`, `INVALID_ARGUMENT`, `TOO_MANY_TOPICS`, `UNAVAILABLE`...).
    case failed(code: String, message: String?, retryable: Bool)
}

/// Topic membership management at Google. Instance ID today (`IIDTopicManagement`); Google is
/// moving it into the FCM API, and only this interface should need a new implementation then.
protocol FCMTopicManagement: Sendable {
    /// Subscribes (`add`) or unsubscribes tokens to/from `topic` (a bare name).
    /// Returns one outcome per token, in order.
    func change(add: Bool, topic: String, tokens: [String]) async -> [FCMTopicOutcome]
}

/// Topic management through the Instance ID batch endpoints `/iid/v1:batchAdd` and `:batchRemove`.
///
/// ```
/// POST https://iid.googleapis.com/iid/v1:batchAdd
/// authorization: Bearer <OAuth2 token>      access_token_auth: true
/// {"to": "/topics/news", "registration_tokens": ["t1", "t2"]}
/// → {"results": [{}, {"error": "NOT_FOUND"}]}
/// ```
struct IIDTopicManagement: FCMTopicManagement {
    /// Google's limit of tokens per batch call.
    static let batchLimit = 1000

    var baseURL: String
    var tokens: FCMTokenSource
    var transport: any HTTPClient
    var tls: TLSOptions
    var timeoutMs: Int
    /// The fcm block's `max_connections`.
    var maxConnections: Int? = nil

    /// Batch calls in flight at once for one (un)subscription.
    static let parallelBatches = 8

    func change(add: Bool, topic: String, tokens regTokens: [String]) async -> [FCMTopicOutcome] {
        // Batches of `batchLimit` tokens, `parallelBatches` at once; each outcome at its token's index.
        let out = await Batches.run(count: regTokens.count, batchSize: Self.batchLimit, inFlight: Self.parallelBatches) { range in
            let r = await batch(add: add, topic: topic, tokens: Array(regTokens[range]))
            return Batches.Outcome(zip(range, r).map { ($0, $1) })
        }
        return out.map { $0 ?? .failed(code: "INTERNAL", message: "no answer for this token", retryable: true) }
    }

    private func batch(add: Bool, topic: String, tokens regTokens: [String]) async -> [FCMTopicOutcome] {
        let url = baseURL + (add ? "/iid/v1:batchAdd" : "/iid/v1:batchRemove")
        let body = JSONValue.object([
            "to": .string("/topics/" + topic), "registration_tokens": .array(regTokens.map { .string($0) }),
        ]).serialized()
        var refreshed = false
        var stale: String? = nil
        var attempt = 0
        while true {
            attempt += 1
            let bearer: String
            switch await tokens.token(replacing: stale) {
            case .success(let t): bearer = t
            case .failure(let e):
                return all(regTokens, .failed(code: e.reason, message: e.message, retryable: e.retryable))
            }
            stale = nil
            let req = HTTPRequest(
                method: "POST", url: url,
                headers: [
                    ("authorization", "Bearer " + bearer), ("access_token_auth", "true"),
                    ("content-type", "application/json"),
                ],
                body: body, tls: tls, timeoutMs: timeoutMs, maxConnections: maxConnections)
            let resp: HTTPResponse
            switch await transport.perform(req) {
            case .success(let r): resp = r
            case .failure(let e):
                if e.retryable, e.kind != .timeout, attempt < 3 {
                    await Backoff.sleep(Backoff.delayMs(attempt: attempt))
                    continue
                }
                return all(regTokens, .failed(code: e.protocolReason, message: e.description, retryable: e.retryable))
            }
            let json = try? JSONValue.parse(resp.body)
            if resp.status == 200, let results = json?["results"]?.arrayValue, results.count == regTokens.count {
                return results.map { r in
                    guard let code = r["error"]?.stringValue else { return .ok }
                    return .failed(
                        code: code, message: nil,
                        retryable: code == "INTERNAL" || code == "UNAVAILABLE" || code == "RESOURCE_EXHAUSTED")
                }
            }
            if resp.status == 401 && !refreshed {
                refreshed = true
                stale = bearer
                continue
            }
            if resp.status >= 500, attempt < 3 {
                await Backoff.sleep(Backoff.delayMs(attempt: attempt, retryAfterHeader: resp.header("retry-after")))
                continue
            }
            let message = json?["error"]?.stringValue ?? json?["error"]?["message"]?.stringValue ?? "HTTP \(resp.status)"
            let code: String
            switch resp.status {
            case 200: code = "BAD_RESPONSE"
            case 400: code = "INVALID_ARGUMENT"
            case 401: code = "UNAUTHENTICATED"
            case 403: code = "PERMISSION_DENIED"
            case 429: code = "RESOURCE_EXHAUSTED"
            case 500...: code = "UNAVAILABLE"
            default: code = "HTTP_\(resp.status)"
            }
            return all(regTokens, .failed(code: code, message: message, retryable: resp.status == 429 || resp.status >= 500))
        }
    }

    private func all(_ t: [String], _ o: FCMTopicOutcome) -> [FCMTopicOutcome] { Array(repeating: o, count: t.count) }
}
