/// The parts of a Google service-account JSON file that FCM HTTP v1 needs.
///
/// Google's file looks like:
/// ```json
/// {"type": "service_account", "project_id": "my-project", "private_key_id": "ab12...",
///  "private_key": "-----BEGIN PRIVATE KEY-----\n...", "client_email": "x@my-project.iam.gserviceaccount.com",
///  "token_uri": "https://oauth2.googleapis.com/token"}
/// ```
/// The private key is kept as PEM bytes and parsed when an assertion is signed (once an hour),
/// so no OpenSSL handle has to be shared between tasks.
struct FCMServiceAccount: Sendable {
    var clientEmail: String
    var privateKeyPEM: [UInt8]
    var privateKeyId: String?
    var tokenURI: String
    var projectId: String?

    /// Reads and checks the file; every error names the config key and the missing or bad member.
    init(path: String, configKey: String) throws(ConfigError) {
        guard let bytes = readFile(path) else { throw ConfigError(configKey, "cannot read file '\(path)'") }
        try self.init(json: bytes, configKey: configKey, fileName: path)
    }

    init(json bytes: [UInt8], configKey: String, fileName: String = "service account") throws(ConfigError) {
        let v: JSONValue
        do { v = try JSONValue.parse(bytes) } catch {
            throw ConfigError(configKey, "'\(fileName)' is not valid JSON: \(error)")
        }
        guard let o = v.objectValue else { throw ConfigError(configKey, "'\(fileName)' is not a JSON object") }
        func member(_ k: String) throws(ConfigError) -> String {
            guard let s = o[k]?.stringValue, !s.isEmpty else {
                throw ConfigError(configKey, "'\(fileName)' has no '\(k)' (expected a Google service-account JSON file)")
            }
            return s
        }
        if let t = o["type"]?.stringValue, t != "service_account" {
            throw ConfigError(configKey, "'\(fileName)' has type '\(t)', expected 'service_account'")
        }
        clientEmail = try member("client_email")
        privateKeyPEM = Array(try member("private_key").utf8)
        tokenURI = try member("token_uri")
        guard tokenURI.hasPrefix("https://") || tokenURI.hasPrefix("http://") else {
            throw ConfigError(configKey, "'\(fileName)': 'token_uri' is not an http(s) URL")
        }
        privateKeyId = o["private_key_id"]?.stringValue
        projectId = o["project_id"]?.stringValue
    }
}
