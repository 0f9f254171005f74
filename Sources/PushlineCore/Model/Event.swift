/// An entry of the durable, ordered `events` feed (issue 13; protocol.md, "events").
///
/// Events are written by the storage backend inside the transaction that makes them true
/// (a device's deactivation, a job's end), so the feed never shows what did not happen and
/// never misses what did. Readers page through it by `seq`, which only grows.
public struct PushEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// A job finished: `job` (its id) and its counts.
        case jobDone = "job_done"
        /// A device was marked inactive: `device` (registry id), `app`, `platform`,
        /// `registration_id`, `reason`.
        case deviceDeactivated = "device_deactivated"
        /// A job was canceled: `job` and its counts.
        case jobCanceled = "job_canceled"
    }

    public var kind: Kind
    /// When it happened, Unix milliseconds.
    public var at: Int64
    /// The kind's own fields (see `Kind`), written to the feed as they are.
    public var fields: JSONObject

    public init(_ kind: Kind, at: Int64, _ fields: JSONObject) {
        self.kind = kind
        self.at = at
        self.fields = fields
    }
}
