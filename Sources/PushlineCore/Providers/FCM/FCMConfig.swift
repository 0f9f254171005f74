/// An app's `fcm` block (FCM HTTP v1).
public struct FCMConfig: Sendable, Equatable {
    /// Google's service-account JSON file.
    public var serviceAccountPath: String
    /// Overrides the file's `project_id`.
    public var projectId: String?
    /// Instance ID base URL override (topic subscriptions).
    public var iidEndpoint: String?
    public var connection: ProviderConnectionConfig

    public init(reading r: inout ConfigReader) throws(ConfigError) {
        guard let p = try r.file("service_account_path") else {
            throw ConfigError(r.keyPath("service_account_path"), "is required")
        }
        serviceAccountPath = p
        projectId = try r.string("project_id")
        iidEndpoint = try r.url("iid_endpoint")
        connection = try ProviderConnectionConfig(reading: &r)
    }
}
