using System.Text.Json;
using BenchmarkDotNet.Attributes;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Prompts;
using HandoffDapr.Core.Repositories;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Embedded;

namespace HandoffDapr.Benchmarks;

[MemoryDiagnoser]
public class CoreBenchmarks
{
    private static readonly RunSnapshot Snapshot = new(
        123,
        1,
        2,
        new RunGroup(456, "Database connection timeout in checkout", "SHOP-1A2"),
        new RunMetadata("open_pr", 456),
        new RunArtifacts(
            new RootCauseArtifact("Pool exhausted under load", ["Requests time out", "Pool is exhausted", "Connections leak"], ["Send 100 concurrent checkouts"], "acme/shop"),
            new SolutionArtifact("Bound the pool and add a TTL", [new SolutionStep("Add TTL parameter", "Expire idle connections"), new SolutionStep("Bound the pool", "Cap at 50")])),
        new HandoffPreferences([new RepositoryPreference("github", "acme", "shop"), new RepositoryPreference("github", "acme", "web")]));

    private byte[] snapshotJson = [];

    [GlobalSetup]
    public void Setup() => snapshotJson = JsonSerializer.SerializeToUtf8Bytes(Snapshot, HandoffJsonContext.Default.RunSnapshot);

    [Benchmark]
    public string Prompt() => PromptBuilder.Build(Snapshot, "Keep the public API unchanged", autoCreatePr: true);

    [Benchmark]
    public string BranchName() => BranchNamer.Create(Snapshot.Group!.Title, 123, "acme/shop", 1);

    [Benchmark]
    public byte[] SerializeSnapshot() => JsonSerializer.SerializeToUtf8Bytes(Snapshot, HandoffJsonContext.Default.RunSnapshot);

    [Benchmark]
    public RunSnapshot? DeserializeSnapshot() => JsonSerializer.Deserialize(snapshotJson, HandoffJsonContext.Default.RunSnapshot);
}

/// <summary>
/// The embedded state row: one save (transaction with version check and wake-up), many saves at once, and one load.
/// </summary>
[MemoryDiagnoser]
public class StateRowBenchmarks
{
    private SqliteRunStore store = null!;
    private string directory = null!;
    private RunHandoffState state = null!;
    private long version;

    /// <summary>Saves in flight at once, as the load tool's 64 clients make them.</summary>
    private const int ConcurrentSaves = 64;
    private RunHandoffState[] states = [];
    private readonly long[] versions = new long[ConcurrentSaves];

    [GlobalSetup]
    public void Setup()
    {
        directory = Directory.CreateTempSubdirectory("handoff-bench-").FullName;
        store = new SqliteRunStore(Path.Combine(directory, "bench.db"), TimeProvider.System);
        var now = DateTimeOffset.UtcNow;
        state = RunHandoffState.New(123) with
        {
            Snapshot = new RunSnapshot(123, Group: new RunGroup(456, "Database timeout", "SHOP-1")),
            CodingAgents = new Dictionary<string, CodingAgentState>
            {
                ["bc-1"] = new("bc-1", CodingAgentStatus.Running, "https://cursor.com/agents?id=bc-1", "cursor_background_agent", "acme/shop", now, []),
            },
            Launches = [new RepositoryLaunch("acme/shop", "github", 42, "cursor_background_agent", 1, "database-timeout-abc123", null, true, null, LaunchPhase.Launched, 1, now, null, "bc-1", null, now)],
        };
        version = store.SaveAsync(state, 0, CancellationToken.None).GetAwaiter().GetResult();
        states = Enumerable.Range(1_000, ConcurrentSaves)
            .Select(runId => state with { RunId = runId, Snapshot = state.Snapshot! with { RunId = runId } })
            .ToArray();
        for (var i = 0; i < ConcurrentSaves; i++)
        {
            versions[i] = store.SaveAsync(states[i], 0, CancellationToken.None).GetAwaiter().GetResult();
        }
        // A second run whose row keeps the digest of the event it handled: what a redelivery looks up.
        redeliveredEvent = HandoffDapr.Core.Serialization.HandoffJsonContext.Default.RunSnapshot is var info
            ? JsonSerializer.SerializeToUtf8Bytes(state.Snapshot! with { RunId = 124 }, info) : [];
        store.SaveAsync(RunHandoffState.New(124) with { Snapshot = state.Snapshot! with { RunId = 124 } }, 0, CancellationToken.None,
            HandledEvent.Of(store.DigestEvent(redeliveredEvent))).GetAwaiter().GetResult();
        remembering = new SqliteRunStore(Path.Combine(directory, "remembering.db"), TimeProvider.System, rememberedEvents: 16);
        remembering.SaveAsync(RunHandoffState.New(124) with { Snapshot = state.Snapshot! with { RunId = 124 } }, 0, CancellationToken.None,
            HandledEvent.Of(remembering.DigestEvent(redeliveredEvent))).GetAwaiter().GetResult();
    }

    private byte[] redeliveredEvent = [];

    /// <summary>A redelivered event's whole cost in the store: the digest of its data and the indexed lookup.</summary>
    [Benchmark]
    public long? FindRedelivery() => store.FindHandledEvent(store.DigestEvent(redeliveredEvent));

    /// <summary>The same, answered from the digests this process saved (<c>Handoff:Embedded:RememberedEvents</c>, the service's default).</summary>
    [Benchmark]
    public long? FindRememberedRedelivery() => remembering.FindHandledEvent(remembering.DigestEvent(redeliveredEvent));

    private SqliteRunStore remembering = null!;

