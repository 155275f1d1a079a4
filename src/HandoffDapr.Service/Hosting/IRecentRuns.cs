using System.Collections.Concurrent;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;

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
public sealed class LocalRecentRuns(TimeProvider? clock = null) : IRecentRuns
{
    private readonly TimeProvider clock = clock ?? TimeProvider.System;

    /// <summary>Above the largest page <c>GET /runs</c> gives (200), so a full page survives runs deleted meanwhile.</summary>
    public const int Capacity = 500;

    /// <summary>How far past <see cref="Capacity"/> the table may grow before the oldest are dropped, so that the sort
    /// eviction needs runs once per this many saves instead of on every save once full.</summary>
    public const int EvictionSlack = Capacity / 4;

    private readonly ConcurrentDictionary<long, (RunHandoffState State, long SavedAt, DateTimeOffset? DeletedAt)> runs = new();
    private long saves;

    /// <summary>Ordered by when it was saved here (a counter), not by its timeline: a run may be saved with none.</summary>
    /// <param name="deletedAt">When retention deletes the run as saved (its keys' TTL runs out): not listed from then on.</param>
    public void Remember(RunHandoffState state, DateTimeOffset? deletedAt = null)
    {
        runs[state.RunId] = (AsViewed(state), Interlocked.Increment(ref saves), deletedAt);
        if (runs.Count > Capacity + EvictionSlack)
        {
            foreach (var stale in runs.Values.OrderBy(run => run.SavedAt).Take(runs.Count - Capacity))
            {
                // Only the entry as it was sorted: the run saved again meanwhile (on another actor's thread) is newest.
                runs.TryRemove(KeyValuePair.Create(stale.State.RunId, stale));
            }
        }
    }

    /// <summary>
    /// The run as its view reads it: the snapshot is cut to its group and its repositories (the view's <c>refused</c> is
    /// derived from them: without them every run read "no_repositories"), and the launches lose their instruction. Kept
    /// whole, the table would hold every listed run's snapshot (up to <c>Handoff:MaxRequestBodyBytes</c> of JSON each,
    /// twice that in memory, its artifacts most of it) for as long as the replica runs, long after its actor let go of it:
    /// over a GiB at capacity, for a pod given 512 MiB; and each launch's instruction (up to 4096 characters, a string per
    /// launch once read from the store): over 200 MB for runs of 50 repositories.
    /// </summary>
    private static RunHandoffState AsViewed(RunHandoffState state) => state with
    {
        Snapshot = state.Snapshot is { } snapshot
            ? new RunSnapshot(snapshot.RunId, Group: new RunGroup(snapshot.GroupId), Preferences: new HandoffPreferences(snapshot.Preferences?.Repositories))
            : null,
        Launches = state.Launches.Any(launch => launch.Instruction is not null)
            ? state.Launches.Select(launch => launch with { Instruction = null }).ToList()
            : state.Launches,
    };

    public Task<IReadOnlyList<RunHandoffState>> ListAsync(int limit, CancellationToken cancellationToken)
    {
        var now = clock.GetUtcNow();
        foreach (var deleted in runs.Values.Where(run => run.DeletedAt <= now).ToList())
        {
            // Only the entry as it was seen deleted: a save since (the run made anew) stays.
            runs.TryRemove(KeyValuePair.Create(deleted.State.RunId, deleted));
        }

        return Task.FromResult<IReadOnlyList<RunHandoffState>>(runs.Values.OrderByDescending(run => run.SavedAt).Take(limit).Select(run => run.State).ToList());
    }
}
