using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// The embedded store: two processes on one file claim each due wake-up once, leases live while work goes on,
/// versions stop blind overwrites, and files written by earlier versions still read.
/// </summary>
public sealed class SqliteRunStoreTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));

    /// <summary>
    /// A commit counts only once it is on the disk: with SQLite's NORMAL level the write-ahead log is flushed only at
    /// checkpoints, and a power cut could take back a launch's intent saved before its provider call (then sent again:
    /// a second agent). A power cut cannot be staged here, so the level itself is held.
    /// </summary>
    [Fact]
    public async Task Every_commit_is_flushed_to_the_disk_before_it_counts()
    {
        using var store = new SqliteRunStore(temp.File("flushed.db"), time);

        Assert.Equal(2, await store.CommitFlushLevelAsync()); // FULL
    }

    /// <summary>
    /// A data file written by a later release that marks its rows as a later format is refused at start, before anything
    /// in it is changed: this release would read its rows without what it does not know, and save them back without it.
    /// </summary>
    [Fact]
    public void Data_file_of_a_later_format_is_refused_at_start_and_left_as_it_was()
    {
        var path = temp.File("later.db");
        new SqliteRunStore(path, time).Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Assert.Equal(SqliteRunStore.DataFileFormat, UserVersion(path));
        DataFileSql.Execute(path, $"PRAGMA user_version = {SqliteRunStore.DataFileFormat + 1}; DROP INDEX runs_updated");

        var refused = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => new SqliteRunStore(path, time));

        Assert.Contains($"Handoff:DataPath '{path}' cannot be used: it was written by a later release", refused.Message);
        Assert.Equal(SqliteRunStore.DataFileFormat + 1, UserVersion(path));
        Assert.Equal(0L, Scalar(path, "SELECT count(*) FROM sqlite_master WHERE name = 'runs_updated'"));
    }

    /// <summary>
    /// A data path that names no file starts afresh, which a path read from another working directory or a volume not
    /// mounted yet would do without a word: start-up says so (and not for a file that was there).
    /// </summary>
    [Fact]
    public void A_data_file_made_afresh_is_logged_with_its_full_path_and_one_reopened_is_not()
    {
        var path = temp.File("afresh.db");
        var logger = new Microsoft.Extensions.Logging.Testing.FakeLogger<SqliteRunStore>();

        new SqliteRunStore(path, time, logger).Dispose();
        new SqliteRunStore(path, time, logger).Dispose();

        var created = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "DataFileCreated");
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Warning, created.Level);
        Assert.Contains(Path.GetFullPath(path), created.Message, StringComparison.Ordinal);
    }

    private static long UserVersion(string path) => Scalar(path, "PRAGMA user_version");

    private static long Scalar(string path, string sql)
    {
        using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False;Mode=ReadOnly");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return (long)command.ExecuteScalar()!;
    }

    /// <summary>
    /// Once the data file was found gone from its path, a write is refused before it is made: a file put back there (after
    /// a move and back, the very one the writer holds) must not take writes whose callers were told they failed.
    /// </summary>
    [Fact]
    public async Task Writes_after_the_data_file_was_found_gone_are_not_made_even_into_the_file_put_back()
    {
        var path = temp.File("moved.db");
        var away = temp.File("away.db");
        using (var store = new SqliteRunStore(path, time))
        {
            await store.SaveAsync(Pending(1), 0, CancellationToken.None);
            File.Move(path, away);
            await Assert.ThrowsAsync<Microsoft.Data.Sqlite.SqliteException>(() => store.SaveAsync(Pending(2), 0, CancellationToken.None));
            File.Move(away, path);

            await Assert.ThrowsAsync<Microsoft.Data.Sqlite.SqliteException>(() => store.SaveAsync(Pending(3), 0, CancellationToken.None));
            Assert.True(store.DataFileGone);
        }

        using var reopened = new SqliteRunStore(path, time);
        Assert.NotNull((await reopened.LoadAsync(1, CancellationToken.None)).State);
        Assert.Null((await reopened.LoadAsync(3, CancellationToken.None)).State);
    }

    /// <summary>
    /// A data path naming another application's database (a runs table of its own) stops start-up; it must do so before
    /// anything is written to that database: its journal mode switched to WAL, our wake-up table and indexes added.
    /// </summary>
    [Fact]
    public void Another_applications_database_is_refused_before_anything_is_changed_in_it()
    {
        var path = temp.File("other-application.db");
        using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT, updated_at INTEGER); INSERT INTO runs VALUES (1, 'not ours', 0);";
            command.ExecuteNonQuery();
        }

        var refused = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => new SqliteRunStore(path, time));

        Assert.Contains($"Handoff:DataPath '{path}' cannot be used", refused.Message);
        using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False;Mode=ReadOnly"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "PRAGMA journal_mode";
            Assert.Equal("delete", command.ExecuteScalar());
            command.CommandText = "SELECT group_concat(name) FROM (SELECT name FROM sqlite_master ORDER BY name)";
            Assert.Equal("runs", command.ExecuteScalar());
            command.CommandText = "SELECT group_concat(name) FROM pragma_table_info('runs')";
            Assert.Equal("id,name,updated_at", command.ExecuteScalar());
        }
    }

    /// <summary>
    /// A data file the service may not write (owned by another user after a restore, a read-only mount) is opened
    /// read-only by SQLite without a word: start-up used to go on, /readyz answered 200, and every event, trigger and
    /// wake-up failed (503, SchedulerFailed every second). It is a setting to fix, refused at start.
    /// </summary>
    [Fact]
    public void Data_file_that_can_only_be_opened_read_only_is_refused_at_start()
    {
        var path = temp.File("read-only.db");
        new SqliteRunStore(path, time).Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        using (new ReadOnlyFile(path))
        {
            var refused = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => new SqliteRunStore(path, time));

            Assert.Contains($"Handoff:DataPath '{path}' cannot be used", refused.Message);
            Assert.Contains("read-only", refused.Message);
        }
    }

    [Fact]
    public async Task Run_still_worked_on_under_an_earlier_claim_is_not_claimed_again_when_an_event_makes_it_due()
    {
        using var store = new SqliteRunStore(temp.File("busy.db"), time);
        var version = await store.SaveAsync(Pending(7), 0, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal([7L], await store.ClaimDueWakeupsAsync("me", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));

        // The wake-up's own save leaves nothing due (the row goes, lease and all); then an event makes the run due again.
        version = await store.SaveAsync(RunHandoffState.New(7), version, CancellationToken.None);
        await store.SaveAsync(Pending(7), version, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));

        Assert.Empty(await store.ClaimDueWakeupsAsync("me", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None, busy: [7L]));
        Assert.Equal([7L], await store.ClaimDueWakeupsAsync("me", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));
    }

    /// <summary>
    /// More wake-ups due than a claim takes (a backlog after a restart, or every slot busy): the longest overdue go
    /// first. Claimed newest first (hand mutation: ORDER BY due_at DESC passed every test), a backlog's oldest wake-ups
    /// waited behind every one that came due after them, for as long as the backlog lasted.
    /// </summary>
    [Fact]
    public async Task Claims_take_the_longest_overdue_wake_ups_first_when_more_are_due_than_asked_for()
    {
        using var store = new SqliteRunStore(temp.File("due-order.db"), time);
        foreach (var run in new long[] { 9, 8, 7 }) // due a second apart, the lowest run id last
        {
            await store.SaveAsync(Pending(run), 0, CancellationToken.None);
            time.Advance(TimeSpan.FromSeconds(1));
        }

        time.Advance(TimeSpan.FromMinutes(1));

        Assert.Equal([9L], await store.ClaimDueWakeupsAsync("me", time.GetUtcNow(), TimeSpan.FromMinutes(5), 1, CancellationToken.None));
        Assert.Equal([8L], await store.ClaimDueWakeupsAsync("me", time.GetUtcNow(), TimeSpan.FromMinutes(5), 1, CancellationToken.None));
        Assert.Equal([7L], await store.ClaimDueWakeupsAsync("me", time.GetUtcNow(), TimeSpan.FromMinutes(5), 1, CancellationToken.None));
    }

    [Fact]
    public async Task Concurrent_claims_from_two_stores_never_take_the_same_wake_up()
    {
        var path = temp.File("shared.db");
        using var first = new SqliteRunStore(path, time);
        using var second = new SqliteRunStore(path, time);
        for (var run = 1; run <= 200; run++)
        {
            await first.SaveAsync(Pending(run), 0, CancellationToken.None);
        }

        time.Advance(TimeSpan.FromMinutes(1));
        var claims = await Task.WhenAll(Enumerable.Range(0, 20).Select(i =>
            (i % 2 == 0 ? first : second).ClaimDueWakeupsAsync($"owner-{i % 2}", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None)));

        var all = claims.SelectMany(c => c).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.Equal(200, all.Count);
        Assert.Empty(await first.ClaimDueWakeupsAsync("owner-0", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));

        // An expired lease can be taken over (the claimer died).
        time.Advance(TimeSpan.FromMinutes(6));
        Assert.Equal(16, (await second.ClaimDueWakeupsAsync("owner-1", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None)).Count);
    }

    [Fact]
    public async Task Save_with_a_stale_version_is_refused()
    {
        using var store = new SqliteRunStore(temp.File("versions.db"), time);
        var version = await store.SaveAsync(Pending(1), 0, CancellationToken.None);
        await store.SaveAsync(Pending(1), version, CancellationToken.None);

        await Assert.ThrowsAsync<RunVersionConflictException>(() => store.SaveAsync(Pending(1), version, CancellationToken.None));
        await Assert.ThrowsAsync<RunVersionConflictException>(() => store.SaveAsync(Pending(1), 0, CancellationToken.None));
    }

    [Fact]
    public async Task Stale_save_among_many_concurrent_ones_fails_alone()
    {
        using var store = new SqliteRunStore(temp.File("batch.db"), time);
        var version = await store.SaveAsync(Pending(1), 0, CancellationToken.None);
        version = await store.SaveAsync(Pending(1), version, CancellationToken.None);

        var fresh = Enumerable.Range(2, 200).Select(run => store.SaveAsync(Pending(run), 0, CancellationToken.None)).ToList();
        var stale = store.SaveAsync(Pending(1) with { Launches = [] }, version - 1, CancellationToken.None);

        await Assert.ThrowsAsync<RunVersionConflictException>(() => stale);
        Assert.All(await Task.WhenAll(fresh), saved => Assert.Equal(1, saved));
        Assert.All(await Task.WhenAll(Enumerable.Range(2, 200).Select(run => store.LoadAsync(run, CancellationToken.None))), loaded => Assert.NotNull(loaded.State));
        var kept = await store.LoadAsync(1, CancellationToken.None);
        Assert.Equal(version, kept.Version);
        Assert.Single(kept.State!.Launches); // the stale save wrote nothing, its wake-up included
        Assert.NotNull(await store.GetWakeupAsync(1, CancellationToken.None));
    }

    [Fact]
    public async Task Lease_is_renewed_while_its_run_is_worked_on_so_no_other_process_takes_it_over()
    {
        using var cursor = new FakeCursor();
        using var provider = cursor.Hold("acme/shop");
        var path = temp.File("renewed.db");
        using var factory = new EmbeddedServiceFactory(path, cursor.Url, time);
        using var client = factory.CreateClient();
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(600, ["acme/shop"]));
        var claimedAt = time.GetUtcNow();

        var working = factory.RunScheduleAsync(); // claims run 600 (lease 30 s) and waits on the held provider
        Assert.True(provider.Arrived.Wait(TimeSpan.FromSeconds(10)));
        Assert.Equal(claimedAt + TimeSpan.FromSeconds(30), await LeaseUntil(path, 600));

        time.Advance(TimeSpan.FromSeconds(11)); // past a third of the lease: the renewal runs
        await Eventually.True(async () => await LeaseUntil(path, 600) != claimedAt + TimeSpan.FromSeconds(30));
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromSeconds(30), await LeaseUntil(path, 600));

        // Past the first lease, another process still finds the run taken.
        time.Advance(TimeSpan.FromSeconds(25));
        using var other = new SqliteRunStore(path, time);
        Assert.DoesNotContain(600L, await other.ClaimDueWakeupsAsync("other-process", time.GetUtcNow(), TimeSpan.FromSeconds(30), 16, CancellationToken.None));

        provider.Release();
        await working;
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        Assert.Null(await LeaseUntil(path, 600)); // released once done
    }

    [Fact]
    public async Task Rows_stored_as_text_by_earlier_versions_still_load_and_update()
    {
        var path = temp.File("upgrade.db");
        using var store = new SqliteRunStore(path, time);
        await using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var insert = connection.CreateCommand();
            insert.CommandText = "INSERT INTO runs (run_id, group_id, version, state, updated_at) VALUES (9, 456, 3, $state, 0)";
            insert.Parameters.AddWithValue("$state", System.Text.Json.JsonSerializer.Serialize(Pending(9), Core.Serialization.HandoffJsonContext.Default.RunHandoffState));
            await insert.ExecuteNonQueryAsync();
        }

        var loaded = await store.LoadAsync(9, CancellationToken.None);
        Assert.Equal(3, loaded.Version);
        Assert.Equal("acme/shop", Assert.Single(loaded.State!.Launches).Repository);

        await store.SaveAsync(loaded.State with { Launches = [] }, loaded.Version, CancellationToken.None);
        Assert.Empty((await store.LoadAsync(9, CancellationToken.None)).State!.Launches);
        Assert.Single(await store.ListRecentAsync(10, CancellationToken.None));
    }

    [Fact]
    public async Task A_handled_event_digest_is_kept_while_saves_keep_it_and_gone_once_one_does_not()
    {
        using var store = new SqliteRunStore(temp.File("handled.db"), time);
        var digest = store.DigestEvent("{\"run_id\":7}"u8);

        var version = await store.SaveAsync(Pending(7), 0, CancellationToken.None, HandledEvent.Of(digest));
        Assert.Equal(7, store.FindHandledEvent(digest));
        Assert.Null(store.FindHandledEvent(store.DigestEvent("{\"run_id\": 7}"u8))); // other bytes, other digest

        version = await store.SaveAsync(Pending(7), version, CancellationToken.None, HandledEvent.Kept);
        Assert.Equal(7, store.FindHandledEvent(digest));

        await store.SaveAsync(Pending(7), version, CancellationToken.None);
        Assert.Null(store.FindHandledEvent(digest));
    }

    [Fact]
    public async Task A_digest_is_trusted_only_by_the_store_that_made_it()
    {
        var path = temp.File("two-processes.db");
        using var first = new SqliteRunStore(path, time);
        using var second = new SqliteRunStore(path, time);
        var bytes = "{\"run_id\":8}"u8.ToArray();

        await first.SaveAsync(Pending(8), 0, CancellationToken.None, HandledEvent.Of(first.DigestEvent(bytes)));

        Assert.Equal(8, first.FindHandledEvent(first.DigestEvent(bytes)));
        Assert.Null(second.FindHandledEvent(second.DigestEvent(bytes)));
    }

    [Fact]
    public async Task A_file_from_before_handled_event_digests_gains_the_column_and_keeps_its_rows()
    {
        var path = temp.File("before-digests.db");
        await using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var create = connection.CreateCommand();
            create.CommandText = """
                CREATE TABLE runs (run_id INTEGER PRIMARY KEY, group_id INTEGER, version INTEGER NOT NULL, state TEXT NOT NULL, updated_at INTEGER NOT NULL);
                INSERT INTO runs (run_id, group_id, version, state, updated_at) VALUES (9, 456, 2, $state, 0);
                """;
            create.Parameters.AddWithValue("$state", System.Text.Json.JsonSerializer.Serialize(Pending(9), Core.Serialization.HandoffJsonContext.Default.RunHandoffState));
            await create.ExecuteNonQueryAsync();
        }

        using var store = new SqliteRunStore(path, time);
        var loaded = await store.LoadAsync(9, CancellationToken.None);
        var digest = store.DigestEvent("{\"run_id\":9}"u8);
        Assert.Null(store.FindHandledEvent(digest));

        await store.SaveAsync(loaded.State!, loaded.Version, CancellationToken.None, HandledEvent.Of(digest));

        Assert.Equal(9, store.FindHandledEvent(digest));
        using var again = new SqliteRunStore(path, time); // a second start finds the column there
        Assert.Equal(3, (await again.LoadAsync(9, CancellationToken.None)).Version);
    }

    [Fact]
    public async Task Redelivery_lookup_reads_the_digests_index_alone_also_on_a_file_an_earlier_release_indexed()
    {
        var path = temp.File("covering.db");
        using (new SqliteRunStore(path, time))
        {
        }

        // An earlier release on the same file (a hand-over) creates the narrower index it knows.
        await using (var earlier = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False"))
        {
            await earlier.OpenAsync();
            await using var create = earlier.CreateCommand();
            create.CommandText = "CREATE INDEX IF NOT EXISTS runs_handled_event ON runs (handled_event) WHERE handled_event IS NOT NULL";
            await create.ExecuteNonQueryAsync();
        }

        using var store = new SqliteRunStore(path, time);
        var digest = store.DigestEvent("{\"run_id\":10}"u8);
        await store.SaveAsync(Pending(10), 0, CancellationToken.None, HandledEvent.Of(digest));
        Assert.Equal(10, store.FindHandledEvent(digest));

        // The run's versions come after its state in the row: read from the table, they cost a walk through the state's pages.
        await using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False");
        await connection.OpenAsync();
        await using var plan = connection.CreateCommand();
        plan.CommandText = "EXPLAIN QUERY PLAN " + SqliteRunStore.HandledEventQuery;
        plan.Parameters.AddWithValue("$digest", digest);
        await using var reader = await plan.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        Assert.Equal("SEARCH runs USING COVERING INDEX runs_handled_event_versions (handled_event=?)", reader.GetString(3));
    }

    /// <summary>
    /// A process whose lease lapsed (paused, or slower than its lease) and whose run another process then claimed may still
    /// be working on it: its renewals extend only a lease it holds, never the new owner's. Extended, the new owner's claim
    /// would outlive that owner by as long as the old one kept renewing, and the run would wait that long to be taken over.
    /// </summary>
    [Fact]
    public async Task Renewal_by_a_process_whose_lease_lapsed_leaves_the_new_owners_lease_as_it_is()
    {
        var path = temp.File("renewal-owner.db");
        using var first = new SqliteRunStore(path, time);
        using var second = new SqliteRunStore(path, time);
        await ClaimedBySecondAfterFirstsLeaseLapsedAsync(first, second);

        await first.RenewLeasesAsync("first", [7L], time.GetUtcNow() + TimeSpan.FromHours(1), CancellationToken.None);

        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(5), await LeaseUntil(path, 7));
        time.Advance(TimeSpan.FromMinutes(6)); // the second process died with its claim: once it lapses, the run is taken over
        Assert.Equal([7L], await first.ClaimDueWakeupsAsync("third", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));
    }

    /// <summary>
    /// The same process, done with the run after its lease lapsed and another process claimed it, releases only its own
    /// claim: the new owner's stays, and no third process claims the run while that owner is still working on it.
    /// </summary>
    [Fact]
    public async Task Release_by_a_process_whose_lease_lapsed_leaves_the_new_owners_claim()
    {
        var path = temp.File("release-owner.db");
        using var first = new SqliteRunStore(path, time);
        using var second = new SqliteRunStore(path, time);
        await ClaimedBySecondAfterFirstsLeaseLapsedAsync(first, second);

        await first.ReleaseWakeupAsync(7, "first", CancellationToken.None);

        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(5), await LeaseUntil(path, 7));
        Assert.Empty(await first.ClaimDueWakeupsAsync("third", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));
    }

    /// <summary>
    /// A claim holds until the moment its lease ends (lease_until), that moment included: another process on the file
    /// finds the run taken then, and takes it over a millisecond later, as a lapsed claim is taken over.
    /// </summary>
    [Fact]
    public async Task A_claim_is_held_until_its_lease_ends_and_taken_over_just_after()
    {
        var path = temp.File("lease-bound.db");
        using var first = new SqliteRunStore(path, time);
        using var second = new SqliteRunStore(path, time);
        await first.SaveAsync(Pending(7), 0, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var leaseEnds = time.GetUtcNow() + TimeSpan.FromMinutes(5);
        Assert.Equal([7L], await first.ClaimDueWakeupsAsync("first", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));

        Assert.Empty(await second.ClaimDueWakeupsAsync("second", leaseEnds, TimeSpan.FromMinutes(5), 16, CancellationToken.None));
        Assert.Equal(leaseEnds, await LeaseUntil(path, 7));
        Assert.Equal([7L], await second.ClaimDueWakeupsAsync("second", leaseEnds + TimeSpan.FromMilliseconds(1), TimeSpan.FromMinutes(5), 16, CancellationToken.None));
    }

    /// <summary>Run 7's wake-up, claimed by the first process ("first"), then, its lease lapsed, by the second ("second").</summary>
    private async Task ClaimedBySecondAfterFirstsLeaseLapsedAsync(SqliteRunStore first, SqliteRunStore second)
    {
        await first.SaveAsync(Pending(7), 0, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal([7L], await first.ClaimDueWakeupsAsync("first", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));
        time.Advance(TimeSpan.FromMinutes(6));
        Assert.Equal([7L], await second.ClaimDueWakeupsAsync("second", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));
    }

    /// <summary>
    /// A run retention deleted is not made anew by a first save (one decided on "no run", in this process or another on
    /// the file, before the sweep's transaction): the save fails as a conflict, so its turn is decided again and meets the
    /// tombstone, and nothing of it is written, its wake-up included.
    /// </summary>
    [Fact]
    public async Task First_save_of_a_run_retention_deleted_is_refused_and_its_tombstone_kept()
    {
        using var store = new SqliteRunStore(temp.File("tombstone-insert.db"), time);
        await SavedThenSweptAsync(store, 9);

        await Assert.ThrowsAsync<RunVersionConflictException>(() => store.SaveAsync(Pending(9), 0, CancellationToken.None));

        var loaded = await store.LoadAsync(9, CancellationToken.None);
        Assert.Null(loaded.State);
        Assert.Equal(time.GetUtcNow(), loaded.Deleted?.DeletedAt);
        Assert.Null(await store.GetWakeupAsync(9, CancellationToken.None));
    }

    /// <summary>
    /// A tombstone is dropped once it is older than the cutoff it is asked about, and not a moment before: the sweep asks
    /// with <see cref="RunRetention.TombstoneLifetime"/> ago, so a redelivery within the lifetime still meets it.
    /// </summary>
    [Fact]
    public async Task Tombstone_is_dropped_only_once_it_is_older_than_the_cutoff()
    {
        using var store = new SqliteRunStore(temp.File("tombstone-cutoff.db"), time);
        var deletedAt = await SavedThenSweptAsync(store, 9);

        Assert.Equal(0, await store.DropTombstonesAsync(deletedAt - TimeSpan.FromHours(23), 100, CancellationToken.None));
        Assert.Equal(0, await store.DropTombstonesAsync(deletedAt, 100, CancellationToken.None));
        Assert.NotNull((await store.LoadAsync(9, CancellationToken.None)).Deleted);

        Assert.Equal(1, await store.DropTombstonesAsync(deletedAt + TimeSpan.FromMilliseconds(1), 100, CancellationToken.None));
        Assert.Null((await store.LoadAsync(9, CancellationToken.None)).Deleted);
    }

    /// <summary>
    /// A downgrade, or the hand-over of a file from this release to an earlier one (both on the file at once): the earlier
    /// release knows no tombstones, reads a run retention deleted as one it never saw, and a redelivered completion event
    /// then launched its repositories again (reproduced with the release before retention: two agents launched again for
    /// a deleted run). Its first save of such a run must fail, as that release saves launches before making them: the
    /// file itself refuses the row while the tombstone is there. The file here is the earlier release's, built by its SQL.
    /// </summary>
    [Fact]
    public async Task An_earlier_release_on_the_file_cannot_make_a_run_retention_deleted_anew()
    {
        var path = temp.File("downgrade.db");
        // The earlier release's first save of a run (SqliteRunStore.Write before retention), word for word.
        const string EarlierFirstSave = """
            INSERT INTO runs (run_id, group_id, version, state, handled_event, handled_version, view, view_version, updated_at)
            VALUES ($run, $group, 1, $state, $handled, 1, $view, 1, $now) ON CONFLICT (run_id) DO NOTHING
            """;
        async Task<int> EarlierSaveAsync(long runId)
        {
            await using var earlier = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False");
            await earlier.OpenAsync();
            await using var insert = earlier.CreateCommand();
            insert.CommandText = EarlierFirstSave;
            insert.Parameters.AddWithValue("$run", runId);
            insert.Parameters.AddWithValue("$group", 456);
            insert.Parameters.AddWithValue("$state", System.Text.Encoding.UTF8.GetBytes(System.Text.Json.JsonSerializer.Serialize(
                Settled(runId), Core.Serialization.HandoffJsonContext.Default.RunHandoffState)));
            insert.Parameters.AddWithValue("$handled", DBNull.Value);
            insert.Parameters.AddWithValue("$view", DBNull.Value);
            insert.Parameters.AddWithValue("$now", time.GetUtcNow().ToUnixTimeMilliseconds());
            return await insert.ExecuteNonQueryAsync();
        }

        await using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var create = connection.CreateCommand();
            create.CommandText = """
                PRAGMA journal_mode = WAL;
                CREATE TABLE runs (run_id INTEGER PRIMARY KEY, group_id INTEGER, version INTEGER NOT NULL, state TEXT NOT NULL, updated_at INTEGER NOT NULL,
                    handled_event BLOB, handled_version INTEGER, view BLOB, view_version INTEGER);
                CREATE INDEX runs_updated ON runs (updated_at DESC);
                CREATE TABLE wakeups (run_id INTEGER PRIMARY KEY, due_at INTEGER NOT NULL, lease_owner TEXT, lease_until INTEGER);
                CREATE INDEX wakeups_due ON wakeups (due_at);
                CREATE INDEX runs_handled_event ON runs (handled_event) WHERE handled_event IS NOT NULL;
                """;
            await create.ExecuteNonQueryAsync();
        }

        Assert.Equal(1, await EarlierSaveAsync(9));
        using (var store = new SqliteRunStore(path, time))
        {
            var loaded = await store.LoadAsync(9, CancellationToken.None);
            Assert.Equal(1, loaded.Version);
            Assert.Equal(1, await store.DeleteSettledAsync([new SweepCandidate(9, loaded.Version, time.GetUtcNow(), loaded.State)], time.GetUtcNow(), CancellationToken.None));
        }

        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        var refused = await Assert.ThrowsAsync<Microsoft.Data.Sqlite.SqliteException>(() => EarlierSaveAsync(9));
        Assert.Equal(SQLitePCL.raw.SQLITE_CONSTRAINT, refused.SqliteErrorCode);
        Assert.Equal(1, await EarlierSaveAsync(10)); // any other run as before

        using var reopened = new SqliteRunStore(path, time);
        var deleted = await reopened.LoadAsync(9, CancellationToken.None);
        Assert.Null(deleted.State);
        Assert.Equal(time.GetUtcNow(), deleted.Deleted?.DeletedAt);
        Assert.Equal(1, (await reopened.LoadAsync(10, CancellationToken.None)).Version);
    }

    /// <summary>
    /// A wake-up that failed keeps its lease, no longer renewed, so that its run is tried again once the lease lapses
    /// (WakeupScheduler): the renewal of the runs still being worked on extends their leases only, not every lease the
    /// process holds. Extended with them, the failed run's lease would never lapse while the process works on others.
    /// </summary>
    [Fact]
    public async Task Renewal_extends_only_the_leases_of_the_runs_it_names()
    {
        var path = temp.File("renewal-named.db");
        using var store = new SqliteRunStore(path, time);
        await store.SaveAsync(Pending(7), 0, CancellationToken.None);
        await store.SaveAsync(Pending(8), 0, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var claimedAt = time.GetUtcNow();
        Assert.Equal([7L, 8L], (await store.ClaimDueWakeupsAsync("me", claimedAt, TimeSpan.FromMinutes(5), 16, CancellationToken.None)).Order());

        await store.RenewLeasesAsync("me", [7L], claimedAt + TimeSpan.FromHours(1), CancellationToken.None);

        Assert.Equal(claimedAt + TimeSpan.FromHours(1), await LeaseUntil(path, 7));
        Assert.Equal(claimedAt + TimeSpan.FromMinutes(5), await LeaseUntil(path, 8));
        time.Advance(TimeSpan.FromMinutes(6));
        Assert.Equal([8L], await store.ClaimDueWakeupsAsync("me", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));
    }

    /// <summary>
    /// The wake-up of a run with no row is deleted (nothing can be done for it); one whose run has a row, saved since the
    /// wake-up found none (a run's row and wake-up are written together), is kept: deleted, its retries would never run.
    /// </summary>
    [Fact]
    public async Task Orphan_wake_up_delete_keeps_the_wake_up_of_a_run_that_has_a_row()
    {
        using var store = new SqliteRunStore(temp.File("orphan.db"), time);
        await store.SaveAsync(Pending(7), 0, CancellationToken.None);

        Assert.Equal(0, await store.DeleteOrphanWakeupAsync(7, CancellationToken.None));

        Assert.Equal(time.GetUtcNow().AddSeconds(30), await store.GetWakeupAsync(7, CancellationToken.None));
    }

    /// <summary>
    /// A process done with one run gives back that claim only: the runs it is still working on stay leased to it, so no
    /// other process on the file claims them (and launches their repositories a second time) meanwhile.
    /// </summary>
    [Fact]
    public async Task Release_of_one_run_leaves_the_owners_other_claims_in_place()
    {
        var path = temp.File("release-one.db");
        using var first = new SqliteRunStore(path, time);
        using var second = new SqliteRunStore(path, time);
        await first.SaveAsync(Pending(7), 0, CancellationToken.None);
        await first.SaveAsync(Pending(8), 0, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var claimedAt = time.GetUtcNow();
        Assert.Equal([7L, 8L], (await first.ClaimDueWakeupsAsync("first", claimedAt, TimeSpan.FromMinutes(5), 16, CancellationToken.None)).Order());

        await first.ReleaseWakeupAsync(7, "first", CancellationToken.None);

        Assert.Null(await LeaseUntil(path, 7));
        Assert.Equal(claimedAt + TimeSpan.FromMinutes(5), await LeaseUntil(path, 8));
        Assert.Equal([7L], await second.ClaimDueWakeupsAsync("second", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));
    }

    /// <summary>The recent runs (the status page's list): the most recently changed first, no more than asked for.</summary>
    [Fact]
    public async Task Recent_runs_are_the_most_recently_changed_newest_first_up_to_the_limit()
    {
        using var store = new SqliteRunStore(temp.File("recent.db"), time);
        var versions = new Dictionary<long, long>();
        foreach (var run in new long[] { 1, 2, 3 })
        {
            versions[run] = await store.SaveAsync(Pending(run), 0, CancellationToken.None);
            time.Advance(TimeSpan.FromSeconds(1));
        }

        await store.SaveAsync(Pending(1), versions[1], CancellationToken.None); // run 1 changed last

        Assert.Equal([1L, 3L], (await store.ListRecentAsync(2, CancellationToken.None)).Select(run => run.RunId));
        Assert.Equal([1L, 3L, 2L], (await store.ListRecentAsync(10, CancellationToken.None)).Select(run => run.RunId));
    }

    /// <summary>
    /// The retention sweep's candidates: runs last changed at or before the cutoff, after the cursor (the run the cursor
    /// names is not read again), and never a run with a wake-up, however old: it has retries or status polls pending.
    /// </summary>
    [Fact]
    public async Task Sweep_candidates_are_runs_changed_by_the_cutoff_after_the_cursor_without_a_wake_up()
    {
        using var store = new SqliteRunStore(temp.File("candidates.db"), time);
        var changedAt = time.GetUtcNow();
        await store.SaveAsync(Settled(7), 0, CancellationToken.None);
        await store.SaveAsync(Pending(8), 0, CancellationToken.None);
        await store.SaveAsync(Settled(9), 0, CancellationToken.None);
        var at = changedAt.ToUnixTimeMilliseconds();

        Assert.Equal([7L, 9L], store.ListSweepCandidates(changedAt, (long.MinValue, long.MinValue), 10).Select(candidate => candidate.RunId));
        Assert.Equal([9L], store.ListSweepCandidates(changedAt, (at, 7), 10).Select(candidate => candidate.RunId));
        Assert.Empty(store.ListSweepCandidates(changedAt - TimeSpan.FromMilliseconds(1), (long.MinValue, long.MinValue), 10));
    }

    /// <summary>
    /// The sweep deletes a run only if it has no wake-up, even one passed to it at the version it has: a run with a retry
    /// or a status poll pending is never deleted (and its tombstone would refuse the retry's save).
    /// </summary>
    [Fact]
    public async Task Run_with_a_wake_up_is_not_deleted_even_when_asked_at_its_version()
    {
        using var store = new SqliteRunStore(temp.File("pending-kept.db"), time);
        var version = await store.SaveAsync(Pending(7), 0, CancellationToken.None);

        Assert.Equal(0, await store.DeleteSettledAsync([new SweepCandidate(7, version, time.GetUtcNow(), null)], time.GetUtcNow(), CancellationToken.None));

        var kept = await store.LoadAsync(7, CancellationToken.None);
        Assert.Equal(version, kept.Version);
        Assert.Null(kept.Deleted);
        Assert.NotNull(await store.GetWakeupAsync(7, CancellationToken.None));
    }

    private static async Task<DateTimeOffset?> LeaseUntil(string path, long runId)
    {
        await using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT lease_until FROM wakeups WHERE run_id = $run";
        command.Parameters.AddWithValue("$run", runId);
        return await command.ExecuteScalarAsync() is long millis ? DateTimeOffset.FromUnixTimeMilliseconds(millis) : null;
    }

    /// <summary>A run with nothing pending: the retention sweep may delete it.</summary>
    private static RunHandoffState Settled(long runId) => RunHandoffState.New(runId) with { Snapshot = new HandoffDapr.Core.Model.RunSnapshot(runId) };

    /// <summary>The run saved settled, then deleted by the retention sweep at once; returns when (its tombstone's time).</summary>
    private async Task<DateTimeOffset> SavedThenSweptAsync(SqliteRunStore store, long runId)
    {
        var version = await store.SaveAsync(Settled(runId), 0, CancellationToken.None);
        var deletedAt = time.GetUtcNow();
        Assert.Equal(1, await store.DeleteSettledAsync([new SweepCandidate(runId, version, deletedAt, null)], deletedAt, CancellationToken.None));
        return deletedAt;
    }

    private RunHandoffState Pending(long runId) => RunHandoffState.New(runId) with
    {
        Snapshot = new HandoffDapr.Core.Model.RunSnapshot(runId),
        Launches = [new RepositoryLaunch("acme/shop", "github", 42, "cursor_background_agent", 1, "b-abc123", null, true, null, LaunchPhase.RetryScheduled, 1, null, time.GetUtcNow().AddSeconds(30), null, "provider_unavailable", time.GetUtcNow())],
    };

    public void Dispose() => temp.Dispose();
}
