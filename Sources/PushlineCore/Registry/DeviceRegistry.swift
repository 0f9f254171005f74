/// The device registry as the dispatcher and the providers see it: storage behind a protocol.
///
/// `Registry` (SQLite on its own thread, group commit) is today's implementation; a
/// PostgreSQL one will implement the same protocol, and one conformance suite will run on
/// both. Every method is all-or-nothing; failures are `CommandError`s the protocol can answer
/// with, never a backend's raw codes. The key-value part (`KeyValueStore`) holds provider
/// state such as the APNs JWT.
///
/// ```swift
/// let registry: any DeviceRegistry = try Registry(path: "/var/lib/pushline/registry.db")
/// let page = try await registry.devices(filter)       // ordered by id, paged with afterId/limit
/// ```
public protocol DeviceRegistry: KeyValueStore {
    /// Registers devices, all or nothing (see `Registry.register`).
    func register(_ inputs: [DeviceInput], updateOnDuplicate: Bool) async throws(CommandError) -> [RegisterOutcome]
    /// Deletes devices and their subscriptions; `missing` lists the indexes of keys not found.
    func unregister(_ keys: [DeviceKey]) async throws(CommandError) -> (deleted: Int, missing: [Int])
    /// Devices matching `f`, ordered by id ascending.
    func devices(_ f: DeviceFilter) async throws(CommandError) -> [Device]
    /// The (app, platform) groups a filter selects, with their sizes.
    func groups(_ f: DeviceFilter) async throws(CommandError) -> [Registry.Group]
    /// One device, or nil.
    func device(_ key: DeviceKey) async throws(CommandError) -> Device?
    /// Updates one device and returns it; `not_found` if missing.
    func update(_ key: DeviceKey, _ u: DeviceUpdate) async throws(CommandError) -> Device
    /// Deletes inactive devices (gone inactive before `inactiveBefore`, Unix ms, if given).
    func prune(inactiveBefore: Int64?) async throws(CommandError) -> Int
    /// Device counts by app, platform and active state.
    func stats() async throws(CommandError) -> Registry.Stats
    /// Marks devices inactive in one transaction; the ids actually deactivated.
    func deactivate(_ list: [Registry.Deactivation]) async -> Set<Int64>
    /// Looks tokens up; the result is parallel to `tokens`.
    func resolveTokens(app: String, platform: Platform, _ tokens: [String]) async throws(CommandError) -> [Device?]
    /// Subscribes devices to a topic (idempotent); nothing is written if a device is missing.
    func subscribe(_ deviceIds: [Int64], topic: TopicName) async throws(CommandError)
    /// Unsubscribes devices from a topic.
    func unsubscribe(_ deviceIds: [Int64], topic: TopicName) async throws(CommandError)
    /// The topics of each device.
    func topics(of deviceIds: [Int64]) async throws(CommandError) -> [Int64: [String]]
    /// Devices subscribed to `topic`, ordered by id.
    func subscribers(of topic: TopicName) async throws(CommandError) -> [Device]
}

extension Registry: DeviceRegistry {}
