import Testing

@testable import PushlineCore

/// Small registry reads on the caller's thread (`SQLiteDirectReads`, issue 11): they are served
/// there, see every write the database thread committed before them, and hand anything they
/// cannot serve back to the database thread.
@Suite struct DirectReadsTests {
    @Test func tokenAndIdReadsAreServedOnTheCallersThreadAndSeeCommittedWrites() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let reg = try SQLiteRegistry(path: dir.db)
        defer { reg.close() }
        let direct = try #require(reg.direct)

        // Not registered yet: nil, read here.
        #expect(try await reg.resolveTokens(app: "default", platform: .apns, [apnsToken(1)]) == [nil])
        #expect(direct.served.load(ordering: .relaxed) == 1)

        let out = try await reg.register([try DeviceInput(platform: .apns, registrationId: apnsToken(1))], updateOnDuplicate: false)
        let id = try #require(out.first?.device.id)
        // The register's commit is visible to the next read, by token (in any case: normalised as
        // register does) and by id.
        let found = try await reg.resolveTokens(app: "default", platform: .apns, [apnsToken(1).lowercased(), apnsToken(2)])
        #expect(found.count == 2 && found[0]?.id == id && found[0]?.active == true && found[1] == nil)
        var f = DeviceFilter()
        f.ids = [id, id + 1000]
        #expect(try await reg.devices(f).map(\.id) == [id])
        #expect(direct.served.load(ordering: .relaxed) == 3)

        // A deactivation by the database thread, then an unregister: each seen at once.
        #expect(await reg.deactivate([Deactivation(id: id, reason: "Unregistered", at: 5)]) == [id])
        #expect(try await reg.resolveTokens(app: "default", platform: .apns, [apnsToken(1)]).first??.active == false)
        _ = try await reg.unregister([.id(id)])
        #expect(try await reg.resolveTokens(app: "default", platform: .apns, [apnsToken(1)]) == [nil])
        #expect(try await reg.devices(f).isEmpty)
        #expect(direct.served.load(ordering: .relaxed) == 6)
        #expect(direct.fellBack.load(ordering: .relaxed) == 0)

        // A large read goes through the database thread.
        let many = (0..<(SQLiteDirectReads.maxKeys + 1)).map { apnsToken(100 + $0) }
        #expect(try await reg.resolveTokens(app: "default", platform: .apns, many).count == many.count)
        #expect(direct.served.load(ordering: .relaxed) == 6)
    }

    @Test func closedRegistryRefusesReadsAsBefore() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let reg = try SQLiteRegistry(path: dir.db)
        _ = try await reg.resolveTokens(app: "default", platform: .apns, [apnsToken(1)])
        reg.close()
        await #expect(throws: CommandError.self) { try await reg.resolveTokens(app: "default", platform: .apns, [apnsToken(1)]) }
        #expect(reg.direct?.served.load(ordering: .relaxed) == 1)
    }

    @Test func aConnectionThatCannotReadFallsBackToTheDatabaseThread() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let reg = try SQLiteRegistry(path: dir.db)
        defer { reg.close() }
        _ = try await reg.register([try DeviceInput(platform: .apns, registrationId: apnsToken(7))], updateOnDuplicate: false)
        // Readers pointed at a file without the registry's tables fail their query: the read is
        // answered by the database thread, and that thread's reader is not used again.
        let wrong = try #require(SQLiteDirectReads(path: dir.path + "/other.db"))
        #expect(wrong.read { s in try s.resolveTokens(app: "default", platform: .apns, [apnsToken(7)]) } == nil)
        #expect(wrong.read { s in try s.resolveTokens(app: "default", platform: .apns, [apnsToken(7)]) } == nil)
        #expect(wrong.fellBack.load(ordering: .relaxed) == 2 && wrong.served.load(ordering: .relaxed) == 0)
        wrong.close()
        // In-memory databases are never read from another connection.
        #expect(SQLiteDirectReads(path: ":memory:") == nil)
        #expect(try await reg.resolveTokens(app: "default", platform: .apns, [apnsToken(7)]).first??.registrationId == apnsToken(7).lowercased())
    }
}
