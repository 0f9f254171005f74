// libFuzzer target: the JSON parser (Sources/PushlineCore/Support/JSON.swift).
// Any input: parse must return or throw, never crash. Whatever parses must serialize to
// JSON that parses again to the same serialization, and the segmented serializer must
// produce the same bytes as the flat one.
@testable import PushlineCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let value: JSONValue
    do {
        value = try JSONValue.parse(bytes)
    } catch {
        guard error.offset >= 0, error.offset <= size else { fuzzFail("error offset \(error.offset) outside 0...\(size)") }
        return 0
    }
    let once = value.serialized()
    let again: JSONValue
    do {
        again = try JSONValue.parse(once)
    } catch {
        fuzzFail("serialized value does not parse (\(error)): \(String(decoding: once, as: UTF8.self))")
    }
    let twice = again.serialized()
    guard once == twice else {
        fuzzFail("serialization is not stable: \(String(decoding: once, as: UTF8.self)) vs \(String(decoding: twice, as: UTF8.self))")
    }
    guard value.serializedSegments(rawThreshold: 1).flatMap({ $0 }) == once else { fuzzFail("segments differ from serialized()") }
    // Lookups the dispatcher does on every request.
    if case .object(let o) = value {
        for k in o.keys { guard o[k] != nil else { fuzzFail("key '\(k)' listed but not found") } }
        _ = value["cmd"]?.stringValue
        _ = value["id"]?.intValue
    }
    return 0
}
