using BenchmarkDotNet.Running;

// dotnet run -c Release --project tests/HandoffDapr.Benchmarks -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(HandoffDapr.Benchmarks.CoreBenchmarks).Assembly).Run(args);
