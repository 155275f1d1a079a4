using System.Collections.Concurrent;
using System.Diagnostics;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Hosting;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Embedded;

/// <summary>
/// Embedded mode's owner of a run: an in-process lock per run, state in SQLite, decisions by the engine. The lock is
/// let go while the provider is called (a launch round, a poll, a stop or follow-up), and taken again to record the answers.
/// As in Dapr mode, a caller who goes away does not stop provider calls already started for it; only shutdown does,
/// after a grace (<see cref="ProviderCallCutoff"/>).
/// </summary>
public sealed class EmbeddedRunOwner(
    HandoffEngine engine,
    SqliteRunStore store,
    RunLocks locks,
    WakeupSignal wakeups,
    IOptions<HandoffOptions> options,
    ProviderCallCutoff cutoff,
    IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions> http,
    TimeProvider timeProvider)
    : IRunOwner, IRoundRecorder
{
    // Runs whose launch round, started by a request (a trigger, an event), may be at the provider from this process;
    // with a count, as two requests for one run may overlap (only one of them starts a round).
    private readonly ConcurrentDictionary<long, int> requestRounds = new();

    /// <summary>
    /// Runs the schedule must not claim now: a launch round a request started is under way here. Their saved deadline is
    /// on the wall clock, which can step forward (NTP, a resumed VM) past it while the calls are still out; a wake-up
    /// then would take the round for a crash, look for its agent before the provider made it, and launch again.
    /// </summary>
    public ICollection<long> RunsWithRequestRounds => requestRounds.Keys;

    /// <summary>
    /// The trace of a completion event whose launches the schedule makes (<see cref="EmbeddedOptions.LaunchEventsInBackground"/>),
    /// with when it was kept: the run's next wake-up here continues it if it makes a launch round, and drops it otherwise
    /// (another process on the file made the launches; a status poll). Kept and taken under the run's lock, only while
    /// something listens to the spans, in memory only, bounded in number and age (five minutes): after a restart the
    /// launches start a trace of their own.
    /// </summary>
    private readonly ConcurrentDictionary<long, (ActivityContext Trace, long KeptAt)> eventTraces = new();

    private const int MaxEventTraces = 10_000;

    /// <summary>How long a kept event trace is continued (on the service's clock, so a test can move past it).</summary>
    internal static readonly TimeSpan EventTraceLifetime = TimeSpan.FromMinutes(5);

    public async Task<TriggerOutcome> TriggerAsync(long runId, HandoffTrigger trigger, CancellationToken cancellationToken)
    {
        using var request = new RequestRound(this, runId);
        var outcome = await WithRunAsync(
            runId, (stored, writer) => engine.TriggerAsync(runId, stored, trigger, writer, cancellationToken), cancellationToken, deleted => deleted.Answer(trigger));
        return outcome.Round is { } round ? outcome with { Round = null, Result = await request.FinishAsync(round) } : outcome;
    }

    /// <summary>
    /// A request's hold on its run for the schedule (<see cref="RunsWithRequestRounds"/>): taken before the run's turn, so
    /// a round is covered from the moment its intent is saved until its answers are. Launches that waited for the round
    /// may be due when it ends: the schedule is told to look then.
    /// </summary>
    private sealed class RequestRound : IDisposable
    {
        private readonly EmbeddedRunOwner owner;
        private readonly long runId;
        private bool started;

        public RequestRound(EmbeddedRunOwner owner, long runId)
        {
            (this.owner, this.runId) = (owner, runId);
            owner.requestRounds.AddOrUpdate(runId, 1, (_, count) => count + 1);
        }

        public Task<HandoffResult> FinishAsync(LaunchRound round)
        {
            started = true;
            return owner.FinishRoundAsync(round);
        }

        public void Dispose() => owner.EndRequestRound(runId, started);
    }

    private void EndRequestRound(long runId, bool roundStarted)
    {
        // Remove only the entry whose count is one, else decrement: another request may come in between.
        while (requestRounds[runId] is var count
            && !(count == 1 ? requestRounds.TryRemove(KeyValuePair.Create(runId, 1)) : requestRounds.TryUpdate(runId, count - 1, count)))
        {
        }

        if (roundStarted)
        {
            wakeups.Notify();
        }
    }

    /// <summary>
    /// From this process's memory of the digests its saves wrote (<see cref="HandledEventMemory"/>), else a read of one
    /// indexed column: the run's row holds the digest while the event's bytes again would change nothing.
    /// </summary>
    public long? FindRepeatedEvent(ReadOnlySpan<byte> eventData, out byte[]? digest)
    {
        digest = store.DigestEvent(eventData);
        try
        {
            return store.FindHandledEvent(digest);
        }
        catch (SqliteException)
        {
            return null; // the long way meets the same trouble and answers for it
        }
    }

    /// <summary>
    /// By default the event is answered once its launches are saved as due; the schedule makes the provider calls
    /// right after (see <see cref="EmbeddedOptions.LaunchEventsInBackground"/>).
    /// </summary>
    public async Task<CompletionOutcome> AcceptCompletedRunAsync(RunSnapshot snapshot, byte[]? eventDigest, CancellationToken cancellationToken)
    {
        var timing = options.Value.Embedded.LaunchEventsInBackground ? LaunchTiming.OnNextWake : LaunchTiming.Now;
        using var request = timing == LaunchTiming.Now ? new RequestRound(this, snapshot.RunId) : null;
        var outcome = await WithRunAsync(
            snapshot.RunId,
            async (stored, writer) =>
            {
                var accepted = await engine.AcceptCompletedRunAsync(stored, snapshot, writer, timing, cancellationToken);
                if (timing == LaunchTiming.OnNextWake && accepted.Result.Retries.Count > 0)
                {
                    KeepEventTrace(snapshot.RunId); // under the run's lock, as the wake-up takes it: neither can come between
                }

                return accepted;
            },
            cancellationToken,
            deleted => deleted.Answer(snapshot),
            eventDigest is null ? null : new HandledEventSource(snapshot, eventDigest));
        if (outcome.Round is { } round)
        {
            return outcome with { Round = null, Result = await request!.FinishAsync(round) };
        }

        if (timing == LaunchTiming.OnNextWake && outcome.Result.Retries.Count > 0)
        {
            wakeups.Notify();
        }

        return outcome;
    }

    public Task<StoredView?> GetStoredViewAsync(long runId, CancellationToken cancellationToken)
    {
        try
        {
            return Task.FromResult(store.LoadView(runId));
        }
        catch (SqliteException exception)
        {
            throw new RunOwnerUnavailableException("The run store could not be read.", exception);
        }
    }

    public async Task<DeletedRun?> FindDeletedAsync(long runId, CancellationToken cancellationToken)
    {
        try
        {
            return (await store.LoadAsync(runId, cancellationToken)).Deleted;
        }
        catch (SqliteException exception)
        {
            throw new RunOwnerUnavailableException("The run store could not be read.", exception);
        }
        catch (UnreadableRunStateException)
        {
            return null; // a row there, if damaged: not deleted
        }
    }

    public async Task<RunHandoffState?> GetAsync(long runId, CancellationToken cancellationToken)
    {
        try
        {
            return (await store.LoadAsync(runId, cancellationToken)).State;
        }
        catch (SqliteException exception)
        {
            throw new RunOwnerUnavailableException("The run store could not be read.", exception);
        }
        catch (UnreadableRunStateException exception)
        {
            throw new RunOwnerUnavailableException("The run's stored state could not be read.", exception) { DamagedState = true };
        }
    }

    public Task<AgentReportStatus> ApplyAgentReportAsync(long runId, AgentReport report, CancellationToken cancellationToken) =>
        WithRunAsync(runId, (stored, writer) => engine.ApplyAgentReportAsync(stored, report, writer), cancellationToken, _ => AgentReportStatus.UnknownAgent);

    /// <summary>Checked against the stored run, sent with the run's lock free, recorded under it.</summary>
    public async Task<AgentCommandOutcome> StopAgentAsync(long runId, string agentId, CancellationToken cancellationToken)
    {
        var state = await LoadForCommandAsync(runId, agentId, cancellationToken);
        return await RunOwnerUnavailableException.WhenStoppedAsync(() => engine.StopAgentAsync(state, agentId, this, cutoff.Token), cutoff.Token);
    }

    public async Task<AgentCommandOutcome> AddFollowupAsync(long runId, AgentFollowup followup, CancellationToken cancellationToken)
    {
        var state = await LoadForCommandAsync(runId, followup.AgentId, cancellationToken);
        return await RunOwnerUnavailableException.WhenStoppedAsync(() => engine.AddFollowupAsync(state, followup, this, cutoff.Token), cutoff.Token);
    }

    /// <summary>
    /// The run a stop or follow-up is checked against. With retention on, a settled run that has the agent is saved as
    /// it is first: the command goes to the provider with the run's lock free, and a sweep (here or in another process on
    /// the file) could otherwise delete the run meanwhile, and the command the provider took would be answered "unknown
    /// agent" and never recorded (nor a follow-up's pull request watched). Saved, the run is changed now: a sweep that
    /// read it before finds another version, and a later one finds it not due for a retention.
    /// </summary>
    private async Task<RunHandoffState?> LoadForCommandAsync(long runId, string agentId, CancellationToken cancellationToken)
    {
        if (options.Value.RunRetention is null)
        {
            return await GetAsync(runId, cancellationToken);
        }

        return await WithRunAsync(
            runId,
            async (stored, writer) =>
            {
                if (RunRetention.MustKeepForCommand(stored, agentId))
                {
                    await writer.SaveAsync(stored, cancellationToken);
                }

                return stored;
            },
            cancellationToken,
            _ => null);
    }

    private void KeepEventTrace(long runId)
    {
        if (Activity.Current is { } trace && HandoffTelemetry.ActivitySource.HasListeners())
        {
            if (eventTraces.Count >= MaxEventTraces)
            {
                eventTraces.Clear(); // those left by runs woken elsewhere; launches still pending lose only their trace
            }

            eventTraces[runId] = (trace.Context, timeProvider.GetTimestamp());
        }
    }

    /// <summary>The kept trace of the run's completion event, if it is recent (<see cref="eventTraces"/>).</summary>
    private ActivityContext TakeEventTrace(long runId) =>
        eventTraces.TryRemove(runId, out var kept) && timeProvider.GetElapsedTime(kept.KeptAt) < EventTraceLifetime ? kept.Trace : default;

    /// <summary>
    /// Runs the due retries, reconciliations and status poll of a run (the schedule's callback). A wake-up whose run has
    /// no row is deleted: nothing is left to do for it.
    /// </summary>
    public async Task WakeAsync(long runId, CancellationToken cancellationToken)
    {
        var (woken, eventTrace) = await WithRunAsync(
            runId,
            async (stored, writer) =>
            {
                // Taken by every wake-up, under the run's lock, and joined only by one that makes a launch round: a trace
                // left by launches made elsewhere is dropped, not given to a later, unrelated round.
                var trace = TakeEventTrace(runId);
                return (stored is null ? null : await engine.WakeAsync(stored, writer, cancellationToken), trace);
            },
            cancellationToken,
            _ => ((WakeOutcome?)null, default(ActivityContext)));
        using var span = HandoffTelemetry.StartWake(runId, woken?.Round is not null ? eventTrace : default);
        // The schedule looks for what became due once this wake-up is over (it works on a run once at a time). Its
        // provider calls, like a request's, stop only when shutdown's grace is over.
        if (woken is not null)
        {
            await engine.FinishWakeAsync(woken, this, cutoff.Token);
        }
        else
        {
            await store.DeleteOrphanWakeupAsync(runId, cancellationToken);
        }
    }

    public Task<HandoffResult> RecordLaunchesAsync(LaunchRoundAnswers answers) =>
        WithRunAsync(answers.Round.RunId, (stored, writer) => engine.CompleteRoundAsync(stored, answers, writer), CancellationToken.None, _ => HandoffResult.Empty);

    public Task<PollVerdict> RecordPollAsync(PollAnswers answers) =>
        WithRunAsync(answers.Round.RunId, (stored, writer) => engine.CompletePollAsync(stored, answers, writer), CancellationToken.None, _ => new PollVerdict([]));

    public Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent) =>
        WithRunAsync(sent.RunId, (stored, writer) => engine.RecordCommandAsync(stored, sent, writer), CancellationToken.None, _ => new AgentCommandOutcome(AgentCommandStatus.UnknownAgent));

    /// <summary>The round's provider calls, with the run's lock free, then its answers recorded under the lock again.</summary>
    private Task<HandoffResult> FinishRoundAsync(LaunchRound round) =>
        RunOwnerUnavailableException.WhenStoppedAsync(() => engine.FinishRoundAsync(round, this, cutoff.Token), cutoff.Token);

    /// <param name="whenDeleted">
    /// The answer for a run retention deleted (<see cref="StoredRun.Deleted"/>): the engine is not asked, as it would
    /// take "no run" for a new one and launch it again.
    /// </param>
    private async Task<T> WithRunAsync<T>(
        long runId, Func<RunHandoffState?, IRunStateWriter, Task<T>> action, CancellationToken cancellationToken, Func<DeletedRun, T> whenDeleted,
        HandledEventSource? completionEvent = null)
    {
        using var held = await locks.AcquireAsync(runId, cancellationToken);
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                var stored = await store.LoadAsync(runId, cancellationToken);
                if (stored.Deleted is { } deleted)
                {
                    return whenDeleted(deleted);
                }

                return await action(stored.State, new Writer(store, engine, http.Value.SerializerOptions, stored, completionEvent));
            }
            catch (RunVersionConflictException) when (attempt < MaxConflictAttempts)
            {
                // Another process on the same file saved the run after it was read here (this process's lock keeps its
                // own callers apart): the engine decides again on what that process saved. Nothing the failed save
                // carried was written (nor counted: the engine counts a turn once it is saved), and provider calls are
                // made outside this turn, so none is repeated.
            }
            catch (SqliteException exception)
            {
                throw new RunOwnerUnavailableException("The run store could not be used.", exception);
            }
            catch (UnreadableRunStateException exception)
            {
                // Left as it is for an operator to look at: deciding on "no run" would start the run over on top of it.
                throw new RunOwnerUnavailableException("The run's stored state could not be read.", exception) { DamagedState = true };
            }
            catch (RunVersionConflictException exception)
            {
                throw new RunOwnerUnavailableException("The run was changed by another process.", exception);
            }
        }
    }

    /// <summary>How many times a turn is tried in all (the first decision included) when another process keeps saving the run first.</summary>
    private const int MaxConflictAttempts = 3;

    /// <summary>A completion event being handled in this turn: its snapshot as read, and the digest of its bytes.</summary>
    private sealed record HandledEventSource(RunSnapshot Snapshot, byte[] Digest);

    /// <summary>
    /// Saves with the version it loaded, so a second process on the same file cannot overwrite blindly. Each save also
    /// says whether a completion event's bytes, delivered again, would change nothing (the engine judges the new state):
    /// the event of this turn if the run now holds its snapshot, else the one the row named while its snapshot is unchanged.
    /// And the run's view goes with it, as the API writes it: a read sends it as stored.
    /// </summary>
    private sealed class Writer(SqliteRunStore store, HandoffEngine engine, JsonSerializerOptions http, StoredRun loaded, HandledEventSource? completionEvent)
        : IRunStateWriter
    {
        private long version = loaded.Version;

        public async Task SaveAsync(RunHandoffState state, CancellationToken cancellationToken) =>
            version = await store.SaveAsync(state, version, cancellationToken, Handled(state), Api.RunHandoffView.Json(state, http));

        private HandledEvent Handled(RunHandoffState state) =>
            state.Snapshot is not { } snapshot || !engine.WouldIgnoreRedelivery(state) ? default
            : completionEvent is not null && RunSnapshot.SameContent(snapshot, completionEvent.Snapshot) ? HandledEvent.Of(completionEvent.Digest)
            : ReferenceEquals(snapshot, loaded.State?.Snapshot) ? HandledEvent.Kept
            : default;
    }
}
