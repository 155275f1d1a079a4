using System.Diagnostics;

namespace HandoffDapr.LoadTest;

/// <summary>Closed-loop load: <c>concurrency</c> workers send requests back to back until the count or the time is used up.</summary>
public static class LoadDriver
{
    public static async Task<PhaseResult> RunAsync(
        string name, int concurrency, int totalRequests, TimeSpan maxDuration, Func<int, Task<bool>> send)
    {
        var latencies = new double[totalRequests];
        var next = -1;
        var errors = 0;
        var clock = Stopwatch.StartNew();
        var allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        var collectionsBefore = (GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2));
        var workers = Enumerable.Range(0, concurrency).Select(async _ =>
        {
            while (clock.Elapsed < maxDuration)
            {
                var index = Interlocked.Increment(ref next);
                if (index >= totalRequests)
                {
                    return;
                }

                var started = Stopwatch.GetTimestamp();
                var ok = await send(index);
                latencies[index] = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                if (!ok)
                {
                    Interlocked.Increment(ref errors);
                }
            }
        });
        await Task.WhenAll(workers);
        clock.Stop();
        var done = Math.Min(totalRequests, next + 1);
        var sorted = latencies.Take(done).Order().ToArray();
        return new PhaseResult(
            name,
            concurrency,
            done,
            errors,
            done / clock.Elapsed.TotalSeconds,
            Percentile(sorted, 0.50),
            Percentile(sorted, 0.95),
            Percentile(sorted, 0.99),
            (GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore) / Math.Max(1, done),
            $"{GC.CollectionCount(0) - collectionsBefore.Item1}/{GC.CollectionCount(1) - collectionsBefore.Item2}/{GC.CollectionCount(2) - collectionsBefore.Item3}")
        {
            Latencies = latencies[..done],
        };
    }

    public static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];
}

/// <param name="AllocatedBytesPerRequest">Allocated in this process (service and load generator together) per request.</param>
public sealed record PhaseResult(
    string Name, int Concurrency, int Requests, int Errors, double Throughput, double P50, double P95, double P99, long AllocatedBytesPerRequest,
    string Collections)
{
    /// <summary>Each request's latency in ms, by its index: a mixed phase splits them by the kind of request.</summary>
    public double[] Latencies { get; init; } = [];
}
