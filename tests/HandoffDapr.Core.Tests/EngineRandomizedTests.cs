using System.Text.Json;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Repositories;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;

namespace HandoffDapr.Core.Tests;

/// <summary>
/// Seeded randomized test of the engine alone, against a model provider that keeps its agents (repository, branch,
/// creation time, status) and answers each call by a drawn behaviour: launched; refused (429 with Retry-After, 401, a
/// refused connection, an open circuit); the agent created but the answer lost (a time-out, a 502), unparsable (a 200
/// with garbage), naming another agent it has, or naming another repository; a client that throws with secret text; a
/// call cut off by the owner's shutdown (its request out or not); lookups that fail, and that only see agents created
/// since five minutes before the launch's first attempt that may have made one (as both providers page back no
/// further); reads that fail, answer stale (a status going backwards) or name another agent. The run's owner is
/// modelled as the hosts are: a round's or poll's calls are made later than its start, and their answers recorded later
/// still (or never: the process died), while triggers and events (through either of two integrations, under a
/// repository cap drawn per seed), wake-ups, stops, follow-ups, webhooks (late, repeated, out of order, now and then
/// signed by the other integration, or a finish's leaving its pull request out, as Cursor's can) and redelivered events
/// take turns on the run, the clock moves, and either integration is removed from the settings and put back.
/// <para>
/// Checked after every turn: the state is never damaged and holds no exception text, nor does any answer; the provider
/// never has two agents on one branch, nor more agents on a repository than it has generations; a new generation comes
/// only from a person's trigger or another integration; a launch failed with <see cref="RepositoryLaunch.OutcomeUnknown"/>
/// false has no agent at the provider; no launch is sent again before the Retry-After of a 429 the run took in (one
/// answered after its launch moved on is not applied), nor sent more than MaxAttempts times (counted at the provider, anew
/// from a person's relaunch); a launch is launched exactly when it has an agent, and shows a failure type api.md gives for
/// its phase (one retried while it waits, or none yet; one that ends it when failed; its agent's failure when launched,
/// an agent that finished after all none); work still to do has a time, and agents at work are polled; a redelivery
/// <see cref="HandoffEngine.WouldIgnoreRedelivery"/> judges ignorable changes nothing; a last allowed attempt whose answer
/// was lost leaves its launch to one lookup (one seed in three allows two attempts, so last attempts come often); a stop
/// or follow-up of an agent the run lacks is unknown-agent, of one whose integration is removed unknown-integration, and
/// neither reaches the provider; one sent is answered as the provider answered it (done, refused with its failure type:
/// a stop of an agent that ended is refused, as Cursor's is; or not known), and recorded unless refused; a stop is
/// recorded <c>stopped</c>, its answer lost (taken or not) with the detail
/// <c>outcome unknown</c> and the agent left as it was, and ends a follow-up's wait for a pull request either way, unless
/// it crossed that follow-up (sent before the follow-up was recorded, recorded after it). Settled
/// before the final trigger, every agent at the provider is known to the run or its launch is marked outcome-unknown. At the end (a well-behaved
/// provider, a person's trigger per integration naming every repository, every agent ended by the provider) every agent
/// at the provider is tracked, every launch is launched or failed, nothing is scheduled any more, and each agent shows
/// how the provider ended it, with its pull request.
/// </para>
/// <para>
/// Each poll's verdict is checked against the state it was computed from (not when its stops reach the provider, which a
/// held answer delays): it names no agent whose follow-up a person's command recorded, unless the agent was given up on
/// again since (a person's stop recorded, or a time-out, that turn's included); a follow-up sent and not yet recorded is
/// the known window, counted (windowStops) and not flagged. And an agent the run gave up on (timed out, stopped by a
/// person while at work or awaiting a pull request after a follow-up) and failed without a pull request, sent no
/// follow-up since (recorded or not), within its watch (twice the maximum age from its launch and from its last
/// follow-up), whose end no recorded read showed since, that a good read of the poll shows at work, is still read by the
/// run and named to stop again; a poll given its verdict back sends each stop it names (its integration present, the
/// poll not cut off), the harness's own stops for a verdict apart. A poll's answers are now and then recorded a second time later, as daprd repeats a turn
/// whose answer it lost (drawn apart, so the other draws of a seed are as they were).
/// </para>
/// <para>
/// It found that a follow-up to an agent the run still showed at work, which had ended unseen, was not read on until
/// its pull request showed; that a launch answered with an agent on another launch's branch (that launch's answer lost)
/// took it; that a relaunch behind an earlier agent that finished after all was never looked for again; that an agent
/// given up on stopped being watched once another agent of the run had a follow-up; and that a relaunch ended before
/// any call was next relaunched without looking first (two agents on one branch). The longer schedules found the last
/// two (ENGINE_STEPS_MAX raises the default of 200 steps), and later that a pull request shown with a status other than
/// FINISHED was never learnt, that a poll whose read failed ended a follow-up's wait for its pull request, and that a
/// person's relaunch did not wait for the Retry-After of its last attempt (seeds 11056, 11450, 11499 of 10000..11499). Later
/// still, that a poll made again after its lease, recording late that it read an agent ended without a pull request, ended
/// the watch of one a follow-up had since set to work (a newer read showed it at work), so its pull request was never
/// learnt (seed 23267 at 300 steps). And that a poll that read an agent at work before a follow-up, answered after it,
/// ended the follow-up's wait for a pull request, so a late webhook of the end before the follow-up ended the agent's
/// watch (seed 3636 of 1..8000). And that after a follow-up to an agent the run showed at work, a read showing it at
/// work ended the wait for its pull request, so a late webhook of an earlier end left it unread (seed 50769); and that
/// a stop sent before a follow-up but recorded after it ended that follow-up's wait (seed 59126); and, at 600 steps, that
/// a failed agent whose end a read showed with a pull request kept none, so a stale finish completed it without (seed
/// 10541); and that after a stop of a followed-up agent whose answer was lost, a stale read of the end before the
/// follow-up ended its watch, so the follow-up's finish was never read (seed 77435); and that such a stop's outcome
/// unknown let the next read, showing the agent at work, take it off that watch, so a late webhook of the end before
/// the follow-up ended every watch (seed 955129); and that a stale read of a stop before a follow-up, after a second
/// stop whose outcome was unknown, ended the watch likewise (seed 1177602). Mutations it catches: a lookup window that
/// starts at each attempt rather than the first; a relaunch that never looks first; a retry that ignores Retry-After; a
/// person's relaunch that keeps the failure type of the launch it sends again (shown while it waits or is in flight, and
/// in a trigger's retries); a webhook's finish without its pull request taken as the end of an agent shown at work (11
/// of seeds 1..400); a webhook ignored for an agent completed without its pull request and no longer read, though a
/// later delivery carries the pull request (10 of seeds 1..3000).
/// </para>
/// Seeds: ENGINE_SEED_FROM / ENGINE_SEED_COUNT (default 1..400, about 10 ms each); ENGINE_STEPS_MAX (default 200).
/// The seeds that found a fault since the schedules last changed run too, each at the length that found it.
/// </summary>
public sealed class EngineRandomizedTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Seeds()
    {
        var from = int.TryParse(Environment.GetEnvironmentVariable("ENGINE_SEED_FROM"), out var f) ? f : 1;
        var count = int.TryParse(Environment.GetEnvironmentVariable("ENGINE_SEED_COUNT"), out var c) ? c : 400;
        return Enumerable.Range(from, count).Select(seed => new object[] { seed });
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public Task Random_schedule_keeps_the_engine_invariants(int seed) => RunAsync(seed, stepsMax: null);

    // Each found a fault of the engine or the model (the seed at the longest schedule it was found with). A change to
    // the harness's draws gives them other schedules: then they are merely more seeds.
    [Theory]
    [InlineData(3636, 200)]
    [InlineData(23267, 300)]
    [InlineData(50769, 200)]
    [InlineData(59126, 200)]
    [InlineData(10541, 600)]
    [InlineData(19913, 200)]
    [InlineData(39665, 200)]
    [InlineData(23070, 200)]
    [InlineData(77435, 200)]
    [InlineData(955129, 200)]
    [InlineData(1177602, 200)]
    public Task Schedule_that_once_found_a_fault_keeps_the_engine_invariants(int seed, int stepsMax) => RunAsync(seed, stepsMax);

    private async Task RunAsync(int seed, int? stepsMax)
    {
        var model = new EngineModel(seed, stepsMax);
        try
        {
            await model.RunAsync();
        }
        catch (Exception exception)
        {
            model.Violation($"threw {exception}");
        }

        output.WriteLine(model.Counters);
        Assert.True(model.Violations.Count == 0, $"seed {seed}:\n{string.Join("\n", model.Violations.Distinct().Take(20))}\n--- ops:\n{string.Join("\n", model.Trace)}");
    }
}

/// <summary>One seed's run: the engine, its one run's stored state, the model provider and what is still under way.</summary>
internal sealed class EngineModel : IRunStateWriter, IRoundRecorder
{
    public const string SecretText = "SECRET-provider-exception-text";
    private const long RunId = 1;
    private const long GroupId = 456;
    // Two integrations on one provider account (two keys): a run's repositories may be launched by either.
    private static readonly long[] IntegrationIds = [42, 43];
    private static readonly string[] AllRepositories = ["acme/r1", "acme/r2", "acme/r3", "acme/r4"];

    private readonly Random random;
    // Drawn apart, so that the other draws of a seed are as they were: whether a poll's turn is made again.
    private readonly Random repeats;
    // Drawn apart too: whether a webhook of a finish leaves its pull request out, as Cursor's can.
    private readonly Random omissions;
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
    private readonly ModelProvider provider;
    private readonly ToggledCatalog catalog;
    private readonly HandoffEngine engine;
    private readonly HandoffEngineOptions options;
    private RunHandoffState? stored;
    private int manualTriggers;

    // What the owner has started and not finished: rounds and polls whose calls are not made yet, answers not recorded yet.
    private readonly List<LaunchRound> roundsToCall = [];
    private readonly List<PollRound> pollsToRead = [];
    private readonly List<object> answersToRecord = [];

    // Whether the recorder holds the answers it is given (recorded later, or never) rather than record them at once.
    private bool holdAnswers;

    // Webhooks the provider sent and the network has not delivered yet (late, and perhaps out of order).
    private readonly List<ProviderAgent> webhooksInTransit = [];

    public List<string> Violations { get; } = [];
    public List<string> Trace { get; } = [];
    private int steps, lateRecords, droppedRounds;

    // The longest schedule to draw (ENGINE_STEPS_MAX, else 200, when not given).
    private readonly int? stepsMax;

