/// Signs the OAuth2 JWT assertion of a service account (RS256).
///
/// PROVISIONAL: the shared crypto (`RSAPrivateKey`, `JWT.rs256`) is not merged yet; until it is,
/// the key is only checked to be PEM and signing fails with a clear message.
enum FCMAssertion {
    /// Checks that `pem` holds a usable RSA private key (at startup, so a bad file is a config error).
    static func checkKey(_ pem: [UInt8]) -> String? {
        let s = String(decoding: pem, as: UTF8.self)
        return s.contains("PRIVATE KEY-----") ? nil : "'private_key' is not a PEM private key"
    }

    /// The signed compact JWT, or why it could not be signed.
    static func sign(header: JSONObject, claims: JSONObject, pem: [UInt8]) -> Result<String, FCMAuthError> {
        .failure(FCMAuthError("RS256 signing is not available in this build", retryable: false))
    }
}
