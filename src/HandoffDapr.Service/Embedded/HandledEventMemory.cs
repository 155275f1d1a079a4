using System.Runtime.InteropServices;
using Microsoft.Data.Sqlite;

namespace HandoffDapr.Service.Embedded;

/// <summary>
/// The handled-event digests this process's own saves wrote (<see cref="HandledEvent"/>), by run, so a redelivery is
/// answered without reading the file: that read (SQLite starting and ending a read transaction) was the largest part of
/// a duplicate's cost. It holds what the rows hold, as far as this process's writes go: the writer forgets a run before
/// a write to its row commits, and remembers a digest only after the commit that wrote it, in commit order.
/// </summary>
/// <remarks>
/// Another process's commits on the same file (a hand-over, an operator's edit) it cannot see. The writer asks the file's
/// data version every <see cref="SqliteWriter.IdleCheck"/>, when idle or after a commit (<see cref="Look"/>), and
/// forgets everything when another connection has committed; what it holds is trusted only for <see cref="TrustedFor"/>
/// after the last look (the writer does not look while it waits for another process's lock). Until then, up to that
/// interval, a redelivery may be answered as a no-op from what this process wrote last; the runbook says so. Past its
/// capacity it starts over empty: runs it no longer holds are answered from the file, as before.
/// </remarks>
internal sealed class HandledEventMemory(int capacity, TimeProvider timeProvider)
{
    private readonly Lock gate = new();
    private readonly Dictionary<Digest, long> runByDigest = [];
    private readonly Dictionary<long, Digest> digestByRun = [];
    private long? dataVersion;
    private long lookedAt; // when the last look at the file that read its data version began (a timestamp of timeProvider)
    private SqliteCommand? versionQuery;

    /// <summary>
    /// How long after the writer's last look at the file what is remembered is trusted. The writer looks every
    /// <see cref="SqliteWriter.IdleCheck"/> (<see cref="Look"/>), but not while it waits for another process's write lock
    /// (up to the busy timeout, batch after batch), when that process may commit and lock again.
    /// </summary>
    public static readonly TimeSpan TrustedFor = TimeSpan.FromMilliseconds(100);

    public bool IsOn => capacity > 0;

    /// <summary>The run whose row holds this digest as its handled event, if this process wrote it and nothing has changed the row since.</summary>
    public long? Find(ReadOnlySpan<byte> digest)
    {
        if (!IsOn)
        {
            return null;
        }

        var key = Digest.Of(digest);
        lock (gate)
        {
            return timeProvider.GetElapsedTime(lookedAt) <= TrustedFor && runByDigest.TryGetValue(key, out var runId) ? runId : null;
        }
    }

    /// <summary>Before a write to the run's row: what the row held may not hold after it.</summary>
    public void Forget(long runId)
    {
        if (!IsOn)
        {
            return;
        }

        lock (gate)
        {
            Drop(runId);
        }
    }

    /// <summary>Before a write that keeps the row's digest commits: what memory holds of the run must be the digest the row now holds.</summary>
    public void ForgetUnlessHeld(long runId, byte[]? held)
    {
        if (!IsOn)
        {
            return;
        }

        lock (gate)
        {
            if (digestByRun.TryGetValue(runId, out var remembered) && (held is not { Length: 32 } || remembered != Digest.Of(held)))
            {
                Drop(runId);
            }
        }
    }

    /// <summary>After the commit that wrote <paramref name="digest"/> as the run's handled event.</summary>
    public void Remember(long runId, ReadOnlySpan<byte> digest)
    {
        if (!IsOn)
        {
            return;
        }

        var key = Digest.Of(digest);
        lock (gate)
        {
            if (digestByRun.Count >= capacity && !digestByRun.ContainsKey(runId))
            {
                Clear();
            }

            Drop(runId);
            digestByRun[runId] = key;
            runByDigest[key] = runId;
        }
    }

    /// <summary>
    /// The writer's look at the file: always when it is idle (<paramref name="idle"/>), after a commit only once
    /// <see cref="SqliteWriter.IdleCheck"/> has passed since the last look. A look after every commit doubled the p99 of
    /// a stream of new events and halved their rate in a profile of the load tool (one more read transaction on the
    /// writer's connection per commit); at most one per interval keeps the memory trusted (<see cref="TrustedFor"/>).
    /// </summary>
    public void Look(SqliteConnection writerConnection, bool idle)
    {
        if (idle || timeProvider.GetElapsedTime(lookedAt) >= SqliteWriter.IdleCheck)
        {
            ForgetIfOthersWrote(writerConnection);
        }
    }

    /// <summary>
    /// On the writer's connection, outside a transaction: forgets everything when another connection committed to the
    /// file since the last check (SQLite's <c>data_version</c> changes only for other connections' commits).
    /// </summary>
    public void ForgetIfOthersWrote(SqliteConnection writerConnection)
    {
        if (!IsOn)
        {
            return;
        }

        long? version;
        var started = timeProvider.GetTimestamp();
        try
        {
            // Prepared once: this runs many times a second. Only the writer's thread calls it, on its one connection.
            if (versionQuery?.Connection != writerConnection)
            {
                versionQuery?.Dispose();
                versionQuery = writerConnection.CreateCommand();
                versionQuery.CommandText = "PRAGMA data_version";
                versionQuery.Prepare();
            }

            version = (long)versionQuery.ExecuteScalar()!;
        }
        catch (Exception)
        {
            // Not known: nothing remembered is trusted. Never thrown on: the writer calls this after a commit, whose
            // writes must not be reported failed, and on its idle wait, which must not end its thread.
            // Disposed here rather than left to the finalizer: its prepared statement belongs to the writer's connection.
            version = null;
            versionQuery?.Dispose();
            versionQuery = null;
        }

        lock (gate)
        {
            // Unknown before (the first look, or one after a failed look): another connection may have committed
            // since this process's commits that the memory holds, and the version read now would hide it.
            if (version is null || dataVersion != version)
            {
                Clear();
            }

            dataVersion = version;
            if (version is not null)
            {
                lookedAt = started;
            }
        }
    }

    internal int Count
    {
        get
        {
            lock (gate)
            {
                return digestByRun.Count;
            }
        }
    }

    private void Drop(long runId)
    {
        if (digestByRun.Remove(runId, out var digest))
        {
            runByDigest.Remove(digest);
        }
    }

    private void Clear()
    {
        digestByRun.Clear();
        runByDigest.Clear();
    }

    /// <summary>A SHA-256 digest as a value: no array per entry, so the memory is two flat tables for the collector.</summary>
    private readonly record struct Digest(Int128 First, Int128 Second)
    {
        public static Digest Of(ReadOnlySpan<byte> sha256) => new(MemoryMarshal.Read<Int128>(sha256), MemoryMarshal.Read<Int128>(sha256[16..32]));
    }
}
