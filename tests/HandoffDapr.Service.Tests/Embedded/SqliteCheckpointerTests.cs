using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// The write-ahead log is copied back by the checkpointer's thread, not inside a commit; once a busy log has grown past
/// <see cref="SqliteCheckpointer.CatchUpFrames"/>, the writer copies what is left so the log can start over.
/// </summary>
public sealed class SqliteCheckpointerTests : IDisposable
{
    private const int PageSize = 4096;
    private const int FrameHeader = 24;
    private readonly TempDirectory temp = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));

    [Fact]
    public async Task Commits_past_sqlites_automatic_checkpoint_threshold_do_not_checkpoint_the_log_themselves()
    {
        var path = temp.File("log.db");
        using var store = new SqliteRunStore(path, time);

        // One at a time, each some 8 pages but counted as one write (a view under five pages' worth): some 1 500 frames,
        // past SQLite's default of 1 000, in fewer writes than the checkpointer waits for. A commit that checkpointed
        // would have started the log over at about 1 000 frames.
        for (var run = 1; run <= 190; run++)
        {
            await store.SaveAsync(RunHandoffState.New(run), 0, CancellationToken.None, view: View(16 * 1024));
        }

        Assert.Equal((0L, 0L, 0L), store.Checkpoints);
        Assert.True(new FileInfo(path + "-wal").Length > 1_200L * (PageSize + FrameHeader), $"log of {new FileInfo(path + "-wal").Length} bytes");
    }

    [Fact]
    public async Task Log_starts_over_while_writes_keep_coming_once_it_reaches_the_catch_up_size()
    {
        var path = temp.File("busy.db");
        using var store = new SqliteRunStore(path, time);
        await store.SaveAsync(RunHandoffState.New(0), 0, CancellationToken.None);

        // A reader holding an old snapshot keeps every checkpoint from copying past it, so the log grows past the
        // catch-up size whatever the machine's load (without it, a writer that waits for its savers now and then lets a
        // checkpoint beside it start the log over, and the size is never reached). Once a catch-up has run the reader
        // lets go; savers in a closed loop then keep the writer from waiting for work, so a checkpoint beside it never
        // finds every frame copied: only the writer's own catch-up lets the log start over before the writes stop.
        // About five pages a write: the size is passed after some 800 writes; 12 000 would make 60 000 frames.
        var reader = new SqliteConnection($"Data Source={path};Pooling=False"); // not pooled: closing it ends its snapshot
        reader.Open();
        using (var begin = reader.CreateCommand())
        {
            begin.CommandText = "BEGIN; SELECT count(*) FROM runs;";
            begin.ExecuteScalar();
        }

        var startedOver = false;
        var next = 0;
        var savers = Enumerable.Range(0, 32).Select(_ => Task.Run(async () =>
        {
            while (!Volatile.Read(ref startedOver) && Interlocked.Increment(ref next) is var run && run <= 12_000)
            {
                await store.SaveAsync(RunHandoffState.New(run), 0, CancellationToken.None, view: View(16 * 1024));
            }
        })).ToList();
        uint? generationAtCatchUp = null;
        while (!savers.All(saver => saver.IsCompleted))
        {
            var current = LogGeneration(path);
            if (generationAtCatchUp is null && store.Checkpoints.CatchUps > 0)
            {
                // The reader keeps the log from starting over while it holds its snapshot (the log may have started over
                // once, at the first write, if the reader began with every frame copied): only a later change counts.
                generationAtCatchUp = current;
                reader.Dispose();
            }
            else if (generationAtCatchUp is { } before && current != before)
            {
                Volatile.Write(ref startedOver, true);
            }

            await Task.Delay(5);
        }

        reader.Dispose();
        await Task.WhenAll(savers);
        Assert.True(store.Checkpoints.CatchUps > 0, $"no catch-up in {Volatile.Read(ref next)} writes");
        Assert.True(startedOver, $"the log did not start over after a catch-up, in {Volatile.Read(ref next)} writes");
        // The background thread stands aside while a catch-up is due: one it made busy would copy nothing (and on a
        // loaded machine every one was, so the log did not start over in all the writes).
        Assert.Equal(0, store.Checkpoints.BusyCatchUps);
    }

    [Fact]
    public async Task Saves_of_a_run_near_the_request_limit_are_checkpointed_before_the_log_holds_hundreds_of_megabytes()
    {
        var path = temp.File("large.db");
        using var store = new SqliteRunStore(path, time);
        var run = RunHandoffState.New(1);
        long version = 0;
        long largest = 0;

        // A run whose snapshot came near the 1 MiB request limit, saved by each webhook, poll and trigger: each save
        // writes the whole row again (its size changes, so SQLite rewrites every page), some 270 pages. Counted as one
        // write each, 200 of them went into the log before the first checkpoint: 224 MB, a size the file then kept.
        for (var save = 0; save < 150; save++)
        {
            var snapshot = new Core.Model.RunSnapshot(1, Group: new Core.Model.RunGroup(456, new string('x', 1_000_000 + save)));
            version = await store.SaveAsync(run with { Snapshot = snapshot }, version, CancellationToken.None);
            largest = Math.Max(largest, new FileInfo(path + "-wal").Length);
        }

        Assert.True(largest < 64L << 20, $"log of {largest} bytes");
        Assert.True(store.Checkpoints.Background > 0);
    }

    [Fact]
    public async Task Store_disposed_twice_ignores_the_second_call()
    {
        var store = new SqliteRunStore(temp.File("twice.db"), time);
        await store.SaveAsync(RunHandoffState.New(1), 0, CancellationToken.None);
        store.Dispose();

        Assert.Null(Record.Exception(store.Dispose));
    }

    /// <summary>
    /// The background checkpoint runs once every <see cref="SqliteCheckpointer.WritesPerCheckpoint"/> writes, not after
    /// every commit once the first 200 were made: each is a pass over the log beside the writer and the readers.
    /// </summary>
    [Fact]
    public async Task Background_checkpoint_runs_once_per_two_hundred_writes_not_after_every_commit_past_them()
    {
        using var store = new SqliteRunStore(temp.File("cadence.db"), time);

        // One at a time, each a commit of its own: 1 000 writes ask for five checkpoints.
        for (var run = 1; run <= 5 * SqliteCheckpointer.WritesPerCheckpoint; run++)
        {
            await store.SaveAsync(RunHandoffState.New(run), 0, CancellationToken.None);
        }

        await Eventually.True(() => store.Checkpoints.Background > 0);
        Assert.InRange(store.Checkpoints.Background, 1, 5);
    }

    /// <summary>
    /// A catch-up is one copy by the writer between two commits, asked for by a background checkpoint that found the log
    /// at the catch-up size; once made, the next commits go back to leaving the copying to the background thread. Left
    /// asked for, every commit after the first catch-up checkpointed the log itself (and waited for its fsyncs), and the
    /// background thread stood aside for good.
    /// </summary>
    [Fact]
    public async Task After_a_catch_up_the_next_commits_leave_the_checkpoints_to_the_background_thread()
    {
        var path = temp.File("one-catch-up.db");
        using var store = new SqliteRunStore(path, time);
        await store.SaveAsync(RunHandoffState.New(0), 0, CancellationToken.None);

        // A reader holding an old snapshot keeps the checkpoints from copying past it: the log grows to the catch-up size.
        using (var reader = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            reader.Open();
            using var begin = reader.CreateCommand();
            begin.CommandText = "BEGIN; SELECT count(*) FROM runs;";
            begin.ExecuteScalar();
            var run = 0;
            while (store.Checkpoints.CatchUps == 0)
            {
                Assert.True(++run <= 12_000, "no catch-up in 12 000 writes");
                await store.SaveAsync(RunHandoffState.New(run), 0, CancellationToken.None, view: View(16 * 1024));
            }
        }

        // Fewer writes than a background checkpoint waits for: at most one more checkpoint, so at most one more catch-up.
        for (var run = 20_000; run < 20_000 + SqliteCheckpointer.WritesPerCheckpoint / 2; run++)
        {
            await store.SaveAsync(RunHandoffState.New(run), 0, CancellationToken.None);
        }

        Assert.InRange(store.Checkpoints.CatchUps, 1, 2);
    }

    /// <summary>
    /// A checkpoint that throws (a full disk, a file gone read-only) is reported and leaves the writes alone: the log
    /// only grows until a later checkpoint, 200 writes on, succeeds. Thrown from the background thread, it would end
    /// the process; thrown into <see cref="SqliteCheckpointer.Committed"/>, it would fail a save already committed.
    /// </summary>
    [Fact]
    public async Task Checkpoint_that_fails_is_reported_and_the_next_one_is_tried_two_hundred_writes_later()
    {
        var path = temp.File("failing.db");
        using (new SqliteRunStore(path, time))
        {
            // Made and closed: the file is in write-ahead-log mode, with a table.
        }

        // A closed connection makes every checkpoint throw, as a failing disk would, until it is opened again.
        var connection = new SqliteConnection($"Data Source={path};Pooling=False");
        var failures = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        using var writer = new SqliteConnection($"Data Source={path};Pooling=False");
        writer.Open();
        using var checkpointer = new SqliteCheckpointer(connection, failures.Enqueue);

        checkpointer.Committed(SqliteCheckpointer.WritesPerCheckpoint, writer);
        await Eventually.True(() => !failures.IsEmpty);
        Assert.IsType<InvalidOperationException>(Assert.Single(failures));
        Assert.Equal((0L, 0L, 0L), checkpointer.Checkpoints);

        connection.Open();
        checkpointer.Committed(SqliteCheckpointer.WritesPerCheckpoint - 1, writer);
        checkpointer.Committed(1, writer);
        await Eventually.True(() => checkpointer.Checkpoints.Background == 1);
        Assert.Single(failures);
    }

    /// <summary>
    /// A commit the writer reports after the checkpointer was disposed (a write it finished once its shutdown wait ran
    /// out) is ignored: the next start copies it. Counted (the stopping check dropped, hand mutation), the two hundredth
    /// such write set the disposed wake-up event, and the ObjectDisposedException failed a batch of writes already committed.
    /// </summary>
    [Fact]
    public void Commit_reported_after_disposal_is_ignored()
    {
        var path = temp.File("late.db");
        using (new SqliteRunStore(path, time))
        {
            // Made and closed: the file is in write-ahead-log mode, with a table.
        }

        using var writer = new SqliteConnection($"Data Source={path};Pooling=False");
        writer.Open();
        var connection = new SqliteConnection($"Data Source={path};Pooling=False");
        connection.Open();
        var checkpointer = new SqliteCheckpointer(connection, _ => { });
        checkpointer.Dispose();

        Assert.Null(Record.Exception(() => checkpointer.Committed(SqliteCheckpointer.WritesPerCheckpoint, writer)));
        Assert.Equal((0L, 0L, 0L), checkpointer.Checkpoints);
    }

    /// <summary>
    /// Disposing the checkpointer wakes its thread, which ends and closes its connection to the file. A thread left
    /// waiting (not woken, or going back to wait once woken) kept its connection open for the life of the process, and
    /// the store's disposal waited ten seconds for it.
    /// </summary>
    [Fact]
    public void Disposed_checkpointer_ends_its_thread_and_closes_its_connection()
    {
        var path = temp.File("disposed.db");
        using (new SqliteRunStore(path, time))
        {
            // Made and closed: the file is in write-ahead-log mode, with a table.
        }

        var connection = new SqliteConnection($"Data Source={path};Pooling=False");
        connection.Open();
        var checkpointer = new SqliteCheckpointer(connection, _ => { });

        checkpointer.Dispose();

        Assert.Equal(System.Data.ConnectionState.Closed, connection.State);
    }

    /// <summary>
    /// A save counts as one write toward a checkpoint, and a larger one as the five-page writes its bytes fill, up to a
    /// checkpoint's worth. Counting a write per fifty pages (hand mutation) survived every checkpointer test: the 1 MiB
    /// saves of the large-run test stayed under its 64 MB bound though they put ten times the log between checkpoints.
    /// </summary>
    [Theory]
    [InlineData(0L, 1)]
    [InlineData(5L * PageSize - 1, 1)]
    [InlineData(5L * PageSize, 2)]
    [InlineData(1L << 20, 52)]
    [InlineData(200L * 5 * PageSize, SqliteCheckpointer.WritesPerCheckpoint)]
    [InlineData(1L << 40, SqliteCheckpointer.WritesPerCheckpoint)]
    public void A_save_counts_as_the_five_page_writes_its_bytes_fill_up_to_a_checkpoints_worth(long bytes, int writes) =>
        Assert.Equal(writes, SqliteCheckpointer.WeightOf(bytes));

    /// <summary>The checkpoint sequence number in the log's header: it changes when the log starts over.</summary>
    private static uint LogGeneration(string path)
    {
        using var log = new FileStream(path + "-wal", FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        Span<byte> header = stackalloc byte[16];
        log.ReadExactly(header);
        return System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(header[12..]);
    }

    private static byte[] View(int size) => Enumerable.Repeat((byte)'x', size).ToArray();

    public void Dispose() => temp.Dispose();
}
