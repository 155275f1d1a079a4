using System.Text.Json;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Serialization;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Core.Tests;

/// <summary>
/// <see cref="HandoffEngine.WouldIgnoreRedelivery"/> says a completion event carrying a run's own snapshot again would
/// change nothing; embedded mode answers such a redelivery without loading the run. Each case checks the judgement
/// against what accepting the event really does: no save and no launch exactly when the judgement says so.
/// </summary>
public sealed class RedeliveryJudgementTests
{
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 12, 2, 10, 0, 0, TimeSpan.Zero));
    private readonly ScriptedProvider provider = new();

    [Theory]
    [InlineData("launched", true)]
    [InlineData("launches saved as due, not yet made", true)]
    [InlineData("launch failed for good", true)]
    [InlineData("gate said no", true)]
    [InlineData("repository past the cap", true)]
    [InlineData("cap raised since", false)]
    [InlineData("unknown integration", false)]
    [InlineData("target of another kind", false)]
    [InlineData("target of another kind, its repository launched by a person", false)]
    [InlineData("snapshot stored without its launches", false)]
    public async Task The_judgement_matches_what_accepting_the_same_event_again_does(string scenario, bool ignored)
    {
        var (state, judge) = await ArrangeAsync(scenario);

        Assert.Equal(ignored, judge.WouldIgnoreRedelivery(state));

        // The same event again, read from its bytes as a redelivery would be.
        var again = JsonSerializer.Deserialize(JsonSerializer.SerializeToUtf8Bytes(state.Snapshot!, HandoffJsonContext.Default.RunSnapshot), HandoffJsonContext.Default.RunSnapshot)!;
        var writer = new RecordingWriter();
        var launchesBefore = provider.Launches;
        var outcome = await judge.AcceptAndFinishAsync(state, again, writer, LaunchTiming.Now, CancellationToken.None);

        var changedSomething = writer.Saved.Count > 0 || provider.Launches > launchesBefore;
        Assert.Equal(!ignored, changedSomething);
        Assert.NotEqual(CompletionStatus.Rejected, outcome.Status);
    }

    [Fact]
    public void A_run_without_a_snapshot_is_never_judged_unchanged_by_an_event()
    {
        Assert.False(Engine().WouldIgnoreRedelivery(RunHandoffState.New(1)));
    }

    private async Task<(RunHandoffState State, HandoffEngine Judge)> ArrangeAsync(string scenario)
    {
        var engine = Engine();
        var writer = new RecordingWriter();
        async Task<RunHandoffState> Accepted(HandoffEngine by, RunSnapshot snapshot, LaunchTiming timing = LaunchTiming.Now)
        {
            await by.AcceptAndFinishAsync(null, snapshot, writer, timing, CancellationToken.None);
            return writer.Saved.Last();
        }

        switch (scenario)
        {
            case "launched":
                return (await Accepted(engine, HandingOff("acme/shop", "acme/api")), engine);
            case "launches saved as due, not yet made":
                return (await Accepted(engine, HandingOff("acme/shop"), LaunchTiming.OnNextWake), engine);
            case "launch failed for good":
                provider.Failure = new ProviderFailure(FailureTypes.RepositoryAccess, Retryable: false);
                return (await Accepted(engine, HandingOff("acme/shop")), engine);
            case "gate said no":
                return (await Accepted(engine, HandingOff("acme/shop") with { Preferences = new HandoffPreferences([Repository("acme/shop")]) }), engine);
            case "repository past the cap":
                var capped = Engine(maxRepositories: 1);
                return (await Accepted(capped, HandingOff("acme/shop", "acme/api")), capped);
            case "cap raised since":
                // Judged by a process started with a higher cap: the event would now launch the second repository.
                return (await Accepted(Engine(maxRepositories: 1), HandingOff("acme/shop", "acme/api")), engine);
            case "unknown integration":
                return (await Accepted(engine, HandingOff("acme/shop", integrationId: 99)), engine);
            case "target of another kind":
                return (await Accepted(engine, HandingOff("acme/shop", target: "github_copilot_agent")), engine);
            case "target of another kind, its repository launched by a person":
                // Nothing left to launch, but the event still saves and warns of the mismatch on every delivery.
                var mismatched = await Accepted(engine, HandingOff("acme/shop", target: "github_copilot_agent"));
                await engine.TriggerAndFinishAsync(1, mismatched, new HandoffTrigger(456, 42), writer, CancellationToken.None);
                return (writer.Saved.Last(), engine);
            case "snapshot stored without its launches":
                return (RunHandoffState.New(1) with { Snapshot = HandingOff("acme/shop") }, engine);
            default:
                throw new ArgumentOutOfRangeException(nameof(scenario), scenario, null);
        }
    }

    private HandoffEngine Engine(int maxRepositories = 8) => new(
        new SingleIntegrationCatalog(new Integration(42, provider)),
        new HandoffEngineOptions { MaxRepositories = maxRepositories },
        new RetryPolicy(new RetryOptions(), () => 0.5),
        time,
        NullLogger<HandoffEngine>.Instance);

    private static RunSnapshot HandingOff(string first, string? second = null, long integrationId = 42, string? target = null) => new(
        1,
        Group: new RunGroup(456, "Pool timeout", "SHOP-1"),
        Metadata: new RunMetadata("open_pr"),
        Artifacts: new RunArtifacts(new RootCauseArtifact("Pool exhausted")),
        Preferences: new HandoffPreferences(
            second is null ? [Repository(first)] : [Repository(first), Repository(second)],
            new AutomationHandoff("root_cause", target, integrationId)));

    private static RepositoryPreference Repository(string fullName) => new("github", fullName.Split('/')[0], fullName.Split('/')[1]);

    /// <summary>Launches succeed unless a failure is set; only the launch count matters here.</summary>
    private sealed class ScriptedProvider : ICodingAgentProvider
    {
        private int launches;

        public int Launches => launches;

        public ProviderFailure? Failure { get; set; }

        public string ProviderName => "cursor_background_agent";

        public int PromptReserve => 0;

        public Task<ProviderResult<ProviderAgent>> LaunchAsync(AgentLaunchRequest request, CancellationToken cancellationToken)
        {
            var sequence = Interlocked.Increment(ref launches);
            return Task.FromResult(Failure is { } failure
                ? ProviderResult<ProviderAgent>.Failed(failure)
                : ProviderResult<ProviderAgent>.Success(new ProviderAgent($"bc-{sequence}", ProviderAgentStatus.Creating, BranchName: request.BranchName)));
        }

        public Task<ProviderResult<ProviderAgent>> GetAgentAsync(string agentId, CancellationToken cancellationToken) =>
            Task.FromResult(ProviderResult<ProviderAgent>.Success(new ProviderAgent(agentId, ProviderAgentStatus.Running)));

        public Task<ProviderResult<ProviderAgent?>> FindAgentByBranchAsync(
            Repositories.RepositoryName repository, string branchName, DateTimeOffset? firstSentAt, CancellationToken cancellationToken) =>
            Task.FromResult(ProviderResult<ProviderAgent?>.Success(null));

        public Task<ProviderResult<bool>> StopAsync(string agentId, CancellationToken cancellationToken) => Task.FromResult(ProviderResult<bool>.Success(true));

        public Task<ProviderResult<bool>> AddFollowupAsync(string agentId, string text, CancellationToken cancellationToken) =>
            Task.FromResult(ProviderResult<bool>.Success(true));
    }
}
