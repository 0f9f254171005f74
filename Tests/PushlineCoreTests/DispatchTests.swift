// The dispatcher end to end on a real SQLite registry, with the providers talking to an
// in-memory HTTPClient: what a `send`, a `bulk` and a dry run put on the wire and answer,
// without sockets or TLS.
import Foundation
import Logging
import Testing
@testable import PushlineCore

/// A dispatcher with an APNs app `default` whose provider sends through `client`.
struct DispatchHarness {
    let dispatcher: Dispatcher
    let registry: SQLiteRegistry
    let dir: String

    init(client: any HTTPClient) throws {
        dir = NSTemporaryDirectory() + "pushline-dispatch-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let key = try ECPrivateKey.generate()
        try key.pkcs8PEM().write(toFile: dir + "/AuthKey.p8", atomically: true, encoding: .utf8)
        let json = """
            {"apps": {"default": {"apns": {"key_path": "\(dir)/AuthKey.p8", "key_id": "ABCDEFGHIJ",
              "team_id": "TEAM123456", "topic": "com.example.app", "endpoint": "https://apns.invalid"}}}}
            """
        let config = try PushlineConfig(json: try JSONValue.parse(Array(json.utf8)))
        registry = try SQLiteRegistry(path: dir + "/registry.db")
        let logger = Logger(label: "test.dispatch")
        let providers = try ProviderSet(config: config, context: ProviderContext(transport: client, store: registry, logger: logger))
        dispatcher = Dispatcher(config: config, registry: registry, providers: providers, logger: logger)
    }

