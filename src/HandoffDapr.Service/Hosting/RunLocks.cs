namespace HandoffDapr.Service.Hosting;

/// <summary>One async lock per run, created on demand and dropped when nobody waits: one call at a time per run, runs in parallel.</summary>
public sealed class RunLocks
{
    private readonly Dictionary<long, Entry> entries = new();

    public async Task<IDisposable> AcquireAsync(long runId, CancellationToken cancellationToken)
    {
        Entry entry;
        lock (entries)
        {
            if (!entries.TryGetValue(runId, out entry!))
            {
                entry = new Entry();
                entries[runId] = entry;
            }

            entry.Users++;
        }

        try
        {
            await entry.Semaphore.WaitAsync(cancellationToken);
        }
        catch
        {
            Leave(runId, entry);
            throw;
        }

        return new Releaser(this, runId, entry);
    }

    /// <summary>The run's lock if nobody holds or awaits it, else null (the caller passes the run over rather than wait).</summary>
    public IDisposable? TryAcquire(long runId)
    {
        lock (entries)
        {
            if (entries.ContainsKey(runId))
            {
                return null;
            }

            var entry = new Entry { Users = 1 };
            entry.Semaphore.Wait(0);
            entries[runId] = entry;
            return new Releaser(this, runId, entry);
        }
    }

    internal int Count
    {
        get
        {
            lock (entries)
            {
                return entries.Count;
            }
        }
    }

    private void Leave(long runId, Entry entry)
    {
        lock (entries)
        {
            if (--entry.Users == 0)
            {
                entries.Remove(runId);
            }
        }
    }

    private sealed class Entry
    {
        public SemaphoreSlim Semaphore { get; } = new(1, 1);
        public int Users { get; set; }
    }

    private sealed class Releaser(RunLocks owner, long runId, Entry entry) : IDisposable
    {
        private int disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) == 0)
            {
                entry.Semaphore.Release();
                owner.Leave(runId, entry);
            }
        }
    }
}
