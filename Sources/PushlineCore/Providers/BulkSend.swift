/// The shared skeleton of a batching provider's sends (APNs and FCM): each message is prepared
/// once (or answered without the network by the provider's own `send(_:to:)`), and the devices
/// of every prepared message go to the transport together, in `Batches.run` batches of
/// (message, device) items.
///
/// ```swift
/// public func send(_ messages: [Addressed]) async -> [[DeliveryResult]] {
///     await BulkSend.run(messages, batchSize: Self.batchSize,
///         prepare: { try? PreparedMessage($0.notification) },
///         unprepared: { await send($0.notification, to: $0.devices) },
///         noResult: { .failed($0, reason: "INTERNAL", retryable: true) },
///         batch: { prepared, items, range in await self.sendItems(prepared, messages, items, range) })
/// }
/// ```
enum BulkSend {
    /// One device of one message: `messages[message].devices[device]`.
    typealias Item = (message: Int, device: Int)

    /// A batch: sends `items[range]`, each with its message's prepared form (nil for a message
    /// that was not prepared, whose items never reach a batch).
    typealias Batch<P: Sendable> = @Sendable (_ prepared: [P?], _ items: [Item], _ range: Range<Int>) async
        -> Batches.Outcome<DeliveryResult>

    /// Sends several messages: `prepare` gives a message's prepared form or nil, in which case
    /// `unprepared` answers all of its devices; the rest go through `batch`. One result list per
    /// message, one result per device in order (`noResult` for a device no batch answered).
    static func run<P: Sendable>(
        _ messages: [Addressed], batchSize: Int, prepare: (Addressed) -> P?,
        unprepared: (Addressed) async -> [DeliveryResult], noResult: (Device) -> DeliveryResult,
        batch: @escaping Batch<P>
    ) async -> [[DeliveryResult]] {
        var out = messages.map { [DeliveryResult?](repeating: nil, count: $0.devices.count) }
        var prepared = [P?](repeating: nil, count: messages.count)
        var items: [Item] = []
        for (k, m) in messages.enumerated() where !m.devices.isEmpty {
            guard let p = prepare(m) else {
                for (i, r) in await unprepared(m).enumerated() where i < out[k].count { out[k][i] = r }
                continue
            }
            prepared[k] = p
            for i in m.devices.indices { items.append((k, i)) }
        }
        let (ready, list) = (prepared, items)
        let sent = await Batches.run(count: list.count, batchSize: batchSize) { range in await batch(ready, list, range) }
        for (n, r) in sent.enumerated() {
            let (k, i) = items[n]
            out[k][i] = r
        }
        return out.enumerated().map { k, list in
            list.enumerated().map { i, r in r ?? noResult(messages[k].devices[i]) }
        }
    }

    /// One prepared message to several devices, through the same batches as a bulk.
    static func run<P: Sendable>(
        _ prepared: P, to devices: [Device], batchSize: Int, noResult: (Device) -> DeliveryResult,
        batch: @escaping Batch<P>
    ) async -> [DeliveryResult] {
        let items = devices.indices.map { (message: 0, device: $0) }
        let one: [P?] = [prepared]
        let out = await Batches.run(count: devices.count, batchSize: batchSize) { range in await batch(one, items, range) }
        return out.enumerated().map { i, r in r ?? noResult(devices[i]) }
    }

    /// One item of a transport batch: its request, or its result without one (a bad token...).
    enum Step {
        case request(HTTPRequest)
        case result(DeliveryResult)
    }

    /// An answer a batch did not accept, with the item's index and request, for another look.
    typealias Retry = (index: Int, request: HTTPRequest, answer: Result<HTTPResponse, TransportError>)

    /// One transport batch: `build` gives each index's request (or result), the requests go in
    /// one `performAll`, an answer `accepted` takes becomes the index's result through `sent`;
    /// the other answers are handed back with their request.
    static func perform(
        _ range: Range<Int>, on transport: any HTTPClient, build: (Int) -> Step, accepted: (HTTPResponse) -> Bool,
        sent: (Int, HTTPResponse) -> DeliveryResult
    ) async -> (done: [(Int, DeliveryResult)], again: [Retry]) {
        var done: [(Int, DeliveryResult)] = []
        var index: [Int] = []
        var requests: [HTTPRequest] = []
        done.reserveCapacity(range.count)
        index.reserveCapacity(range.count)
        requests.reserveCapacity(range.count)
        for n in range {
            switch build(n) {
            case .request(let r):
                index.append(n)
                requests.append(r)
            case .result(let r):
                done.append((n, r))
            }
        }
        let answers = await transport.performAll(requests)
        var again: [Retry] = []
        for (j, answer) in answers.enumerated() {
            if case .success(let r) = answer, accepted(r) {
                done.append((index[j], sent(index[j], r)))
            } else {
                again.append((index[j], requests[j], answer))
            }
        }
        return (done, again)
    }
}