    func close() {
        registry.close()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Registers `n` APNs devices for users "u1"... and returns their tokens.
    func register(_ n: Int) async throws -> [String] {
        let tokens = (1...n).map { apnsTestToken($0) }
        let list: [JSONValue] = tokens.enumerated().map { i, t in
            .object(["platform": .string("apns"), "registration_id": .string(t), "user": .string("u\(i + 1)")])
        }
        _ = try await dispatcher.handle(["cmd": .string("register"), "devices": .array(list)])
        return tokens
    }

    func call(_ json: String) async throws -> JSONObject {
        guard let o = try JSONValue.parse(Array(json.utf8)).objectValue else { throw CommandError(.invalidArgument, "not an object") }
        return try await dispatcher.handle(o)
    }
}

/// The token at the end of an APNs request's path.
func apnsToken(of r: HTTPRequest) -> String { String(r.url.split(separator: "/").last ?? "") }

/// APNs's answers: 200 with an apns-id and no body, unless `fail` names the token.
func apnsAnswers(fail: [String: (Int, String)] = [:]) -> InMemoryHTTPClient.Handler {
    { r in
        let token = apnsToken(of: r)
        if let (status, reason) = fail[token] {
            return .success(HTTPResponse(status: status, headers: [("apns-id", "00000000-0000-0000-0000-000000000001")],
                                         body: Array(#"{"reason":"\#(reason)"}"#.utf8)))
        }
        return .success(HTTPResponse(status: 200, headers: [("apns-id", "00000000-0000-0000-0000-000000000000")]))
    }
}

@Suite("Dispatcher with an in-memory HTTP client")
struct DispatchTests {
    @Test("send to users: one APNs request per device with Apple's headers; results in order")
    func sendToUsers() async throws {
        let client = InMemoryHTTPClient(apnsAnswers())
        let h = try DispatchHarness(client: client)
        defer { h.close() }
        let tokens = try await h.register(3)
        let reply = try await h.call(#"{"cmd":"send","users":["u1","u3"],"message":"hi","badge":3}"#)
        #expect(reply["sent"] == .int(2))
        #expect(reply["failed"] == .int(0))
        let sentTo = client.requests.map(apnsToken).sorted()
        #expect(sentTo == [tokens[0], tokens[2]].sorted())
        for r in client.requests {
            #expect(r.method == "POST")
            #expect(r.url.hasPrefix("https://apns.invalid/3/device/"))
            #expect(r.header("apns-topic") == "com.example.app")
            #expect(r.header("authorization")?.hasPrefix("bearer ") == true)
            let body = try JSONValue.parse(r.body)
            #expect(body["aps"]?["alert"] == .string("hi") || body["aps"]?["alert"]?["body"] == .string("hi"))
            #expect(body["aps"]?["badge"] == .int(3))
        }
    }

    @Test("410 Unregistered deactivates the device in the registry; the others are sent")
    func deactivation() async throws {
        let tokens = (1...3).map { apnsTestToken($0) }
        let client = InMemoryHTTPClient(apnsAnswers(fail: [tokens[1]: (410, "Unregistered")]))
        let h = try DispatchHarness(client: client)
        defer { h.close() }
        _ = try await h.register(3)
        let reply = try await h.call(#"{"cmd":"send","filter":{"platform":"apns"},"message":"hi"}"#)
        #expect(reply["sent"] == .int(2))
        #expect(reply["failed"] == .int(1))
        guard case .raw(let segments) = reply["results"] else { Issue.record("results not rendered as segments"); return }
        let results = try JSONValue.parse(segments.flatMap { $0 })
        let failed = results.arrayValue?.filter { $0["status"] == .string("failed") } ?? []
        #expect(failed.count == 1)
        #expect(failed.first?["reason"] == .string("Unregistered"))
        #expect(failed.first?["deactivated"] == .bool(true))
        let listed = try await h.call(#"{"cmd":"devices","active":false}"#)
        let inactive = listed["devices"]?.arrayValue?.compactMap { $0["registration_id"]?.stringValue } ?? []
        #expect(inactive == [tokens[1]])
    }

    @Test("a dry run builds every request and sends none")
    func dryRun() async throws {
        let client = InMemoryHTTPClient(apnsAnswers())
        let h = try DispatchHarness(client: client)
        defer { h.close() }
        _ = try await h.register(5)
        let reply = try await h.call(#"{"cmd":"send","filter":{"platform":"apns"},"message":"hi","dry_run":true}"#)
        #expect(reply["sent"] == .int(5))
        #expect(client.requests.isEmpty)
    }

    @Test("bulk with messages: each result carries its message index and each device gets its own text")
    func bulkMessages() async throws {
        let client = InMemoryHTTPClient(apnsAnswers())
        let h = try DispatchHarness(client: client)
        defer { h.close() }
        let tokens = try await h.register(4)
        let reply = try await h.call(#"""
            {"cmd":"bulk","messages":[{"users":["u1"],"message":"m0"},{"users":["u2"],"message":"m1"},
             {"users":["u3","u4"],"message":"m2"}]}
            """#)
        #expect(reply["sent"] == .int(4))
        var textOf: [String: String] = [:]
        for r in client.requests {
            let body = try JSONValue.parse(r.body)
            textOf[apnsToken(of: r)] = body["aps"]?["alert"]?.stringValue ?? body["aps"]?["alert"]?["body"]?.stringValue
        }
        #expect(textOf == [tokens[0]: "m0", tokens[1]: "m1", tokens[2]: "m2", tokens[3]: "m2"])
        guard case .raw(let segments) = reply["results"] else { Issue.record("results not rendered as segments"); return }
        let results = try JSONValue.parse(segments.flatMap { $0 }).arrayValue ?? []
        #expect(results.compactMap { $0["message"]?.intValue }.sorted() == [0, 1, 2, 2])
    }

    @Test("a transport failure fails only its device, retryable; the others are sent")
    func transportFailure() async throws {
        let bad = apnsTestToken(2)
        let client = InMemoryHTTPClient { r in
            apnsToken(of: r) == bad
                ? .failure(TransportError(.connect, "connection refused"))
                : .success(HTTPResponse(status: 200, headers: [("apns-id", "x")]))
        }
        let h = try DispatchHarness(client: client)
        defer { h.close() }
        _ = try await h.register(3)
        let reply = try await h.call(#"{"cmd":"send","filter":{"platform":"apns"},"message":"hi"}"#)
        #expect(reply["sent"] == .int(2))
        #expect(reply["failed"] == .int(1))
        guard case .raw(let segments) = reply["results"] else { Issue.record("results not rendered as segments"); return }
        let results = try JSONValue.parse(segments.flatMap { $0 }).arrayValue ?? []
        let failed = results.first { $0["status"] == .string("failed") }
        #expect(failed?["registration_id"] == .string(bad))
        #expect(failed?["retryable"] == .bool(true))
        #expect(failed?["deactivated"] == .bool(false))
    }
}
