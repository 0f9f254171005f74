import Logging
import Synchronization
import Testing

@testable import PushlineCore

/// An in-memory APNs stand-in: records what it is asked to send, answers `sent` (or a
/// deactivating failure for tokens in `dead`), and can hold each call until `gate` calls
/// are in progress together (or `gateTimeoutMs` passed), recording the most seen at once.
final class RecordingProvider: PushProvider {
    let platform: Platform = .apns
    let dead: Set<String>
    let gate: Int
    let gateTimeoutMs: Int
    let sentTo = Mutex<[String]>([])
    /// Devices per call, in call order.
    let calls = Mutex<[Int]>([])
    let state = Mutex<(now: Int, max: Int)>((0, 0))

    init(dead: Set<String> = [], gate: Int = 0, gateTimeoutMs: Int = 2000) {
        self.dead = dead
        self.gate = gate
        self.gateTimeoutMs = gateTimeoutMs
    }

    func validate(_ notification: PushlineCore.PushNotification) throws(CommandError) {}

    func send(_ notification: PushlineCore.PushNotification, to devices: [Device]) async -> [DeliveryResult] {
        let here = state.withLock { s -> Int in
            s.now += 1
            s.max = Swift.max(s.max, s.now)
            return s.now
        }
        if gate > 0 && here < gate {
            let deadline = monotonicNanos() + UInt64(gateTimeoutMs) * 1_000_000
            while state.withLock({ $0.max }) < gate && monotonicNanos() < deadline {
                try? await Task.sleep(nanoseconds: 1_000_000)
            }
        }
        state.withLock { $0.now -= 1 }
        sentTo.withLock { $0.append(contentsOf: devices.map(\.registrationId)) }
        calls.withLock { $0.append(devices.count) }
        return devices.map { d in
            dead.contains(d.registrationId)
                ? .failed(d, reason: "Unregistered", deactivate: true)
                : .sent(d, extra: ["note": notification.fields["message"] ?? .null])
        }
    }
}

@Suite struct SendPipelineTests {
    struct Env {
        let dir = TempDir()
        let registry: SQLiteRegistry
        let provider: RecordingProvider
        let dispatcher: Dispatcher
        let devices: [Device]

        init(count: Int, provider: RecordingProvider) async throws {
            registry = try SQLiteRegistry(path: dir.db)
            self.provider = provider
            let inputs = try (1...count).map { i throws(CommandError) in
                try DeviceInput(parsing: ["platform": "apns", "registration_id": .string(apnsToken(i))])
            }
            devices = try await registry.register(inputs, updateOnDuplicate: false).map(\.device)
            dispatcher = Dispatcher(
                config: PushlineConfig(), registry: registry,
                providers: ProviderSet([ProviderSet.Key(app: "default", platform: .apns): provider]),
                logger: Logger(label: "test"))
        }

        func close() {
            registry.close()
            dir.remove()
        }
    }

    static func parse(_ o: JSONObject) throws -> JSONValue {
        try JSONValue.parse(JSONValue.object(o).serialized())
    }

