// Test support for the WebPush and WNS tests: a provider context, temp files, and the
// loopback fakes (Tests/fakes/fake_webpush.py, fake_wns.py) started as real processes.
import Foundation
import Logging
import Testing
@testable import PushlineCore

actor MemoryStore: KeyValueStore {
    var values: [String: String] = [:]
    func get(_ key: String) async -> String? { values[key] }
    func set(_ key: String, _ value: String) async { values[key] = value }
    func compareAndSet(_ key: String, expected: String?, new: String) async -> KVSwap {
        guard values[key] == expected else { return .conflict(current: values[key]) }
        values[key] = new
        return .swapped
    }
}

enum WW {
    static func context(_ transport: HTTPTransport = HTTPTransport()) -> ProviderContext {
        ProviderContext(transport: transport, store: MemoryStore(), logger: Logger(label: "test.webwns"))
    }

    static func tempDir() -> String {
        let p = NSTemporaryDirectory() + "pushline-ww-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }

    /// A VAPID key file in a new temp dir; returns (path, applicationServerKey).
    static func vapidKey() throws -> (String, String) {
        let r = try VAPIDTool.generate(outDir: tempDir())
        return (r.privateKeyPath, r.applicationServerKey)
    }

    static func webpushConfig(_ json: JSONValue) throws -> WebPushConfig {
        var r = try ConfigReader(json, path: "apps.t.webpush")
        let c = try WebPushConfig(reading: &r)
        try r.finish()
        return c
    }

    static func wnsConfig(_ json: JSONValue) throws -> WNSConfig {
        var r = try ConfigReader(json, path: "apps.t.wns")
        let c = try WNSConfig(reading: &r)
        try r.finish()
        return c
    }

    static func notification(_ o: JSONObject) throws(CommandError) -> PushlineCore.PushNotification {
        try PushlineCore.PushNotification(parsing: o)
    }

    static var repoRoot: String {
        // .../Tests/PushlineCoreTests/WebPushSupportTests.swift -> repo root
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }
}

/// A fake push server process: `READY <port> <ca_file> <control_port>`.
final class FakeServer: @unchecked Sendable {
    let process: Process
    let port: Int
    let caFile: String
    let controlPort: Int
    var origin: String { "https://127.0.0.1:\(port)" }

    init(script: String, args: [String] = []) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", WW.repoRoot + "/Tests/fakes/" + script] + args
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        process = p
        var line = Data()
        let h = out.fileHandleForReading
        while !line.contains(0x0A) {
            let chunk = h.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let parts = String(decoding: line, as: UTF8.self).split(separator: "\n")[0].split(separator: " ")
        guard parts.count == 4, parts[0] == "READY", let pt = Int(parts[1]), let cp = Int(parts[3]) else {
            p.terminate()
            throw FakeError(message: "fake \(script) did not start: \(String(decoding: line, as: UTF8.self))")
        }
        port = pt
        caFile = String(parts[2])
        controlPort = cp
    }

    deinit {
        process.terminate()
        process.waitUntilExit()
    }

    struct FakeError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// One control call (HTTP/1.1 JSON on loopback), via a plain blocking socket.
    func control(_ method: String, _ path: String, _ body: JSONValue? = nil) throws -> JSONValue {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FakeError(message: "socket failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(controlPort).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw FakeError(message: "connect to control port failed") }
        let b = body?.serialized() ?? []
        var req = Array("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \(b.count)\r\nConnection: close\r\n\r\n".utf8)
        req += b
        _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var resp: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            resp += buf[0..<n]
        }
        guard let sep = String(decoding: resp, as: UTF8.self).range(of: "\r\n\r\n") else {
            throw FakeError(message: "bad control response")
        }
        let text = String(decoding: resp, as: UTF8.self)
        return try JSONValue.parse(String(text[sep.upperBound...]))
    }
}
