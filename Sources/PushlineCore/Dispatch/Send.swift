import Logging

extension Dispatcher {
    struct PlannedMessage {
        var target: Target
        var notification: PushNotification
    }

    static let sendOnlyKeys: Set<String> = ["cmd", "messages"]

    func parseJob(_ a: inout Arguments) throws(CommandError) -> PlannedMessage {
        let target = try Target.parse(&a)
        var fields = JSONObject()
        for k in a.unread {
            guard PushNotification.allKeys.contains(k) else { throw .invalid(a.path(k), "unknown argument '\(k)'") }
            if let v = a.value(k) { fields[k] = v }
        }
        do throws(CommandError) {
            return PlannedMessage(target: target, notification: try PushNotification(parsing: fields))
        } catch {
            throw a.root.isEmpty ? error : error.prefixed(a.root)
        }
    }

    func send(_ a: inout Arguments, bulk: Bool) async throws(CommandError) -> JSONObject {
        let started = monotonicNanos()
        var jobs: [PlannedMessage] = []
        var indexed = false
        if bulk, a.has("messages") {
            guard let list = try a.list("messages", max: 10_000) else { throw .invalid("messages", "is required") }
            try a.finish()
            guard !list.isEmpty else { throw .invalid("messages", "must not be empty") }
            for (i, m) in list.enumerated() {
                guard let o = m.objectValue else { throw .invalid("messages[\(i)]", "expected an object, got \(m.typeName)") }
                var ma = Arguments(o, prefix: "messages[\(i)]")
                jobs.append(try parseJob(&ma))
            }
            indexed = true
        } else {
            jobs.append(try parseJob(&a))
        }
        if jobs.count == 1 {
            switch jobs[0].target {
            case .tokens(let app, let platform, let tokens) where tokens.count > Self.chunkSize:
                return try await sendTokensPipelined(jobs[0].notification, app: app, platform: platform, tokens: tokens, started: started, bulk: bulk)
            case .ids(let ids) where ids.count > Self.chunkSize:
                return try await sendIdsPipelined(jobs[0].notification, ids: ids, started: started, bulk: bulk)
            case .raw(let app, let platform, let devices) where devices.count > Self.chunkSize:
                // `tokens`: chunk by chunk as for registration_ids, without the registry lookup.
                guard providers.provider(app: app, platform: platform) != nil else { throw Self.notConfigured(app: app, platform: platform) }
                try validate(jobs[0].notification, groups: [(app, platform)])
                return try await sendListPipelined(
                    jobs[0].notification, count: devices.count, reserving: devices.count, started: started, bulk: bulk
                ) { .raw(app: app, platform: platform, Array(devices[$0])) }
            case .users, .filter:
                return try await sendFilterPipelined(jobs[0].notification, target: jobs[0].target, started: started, bulk: bulk)
            default: break
            }
        }

        // Resolve every target and check every provider before anything is sent.
        var resolved = try await resolveAll(jobs.map(\.target))
        var anyConfigured = false
        var firstMissing: (String, Platform)?
        var total = 0
        for (j, r) in resolved.enumerated() {
            var checked: Set<ProviderSet.Key> = []
            for d in r.devices {
                let key = ProviderSet.Key(app: d.app, platform: d.platform)
                guard !checked.contains(key) else { continue }
                checked.insert(key)
                if let p = providers.provider(app: d.app, platform: d.platform) {
                    anyConfigured = true
                    do throws(CommandError) {
                        try p.validate(jobs[j].notification)
                    } catch {
                        var e = error
                        e.details["platform"] = .string(d.platform.rawValue)
                        if indexed {
                            e.details["message"] = .int(Int64(j))
                            e.details["message_index"] = .int(Int64(j))
                        }
                        throw e
                    }
                } else if firstMissing == nil {
                    firstMissing = (d.app, d.platform)
                }
            }
            total += r.devices.count
        }
        if !anyConfigured {
            if let (app, platform) = firstMissing {
                throw Self.notConfigured(app: app, platform: platform)
            }
            if case .tokens(let app, let platform, _) = jobs.first?.target, providers.provider(app: app, platform: platform) == nil {
                throw Self.notConfigured(app: app, platform: platform)
            }
        }
        try reserve(total)
        defer { pending.subtract(total, ordering: .relaxed) }

        // Messages are packed into chunks of up to `chunkSize` devices (a message larger than
        // that spans several), and a chunk's messages are delivered together: a bulk of many
        // small messages keeps as many requests in flight as one send to as many devices.
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
}
