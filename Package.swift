// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Pushline",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "pushline", targets: ["pushline"]),
        .library(name: "PushlineCore", targets: ["PushlineCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // One system-library target per C library from Debian.
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        // Typed wrappers for what Swift cannot import (variadics, macros, glibc GNU extensions).
        .target(name: "CPushlineShims", dependencies: ["CCurl", "COpenSSL", "CSQLite", "CPostgres"]),
        .target(
            name: "PushlineCore",
            dependencies: [
                "CCurl", "COpenSSL", "CSQLite", "CPostgres", "CPushlineShims",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "pushline",
            dependencies: [
                "PushlineCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Throughput bench of the HTTP/2 transport (bench/transport_bench.sh); not shipped.
        .executableTarget(
            name: "pushline-transport-bench",
            dependencies: ["PushlineCore"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "PushlineCoreTests",
            dependencies: ["PushlineCore"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
