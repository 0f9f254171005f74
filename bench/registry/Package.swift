// swift-tools-version:6.0
// Registry throughput benchmark (not part of the product): `swift run -c release` here.
import PackageDescription

let package = Package(
    name: "RegistryBench",
    dependencies: [.package(name: "Pushline", path: "../..")],
    targets: [
        .executableTarget(
            name: "RegistryBench",
            dependencies: [.product(name: "PushlineCore", package: "Pushline")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        )
    ]
)
