using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Tests;

/// <summary>A test writer that keeps every state it was given, the last one being the run's stored state.</summary>
internal interface IRecordingWriter : IRunStateWriter
{
    List<RunHandoffState> Saved { get; }
}

/// <summary>
/// The owners' way through a launch round, as both hosts take it (without a lock, which these tests do not need): the
/// engine's call, the round's provider calls, then its answers recorded against the state saved last.
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

    /// <returns>The state saved last: after the round's answers when the wake-up started one.</returns>
    public static async Task<RunHandoffState> WakeAndFinishAsync(this HandoffEngine engine, RunHandoffState state, IRecordingWriter writer, CancellationToken cancellationToken)
    {
        var woken = await engine.WakeAsync(state, writer, cancellationToken);
        if (woken.Round is not { } round)
        {
            return woken.State;
        }

        await engine.FinishAsync(round, writer, cancellationToken);
        return writer.Saved.Last();
    }

    public static Task<HandoffResult> FinishAsync(this HandoffEngine engine, LaunchRound round, IRecordingWriter writer, CancellationToken cancellationToken) =>
        engine.FinishRoundAsync(round, answers => engine.CompleteRoundAsync(writer.Saved.Last(), answers, writer), cancellationToken);
}
