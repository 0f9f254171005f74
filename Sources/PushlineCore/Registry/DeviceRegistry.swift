/// The device registry as the dispatcher and the providers see it: storage behind a protocol.
///
/// `SQLiteRegistry` (SQLite on its own thread, group commit) is today's implementation; a
/// PostgreSQL one will implement the same protocol, and one conformance suite will run on
/// both. Every method is all-or-nothing; failures are `CommandError`s the protocol can answer
/// with, never a backend's raw codes. The key-value part (`KeyValueStore`) holds provider
/// state such as the APNs JWT.
///
/// ```swift
/// let registry: any DeviceRegistry = try SQLiteRegistry(path: "/var/lib/pushline/registry.db")
/// let page = try await registry.devices(filter)       // ordered by id, paged with afterId/limit
/// ```
public protocol DeviceRegistry: KeyValueStore {
    /// Registers devices, all or nothing (see `SQLiteRegistry.register`).
    func register(_ inputs: [DeviceInput], updateOnDuplicate: Bool) async throws(CommandError) -> [RegisterOutcome]
    /// Deletes devices and their subscriptions; `missing` lists the indexes of keys not found.
    func unregister(_ keys: [DeviceKey]) async throws(CommandError) -> (deleted: Int, missing: [Int])
    /// Devices matching `f`, ordered by id ascending. A paged listing (`afterId`, `limit`) must
    /// cost what the page returns plus what it skips, never a sort of every match (issue 11).
    func devices(_ f: DeviceFilter) async throws(CommandError) -> [Device]
    /// Up to `limit` devices of `parts` (each one user, or one app, platform and active state),
    /// walked one after another in id order from `cursor`; the next cursor, nil after the last.
    func page(_ parts: [DeviceFilter], from cursor: PageCursor, limit: Int) async throws(CommandError) -> ([Device], PageCursor?)
    /// The ids of `page`'s devices, the same page and cursor (the outbox resolves a target to
    /// ids: it reads each device when it sends to it).
    func pageIds(_ parts: [DeviceFilter], from cursor: PageCursor, limit: Int) async throws(CommandError) -> ([Int64], PageCursor?)
    /// The (app, platform) groups a filter selects, with their sizes.
    func groups(_ f: DeviceFilter) async throws(CommandError) -> [DeviceGroup]
    /// One device, or nil.
    func device(_ key: DeviceKey) async throws(CommandError) -> Device?
    /// Updates one device and returns it; `not_found` if missing.
    func update(_ key: DeviceKey, _ u: DeviceUpdate) async throws(CommandError) -> Device
    /// Deletes inactive devices (gone inactive before `inactiveBefore`, Unix ms, if given).
    func prune(inactiveBefore: Int64?) async throws(CommandError) -> Int
    /// Device counts by app, platform and active state (exact, and cheap at any registry size).
    func stats() async throws(CommandError) -> RegistryStats
    /// Marks devices inactive in one transaction; the ids actually deactivated.
    func deactivate(_ list: [Deactivation]) async -> Set<Int64>
    /// Looks tokens up; the result is parallel to `tokens`.
    func resolveTokens(app: String, platform: Platform, _ tokens: [String]) async throws(CommandError) -> [Device?]
    /// Subscribes devices to a topic (idempotent); nothing is written if a device is missing.
    func subscribe(_ deviceIds: [Int64], topic: TopicName) async throws(CommandError)
    /// Unsubscribes devices from a topic.
    func unsubscribe(_ deviceIds: [Int64], topic: TopicName) async throws(CommandError)
    /// The topics of each device.
    func topics(of deviceIds: [Int64]) async throws(CommandError) -> [Int64: [String]]
    /// Devices subscribed to `topic` (of `app` only, if given), ordered by id.
    func subscribers(of topic: TopicName, app: String?) async throws(CommandError) -> [Device]
    /// Writes a timestamp and commits (the watchdog's and `health`'s check that the database
    /// is reachable and writable); throws the database's error.
    func probeWritable() async throws(CommandError)
    /// Finishes queued work and closes the connections; later calls fail with `shutting_down`.
    func close()
}

extension DeviceRegistry {
    /// `page`'s devices' ids (a backend without a cheaper listing of ids).
    public func pageIds(_ parts: [DeviceFilter], from cursor: PageCursor, limit: Int) async throws(CommandError) -> ([Int64], PageCursor?) {
        let (devices, next) = try await page(parts, from: cursor, limit: limit)
        return (devices.map(\.id), next)
    }
}

extension SQLiteRegistry: DeviceRegistry {}
