using Xunit.Abstractions;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Seeded randomized test of two embedded processes on ONE SQLite file (<see cref="RandomizedEmbeddedHarness.TwoProcesses"/>),
/// beside the single-process <see cref="ModelBasedEmbeddedTests"/>: the same mix on either process, "duels" on one run
/// from both, and stops while a launch round is held at the provider. It found that a request reaching a stopping host
/// late ran on disposed services (a 500); the request drain now waits for such requests or refuses them.
/// Seeds: TWO_PROC_SEED_FROM / TWO_PROC_SEED_COUNT (default 1..12, about 30 s in all).
/// </summary>
public sealed class TwoProcessRandomizedTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Seeds() => RandomizedEmbeddedHarness.Seeds("TWO_PROC_SEED_FROM", "TWO_PROC_SEED_COUNT");

    [Theory]
    [MemberData(nameof(Seeds))]
    public Task Two_processes_on_one_file_keep_the_invariants(int seed) => RandomizedEmbeddedHarness.CheckAsync(seed, RandomizedEmbeddedHarness.TwoProcesses, output);
}
