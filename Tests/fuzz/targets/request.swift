// libFuzzer target: request parsing. A request line goes through what the daemon does
// before it touches the registry or a provider: the JSON parser, `Arguments`, and each
// command's argument parsing in Dispatch (targets, notifications, device inputs and keys,
// topic names and conditions, filters, timestamps). Bad input must throw a `CommandError`
// naming the field, never crash, and an error must not quote a device token.
import Glibc
import Logging
@testable import PushlineCore

nonisolated(unsafe) var fuzzTempDir = ""

/// A dispatcher over an empty registry in a temporary directory: only its parsing methods are called.
let dispatcher: Dispatcher = {
    var template = Array("/tmp/pushline-fuzz-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else { fatalError("mkdtemp failed") }
    let dir = String(cString: p)
    fuzzTempDir = dir
    atexit { system("rm -rf '\(fuzzTempDir)'") }
    do {
        let registry = try SQLiteRegistry(path: dir + "/fuzz.db")
        return Dispatcher(config: PushlineConfig(), registry: registry, providers: ProviderSet(), logger: Logger(label: "fuzz"))
    } catch {
        fatalError("cannot open the fuzz registry: \(error)")
    }
}()

/// The registration ids a request carries (at least 16 bytes: shorter strings occur in messages by chance).
func tokens(in o: JSONObject) -> [String] {
    var out: [String] = []
    func add(_ v: JSONValue?) {
        switch v {
        case .string(let s)? where s.utf8.count >= 16: out.append(s)
        case .array(let a)?: for x in a { add(x) }
        default: break
        }
    }
    add(o["registration_id"])
    add(o["registration_ids"])
    if case .array(let devices)? = o["devices"] {
        for d in devices { if let d = d.objectValue { add(d["registration_id"]) } }
    }
    if case .array(let messages)? = o["messages"] {
        for m in messages { if let m = m.objectValue { add(m["registration_ids"]) } }
    }
    return out
}

/// Every key of every object in the request.
func allKeys(_ o: JSONObject) -> [String] {
    var out: [String] = []
    func walk(_ v: JSONValue) {
        switch v {
        case .object(let o):
            for (k, x) in o.pairs {
                out.append(k)
                walk(x)
            }
        case .array(let a): for x in a { walk(x) }
        default: break
        }
    }
    walk(.object(o))
    return out
}

/// The parsing half of each command (Dispatcher.handle and its methods, up to the registry call).
func parse(_ request: JSONObject) throws(CommandError) {
    guard let cmdValue = request["cmd"] else { throw .invalid("cmd", "is required") }
    guard let cmd = cmdValue.stringValue else { throw .invalid("cmd", "expected a string, got \(cmdValue.typeName)") }
    var a = Arguments(request)
    let d = dispatcher
    switch cmd {
    case "register":
        if a.has("devices") {
            guard let list = try a.list("devices") else { throw .invalid("devices", "is required") }
            try a.finish()
            for (i, v) in list.enumerated() {
                guard let o = v.objectValue else { throw .invalid("devices[\(i)]", "expected a device object, got \(v.typeName)") }
                do throws(CommandError) { _ = try DeviceInput(parsing: o) } catch { throw error.prefixed("devices[\(i)]") }
            }
        } else {
            var fields = a.object
            fields["cmd"] = nil
            _ = try DeviceInput(parsing: fields)
        }
    case "unregister":
        _ = try d.deviceKeys(&a, single: "device")
        try a.finish()
    case "devices":
        _ = try a.app()
        _ = try a.platform("platform")
        _ = try a.user("user")
        _ = try a.bool("active")
        _ = try a.string("registration_id")
        _ = try a.idList("ids")
        _ = try a.int("after", range: 0...Int64.max)
        _ = try a.int("limit", range: 1...1000)
        try a.finish()
    case "prune":
        if let v = a.value("inactive_before"), parseTimestamp(v) == nil {
            throw .invalid("inactive_before", "expected Unix seconds or an ISO 8601 date")
        }
        try a.finish()
    case "send", "bulk":
        if cmd == "bulk", a.has("messages") {
            guard let list = try a.list("messages", max: 10_000) else { throw .invalid("messages", "is required") }
            try a.finish()
            for (i, m) in list.enumerated() {
                guard let o = m.objectValue else { throw .invalid("messages[\(i)]", "expected an object, got \(m.typeName)") }
                var ma = Arguments(o, prefix: "messages[\(i)]")
                _ = try d.parseJob(&ma)
            }
        } else {
            _ = try d.parseJob(&a)
        }
    case "topic":
        _ = try a.app()
        if let t = try a.string("topic") { _ = try TopicName(parsing: t, field: "topic") }
        if let c = try a.string("condition"), !c.isEmpty, c.utf8.count <= 1000 { _ = try FCMTopicName.checkCondition(c) }
        var fields = JSONObject()
        for k in a.unread {
            guard PushNotification.allKeys.contains(k), k != "topic" else { throw .invalid(k, "unknown argument '\(k)'") }
            if let v = a.value(k) { fields[k] = v }
        }
        _ = try PushNotification(parsing: fields)
    case "subscribe", "unsubscribe", "topics", "subscribers":
        if let raw = try a.string("topic") { _ = try TopicName(parsing: raw, field: "topic") }
        _ = try Target.parse(&a)
        try a.finish()
    default:
        try a.finish()
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let request = fuzzObject(UnsafeBufferPointer(start: data, count: size)) else { return 0 }
    do throws(CommandError) {
        try parse(request)
    } catch {
        checkError(error, "request")
        let text = error.message + error.json.jsonString
        // Keys are echoed on purpose ("unknown argument 'k'"): a token that is part of a key is the client's key.
        let keys = allKeys(request)
        for t in tokens(in: request) where text.contains(t) && !keys.contains(where: { $0.contains(t) }) {
            fuzzFail("the error quotes a whole registration id: \(error.json.jsonString)")
        }
    }
    return 0
}
