import Logging

// The delivery pipeline: chunks from a chunk source delivered two at a time, results rendered
// as each chunk ends (synchronous sends and the outbox's worker share `deliver`).

extension Dispatcher {
    /// A piece of a send: up to about `chunkSize` devices (and rejected targets), as parts
    /// that each have their own notification (one part for a `send`, many for a `bulk` of
    /// small messages); `message` is the index in a `bulk` with `messages`, which each of the
    /// part's results then carries.
    struct Chunk: Sendable {
        struct Part: Sendable {
            var resolved: Resolved
            var notification: PushNotification
            var message: Int?
        }
        var parts: [Part]

        init(parts: [Part]) { self.parts = parts }

        init(resolved: Resolved, notification: PushNotification, message: Int?) {
            parts = [Part(resolved: resolved, notification: notification, message: message)]
        }
    }

    /// Sends chunk after chunk: the next chunk is read while two are being sent, and each chunk's
    /// results are rendered as soon as it is done, so only two chunks' devices and results are held.
    ///
    /// If reading a chunk fails after earlier chunks were sent, the chunks in flight are finished
    /// and the error is thrown with what was done (protocol.md, "Partial failure"): `sent`,
    /// `failed`, `results` of every device attempted, and `not_attempted` (from `notAttempted`,
    /// evaluated after the failing read) saying which part of the target was not. By default
    /// (a `users` or `filter` target) that is every device of the target without a result.
    /// With `inline`, chunks are sent one after another in the caller's task (no child task).
    func runPipeline(
        messages: Int, started: UInt64, bulk: Bool, inline: Bool = false, next: () async throws(CommandError) -> Chunk?,
        notAttempted: () -> JSONObject = { ["not_in_results": true] }
    ) async throws(CommandError) -> JSONObject {
        typealias Part = (bytes: [UInt8], sent: Int, failed: Int)
        var parts: [Int: Part] = [:]
        var failure: CommandError?
        // Chunks' results go out in chunk order into a spool that moves to a temporary file past
        // a few MB (issue 11): a send's memory stays bounded by its chunks, not its size.
        let collected = ResultCollector(spool: ByteSpool(directory: resultSpoolDirectory, memoryLimit: Self.resultMemoryLimit))
        var chunksStarted = 0
        await withTaskGroup(of: (Int, Part).self) { group in
            var k = 0
            var running = 0
            var exhausted = false
            while true {
                while !exhausted && running < 2 && failure == nil {
                    do throws(CommandError) {
                        guard let chunk = try await next() else {
                            exhausted = true
                            break
                        }
                        let index = k
                        k += 1
                        if inline {
                            parts[index] = await self.sendChunk(chunk)
                            collected.take(from: &parts)
                            continue
                        }
                        group.addTask { (index, await self.sendChunk(chunk)) }
                        running += 1
                    } catch {
                        failure = error
                    }
                }
                guard running > 0, let (i, part) = await group.next() else { break }
                running -= 1
                parts[i] = part
                collected.take(from: &parts)
            }
            chunksStarted = k
        }
        let (sent, failed) = (collected.sent, collected.failed)
        let results: JSONValue
        switch collected.finish() {
        case .success(let v): results = v
        case .failure(let e):
            logger.error("send results lost", metadata: ["error": "\(e.message)", "sent": "\(sent)", "failed": "\(failed)"])
            throw CommandError(.internalError, "the send was carried out (\(sent) sent, \(failed) failed) but its results were lost: \(e.message)")
        }
        sentCount.add(sent, ordering: .relaxed)
        failedCount.add(failed, ordering: .relaxed)
        if var failure {
            logger.error("send stopped part way", metadata: [
                "error": "\(failure.message)", "chunks_done": "\(chunksStarted)", "sent": "\(sent)", "failed": "\(failed)",
            ])
            // Nothing was sent: the plain error (a rejected request changes nothing).
            guard chunksStarted > 0 else { throw failure }
            failure.details["partial"] = .bool(true)
            failure.reply = [
                "sent": .int(Int64(sent)), "failed": .int(Int64(failed)), "results": results,
                "not_attempted": .object(notAttempted()),
            ]
            throw failure
        }
        logger.info("\(bulk ? "bulk" : "send") done", metadata: [
            "messages": "\(messages)", "sent": "\(sent)", "failed": "\(failed)", "ms": "\((monotonicNanos() - started) / 1_000_000)",
        ])
        return ["sent": .int(Int64(sent)), "failed": .int(Int64(failed)), "results": results]
    }

