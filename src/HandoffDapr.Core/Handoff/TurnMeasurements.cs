using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace HandoffDapr.Core.Handoff;

/// <summary>
/// What a turn's decisions add to the counters, added once its state is saved: a turn whose save fails, or that is
/// decided again on what another process saved first, counts nothing, so every change is counted once.
/// </summary>
internal sealed class TurnMeasurements
{
    private List<(Counter<long> Counter, TagList Tags)>? pending;

    public void Count(Counter<long> counter, KeyValuePair<string, object?> tag) => (pending ??= []).Add((counter, new TagList { tag }));

    public void Count(Counter<long> counter, KeyValuePair<string, object?> first, KeyValuePair<string, object?> second) =>
        (pending ??= []).Add((counter, new TagList { first, second }));

    /// <summary>Adds what was counted; called once the turn's state is saved.</summary>
    public void Publish()
    {
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
