import Logging

/// Builds the built-in sources from a ``DatasetConfig``.
public enum DatasetFactory {
    /// The dataset of a loaded job (its paths are already resolved).
    public static func make(job: JobConfig, logger: Logger? = nil) throws -> any CalibrationDataset {
        try make(config: job.dataset, baseDirectory: job.baseDirectory, logger: logger)
    }

    /// - Parameters:
    ///   - config: the dataset section of a job (paths already resolved by ``JobConfig/load(path:overrides:checkFiles:)``).
    ///   - baseDirectory: folder that relative paths in `config` are resolved against.
    public static func make(config: DatasetConfig, baseDirectory: String, logger: Logger? = nil) throws -> any CalibrationDataset {
        let path = resolvePath(config.path, base: baseDirectory)
        let labels = config.labels.map { resolvePath($0, base: baseDirectory) }
        switch config.kind {
        case .imageFolder, .imageList:
            var paths = config.kind == .imageFolder
                ? try ImageDataset.listFolder(path, extensions: config.extensions, recursive: config.recursive)
                : try ImageDataset.readList(path)
            if paths.isEmpty { throw DataError.emptyDataset(path: path) }
            if let limit = config.limit {
                guard limit <= paths.count else {
                    throw DataError.invalidFormat(path: path, reason: "limit \(limit) exceeds the \(paths.count) images found")
                }
                paths = Array(paths.prefix(limit))
            }
            logger?.info("image dataset", metadata: ["path": "\(path)", "images": "\(paths.count)"])
            return try ImageDataset(paths: paths, preprocessing: config.preprocessing, policy: config.onCorrupt, logger: logger)
        case .npy:
            return try NpyDataset(path: path, preprocessing: config.preprocessing, limit: config.limit,
                                  policy: config.onCorrupt, logger: logger)
        case .idx:
            return try IDXDataset(path: path, labelsPath: labels, preprocessing: config.preprocessing, limit: config.limit,
                                  policy: config.onCorrupt, logger: logger)
        }
    }
}
