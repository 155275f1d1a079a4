using System.Collections.Concurrent;
using HandoffDapr.Core.Handoff;

namespace HandoffDapr.Service.Hosting;

/// <summary>The most recently changed runs, for the status page.</summary>
public interface IRecentRuns
{
    Task<IReadOnlyList<RunHandoffState>> ListAsync(int limit, CancellationToken cancellationToken);
}

/// <summary>
/// Dapr mode: actors cannot be enumerated, so each replica remembers the runs its own actors saved, most recently
/// saved first, bounded. The status page of one replica shows that replica's runs.
/// </summary>
public sealed class LocalRecentRuns : IRecentRuns
{
    public const int Capacity = 500;

    /// <summary>How far past <see cref="Capacity"/> the table may grow before the oldest are dropped, so that the sort
    /// eviction needs runs once per this many saves instead of on every save once full.</summary>
    public const int EvictionSlack = Capacity / 4;

    private readonly ConcurrentDictionary<long, (RunHandoffState State, long SavedAt)> runs = new();
    private long saves;

    /// <summary>Ordered by when it was saved here (a counter), not by its timeline: a run may be saved with none.</summary>
    public void Remember(RunHandoffState state)
    {
        runs[state.RunId] = (state, Interlocked.Increment(ref saves));
        if (runs.Count > Capacity + EvictionSlack)
        {
            foreach (var stale in runs.Values.OrderBy(run => run.SavedAt).Take(runs.Count - Capacity))
            {
                runs.TryRemove(stale.State.RunId, out _);
            }
        }
    }

    public Task<IReadOnlyList<RunHandoffState>> ListAsync(int limit, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<RunHandoffState>>(runs.Values.OrderByDescending(run => run.SavedAt).Take(limit).Select(run => run.State).ToList());
}