    /// One chunk of a pipelined send: its results as JSON objects each led by a comma, and counts.
    /// A chunk's parts (messages) are delivered concurrently; results keep the parts' order.
    func sendChunk(_ c: Chunk) async -> (bytes: [UInt8], sent: Int, failed: Int) {
        var delivered = await deliver(c.parts.map { Addressed($0.notification, to: $0.resolved.devices) })
        // One registry transaction for the whole chunk's deactivations.
        let renderer: ResultRenderer
        if c.parts.count == 1 {
            let r = c.parts[0].resolved
            renderer = await applyDeactivations(r.rejected.isEmpty ? delivered[0] : delivered[0] + r.rejected, devices: r.devices)
        } else {
            renderer = await applyDeactivations(
                delivered.flatMap { $0 } + c.parts.flatMap(\.resolved.rejected), devices: c.parts.flatMap(\.resolved.devices))
        }
        var bytes: [UInt8] = []
        var sent = 0
        var count = 0
        let mode = Self.resultsMode
        for (k, part) in c.parts.enumerated() {
            for list in [delivered[k], part.resolved.rejected] {
                for result in list {
                    count += 1
                    if result.status == .sent { sent += 1 }
                    if mode == .none || (mode == .failed && result.status == .sent) { continue }
                    bytes.append(UInt8(ascii: ","))
                    JSONValue.object(renderer.json(result, message: part.message)).write(to: &bytes)
                }
            }
            delivered[k] = []
        }
        return (bytes, sent, count - sent)
    }

    static func notConfigured(app: String, platform: Platform) -> CommandError {
        CommandError(
            .providerNotConfigured, "app '\(app)' has no \(platform.rawValue) credentials",
            details: ["app": .string(app), "platform": .string(platform.rawValue)])
    }

    /// Takes `n` notifications of the daemon's budget or throws `busy`.
    func reserve(_ n: Int) throws(CommandError) {
        let now = pending.add(n, ordering: .relaxed).newValue
        if now > config.maxPending && now != n {
            pending.subtract(n, ordering: .relaxed)
            let over = now - config.maxPending
            // Roughly how long the backlog takes to drain at ~30k notifications/s, at least 50 ms.
            let retry = max(50, min(30_000, over / 30 + 50))
            throw CommandError(
                .busy, "the daemon has \(now - n) notifications in flight, over max_pending \(config.maxPending); retry later",
                details: ["retry_after_ms": .int(Int64(retry))])
        }
    }

