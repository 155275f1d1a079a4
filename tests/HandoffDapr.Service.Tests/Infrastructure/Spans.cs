using System.Diagnostics;
using HandoffDapr.Core.Handoff;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>
/// Records the service's spans (<see cref="HandoffTelemetry.ActivitySource"/>). The listener is process-wide: a test
/// that runs beside others reads only the spans of run ids of its own.
/// </summary>
public static class Spans
{
    /// <summary>Adds every span of the service's source to <paramref name="spans"/> as it stops, from any thread, until disposed.</summary>
    public static ActivityListener Record(List<Activity> spans)
    {
        var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == HandoffTelemetry.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activity => { lock (spans) { spans.Add(activity); } },
        };
        ActivitySource.AddActivityListener(listener);
        return listener;
    }

    /// <summary>The recorded spans of one name for one run.</summary>
    public static List<Activity> Of(List<Activity> spans, string name, long runId)
    {
        lock (spans)
        {
            return spans.Where(span => span.OperationName == name && Equals(span.GetTagItem("handoff.run_id"), runId)).ToList();
        }
    }
}
