using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Dapr.Actors.Runtime;
using Dapr.Client;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Hosting;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// Dapr mode's owner of a run: turn-based (one call at a time, reentrancy off), state in the actor state store,
/// wake-ups by reminder. An adapter only: it loads state, calls the engine, saves, and schedules. No turn waits for a
/// provider's launch: a turn saves a round's intent and ends, the calls are made outside it (by the caller's
/// <see cref="ActorRunOwner"/>, or <see cref="BackgroundRounds"/> for a reminder's launches and status poll, and for a
/// turn that saved and then failed at its reminder: see <see cref="TurnAsync{T}"/>), and the answers come back in a new turn.
/// </summary>
public sealed partial class HandoffRunActor(
    ActorHost host,
    HandoffEngine engine,
    DaprClient dapr,
    IOptions<HandoffOptions> options,
    TimeProvider timeProvider,
    BackgroundRounds rounds,
    RunLocks runLocks,
    LocalRecentRuns? recentRuns = null,
    SidecarStarts? sidecarStarts = null,
    ActorStateTtl? stateTtl = null) : Actor(host), IHandoffRunActor, IRemindable
{
    public const string ActorTypeName = "HandoffRunActor";
    public const string WakeReminder = "wake";

    // State keys: the parts are stored apart so the autofix API can read `coding_agents` straight from the store.
    internal const string SnapshotKey = "snapshot";
    internal const string CodingAgentsKey = "coding_agents";
    internal const string LaunchesKey = "launches";
    internal const string TimelineKey = "timeline";
    internal const string PollKey = "poll";
    internal const string ReplacedSnapshotsKey = "replaced_snapshots";
    internal const string WakeAtKey = "wake_at";

    /// <summary>
    /// With <c>Handoff:RunRetention</c> set: the run's <see cref="DeletedRun"/>, written with every save of the settled run
    /// and outliving its other keys by <see cref="RunRetention.TombstoneLifetime"/> (one small JSON object, ~80 bytes). Once
    /// its <c>deleted_at</c> has passed, or the other keys have expired, the run is deleted: a late event meets it. Its
    /// presence also says the run's keys carry a TTL, which a save of a run with something pending takes off again.
    /// </summary>
    internal const string DeletedRunKey = "deleted_run";

    /// <summary>The ids of the run's last recorded stops and follow-ups (see <see cref="RecordCommandOnceAsync"/>).</summary>
    internal const string RecordedCommandsKey = "recorded_commands";

    /// <summary>Enough for daprd's retries of one call with a few other commands to the run made in between.</summary>
    private const int RecordedCommandsKept = 16;

    /// <summary>For tests: the actor over a given state manager (the runtime's own talks to the sidecar).</summary>
    internal HandoffRunActor(
        ActorHost host, HandoffEngine engine, DaprClient dapr, IOptions<HandoffOptions> options, TimeProvider timeProvider, BackgroundRounds rounds,
        IActorStateManager stateManager, RunLocks? runLocks = null)
        : this(host, engine, dapr, options, timeProvider, rounds, runLocks ?? new RunLocks(), (LocalRecentRuns?)null)
    {
        StateManager = stateManager;
    }

    /// <summary>daprd's starts when this actor last read its state: what it has cached was read from the store since then.</summary>
    private long sidecarStartsSeen = sidecarStarts?.Count ?? 0;

    /// <summary>When a turn of this activation last began; null before its first.</summary>
    private DateTimeOffset? lastTurnAt;

    /// <summary>
    /// How long after its last turn an activation still trusts the state it has cached. daprd deactivates the actors of
    /// an app it finds unhealthy without telling the app (it sends no call, the DELETE included, to an unhealthy app) and
    /// places them on another replica, which may change their runs; once the app answers again they come back to the
    /// same activation, cache and all. Being found unhealthy takes <c>dapr.io/app-health-threshold</c> failed probes
    /// <c>dapr.io/app-health-probe-interval</c> apart (3 and 5 s, as k8s/ leaves them): at least 10 s without a turn
    /// here. A turn after a shorter pause keeps the cache (bursts of calls to one run); after a longer one it reads the
    /// run again (a few reads, once per pause).
    /// </summary>
    internal static readonly TimeSpan CacheTrustedFor = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Drops the state this activation has cached when it may be stale: the activation is from before daprd's latest
    /// start, which never deactivated it (see <see cref="SidecarStarts"/>), or its last turn was longer ago than
    /// <see cref="CacheTrustedFor"/>. Either way its run may have been placed on another replica and changed there
    /// meanwhile. Called first thing in a turn, before anything is read or changed (again later in the same turn, it
    /// keeps what the turn has read and changed).
    /// </summary>
    private async Task ForgetStaleStateCacheAsync()
    {
        var now = timeProvider.GetUtcNow();
        var idle = lastTurnAt is { } last && now - last >= CacheTrustedFor;
        lastTurnAt = now;
        if (sidecarStarts?.Count is { } starts && starts != sidecarStartsSeen)
        {
            await StateManager.ClearCacheAsync();
            sidecarStartsSeen = starts;
        }
        else if (idle)
        {
            await StateManager.ClearCacheAsync();
        }
    }

    /// <summary>
    /// The run this actor owns. Only a run id's canonical form names one ("7"; not "007", "+7" or " 7", which an actor
    /// call straight through a sidecar could use): another form would be a second owner of the same run, with state and a
    /// reminder of its own. Such an actor keeps nothing and answers as for a run it does not know.
    /// </summary>
    private long? RunId => WholeIds.TryParseCanonical(Id.GetId(), out var id) ? id : null;

    public Task<TriggerOutcome> TriggerAsync(HandoffTrigger trigger) =>
        RunId is { } runId
            ? TurnAsync((stored, writer) => engine.TriggerAsync(runId, stored, trigger, writer, CancellationToken.None), deleted => deleted.Answer(trigger), (saved, outcome) => StartRound(saved, outcome.Round))
            : Task.FromResult(TriggerOutcome.Rejected(TriggerStatus.UnknownRun));

    public Task<CompletionOutcome> AcceptCompletedRunAsync(RunSnapshot snapshot) =>
        RunId == snapshot.RunId
            ? TurnAsync((stored, writer) => engine.AcceptCompletedRunAsync(stored, snapshot, writer, LaunchTiming.Now, CancellationToken.None), deleted => deleted.Answer(snapshot), (saved, outcome) => StartRound(saved, outcome.Round))
            : Task.FromResult(new CompletionOutcome(CompletionStatus.Rejected, "the event is not this actor's run", HandoffResult.Empty));

    public Task<RunHandoffState?> GetStateAsync() =>
        RunId is null ? Task.FromResult<RunHandoffState?>(null) : Guarded(async () => (await LoadRunAsync()).State);

    public Task<RunHandoffState?> GetStateForCommandAsync(string agent) =>
        RunId is null ? Task.FromResult<RunHandoffState?>(null)
        : TurnAsync<RunHandoffState?>(
            async (stored, writer) =>
            {
                if (options.Value.RunRetention is not null && RunRetention.MustKeepForCommand(stored, agent))
                {
                    await writer.SaveAsync(stored, CancellationToken.None);
                }

                return stored;
            },
            _ => null);

    public Task<DeletedRun?> GetDeletedAsync() =>
        RunId is null ? Task.FromResult<DeletedRun?>(null) : Guarded(async () => (await LoadRunAsync()).Deleted);

    // An actor whose id names no run answers these as the engine does a run it does not know (no state): the turn would
    // fail instead (see TurnAsync), a 500 and an error logged as the store's fault, for a call any app can make. A null or
    // incomplete argument never gets here: ActorCallArguments refuses it with a 400 before the SDK reads it.
    public Task<AgentReportStatus> ApplyAgentReportAsync(AgentReport report) =>
        RunId is null ? Task.FromResult(AgentReportStatus.UnknownAgent)
        : TurnAsync((stored, writer) => engine.ApplyAgentReportAsync(stored, report, writer), _ => AgentReportStatus.UnknownAgent);

    public Task<AgentCommandOutcome> RecordAgentCommandAsync(AgentCommandSent sent) =>
        RunId is null ? Task.FromResult(new AgentCommandOutcome(AgentCommandStatus.UnknownAgent))
        : TurnAsync((stored, writer) => RecordCommandOnceAsync(stored, sent, writer), _ => new AgentCommandOutcome(AgentCommandStatus.UnknownAgent));

    /// <summary>
    /// daprd makes a failed actor call again (the resiliency policy's actor retry), also one whose turn saved the state and
    /// then failed (at the reminder, say): recorded again, one follow-up the provider took once would show twice in the
    /// timeline. The command's id is saved with the state the engine saves, so a repeat finds it and changes nothing.
    /// </summary>
    private async Task<AgentCommandOutcome> RecordCommandOnceAsync(RunHandoffState? stored, AgentCommandSent sent, Writer writer)
    {
        // Nothing is kept for a run or agent the engine does not know (it records nothing for them).
        if (sent.CommandId is not { } id || stored is null || !stored.CodingAgents.TryGetValue(sent.AgentId, out var agent))
        {
            return await engine.RecordCommandAsync(stored, sent, writer);
        }

        var recorded = await StateManager.TryGetStateAsync<List<string>>(RecordedCommandsKey);
        var seen = recorded.HasValue ? recorded.Value ?? [] : [];
        if (seen.Contains(id))
        {
            return new AgentCommandOutcome(AgentCommandStatus.Done, agent);
        }

        // Set before the engine's save, which writes it in the same transaction as the command's entry.
        await StateManager.SetStateAsync(RecordedCommandsKey, seen.TakeLast(RecordedCommandsKept - 1).Append(id).ToList());
        return await engine.RecordCommandAsync(stored, sent, writer);
    }

    public Task<HandoffResult> CompleteLaunchRoundAsync(LaunchRoundAnswers answers) =>
        RunId is null ? Task.FromResult(HandoffResult.Empty)
        : TurnAsync((stored, writer) => engine.CompleteRoundAsync(stored, answers, writer), _ => HandoffResult.Empty);

    public Task<PollVerdict> CompletePollAsync(PollAnswers answers) =>
        RunId is null ? Task.FromResult(new PollVerdict([]))
        : TurnAsync((stored, writer) => engine.CompletePollAsync(stored, answers, writer), _ => new PollVerdict([]), (saved, verdict) => StartStops(saved, verdict));

    /// <summary>A round's calls, made here for a turn whose caller will not get it (see <see cref="TurnAsync{T}"/>).</summary>
    private void StartRound(RunHandoffState saved, LaunchRound? round)
    {
        if (round is not null)
        {
            rounds.Start(new WakeOutcome(saved, round));
        }
    }

    /// <summary>A poll's stops, made here for a turn whose caller will not get its verdict (see <see cref="TurnAsync{T}"/>).</summary>
    private void StartStops(RunHandoffState saved, PollVerdict verdict)
    {
        if (verdict.ToStop.Count > 0)
        {
            rounds.StartStops(saved.RunId, verdict);
        }
    }

    /// <summary>
    /// The SDK writes an exception thrown out of an actor method into its answer, type, message and line, for the
    /// caller's proxy; a state store's error text (a host name, a refused login) would travel with it. The caller is
    /// told only that the turn failed (its proxy throws, and it answers 503 or asks for redelivery); what failed is
    /// logged here.
    /// </summary>
    /// <remarks>
    /// Also one call at a time per run in this process, whatever daprd does: it gives up on a call past its resiliency
    /// timeout (<c>actorCall</c>) and releases the actor's turn while the app's method still runs (the SDK does not stop
    /// it), then makes the call again; a deactivation it ends the same way, and the next call gets a new instance. Two turns
    /// of one run at once would each load, decide and save over the other (and share this instance's state cache, which is
    /// not thread-safe). The repeat waits here for the first to end instead. Dapr.Actors 1.19 holds such a lock per actor
    /// id itself (ActorTurnLock, in its dispatch; 1.18 had none); this one keeps the guarantee whatever the SDK's version.
    /// </remarks>
    private async Task<T> Guarded<T>(Func<Task<T>> call, [System.Runtime.CompilerServices.CallerMemberName] string method = "")
    {
        using var span = RunId is { } spanRun ? HandoffTelemetry.StartActorCall(spanRun, method) : null;
        using var turn = RunId is { } runId ? await runLocks.AcquireAsync(runId, CancellationToken.None) : null;
        try
        {
            return await call();
        }
        catch (Exception exception)
        {
            span?.SetStatus(ActivityStatusCode.Error).SetTag("error.type", exception.GetType().FullName);
            if (exception is ActorTurnFailedException or ActorRunStateDamagedException)
            {
                throw;
            }

            LogTurnFailed(RunId, Id.GetId(), method, exception);
            // A damaged run stays refused until an operator acts: its callers are told so, not to try again shortly.
            throw exception is UnreadableRunStateException ? new ActorRunStateDamagedException() : new ActorTurnFailedException();
        }
    }

    /// <summary>
    /// A turn that changes state: the engine decides and saves through the writer. A turn that saved nothing (a
    /// duplicate, a retry of a call answered 503) still makes sure the run's reminder exists: the turn that saved the
    /// state may have failed to register it, and without it a launch left in flight would never be woken.
    /// </summary>
    /// <param name="handOver">
    /// For an answer that hands its caller calls to make (a launch round; a poll's stops): makes them here, in the
    /// background, when the turn saved and then fails at the reminder. Its caller never gets that answer, and the repeat
    /// of the call (daprd's, or the caller's) finds them under way or decided and hands over none: a round's calls would
    /// wait for its deadline and a lookup, an agent given up on would never be stopped.
    /// </param>
    /// <param name="whenDeleted">The answer for a run retention deleted: the engine is not asked (it would take "no run" for a new one).</param>
    private Task<T> TurnAsync<T>(
        Func<RunHandoffState?, Writer, Task<T>> turn, Func<DeletedRun, T> whenDeleted, Action<RunHandoffState, T>? handOver = null,
        [System.Runtime.CompilerServices.CallerMemberName] string method = "") =>
        Guarded(
            async () =>
            {
                if (RunId is null)
                {
                    // Not a run's actor (see RunId): nothing is loaded or saved for it.
                    throw new InvalidOperationException("This actor owns no run.");
                }

                var (stored, deleted) = await LoadRunAsync();
                if (deleted is not null)
                {
                    return whenDeleted(deleted);
                }

                var writer = new Writer(this, stored);
                var result = await turn(stored, writer);
                await writer.EnsureWakeAsync();
                if (writer.ReminderFailed)
                {
                    handOver?.Invoke(writer.Saved!, result);
                }

                writer.ThrowIfReminderFailed();
                return result;
            },
            method);

    /// <summary>The Scheduler sends empty <paramref name="dueTime"/> and <paramref name="period"/>: only the name is trusted.</summary>
    public async Task ReceiveReminderAsync(string reminderName, byte[] state, TimeSpan dueTime, TimeSpan period)
    {
        if (RunId is not { } runId)
        {
            // Registered for an id that names no run (an earlier release kept one): it is dropped, not run.
            await UnregisterReminderAsync(reminderName);
            return;
        }

        switch (reminderName)
        {
            case WakeReminder:
                await Guarded(() => WakeAsync(runId));
                break;
            default:
                // Any app may register a reminder on this actor type through its sidecar, under any name: logged bounded
                // and printable, so it cannot forge lines in the plain-text console.
                LogUnknownReminder(runId, PrintableText.Bounded(reminderName, MaxLoggedReminderName));
                break;
        }
    }

    private const int MaxLoggedReminderName = 128;

    /// <summary>How long a wake-up that failed (the store out of reach, the state unreadable) waits before it is tried again.</summary>
    internal static readonly TimeSpan FailedWakeRetry = TimeSpan.FromMinutes(1);

    /// <summary>
    /// The <c>wake</c> reminder repeats this often until a turn replaces or removes it. A firing the app never takes (its
    /// process down while daprd still routes the run to it: until the app health check fails, for up to 15 s) is retried
    /// by daprd's scheduler only three times, a second apart; a one-shot reminder would then be spent, and the run would
    /// not wake again until someone called it. Every wake-up that gets through registers the next one or removes it.
    /// </summary>
    internal static readonly TimeSpan WakeRepeat = TimeSpan.FromMinutes(1);

    private async Task<bool> WakeAsync(long runId)
    {
        try
        {
            await ForgetStaleStateCacheAsync();
            // The reminder has done its work: the writer registers the next one if work remains (replacing this one).
            await StateManager.TryRemoveStateAsync(WakeAtKey);
            var (stored, _) = await LoadRunAsync();
            var writer = new Writer(this, stored);
            var woken = stored is null ? null : await engine.WakeAsync(stored, writer, CancellationToken.None);
            if (woken is { Round: not null } or { Poll: not null })
            {
                // Saved as under way by now: the calls run after this turn, and their deadline covers a process that dies first.
                // Also when the turn then fails at the reminder: its repeat would find them under way and start nothing.
                rounds.Start(woken);
            }

            writer.ThrowIfReminderFailed();
            if (writer.Saved?.NextWakeAt() is null)
            {
                // Nothing left to wake for (or no run): the repeating reminder would otherwise fire on for good.
                await UnregisterReminderAsync(WakeReminder);
            }

            return true;
        }
        catch (Exception failure)
        {
            // A failed wake-up is retried by daprd's scheduler only a few times, a second apart (go-etcd-cron's default
            // failure policy: 3 retries), then waits for the reminder's next repeat. Registered again a minute from now
            // (which replaces those quick retries; and a one-shot reminder an earlier release registered), unless this
            // activation is gone from daprd. The failure itself goes on to Guarded.
            if (!IsNoLongerHostedHere(failure))
            {
                try
                {
                    await RegisterReminderAsync(WakeReminder, null, FailedWakeRetry, WakeRepeat);
                }
                catch (Exception exception) when (exception is not OperationCanceledException)
                {
                    LogWakeRetryNotRegistered(runId, exception.GetType().Name);
                }
            }

            throw;
        }
    }

    /// <summary>
    /// daprd refused a save because this activation is gone from it (deactivated mid-turn, or placement moved the run
    /// to another replica: state/state.go checks the actor table, reminders only the actor type). The reminder then
    /// belongs to the run's next activation, which its quick retries and repeat reach: registering it from here would
    /// replace one the new host registered since (a wake-up up to a minute late).
    /// </summary>
    private static bool IsNoLongerHostedHere(Exception failure) =>
        failure is Dapr.DaprApiException { ErrorCode: ActorInstanceMissing };

    /// <summary>The error code of daprd's <c>ErrActorInstanceMissing</c> (pkg/messages/predefined.go).</summary>
    private const string ActorInstanceMissing = "ERR_ACTOR_INSTANCE_MISSING";

    /// <summary>
    /// The run, or its tombstone once retention deleted it: its <c>deleted_at</c> passed (on this clock: the store may
    /// not have expired every key yet, or expired them a moment apart), or its keys expired first (the store's clock ahead).
    /// </summary>
    private async Task<(RunHandoffState? State, DeletedRun? Deleted)> LoadRunAsync()
    {
        await ForgetStaleStateCacheAsync();
        var tombstone = await StateManager.TryGetStateAsync<DeletedRun>(DeletedRunKey);
        if (tombstone is { HasValue: true, Value: { } due } && due.DeletedAt <= timeProvider.GetUtcNow())
        {
            return (null, due);
        }

        var state = await LoadAsync();
        return state is null && tombstone is { HasValue: true, Value: { } expired } ? (null, expired) : (state, null);
    }

    /// <summary>
    /// One of the run's keys; one that is not JSON of its kind (the SDK's reader throws) is damage, said in the service's
    /// own words, not the parser's (which may quote the stored text).
    /// </summary>
    private async Task<ConditionalValue<T>> ReadPartAsync<T>(string key, long runId)
    {
        try
        {
            return await StateManager.TryGetStateAsync<T>(key);
        }
        catch (System.Text.Json.JsonException exception)
        {
            throw new UnreadableRunStateException(runId, $"its {key} is not JSON of its kind", exception);
        }
    }

    /// <summary>The run's keys; its one caller, <see cref="LoadRunAsync"/>, has dropped a cache older than daprd's start.</summary>
    private async Task<RunHandoffState?> LoadAsync()
    {
        var runId = RunId!.Value;
        var snapshot = await ReadPartAsync<RunSnapshot>(SnapshotKey, runId);
        var launches = await ReadPartAsync<List<RepositoryLaunch>>(LaunchesKey, runId);
        if (!snapshot.HasValue && !launches.HasValue)
        {
            return null;
        }

        var agents = await ReadPartAsync<Dictionary<string, CodingAgentState>>(CodingAgentsKey, runId);
        var timeline = await ReadPartAsync<List<TimelineEntry>>(TimelineKey, runId);
        var poll = await ReadPartAsync<PollSchedule>(PollKey, runId);
        var replaced = await ReadPartAsync<List<string>>(ReplacedSnapshotsKey, runId);
        // A part stored as JSON null (written by hand, or by another writer) is refused where reading it as empty would
        // start the run over (its launches, its agents: kept null here, FindDamage refuses them) or skip its group check
        // (its snapshot, refused here: null is also what a run without one reads). A null timeline is read as empty:
        // its history is lost, and with it what the engine decides by (a finish held for a read, an agent's follow-up).
        if (snapshot.HasValue && snapshot.Value is null)
        {
            throw new UnreadableRunStateException(runId, "its snapshot is JSON null");
        }

        var state = new RunHandoffState(
            runId,
            snapshot.HasValue ? snapshot.Value : null,
            agents.HasValue ? agents.Value : new Dictionary<string, CodingAgentState>(),
            launches.HasValue ? launches.Value : [],
            (timeline.HasValue ? timeline.Value : null) ?? [])
        {
            Poll = poll.HasValue ? poll.Value : null,
            ReplacedSnapshots = replaced.HasValue && replaced.Value is { Count: > 0 } list ? list : null,
        };
        return state.FindDamage(runId) is { } damage ? throw new UnreadableRunStateException(runId, damage) : state;
    }

    /// <summary>
    /// Saves the turn's state (<paramref name="wakeAt"/> is its next wake-up); true when the reminder must then change,
    /// which the writer does (see <see cref="Writer"/>).
    /// </summary>
    private async Task<bool> SaveStateAsync(RunHandoffState? previous, RunHandoffState state, DateTimeOffset? wakeAt)
    {
        var expiry = await KeysExpiryOfSaveAsync(state);
        var ttlWrites = new List<Func<Task>>();
        var agentsChanged = await WriteChangedPartsAsync(previous, state, expiry, ttlWrites);
        var deletedAt = await WriteTombstoneAsync(state, expiry);
        // wake_at needs no TTL: a settled run has no wake-up, so its save removes it.
        var reminderToChange = await ForgetWakeIfChangingAsync(wakeAt);
        // The SDK counts a TTL from its SetStateAsync and sends the whole seconds left at the save: the store reads
        // since the sets above (the SDK asks whether each key it does not hold exists) would age NeverExpire's "-1" to
        // "-2" on a slow store, which the stores reading it with ParseTTL refuse (see NeverExpire). Set again, every
        // key now held (no read), each TTL counts from here, and all of the run's keys get the same one.
        foreach (var write in ttlWrites)
        {
            await write();
        }

        await StateManager.SaveStateAsync();
        if (expiry.Ttl == NeverExpire)
        {
            // The SDK keeps each key written with the never-expire TTL in its cache as expired (its expiry time is in
            // the past) and would read it back as absent: read from the store from here on, where it never expires.
            await StateManager.ClearCacheAsync();
        }

        recentRuns?.Remember(state, deletedAt);

        // Published once the state is saved, before the reminder step: if that fails the turn fails, but the agents are
        // stored, and no later turn would see them change and publish them.
        if (agentsChanged && state.CodingAgents.Count > 0)
        {
            await PublishAgentsAsync(state);
        }

        return reminderToChange;
    }

    /// <summary>
    /// Writes the run's parts that changed since <paramref name="previous"/>, each with <paramref name="expiry"/> as
    /// its TTL when there is one; true when its agents changed.
    /// </summary>
    private async Task<bool> WriteChangedPartsAsync(
        RunHandoffState? previous, RunHandoffState state, KeysExpiry expiry, List<Func<Task>> ttlWrites)
    {
        // Only the parts that changed are written; the engine replaces a part whenever it changes it. A save that sets or
        // takes off the keys' TTL writes them all: every key of the run must expire at the same moment, or none.
        var all = expiry.WriteAll;
        Task Set<TValue>(string key, TValue value)
        {
            if (expiry.Ttl is not { } ttl)
            {
                return StateManager.SetStateAsync(key, value);
            }

            ttlWrites.Add(() => StateManager.SetStateAsync(key, value, ttl));
            return StateManager.SetStateAsync(key, value, ttl);
        }

        if ((all || !ReferenceEquals(previous?.Snapshot, state.Snapshot)) && state.Snapshot is not null)
        {
            await Set(SnapshotKey, state.Snapshot);
        }

        var agentsChanged = !ReferenceEquals(previous?.CodingAgents, state.CodingAgents);
        if (all || agentsChanged)
        {
            await Set(CodingAgentsKey, state.CodingAgents.ToDictionary());
        }

        if (all || !ReferenceEquals(previous?.Launches, state.Launches))
        {
            await Set(LaunchesKey, state.Launches.ToList());
        }

        if (all || !ReferenceEquals(previous?.Timeline, state.Timeline))
        {
            await Set(TimelineKey, state.Timeline.ToList());
        }

        if (all || previous?.Poll != state.Poll)
        {
            if (state.Poll is { } poll)
            {
                await Set(PollKey, poll);
            }
            else
            {
                await StateManager.TryRemoveStateAsync(PollKey);
            }
        }

        // Never emptied (a run that replaced a snapshot keeps the last ones, at most eight): nothing to remove.
        if ((all || !ReferenceEquals(previous?.ReplacedSnapshots, state.ReplacedSnapshots))
            && state.ReplacedSnapshots is { } replaced)
        {
            await Set(ReplacedSnapshotsKey, replaced.ToList());
        }

        if (all && await StateManager.TryGetStateAsync<List<string>>(RecordedCommandsKey)
                is { HasValue: true, Value: { } recorded })
        {
            await Set(RecordedCommandsKey, recorded);
        }

        return agentsChanged;
    }

    /// <summary>
    /// The tombstone key: written when the save gives the run's keys a TTL (the moment they are deleted is returned),
    /// removed when it takes their TTL off, left as it is otherwise; null unless written.
    /// </summary>
    private async Task<DateTimeOffset?> WriteTombstoneAsync(RunHandoffState state, KeysExpiry expiry)
    {
        var deletedAt = expiry.Ttl is { } ttl && ttl > TimeSpan.Zero ? timeProvider.GetUtcNow() + ttl : (DateTimeOffset?)null;
        if (deletedAt is { } at)
        {
            var tombstone = new DeletedRun(state.RunId, state.GroupId, at);
            await StateManager.SetStateAsync(DeletedRunKey, tombstone, expiry.Ttl!.Value + RunRetention.TombstoneLifetime);
        }
        else if (expiry.WriteAll)
        {
            await StateManager.TryRemoveStateAsync(DeletedRunKey);
        }

        return deletedAt;
    }

    /// <summary>
    /// How a save writes the run's keys: all of them (to set their TTL or take it off), each with Ttl if any.
    /// </summary>
    private readonly record struct KeysExpiry(bool WriteAll, TimeSpan? Ttl);

    /// <summary>
    /// The TTL every key of the run gets at this save: <c>Handoff:RunRetention</c> when the core says the run is settled;
    /// taken off when it is not (or retention is off) but its keys were given one (the tombstone key says so), by
    /// <see cref="NeverExpire"/> or by writing them without one, as the store needs (<see cref="ActorStateTtl"/>);
    /// otherwise none, and only the keys that changed are written.
    /// </summary>
    private async Task<KeysExpiry> KeysExpiryOfSaveAsync(RunHandoffState state)
    {
        if (options.Value.RunRetention is { } retention && state.IsSettled)
        {
            return new KeysExpiry(true, retention);
        }

        if (!await StateManager.ContainsStateAsync(DeletedRunKey))
        {
            return new KeysExpiry(false, null);
        }

        // Without the service (tests over a state manager of their own): Redis's way, as components/ and k8s/ have it.
        var keptByPlainWrite = stateTtl is null || await stateTtl.KeptByPlainWriteAsync(CancellationToken.None);
        return new KeysExpiry(true, keptByPlainWrite ? NeverExpire : null);
    }

    /// <summary>
    /// Takes a key's TTL off in Redis (other stores: see <see cref="ActorStateTtl"/>). A write without
    /// <c>ttlInSeconds</c> does not: components-contrib's Redis store (the one components/ and k8s/ use) writes a key
    /// with a Lua script that HSETs its hash, which keeps the key's TTL, and then sends "EXPIRE key ttl" only
    /// `if ttl != nil &amp;&amp; *ttl > 0` and "PERSIST key" only `if ttl != nil &amp;&amp; *ttl &lt;= 0`
    /// (state/redis/redis.go, Set and Multi). Dapr's docs (state-store-ttl.md): "When a TTL is not specified, the
    /// default behavior of the state store is retained", and "you can ... indefinitely retain a given database record
    /// ... by setting ttlInSeconds to the value of -1". The SDK (Dapr.Actors 1.19, DaprStateProvider.SaveStateAsync)
    /// sends ttlInSeconds = ceil(seconds to the expiry it computed at SetStateAsync): minus one second gives "-1" for a
    /// save within a second of the set, as SaveStateAsync makes every save that sends it (Redis persists anything
    /// below 0, but the stores that read it with state/utils ParseTTL, the SQL ones and Cosmos DB among them, refuse
    /// anything below -1).
    /// </summary>
    internal static readonly TimeSpan NeverExpire = TimeSpan.FromSeconds(-1);

    /// <summary>
    /// Saves the turn's state, keeping one reminder per run at its next wake-up (repeating: see <see cref="WakeRepeat"/>).
    /// The stored <c>wake_at</c> says which reminder is registered, so a turn that keeps the time skips the sidecar call;
    /// it is trusted only while it is in the future (past it, the firing may have failed). A reminder and the state store
    /// cannot change together, so the change goes in three steps: the state is saved with <c>wake_at</c> removed, the
    /// reminder is changed, then <c>wake_at</c> is set, for the save the actor runtime makes at the end of every turn. A
    /// failure at any step leaves either the old pair, or no <c>wake_at</c>, which makes the next turn register again:
    /// never a stored promise of a reminder that does not exist.
    /// </summary>
    private async Task SaveWithWakeAsync(DateTimeOffset? wakeAt)
    {
        if (await SaveStateForWakeAsync(wakeAt))
        {
            await ChangeReminderAsync(wakeAt);
        }
    }

    /// <summary>The first step: saves the state, with <c>wake_at</c> removed when the reminder must change (then true).</summary>
    private async Task<bool> SaveStateForWakeAsync(DateTimeOffset? wakeAt)
    {
        var reminderToChange = await ForgetWakeIfChangingAsync(wakeAt);
        await StateManager.SaveStateAsync();
        return reminderToChange;
    }

    /// <summary>Removes <c>wake_at</c>, for the save to come, when the reminder must change (then true).</summary>
    private async Task<bool> ForgetWakeIfChangingAsync(DateTimeOffset? wakeAt)
    {
        var registered = await StateManager.TryGetStateAsync<DateTimeOffset>(WakeAtKey);
        if ((registered.HasValue && wakeAt == registered.Value && registered.Value > timeProvider.GetUtcNow())
            || (!registered.HasValue && wakeAt is null))
        {
            return false;
        }

        await StateManager.TryRemoveStateAsync(WakeAtKey);
        return true;
    }

    /// <summary>The other two steps: the reminder changes, then <c>wake_at</c> says so (saved at the turn's end).</summary>
    private async Task ChangeReminderAsync(DateTimeOffset? wakeAt)
    {
        if (wakeAt is { } at)
        {
            var due = at - timeProvider.GetUtcNow();
            await RegisterReminderAsync(WakeReminder, null, due > TimeSpan.Zero ? due : TimeSpan.Zero, WakeRepeat);
            await StateManager.SetStateAsync(WakeAtKey, at);
        }
        else
        {
            await UnregisterReminderAsync(WakeReminder);
        }
    }

    /// <summary>
    /// How long a turn waits for its agents update to be published: the turn holds its run meanwhile, and no resiliency
    /// policy bounds daprd's publish (the broker's client retries on its own). A slower one is logged as failed.
    /// </summary>
    internal static readonly TimeSpan PublishTimeout = TimeSpan.FromSeconds(5);

    private async Task PublishAgentsAsync(RunHandoffState state)
    {
        var settings = options.Value.Dapr;
        using var timeout = new CancellationTokenSource(PublishTimeout, timeProvider);
        try
        {
            await dapr.PublishEventAsync(
                settings.PubSubName,
                settings.UpdatesTopic,
                new CodingAgentsUpdated(state.RunId, state.GroupId, state.CodingAgents),
                timeout.Token);
        }
        catch (Exception exception) when (exception is not OperationCanceledException || timeout.IsCancellationRequested)
        {
            // The state is saved; the update is also readable by GET. A lost notification is logged, not fatal.
            LogPublishFailed(state.RunId, exception);
        }
    }

    /// <summary>
    /// The engine's writer for one turn. A reminder that could not be changed once the state was saved fails the turn (so
    /// that daprd's retry of the call, or the caller's, registers it: see <see cref="EnsureWakeAsync"/>), but only once the
    /// engine has finished with the turn: thrown out of the save, it would cut short what the engine does once its state
    /// is saved (the log lines and counters of its decisions, written then and only then), and the repeat finds those
    /// decisions saved and makes none of them again.
    /// </summary>
    private sealed class Writer(HandoffRunActor actor, RunHandoffState? loaded) : IRunStateWriter
    {
        private RunHandoffState? previous = loaded;
        private bool saved;
        private ExceptionDispatchInfo? reminderFailure;

        public async Task SaveAsync(RunHandoffState state, CancellationToken cancellationToken)
        {
            var wakeAt = state.NextWakeAt();
            var reminderToChange = await actor.SaveStateAsync(previous, state, wakeAt);
            previous = state;
            saved = true;
            reminderFailure = null;
            if (reminderToChange)
            {
                try
                {
                    await actor.ChangeReminderAsync(wakeAt);
                }
                catch (Exception exception)
                {
                    reminderFailure = ExceptionDispatchInfo.Capture(exception);
                }
            }
        }

        /// <summary>The state saved last in this turn, if it saved.</summary>
        public RunHandoffState? Saved => saved ? previous : null;

        /// <summary>The turn saved its state, then could not change the reminder.</summary>
        public bool ReminderFailed => reminderFailure is not null;

        /// <summary>Fails the turn, once the engine is done with it, if its saved state's reminder could not be changed.</summary>
        public void ThrowIfReminderFailed() => reminderFailure?.Throw();

        /// <summary>For a turn that saved nothing: the stored run's reminder is checked (one state read) and repaired.</summary>
        public async Task EnsureWakeAsync()
        {
            if (!saved && previous is { } state)
            {
                await actor.SaveWithWakeAsync(state.NextWakeAt());
            }
        }
    }

    // RunId, as on every line about a run (null for an actor whose id names no run); ActorId as the actor was called.
    [LoggerMessage(EventId = 4004, EventName = "ActorTurnFailed", Level = LogLevel.Error,
        Message = "Run {RunId} (actor {ActorId}): {Method} failed; its caller is told the turn failed, without the reason")]
    private partial void LogTurnFailed(long? runId, string actorId, string method, Exception exception);

    [LoggerMessage(EventId = 4005, EventName = "WakeRetryNotRegistered", Level = LogLevel.Error,
        Message = "Run {RunId}: a failed wake-up's retry could not be registered ({ExceptionType}); daprd retries the wake-up a few times, a second apart, and after that at the reminder's next repeat")]
    private partial void LogWakeRetryNotRegistered(long runId, string exceptionType);

    [LoggerMessage(EventId = 4001, EventName = "UnknownReminder", Level = LogLevel.Warning, Message = "Run {RunId}: ignored unknown reminder {ReminderName}")]
    private partial void LogUnknownReminder(long runId, string reminderName);

    [LoggerMessage(EventId = 4002, EventName = "AgentsUpdatePublishFailed", Level = LogLevel.Warning, Message = "Run {RunId}: coding_agents update could not be published")]
    private partial void LogPublishFailed(long runId, Exception exception);
}

/// <summary>Published on the updates topic whenever a run's <c>coding_agents</c> change.</summary>
public sealed record CodingAgentsUpdated(long RunId, long? GroupId, IReadOnlyDictionary<string, CodingAgentState> CodingAgents);

/// <summary>What leaves an actor whose turn failed: no more than that (see <see cref="HandoffRunActor"/>'s guard).</summary>
public sealed class ActorTurnFailedException() : Exception("The run's turn failed.");

/// <summary>
/// What a turn on a run whose stored state cannot be used answers (its reason is logged by the actor, in its own words):
/// the caller's owner tells its caller the run is refused until an operator restores or deletes it.
/// </summary>
public sealed class ActorRunStateDamagedException() : Exception("The run's stored state cannot be used.");