    /// Sends several notifications (a chunk of a `bulk`'s messages) to their devices: each
    /// (app, platform) provider gets all its messages in one call, providers concurrently.
    /// One result list per message, in its devices' order. The one delivery step of every
    /// sender: the synchronous pipeline's chunks and the outbox worker's claimed rows.
    func deliver(_ messages: [Addressed]) async -> [[DeliveryResult]] {
        // One message (a `send`'s chunk, a one-message job's claim): no grouping or copies.
        if messages.count <= 1 { return messages.isEmpty ? [] : [await deliver(messages[0].notification, to: messages[0].devices)] }
        // Per provider: the messages' devices of that (app, platform), and where each came from.
        struct Group {
            var messages: [Addressed] = []
            /// (message, index of each device in the message) per entry of `messages`.
            var origin: [(Int, [Int])] = []
        }
        var groups: [ProviderSet.Key: Group] = [:]
        var out = messages.map { [DeliveryResult?](repeating: nil, count: $0.devices.count) }
        for (k, m) in messages.enumerated() {
            guard let first = m.devices.first else { continue }
            if m.devices.allSatisfy({ $0.app == first.app && $0.platform == first.platform }) {
                let key = ProviderSet.Key(app: first.app, platform: first.platform)
                groups[key, default: Group()].messages.append(m)
                groups[key]?.origin.append((k, Array(m.devices.indices)))
                continue
            }
            var split: [ProviderSet.Key: [Int]] = [:]
            for (i, d) in m.devices.enumerated() { split[ProviderSet.Key(app: d.app, platform: d.platform), default: []].append(i) }
            for (key, idx) in split {
                groups[key, default: Group()].messages.append(Addressed(m.notification, to: idx.map { m.devices[$0] }))
                groups[key]?.origin.append((k, idx))
            }
        }
        await withTaskGroup(of: (ProviderSet.Key, [[DeliveryResult]]).self) { group in
            for (key, g) in groups {
                guard let p = providers.provider(app: key.app, platform: key.platform) else {
                    for (m, (k, idx)) in zip(g.messages, g.origin) {
                        for (j, i) in idx.enumerated() { out[k][i] = .failed(m.devices[j], reason: "provider_not_configured") }
                    }
                    continue
                }
                group.addTask { (key, await p.send(g.messages)) }
            }
            for await (key, results) in group {
                guard let g = groups[key] else { continue }
                for (e, (k, idx)) in g.origin.enumerated() where e < results.count {
                    for (j, i) in idx.enumerated() where j < results[e].count { out[k][i] = results[e][j] }
                }
            }
        }
        return out.enumerated().map { k, list in
            list.enumerated().map { i, r in
                r ?? .failed(messages[k].devices[i], reason: "provider returned no result", retryable: true)
            }
        }
    }

    /// Sends to devices grouped by (app, platform), groups concurrently; results keep the devices' order.
    func deliver(_ n: PushNotification, to devices: [Device]) async -> [DeliveryResult] {
        // One (app, platform), the usual case: hand the list over as it is, no index or copy.
        if let first = devices.first, devices.allSatisfy({ $0.app == first.app && $0.platform == first.platform }) {
            guard let p = providers.provider(app: first.app, platform: first.platform) else {
                return devices.map { .failed($0, reason: "provider_not_configured") }
            }
            ProviderHealth.shared.begin(app: first.app, platform: first.platform, count: devices.count)
            let r = await p.send(n, to: devices)
            ProviderHealth.shared.finish(app: first.app, platform: first.platform, results: r, count: devices.count)
            if r.count == devices.count { return r }
            return devices.enumerated().map { i, d in i < r.count ? r[i] : .failed(d, reason: "provider returned no result", retryable: true) }
        }
        var groups: [ProviderSet.Key: [Int]] = [:]
        for (i, d) in devices.enumerated() { groups[ProviderSet.Key(app: d.app, platform: d.platform), default: []].append(i) }
        var results = [DeliveryResult?](repeating: nil, count: devices.count)
        await withTaskGroup(of: [(Int, DeliveryResult)].self) { group in
            for (key, idx) in groups {
                let subset = idx.map { devices[$0] }
                guard let p = providers.provider(app: key.app, platform: key.platform) else {
                    for (k, i) in idx.enumerated() { results[i] = .failed(subset[k], reason: "provider_not_configured") }
                    continue
                }
                group.addTask {
                    ProviderHealth.shared.begin(app: key.app, platform: key.platform, count: subset.count)
                    let r = await p.send(n, to: subset)
                    ProviderHealth.shared.finish(app: key.app, platform: key.platform, results: r, count: subset.count)
                    return idx.enumerated().map { k, i in
                        (i, k < r.count ? r[k] : .failed(subset[k], reason: "provider returned no result", retryable: true))
                    }
                }
            }
            for await pairs in group { for (i, r) in pairs { results[i] = r } }
        }
        return results.enumerated().map { i, r in r ?? .failed(devices[i], reason: "internal: no result", retryable: true) }
    }

}
