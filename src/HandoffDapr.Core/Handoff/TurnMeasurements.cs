using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace HandoffDapr.Core.Handoff;

/// <summary>
/// What a turn's decisions add to the counters and the log, added and written once its state is saved: a turn whose
/// save fails, or that is decided again on what another process saved first, counts and logs nothing, so every change
/// is counted and logged once.
/// </summary>
internal sealed class TurnMeasurements
{
    private List<(Counter<long> Counter, TagList Tags)>? pending;
    private List<Action>? lines;

    /// <summary>A log line about the turn's decisions, written once the turn is saved.</summary>
    public void Log(Action line) => (lines ??= []).Add(line);

    public void Count(Counter<long> counter, KeyValuePair<string, object?> tag) => (pending ??= []).Add((counter, new TagList { tag }));

    public void Count(Counter<long> counter, KeyValuePair<string, object?> first, KeyValuePair<string, object?> second) =>
        (pending ??= []).Add((counter, new TagList { first, second }));

    /// <summary>Writes what was logged and adds what was counted; called once the turn's state is saved.</summary>
    public void Publish()
    {
        foreach (var line in lines ?? [])
        {
            line();
        }

        lines = null;
        if (pending is null)
        {
            return;
        }

        foreach (var (counter, tags) in pending)
        {
            counter.Add(1, tags);
        }

        pending = null;
    }
}