    public EngineModel(int seed, int? stepsMax = null)
    {
        this.stepsMax = stepsMax;
        random = new Random(seed);
        repeats = new Random(seed * 131 + 3);
        omissions = new Random(seed * 137 + 5);
        // Now and then fewer repositories than the snapshots name may be handed off.
        options = new HandoffEngineOptions { MaxParallelLaunches = 1, AgentMaxAge = TimeSpan.FromHours(2), MaxRepositories = random.Next(3) == 0 ? 3 : 50,
            // One seed in three allows two attempts, so that a last attempt (its answer lost, say) comes often. Drawn apart,
            // so the other draws of a seed are as they were.
            Retry = new RetryOptions { MaxAttempts = new Random(seed * 31 + 7).Next(3) == 0 ? 2 : 5 } };
        provider = new ModelProvider(new Random(seed * 7919 + 1), time);
        catalog = new ToggledCatalog([.. IntegrationIds.Select(id => new Integration(id, provider))]);
        engine = new HandoffEngine(catalog, options, new RetryPolicy(options.Retry, random.NextDouble), time, NullLogger<HandoffEngine>.Instance);
    }

    public string Counters => $"steps={steps} providerAgents={provider.Agents.Count} launchCalls={provider.LaunchCalls} lookups={provider.Lookups} lateRecords={lateRecords} droppedRounds={droppedRounds} triggers={manualTriggers} cutOff={cutOff} ignorableRedeliveries={ignorableRedeliveries} lastAttemptsLost={lastAttemptsLost} reconciled={Trace.Count(line => line.Contains(" found", StringComparison.Ordinal))} adopted={Trace.Count(line => line.Contains("-> Changed", StringComparison.Ordinal) && line.Contains("webhook", StringComparison.Ordinal))} stopsNamed={stopsNamed} restopsRequired={restopsRequired} followedUpReadAtWork={followedUpReadAtWork} windowStops={windowStops} violations={Violations.Count}";

    private int cutOff, ignorableRedeliveries, lastAttemptsLost;

    public void Violation(string message) => Violations.Add($"[step {steps}] {message}");

    private void Note(string line) => Trace.Add($"{steps,3} {time.GetUtcNow():HH:mm:ss} {line}");

    public async Task RunAsync()
    {
        var count = random.Next(15, stepsMax ?? (int.TryParse(Environment.GetEnvironmentVariable("ENGINE_STEPS_MAX"), out var most) && most > 15 ? most : 200));
        for (steps = 1; steps <= count; steps++)
        {
            await StepAsync();
            CheckAlways();
        }

        await FinishAsync();
    }

    private async Task StepAsync()
    {
        switch (random.Next(100))
        {
            case < 14:
                await EventAsync();
                break;
            case < 24:
                await TriggerAsync();
                break;
            case < 36:
                await WakeAsync();
                break;
            case < 46:
                await CallARoundAsync();
                break;
            case < 54:
                await RecordAnAnswerAsync();
                break;
            case < 57:
                DropSomething();
                break;
            case < 65:
                Advance();
                break;
            case < 72:
                await ProgressAsync();
                break;
            case < 77:
                await DeliverLateWebhookAsync();
                break;
            case < 85:
                await CommandAsync(stop: random.Next(2) == 0);
                break;
            case < 88:
                var toggled = IntegrationIds[random.Next(IntegrationIds.Length)];
                var present = catalog.Toggle(toggled);
                Note($"integration {toggled} {(present ? "put back" : "removed")}");
                break;
            case < 94:
                await ReadAPollAsync();
                break;
            case < 97:
                await RedeliverAsync();
                break;
            default:
                provider.Mood = (ProviderMood)random.Next(3);
                Note($"provider mood {provider.Mood}");
                break;
        }
    }

    private int saves;

    /// <summary>
    /// The stored snapshot's event delivered again: when the engine says a host may answer it without loading the run
    /// (<see cref="HandoffEngine.WouldIgnoreRedelivery"/>), taking it must indeed change nothing.
    /// </summary>
    private async Task RedeliverAsync()
    {
        if (stored?.Snapshot is not { Preferences.AutomationHandoff: not null } snapshot)
        {
            return;
        }

        var ignorable = engine.WouldIgnoreRedelivery(stored);
        ignorableRedeliveries += ignorable ? 1 : 0;
        var before = saves;
        var outcome = await engine.AcceptCompletedRunAsync(stored, snapshot, this, random.Next(2) == 0 ? LaunchTiming.Now : LaunchTiming.OnNextWake, CancellationToken.None);
        Note($"redelivered event ({(ignorable ? "ignorable" : "to take")}) -> {outcome.Status}{(saves != before ? " saved" : "")}");
        if (ignorable && (saves != before || outcome.Round is not null))
        {
            Violation($"a redelivery judged ignorable changed the run: {saves - before} saves, round {outcome.Round is not null}");
        }

        Started(outcome.Round);
    }

    /// <summary>Mostly the first integration; now and then the project's preference names the other.</summary>
    private long AnIntegration() => random.Next(4) == 0 ? IntegrationIds[1] : IntegrationIds[0];

    private RunSnapshot Snapshot(bool forEvent)
    {
        var repositories = AllRepositories.Where(_ => random.Next(2) == 0).DefaultIfEmpty(AllRepositories[random.Next(AllRepositories.Length)])
            .Select(name => (RepositoryPreference?)new RepositoryPreference("github", name.Split('/')[0], name.Split('/')[1])).ToList();
        return new RunSnapshot(
            RunId,
            Group: new RunGroup(GroupId, "Pool timeout", "SHOP-1"),
            Metadata: new RunMetadata(StoppingPoint: "solution", GroupId: GroupId),
            Artifacts: new RunArtifacts(new RootCauseArtifact("Pool exhausted")),
            Preferences: new HandoffPreferences(
                repositories,
                forEvent ? new AutomationHandoff(AutomationGate.RootCauseStep, provider.ProviderName, AnIntegration(), AutoCreatePr: true) : null));
    }

    private async Task EventAsync()
    {
        var timing = random.Next(2) == 0 ? LaunchTiming.Now : LaunchTiming.OnNextWake;
        var snapshot = Snapshot(forEvent: true);
        Note($"event {timing} {Names(snapshot)} via {snapshot.Preferences!.AutomationHandoff!.IntegrationId}");
        var outcome = await engine.AcceptCompletedRunAsync(stored, snapshot, this, timing, CancellationToken.None);
        CheckNoLeak("event answer", outcome);
        Started(outcome.Round);
    }

    private async Task TriggerAsync()
    {
        var snapshot = stored is null || random.Next(3) != 0 ? Snapshot(forEvent: false) : null;
        manualTriggers++;
        var integrationId = AnIntegration();
        Note($"trigger {(snapshot is null ? "(stored snapshot)" : Names(snapshot))} via {integrationId}");
        var before = stored;
        var outcome = await engine.TriggerAsync(RunId, stored, new HandoffTrigger(GroupId, integrationId, Instruction: null, AutoCreatePr: true, Snapshot: snapshot), this, CancellationToken.None);
        ForgetRelaunchedAttempts(before);
        CheckNoLeak("trigger answer", outcome);
        Note($"  -> {outcome.Status}");
        Started(outcome.Round);
    }

    /// <summary>
    /// A person's trigger sends a failed launch again on its own branch, its attempts counted anew: the provider's count of
    /// that branch's launches starts over with it.
    /// </summary>
    private void ForgetRelaunchedAttempts(RunHandoffState? before)
    {
        foreach (var launch in stored?.Launches ?? [])
        {
            if (launch.Phase != LaunchPhase.Failed && before?.Launches.FirstOrDefault(earlier => earlier.BranchName == launch.BranchName) is { Phase: LaunchPhase.Failed })
            {
                provider.AttemptedLaunches.Remove(launch.BranchName);
            }
        }
    }

    private static string Names(RunSnapshot snapshot) => string.Join(",", snapshot.Preferences!.Repositories!.Select(r => r!.Name));

    // The wake-ups at which the run was not watching an agent it tracks: the agent was not among those it reads, or a
    // poll was due and did not name it. With the time and the order of events then (steps share the fake clock's instants).
    private readonly Dictionary<string, List<(DateTimeOffset At, long Order)>> unwatchedAt = [];

    /// <summary>Wakes the run, noting each agent it was not watching then.</summary>
    private async Task<WakeOutcome> WakeWatchedAsync()
    {
        var now = time.GetUtcNow();
        var watched = stored!.AgentsToPoll.Select(agent => agent.Id).ToHashSet();
        var pollDue = stored.HasAgentsToPoll && stored.Poll?.NextPollAt <= now;
        var tracked = stored.CodingAgents.Keys.ToList();
        var woken = await engine.WakeAsync(stored, this, CancellationToken.None);
        var polled = woken.Poll?.Agents.Select(agent => agent.AgentId).ToHashSet() ?? [];
        // Not an agent sent a follow-up not recorded yet: the run cannot know to watch it again.
        foreach (var id in tracked.Where(id => !heldFollowups.Contains(id) && (!watched.Contains(id) || (pollDue && !polled.Contains(id)))))
        {
            (unwatchedAt.TryGetValue(id, out var at) ? at : unwatchedAt[id] = []).Add((now, provider.Tick()));
        }

        return woken;
    }

    private async Task WakeAsync()
    {
        if (stored is null)
        {
            return;
        }

        Note($"wake (next wake-up {stored.NextWakeAt():HH:mm:ss})");
        var woken = await WakeWatchedAsync();
        Started(woken.Round);
        if (woken.Poll is { } poll)
        {
            pollsToRead.Add(poll);
        }
    }

