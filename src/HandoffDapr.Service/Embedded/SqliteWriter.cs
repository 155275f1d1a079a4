using System.Collections.Concurrent;
using Microsoft.Data.Sqlite;

namespace HandoffDapr.Service.Embedded;

/// <summary>
/// Every write of this process, made by one thread on one connection. SQLite admits one writer at a time
/// anyway; what this adds is group commit: writes that queue up while a transaction commits go into the next
/// transaction together, so a burst costs one commit, not one each. A queued write is always made and its caller
/// always learns how it ended: no cancellation abandons one half-way, so nobody is left guessing whether it happened.
/// </summary>
internal sealed class SqliteWriter : IDisposable
{
    private const int MaxBatch = 256;

    /// <summary>Longer than one write's busy timeout (30 s), so a write queued before shutdown is not cut off by it.</summary>
    private static readonly TimeSpan DefaultShutdownWait = TimeSpan.FromSeconds(40);
    private readonly TimeSpan shutdownWait;
    private readonly BlockingCollection<Operation> queue = new();
    private readonly SqliteConnection connection;
    private readonly Thread thread;
    private readonly Action<int, SqliteConnection>? committed;
    private readonly Action<SqliteConnection, bool>? watch;
    private readonly DataFileWatch? dataFile;
    private long transactions;

    /// <summary>
    /// How often the writer looks at the file for other connections' commits while no write comes: twice within
    /// <see cref="HandledEventMemory.TrustedFor"/>, so an idle writer's memory stays trusted.
    /// </summary>
    public static readonly TimeSpan IdleCheck = HandledEventMemory.TrustedFor / 2;

    /// <summary>Transactions committed so far (a batch of queued writes is one).</summary>
    public long Transactions => Interlocked.Read(ref transactions);

    /// <param name="committed">
    /// Told, on the writer thread and outside any transaction, how many writes each commit carried, each counted by its
    /// weight (<see cref="WriteAsync{T}"/>; <see cref="SqliteCheckpointer.Committed"/>).
    /// </param>
    /// <param name="watch">
    /// Told, on the writer thread and outside any transaction, after each commit (once the writes' own after-commit steps
    /// have run; false) and every <see cref="IdleCheck"/> while no write comes, and once before the first (true)
    /// (<see cref="HandledEventMemory.Look"/>).
    /// </param>
    /// <param name="dataFile">Checked after each commit: a batch committed into a data file no longer at its path fails.</param>
    public SqliteWriter(
        SqliteConnection connection, TimeSpan? shutdownWait = null, Action<int, SqliteConnection>? committed = null,
        Action<SqliteConnection, bool>? watch = null, DataFileWatch? dataFile = null)
    {
        this.connection = connection;
        this.dataFile = dataFile;
        this.shutdownWait = shutdownWait ?? DefaultShutdownWait;
        this.committed = committed;
        this.watch = watch;
        thread = new Thread(Loop) { IsBackground = true, Name = "sqlite-writer" };
        thread.Start();
    }

    /// <summary>
    /// Runs <paramref name="work"/> inside a transaction shared with other queued writes. It may throw an exception
    /// of its own (not a <see cref="SqliteException"/>) to fail alone, as long as it wrote nothing before throwing.
    /// </summary>
    /// <param name="weight">How many writes this one counts as toward a checkpoint (a large row fills many pages of the log).</param>
    /// <param name="afterCommit">
    /// Run on the writer thread once the transaction that made this write has committed, before any later write is made;
    /// not run when the write failed. It must not throw: the batch's writes, committed, would be reported failed.
    /// </param>
    public Task<T> WriteAsync<T>(Func<SqliteConnection, SqliteTransaction, T> work, int weight = 1, Action<T>? afterCommit = null)
    {
        var operation = new Operation<T>(work, afterCommit) { Weight = Math.Max(1, weight) };
        queue.Add(operation);
        return operation.Task;
    }

    private void Loop()
    {
        // The thread owns its connection to the end: disposed here, after the last queued write, never under one.
        using var owned = connection;
        var batch = new List<Operation>(MaxBatch);
        watch?.Invoke(connection, true); // the file's starting point, before any write
        while (!queue.IsCompleted)
        {
            if (!queue.TryTake(out var first, IdleCheck))
            {
                watch?.Invoke(connection, true);
                continue;
            }

            batch.Add(first);
            while (batch.Count < MaxBatch && queue.TryTake(out var next))
            {
                batch.Add(next);
            }

            try
            {
                Commit(batch);
            }
            catch (SqliteException exception) when (batch.Count > 1 && !IsLockedOut(exception))
            {
                // One write broke the transaction: make each on its own, so only that one fails. Not when another
                // process held the lock past the busy timeout: no write is to blame, and each alone would wait it out again.
                foreach (var operation in batch)
                {
                    CommitAlone(operation);
                }
            }
            catch (Exception exception)
            {
                batch.ForEach(operation => operation.Fail(exception));
            }

            batch.Clear();
        }
    }

    private static bool IsLockedOut(SqliteException exception) =>
        exception.SqliteErrorCode is SQLitePCL.raw.SQLITE_BUSY or SQLitePCL.raw.SQLITE_LOCKED;

    private void Commit(List<Operation> batch)
    {
        dataFile?.ThrowIfGone();
        using (var transaction = connection.BeginTransaction())
        {
            foreach (var operation in batch)
            {
                operation.Run(connection, transaction);
            }

            transaction.Commit();
        }

        dataFile?.CheckAfterCommit();

        Interlocked.Increment(ref transactions);

        batch.ForEach(operation => operation.AfterCommit());
        watch?.Invoke(connection, false);
        batch.ForEach(operation => operation.Complete());
        committed?.Invoke(batch.Sum(operation => operation.Weight), connection);
    }

    private void CommitAlone(Operation operation)
    {
        try
        {
            Commit([operation]);
        }
        catch (Exception exception)
        {
            operation.Fail(exception);
        }
    }

    /// <summary>
    /// Takes no more writes and waits for the queued ones: each may wait up to the busy timeout for another process's
    /// lock. If that runs out, the thread finishes them (and closes the connection) on its own.
    /// </summary>
    public void Dispose()
    {
        queue.CompleteAdding();
        thread.Join(shutdownWait);
    }

    private abstract class Operation
    {
        public int Weight { get; init; } = 1;

        public abstract void Run(SqliteConnection connection, SqliteTransaction transaction);

        public abstract void AfterCommit();

        public abstract void Complete();

        public abstract void Fail(Exception exception);
    }

    private sealed class Operation<T>(Func<SqliteConnection, SqliteTransaction, T> work, Action<T>? afterCommit) : Operation
    {
        private readonly TaskCompletionSource<T> completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private T? result;
        private Exception? ownFailure;

        public Task<T> Task => completion.Task;

        public override void Run(SqliteConnection connection, SqliteTransaction transaction)
        {
            ownFailure = null;
            try
            {
                result = work(connection, transaction);
            }
            catch (Exception exception) when (exception is not SqliteException)
            {
                ownFailure = exception;
            }
        }

        public override void AfterCommit()
        {
            if (ownFailure is null)
            {
                afterCommit?.Invoke(result!);
            }
        }

        public override void Complete()
        {
            if (ownFailure is not null)
            {
                completion.TrySetException(ownFailure);
            }
            else
            {
                completion.TrySetResult(result!);
            }
        }

        public override void Fail(Exception exception) => completion.TrySetException(exception);
    }
}
