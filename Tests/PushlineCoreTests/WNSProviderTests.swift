import Foundation
import Testing
@testable import PushlineCore

@Suite struct WNSMessageTests {
    func msg(_ o: JSONObject) throws(CommandError) -> WNSProvider.WNSMessage { try WNSProvider.buildMessage(try WW.notification(o)) }
    func header(_ m: WNSProvider.WNSMessage, _ name: String) -> String? {
        m.headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    @Test func plainMessageBecomesAnEscapedToast() throws {
        let m = try msg(["message": "Tom & \"Jerry\" <3 'x'", "title": "A<b>"])
        #expect(m.type == "wns/toast")
        #expect(m.contentType == "text/xml")
        #expect(
            String(decoding: m.body, as: UTF8.self)
                == "<toast><visual><binding template=\"ToastGeneric\"><text>A&lt;b&gt;</text>"
                + "<text>Tom &amp; &quot;Jerry&quot; &lt;3 &apos;x&apos;</text></binding></visual></toast>")
        #expect(header(m, "X-WNS-RequestForStatus") == "true")
    }

    @Test func toastCarriesExtraAsLaunchArguments() throws {
        let m = try msg(["message": "hi", "extra": ["id": 5]])
        #expect(String(decoding: m.body, as: UTF8.self).hasPrefix("<toast launch=\"{&quot;id&quot;:5}\">"))
    }

    @Test func controlCharactersAreDropped() throws {
        #expect(WebWNS.xmlEscape("a\u{01}b\tc") == "ab\tc")
    }

    @Test func typesAndPayloads() throws {
        let badge = try msg(["wns_type": "badge", "badge": 7])
        #expect(badge.type == "wns/badge")
        #expect(String(decoding: badge.body, as: UTF8.self) == "<badge value=\"7\"/>")
        let tile = try msg(["wns_type": "tile", "message": "m"])
        #expect(WNSProvider.xmlRoot(String(decoding: tile.body, as: UTF8.self)) == "tile")
        let raw = try msg(["wns_type": "raw", "wns_payload": "bytes!"])
        #expect(raw.type == "wns/raw")
        #expect(raw.contentType == "application/octet-stream")
        #expect(raw.body == Array("bytes!".utf8))
        let rawJSON = try msg(["wns_type": "raw", "message": "m", "extra": ["k": 1]])
        #expect(try JSONValue.parse(rawJSON.body) == ["message": "m", "k": 1])
        let xml = #"<?xml version="1.0"?><toast><visual><binding template="ToastGeneric"><text>x</text></binding></visual></toast>"#
        #expect(try msg(["wns_payload": .string(xml)]).body == Array(xml.utf8))
    }

    @Test func mistakesAreInvalidArguments() throws {
        for o: JSONObject in [
            ["wns_type": "push", "message": "m"], ["wns_type": "badge"], ["wns_payload": "<tile></tile>"],
            ["wns_payload": "not xml"], [:], ["message": "m", "wns": ["bogus": 1]], ["message": "m", "wns": ["tag": "a\nb"]],
        ] {
            do throws(CommandError) {
                _ = try msg(o)
                Issue.record("expected an error for \(o)")
            } catch {
                #expect(error.code == .invalidArgument)
            }
        }
        do throws(CommandError) {
            _ = try msg(["wns_type": "raw", "wns_payload": .string(String(repeating: "x", count: 5001))])
            Issue.record("expected payload_too_large")
        } catch {
            #expect(error.code == .payloadTooLarge)
            #expect(error.details["limit"] == .int(5000))
        }
    }

    @Test func headersFromWnsBlockAndCommonFields() throws {
        let m = try msg([
            "message": "m", "time_to_live": 60, "collapse_id": "c1", "priority": "high",
            "wns": ["group": "g", "X-WNS-SuppressPopup": "true", "cache_policy": "cache"],
        ])
        #expect(header(m, "X-WNS-TTL") == "60")
        #expect(header(m, "X-WNS-Tag") == "c1")
        #expect(header(m, "X-WNS-Group") == "g")
        #expect(header(m, "X-WNS-SuppressPopup") == "true")
        #expect(header(m, "X-WNS-Cache-Policy") == "cache")
        #expect(header(m, "X-WNS-PRIORITY") == "1")
        let n = try msg(["message": "m", "time_to_live": 60, "wns": ["ttl": 5, "tag": "t"]])
        #expect(n.headers.filter { $0.0.lowercased() == "x-wns-ttl" }.map(\.1) == ["5"])
        #expect(header(n, "X-WNS-Tag") == "t")
    }

    @Test func formEncoding() {
        #expect(WebWNS.formEncode("ms-app://s-1 2+3") == "ms-app%3A%2F%2Fs-1+2%2B3")
    }

    @Test func channelURIs() throws {
        let p = try WNSProvider(
            app: "t", config: WNSConfig(clientId: "id", clientSecret: "s"), context: WW.context())
        #expect(p.channelURL("https://db5.notify.windows.com/?token=AwYAAAB") == "https://db5.notify.windows.com/?token=AwYAAAB")
        #expect(p.channelURL("http://db5.notify.windows.com/?token=x") == nil)
        #expect(p.channelURL("not a url") == nil)
        let q = try WNSProvider(
            app: "t",
            config: WNSConfig(clientId: "id", clientSecret: "s", connection: ProviderConnectionConfig(endpoint: "https://127.0.0.1:8443")),
            context: WW.context())
        #expect(q.channelURL("https://db5.notify.windows.com/w/?token=x") == "https://127.0.0.1:8443/w/?token=x")
    }

    @Test func invalidChannelsFailBeforeAnyToken() async throws {
        let p = try WNSProvider(app: "t", config: WNSConfig(clientId: "id", clientSecret: "s"), context: WW.context())
        let r = await p.send(
            try WW.notification(["message": "m"]),
            to: [Device(id: 2, platform: .wns, app: "t", registrationId: "ftp://x"), Device(id: 3, platform: .wns, app: "t", registrationId: "x")])
        #expect(r.map(\.status) == [.failed, .failed])
        #expect(r.map(\.reason) == ["invalid_channel_uri", "invalid_channel_uri"])
        #expect(await p.tokens.fetches == 0)
    }
}
