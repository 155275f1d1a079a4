using System.Collections.Concurrent;
using HandoffDapr.Core.Handoff;

namespace HandoffDapr.Service.Hosting;

/// <summary>The most recently changed runs, for the status page.</summary>
public interface IRecentRuns
{
    Task<IReadOnlyList<RunHandoffState>> ListAsync(int limit, CancellationToken cancellationToken);
}

/// <summary>
/// Dapr mode: actors cannot be enumerated, so each replica remembers the runs its own actors saved, newest
/// first, bounded. The status page of one replica shows that replica's runs.
/// </summary>
public sealed class LocalRecentRuns : IRecentRuns
{
    public const int Capacity = 500;
    private readonly ConcurrentDictionary<long, RunHandoffState> runs = new();

    public void Remember(RunHandoffState state)
    {
        runs[state.RunId] = state;
        if (runs.Count > Capacity)
        {
            foreach (var stale in runs.Values.OrderBy(LastChange).Take(runs.Count - Capacity))
            {
                runs.TryRemove(stale.RunId, out _);
            }
        }
    }

    public Task<IReadOnlyList<RunHandoffState>> ListAsync(int limit, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<RunHandoffState>>(runs.Values.OrderByDescending(LastChange).Take(limit).ToList());

    private static DateTimeOffset LastChange(RunHandoffState state) =>
        state.Timeline.Count > 0 ? state.Timeline[^1].At : DateTimeOffset.MinValue;
}
