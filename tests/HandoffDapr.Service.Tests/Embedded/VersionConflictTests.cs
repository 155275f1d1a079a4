using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Two embedded processes on one SQLite file: each keeps its own callers apart with its lock, and the row's version
/// stops blind overwrites. When the other process saves a run in the middle of this one's turn, the turn is decided
/// again on what was saved instead of failing.
/// </summary>
public sealed class VersionConflictTests : IDisposable
{
    private const long RunId = 500;
    private readonly TempDirectory temp = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 12, 2, 10, 0, 0, TimeSpan.Zero));
    private readonly ScriptedProvider provider = new();

    [Fact]
    public async Task A_turn_whose_save_meets_the_other_processes_save_is_decided_again_and_launches_once()
    {
        var path = temp.File("shared.db");
        using var here = new SqliteRunStore(path, time);
        using var otherProcess = new SqliteRunStore(path, time);
        var catalog = new InterleavingCatalog(new Integration(42, provider));
        var owner = Owner(here, catalog);
        // Once this process has read the run and is deciding, the other one stores the run's later snapshot.
        var later = Snapshot() with { Artifacts = new RunArtifacts(new RootCauseArtifact("Pool exhausted"), new SolutionArtifact("Bound the pool")) };
        catalog.WhileDeciding = () =>
        {
            catalog.WhileDeciding = null; // once
            otherProcess.SaveAsync(RunHandoffState.New(RunId) with { Snapshot = later }, 0, CancellationToken.None).GetAwaiter().GetResult();
        };

        var outcome = await owner.TriggerAsync(RunId, new HandoffTrigger(456, 42, Snapshot: Snapshot()), CancellationToken.None);

        Assert.Equal(TriggerStatus.Accepted, outcome.Status);
        Assert.Equal("acme/shop", Assert.Single(outcome.Result.Successes).RepoName);
        Assert.Single(provider.Launches);
        var stored = (await otherProcess.LoadAsync(RunId, CancellationToken.None)).State!;
        Assert.Single(stored.CodingAgents);
        Assert.Equal(LaunchPhase.Launched, Assert.Single(stored.Launches).Phase);
        // Decided again on what the other process saved: its later snapshot stands, not the trigger's written over it.
        Assert.Equal("Bound the pool", stored.Snapshot?.Artifacts?.Solution?.OneLineSummary);
    }

    [Fact]
    public async Task A_run_the_other_process_keeps_saving_first_is_reported_unavailable_not_overwritten()
    {
        var path = temp.File("busy.db");
        using var here = new SqliteRunStore(path, time);
        using var otherProcess = new SqliteRunStore(path, time);
        var catalog = new InterleavingCatalog(new Integration(42, provider));
        var owner = Owner(here, catalog);
        var saves = 0;
        catalog.WhileDeciding = () =>
        {
            var current = otherProcess.LoadAsync(RunId, CancellationToken.None).GetAwaiter().GetResult();
            var state = (current.State ?? RunHandoffState.New(RunId)) with { Snapshot = Snapshot() with { OrganizationId = ++saves } };
            otherProcess.SaveAsync(state, current.Version, CancellationToken.None).GetAwaiter().GetResult();
        };

        await Assert.ThrowsAsync<HandoffDapr.Service.Hosting.RunOwnerUnavailableException>(
            () => owner.TriggerAsync(RunId, new HandoffTrigger(456, 42, Snapshot: Snapshot()), CancellationToken.None));

        Assert.Equal(3, saves); // decided three times in all, each time met by the other process's save
        Assert.Empty(provider.Launches);
        var stored = (await here.LoadAsync(RunId, CancellationToken.None)).State!;
        Assert.Equal(saves, stored.Snapshot!.OrganizationId); // the other process's last save stands
        Assert.Empty(stored.Launches);
    }

    private EmbeddedRunOwner Owner(SqliteRunStore store, IIntegrationCatalog catalog) => new(
        new HandoffEngine(catalog, new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance),
        store,
        new RunLocks(),
        new WakeupSignal(),
        Microsoft.Extensions.Options.Options.Create(new HandoffOptions()),
        new HandoffDapr.Service.Hosting.ProviderCallCutoff(new Lifetime(), TimeSpan.Zero, time),
        Microsoft.Extensions.Options.Options.Create(HttpJson()),
        time);

    private static Microsoft.AspNetCore.Http.Json.JsonOptions HttpJson()
    {
        var json = new Microsoft.AspNetCore.Http.Json.JsonOptions();
        HandoffDapr.Service.Api.ServiceJsonContext.ConfigureHttp(json.SerializerOptions);
        return json;
    }

    private static RunSnapshot Snapshot() => new(
        RunId,
        Group: new RunGroup(456, "Database connection timeout", "SHOP-1"),
        Metadata: new RunMetadata("open_pr", 456),
        Artifacts: new RunArtifacts(new RootCauseArtifact("Pool exhausted")),
        Preferences: new HandoffPreferences([new RepositoryPreference("github", "acme", "shop")]));

    /// <summary>The engine asks for the integration after reading the run and before saving it: the other process acts then.</summary>
    private sealed class InterleavingCatalog(Integration integration) : IIntegrationCatalog
    {
        public Action? WhileDeciding { get; set; }

        public Integration? Find(long integrationId)
        {
            WhileDeciding?.Invoke();
            return integrationId == integration.Id ? integration : null;
        }
    }

    private sealed class Lifetime : IHostApplicationLifetime
    {
        public CancellationToken ApplicationStarted => CancellationToken.None;
        public CancellationToken ApplicationStopping => CancellationToken.None;
        public CancellationToken ApplicationStopped => CancellationToken.None;
        public void StopApplication()
        {
        }
    }

    public void Dispose() => temp.Dispose();
}
