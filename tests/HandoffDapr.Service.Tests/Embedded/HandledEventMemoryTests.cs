using System.Security.Cryptography;
using System.Text;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// A redelivery is answered from the digests this process's own saves wrote, without reading the file, for exactly as
/// long as the row holds that digest: a later save of the run, retention, or another connection's commit takes it back.
/// </summary>
public sealed class HandledEventMemoryTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 12, 5, 10, 0, 0, TimeSpan.Zero));

    [Fact]
    public async Task A_redelivery_of_an_event_this_process_saved_as_handled_is_answered_without_reading_the_file()
    {
        using var store = Store("remembered.db");
        var digest = store.DigestEvent(Event(1));

        await store.SaveAsync(RunHandoffState.New(1), 0, CancellationToken.None, HandledEvent.Of(digest));

        Assert.Equal(1, store.FindHandledEvent(digest));
        Assert.Equal(0, store.HandledEventFileReads);
        // With the memory off, the same answer comes from the file.
        using var reading = new SqliteRunStore(temp.File("reading.db"), time);
        var read = reading.DigestEvent(Event(1));
        await reading.SaveAsync(RunHandoffState.New(1), 0, CancellationToken.None, HandledEvent.Of(read));
        Assert.Equal(1, reading.FindHandledEvent(read));
        Assert.Equal(1, reading.HandledEventFileReads);
    }

    [Fact]
    public async Task A_later_save_of_the_run_without_that_event_takes_it_back_and_one_that_keeps_it_does_not()
    {
        using var store = Store("later-save.db");
        var first = store.DigestEvent(Event(1));
        var second = store.DigestEvent(Event(2));
        var version = await store.SaveAsync(RunHandoffState.New(1), 0, CancellationToken.None, HandledEvent.Of(first));
        await store.SaveAsync(RunHandoffState.New(2), 0, CancellationToken.None, HandledEvent.Of(second));

        // Run 1's row keeps its digest through a save that keeps the snapshot; run 2's loses it to one that changes the run.
        await store.SaveAsync(RunHandoffState.New(1), version, CancellationToken.None, HandledEvent.Kept);
        await store.SaveAsync(RunHandoffState.New(2), 1, CancellationToken.None);

        Assert.Equal(1, store.FindHandledEvent(first));
        Assert.Equal(0, store.HandledEventFileReads);
        Assert.Null(store.FindHandledEvent(second));
        Assert.Equal(1, store.HandledEventFileReads);
    }

    [Fact]
    public async Task A_save_that_fails_its_version_check_remembers_nothing()
    {
        using var store = Store("conflict.db");
        await store.SaveAsync(RunHandoffState.New(1), 0, CancellationToken.None);
        var digest = store.DigestEvent(Event(1));

        await Assert.ThrowsAsync<RunVersionConflictException>(() => store.SaveAsync(RunHandoffState.New(1), 5, CancellationToken.None, HandledEvent.Of(digest)));

        Assert.Null(store.FindHandledEvent(digest));
        Assert.Equal(0, store.RememberedEvents);
    }

    [Fact]
    public async Task A_run_deleted_by_retention_is_not_answered_from_memory()
    {
        using var store = Store("retention.db");
        var digest = store.DigestEvent(Event(1));
        var version = await store.SaveAsync(RunHandoffState.New(1), 0, CancellationToken.None, HandledEvent.Of(digest));

        Assert.Equal(1, await store.DeleteSettledAsync([new SweepCandidate(1, version, time.GetUtcNow(), RunHandoffState.New(1))], time.GetUtcNow(), CancellationToken.None));

        Assert.Null(store.FindHandledEvent(digest));
    }

    /// <summary>
    /// Another process on the file (a hand-over), or an operator who deleted a run's rows to start it over (runbook,
    /// "Damaged run state"): its commit is seen at the writer's next look at the file, and nothing remembered is trusted after it.
    /// </summary>
    [Fact]
    public async Task Another_connections_commit_to_the_file_makes_this_process_forget_what_it_remembered()
    {
        var path = temp.File("shared.db");
        using var store = Store("shared.db");
        var digest = store.DigestEvent(Event(1));
        await store.SaveAsync(RunHandoffState.New(1), 0, CancellationToken.None, HandledEvent.Of(digest));
        Assert.Equal(1, store.FindHandledEvent(digest));

        using (var other = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            other.Open();
            using var command = other.CreateCommand();
            command.CommandText = "DELETE FROM wakeups WHERE run_id = 1; DELETE FROM runs WHERE run_id = 1";
            Assert.Equal(1, command.ExecuteNonQuery());
        }

        await Eventually.True(() => store.RememberedEvents == 0);
        Assert.Null(store.FindHandledEvent(digest));
    }

    /// <summary>
    /// The writer looks at the file every 50 ms, but not while it waits for another process's write lock (up to
    /// the busy timeout, 30 s, and again for each batch after): that process may commit meanwhile, and take the lock
    /// again. A redelivery is answered from memory only while the writer's last look is recent.
    /// </summary>
    [Fact]
    public async Task Another_processs_commit_is_not_answered_past_the_window_while_the_writer_waits_for_its_lock()
    {
        using var locked = await RememberedWhileAnotherConnectionHoldsTheLockAsync("locked.db");
        var (store, digest, other) = locked;
        // A write of this process waits for the lock; the other process deletes run 1 and holds the lock again at once.
        var waiting = store.SaveAsync(RunHandoffState.New(2), 0, CancellationToken.None);
        await Task.Delay(300);
        Execute(other, "DELETE FROM wakeups WHERE run_id = 1; DELETE FROM runs WHERE run_id = 1; COMMIT; BEGIN IMMEDIATE");
        try
        {
            // Past the window (100 ms) the file answers: run 1 has no row.
            time.Advance(TimeSpan.FromMilliseconds(500));
            Assert.Null(store.FindHandledEvent(digest));
        }
        finally
        {
            Execute(other, "ROLLBACK");
            await waiting;
        }
    }

    /// <summary>
    /// The writer's first look at the file (and its first after a failed one) comes after a commit: another process's
    /// commit between the two must not be taken for the file's starting point.
    /// </summary>
    [Fact]
    public async Task A_commit_by_another_connection_before_the_first_look_is_not_taken_for_the_starting_point()
    {
        var path = temp.File("first-look.db");
        using (var store = Store("first-look.db"))
        {
            await store.SaveAsync(RunHandoffState.New(1), 0, CancellationToken.None);
            await store.SaveAsync(RunHandoffState.New(2), 0, CancellationToken.None);
        }

        using var writer = new SqliteConnection($"Data Source={path};Pooling=False");
        writer.Open();
        var memory = new HandledEventMemory(8, time);
        var digest = SHA256.HashData(Event(1));
        // Remembered after this process's commit, as the writer does, before its first look at the file ...
        memory.Remember(1, digest);
        // ... another process deletes the run in between ...
        DataFileSql.Execute(path, "DELETE FROM runs WHERE run_id = 1");

        // ... and the look finds a version it has nothing to compare with: nothing remembered is trusted.
        memory.ForgetIfOthersWrote(writer);
        Assert.Null(memory.Find(digest));

        // Nor after a look that failed.
        memory.ForgetIfOthersWrote(writer);
        using (var closed = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            memory.ForgetIfOthersWrote(closed); // not open: the look fails
        }

        var second = SHA256.HashData(Event(2));
        memory.Remember(2, second);
        DataFileSql.Execute(path, "DELETE FROM runs WHERE run_id = 2");

        memory.ForgetIfOthersWrote(writer);
        Assert.Null(memory.Find(second));
    }

    /// <summary>
    /// A look at the file that cannot read its data version forgets everything, each time (not only when the last look
    /// did read it), and starts no new window: what a commit after it remembers is trusted no longer than the last look
    /// that read the version allows.
    /// </summary>
    [Fact]
    public void A_failed_look_at_the_file_forgets_everything_each_time_and_trusts_nothing_past_the_last_look_that_read_it()
    {
        var memory = new HandledEventMemory(8, time);
        using var file = new SqliteConnection("Data Source=:memory:");
        file.Open();
        using var closed = new SqliteConnection("Data Source=:memory:"); // never opened: a look on it fails
        var digests = Enumerable.Range(1, 4).Select(run => SHA256.HashData(Event(run))).ToArray();
        memory.ForgetIfOthersWrote(file);
        memory.Remember(1, digests[0]);
        Assert.Equal(1, memory.Find(digests[0]));

        memory.ForgetIfOthersWrote(closed);
        Assert.Null(memory.Find(digests[0]));

        // A commit after the failed look is remembered; a second failed look forgets it as well.
        memory.Remember(2, digests[1]);
        memory.ForgetIfOthersWrote(closed);
        Assert.Null(memory.Find(digests[1]));

        // Past the window of the last look that read the version, a failed look opens none.
        time.Advance(HandledEventMemory.TrustedFor + TimeSpan.FromMilliseconds(1));
        memory.ForgetIfOthersWrote(closed);
        memory.Remember(3, digests[2]);
        Assert.Null(memory.Find(digests[2]));

        // The next look that reads it does.
        memory.ForgetIfOthersWrote(file);
        memory.Remember(4, digests[3]);
        Assert.Equal(4, memory.Find(digests[3]));
    }

    /// <summary>
    /// What is remembered is trusted for <see cref="HandledEventMemory.TrustedFor"/> after the start of the writer's last
    /// look at the file, that long included, and not a tick longer; a later look that finds no other connection's commit
    /// keeps it and trusts it again.
    /// </summary>
    [Fact]
    public void What_is_remembered_is_trusted_for_the_window_after_a_look_and_again_after_a_look_that_finds_no_other_commit()
    {
        var memory = new HandledEventMemory(8, time);
        using var file = new SqliteConnection("Data Source=:memory:");
        file.Open();
        var digest = SHA256.HashData(Event(1));
        memory.ForgetIfOthersWrote(file);
        memory.Remember(1, digest);

        time.Advance(HandledEventMemory.TrustedFor);
        Assert.Equal(1, memory.Find(digest));
        time.Advance(TimeSpan.FromTicks(1));
        Assert.Null(memory.Find(digest));

        memory.ForgetIfOthersWrote(file);
        Assert.Equal(1, memory.Find(digest));
        Assert.Equal(1, memory.Count);
    }

    /// <summary>
    /// A save that keeps the row's digest keeps it only while it is valid, and another process may have written its own
    /// since this process's last look at the file: what memory holds of the run must be what the row holds after it.
    /// </summary>
    [Fact]
    public void A_save_that_keeps_the_rows_digest_keeps_the_remembered_one_only_if_the_row_still_holds_it()
    {
        var memory = new HandledEventMemory(8, time);
        using var file = new SqliteConnection("Data Source=:memory:");
        file.Open();
        memory.ForgetIfOthersWrote(file); // the writer's first look: what memory holds is trusted from here
        var mine = SHA256.HashData(Event(1));
        var theirs = SHA256.HashData(Event(2));
        memory.Remember(1, mine);
        memory.Remember(2, theirs);
        memory.Remember(3, SHA256.HashData(Event(3)));

        memory.ForgetUnlessHeld(1, mine);
        memory.ForgetUnlessHeld(2, null); // retired by an earlier release's save
        memory.ForgetUnlessHeld(3, theirs); // another process's digest, written since

        Assert.Equal(1, memory.Find(mine));
        Assert.Null(memory.Find(theirs));
        Assert.Equal(1, memory.Count);
    }

    /// <summary>
    /// The same through the store: another process retires the run's digest (a release from before digests saves the run)
    /// while this process's writer waits for its lock, and so does not look at the file; the save that keeps the digest,
    /// made next, finds it retired. The row holds none after it, and neither does memory, with no look in between.
    /// </summary>
    [Fact]
    public async Task A_save_that_keeps_the_digest_right_after_another_process_retired_it_unseen_leaves_it_forgotten()
    {
        using var locked = await RememberedWhileAnotherConnectionHoldsTheLockAsync("retired.db");
        var (store, digest, other) = locked;
        var kept = store.SaveAsync(RunHandoffState.New(1), 2, CancellationToken.None, HandledEvent.Kept);
        await Task.Delay(300);
        // The earlier release's save: a new version, the digest's version left behind.
        Execute(other, "UPDATE runs SET version = version + 1 WHERE run_id = 1; COMMIT");
        Assert.Equal(3, await kept);

        Assert.Null(store.FindHandledEvent(digest));
        Assert.Equal(0, store.RememberedEvents);
    }

    /// <summary>
    /// After a commit the writer looks at the file only once <see cref="SqliteWriter.IdleCheck"/> has passed since its
    /// last look, and then does: another connection's commit is seen at that look, not before. Never looking after a
    /// commit (hand mutation) survived every test, as the idle looks of the writer's real-time wait renewed the window;
    /// looking after every commit (the other) doubled the p99 of a stream of new events in a profile of the load tool.
    /// </summary>
    [Fact]
    public void After_a_commit_the_writer_looks_at_the_file_once_the_idle_check_interval_has_passed()
    {
        var path = temp.File("look.db");
        DataFileSql.Execute(path, "PRAGMA journal_mode = WAL; CREATE TABLE items (id INTEGER PRIMARY KEY)");

        using var writer = new SqliteConnection($"Data Source={path};Pooling=False");
        writer.Open();
        var memory = new HandledEventMemory(8, time);
        var digest = SHA256.HashData(Event(1));
        memory.Look(writer, idle: true);
        memory.Remember(1, digest);
        DataFileSql.Execute(path, "INSERT INTO items (id) VALUES (1)");

        time.Advance(SqliteWriter.IdleCheck - TimeSpan.FromTicks(1));
        memory.Look(writer, idle: false);
        Assert.Equal(1, memory.Find(digest));

        time.Advance(TimeSpan.FromTicks(1));
        memory.Look(writer, idle: false);
        Assert.Null(memory.Find(digest));
    }

    /// <summary>
    /// A run's row holds one handled event: a digest remembered for a run replaces the one remembered before it, which no
    /// longer answers for the run. Kept beside the new one (Remember without its Drop, hand mutation), the old event's
    /// redelivery was answered as a no-op from memory though the row had moved on; the store's saves happened to forget
    /// the run first, so no store test saw it.
    /// </summary>
    [Fact]
    public void A_digest_remembered_for_a_run_replaces_the_one_remembered_for_it_before()
    {
        var memory = new HandledEventMemory(8, time);
        using var file = new SqliteConnection("Data Source=:memory:");
        file.Open();
        memory.ForgetIfOthersWrote(file);
        var first = SHA256.HashData(Event(1));
        var second = SHA256.HashData(Encoding.UTF8.GetBytes("{\"run_id\":1,\"group\":{\"id\":457}}"));

        memory.Remember(1, first);
        memory.Remember(1, second);

        Assert.Null(memory.Find(first));
        Assert.Equal(1, memory.Find(second));
        Assert.Equal(1, memory.Count);
    }

    /// <summary>
    /// At its capacity the memory starts over only for a run it does not hold: a new digest for a run it holds replaces
    /// that run's, and the other runs stay remembered.
    /// </summary>
    [Fact]
    public void At_its_capacity_a_new_digest_for_a_run_it_holds_keeps_the_other_runs()
    {
        var memory = new HandledEventMemory(2, time);
        using var file = new SqliteConnection("Data Source=:memory:");
        file.Open();
        memory.ForgetIfOthersWrote(file);
        var other = SHA256.HashData(Event(2));
        var replaced = SHA256.HashData(Encoding.UTF8.GetBytes("{\"run_id\":1,\"group\":{\"id\":457}}"));
        memory.Remember(1, SHA256.HashData(Event(1)));
        memory.Remember(2, other);

        memory.Remember(1, replaced);

        Assert.Equal(2, memory.Find(other));
        Assert.Equal(1, memory.Find(replaced));
        Assert.Equal(2, memory.Count);
    }

    [Fact]
    public async Task Past_its_capacity_the_memory_starts_over_and_the_file_still_answers()
    {
        using var store = Store("capacity.db", capacity: 2);
        var digests = new List<byte[]>();
        for (var run = 1; run <= 3; run++)
        {
            digests.Add(store.DigestEvent(Event(run)));
            await store.SaveAsync(RunHandoffState.New(run), 0, CancellationToken.None, HandledEvent.Of(digests[^1]));
        }

        Assert.InRange(store.RememberedEvents, 1, 2);
        Assert.Equal([1L, 2L, 3L], digests.Select(digest => store.FindHandledEvent(digest)!.Value));
    }

    private SqliteRunStore Store(string name, int capacity = 64) => new(temp.File(name), time, rememberedEvents: capacity);

    /// <summary>
    /// A store that remembers the event it saved run 1 with, and another connection to its file (another process) that
    /// holds the write lock: the store's next write waits for it, and its writer does not look at the file meanwhile.
    /// </summary>
    private async Task<LockedByAnother> RememberedWhileAnotherConnectionHoldsTheLockAsync(string name)
    {
        var store = Store(name);
        var digest = store.DigestEvent(Event(1));
        await store.SaveAsync(RunHandoffState.New(1), 0, CancellationToken.None, HandledEvent.Of(digest));
        Assert.Equal(1, store.FindHandledEvent(digest));

        var other = new SqliteConnection($"Data Source={temp.File(name)};Pooling=False");
        other.Open();
        Execute(other, "BEGIN IMMEDIATE");
        return new LockedByAnother(store, digest, other);
    }

    private sealed record LockedByAnother(SqliteRunStore Store, byte[] Digest, SqliteConnection Other) : IDisposable
    {
        public void Dispose()
        {
            Other.Dispose();
            Store.Dispose();
        }
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static byte[] Event(long runId) => Encoding.UTF8.GetBytes("{\"run_id\":" + runId + ",\"group\":{\"id\":456}}");

    public void Dispose() => temp.Dispose();
}
