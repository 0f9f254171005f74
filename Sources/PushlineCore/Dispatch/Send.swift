import Logging

// A synchronous `send`/`bulk`: the planner (SendPlanner.swift) decides and checks what is
// sent; here the plan becomes a chunk source for the delivery pipeline (SendPipeline.swift).

extension Dispatcher {
    func send(_ a: inout Arguments, bulk: Bool) async throws(CommandError) -> JSONObject {
        let started = monotonicNanos()
        let plan = try await plan(&a, bulk ? .bulk : .send, sync: true)
        try reserve(plan.estimate)
        defer { pending.subtract(plan.estimate, ordering: .relaxed) }
        guard var resolved = plan.resolved else {
            // One streamed message: read from the registry a chunk at a time while earlier chunks are sent.
            let m = plan.messages[0]
            let n = m.notification
            switch m.target {
            case .tokens(let app, let platform, let tokens):
                return try await sendListPipelined(n, count: tokens.count, started: started, bulk: bulk) {
                    .tokens(app: app, platform: platform, Array(tokens[$0]))
                }
            case .ids(let ids):
                return try await sendListPipelined(n, count: ids.count, started: started, bulk: bulk) { .ids(Array(ids[$0])) }
            case .raw(let app, let platform, let devices):
                // `tokens`: chunk by chunk as for registration_ids, without the registry lookup.
                return try await sendListPipelined(n, count: devices.count, started: started, bulk: bulk) {
                    .raw(app: app, platform: platform, Array(devices[$0]))
                }
            case .users, .filter:
                guard let f = m.target.activeFilter else { throw CommandError(.internalError, "pipeline: unexpected target") }
                return try await sendPages(n, Self.pageParts(f, groups: plan.groups[0]), started: started, bulk: bulk)
            }
        }
        // Messages are packed into chunks of up to `chunkSize` devices (a message larger than
        // that spans several), and a chunk's messages are delivered together: a bulk of many
        // small messages keeps as many requests in flight as one send to as many devices.
        let jobs = plan.messages
        let indexed = plan.indexed
        var j = 0
        var offset = 0
        // One message (at most `chunkSize` devices here, e.g. a web worker's single send) is one
        // chunk: sent inline, without a child task (and its two thread hops) per send.
        return try await runPipeline(messages: jobs.count, started: started, bulk: bulk, inline: jobs.count == 1) { () async throws(CommandError) -> Chunk? in
            var chunk = Chunk(parts: [])
            var size = 0
            while j < jobs.count && size < Self.chunkSize {
                let devices = resolved[j].devices
                let take = min(devices.count - offset, Self.chunkSize - size)
                var part = Resolved(devices: offset == 0 && take == devices.count ? devices : Array(devices[offset..<offset + take]))
                offset += take
                size += take
                if offset == devices.count {
                    // The message's last part carries its rejected targets; its devices are released.
                    part.rejected = resolved[j].rejected
                    size += part.rejected.count
                    resolved[j] = Resolved()
                    chunk.parts.append(Chunk.Part(resolved: part, notification: jobs[j].notification, message: indexed ? j : nil))
                    j += 1
                    offset = 0
                } else {
                    chunk.parts.append(Chunk.Part(resolved: part, notification: jobs[j].notification, message: indexed ? j : nil))
                }
            }
            return chunk.parts.isEmpty ? nil : chunk
        }
    }

    /// Sends to a long list of targets a chunk at a time: `target(range)` is the chunk of the
    /// list to resolve; unknown and inactive entries are reported chunk by chunk.
    func sendListPipelined(
        _ n: PushNotification, count: Int, started: UInt64, bulk: Bool, target: @escaping (Range<Int>) -> Target
    ) async throws(CommandError) -> JSONObject {
        var offset = 0
        return try await runPipeline(
            messages: 1, started: started, bulk: bulk,
            next: { () async throws(CommandError) -> Chunk? in
                guard offset < count else { return nil }
                let range = offset..<min(offset + Self.chunkSize, count)
                let chunk = Chunk(resolved: try await self.resolve(target(range)), notification: n, message: nil)
                offset = range.upperBound
                return chunk
            },
            notAttempted: { ["from_index": .int(Int64(offset))] })
    }

    /// A send to users or a filter: the devices are read page by page (by id, `parts` from
    /// `pageParts`) through the pipeline.
    func sendPages(_ n: PushNotification, _ parts: [DeviceFilter], started: UInt64, bulk: Bool) async throws(CommandError) -> JSONObject {
        var cursor: PageCursor? = PageCursor()
        return try await runPipeline(messages: 1, started: started, bulk: bulk) { () async throws(CommandError) -> Chunk? in
            while let at = cursor {
                let (devices, next) = try await self.registry.page(parts, from: at, limit: Self.chunkSize)
                cursor = next
                if !devices.isEmpty { return Chunk(resolved: Resolved(devices: devices), notification: n, message: nil) }
            }
            return nil
        }
    }
}
