import CPushlineShims
import Testing

@testable import PushlineCore

#if canImport(Glibc)
import Glibc
#endif

/// The syscall wrapper, the peer policy and the server's config keys (issue 12).
@Suite struct ServerSupportTests {
    @Test func syscallRetriesEINTRAndReportsWouldBlockAsAValue() throws {
        var calls = 0
        let r = try syscall(blocking: false, where: "fake") { () -> Int32 in
            calls += 1
            if calls < 3 {
                errno = EINTR
                return -1
            }
            return 5
        }
        guard case .processed(5) = r else { Issue.record("expected 5, got \(r)"); return }
        #expect(calls == 3)

        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        #expect(pl_set_nonblocking(fds[0]) == 0)
        var buf = [UInt8](repeating: 0, count: 16)
        let empty = try buf.withUnsafeMutableBytes { p in
            Result { () throws(SyscallError) in try syscall(blocking: true, where: "read") { read(fds[0], p.baseAddress, p.count) } }
        }.get()
        guard case .wouldBlock = empty else { Issue.record("expected wouldBlock, got \(empty)"); return }
    }

    @Test func syscallThrowsOtherErrorsWithTheCallsName() {
        do {
            _ = try syscall(blocking: true, where: "read(bad fd)") { read(-1, nil, 0) }
            Issue.record("read(-1) succeeded")
        } catch {
            #expect(error.errno == EBADF)
            #expect(error.call == "read(bad fd)")
            #expect(error.description.contains("read(bad fd) failed"))
        }
        // Without `blocking`, EAGAIN is an error like any other.
        do {
            _ = try syscall(where: "fake") { () -> Int32 in errno = EAGAIN; return -1 }
            Issue.record("EAGAIN was not thrown")
        } catch {
            #expect(error.errno == EAGAIN)
        }
    }

    @Test func epollConstantsComeFromTheHeader() {
        #expect(EPOLLIN.rawValue == 0x001 && EPOLLOUT.rawValue == 0x004 && EPOLLRDHUP.rawValue == 0x2000)
        #expect(EPOLL_CTL_ADD == 1 && EPOLL_CTL_DEL == 2 && EPOLL_CTL_MOD == 3)
    }

    @Test func peerPolicyDefaults() {
        // 0660: the socket's group may write, so it is admitted by default; the own uid always.
        let p = PeerPolicy(PeerAccess(), socketGID: 50, mode: 0o660, ownUID: 1000)
        #expect(p.uids == [0, 1000] && p.gids == [50])
        #expect(p.admits(uid: 0, gid: 0, groups: { [] }))  // root: administration of a daemon run as its own user
        #expect(p.admits(uid: 1000, gid: 7, groups: { [] }))
        #expect(p.admits(uid: 1001, gid: 50, groups: { [] }))
        #expect(p.admits(uid: 1001, gid: 7, groups: { [3, 50] }))
        #expect(!p.admits(uid: 1001, gid: 7, groups: { [3] }))
        // 0640 / 0600: the group may not write: no group is admitted by default.
        for mode: UInt32 in [0o640, 0o600, 0o606] {
            let q = PeerPolicy(PeerAccess(), socketGID: 50, mode: mode, ownUID: 1000)
            #expect(q.gids.isEmpty)
            #expect(!q.admits(uid: 1001, gid: 50, groups: { [50] }))
        }
        // Explicit lists replace the defaults, except the own uid.
        let e = PeerPolicy(PeerAccess(allowedUIDs: [5], allowedGIDs: []), socketGID: 50, mode: 0o660, ownUID: 1000)
        #expect(e.uids == [0, 5, 1000] && e.gids.isEmpty)
        #expect(!e.admits(uid: 1001, gid: 50, groups: { Issue.record("groups asked for with no allowed gids"); return [] }))
    }

    @Test func accessConfigTakesNamesAndNumbers() throws {
        let c = try PushlineConfig(json: try JSONValue.parse(
            #"{"allowed_uids":["root",33],"allowed_gids":["root",7],"max_connections":10,"max_reply_buffer_bytes":65536}"#))
        #expect(c.access.allowedUIDs == [0, 33])
        #expect(c.access.allowedGIDs == [0, 7])
        #expect(c.serverLimits.maxConnections == 10 && c.serverLimits.maxReplyBufferBytes == 65536)
        let d = PushlineConfig()
        #expect(d.access.allowedUIDs == nil && d.access.allowedGIDs == nil)
        #expect(d.serverLimits.maxConnections == 1024 && d.serverLimits.maxReplyBufferBytes == 1 << 20)
        for (text, path) in [
            (#"{"allowed_uids":["no-such-user-pushline"]}"#, "allowed_uids[0]"),
            (#"{"allowed_gids":[1,true]}"#, "allowed_gids[1]"),
            (#"{"allowed_uids":{}}"#, "allowed_uids"),
        ] {
            let json = try JSONValue.parse(text)
            do throws(ConfigError) {
                _ = try PushlineConfig(json: json)
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.path == path)
            }
        }
    }

    @Test func jobRetentionTakesTheDurationFormsOfEventRetention() throws {
        for (text, seconds) in [("45", Int64(45)), (#""45s""#, 45), (#""30m""#, 1800), (#""12h""#, 43_200), (#""7d""#, 604_800)] {
            let c = try PushlineConfig(json: try JSONValue.parse(#"{"job_retention":"# + text + "}"))
            #expect(c.jobRetention == seconds, "\(text)")
        }
        #expect(PushlineConfig().jobRetention == 7 * 86_400)
        for text in [#""7x""#, "0", #""abc""#, "true", #""367d""#] {
            let json = try JSONValue.parse(#"{"job_retention":"# + text + "}")
            do throws(ConfigError) {
                _ = try PushlineConfig(json: json)
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.path == "job_retention")
            }
        }
    }
}