    /// Issue 12, defect 5: reading chunk 2 fails after chunks 0 and 1 were sent (and a device of
    /// chunk 1 deactivated): the error carries exactly what was done and what was not attempted.
    @Test func aChunkReadFailingPartWayReportsWhatWasSent() async throws {
        let provider = RecordingProvider(dead: [apnsToken(3).lowercased()])
        let env = try await Env(count: 5, provider: provider)
        defer { env.close() }
        let n = try PushlineCore.PushNotification(parsing: ["message": "hi"])
        let chunks: [[Device]] = [Array(env.devices[0..<2]), Array(env.devices[2..<4])]
        var k = 0
        var thrown: CommandError?
        do {
            _ = try await env.dispatcher.runPipeline(
                messages: 1, started: monotonicNanos(), bulk: true,
                next: { () async throws(CommandError) -> Dispatcher.Chunk? in
                    guard k < chunks.count else { throw CommandError(.internalError, "registry: disk I/O error") }
                    defer { k += 1 }
                    return Dispatcher.Chunk(resolved: Resolved(devices: chunks[k]), notification: n, message: nil)
                },
                notAttempted: { ["from_index": .int(Int64(k * 2))] })
            Issue.record("expected the pipeline to throw")
        } catch {
            thrown = error
        }
        let e = try #require(thrown)
        #expect(e.code == .internalError && e.message.contains("disk I/O error"))
        #expect(e.details["partial"] == .bool(true))
        // Exactly the devices of the chunks read were sent, each once.
        let sentTo = provider.sentTo.withLock { $0 }
        #expect(sentTo.sorted() == env.devices[0..<4].map(\.registrationId).sorted())
        let reply = try Self.parse(e.reply)
        #expect(reply["sent"]?.intValue == 3 && reply["failed"]?.intValue == 1)
        let results = try #require(reply["results"]?.arrayValue)
        #expect(results.compactMap { $0["id"]?.intValue } == env.devices[0..<4].map(\.id))
        let dead = try #require(results.first { $0["id"]?.intValue == env.devices[2].id })
        #expect(dead["status"] == "failed" && dead["deactivated"] == .bool(true))
        #expect(reply["not_attempted"] == .object(["from_index": 4]))
        // The deactivation was committed.
        #expect(try await env.registry.device(.id(env.devices[2].id))?.active == false)
        // The whole failure response: ok false, the error, and what was done beside it.
        let line = Server.encode(id: 9, result: .failure(e)).flatMap { segment -> [UInt8] in
            guard case .bytes(let b) = segment else { Issue.record("4 results spooled to a file"); return [] }
            return b
        }
        let response = try JSONValue.parse(Array(line.dropLast()))
        #expect(response["ok"] == .bool(false) && response["error"]?["code"] == "internal_error")
        #expect(response["error"]?["partial"] == .bool(true))
        #expect(response["results"]?.arrayValue?.count == 4 && response["not_attempted"]?["from_index"] == 4)
    }

    /// A failure before any chunk was sent is a plain error: nothing sent, nothing beside `error`.
    @Test func aFailureBeforeAnythingIsSentIsAPlainError() async throws {
        let provider = RecordingProvider()
        let env = try await Env(count: 1, provider: provider)
        defer { env.close() }
        await expectError(.internalError) { () async throws(CommandError) in
            _ = try await env.dispatcher.runPipeline(
                messages: 1, started: monotonicNanos(), bulk: true,
                next: { () async throws(CommandError) -> Dispatcher.Chunk? in throw CommandError(.internalError, "disk I/O error") },
                notAttempted: { ["from_index": 0] })
        }
        do {
            _ = try await env.dispatcher.runPipeline(
                messages: 1, started: monotonicNanos(), bulk: true,
                next: { () async throws(CommandError) -> Dispatcher.Chunk? in throw CommandError(.internalError, "disk I/O error") })
        } catch {
            #expect(error.reply.pairs.isEmpty && error.details["partial"] == nil)
        }
        #expect(provider.sentTo.withLock { $0 }.isEmpty)
    }

    /// Issue 17: a bulk's small messages are delivered together (all 40 in progress at once),
    /// not a chunk (message) or two at a time; results keep their message index and order.
    @Test func aBulksMessagesAreDeliveredTogether() async throws {
        let provider = RecordingProvider(gate: 40)
        let env = try await Env(count: 40, provider: provider)
        defer { env.close() }
        let messages: [JSONValue] = env.devices.enumerated().map { k, d in
            .object(["ids": .array([.int(d.id)]), "message": .string("m\(k)")])
        }
        let r = try Self.parse(try await env.dispatcher.handle(["cmd": "bulk", "messages": .array(messages)]))
        #expect(provider.state.withLock { $0.max } == 40)
        #expect(r["sent"]?.intValue == 40)
        let results = try #require(r["results"]?.arrayValue)
        #expect(results.map { $0["message"]?.intValue ?? -1 } == Array(0..<40).map(Int64.init))
        #expect(results.map { $0["id"]?.intValue ?? -1 } == env.devices.map(\.id))
        #expect(results.map { $0["note"]?.stringValue ?? "" } == (0..<40).map { "m\($0)" })
    }