    /// <summary>A round the owner just started: its calls are made now, or later (the owner is slow, or dies).</summary>
    private void Started(LaunchRound? round)
    {
        if (round is null)
        {
            return;
        }

        Note($"  round {string.Join(",", round.Launches.Select(l => $"{l.Launch.Repository}#{l.Launch.Generation}a{l.Launch.Attempts}{(l.ReconcileFirst ? " look" : "")}{(l.IfNotFound is null ? "" : " only")}"))}");
        roundsToCall.Add(round);
    }

    private async Task CallARoundAsync()
    {
        if (roundsToCall.Count == 0)
        {
            return;
        }

        var round = roundsToCall[random.Next(roundsToCall.Count)];
        roundsToCall.Remove(round);
        holdAnswers = random.Next(3) == 0;
        // Now and then the owner stops during the round (shutdown past its grace): a call is cut off at the provider.
        using var shutdown = new CancellationTokenSource();
        provider.CancelDuring = random.Next(5) == 0 ? shutdown : null;
        Note($"call round of {round.StartedAt:HH:mm:ss}{(holdAnswers ? " (answers held)" : "")}{(provider.CancelDuring is null ? "" : " (cut off)")}");
        try
        {
            var result = await engine.FinishRoundAsync(round, this, shutdown.Token);
            CheckNoLeak("round answer", result);
        }
        catch (OperationCanceledException) when (shutdown.IsCancellationRequested)
        {
            Note("  round cut off");
            cutOff++;
        }

        provider.CancelDuring = null;
        holdAnswers = false;
    }

    private async Task ReadAPollAsync()
    {
        if (pollsToRead.Count == 0)
        {
            return;
        }

        var poll = pollsToRead[random.Next(pollsToRead.Count)];
        pollsToRead.Remove(poll);
        holdAnswers = random.Next(3) == 0;
        using var shutdown = new CancellationTokenSource();
        provider.CancelDuring = random.Next(5) == 0 ? shutdown : null;
        Note($"read poll of {poll.StartedAt:HH:mm:ss} ({poll.Agents.Count} agents){(holdAnswers ? " (answers held)" : "")}{(provider.CancelDuring is null ? "" : " (cut off)")}");
        var tried = provider.Tick();
        foreach (var agent in poll.Agents)
        {
            lastReadTried[agent.AgentId] = tried;
        }

        immediateVerdict = null;
        provider.EngineStops.Clear();
        try
        {
            await engine.FinishPollAsync(poll, this, shutdown.Token);
            // Its verdict given back to it, the poll stops each agent it names (best effort: one whose integration was
            // taken out of the settings cannot be).
            foreach (var agent in immediateVerdict?.ToStop ?? [])
            {
                if (catalog.Find(agent.IntegrationId) is not null && !provider.EngineStops.Contains(agent.AgentId))
                {
                    Violation($"a poll's verdict named {agent.AgentId} to stop, and the poll sent it no stop");
                }
            }
        }
        catch (OperationCanceledException) when (shutdown.IsCancellationRequested)
        {
            Note("  poll cut off");
        }

        immediateVerdict = null;

        provider.CancelDuring = null;
        holdAnswers = false;
    }

    private async Task RecordAnAnswerAsync()
    {
        if (answersToRecord.Count == 0)
        {
            return;
        }

        var answer = answersToRecord[random.Next(answersToRecord.Count)];
        answersToRecord.Remove(answer);
        lateRecords++;
        await RecordAsync(answer);
    }

    private async Task<object> RecordAsync(object answer)
    {
        switch (answer)
        {
            case LaunchRoundAnswers launches:
                Note($"record round of {launches.Round.StartedAt:HH:mm:ss}: {string.Join("; ", launches.Attempts.Select(a => a.Agent is { } agent ? $"agent {agent.Id}{(a.Reconciled ? " found" : "")}" : $"{a.Failure!.FailureType}{(a.Failure.OutcomeUnknown ? " unknown" : "")}"))}");
                TakeRetryAfters(launches);
                var lostLast = LostLastAttempts(launches);
                lastAttemptsLost += lostLast.Count;
                var result = await engine.CompleteRoundAsync(stored, launches, this);
                CheckNoLeak("recorded round", result);
                foreach (var branch in lostLast)
                {
                    // README: after MaxAttempts launches a launch whose last answer was lost is only looked for, once, then ends.
                    if (stored!.Launches.First(launch => launch.BranchName == branch) is not { Phase: LaunchPhase.OutcomeUnknown, NextAttemptAt: not null } left)
                    {
                        Violation($"the last attempt on {branch}, its answer lost, ended the launch without the one lookup: {stored.Launches.First(launch => launch.BranchName == branch)}");
                    }
                }

                return result;
            case PollAnswers poll:
                Note($"record poll of {poll.Round.StartedAt:HH:mm:ss}: {string.Join("; ", poll.Reports.Select(r => r is null ? "-" : $"{r.Id} {r.Status}"))}");
                provider.Recorded(poll.Reports);
                var polledFrom = stored;
                var verdict = await engine.CompletePollAsync(stored, poll, this);
                CheckPollStops(polledFrom, poll, verdict);
                // The owner's own stops (as a Dapr actor makes them for a turn whose caller is gone), not the engine's.
                provider.HarnessStopping = true;
                foreach (var agent in verdict.ToStop)
                {
                    await provider.StopAsync(agent.AgentId, CancellationToken.None);
                }

                provider.HarnessStopping = false;

                // In Dapr mode daprd may make a turn again after its answer was lost: now and then these answers are
                // recorded once more, later (other turns may come between).
                if (repeats.Next(12) == 0)
                {
                    Note("  (this poll's turn to be made again)");
                    answersToRecord.Add(poll);
                }

                return verdict;
            default:
                var sent = (AgentCommandSent)answer;
                if (!sent.Stop && !answersToRecord.OfType<AgentCommandSent>().Any(other => !other.Stop && other.AgentId == sent.AgentId))
                {
                    heldFollowups.Remove(sent.AgentId);
                }

                Note($"record {(sent.Stop ? "stop" : "follow-up")} of {sent.AgentId}{(sent.OutcomeUnknown ? " (outcome unknown)" : "")}");
                var before = stored?.CodingAgents.GetValueOrDefault(sent.AgentId);
                var wasAwaiting = stored?.Poll?.AwaitingPullRequest?.Contains(sent.AgentId) == true;
                var outcome = await engine.RecordCommandAsync(stored, sent, this);
                CheckNoLeak("recorded command", outcome);
                CheckRecordedStop(sent, before, wasAwaiting);
                TakeCommandRecord(sent, before, wasAwaiting, outcome);
                return outcome;
        }
    }

    // Where, in the order of events, each agent's last follow-up was recorded (the run set it to await a pull request),
    // and when; and where it was last given up on: a person's stop recorded (whatever its outcome) or a time-out. A
    // poll's verdict may name an agent to stop only if it was given up on after its last follow-up recorded.
    private readonly Dictionary<string, (long Order, DateTimeOffset At)> followupRecorded = [];
    private readonly Dictionary<string, long> givenUpOrder = [];

    // Where each agent was last given up on such that the run reads it on as given up, failed without a pull request:
    // a time-out, an answered stop of an agent at work, a stop (answered or not) of one awaiting a pull request after a
    // follow-up that leaves it ended without one. And where a poll's answers recorded last showed it ended (a stale read
    // too): that ends the given-up watch, rightly or not.
    private readonly Dictionary<string, long> watchedGivenUpOrder = [];
    private readonly Dictionary<string, long> endRecordedOrder = [];
    // The verdict of the poll being read, recorded at once (given back to FinishPollAsync), to see its stops sent.
    private PollVerdict? immediateVerdict;
    private int stopsNamed, restopsRequired, followedUpReadAtWork, windowStops;

    /// <summary>What a recorded command changes in the model: a follow-up recorded, or a person's stop recorded.</summary>
    private void TakeCommandRecord(AgentCommandSent sent, CodingAgentState? before, bool wasAwaiting, AgentCommandOutcome outcome)
    {
        if (before is null || outcome.Status == AgentCommandStatus.UnknownAgent || stored is null)
        {
            return;
        }

        var order = provider.Tick();
        if (!sent.Stop)
        {
            // Only an agent not completed with a pull request is set to await one (one failed with it may still complete).
            if (!(before.Status == CodingAgentStatus.Completed && before.Results.Any(result => result.PrUrl is not null)))
            {
                followupRecorded[sent.AgentId] = (order, time.GetUtcNow());
            }

            return;
        }

        // A stop that crossed a follow-up leaves its wait for a pull request as it was: not given up on.
        if (wasAwaiting && CrossedFollowup(sent))
        {
            return;
        }

        givenUpOrder[sent.AgentId] = order;
        var after = stored.CodingAgents[sent.AgentId];
        if (((!sent.OutcomeUnknown && !before.Status.IsFinal()) || wasAwaiting) && after.Status.IsFinal() && !after.Results.Any(result => result.PrUrl is not null))
        {
            watchedGivenUpOrder[sent.AgentId] = order;
        }
    }

    /// <summary>
    /// A poll's verdict, against the state it was computed from (<paramref name="from"/>), whatever becomes of its stops
    /// later (held, sent after a follow-up recorded since: the known window). Safety: it names no agent a person's
    /// follow-up was recorded for, unless the agent was given up on again since (a person's stop recorded, or a time-out,
    /// this turn's included). Liveness: an agent the run gave up on (failed by it, without a pull request, not sent a
    /// follow-up since, recorded or not), within its watch, whose end no recorded read showed since, and that a good read
    /// of this poll shows at work, is still read by the run and named to stop.
    /// </summary>
    private void CheckPollStops(RunHandoffState? from, PollAnswers answers, PollVerdict verdict)
    {
        if (from is null || stored is null)
        {
            return;
        }

        // The time-outs of this turn.
        foreach (var (id, agent) in from.CodingAgents)
        {
            if (!agent.Status.IsFinal() && stored.CodingAgents.TryGetValue(id, out var now) && now.Status == CodingAgentStatus.Failed
                && stored.LaunchOfAgent(id)?.FailureType == FailureTypes.TimedOut)
            {
                givenUpOrder[id] = watchedGivenUpOrder[id] = provider.Tick();
            }
        }

        stopsNamed += verdict.ToStop.Count;
        foreach (var id in verdict.ToStop.Select(agent => agent.AgentId).Distinct())
        {
            if (followedUpOrder.GetValueOrDefault(id) > Math.Max(givenUpOrder.GetValueOrDefault(id), followupRecorded.GetValueOrDefault(id).Order))
            {
                // The known window: a follow-up sent, not recorded yet (or never), the run still gives the agent up.
                windowStops++;
            }

            if (followupRecorded.TryGetValue(id, out var followup) && givenUpOrder.GetValueOrDefault(id) < followup.Order)
            {
                Violation($"a poll's verdict names {id} to stop, though its follow-up was recorded (order {followup.Order}) and it was not given up on since (order {givenUpOrder.GetValueOrDefault(id)})");
            }
        }

        var readOrder = provider.Tick();
        var watchLimit = 2 * options.AgentMaxAge;
        var timeNow = time.GetUtcNow();
        for (var i = 0; i < answers.Reports.Count; i++)
        {
            if (answers.Reports[i] is not { } report || report.Id != answers.Round.Agents[i].AgentId || !from.CodingAgents.TryGetValue(report.Id, out var agent))
            {
                continue;
            }

            var id = report.Id;
            if (report.Status is not (ProviderAgentStatus.Creating or ProviderAgentStatus.Running))
            {
                endRecordedOrder[id] = readOrder;
                continue;
            }

            // Counted, to see the safety check at work: an agent the run shows ended, read at work after a follow-up recorded.
            if (followupRecorded.TryGetValue(id, out var recorded) && givenUpOrder.GetValueOrDefault(id) < recorded.Order
                && agent.Status.IsFinal() && !agent.Results.Any(result => result.PrUrl is not null))
            {
                followedUpReadAtWork++;
            }

            var launchedAt = from.LaunchOfAgent(id)?.AttemptStartedAt ?? agent.StartedAt;
            if (!provider.IsGoodRead(report) || !watchedGivenUpOrder.TryGetValue(id, out var gaveUp)
                || followupRecorded.GetValueOrDefault(id).Order > gaveUp
                || followedUpOrder.GetValueOrDefault(id) > gaveUp || heldFollowups.Contains(id) || followupsLost.Contains(id)
                || endRecordedOrder.GetValueOrDefault(id) > gaveUp
                || !agent.Status.IsFinal() || agent.Results.Any(result => result.PrUrl is not null) || provider.Agents[id].PrUrl is not null
                || timeNow - launchedAt > watchLimit || (followupRecorded.TryGetValue(id, out var last) && timeNow - last.At > watchLimit)
                // Its integration removed from the settings since the read: no stop could be sent; the read after it is put back names it.
                || from.LaunchOfAgent(id) is not { } launch || catalog.Find(launch.IntegrationId) is null)
            {
                continue;
            }

            // No excuse for a webhook's finish that took it off the given-up watch (to confirm the finish): the model
            // resumes a finished agent only by a follow-up; one sent or recorded since it was given up on is excused
            // above, and one recorded before keeps it on that watch, so a good read at work is work given up on. But for
            // a read made before that webhook, recorded since (a turn made again): the finish is the newer word, and an
            // agent whose finish is being confirmed is never stopped.
            if (confirmingFrom.TryGetValue(id, out var confirming) && provider.ReadOrder(report) < confirming.Order
                && from.Poll?.FinishesToConfirm?.ContainsKey(id) == true)
            {
                continue;
            }

            restopsRequired++;
            if (!from.AgentsToPoll.Any(polled => polled.Id == id))
            {
                Violation($"given up on {id} (order {gaveUp}), within its watch, its end not shown, is no longer read by the run");
            }
            else if (!verdict.ToStop.Any(stop => stop.AgentId == id))
            {
                Violation($"given up on {id} (order {gaveUp}), read at work ({report.Status}) by a poll recorded now, is not named to stop");
            }
        }
    }

    /// <summary>
    /// A stop recorded as the README says: <c>stopped</c> in the timeline; one answered marks an agent at work failed,
    /// one whose answer was lost (<c>outcome unknown</c>) leaves the agent as it was. Either ends a follow-up's wait for
    /// a pull request (read on only until the provider shows the agent ended).
    /// </summary>
    private void CheckRecordedStop(AgentCommandSent sent, CodingAgentState? before, bool wasAwaiting)
    {
        if (!sent.Stop || before is null || stored is null)
        {
            return;
        }

        var after = stored.CodingAgents[sent.AgentId];
        var last = stored.Timeline.LastOrDefault();
        if (last is null || last.Event != TimelineEvents.Stopped || last.AgentId != sent.AgentId || last.Detail != (sent.OutcomeUnknown ? "outcome unknown" : null))
        {
            Violation($"stop of {sent.AgentId} (outcome unknown {sent.OutcomeUnknown}) recorded as {last?.Event} {last?.Detail}");
        }

        var expected = sent.OutcomeUnknown || before.Status.IsFinal() ? before.Status : CodingAgentStatus.Failed;
        if (after.Status != expected)
        {
            Violation($"stop of {sent.AgentId} (outcome unknown {sent.OutcomeUnknown}) left it {after.Status}, was {before.Status}");
        }

        // Unless it crossed a follow-up recorded since it was sent: the provider may have taken that follow-up last.
        var awaiting = stored.Poll?.AwaitingPullRequest?.Contains(sent.AgentId) == true;
        if (awaiting != (wasAwaiting && CrossedFollowup(sent)))
        {
            Violation($"stop of {sent.AgentId} (outcome unknown {sent.OutcomeUnknown}, crossed a follow-up {CrossedFollowup(sent)}) left it awaiting a pull request {awaiting}, was {wasAwaiting}");
        }
    }

    /// <summary>The branches of launches whose last allowed attempt the run takes in now with its answer lost (an agent may exist).</summary>
    private List<string> LostLastAttempts(LaunchRoundAnswers answers)
    {
        var branches = new List<string>();
        for (var i = 0; i < answers.Round.Launches.Count; i++)
        {
            var sent = answers.Round.Launches[i];
            var current = stored?.Launches.FirstOrDefault(launch => launch.BranchName == sent.Launch.BranchName);
            if (answers.Attempts[i].Failure is { Retryable: true, OutcomeUnknown: true, Attempted: true } && answers.Attempts[i].Agent is null
                && sent.IfNotFound is null && sent.Launch.Attempts == options.Retry.MaxAttempts
                && current is { Phase: LaunchPhase.InFlight } && current.Attempts == sent.Launch.Attempts && current.AttemptStartedAt == sent.Launch.AttemptStartedAt)
            {
                branches.Add(sent.Launch.BranchName);
            }
        }

        return branches;
    }

    /// <summary>
    /// The 429s the run takes in now: no launch on their branches may be sent before their Retry-After, counted from now.
    /// One answered after its launch moved on (past its deadline a wake-up took the attempt for a crash) is not applied,
    /// nor is one never recorded: neither can be honoured.
    /// </summary>
    private void TakeRetryAfters(LaunchRoundAnswers answers)
    {
        for (var i = 0; i < answers.Round.Launches.Count; i++)
        {
            var sent = answers.Round.Launches[i].Launch;
            var current = stored?.Launches.FirstOrDefault(launch => launch.Repository == sent.Repository && launch.IntegrationId == sent.IntegrationId && launch.Generation == sent.Generation);
            if (answers.Attempts[i].Failure is { FailureType: FailureTypes.RateLimited, RetryAfter: { } retryAfter }
                && current is { Phase: LaunchPhase.InFlight } && current.Attempts == sent.Attempts && current.AttemptStartedAt == sent.AttemptStartedAt)
            {
                provider.NotBefore[sent.BranchName] = time.GetUtcNow() + retryAfter;
            }
        }
    }

    /// <summary>The owner died: what it had under way is never finished (a round's launches are reconciled after their deadline).</summary>
    private void DropSomething()
    {
        var all = roundsToCall.Cast<object>().Concat(pollsToRead).Concat(answersToRecord).ToList();
        if (all.Count == 0)
        {
            return;
        }

        var dropped = all[random.Next(all.Count)];
        _ = dropped switch
        {
            LaunchRound round => roundsToCall.Remove(round),
            PollRound poll => pollsToRead.Remove(poll),
            _ => answersToRecord.Remove(dropped),
        };
        droppedRounds++;
        Lost(dropped);
    }

    // Agents sent a follow-up the owner died before recording: no one knows to read them on (the harness checks no more).
    private readonly HashSet<string> followupsLost = [];

    // Agents the run shows ended, no longer read, that a webhook finished without their pull request.
    private readonly HashSet<string> finishedUnread = [];

    // Agents a webhook the run took told of the provider's pull request: no excuse above covers losing it.
    private readonly HashSet<string> pullRequestDelivered = [];

    // Agents shown ended that a webhook finished without the provider's pull request and that are read on (when): shown
    // failed and still watched (completed, and read on as given up on after a follow-up, or to confirm the finish
    // without one), or no longer read (read to confirm the finish).
    // Excused only where a read was tried since and none answered.
    private readonly Dictionary<string, long> readOnFinishedAt = [];

    // Of those, the ones the webhook put on the watch of finishes to confirm (when, by order and time): read at every poll
    // until a read answers, for twice the maximum age from then. A wake-up within that which did not watch one voids the
    // excuse: its watch ended early, not for reads that failed.
    private readonly Dictionary<string, (long Order, DateTimeOffset At)> confirmingFrom = [];

    // When each agent was last in a poll's round being read (tried, whatever came of it).
    private readonly Dictionary<string, long> lastReadTried = [];

    private void Lost(object dropped)
    {

        if (dropped is AgentCommandSent { Stop: false } sent)
        {
            followupsLost.Add(sent.AgentId);
        }

        Note($"lost {dropped.GetType().Name}");
    }

    private void Advance()
    {
        var by = random.Next(4) switch
        {
            0 => TimeSpan.FromSeconds(random.Next(1, 60)),
            1 => TimeSpan.FromMinutes(random.Next(1, 5)),
            2 => TimeSpan.FromMinutes(random.Next(5, 40)),
            _ => TimeSpan.FromHours(random.Next(1, 4)),
        };
        time.Advance(by);
        Note($"advance {by}");
    }

    /// <summary>The provider moves an agent on, and tells us by webhook: now, twice, later, or never.</summary>
    private async Task ProgressAsync()
    {
        var agent = provider.Advance();
        if (agent is null)
        {
            return;
        }

        Note($"provider {agent.Id} -> {agent.Status}{(agent.PrUrl is null ? "" : " pr")}");
        var report = provider.Report(agent);
        if (report is { Status: ProviderAgentStatus.Finished, PrUrl: not null } && omissions.Next(3) == 0)
        {
            // Now and then a later delivery has it: the run must learn it then, whatever it made of the first.
            if (omissions.Next(2) == 0)
            {
                webhooksInTransit.Add(report);
            }

            report = report with { PrUrl = null };
            Note($"webhook of {agent.Id} leaves its pull request out");
        }

        switch (random.Next(4))
        {
            case 0:
                break;
            case 1:
                await WebhookAsync(report);
                break;
            case 2:
                await WebhookAsync(report);
                await WebhookAsync(report);
                break;
            default:
                webhooksInTransit.Add(report);
                break;
        }
    }

    private async Task DeliverLateWebhookAsync()
    {
        if (webhooksInTransit.Count == 0)
        {
            return;
        }

        var report = webhooksInTransit[random.Next(webhooksInTransit.Count)];
        if (random.Next(3) != 0)
        {
            webhooksInTransit.Remove(report);
        }

        await WebhookAsync(report);
    }

    private async Task WebhookAsync(ProviderAgent report)
    {
        // Signed by the integration that launched the agent; now and then by the other one (its secret proves nothing of it).
        var launchedBy = stored?.LaunchOfAgent(report.Id)?.IntegrationId
            ?? stored?.Launches.LastOrDefault(launch => launch.BranchName == provider.Agents[report.Id].Branch)?.IntegrationId ?? IntegrationIds[0];
        var signer = random.Next(8) == 0 ? IntegrationIds.First(id => id != launchedBy) : launchedBy;
        // A finish without the pull request the provider has, for an agent the run shows ended: one shown failed is
        // completed, and read on if still watched; one no longer read is read on to confirm the finish, if it was asked to
        // open a pull request and has none (readOnFinishedAt); any other is never read again (finishedUnread).
        // Noted only if the engine took the webhook (not one signed by the other integration, nor one of another repository).
        var (finishUnread, readOnFrom) = (false, (long?)null);
        if (report is { Status: ProviderAgentStatus.Finished, PrUrl: null } && provider.Agents[report.Id].PrUrl is not null
            && stored?.CodingAgents.GetValueOrDefault(report.Id) is { } known && known.Status.IsFinal())
        {
            var unread = !stored.AgentsToPoll.Any(agent => agent.Id == report.Id);
            var confirmed = unread && stored.LaunchOfAgent(report.Id)?.AutoCreatePr == true && !known.Results.Any(result => result.PrUrl is not null);
            finishUnread = unread && !confirmed;
            readOnFrom = known.Status == CodingAgentStatus.Failed || confirmed ? provider.Tick() : null;
        }

        var confirmingBefore = stored?.Poll?.FinishesToConfirm?.ContainsKey(report.Id) == true;
        var status = await engine.ApplyAgentReportAsync(stored, new AgentReport(signer, report, report.Repository), this);
        if (status is AgentReportStatus.Changed or AgentReportStatus.Unchanged)
        {
            if (finishUnread)
            {
                finishedUnread.Add(report.Id);
            }

            if (readOnFrom is { } from)
            {
                readOnFinishedAt[report.Id] = from;
            }

            // Only the webhook that put it there: one delivered again at the same instant would move the order later.
            if (!confirmingBefore && stored?.Poll?.FinishesToConfirm?.GetValueOrDefault(report.Id) is { } reportedAt && reportedAt == time.GetUtcNow())
            {
                confirmingFrom[report.Id] = (provider.Tick(), reportedAt);
            }
        }
        // One that carried the provider's pull request and was taken: that pull request is known, whatever came before.
        if (report.PrUrl is { } delivered && delivered == provider.Agents[report.Id].PrUrl
            && status is AgentReportStatus.Changed or AgentReportStatus.Unchanged)
        {
            pullRequestDelivered.Add(report.Id);
        }

        Note($"webhook {report.Id} {report.Status} signed by {signer} -> {status}");
    }

    // When each agent was last sent a follow-up, and where that falls in the order of events.
    private readonly Dictionary<string, DateTimeOffset> followedUp = [];
    private readonly Dictionary<string, long> followedUpOrder = [];

    private async Task CommandAsync(bool stop)
    {
        var ids = provider.Agents.Keys.Order().ToList();
        if (ids.Count == 0)
        {
            return;
        }

        var id = ids[random.Next(ids.Count)];
        var sentAt = time.GetUtcNow();
        var sentOrder = provider.Tick();
        holdAnswers = random.Next(3) == 0;
        Note($"{(stop ? "stop" : "follow-up")} {id}{(holdAnswers ? " (record held)" : "")}");
        var launchedBy = stored?.CodingAgents.ContainsKey(id) == true ? stored.LaunchOfAgent(id)?.IntegrationId : null;
        var callsBefore = provider.CommandCalls;
        var recordsBefore = followupSeenByCommand.Count;
        var outcome = stop
            ? await engine.StopAgentAsync(stored, id, this, CancellationToken.None)
            : await engine.AddFollowupAsync(stored, new AgentFollowup(id, "Also add a test"), this, CancellationToken.None);
        holdAnswers = false;
        // An agent the run does not have is unknown; one whose integration was taken out of the settings is answered
        // unknown-integration; neither is sent.
        var expected = launchedBy is null ? AgentCommandStatus.UnknownAgent : catalog.Find(launchedBy.Value) is null ? AgentCommandStatus.UnknownIntegration : (AgentCommandStatus?)null;
        if (expected is { } unknown ? outcome.Status != unknown || provider.CommandCalls != callsBefore
            : outcome.Status is AgentCommandStatus.UnknownAgent or AgentCommandStatus.UnknownIntegration || provider.CommandCalls == callsBefore)
        {
            Violation($"{(stop ? "stop" : "follow-up")} of {id} (launched by {launchedBy?.ToString() ?? "none"}, present {launchedBy is { } by && catalog.Find(by) is not null}) answered {outcome.Status}, {provider.CommandCalls - callsBefore} calls");
        }

        // Sent, the caller is told what the provider answered: done, refused (with its failure type), or not known (a
        // lost answer, a client that threw).
        if (provider.CommandCalls != callsBefore)
        {
            var answer = provider.LastCommandAnswer;
            (AgentCommandStatus Status, string? FailureType) told = answer is not { } given ? (AgentCommandStatus.OutcomeUnknown, FailureTypes.InvalidResponse)
                : given.IsSuccess ? (AgentCommandStatus.Done, null)
                // Not known only if it was sent: a failure before sending is a refusal, whatever it says.
                : (given.Failure is { RequestSent: true, OutcomeUnknown: true } ? AgentCommandStatus.OutcomeUnknown : AgentCommandStatus.ProviderFailed,
                    given.Failure!.FailureType);
            if ((outcome.Status, outcome.FailureType) != told)
            {
                Violation($"{(stop ? "stop" : "follow-up")} of {id}: the provider answered {(answer is not { } a ? "by throwing" : a.IsSuccess ? "done" : a.Failure!.FailureType)},"
                    + $" the caller was told {outcome.Status} {outcome.FailureType}");
            }

            // Recorded (or held to be) only if the provider took it or may have: a refusal changed nothing there.
            if ((followupSeenByCommand.Count != recordsBefore) != (told.Status != AgentCommandStatus.ProviderFailed))
            {
                Violation($"{(stop ? "stop" : "follow-up")} of {id}: answered {told.Status} by the provider, "
                    + $"{(followupSeenByCommand.Count != recordsBefore ? "yet recorded" : "not recorded")}");
            }
        }

        if (!stop && outcome.Status is AgentCommandStatus.Done or AgentCommandStatus.OutcomeUnknown)
        {
            // Only a follow-up the provider took (or may have: a fault included) starts a watch: one refused resumed nothing,
            // and the engine, never told of it, counts the watch from the last one it recorded.
            followedUp[id] = sentAt;
            followedUpOrder[id] = sentOrder;
            // Its work from here is watched: a finish without its pull request is no longer excused.
            finishedUnread.Remove(id);
        }

        CheckNoLeak("command answer", outcome);
        Note($"  -> {outcome.Status} {outcome.FailureType}");
    }

    public Task SaveAsync(RunHandoffState state, CancellationToken cancellationToken)
    {
        saves++;
        stored = state;
        return Task.CompletedTask;
    }

    public async Task<HandoffResult> RecordLaunchesAsync(LaunchRoundAnswers answers) =>
        holdAnswers ? Hold(answers, HandoffResult.Empty) : (HandoffResult)await RecordAsync(answers);

    public async Task<PollVerdict> RecordPollAsync(PollAnswers answers)
    {
        if (holdAnswers)
        {
            return Hold(answers, new PollVerdict([]));
        }

        immediateVerdict = (PollVerdict)await RecordAsync(answers);
        return immediateVerdict;
    }

    public async Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent)
    {
        // Called as the command is sent, against the run it was checked against: which follow-up it had seen recorded.
        followupSeenByCommand[sent.CommandId!] = followupRecorded.GetValueOrDefault(sent.AgentId).Order;
        return holdAnswers ? Hold(sent, new AgentCommandOutcome(AgentCommandStatus.Done)) : (AgentCommandOutcome)await RecordAsync(sent);
    }

