// swift-tools-version: 6.0
// shardcal — distributed INT8 post-training calibration.
// Data flows one way: Data -> Engine -> Calibration (histograms) -> Transport -> Cluster -> outputs.
import PackageDescription

let package = Package(
    name: "shardcal",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "shardcal", targets: ["shardcal"]),
        .library(name: "Calibration", targets: ["Calibration"]),
        .library(name: "CalibrationIO", targets: ["CalibrationIO"]),
        .library(name: "Engine", targets: ["Engine"]),
        .library(name: "Data", targets: ["Data"]),
        .library(name: "Transport", targets: ["Transport"]),
        .library(name: "Cluster", targets: ["Cluster"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.28.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.0.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // Thin system-library targets for the C libraries (Debian -dev packages).
        .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ"),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        .systemLibrary(name: "CImageCodecs", path: "Sources/CImageCodecs"),

        // AVX-512/AVX2 convolution kernels (depthwise, pointwise) the Swift compiler cannot generate.
        .target(name: "CConvKernels", path: "Sources/CConvKernels"),
        // The two hot loops of histogram accumulation (Swift does not vectorise them; see bench-core).
        .target(name: "CHistogramKernel", path: "Sources/CHistogramKernel"),
        // Pure-Swift math core: mergeable histograms, threshold search, cache/table/state formats.
        .target(
            name: "Calibration",
            dependencies: ["CHistogramKernel", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        // File I/O for the core's formats: atomic writes (temp, fsync, rename), state/cache/table files.
        .target(name: "CalibrationIO", dependencies: ["Calibration"]),
        // FP32 ONNX inference with activation taps.
        .target(
            name: "Engine",
            dependencies: [
                "COpenBLAS", "CConvKernels",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["onnx.proto"]
        ),
        // Datasets, decoding, preprocessing, shard plan, job config.
        .target(
            name: "Data",
            dependencies: [
                "CImageCodecs", "Calibration",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // ZeroMQ wrapper and the wire codec.
        .target(
            name: "Transport",
            dependencies: ["CZeroMQ", "Calibration", .product(name: "Logging", package: "swift-log")]
        ),
        // Coordinator and worker.
        .target(
            name: "Cluster",
            dependencies: [
                "Transport", "Calibration", "CalibrationIO", "Engine", "Data",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The executable: argument parsing and wiring only.
        .executableTarget(
            name: "shardcal",
            dependencies: [
                "Calibration", "CalibrationIO", "Engine", "Data", "Transport", "Cluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        .testTarget(name: "CalibrationTests", dependencies: ["Calibration", "CalibrationIO", "CHistogramKernel"], resources: [.copy("Fixtures")]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "CConvKernels"]),
        .testTarget(name: "DataTests", dependencies: ["Data"], exclude: ["Fixtures"]),
        .testTarget(name: "TransportTests", dependencies: ["Transport", "CZeroMQ"]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster"]),
        .testTarget(name: "CLITests", dependencies: ["Calibration", "CalibrationIO", "shardcal"], resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v6]
)
