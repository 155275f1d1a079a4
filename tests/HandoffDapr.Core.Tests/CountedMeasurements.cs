using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using HandoffDapr.Core.Handoff;

namespace HandoffDapr.Core.Tests;

/// <summary>
/// Counts what the handoff's counters receive from the test that created it (and the calls it awaits), not from tests
/// running beside it: the meter is process-wide, so measurements are taken only in this test's execution context.
/// </summary>
internal sealed class CountedMeasurements : IDisposable
{
    private static readonly AsyncLocal<CountedMeasurements?> Current = new();
    private readonly MeterListener listener = new();
    private readonly ConcurrentDictionary<string, long> totals = new();
    private readonly ConcurrentDictionary<string, ConcurrentQueue<double>> recorded = new();

    public CountedMeasurements()
    {
        // Set here, in the test's own flow (a synchronous call does not restore the caller's context).
        Current.Value = this;
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == HandoffTelemetry.Name)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            if (ReferenceEquals(Current.Value, this))
            {
                totals.AddOrUpdate(instrument.Name, value, (_, total) => total + value);
                foreach (var tag in tags)
                {
                    totals.AddOrUpdate(Key(instrument.Name, tag.Key, tag.Value), value, (_, total) => total + value);
                }
            }
        });
        listener.SetMeasurementEventCallback<double>((instrument, value, _, _) =>
        {
            if (ReferenceEquals(Current.Value, this))
            {
                recorded.GetOrAdd(instrument.Name, _ => new ConcurrentQueue<double>()).Enqueue(value);
            }
        });
        listener.Start();
    }

    /// <summary>Every value this test's flow recorded on the named histogram of doubles, in order.</summary>
    public IReadOnlyList<double> Recorded(string histogram) => recorded.TryGetValue(histogram, out var values) ? values.ToList() : [];

    /// <summary>The sum this test's flow added to the named counter.</summary>
    public long this[string counter] => totals.GetValueOrDefault(counter);

    /// <summary>The sum this test's flow added to the named counter with the tag <paramref name="tag"/> set to <paramref name="value"/>.</summary>
    public long this[string counter, string tag, string value] => totals.GetValueOrDefault(Key(counter, tag, value));

    private static string Key(string counter, string tag, object? value) => $"{counter}|{tag}={value}";

    public void Dispose()
    {
        listener.Dispose();
        Current.Value = null;
    }
}
