import Testing

@testable import PushlineCore

/// The `fcm` config block and the service-account file.
@Suite struct FCMConfigTests {
    let goodAccount: JSONObject = [
        "type": "service_account", "project_id": "p1", "private_key_id": "k1",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMII...\n-----END PRIVATE KEY-----\n",
        "client_email": "sa@p1.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token",
    ]

    func parse(_ o: JSONObject) throws(ConfigError) -> FCMServiceAccount {
        try FCMServiceAccount(json: JSONValue.object(o).serialized(), configKey: "apps.a.fcm.service_account_path")
    }

    @Test func readsServiceAccount() throws {
        let sa = try parse(goodAccount)
        #expect(sa.clientEmail == "sa@p1.iam.gserviceaccount.com")
        #expect(sa.projectId == "p1")
        #expect(sa.privateKeyId == "k1")
        #expect(sa.tokenURI == "https://oauth2.googleapis.com/token")
    }

    @Test func missingMembersNameTheKey() {
        for k in ["client_email", "private_key", "token_uri"] {
            var o = goodAccount
            o[k] = nil
            do {
                _ = try parse(o)
                Issue.record("expected a ConfigError for missing \(k)")
            } catch {
                #expect(error.path == "apps.a.fcm.service_account_path")
                #expect(error.message.contains("'\(k)'"))
            }
        }
        var wrongType = goodAccount
        wrongType["type"] = "authorized_user"
        #expect(throws: ConfigError.self) { try parse(wrongType) }
        #expect(throws: ConfigError.self) {
            try FCMServiceAccount(json: Array("not json".utf8), configKey: "k")
        }
    }

    @Test func configBlock() throws {
        var r = try ConfigReader(
            ["service_account_path": "/dev/null", "project_id": "p2", "endpoint": "https://127.0.0.1:9/",
             "iid_endpoint": "https://127.0.0.1:8"],
            path: "apps.a.fcm")
        let c = try FCMConfig(reading: &r)
        try r.finish()
        #expect(c.projectId == "p2")
        #expect(c.baseURL == "https://127.0.0.1:9")
        #expect(c.iidBaseURL == "https://127.0.0.1:8")
        #expect(c.path == "apps.a.fcm")
        let d = FCMConfig(serviceAccountPath: "/x")
        #expect(d.baseURL == "https://fcm.googleapis.com")
        #expect(d.iidBaseURL == "https://iid.googleapis.com")
    }
}
