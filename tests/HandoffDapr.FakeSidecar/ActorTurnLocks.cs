namespace HandoffDapr.FakeSidecar;

/// <summary>
/// Turn-based concurrency: daprd lets one call at a time into an actor id (method calls, reminders, timers,
/// deactivation), calls to different ids run concurrently. Reentrancy is not modelled (it is off by default).
/// </summary>
internal sealed class ActorTurnLocks
{
    private readonly object gate = new();
    private readonly Dictionary<(string Type, string Id), (SemaphoreSlim Lock, int Users)> locks = new();

    public async Task<IDisposable> EnterAsync(string type, string id, CancellationToken ct)
    {
        var key = (type, id);
        SemaphoreSlim sem;
        lock (gate)
        {
            locks.TryGetValue(key, out var entry);
            sem = entry.Lock ?? new SemaphoreSlim(1, 1);
            locks[key] = (sem, entry.Users + 1);
        }

        try
        {
            await sem.WaitAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            Release(key, sem, entered: false);
            throw;
        }

        return new Turn(() => Release(key, sem, entered: true));
    }

    private void Release((string, string) key, SemaphoreSlim sem, bool entered)
    {
        if (entered)
        {
            sem.Release();
        }

        lock (gate)
        {
            var entry = locks[key];
            if (entry.Users == 1)
            {
                locks.Remove(key); // nobody waits: drop it so the table does not grow with every id ever called
            }
            else
            {
                locks[key] = (sem, entry.Users - 1);
            }
        }
    }

    private sealed class Turn(Action release) : IDisposable
    {
        private Action? release = release;

        public void Dispose() => Interlocked.Exchange(ref release, null)?.Invoke();
    }
}