    // For each command sent, where the last follow-up of its agent recorded when it was sent falls in the order of events.
    private readonly Dictionary<string, long> followupSeenByCommand = [];

    /// <summary>A stop whose agent had a follow-up recorded after the stop was sent: the two crossed.</summary>
    private bool CrossedFollowup(AgentCommandSent sent) =>
        sent.Stop && followupRecorded.GetValueOrDefault(sent.AgentId).Order > followupSeenByCommand[sent.CommandId!];

    // Agents sent a follow-up whose record is held.
    private readonly HashSet<string> heldFollowups = [];

    private T Hold<T>(object answer, T reply)
    {
        if (answer is AgentCommandSent { Stop: false } followup)
        {
            heldFollowups.Add(followup.AgentId);
        }

        answersToRecord.Add(answer);
        return reply;
    }

    private void CheckNoLeak(string where, object value)
    {
        var json = JsonSerializer.Serialize(value);
        if (json.Contains(SecretText, StringComparison.Ordinal) || json.Contains("Exception", StringComparison.Ordinal))
        {
            Violation($"{where} carries exception text: {json}");
        }
    }

    private void CheckAlways()
    {
        if (stored is null)
        {
            return;
        }

        if (stored.FindDamage(RunId) is { } damage)
        {
            Violation($"state damaged: {damage}");
        }

        CheckNoLeak("stored state", stored);
        foreach (var early in provider.EarlyRetries)
        {
            Violation($"a launch sent before its Retry-After: {early}");
        }

        provider.EarlyRetries.Clear();
        // Nor more often than Handoff:Launch:MaxAttempts (README; api.md, retries_exhausted: after MaxAttempts launches a
        // launch is only looked for, once), counted at the provider from the launch's first attempt or a person's relaunch.
        foreach (var (branch, attempted) in provider.AttemptedLaunches.Where(count => count.Value > options.Retry.MaxAttempts))
        {
            Violation($"{attempted} launches sent on {branch}, {options.Retry.MaxAttempts} attempts allowed");
        }

        foreach (var twins in provider.Agents.Values.GroupBy(agent => (agent.Repository, agent.Branch)).Where(group => group.Count() > 1))
        {
            Violation($"{twins.Count()} agents at the provider on {twins.Key}: {string.Join(",", twins.Select(agent => agent.Id))}");
        }

        foreach (var byRepository in provider.Agents.Values.GroupBy(agent => agent.Repository))
        {
            var generations = stored.Launches.Where(launch => launch.Repository == byRepository.Key).Select(launch => launch.Generation).DefaultIfEmpty(0).Max();
            if (byRepository.Count() > generations)
            {
                Violation($"{byRepository.Count()} agents at the provider on {byRepository.Key} with {generations} generations");
            }
        }

        // Nothing lost: work still to do has a time, and an agent at work is read (webhooks may be lost).
        if (stored.HasAgentsToPoll && stored.Poll is null)
        {
            Violation($"agents to read ({string.Join(",", stored.AgentsToPoll.Select(agent => $"{agent.Id} {agent.Status}"))}) but no poll scheduled");
        }

        // One watch at a time: a follow-up moves an agent from the given-up watch to the wait for its pull request (a poll
        // reads one on both as awaiting, but the stored schedule says which).
        if (stored.Poll is { GivenUp: { } givenUp, AwaitingPullRequest: { } awaiting } && givenUp.Intersect(awaiting).ToList() is { Count: > 0 } both)
        {
            Violation($"{string.Join(",", both)} both given up on and awaiting a pull request");
        }

        // The schedule names only the run's agents, and every agent awaiting a pull request has its follow-up's time: without
        // it, the wait would be counted from the launch, and could end before the follow-up's work did.
        if (stored.Poll is { } schedule)
        {
            var named = (schedule.GivenUp ?? []).Concat(schedule.AwaitingPullRequest ?? []).Concat(schedule.FollowedUpAt?.Keys ?? []);
            foreach (var unknown in named.Where(id => !stored.CodingAgents.ContainsKey(id)).Distinct())
            {
                Violation($"the poll schedule names {unknown}, no agent of the run");
            }

            foreach (var untimed in (schedule.AwaitingPullRequest ?? []).Where(id => schedule.FollowedUpAt?.ContainsKey(id) != true))
            {
                Violation($"{untimed} awaits a pull request with no follow-up time");
            }
        }

        // Nor a schedule kept with nothing to read: the next agent the run launches would take over its time and back-off.
        if (!stored.HasAgentsToPoll && stored.Poll is not null)
        {
            Violation($"a poll scheduled at {stored.Poll.NextPollAt:HH:mm:ss} (quiet polls {stored.Poll.QuietPolls}) with no agent to read");
        }

        foreach (var launch in stored.Launches)
        {
            if (launch.IsAwaitingWork && launch.NextAttemptAt is null)
            {
                Violation($"{launch.Repository}#{launch.Generation} is {launch.Phase} without a time");
            }

            // A new generation is a person's relaunch, or the repository handed to another integration.
            var integrationsUsed = stored.Launches.Where(other => other.Repository == launch.Repository).Select(other => other.IntegrationId).Distinct().Count();
            if (launch.Generation > integrationsUsed + manualTriggers)
            {
                Violation($"{launch.Repository} has generation {launch.Generation} after {manualTriggers} manual triggers, by {integrationsUsed} integrations");
            }

            if (LaunchDisagreement(launch) is { } disagreement)
            {
                Violation($"{launch.Repository}#{launch.Generation} {launch.Phase} (agent {launch.AgentId ?? "none"}, failure type {launch.FailureType ?? "none"}): {disagreement}");
            }

            if (launch is { Phase: LaunchPhase.Failed, AgentId: null, OutcomeUnknown: false }
                && provider.Agents.Values.FirstOrDefault(agent => agent.Repository == launch.Repository && agent.Branch == launch.BranchName) is { } agent)
            {
                Violation($"{launch.Repository}#{launch.Generation} failed ({launch.FailureType}) as surely without an agent, but {agent.Id} is on its branch");
            }
        }
    }