    /// Messages larger than the space left in a chunk (5000 devices) span chunks; every device
    /// gets one result, in message order, and a message's rejected targets follow its devices.
    @Test func messagesArePackedIntoChunksInOrder() async throws {
        #expect(Dispatcher.chunkSize == 5000)
        let provider = RecordingProvider()
        let env = try await Env(count: 7001, provider: provider)
        defer { env.close() }
        let ids = env.devices.map(\.id)
        let messages: [JSONValue] = [
            .object(["ids": .array(ids[0..<3000].map { .int($0) } + [.int(999_999)]), "message": "a"]),
            .object(["registration_ids": .array(env.devices[3000..<7000].map { .string($0.registrationId) }), "platform": "apns", "message": "b"]),
            .object(["ids": .array([.int(ids[7000])]), "message": "c"]),
        ]
        let r = try Self.parse(try await env.dispatcher.handle(["cmd": "bulk", "messages": .array(messages)]))
        let results = try #require(r["results"]?.arrayValue)
        let got = results.map { ($0["message"]?.intValue ?? -1, $0["id"]?.intValue ?? -1) }
        var wantMessage: [Int64] = Array(repeating: 0, count: 3001)
        wantMessage += Array(repeating: 1, count: 4000)
        wantMessage.append(2)
        var wantId: [Int64] = Array(ids[0..<3000])
        wantId.append(999_999)  // the unknown id: failed, not_registered
        wantId += ids[3000..<7001]
        let messagesInOrder = got.map(\.0) == wantMessage
        let idsInOrder = got.map(\.1) == wantId
        #expect(messagesInOrder && idsInOrder)
        #expect(results[3000]["reason"] == "not_registered")
        #expect(r["sent"]?.intValue == 7001 && r["failed"]?.intValue == 1)
        // Chunk 0: message 0 (3000 devices, plus its unknown id) and 1999 devices of message 1;
        // chunk 1: the other 2001 devices of message 1 and message 2.
        #expect(provider.calls.withLock { $0 }.sorted() == [1, 1999, 2001, 3000])
    }
}

@Suite struct BatchesTests {
    /// Issue 17: a batch's retries (waiting out a backoff) run outside the batch limit: with one
    /// batch in flight, the later batches run while batch 0's retry still waits.
    final class Counters: Sendable {
        let finished = Mutex<Int>(0)
        let sawOthersDone = Mutex<Bool>(false)
    }

    @Test func aRetryWaitingDoesNotHoldABatchSlot() async {
        let c = Counters()
        let results = await Batches.run(count: 4, batchSize: 1, inFlight: 1) { range -> Batches.Outcome<Int> in
            let i = range.lowerBound
            c.finished.withLock { $0 += 1 }
            guard i == 0 else { return Batches.Outcome([(i, i)]) }
            return Batches.Outcome([]) {
                // The "backoff": until the three other batches are done (at most 5 s).
                let deadline = monotonicNanos() + 5_000_000_000
                while c.finished.withLock({ $0 }) < 4 && monotonicNanos() < deadline {
                    try? await Task.sleep(nanoseconds: 1_000_000)
                }
                c.sawOthersDone.withLock { $0 = c.finished.withLock { $0 } == 4 }
                return [(0, 100)]
            }
        }
        #expect(results == [100, 1, 2, 3])
        let saw = c.sawOthersDone.withLock { $0 }
        #expect(saw)
    }
}
