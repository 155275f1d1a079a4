using Microsoft.Data.Sqlite;

namespace HandoffDapr.Service.Embedded;

/// <summary>
/// Copies the write-ahead log back into the database file on its own thread and connection, so that commits do not
/// wait for it. SQLite's automatic checkpoint runs inside the commit that crosses its threshold: that commit, and every
/// write queued behind it on the writer thread, waited for the copy and its fsyncs (tens of milliseconds, hundreds on a
/// busy disk). The writer, whose automatic checkpoint is off, reports each commit; every
/// <see cref="WritesPerCheckpoint"/> writes a PASSIVE checkpoint runs here, beside the writer and the readers.
/// <para>
/// SQLite starts the log over only when a write begins with every frame copied, which a checkpoint running beside a
/// busy writer rarely leaves it: the log would grow for as long as writes keep coming. So once it holds
/// <see cref="CatchUpFrames"/>, the writer copies what is left itself, between two commits: a few frames, as the bulk
/// is copied already here.
/// </para>
/// </summary>
internal sealed class SqliteCheckpointer : IDisposable
{
    /// <summary>A save writes about five pages (the row, its overflow, the indexes, the wake-up): near SQLite's default of 1000.</summary>
    internal const int WritesPerCheckpoint = 200;

    /// <summary>
    /// How many writes a save of <paramref name="bytes"/> (its row and view) counts as: one, or for a larger row the
    /// five-page writes it fills. Counted as one, 200 saves of runs near the request limit (a 1 MiB snapshot) put over
    /// 200 MB in the log before the first checkpoint, and the file keeps that size.
    /// </summary>
    internal static int WeightOf(long bytes) => (int)Math.Min(WritesPerCheckpoint, 1 + (bytes / (5 * 4096)));

    /// <summary>About 16 MB of log at 4 KB pages.</summary>
    internal const int CatchUpFrames = 4096;

    private readonly SqliteConnection connection;
    private readonly Action<Exception> failed;
    private readonly AutoResetEvent due = new(false);
    private readonly Thread thread;
    private volatile bool stopping;
    private volatile bool catchUpDue;
    private int disposed;
    private int writesSinceRequest;
    private long checkpoints;
    private long catchUps;
    private long busyCatchUps;

    public SqliteCheckpointer(SqliteConnection connection, Action<Exception> failed)
    {
        this.connection = connection;
        this.failed = failed;
        thread = new Thread(Loop) { IsBackground = true, Name = "sqlite-checkpointer" };
        thread.Start();
    }

    /// <summary>Checkpoints run so far on this thread, by the writer to catch up, and catch-ups another checkpoint made busy.</summary>
    public (long Background, long CatchUps, long BusyCatchUps) Checkpoints =>
        (Interlocked.Read(ref checkpoints), Interlocked.Read(ref catchUps), Interlocked.Read(ref busyCatchUps));

    /// <summary>Called by the writer thread after each commit, outside any transaction, with the writes it carried (by weight: <see cref="WeightOf"/>).</summary>
    public void Committed(int writes, SqliteConnection writerConnection)
    {
        if (stopping)
        {
            return; // a write the writer finished after its shutdown wait ran out: the next start copies it
        }

        if (catchUpDue)
        {
            // Cleared only once done: until then the background thread's checkpoints stand aside (see Loop).
            if (Checkpoint(writerConnection, ref catchUps).Busy)
            {
                Interlocked.Increment(ref busyCatchUps);
            }

            catchUpDue = false;
        }

        writesSinceRequest += writes;
        if (writesSinceRequest >= WritesPerCheckpoint)
        {
            writesSinceRequest = 0;
            due.Set();
        }
    }

    private void Loop()
    {
        using var owned = connection;
        while (true)
        {
            due.WaitOne();
            if (stopping)
            {
                return;
            }

            // A catch-up is due, or under way on the writer: a checkpoint here beside it would hold the checkpoint lock
            // and make the catch-up busy, copying nothing. On a loaded machine this thread's checkpoints, behind the
            // writes, ran into catch-up after catch-up, and the log did not start over.
            if (catchUpDue)
            {
                continue;
            }

            if (Checkpoint(connection, ref checkpoints).Frames >= CatchUpFrames)
            {
                catchUpDue = true;
            }
        }
    }

    /// <summary>
    /// A PASSIVE checkpoint (it never waits for a lock): whether another checkpoint held the lock, and the frames the
    /// log held (0 if it failed).
    /// </summary>
    private (bool Busy, long Frames) Checkpoint(SqliteConnection on, ref long count)
    {
        try
        {
            using var command = on.CreateCommand();
            command.CommandText = "PRAGMA wal_checkpoint(PASSIVE)";
            using var reader = command.ExecuteReader();
            Interlocked.Increment(ref count);
            // busy (another checkpoint held the lock), frames in the log, frames copied.
            return reader.Read() ? (reader.GetInt64(0) != 0, reader.GetInt64(1)) : (false, 0);
        }
        catch (Exception exception)
        {
            // The log only grows until a later checkpoint succeeds: writes go on.
            failed(exception);
            return (false, 0);
        }
    }

    /// <summary>Stops after the checkpoint under way, if any; what is left is copied by a later one or when the file is next opened.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) == 1)
        {
            return;
        }

        stopping = true;
        due.Set();
        if (thread.Join(TimeSpan.FromSeconds(10)))
        {
            due.Dispose();
        }
    }
}