    // The failure types of api.md's table a launch may show, by its phase: one waiting for its next attempt only what is
    // retried; one failed only what is not (a retryable failure on the last attempt is retries_exhausted), never the
    // refusals kept out of the state (invalid_repository, no_repositories, too_many_*); one launched only its agent's end.
    private static readonly string[] RetriedFailureTypes = [FailureTypes.RateLimited, FailureTypes.ProviderUnavailable, FailureTypes.InvalidResponse, FailureTypes.ReconcileIncomplete];
    private static readonly string[] FinalFailureTypes = [FailureTypes.InvalidCredentials, FailureTypes.RepositoryAccess, FailureTypes.InvalidRequest, FailureTypes.RetriesExhausted,
        FailureTypes.NoCopilotLicense, FailureTypes.QuotaExceeded, FailureTypes.Superseded];
    private static readonly string[] AgentFailureTypes = [FailureTypes.AgentFailed, FailureTypes.TimedOut];

    /// <summary>
    /// Why a launch's phase, agent and failure type do not agree as the runbook reads them, or null: launched is the phase
    /// of a launch with an agent, and only of one; its failure type, if any, says how its agent failed (and is gone once
    /// the agent finished after all); a launch still to be sent carries its last attempt's retried failure or none yet.
    /// </summary>
    private string? LaunchDisagreement(RepositoryLaunch launch)
    {
        if ((launch.Phase == LaunchPhase.Launched) != (launch.AgentId is not null))
        {
            return "launched is the phase of a launch with an agent";
        }

        return launch.Phase switch
        {
            LaunchPhase.Launched when launch.FailureType is { } type && !(AgentFailureTypes.Contains(type) && stored!.CodingAgents[launch.AgentId!].Status == CodingAgentStatus.Failed)
                => $"launched with failure type {type}, its agent {stored!.CodingAgents[launch.AgentId!].Status}",
            LaunchPhase.Failed when !FinalFailureTypes.Contains(launch.FailureType) => "failed without a failure type that ends a launch",
            LaunchPhase.InFlight or LaunchPhase.RetryScheduled or LaunchPhase.OutcomeUnknown when launch.FailureType is { } type && !RetriedFailureTypes.Contains(type)
                => "waiting for an attempt with a failure type not retried",
            _ => null,
        };
    }