    [Benchmark]
    public byte[] DigestOfRedelivery() => store.DigestEvent(redeliveredEvent);

    [Benchmark]
    public async Task SaveRow() => version = await store.SaveAsync(state, version, CancellationToken.None);

    /// <summary>
    /// 64 runs saved at once (the time per save): the writer thread commits what has queued up together, so one flush
    /// to the disk serves many saves.
    /// </summary>
    [Benchmark(OperationsPerInvoke = ConcurrentSaves)]
    public async Task SaveRowsConcurrently()
    {
        var saves = new Task<long>[ConcurrentSaves];
        for (var i = 0; i < ConcurrentSaves; i++)
        {
            saves[i] = store.SaveAsync(states[i], versions[i], CancellationToken.None);
        }

        (await Task.WhenAll(saves)).CopyTo(versions, 0);
    }

    [Benchmark]
    public async Task<StoredRun> LoadRow() => await store.LoadAsync(123, CancellationToken.None);

    [GlobalCleanup]
    public void Cleanup()
    {
        store.Dispose();
        remembering.Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(directory, recursive: true);
    }
}

/// <summary>
/// Deserialising the state of a launched run of three repositories (4.2 KB, as the load tool's runs have after their
/// launches), next to parsing the same bytes into a <see cref="JsonDocument"/>: the yardstick for how much a faster
/// reader could save on every duplicate delivery, trigger and GET.
/// </summary>
[MemoryDiagnoser]
public class LaunchedStateBenchmarks
{
    private byte[] json = [];

    [GlobalSetup]
    public void Setup()
    {
        var now = new DateTimeOffset(2026, 11, 25, 2, 5, 56, TimeSpan.Zero);
        var repositories = Enumerable.Range(0, 3).Select(i => $"org5/repo{i}").ToList();
        var snapshot = new RunSnapshot(
            5,
            1,
            2,
            new RunGroup(456, "Database connection timeout in checkout", "SHOP-1A2"),
            new RunMetadata("open_pr", 456),
            new RunArtifacts(new RootCauseArtifact(
                "Pool exhausted under load",
                ["Requests time out", "Pool is exhausted", "Connections are never released"],
                ["Send 100 concurrent checkouts", "Watch the pool metrics"],
                null)),
            new HandoffPreferences(
                repositories.Select(name => new RepositoryPreference("github", "org5", name[5..])).ToList(),
                new AutomationHandoff("root_cause", "cursor_background_agent", 42, false)));
        var state = RunHandoffState.New(5) with
        {
            Snapshot = snapshot,
            CodingAgents = repositories.Select((name, i) => new CodingAgentState(
                    $"bc-{i}", CodingAgentStatus.Pending, $"https://cursor.com/agents?id=bc-{i}", "cursor_background_agent", $"{name}: Fix", now, []))
                .ToDictionary(agent => agent.Id),
            Launches = repositories.Select((name, i) => new RepositoryLaunch(
                    name, "github", 42, "cursor_background_agent", 1, $"database-connection-timeout-{i}", null, false, null,
                    LaunchPhase.Launched, 1, now, null, $"bc-{i}", null, now))
                .ToList(),
            Timeline = repositories.SelectMany((name, i) => new[]
                {
                    new TimelineEntry(now, TimelineEvents.LaunchScheduled, name),
                    new TimelineEntry(now, TimelineEvents.LaunchStarted, name, Detail: "attempt 1"),
                    new TimelineEntry(now, TimelineEvents.Launched, name, $"bc-{i}"),
                })
                .ToList(),
            Poll = new PollSchedule(now.AddMinutes(1), 0),
        };
        json = JsonSerializer.SerializeToUtf8Bytes(state, HandoffJsonContext.Default.RunHandoffState);
        launched = state;
    }

    private RunHandoffState launched = null!;

    private readonly HandoffEngine engine = new(
        new OneIntegration(new Integration(42, new NoCallsProvider())),
        new HandoffEngineOptions(),
        new RetryPolicy(new RetryOptions(), Random.Shared.NextDouble),
        TimeProvider.System,
        Microsoft.Extensions.Logging.Abstractions.NullLogger<HandoffEngine>.Instance);

    /// <summary>What embedded mode's every save adds to judge whether a redelivered event would change nothing.</summary>
    [Benchmark]
    public bool JudgeRedelivery() => engine.WouldIgnoreRedelivery(launched);

    private sealed class OneIntegration(Integration integration) : IIntegrationCatalog
    {
        public Integration? Find(long integrationId) => integrationId == integration.Id ? integration : null;
    }

    /// <summary>The judgement calls no provider.</summary>
    private sealed class NoCallsProvider : ICodingAgentProvider
    {
        public string ProviderName => "cursor_background_agent";

        public Task<ProviderResult<ProviderAgent>> LaunchAsync(AgentLaunchRequest request, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task<ProviderResult<ProviderAgent>> GetAgentAsync(string agentId, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task<ProviderResult<ProviderAgent?>> FindAgentByBranchAsync(RepositoryName repository, string branchName, DateTimeOffset? firstSentAt, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task<ProviderResult<bool>> StopAsync(string agentId, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task<ProviderResult<bool>> AddFollowupAsync(string agentId, string text, CancellationToken cancellationToken) => throw new NotSupportedException();
    }

    [Benchmark(Baseline = true)]
    public RunHandoffState? Deserialize() => JsonSerializer.Deserialize(json, HandoffJsonContext.Default.RunHandoffState);

    [Benchmark]
    public JsonValueKind ParseDocument()
    {
        using var document = JsonDocument.Parse(json);
        return document.RootElement.ValueKind;
    }
}
