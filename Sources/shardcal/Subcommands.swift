import ArgumentParser

extension Shardcal {
    /// Every subcommand, in the order `--help` lists them.
    static let allSubcommands: [any ParsableCommand.Type] = [
        RunCommand.self,
        CoordinatorCommand.self,
        WorkerCommand.self,
        StatusCommand.self,
        SubscribeCommand.self,
        MergeCommand.self,
        SearchCommand.self,
        InspectCommand.self,
        InferCommand.self,
        BenchCoreCommand.self,
        BenchEngineCommand.self,
        BenchDataCommand.self,
        BenchCoordinatorCommand.self,
    ]
}