    private async Task FinishAsync()
    {
        steps = 1000;
        Note("--- finish: a well-behaved provider, the integration back; what was held is recorded or lost");
        provider.Mood = ProviderMood.Good;
        catalog.PutAllBack();
        foreach (var round in roundsToCall.ToList())
        {
            roundsToCall.Remove(round);
            if (random.Next(2) == 0)
            {
                await engine.FinishRoundAsync(round, this, CancellationToken.None);
            }
        }

        foreach (var answer in answersToRecord.ToList())
        {
            answersToRecord.Remove(answer);
            if (random.Next(2) == 0)
            {
                await RecordAsync(answer);
            }
            else
            {
                Lost(answer);
            }
        }

        pollsToRead.Clear();
        foreach (var report in webhooksInTransit.ToList())
        {
            await WebhookAsync(report);
        }

        CheckAlways();
        await SettleAsync("before the final trigger");
        if (stored is null)
        {
            return;
        }

        // Every agent the provider made for a launch is known to the run, or its launch is marked outcome-unknown (a
        // lost answer, its last attempt's too, is looked for before the launch ends without one).
        foreach (var agent in provider.Agents.Values.Where(agent => !stored.CodingAgents.ContainsKey(agent.Id)))
        {
            if (stored.Launches.FirstOrDefault(launch => launch.Repository == agent.Repository && launch.BranchName == agent.Branch) is not { } launch
                || launch.OutcomeUnknown != true)
            {
                Violation($"provider agent {agent.Id} on {agent.Repository} ({agent.Branch}) is unknown to the settled run, its launch not outcome-unknown: {string.Join(" ", stored.Launches.Where(l => l.Repository == agent.Repository).Select(l => $"#{l.Generation} {l.Phase} {l.FailureType} {l.BranchName} agent={l.AgentId} unknown={l.OutcomeUnknown}"))}");
            }
        }

        // A person hands the run off again, naming every repository it ever had: failed ones are launched again (looking
        // first where an agent may exist).
        foreach (var integrationId in stored.Launches.Select(launch => launch.IntegrationId).Distinct().Order().ToList())
        {
            manualTriggers++;
            var everyRepository = stored.Snapshot! with
            {
                Preferences = new HandoffPreferences(stored.Launches.Where(launch => launch.IntegrationId == integrationId).Select(launch => launch.Repository).Distinct()
                    .Select(name => (RepositoryPreference?)new RepositoryPreference("github", name.Split('/')[0], name.Split('/')[1])).ToList()),
            };
            var before = stored;
            var outcome = await engine.TriggerAsync(RunId, stored, new HandoffTrigger(GroupId, integrationId, Instruction: null, AutoCreatePr: true, Snapshot: everyRepository), this, CancellationToken.None);
            ForgetRelaunchedAttempts(before);
            Note($"final trigger via {integrationId} -> {outcome.Status}");
            Started(outcome.Round);
            await SettleAsync("after the final trigger");
        }
        CheckAlways();

        foreach (var agent in provider.Agents.Values.Where(agent => !stored.CodingAgents.ContainsKey(agent.Id)))
        {
            Violation($"provider agent {agent.Id} on {agent.Repository} ({agent.Branch}) is not tracked; launches: {string.Join(" ", stored.Launches.Where(l => l.Repository == agent.Repository).Select(l => $"#{l.Generation} {l.Phase} {l.FailureType} {l.BranchName} agent={l.AgentId} unknown={l.OutcomeUnknown}"))}");
        }

        foreach (var launch in stored.Launches.Where(launch => launch.Phase is not (LaunchPhase.Launched or LaunchPhase.Failed)))
        {
            Violation($"{launch.Repository}#{launch.Generation} still {launch.Phase} after settling");
        }

        // The provider ends every agent; the polls must then end.
        provider.EndAll();
        for (var i = 0; i < 200 && stored.NextWakeAt() is { } next; i++)
        {
            if (next > time.GetUtcNow())
            {
                time.Advance(next - time.GetUtcNow());
            }

            await WakeAndFinishAsync();
        }

        if (stored.NextWakeAt() is { } still)
        {
            Violation($"still scheduled at {still:O} with every agent ended (now {time.GetUtcNow():O})");
        }

        // What the provider ended them with is shown: a finish with its pull request, an error or a stop as failed. Not an
        // end the run could not see: the watch of an agent it failed itself counts from its launch, of one sent a
        // follow-up from that follow-up, for twice the maximum age; an end after that, or one no read showed within it
        // (every read of it failed, or the owner never woke then), is not learnt without a webhook, as documented.
        foreach (var (id, agent) in stored.CodingAgents)
        {
            var atProvider = provider.Agents[id];
            var launchedAt = stored.LaunchOfAgent(id)!.AttemptStartedAt ?? agent.StartedAt;
            var watchedFrom = followedUp.TryGetValue(id, out var followedUpAt) && followedUpAt > launchedAt ? followedUpAt : launchedAt;
            // After the end in the order things happened (not merely at its instant: steps share the fake clock's), and
            // within the watch.
            bool Within((DateTimeOffset At, long Order) at) => at.Order > atProvider.EndedOrder && at.At <= watchedFrom + 2 * options.AgentMaxAge;
            // Seen: a read after the end answered what the agent is, and the run was given it (a poll's answers dropped
            // teach nothing). Unseen otherwise, unless the run stopped watching the agent meanwhile: at a wake-up it was
            // not among those read, or a poll was due and left it out. A run that watched it to the end of its watch may
            // have missed the end: every read failed, the owner dropped its polls or never woke when one was due.
            // Not watched before the last follow-up is no fault for an end that came before it: that follow-up's watch is
            // the one to learn the end (the watch before it may have run out, every read failing).
            var watchedFromOrder = watchedFrom == launchedAt ? 0 : followedUpOrder[id];
            var unseen = atProvider.EndedAt > watchedFrom + 2 * options.AgentMaxAge - options.PollMaxInterval
                || (!atProvider.RecordedGoodReads.Any(Within) && !unwatchedAt.GetValueOrDefault(id, []).Any(at => Within(at) && at.Order > watchedFromOrder));
            var expected = atProvider.Status == ProviderAgentStatus.Finished ? CodingAgentStatus.Completed : CodingAgentStatus.Failed;
            // An agent completed with its pull request is not read again: a later end of work a follow-up started is not learnt.
            var completedWithItsPullRequest = agent.Status == CodingAgentStatus.Completed && agent.Results.Any(result => result.PrUrl is not null && result.PrUrl == atProvider.PrUrl);
            // Final is final: one completed, then sent a follow-up whose work failed, stays completed.
            var failedAfterAFollowup = agent.Status == CodingAgentStatus.Completed && followedUp.ContainsKey(id);
            // One failed by the run is not corrected once it is older than its watch (a stop sent to it then, say).
            var watchEnded = time.GetUtcNow() - launchedAt > 2 * options.AgentMaxAge;
            if (agent.Status != expected && !(agent.Status == CodingAgentStatus.Failed && (unseen || watchEnded)) && !completedWithItsPullRequest && !failedAfterAFollowup && !followupsLost.Contains(id))
            {
                Violation($"agent {id} is {agent.Status}, the provider has {atProvider.Status}");
            }

            // Nor one shown ended and no longer read that a webhook finished without it (finishedUnread), nor one whose finish a
            // webhook reported without it and no read could confirm until its time-out: the webhook's word ended it.
            // Nor one shown ended that such a webhook finished and that is read on, whose reads since were tried and none answered.
            // Neither excuses one put on the watch of finishes to confirm that a wake-up within it did not watch.
            var confirmingCutShort = confirmingFrom.TryGetValue(id, out var confirming)
                && unwatchedAt.GetValueOrDefault(id, []).Any(at => at.Order > confirming.Order && at.At <= confirming.At + 2 * options.AgentMaxAge);
            var finishTakenUnread = unseen && stored.Timeline.Any(entry => entry.Event == TimelineEvents.FinishReported && entry.AgentId == id) && !confirmingCutShort;
            var readOnFinishUnread = readOnFinishedAt.TryGetValue(id, out var finishedAt) && lastReadTried.GetValueOrDefault(id) > finishedAt
                && !atProvider.RecordedGoodReads.Any(read => read.Order > finishedAt) && !confirmingCutShort;
            if (agent.Status == CodingAgentStatus.Completed && atProvider.PrUrl is { } pr && !agent.Results.Any(result => result.PrUrl == pr) && !followupsLost.Contains(id) && !(followedUp.ContainsKey(id) && unseen)
                && ((!finishedUnread.Contains(id) && !finishTakenUnread && !readOnFinishUnread) || pullRequestDelivered.Contains(id)))
            {
                Violation($"agent {id} completed without the provider's pull request {pr}: {string.Join(",", agent.Results.Select(result => result.PrUrl))}");
            }
        }

        CheckAlways();
    }

    private async Task SettleAsync(string phase)
    {
        for (var i = 0; i < 100; i++)
        {
            while (roundsToCall.Count > 0)
            {
                var round = roundsToCall[0];
                roundsToCall.RemoveAt(0);
                await engine.FinishRoundAsync(round, this, CancellationToken.None);
            }

            if (stored is null || !stored.Launches.Any(launch => launch.IsAwaitingWork))
            {
                return;
            }

            var next = stored.NextWakeAt() ?? time.GetUtcNow();
            if (next > time.GetUtcNow())
            {
                time.Advance(next - time.GetUtcNow());
            }

            await WakeAndFinishAsync();
        }

        Violation($"{phase}: launches still awaiting work after 100 wake-ups: {string.Join(" ", stored!.Launches.Where(l => l.IsAwaitingWork).Select(l => $"{l.Repository}#{l.Generation} {l.Phase} next={l.NextAttemptAt:O}"))}");
    }

    private async Task WakeAndFinishAsync()
    {
        var woken = await WakeWatchedAsync();
        if (woken.Round is { } round)
        {
            Started(round);
            roundsToCall.Remove(round);
            await engine.FinishRoundAsync(round, this, CancellationToken.None);
        }

        if (woken.Poll is { } poll)
        {
            await engine.FinishPollAsync(poll, this, CancellationToken.None);
        }

        CheckAlways();
    }

    /// <summary>The settings, each integration present or removed.</summary>
    private sealed class ToggledCatalog(Integration[] integrations) : IIntegrationCatalog
    {
        private readonly HashSet<long> removed = [];

        public Integration? Find(long integrationId) => removed.Contains(integrationId) ? null : integrations.FirstOrDefault(integration => integration.Id == integrationId);

        /// <returns>Whether it is present now.</returns>
        public bool Toggle(long integrationId) => !removed.Add(integrationId) && removed.Remove(integrationId);

        public void PutAllBack() => removed.Clear();
    }
}

internal enum ProviderMood
{
    Good,
    Flaky,
    Hostile,
}

/// <summary>An agent as the model provider keeps it.</summary>
internal sealed record ModelAgent(string Id, string Repository, string Branch, DateTimeOffset CreatedAt)
{
    public ProviderAgentStatus Status { get; set; } = ProviderAgentStatus.Creating;

    public string? PrUrl { get; set; }

    /// <summary>Reads that answered what it is (not stale, not another agent's, not failed) whose answers the run was given (a poll recorded), with when they were made.</summary>
    public List<(DateTimeOffset At, long Order)> RecordedGoodReads { get; } = [];

    /// <summary>When it last ended (finished, failed or stopped).</summary>
    public DateTimeOffset? EndedAt { get; set; }

    /// <summary>Where its last end falls in the order of events (<see cref="ModelProvider.Tick"/>).</summary>
    public long EndedOrder { get; set; }

    /// <summary>What a read may answer when it is stale: a status the agent had before, with the pull request it had then.</summary>
    public ProviderAgentStatus Previous { get; private set; } = ProviderAgentStatus.Creating;

    public string? PreviousPrUrl { get; private set; }

    /// <summary>Moves it to <paramref name="status"/>, keeping what it was for a stale read.</summary>
    public void MoveTo(ProviderAgentStatus status)
    {
        Previous = Status;
        PreviousPrUrl = PrUrl;
        Status = status;
    }
}

/// <summary>
/// A provider with state: agents by id, on a repository and branch, created at the test clock's time. Each call's
/// behaviour is drawn (never for <see cref="ProviderMood.Good"/>). A lookup finds an agent on the branch only if it was
/// created no earlier than five minutes before the time it is given, as the real providers page back no further.
/// </summary>
internal sealed class ModelProvider(Random random, TimeProvider time) : ICodingAgentProvider
{
    private static readonly TimeSpan ClockSlack = TimeSpan.FromMinutes(5);
    private int sequence;
    private long order;

    /// <summary>The next in the order of events: many steps share one instant of the fake clock.</summary>
    public long Tick() => ++order;

    // Each good read's answer, by reference, until a poll's answers carrying it are recorded.
    private readonly Dictionary<ProviderAgent, (string Id, DateTimeOffset At, long Order)> goodAnswers = new(ReferenceEqualityComparer.Instance);

    /// <summary>A poll's answers recorded: the good reads among them were given to the run.</summary>
    public void Recorded(IEnumerable<ProviderAgent?> reports)
    {
        foreach (var report in reports)
        {
            if (report is not null && goodAnswers.TryGetValue(report, out var read))
            {
                Agents[read.Id].RecordedGoodReads.Add((read.At, read.Order));
            }
        }
    }

    public Dictionary<string, ModelAgent> Agents { get; } = [];

    /// <summary>Whether the report is a read's answer that said what the agent was when read (not stale, not another's).</summary>
    public bool IsGoodRead(ProviderAgent report) => goodAnswers.ContainsKey(report);

    /// <summary>When a good read was made, in the order of events.</summary>
    public long ReadOrder(ProviderAgent report) => goodAnswers[report].Order;

    public ProviderMood Mood { get; set; } = ProviderMood.Flaky;

    public int LaunchCalls { get; private set; }

    /// <summary>Until when a 429's Retry-After asked that a launch on the branch not be sent again.</summary>
    public Dictionary<string, DateTimeOffset> NotBefore { get; } = [];

    /// <summary>Launches sent again before their Retry-After was over.</summary>
    public List<string> EarlyRetries { get; } = [];

    /// <summary>When set, a call may be where the owner's shutdown cuts the round off: it is cancelled there (its request out or not).</summary>
    public CancellationTokenSource? CancelDuring { get; set; }

    private void MaybeCutOff(Action? sentFirst = null)
    {
        if (CancelDuring is { } shutdown && random.Next(2) == 0)
        {
            if (random.Next(2) == 0)
            {
                sentFirst?.Invoke();
            }

            CancelDuring = null;
            shutdown.Cancel();
            throw new OperationCanceledException(shutdown.Token);
        }
    }

    public int Lookups { get; private set; }

    /// <summary>Stops and follow-ups that reached the provider's client.</summary>
    public int CommandCalls { get; private set; }

    public string ProviderName => "cursor_background_agent";

    private bool Misbehaves => Mood switch { ProviderMood.Good => false, ProviderMood.Flaky => random.Next(3) == 0, _ => random.Next(3) != 0 };

    private ModelAgent Create(AgentLaunchRequest request)
    {
        var agent = new ModelAgent($"bc-{++sequence}", request.Repository.FullName, request.BranchName, time.GetUtcNow());
        Agents[agent.Id] = agent;
        return agent;
    }

    public ProviderAgent Report(ModelAgent agent, ProviderAgentStatus? status = null) =>
        new(agent.Id, status ?? agent.Status, BranchName: agent.Branch, PrUrl: agent.PrUrl, CreatedAt: agent.CreatedAt, Repository: agent.Repository);

    private static ProviderResult<T> Failed<T>(string type, bool retryable, bool unknown, TimeSpan? retryAfter = null, bool sent = true, bool attempted = true) =>
        ProviderResult<T>.Failed(new ProviderFailure(type, retryable, unknown, retryAfter, RequestSent: sent, Attempted: attempted));

    /// <summary>
    /// Launches of each branch that were attempted (all but an open circuit's, which sends nothing and spends no attempt),
    /// since a person's trigger last launched its failed launch again (<see cref="EngineModel"/> forgets them then).
    /// </summary>
    public Dictionary<string, int> AttemptedLaunches { get; } = [];

    public Task<ProviderResult<ProviderAgent>> LaunchAsync(AgentLaunchRequest request, CancellationToken cancellationToken)
    {
        LaunchCalls++;
        AttemptedLaunches[request.BranchName] = AttemptedLaunches.GetValueOrDefault(request.BranchName) + 1;
        if (NotBefore.TryGetValue(request.BranchName, out var notBefore) && time.GetUtcNow() < notBefore)
        {
            EarlyRetries.Add($"{request.Repository.FullName} ({request.BranchName}) sent at {time.GetUtcNow():O}, asked to wait until {notBefore:O}");
        }

        MaybeCutOff(() => Create(request));
        if (!Misbehaves)
        {
            return Task.FromResult(ProviderResult<ProviderAgent>.Success(Report(Create(request))));
        }

        switch (random.Next(11))
        {
            case 0:
                return Task.FromResult(Failed<ProviderAgent>(FailureTypes.RateLimited, true, false, TimeSpan.FromSeconds(random.Next(1, 7200))));
            case 1:
                // A 500: it may have been carried out.
                return Task.FromResult(Failed<ProviderAgent>(FailureTypes.ProviderUnavailable, true, true));
            case 2:
                Create(request);
                // Timed out after it was sent, or the connection cut: the agent exists, the answer is lost.
                return Task.FromResult(Failed<ProviderAgent>(FailureTypes.ProviderUnavailable, true, true));
            case 3:
                Create(request);
                // A 200 whose body cannot be read.
                return Task.FromResult(Failed<ProviderAgent>(FailureTypes.InvalidResponse, true, true));
            case 4:
                var created = Create(request);
                // Answered with another agent the provider has (a mix-up): that agent's report, its repository and branch.
                var other = Agents.Values.Where(agent => agent.Id != created.Id).OrderBy(agent => agent.Id).ToList();
                return Task.FromResult(ProviderResult<ProviderAgent>.Success(Report(other.Count > 0 ? other[random.Next(other.Count)] : created)));
            case 5:
                var made = Create(request);
                return Task.FromResult(ProviderResult<ProviderAgent>.Success(Report(made) with { Repository = "evil/elsewhere" }));
            case 6:
                // An open circuit: nothing sent, no attempt spent.
                AttemptedLaunches[request.BranchName]--;
                return Task.FromResult(Failed<ProviderAgent>(FailureTypes.ProviderUnavailable, true, false, sent: false, attempted: false));
            case 7:
                if (random.Next(2) == 0)
                {
                    Create(request);
                }

                throw new InvalidOperationException(SecretText);
            case 8:
                return Task.FromResult(Failed<ProviderAgent>(random.Next(2) == 0 ? FailureTypes.InvalidCredentials : FailureTypes.RepositoryAccess, false, false));
            case 9:
                // A refused connection: tried, nothing sent.
                return Task.FromResult(Failed<ProviderAgent>(FailureTypes.ProviderUnavailable, true, false, sent: false));
            default:
                // A 502 from a gateway after the provider created it.
                Create(request);
                return Task.FromResult(Failed<ProviderAgent>(FailureTypes.ProviderUnavailable, true, true));
        }
    }

    private const string SecretText = EngineModel.SecretText;

    public Task<ProviderResult<ProviderAgent>> GetAgentAsync(string agentId, CancellationToken cancellationToken)
    {
        if (!Agents.TryGetValue(agentId, out var agent))
        {
            return Task.FromResult(Failed<ProviderAgent>(FailureTypes.InvalidRequest, false, false));
        }

        MaybeCutOff();
        if (Misbehaves)
        {
            switch (random.Next(4))
            {
                case 0:
                    return Task.FromResult(Failed<ProviderAgent>(FailureTypes.ProviderUnavailable, true, false));
                case 1:
                    // A stale read (a cache, a replica behind): the status goes backwards.
                    return Task.FromResult(ProviderResult<ProviderAgent>.Success(Report(agent, agent.Previous) with { PrUrl = agent.PreviousPrUrl }));
                case 2:
                    return Task.FromResult(ProviderResult<ProviderAgent>.Success(Report(agent) with { Id = "bc-someone-else" }));
                default:
                    throw new InvalidOperationException(SecretText);
            }
        }

        var answer = Report(agent);
        goodAnswers[answer] = (agent.Id, time.GetUtcNow(), Tick());
        return Task.FromResult(ProviderResult<ProviderAgent>.Success(answer));
    }

    public Task<ProviderResult<ProviderAgent?>> FindAgentByBranchAsync(RepositoryName repository, string branchName, DateTimeOffset? firstSentAt, CancellationToken cancellationToken)
    {
        Lookups++;
        MaybeCutOff();
        if (Misbehaves && random.Next(2) == 0)
        {
            return Task.FromResult(Failed<ProviderAgent?>(FailureTypes.ProviderUnavailable, true, true));
        }

        var since = firstSentAt - ClockSlack;
        var found = Agents.Values.Where(agent => agent.Repository == repository.FullName && agent.Branch == branchName && (since is null || agent.CreatedAt >= since))
            .OrderBy(agent => agent.CreatedAt).FirstOrDefault();
        return Task.FromResult(ProviderResult<ProviderAgent?>.Success(found is null ? null : Report(found)));
    }

    /// <summary>The answer to the last stop or follow-up; null when the call threw.</summary>
    public ProviderResult<bool>? LastCommandAnswer { get; private set; }

    private Task<ProviderResult<bool>> Answered(ProviderResult<bool> answer)
    {
        LastCommandAnswer = answer;
        return Task.FromResult(answer);
    }

    /// <summary>Set while the harness itself stops the agents of a verdict: those stops are not the engine's.</summary>
    public bool HarnessStopping { get; set; }

    /// <summary>The agents stops were sent to other than the harness's own.</summary>
    public List<string> EngineStops { get; } = [];

    public Task<ProviderResult<bool>> StopAsync(string agentId, CancellationToken cancellationToken)
    {
        CommandCalls++;
        if (!HarnessStopping)
        {
            EngineStops.Add(agentId);
        }

        if (!Agents.TryGetValue(agentId, out var agent))
        {
            return Answered(Failed<bool>(FailureTypes.InvalidRequest, false, false));
        }

        var misbehaves = Misbehaves;
        var outcome = misbehaves ? random.Next(4) : 0;
        var atWork = agent.Status is ProviderAgentStatus.Creating or ProviderAgentStatus.Running;
        if (outcome is 0 or 2 && atWork)
        {
            agent.MoveTo(ProviderAgentStatus.Stopped);
            agent.EndedAt = time.GetUtcNow();
            agent.EndedOrder = Tick();
        }

        return Answered(outcome switch
        {
            // Cursor stops only an agent at work: one that ended is refused (a 4xx), not stopped again.
            0 when !atWork => Failed<bool>(FailureTypes.InvalidRequest, false, false),
            0 => ProviderResult<bool>.Success(true),
            1 => Failed<bool>(FailureTypes.ProviderUnavailable, true, false),
            // Carried out, the answer lost; or (3) not carried out, the answer lost all the same.
            _ => Failed<bool>(FailureTypes.ProviderUnavailable, true, true),
        });
    }

    public Task<ProviderResult<bool>> AddFollowupAsync(string agentId, string text, CancellationToken cancellationToken)
    {
        CommandCalls++;
        if (!Agents.TryGetValue(agentId, out var agent))
        {
            return Answered(Failed<bool>(FailureTypes.InvalidRequest, false, false));
        }

        // 2: taken, the answer lost; 4: not taken, the answer lost all the same.
        var outcome = Misbehaves ? random.Next(5) : 0;
        if (outcome is 0 or 2 && agent.Status is not (ProviderAgentStatus.Creating or ProviderAgentStatus.Running))
        {
            // It resumes.
            agent.MoveTo(ProviderAgentStatus.Running);
        }

        if (outcome == 3)
        {
            LastCommandAnswer = null;
            throw new InvalidOperationException(SecretText);
        }

        return Answered(outcome switch
        {
            0 => ProviderResult<bool>.Success(true),
            1 => Failed<bool>(FailureTypes.ProviderUnavailable, true, false),
            _ => Failed<bool>(FailureTypes.ProviderUnavailable, true, true),
        });
    }

    /// <summary>Moves one agent at work on: creating → running → finished (with a pull request, or not) or error.</summary>
    public ModelAgent? Advance()
    {
        var working = Agents.Values.Where(agent => agent.Status is ProviderAgentStatus.Creating or ProviderAgentStatus.Running).OrderBy(agent => agent.Id).ToList();
        if (working.Count == 0)
        {
            return null;
        }

        var agent = working[random.Next(working.Count)];
        agent.MoveTo(agent.Status == ProviderAgentStatus.Creating ? ProviderAgentStatus.Running
            : random.Next(4) == 0 ? ProviderAgentStatus.Error : ProviderAgentStatus.Finished);
        if (agent.Status == ProviderAgentStatus.Finished && random.Next(3) != 0)
        {
            agent.PrUrl = PullRequestOf(agent);
        }

        if (agent.Status != ProviderAgentStatus.Running)
        {
            agent.EndedAt = time.GetUtcNow();
            agent.EndedOrder = Tick();
        }

        return agent;
    }

    public void EndAll()
    {
        foreach (var agent in Agents.Values.Where(agent => agent.Status is ProviderAgentStatus.Creating or ProviderAgentStatus.Running))
        {
            agent.MoveTo(ProviderAgentStatus.Finished);
            agent.PrUrl = PullRequestOf(agent);
            agent.EndedAt = time.GetUtcNow();
            agent.EndedOrder = Tick();
        }
    }

    /// <summary>An agent works on one branch: whenever it opens its pull request, it is the same one.</summary>
    private static string PullRequestOf(ModelAgent agent) => $"https://github.com/{agent.Repository}/pull/{agent.Id[3..]}";
}
