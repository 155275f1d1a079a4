using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>The one writer of the embedded store: group commit, and failures that stay with the write that caused them.</summary>
public sealed class SqliteWriterTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly SqliteWriter writer;
    private readonly SqliteConnection reader;

    public SqliteWriterTests()
    {
        var path = temp.File("writer.db");
        reader = new SqliteConnection($"Data Source={path};Pooling=False");
        reader.Open();
        Execute(reader, "PRAGMA journal_mode = WAL; CREATE TABLE items (id INTEGER PRIMARY KEY)");
        var connection = new SqliteConnection($"Data Source={path};Pooling=False");
        connection.Open();
        writer = new SqliteWriter(connection);
    }

    [Fact]
    public async Task Writes_queued_while_one_commits_go_into_one_transaction()
    {
        var (first, hold) = Blocking();
        var queued = Enumerable.Range(1, 50).Select(i => writer.WriteAsync((connection, transaction) => Insert(connection, transaction, i))).ToList();

        hold.Set();

        await Task.WhenAll(queued.Append(first));

        Assert.Equal(2, writer.Transactions);
        Assert.Equal(51L, Count());
    }

    [Fact]
    public async Task A_write_that_refuses_fails_alone_and_the_rest_of_its_batch_commits()
    {
        var (first, hold) = Blocking();
        var before = writer.WriteAsync((connection, transaction) => Insert(connection, transaction, 1));
        var refused = writer.WriteAsync<int>((_, _) => throw new RunVersionConflictException(7));
        var after = writer.WriteAsync((connection, transaction) => Insert(connection, transaction, 2));

        hold.Set();

        await Assert.ThrowsAsync<RunVersionConflictException>(() => refused);
        await Task.WhenAll(first, before, after);
        Assert.Equal(3L, Count());
        Assert.Equal(2, writer.Transactions);
    }

    [Fact]
    public async Task A_write_that_breaks_the_transaction_fails_alone_and_the_others_are_made_one_by_one()
    {
        var (first, hold) = Blocking();
        var before = writer.WriteAsync((connection, transaction) => Insert(connection, transaction, 1));
        var broken = writer.WriteAsync((connection, transaction) => Insert(connection, transaction, 1)); // same key: constraint error
        var after = writer.WriteAsync((connection, transaction) => Insert(connection, transaction, 2));

        hold.Set();

        await Assert.ThrowsAsync<SqliteException>(() => broken);
        await Task.WhenAll(first, before, after);
        Assert.Equal(3L, Count());
        // The blocking write's own transaction, then "before" and "after" each in one of their own.
        Assert.Equal(3, writer.Transactions);
    }

    /// <summary>A write that keeps the writer busy until released: what is queued meanwhile forms the next batch.</summary>
    [Fact]
    public async Task Shutdown_that_stops_waiting_leaves_queued_writes_to_land_on_a_connection_still_open()
    {
        var (path, connection) = OpenItemsFile("shutdown.db");
        // Shutdown gives up waiting almost at once, while a write is still under way (as one waiting out another
        // process's lock would be) and another is queued behind it.
        var shortWriter = new SqliteWriter(connection, shutdownWait: TimeSpan.FromMilliseconds(50));
        using var hold = new ManualResetEventSlim();
        var first = shortWriter.WriteAsync((c, t) => { hold.Wait(TimeSpan.FromSeconds(30)); return Insert(c, t, 1); });
        var second = shortWriter.WriteAsync((c, t) => Insert(c, t, 2));

        await Task.Run(shortWriter.Dispose);
        hold.Set();

        await Task.WhenAll(first, second).WaitAsync(TimeSpan.FromSeconds(30));
        using var check = new SqliteConnection($"Data Source={path};Pooling=False");
        check.Open();
        using var count = check.CreateCommand();
        count.CommandText = "SELECT COUNT(*) FROM items";
        Assert.Equal(2L, (long)count.ExecuteScalar()!);
    }

    /// <summary>
    /// A write's after-commit step (the store remembers the event it saved as handled) runs only once its transaction has
    /// committed: a transaction that fails at its commit runs none, and its write is reported failed. Run before the
    /// commit (hand mutation), the step told the handled-event memory of a save that never happened, and a redelivery was
    /// answered as a no-op from it; no store, writer or repeated-event test had a commit fail after its writes were made.
    /// </summary>
    [Fact]
    public async Task A_write_whose_transaction_fails_at_its_commit_runs_no_after_commit_step()
    {
        var path = temp.File("deferred.db");
        DataFileSql.Execute(path, """
            PRAGMA journal_mode = WAL;
            CREATE TABLE parents (id INTEGER PRIMARY KEY);
            CREATE TABLE children (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);
            """);

        // A deferred foreign key is checked at the commit: the insert itself succeeds, the commit fails.
        var connection = new SqliteConnection($"Data Source={path};Pooling=False;Foreign Keys=True");
        connection.Open();
        using var checking = new SqliteWriter(connection);
        var afterCommitRan = false;

        var orphan = checking.WriteAsync(
            (c, t) =>
            {
                using var command = c.CreateCommand();
                command.Transaction = t;
                command.CommandText = "INSERT INTO children (id, parent) VALUES (1, 99)";
                return command.ExecuteNonQuery();
            },
            afterCommit: _ => afterCommitRan = true);

        var failure = await Assert.ThrowsAsync<SqliteException>(() => orphan);
        Assert.Equal(SQLitePCL.raw.SQLITE_CONSTRAINT, failure.SqliteErrorCode);
        Assert.False(afterCommitRan);
        Assert.Equal(0, checking.Transactions);
    }

    /// <summary>
    /// An exception that is not SQLite's escaping a commit (an after-commit step that throws, which it must not) fails
    /// that batch's writes and leaves the writer running: the next write is made. Caught only as a SqliteException
    /// (hand mutation), it ended the writer thread, and with it the process, as no other test had one.
    /// </summary>
    [Fact]
    public async Task A_batch_whose_after_commit_step_throws_is_reported_failed_and_the_next_write_is_made()
    {
        var throwing = writer.WriteAsync((connection, transaction) => Insert(connection, transaction, 1), afterCommit: _ => throw new InvalidOperationException("after-commit step"));

        await Assert.ThrowsAsync<InvalidOperationException>(() => throwing);
        Assert.Equal(1, await writer.WriteAsync((connection, transaction) => Insert(connection, transaction, 2)));
        Assert.Equal(2L, Count());
    }

    /// <summary>
    /// The writer's watch (the handled-event memory's look at the file) is told of the file's starting point, then after
    /// each commit, before the commit's writes are reported made. Dropping the call after a commit (hand mutation)
    /// survived every writer, store and handled-event memory test: the idle looks of the writer's wait hid it, but under a
    /// stream of writes the memory was looked at no more and every redelivery read the file.
    /// </summary>
    [Fact]
    public async Task Watch_is_told_of_each_commit_before_its_writes_are_reported_made()
    {
        var (path, connection) = OpenItemsFile("watched.db");
        var afterCommit = 0;
        using var watched = new SqliteWriter(connection, watch: (_, idle) =>
        {
            if (!idle)
            {
                Interlocked.Increment(ref afterCommit);
            }
        });

        await watched.WriteAsync((c, t) => Insert(c, t, 1));
        Assert.Equal(1, Volatile.Read(ref afterCommit));
        await watched.WriteAsync((c, t) => Insert(c, t, 2));
        Assert.Equal(2, Volatile.Read(ref afterCommit));
    }

    /// <summary>
    /// Disposing the writer waits for the writes queued before it: once it returns they are committed, and their callers
    /// told so. Returning at once (no wait for the writer thread) left them to a background thread the process's exit
    /// ends, with their callers still waiting.
    /// </summary>
    [Fact]
    public async Task Shutdown_returns_once_the_writes_queued_before_it_are_made()
    {
        var (path, connection) = OpenItemsFile("drained.db");
        var draining = new SqliteWriter(connection);
        using var started = new ManualResetEventSlim();
        using var hold = new ManualResetEventSlim();
        var first = draining.WriteAsync((c, t) => { started.Set(); hold.Wait(TimeSpan.FromSeconds(30)); return Insert(c, t, 1); });
        var second = draining.WriteAsync((c, t) => Insert(c, t, 2));
        Assert.True(started.Wait(TimeSpan.FromSeconds(10)));

        var disposing = Task.Run(draining.Dispose);
        // Shutdown has begun (the writer takes no more writes) while the first write is still under way.
        await Eventually.True(() =>
        {
            try
            {
                _ = draining.WriteAsync((c, t) => 0);
                return false;
            }
            catch (InvalidOperationException)
            {
                return true;
            }
        });
        hold.Set();
        await disposing;

        Assert.True(first.IsCompletedSuccessfully);
        Assert.True(second.IsCompletedSuccessfully);
        Assert.Equal(System.Data.ConnectionState.Closed, connection.State);
    }

    private (Task<int> Write, ManualResetEventSlim Release) Blocking()
    {
        var started = new ManualResetEventSlim();
        var release = new ManualResetEventSlim();
        var write = writer.WriteAsync((connection, transaction) =>
        {
            started.Set();
            release.Wait(TimeSpan.FromSeconds(10));
            return Insert(connection, transaction, 0);
        });
        Assert.True(started.Wait(TimeSpan.FromSeconds(10)));
        return (write, release);
    }

    [Fact]
    public async Task Batch_locked_out_by_another_process_fails_together_instead_of_waiting_out_the_lock_once_per_write()
    {
        var path = temp.File("busy.db");
        using var other = new SqliteConnection($"Data Source={path};Pooling=False");
        other.Open();
        Execute(other, "PRAGMA journal_mode = WAL; CREATE TABLE items (id INTEGER PRIMARY KEY)");
        // Another process holds SQLite's write lock for longer than the busy timeout (1 s here, 30 s in the store).
        Execute(other, "BEGIN IMMEDIATE");

        var connection = new SqliteConnection($"Data Source={path};Pooling=False;Default Timeout=1");
        connection.Open();
        using var writer = new SqliteWriter(connection, shutdownWait: TimeSpan.FromSeconds(1));
        var first = writer.WriteAsync((c, t) => Insert(c, t, 0)); // the writer thread waits out the lock on this one
        var batch = Enumerable.Range(1, 5).Select(i => writer.WriteAsync((c, t) => Insert(c, t, i))).ToList(); // queued meanwhile: one batch

        var firstFailure = await Assert.ThrowsAsync<SqliteException>(() => first);
        Assert.Equal(SQLitePCL.raw.SQLITE_BUSY, firstFailure.SqliteErrorCode);
        var failures = new List<SqliteException> { firstFailure };
        foreach (var write in batch)
        {
            failures.Add(await Assert.ThrowsAsync<SqliteException>(() => write));
        }

        // An attempt's failure is shared by every write in it; retried one by one, each would have its own (and its own wait).
        // Two attempts at most: the writer thread may take the first write alone, or (when it wakes while the five are being
        // queued) with some of them; the rest are queued well inside its 1 s wait, so they go together.
        Assert.InRange(failures.Distinct().Count(), 1, 2);
        Execute(other, "ROLLBACK");
    }

    private static int Insert(SqliteConnection connection, SqliteTransaction transaction, int id)
    {
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT INTO items (id) VALUES ($id)";
        command.Parameters.AddWithValue("$id", id);
        return command.ExecuteNonQuery();
    }

    private long Count()
    {
        using var command = reader.CreateCommand();
        command.CommandText = "SELECT COUNT(*) FROM items";
        return (long)command.ExecuteScalar()!;
    }

    /// <summary>A new data file in WAL mode with an empty items table, and an open connection for a writer of the test's own.</summary>
    private (string Path, SqliteConnection Connection) OpenItemsFile(string name)
    {
        var path = temp.File(name);
        DataFileSql.Execute(path, "PRAGMA journal_mode = WAL; CREATE TABLE items (id INTEGER PRIMARY KEY)");

        var connection = new SqliteConnection($"Data Source={path};Pooling=False");
        connection.Open();
        return (path, connection);
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    public void Dispose()
    {
        writer.Dispose();
        reader.Dispose();
        temp.Dispose();
    }
}
