// Shared by every libFuzzer target (compiled into each; see Tests/fuzz/build.sh).
@testable import PushlineCore

/// Stops the run with a message libFuzzer reports as a crash (and saves the input).
func fuzzFail(_ message: String) -> Never {
    fatalError("fuzz invariant: \(message)")
}

/// The input as a JSON object, or nil (most random inputs are not one).
func fuzzObject(_ bytes: UnsafeBufferPointer<UInt8>) -> JSONObject? {
    guard let v = try? JSONValue.parse(bytes) else { return nil }
    return v.objectValue
}

/// An HTTP header name or value Pushline hands to libcurl must not be able to start a new
/// header or truncate this one: no CR, LF or NUL (RFC 9113 section 8.2.1).
func checkHeaders(_ headers: [(String, String)], _ what: String, lowercase: Bool = true) {
    for (name, value) in headers {
        guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }) else {
            fuzzFail("\(what): header name \(Array(name.utf8)) is not a token")
        }
        guard !lowercase || name == name.lowercased() else { fuzzFail("\(what): header name '\(name)' is not lowercase") }
        guard !value.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }) else {
            fuzzFail("\(what): header \(name) value contains CR, LF or NUL: \(Array(value.utf8))")
        }
    }
}

/// A body that claims to be JSON must parse.
func checkJSON(_ body: [UInt8], _ what: String) -> JSONValue {
    do {
        return try JSONValue.parse(body)
    } catch {
        fuzzFail("\(what): body is not JSON (\(error)): \(String(decoding: body, as: UTF8.self))")
    }
}

/// A `CommandError` must name what is wrong: a code and a non-empty message; `invalid_argument` names its field
/// (which may be "": a request can have an empty key, `{"cmd":"topic","":1}`, and that is the key to name).
func checkError(_ e: CommandError, _ what: String) {
    guard !e.message.isEmpty else { fuzzFail("\(what): empty error message for \(e.code)") }
    if e.code == .invalidArgument, e.details["field"]?.stringValue == nil {
        fuzzFail("\(what): invalid_argument without a field: \(e.message)")
    }
    _ = checkJSON(e.json.serialized(), "\(what) error")
}

/// A fixed time so that runs are reproducible.
let fuzzNow: Int64 = 1_790_000_000
