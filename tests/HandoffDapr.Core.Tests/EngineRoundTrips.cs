using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Tests;

/// <summary>A test writer that keeps every state it was given; a run's stored state is the last one saved for it.</summary>
internal interface IRecordingWriter : IRunStateWriter
{
    List<RunHandoffState> Saved { get; }
}

/// <summary>
/// The owners' way through a launch round or poll, as both hosts take it (without a lock, which these tests do not
/// need): the engine's call, the provider calls, then the answers recorded against the run's state saved last.
/// </summary>
internal static class EngineRoundTrips
{
    public static async Task<TriggerOutcome> TriggerAndFinishAsync(
        this HandoffEngine engine, long runId, RunHandoffState? stored, HandoffTrigger trigger, IRecordingWriter writer, CancellationToken cancellationToken)
    {
        var outcome = await engine.TriggerAsync(runId, stored, trigger, writer, cancellationToken);
        return outcome.Round is { } round ? outcome with { Round = null, Result = await engine.FinishAsync(round, writer, cancellationToken) } : outcome;
    }

    public static async Task<CompletionOutcome> AcceptAndFinishAsync(
        this HandoffEngine engine, RunHandoffState? stored, RunSnapshot snapshot, IRecordingWriter writer, LaunchTiming timing, CancellationToken cancellationToken)
    {
        var outcome = await engine.AcceptCompletedRunAsync(stored, snapshot, writer, timing, cancellationToken);
        return outcome.Round is { } round ? outcome with { Round = null, Result = await engine.FinishAsync(round, writer, cancellationToken) } : outcome;
    }

    /// <returns>The run's state saved last: after the round's and the poll's answers, when the wake-up started them.</returns>
    public static async Task<RunHandoffState> WakeAndFinishAsync(this HandoffEngine engine, RunHandoffState state, IRecordingWriter writer, CancellationToken cancellationToken)
    {
        var woken = await engine.WakeAsync(state, writer, cancellationToken);
        await engine.FinishWakeAsync(woken, new Recorder(engine, writer), cancellationToken);
        return writer.LastOf(state.RunId);
    }

    public static Task<HandoffResult> FinishAsync(this HandoffEngine engine, LaunchRound round, IRecordingWriter writer, CancellationToken cancellationToken) =>
        engine.FinishRoundAsync(round, new Recorder(engine, writer), cancellationToken);

    public static RunHandoffState LastOf(this IRecordingWriter writer, long runId)
    {
        lock (writer.Saved)
        {
            return writer.Saved.Last(saved => saved.RunId == runId);
        }
    }

    /// <summary>
    /// Records answers against the run's state saved last, through the same writer, one at a time: a wake-up's round
    /// and poll finish side by side, and each must see what the other recorded, as under an owner's lock or turn.
    /// </summary>
    internal sealed class Recorder(HandoffEngine engine, IRecordingWriter writer) : IRoundRecorder
    {
        private readonly SemaphoreSlim turn = new(1, 1);

        public Task<HandoffResult> RecordLaunchesAsync(LaunchRoundAnswers answers) =>
            InTurnAsync(() => engine.CompleteRoundAsync(writer.LastOf(answers.Round.RunId), answers, writer));

        public Task<PollVerdict> RecordPollAsync(PollAnswers answers) =>
            InTurnAsync(() => engine.CompletePollAsync(writer.LastOf(answers.Round.RunId), answers, writer));

        public Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent) =>
            InTurnAsync(() => engine.RecordCommandAsync(writer.LastOf(sent.RunId), sent, writer));

        private async Task<T> InTurnAsync<T>(Func<Task<T>> record)
        {
            await turn.WaitAsync();
            try
            {
                return await record();
            }
            finally
            {
                turn.Release();
            }
        }
    }
}

/// <summary>A catalog of one integration.</summary>
internal sealed class SingleIntegrationCatalog(Integration integration) : IIntegrationCatalog
{
    public Integration? Find(long integrationId) => integrationId == integration.Id ? integration : null;
}

/// <summary>Keeps every state saved, in order, from any thread.</summary>
internal sealed class RecordingWriter : IRecordingWriter
{
    public List<RunHandoffState> Saved { get; } = [];

    public Task SaveAsync(RunHandoffState state, CancellationToken cancellationToken)
    {
        lock (Saved)
        {
            Saved.Add(state);
        }

        return Task.CompletedTask;
    }
}
