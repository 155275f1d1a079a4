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

        // One at a time, each about 17 pages: some 1 700 frames, past SQLite's default of 1 000, in fewer writes than
        // the checkpointer waits for. A commit that checkpointed would have started the log over at about 1 000 frames.
        for (var run = 1; run <= 100; run++)
        {
            await store.SaveAsync(RunHandoffState.New(run), 0, CancellationToken.None, view: View(64 * 1024));
        }

        Assert.Equal((0L, 0L), store.Checkpoints);
        Assert.True(new FileInfo(path + "-wal").Length > 1_500L * (PageSize + FrameHeader), $"log of {new FileInfo(path + "-wal").Length} bytes");
    }

    [Fact]
    public async Task Log_held_past_the_catch_up_size_is_caught_up_by_the_writer_and_starts_over_once_free()
    {
        var path = temp.File("held.db");
        using var store = new SqliteRunStore(path, time);
        await store.SaveAsync(RunHandoffState.New(0), 0, CancellationToken.None);

        // A reader's open snapshot keeps every later frame in the log: no checkpoint can copy them back.
        using (var reader = new SqliteConnection($"Data Source={path}"))
        {
            reader.Open();
            using var snapshot = reader.BeginTransaction(deferred: true);
            using (var read = reader.CreateCommand())
            {
                read.Transaction = snapshot;
                read.CommandText = "SELECT count(*) FROM runs";
                Assert.Equal(1L, read.ExecuteScalar());
            }

            // About five pages a write: the log passes the catch-up size after some 800 writes, and the checkpointer
            // looks at it every 200.
            var run = 1;
            for (var round = 0; round < 40 && store.Checkpoints.CatchUps == 0; round++)
            {
                await Task.WhenAll(Enumerable.Range(run, 100).Select(id => store.SaveAsync(RunHandoffState.New(id), 0, CancellationToken.None, view: View(16 * 1024))));
                run += 100;
            }

            Assert.True(store.Checkpoints.Background > 0);
            Assert.True(store.Checkpoints.CatchUps > 0, "the writer never caught up a log of its own");
        }

        // The reader is gone: the checkpointer copies everything and the log starts over from its first frame (SQLite
        // then counts one more checkpoint in the log's header).
        var generation = LogGeneration(path);
        var next = 100_000;
        await Eventually.True(async () =>
        {
            await Task.WhenAll(Enumerable.Range(next, 50).Select(id => store.SaveAsync(RunHandoffState.New(id), 0, CancellationToken.None)));
            next += 50;
            return LogGeneration(path) != generation;
        });
    }

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
