#if canImport(Glibc)
import Glibc
#endif

/// Who may use the daemon, as configured (`allowed_uids`, `allowed_gids`): numeric ids,
/// names already resolved. nil means the default.
public struct PeerAccess: Sendable, Equatable {
    public var allowedUIDs: [UInt32]?
    public var allowedGIDs: [UInt32]?
    public init(allowedUIDs: [UInt32]? = nil, allowedGIDs: [UInt32]? = nil) {
        self.allowedUIDs = allowedUIDs
        self.allowedGIDs = allowedGIDs
    }
}

/// The resolved rule checked against each connection's peer credentials (SO_PEERCRED):
/// a peer is admitted if its uid is allowed, or its primary or a supplementary group is.
///
/// ```swift
/// let policy = PeerPolicy(PeerAccess(), socketGID: 1001, mode: 0o660, ownUID: geteuid())
/// policy.admits(uid: 1000, gid: 1001, groups: { [] })   // true: the socket's group may write to it
/// ```
public struct PeerPolicy: Sendable, Equatable {
    public var uids: Set<UInt32>
    public var gids: Set<UInt32>

    /// `allowed_uids` default to the daemon's own uid, and the daemon's own uid and root are
    /// always allowed: the daemon's uid owns the database anyway, and root can read it and
    /// the daemon's memory (refusing root would only break `sudo pushline health` and other
    /// administration of a daemon that runs as its own user). `allowed_gids` default to the
    /// socket's group when `mode` lets the group connect (write permission, 0o020), else to none.
    public init(_ access: PeerAccess, socketGID: UInt32, mode: UInt32, ownUID: UInt32) {
        uids = Set(access.allowedUIDs ?? [])
        uids.insert(ownUID)
        uids.insert(0)
        if let g = access.allowedGIDs {
            gids = Set(g)
        } else {
            gids = mode & 0o020 != 0 ? [socketGID] : []
        }
    }

    /// Whether a peer with these credentials may connect. `groups` (its supplementary
    /// groups) is only asked for when the uid and primary gid are not enough.
    public func admits(uid: UInt32, gid: UInt32, groups: () -> [UInt32]) -> Bool {
        if uids.contains(uid) || gids.contains(gid) { return true }
        if gids.isEmpty { return false }
        return groups().contains(where: gids.contains)
    }

    /// A user name or numeric uid to a uid.
    public static func uid(named name: String) -> UInt32? {
        if let n = UInt32(name) { return n }
        guard let pw = getpwnam(name) else { return nil }
        return pw.pointee.pw_uid
    }

    /// A group name or numeric gid to a gid.
    public static func gid(named name: String) -> UInt32? {
        if let n = UInt32(name) { return n }
        guard let gr = getgrnam(name) else { return nil }
        return gr.pointee.gr_gid
    }
}
