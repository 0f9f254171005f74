/// An app's `fcm` block (FCM HTTP v1).
///
/// ```json
/// "fcm": {"service_account_path": "/etc/pushline/firebase.json", "project_id": "my-project"}
/// ```
/// `endpoint` (FCM base URL, default `https://fcm.googleapis.com`), `iid_endpoint` (Instance ID
/// base URL, default `https://iid.googleapis.com`), `ca_file`, `max_connections` and
/// `request_timeout_ms` are optional overrides.
public struct FCMConfig: Sendable, Equatable {
    /// Google's service-account JSON file.
    public var serviceAccountPath: String
    /// Overrides the file's `project_id`.
    public var projectId: String?
    /// Instance ID base URL override (topic subscriptions).
    public var iidEndpoint: String?
    public var connection: ProviderConnectionConfig
    /// The block's key path (`apps.shop.fcm`), for configuration errors found later.
    public var path: String

    public init(reading r: inout ConfigReader) throws(ConfigError) {
        guard let p = try r.file("service_account_path") else {
            throw ConfigError(r.keyPath("service_account_path"), "is required")
        }
        serviceAccountPath = p
        projectId = try r.string("project_id")
        iidEndpoint = try r.url("iid_endpoint")
        connection = try ProviderConnectionConfig(reading: &r)
        path = r.path
    }

    /// A block built in code (tests, embedding).
    public init(
        serviceAccountPath: String, projectId: String? = nil, iidEndpoint: String? = nil,
        connection: ProviderConnectionConfig = ProviderConnectionConfig(), path: String = "fcm"
    ) {
        self.serviceAccountPath = serviceAccountPath
        self.projectId = projectId
        self.iidEndpoint = iidEndpoint
        self.connection = connection
        self.path = path
    }

    /// The FCM base URL in use.
    public var baseURL: String { connection.endpoint ?? "https://fcm.googleapis.com" }
    /// The Instance ID base URL in use.
    public var iidBaseURL: String { iidEndpoint ?? "https://iid.googleapis.com" }
}
