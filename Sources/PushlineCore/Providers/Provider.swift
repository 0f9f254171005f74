/// What every provider (APNs, FCM, WebPush, WNS) does: build a request from a
/// notification and a device, send it, and map the answer to a per-device result.
///
/// One provider instance serves one app's block for one platform. It owns its
/// credentials, token caches and retry policy; the shared `HTTPTransport` owns the
/// connections. A provider never throws for one device: a failure is a
/// `DeliveryResult` with `status == .failed`, so one device never fails the others.
public protocol PushProvider: Sendable {
    var platform: Platform { get }

    /// Checks the notification before anything is sent (e.g. `payload_too_large`,
    /// a bad provider-specific field). Throwing here fails the whole command.
    func validate(_ notification: Notification) throws(CommandError)

    /// Sends `notification` to each device (all of this provider's platform and app).
    /// Returns exactly one result per device, in the same order. With
    /// `notification.dryRun`, builds and checks every request without sending.
    func send(_ notification: Notification, to devices: [Device]) async -> [DeliveryResult]

    /// Releases connections and caches (daemon shutdown).
    func shutdown() async
}

extension PushProvider {
    public func shutdown() async {}
}

/// What a provider may use from the daemon.
public struct ProviderContext: Sendable {
    /// The shared HTTP/2 transport.
    public var transport: HTTPTransport
    /// Small persistent key-value storage in the registry database (e.g. the APNs provider JWT).
    public var store: KeyValueStore
    public var logger: Logger

    public init(transport: HTTPTransport, store: KeyValueStore, logger: Logger) {
        self.transport = transport
        self.store = store
        self.logger = logger
    }
}

/// Persistent string values kept in the registry database, for provider state that must survive a restart.
public protocol KeyValueStore: Sendable {
    func get(_ key: String) async -> String?
    func set(_ key: String, _ value: String) async
}

import Logging
