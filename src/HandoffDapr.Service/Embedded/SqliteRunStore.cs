using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Configuration;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Embedded;

/// <summary>
/// Embedded mode's state: one row per run (UTF-8 JSON of <see cref="RunHandoffState"/>, stored as written, with a
/// version for optimistic concurrency) and one wake-up row per run that has retries, reconciliations or status polls
/// pending, in one WAL-mode file. Rows stored as TEXT by earlier versions read the same.
/// A run's row may also hold a digest of the completion event it already handled (<see cref="HandledEvent"/>), so
/// that a redelivery of those exact bytes is recognised without reading the run, and the run's view as the API writes
/// it, so that a read of the run is one column sent as it is.
/// </summary>
public sealed partial class SqliteRunStore : IDisposable
{
    private readonly string connectionString;
    private readonly string probeConnectionString;
    private readonly TimeProvider timeProvider;
    private readonly ILogger logger;

    // SQLite admits one writer at a time; contending writers get SQLITE_BUSY, which Microsoft.Data.Sqlite answers
    // by sleeping and retrying. One writer thread for the whole process keeps them from ever meeting inside SQLite.
    private readonly SqliteWriter writer;
    private readonly SqliteCheckpointer checkpointer;

    // Read sessions kept for reuse; more may be open at a peak, the extra ones are closed after use.
    private const int MaxIdleReaders = 32;
    private readonly ConcurrentBag<ReadSession> readers = new();

    // Event digests start with a random prefix of this process: a digest is trusted only by the process (hence the
    // settings and the code) that judged its event a no-op. After a restart old digests match nothing.
    private readonly byte[] digestPrefix = RandomNumberGenerator.GetBytes(16);

    private readonly HandledEventMemory handledEvents;
    private readonly DataFileWatch dataFile;

    /// <param name="rememberedEvents">
    /// How many runs' handled-event digests this process keeps in memory (<see cref="HandledEventMemory"/>); 0 reads the file for each.
    /// </param>
    public SqliteRunStore(string dataPath, TimeProvider timeProvider, ILogger<SqliteRunStore>? logger = null, int rememberedEvents = 0)
    {
        this.timeProvider = timeProvider;
        handledEvents = new HandledEventMemory(rememberedEvents, timeProvider);
        connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = dataPath,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = true,
            // The busy timeout is Microsoft.Data.Sqlite's default; SqliteWriter's shutdown wait (40 s) is sized past it.
            DefaultTimeout = 30,
        }.ToString();
        probeConnectionString = new SqliteConnectionStringBuilder(connectionString) { Mode = SqliteOpenMode.ReadWrite, Pooling = false, DefaultTimeout = 5 }.ToString();
        var created = false;
        try
        {
            var directory = Path.GetDirectoryName(Path.GetFullPath(dataPath));
            if (!string.IsNullOrEmpty(directory))
            {
                Directory.CreateDirectory(directory);
            }

            created = !File.Exists(dataPath);
            Initialize();
        }
        catch (Exception exception) when (exception is IOException or UnauthorizedAccessException or SqliteException)
        {
            // A setting that points somewhere unusable: start-up names it rather than failing with a stack trace. Any
            // SQLite error here is the file's: a folder, no permission, not a database, a damaged one (SQLITE_CORRUPT), a
            // device (SQLITE_IOERR), or another application's database whose tables are not ours (SQLITE_ERROR).
            throw new OptionsValidationException(
                HandoffOptions.SectionName, typeof(HandoffOptions), [$"Handoff:DataPath '{dataPath}' cannot be used: {exception.Message}"]);
        }

        this.logger = logger ?? NullLogger<SqliteRunStore>.Instance;
        dataFile = new DataFileWatch(dataPath, fullPath => LogDataFileGone(this.logger, fullPath));
        if (created)
        {
            // A path that names no file starts afresh without a word otherwise: a relative path read from another working
            // directory, a volume not mounted yet, a setting mistyped. Every pending retry and handled event is elsewhere.
            LogDataFileCreated(this.logger, dataFile.FullPath);
        }

        checkpointer = new SqliteCheckpointer(Open(), exception => LogCheckpointFailed(this.logger, exception));
        writer = new SqliteWriter(OpenForWriting(), committed: checkpointer.Committed, watch: handledEvents.Look, dataFile: dataFile);
    }

    /// <summary>The writer found the data file gone from its path: nothing is read or written until restart.</summary>
    public bool DataFileGone => dataFile.Gone;

    /// <summary>Checkpoints of the write-ahead log run so far, by this process's checkpointer.</summary>
    internal (long Background, long CatchUps, long BusyCatchUps) Checkpoints => checkpointer.Checkpoints;

    /// <summary>SQLite's <c>synchronous</c> level on the connection that commits (2: FULL), as <see cref="Open"/> set it.</summary>
    internal Task<long> CommitFlushLevelAsync() => writer.WriteAsync((connection, transaction) =>
    {
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "PRAGMA synchronous";
        return (long)command.ExecuteScalar()!;
    });

    public void Dispose()
    {
        writer.Dispose();
        checkpointer.Dispose();
        while (readers.TryTake(out var session))
        {
            session.Dispose();
        }
    }

    private void Initialize()
    {
        using var connection = Open();
        if (SQLitePCL.raw.sqlite3_db_readonly(connection.Handle, "main") == 1)
        {
            // SQLite opens a file it may not write (its owner another user, say after a restore, or a read-only mount)
            // read-only without a word: the service would start and read ready, and every event, trigger and wake-up fail.
            throw new SqliteException("the file can only be opened read-only (its permissions, or a read-only mount)", SQLitePCL.raw.SQLITE_READONLY);
        }

        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA user_version";
        if (command.ExecuteScalar() is long format and > DataFileFormat)
        {
            // Rows of a later format would be read without what this release does not know, and saved back without it.
            throw new SqliteException(
                $"it was written by a later release (data file format {format}; this release reads up to {DataFileFormat})", SQLitePCL.raw.SQLITE_ERROR);
        }

        // Another application's database (a runs table that is not ours) is refused before anything in it is changed:
        // its journal mode, our tables and indexes, the columns later releases add.
        command.CommandText = """
            SELECT count(*), count(*) FILTER (WHERE name IN ('run_id', 'group_id', 'version', 'state', 'updated_at'))
            FROM pragma_table_info('runs')
            """;
        using (var reader = command.ExecuteReader())
        {
            reader.Read();
            if (reader.GetInt64(0) > 0 && reader.GetInt64(1) < 5)
            {
                throw new SqliteException("its runs table is not this service's (another application's database?)", SQLitePCL.raw.SQLITE_ERROR);
            }
        }

        command.CommandText = """
            PRAGMA journal_mode = WAL;
            CREATE TABLE IF NOT EXISTS runs (
                run_id     INTEGER PRIMARY KEY,
                group_id   INTEGER,
                version    INTEGER NOT NULL,
                state      TEXT    NOT NULL,
                updated_at INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS runs_updated ON runs (updated_at DESC);
            CREATE TABLE IF NOT EXISTS wakeups (
                run_id      INTEGER PRIMARY KEY,
                due_at      INTEGER NOT NULL,
                lease_owner TEXT,
                lease_until INTEGER
            );
            CREATE INDEX IF NOT EXISTS wakeups_due ON wakeups (due_at);
            CREATE TABLE IF NOT EXISTS deleted_runs (
                run_id     INTEGER PRIMARY KEY,
                group_id   INTEGER,
                deleted_at INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS deleted_runs_at ON deleted_runs (deleted_at);
            -- Releases from before retention know no tombstones: on this file (a downgrade, or a hand-over with both on it)
            -- they would take a deleted run for a new one and launch it again. Their first save of it fails here instead;
            -- this release's own first save never gets here (its INSERT checks deleted_runs, and fails as a conflict).
            CREATE TRIGGER IF NOT EXISTS runs_not_deleted BEFORE INSERT ON runs
            WHEN EXISTS (SELECT 1 FROM deleted_runs WHERE run_id = NEW.run_id)
            BEGIN SELECT RAISE(ABORT, 'the run was deleted by retention (deleted_runs)'); END;
            """;
        command.ExecuteNonQuery();

        // Files from before the handled-event digest and the stored view gain their columns; IMMEDIATE, so two
        // processes starting on one file do not both add them. handled_version and view_version are the row versions
        // the digest and the view were written for: a release from before them, saving the run on the same file (a
        // hand-over), leaves both behind, and neither is used again. view_format and view_format_version say which shape
        // of the view (ViewFormat) was written for which row version: a view of an earlier shape (before refused) is not
        // sent, whether stored before this release or by an earlier one saving on the same file since; the read builds it.
        using var transaction = connection.BeginTransaction(deferred: false);
        command.Transaction = transaction;
        foreach (var (column, type) in new[] { ("handled_event", "BLOB"), ("handled_version", "INTEGER"), ("view", "BLOB"), ("view_version", "INTEGER"), ("view_format", "INTEGER"), ("view_format_version", "INTEGER") })
        {
            command.CommandText = $"SELECT count(*) FROM pragma_table_info('runs') WHERE name = '{column}'";
            if (command.ExecuteScalar() is 0L)
            {
                command.CommandText = $"ALTER TABLE runs ADD COLUMN {column} {type}";
                command.ExecuteNonQuery();
            }
        }

        // The digest's index carries the versions too, so a redelivery is answered from the index alone: the row's
        // versions come after its state, which SQLite would otherwise read through to reach them. (An earlier release
        // on the same file recreates its narrower index; both are kept up to date and either answers.)
        command.CommandText = """
            DROP INDEX IF EXISTS runs_handled_event;
            CREATE INDEX IF NOT EXISTS runs_handled_event_versions ON runs (handled_event, handled_version, version) WHERE handled_event IS NOT NULL;
            """;
        command.ExecuteNonQuery();
        command.CommandText = $"PRAGMA user_version = {DataFileFormat}";
        command.ExecuteNonQuery();
        transaction.Commit();
    }

    /// <summary>
    /// The data file's format (SQLite's <c>user_version</c>; 0 before it was kept). A later release that changes rows so
    /// that this one would lose something saving them raises it, and this release then refuses the file at start; files
    /// of format 0 and 1 are the same.
    /// </summary>
    internal const long DataFileFormat = 1;

    /// <summary>This process's digest of a completion event's data, as <see cref="FindHandledEvent"/> and a save take it.</summary>
    public byte[] DigestEvent(ReadOnlySpan<byte> eventData)
    {
        // SHA-256 of prefix and data in one call: half the time of an HMAC, and the prefix need not be secret.
        var buffer = ArrayPool<byte>.Shared.Rent(digestPrefix.Length + eventData.Length);
        try
        {
            digestPrefix.CopyTo(buffer, 0);
            eventData.CopyTo(buffer.AsSpan(digestPrefix.Length));
            return SHA256.HashData(buffer.AsSpan(0, digestPrefix.Length + eventData.Length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>The run whose row says it handled the event of this digest, and that the same bytes again would change nothing.</summary>
    public long? FindHandledEvent(byte[] digest)
    {
        if (handledEvents.Find(digest) is { } remembered)
        {
            return remembered;
        }

        Interlocked.Increment(ref handledEventFileReads);
        return Read(session => session.FindHandledEvent(digest));
    }

    private long handledEventFileReads;

    /// <summary>Redelivery lookups that read the file, memory not knowing the digest.</summary>
    internal long HandledEventFileReads => Interlocked.Read(ref handledEventFileReads);

    /// <summary>How many runs' handled events are held in memory now.</summary>
    internal int RememberedEvents => handledEvents.Count;

    /// <summary>
    /// The shape of the stored view this release writes and sends: 1 before <c>refused</c>, 2 with it. A release that
    /// changes the view's shape raises it, so that views stored in the earlier shape are built again from the state.
    /// </summary>
    public const int ViewFormat = 2;

    /// <summary>The run's group and its stored view, written with its latest state in this release's shape; null when there is none (no run, or an older row).</summary>
    public StoredView? LoadView(long runId) => Read(session => session.LoadView(runId));

    /// <exception cref="UnreadableRunStateException">The run's row holds a state this version cannot read.</exception>
    public Task<StoredRun> LoadAsync(long runId, CancellationToken cancellationToken) => Task.FromResult(Read(session => session.Load(runId)));

    private T Read<T>(Func<ReadSession, T> read)
    {
        dataFile.ThrowIfGone();
        var session = readers.TryTake(out var idle) ? idle : new ReadSession(OpenForRead());
        try
        {
            var result = read(session);
            // Back to the pool only after a clean read; a session that failed is not trusted again.
            if (readers.Count < MaxIdleReaders)
            {
                readers.Add(session);
            }
            else
            {
                session.Dispose();
            }

            return result;
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>The redelivery lookup; the digest's index covers it (<c>runs_handled_event_versions</c>).</summary>
    internal const string HandledEventQuery = "SELECT run_id FROM runs WHERE handled_event = $digest AND handled_version = version";

    /// <summary>A read connection with its queries prepared once: a read costs a bind and a step, not a parse.</summary>
    private sealed class ReadSession : IDisposable
    {
        private readonly SqliteConnection connection;
        private readonly SqliteCommand command;
        private readonly SqliteParameter run;
        private readonly SqliteCommand handledCommand;
        private readonly SqliteParameter handledDigest;
        private readonly SqliteCommand viewCommand;
        private readonly SqliteParameter viewRun;
        private readonly SqliteCommand deletedCommand;
        private readonly SqliteParameter deletedRun;

        public ReadSession(SqliteConnection connection)
        {
            this.connection = connection;
            command = connection.CreateCommand();
            command.CommandText = "SELECT version, state FROM runs WHERE run_id = $run";
            run = command.Parameters.Add("$run", SqliteType.Integer);
            command.Prepare();
            deletedCommand = connection.CreateCommand();
            deletedCommand.CommandText = "SELECT group_id, deleted_at FROM deleted_runs WHERE run_id = $run";
            deletedRun = deletedCommand.Parameters.Add("$run", SqliteType.Integer);
            deletedCommand.Prepare();
            handledCommand = connection.CreateCommand();
            handledCommand.CommandText = HandledEventQuery;
            handledDigest = handledCommand.Parameters.Add("$digest", SqliteType.Blob);
            handledCommand.Prepare();
            viewCommand = connection.CreateCommand();
            viewCommand.CommandText = "SELECT group_id, view FROM runs WHERE run_id = $run AND view_format_version = version AND view_format = $format";
            viewRun = viewCommand.Parameters.Add("$run", SqliteType.Integer);
            viewCommand.Parameters.AddWithValue("$format", ViewFormat);
            viewCommand.Prepare();
        }

        public StoredView? LoadView(long runId)
        {
            viewRun.Value = runId;
            using var reader = viewCommand.ExecuteReader();
            return reader.Read() && !reader.IsDBNull(1)
                ? new StoredView(reader.IsDBNull(0) ? null : reader.GetInt64(0), reader.GetFieldValue<byte[]>(1))
                : null;
        }

        public long? FindHandledEvent(byte[] digest)
        {
            handledDigest.Value = digest;
            return handledCommand.ExecuteScalar() is long runId ? runId : null;
        }

        public StoredRun Load(long runId)
        {
            run.Value = runId;
            using var reader = command.ExecuteReader();
            if (!reader.Read())
            {
                // Read after the row: the sweep deletes the row and writes its tombstone in one transaction.
                return new StoredRun(null, 0) { Deleted = FindDeleted(runId) };
            }

            var version = reader.GetInt64(0);
            return new StoredRun(ReadState(runId, reader.GetFieldValue<byte[]>(1)), version);
        }

        private DeletedRun? FindDeleted(long runId)
        {
            deletedRun.Value = runId;
            using var reader = deletedCommand.ExecuteReader();
            return reader.Read()
                ? new DeletedRun(runId, reader.IsDBNull(0) ? null : reader.GetInt64(0), DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(1)))
                : null;
        }

        public void Dispose()
        {
            command.Dispose();
            deletedCommand.Dispose();
            handledCommand.Dispose();
            viewCommand.Dispose();
            connection.Dispose();
        }
    }

    /// <summary>
    /// A row's state from its UTF-8 bytes as stored (no UTF-16 string in between). A row this version cannot read or use
    /// (edited by hand, damaged, another run's) is refused, never taken for "no run": that would start the run over on top of it.
    /// </summary>
    private static RunHandoffState ReadState(long runId, byte[] json)
    {
        RunHandoffState? state;
        try
        {
            state = JsonSerializer.Deserialize(json, HandoffJsonContext.Default.RunHandoffState);
        }
        catch (JsonException exception)
        {
            throw new UnreadableRunStateException(runId, "it is not a run's JSON", exception);
        }

        return state is null ? throw new UnreadableRunStateException(runId, "it is JSON null")
            : state.FindDamage(runId) is { } damage ? throw new UnreadableRunStateException(runId, damage)
            : state;
    }

    /// <summary>Saves the run if nobody else changed it since <paramref name="expectedVersion"/>, and sets its wake-up.</summary>
    /// <param name="handled">What the row says of the completion event it handled; by default, nothing.</param>
    /// <param name="view">The run's view as the API writes it, for reads; none by default (reads then build it from the state).</param>
    /// <returns>The new version.</returns>
    /// <exception cref="RunVersionConflictException">Another process saved the run first.</exception>
    public Task<long> SaveAsync(RunHandoffState state, long expectedVersion, CancellationToken cancellationToken, HandledEvent handled = default, byte[]? view = null)
    {
        // UTF-8 as SQLite keeps it: no UTF-16 string, no second encoding when the parameter is bound.
        var json = JsonSerializer.SerializeToUtf8Bytes(state, HandoffJsonContext.Default.RunHandoffState);
        var clock = timeProvider.GetUtcNow();
        var now = clock.ToUnixTimeMilliseconds();
        // To the millisecond the row keeps. One still to come is rounded up: claimed at the start of its millisecond, a
        // wake-up due later in it found nothing due yet, gave its claim back unchanged and was claimed again at once until
        // the clock passed it (saving the run each time). One already due (an event's launches, due as they are saved) is
        // rounded down: rounded up, the pass its signal starts in the same millisecond found it not due, and it waited for
        // the next poll. Any later claim finds it due either way.
        var wakeAt = state.NextWakeAt() is not { } next ? (long?)null
            : next <= clock ? next.ToUnixTimeMilliseconds()
            : (next + TimeSpan.FromTicks(TimeSpan.TicksPerMillisecond - 1)).ToUnixTimeMilliseconds();
        var runId = state.RunId;
        return writer.WriteAsync(
            (connection, transaction) =>
            {
                if (!handled.Keep)
                {
                    handledEvents.Forget(runId);
                }

                var (saved, held) = Write(connection, transaction, runId, state.GroupId, json, handled, view, wakeAt, now, expectedVersion);
                if (handled.Keep)
                {
                    // Kept only if still valid, and perhaps not the one remembered: another process on the file may have
                    // retired it, or written its own, since this process's last look at the file.
                    handledEvents.ForgetUnlessHeld(runId, held);
                }

                return saved;
            },
            SqliteCheckpointer.WeightOf(json.Length + (view?.Length ?? 0L)),
            afterCommit: _ =>
            {
                if (handled.Digest is { } digest)
                {
                    handledEvents.Remember(runId, digest);
                }
            });
    }

    /// <returns>The new version, and the handled-event digest the row holds after the write (null: none).</returns>
    private static (long Version, byte[]? Handled) Write(
        SqliteConnection connection, SqliteTransaction transaction, long runId, long? groupId, byte[] json, HandledEvent handled, byte[]? view, long? wakeAt, long now, long expectedVersion)
    {
        byte[]? held;
        using (var command = connection.CreateCommand())
        {
            command.Transaction = transaction;
            command.CommandText = expectedVersion == 0
                ? """
                  INSERT INTO runs (run_id, group_id, version, state, handled_event, handled_version, view, view_version, view_format, view_format_version, updated_at)
                  SELECT $run, $group, 1, $state, $handled, 1, $view, 1, $format, 1, $now
                  WHERE NOT EXISTS (SELECT 1 FROM deleted_runs WHERE run_id = $run)
                  ON CONFLICT (run_id) DO NOTHING
                  RETURNING handled_event
                  """
                : """
                  UPDATE runs SET group_id = $group, version = version + 1, state = $state, updated_at = $now,
                      handled_event = CASE WHEN $keep AND handled_version = version THEN handled_event WHEN $keep THEN NULL ELSE $handled END,
                      handled_version = version + 1,
                      view = $view, view_version = version + 1, view_format = $format, view_format_version = version + 1
                  WHERE run_id = $run AND version = $version
                  RETURNING handled_event
                  """;
            command.Parameters.AddWithValue("$run", runId);
            command.Parameters.AddWithValue("$group", (object?)groupId ?? DBNull.Value);
            command.Parameters.AddWithValue("$state", json);
            command.Parameters.AddWithValue("$handled", (object?)handled.Digest ?? DBNull.Value);
            command.Parameters.AddWithValue("$keep", handled.Keep);
            command.Parameters.AddWithValue("$view", (object?)view ?? DBNull.Value);
            command.Parameters.AddWithValue("$format", ViewFormat);
            command.Parameters.AddWithValue("$now", now);
            command.Parameters.AddWithValue("$version", expectedVersion);
            using var reader = command.ExecuteReader();
            if (!reader.Read())
            {
                // Nothing was written: this save fails alone, the others in its transaction still commit. A run deleted
                // by retention since it was read (its tombstone keeps it from being made anew) fails so too: the turn is
                // decided again, and meets the tombstone.
                throw new RunVersionConflictException(runId);
            }

            held = reader.IsDBNull(0) ? null : reader.GetFieldValue<byte[]>(0);
        }

        using (var command = connection.CreateCommand())
        {
            command.Transaction = transaction;
            if (wakeAt is { } due)
            {
                command.CommandText = """
                    INSERT INTO wakeups (run_id, due_at) VALUES ($run, $due)
                    ON CONFLICT (run_id) DO UPDATE SET due_at = excluded.due_at
                    """;
                command.Parameters.AddWithValue("$due", due);
            }
            else
            {
                command.CommandText = "DELETE FROM wakeups WHERE run_id = $run";
            }

            command.Parameters.AddWithValue("$run", runId);
            command.ExecuteNonQuery();
        }

        return (expectedVersion + 1, held);
    }

    /// <summary>
    /// Claims up to <paramref name="limit"/> due wake-ups for <paramref name="owner"/>; a claim held by a live lease is
    /// skipped, and so are <paramref name="busy"/> runs: this process is still working on them under an earlier claim
    /// (their row can be new, with no lease, when their last save cleared it and an event then made them due again), or
    /// a launch round a request started for them here is still out (<see cref="EmbeddedRunOwner.RunsWithRequestRounds"/>).
    /// </summary>
    public Task<IReadOnlyList<long>> ClaimDueWakeupsAsync(
        string owner, DateTimeOffset now, TimeSpan lease, int limit, CancellationToken cancellationToken, IReadOnlyCollection<long>? busy = null) =>
        writer.WriteAsync<IReadOnlyList<long>>((connection, transaction) =>
        {
            using var command = connection.CreateCommand();
            command.Transaction = transaction;
            // One statement, so SQLite's write lock makes the claim atomic across processes sharing the file.
            command.CommandText = """
                UPDATE wakeups SET lease_owner = $owner, lease_until = $until
                WHERE run_id IN (
                    SELECT run_id FROM wakeups
                    WHERE due_at <= $now AND (lease_until IS NULL OR lease_until < $now)
                      AND run_id NOT IN (SELECT value FROM json_each($busy))
                    ORDER BY due_at LIMIT $limit)
                RETURNING run_id
                """;
            command.Parameters.AddWithValue("$owner", owner);
            command.Parameters.AddWithValue("$until", (now + lease).ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$now", now.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$limit", limit);
            command.Parameters.AddWithValue("$busy", busy is { Count: > 0 } ? $"[{string.Join(',', busy)}]" : "[]");
            var claimed = new List<long>();
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                claimed.Add(reader.GetInt64(0));
            }

            return claimed;
        });

    /// <summary>Extends <paramref name="owner"/>'s leases on <paramref name="runIds"/>: they are still being worked on.</summary>
    public Task RenewLeasesAsync(string owner, IReadOnlyCollection<long> runIds, DateTimeOffset until, CancellationToken cancellationToken) =>
        writer.WriteAsync((connection, transaction) =>
        {
            using var command = connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = """
                UPDATE wakeups SET lease_until = $until
                WHERE lease_owner = $owner AND run_id IN (SELECT value FROM json_each($runs))
                """;
            command.Parameters.AddWithValue("$until", until.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$owner", owner);
            command.Parameters.AddWithValue("$runs", "[" + string.Join(',', runIds.Select(id => id.ToString(CultureInfo.InvariantCulture))) + "]");
            return command.ExecuteNonQuery();
        });

    public Task ReleaseWakeupAsync(long runId, string owner, CancellationToken cancellationToken) =>
        writer.WriteAsync((connection, transaction) =>
        {
            using var command = connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = "UPDATE wakeups SET lease_owner = NULL, lease_until = NULL WHERE run_id = $run AND lease_owner = $owner";
            command.Parameters.AddWithValue("$run", runId);
            command.Parameters.AddWithValue("$owner", owner);
            return command.ExecuteNonQuery();
        });

    public async Task<DateTimeOffset?> GetWakeupAsync(long runId, CancellationToken cancellationToken)
    {
        await using var connection = OpenForRead();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT due_at FROM wakeups WHERE run_id = $run";
        command.Parameters.AddWithValue("$run", runId);
        var due = await command.ExecuteScalarAsync(cancellationToken);
        return due is long millis ? DateTimeOffset.FromUnixTimeMilliseconds(millis) : null;
    }

    /// <summary>The most recently changed runs, newest first; a row that cannot be read is left out (and logged), not the whole list.</summary>
    public async Task<IReadOnlyList<RunHandoffState>> ListRecentAsync(int limit, CancellationToken cancellationToken)
    {
        await using var connection = OpenForRead();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT run_id, state FROM runs ORDER BY updated_at DESC LIMIT $limit";
        command.Parameters.AddWithValue("$limit", limit);
        var runs = new List<RunHandoffState>(limit);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            try
            {
                runs.Add(ReadState(reader.GetInt64(0), reader.GetFieldValue<byte[]>(1)));
            }
            catch (UnreadableRunStateException exception)
            {
                LogUnreadableRunListed(logger, exception.RunId);
            }
        }

        return runs;
    }

    /// <summary>
    /// Runs last changed at or before <paramref name="cutoff"/> with no wake-up, oldest first, after
    /// <paramref name="after"/> (a cursor: old runs that are not settled are passed over, not read again): the
    /// candidates of the retention sweep, with the version they were read at. A row that cannot be read comes without
    /// its state, which the sweep passes over: it is left for an operator, never deleted.
    /// </summary>
    public IReadOnlyList<SweepCandidate> ListSweepCandidates(DateTimeOffset cutoff, (long UpdatedAt, long RunId) after, int limit)
    {
        using var connection = OpenForRead();
        using var command = connection.CreateCommand();
        // Through the updated_at index; a run with a wake-up row has something pending and is not even read.
        command.CommandText = """
            SELECT run_id, version, updated_at, state FROM runs
            WHERE updated_at <= $cutoff AND (updated_at, run_id) > ($after_at, $after_run)
              AND NOT EXISTS (SELECT 1 FROM wakeups WHERE wakeups.run_id = runs.run_id)
            ORDER BY updated_at, run_id LIMIT $limit
            """;
        command.Parameters.AddWithValue("$cutoff", cutoff.ToUnixTimeMilliseconds());
        command.Parameters.AddWithValue("$after_at", after.UpdatedAt);
        command.Parameters.AddWithValue("$after_run", after.RunId);
        command.Parameters.AddWithValue("$limit", limit);
        var candidates = new List<SweepCandidate>(limit);
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            var runId = reader.GetInt64(0);
            RunHandoffState? state;
            try
            {
                state = ReadState(runId, reader.GetFieldValue<byte[]>(3));
            }
            catch (UnreadableRunStateException)
            {
                state = null;
            }

            candidates.Add(new SweepCandidate(runId, reader.GetInt64(1), DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(2)), state));
        }

        return candidates;
    }

    /// <summary>
    /// Deletes the runs, each only if its row is still at the version it was read at and it has no wake-up (no save,
    /// by this process or another on the file, came in between), and leaves a tombstone for each one deleted, in one
    /// transaction. Returns how many went.
    /// </summary>
    public Task<int> DeleteSettledAsync(IReadOnlyList<SweepCandidate> runs, DateTimeOffset now, CancellationToken cancellationToken) =>
        writer.WriteAsync((connection, transaction) =>
        {
            using var delete = connection.CreateCommand();
            delete.Transaction = transaction;
            delete.CommandText = """
                DELETE FROM runs WHERE run_id = $run AND version = $version
                  AND NOT EXISTS (SELECT 1 FROM wakeups WHERE run_id = $run)
                RETURNING group_id
                """;
            var run = delete.Parameters.Add("$run", SqliteType.Integer);
            var version = delete.Parameters.Add("$version", SqliteType.Integer);
            using var tombstone = connection.CreateCommand();
            tombstone.Transaction = transaction;
            tombstone.CommandText = """
                INSERT INTO deleted_runs (run_id, group_id, deleted_at) VALUES ($run, $group, $now)
                ON CONFLICT (run_id) DO UPDATE SET group_id = excluded.group_id, deleted_at = excluded.deleted_at
                """;
            var tombstoneRun = tombstone.Parameters.Add("$run", SqliteType.Integer);
            var group = tombstone.Parameters.Add("$group", SqliteType.Integer);
            tombstone.Parameters.AddWithValue("$now", now.ToUnixTimeMilliseconds());
            var deleted = 0;
            foreach (var candidate in runs)
            {
                handledEvents.Forget(candidate.RunId);
                (run.Value, version.Value) = (candidate.RunId, candidate.Version);
                using (var reader = delete.ExecuteReader())
                {
                    if (!reader.Read())
                    {
                        continue; // changed since it was read, or gone: left alone
                    }

                    group.Value = reader.IsDBNull(0) ? DBNull.Value : reader.GetInt64(0);
                }

                tombstoneRun.Value = candidate.RunId;
                tombstone.ExecuteNonQuery();
                deleted++;
            }

            return deleted;
        });

    /// <summary>Whether any run deleted by retention has its tombstone here (one indexed read).</summary>
    public bool HasTombstones()
    {
        using var connection = OpenForRead();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT EXISTS (SELECT 1 FROM deleted_runs)";
        return command.ExecuteScalar() is 1L;
    }

    /// <summary>Drops up to <paramref name="limit"/> tombstones of runs deleted before <paramref name="cutoff"/>; returns how many.</summary>
    public Task<int> DropTombstonesAsync(DateTimeOffset cutoff, int limit, CancellationToken cancellationToken) =>
        writer.WriteAsync((connection, transaction) =>
        {
            using var command = connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = """
                DELETE FROM deleted_runs WHERE run_id IN (SELECT run_id FROM deleted_runs WHERE deleted_at < $cutoff LIMIT $limit)
                """;
            command.Parameters.AddWithValue("$cutoff", cutoff.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$limit", limit);
            return command.ExecuteNonQuery();
        });

    /// <summary>
    /// Deletes the wake-up of a run that has no row (a file edited by hand, or damaged): nothing can be done for it, and
    /// left due it would be claimed again at once, forever. A run saved meanwhile (its row and wake-up are written
    /// together) keeps its wake-up.
    /// </summary>
    public Task<int> DeleteOrphanWakeupAsync(long runId, CancellationToken cancellationToken) =>
        writer.WriteAsync((connection, transaction) =>
        {
            using var command = connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = "DELETE FROM wakeups WHERE run_id = $run AND NOT EXISTS (SELECT 1 FROM runs WHERE run_id = $run)";
            command.Parameters.AddWithValue("$run", runId);
            return command.ExecuteNonQuery();
        });

    /// <summary>
    /// Why the data file cannot be used now, or null: it is there, holds the run tables, and may be written. Opened anew,
    /// never created: a pooled connection keeps a deleted file alive, and one that may create would put an empty file
    /// in its place.
    /// </summary>
    /// <exception cref="SqliteException">The file could not be opened (deleted or moved).</exception>
    public async Task<string?> ReadinessProblemAsync(CancellationToken cancellationToken)
    {
        if (dataFile.Gone)
        {
            return "The data file was deleted or moved while the service ran: restart it once the file is back.";
        }

        await using var connection = new SqliteConnection(probeConnectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('runs', 'wakeups')";
        if (await command.ExecuteScalarAsync(cancellationToken) is not 2L)
        {
            return "The data file does not hold the run tables.";
        }

        // Start-up refuses a file it cannot write; its permissions can change later, or its file system be remounted.
        return DataFileAccess.IsWritable(dataFile.FullPath) == false
            ? "The data file can only be read (its permissions, or a read-only mount): every write fails."
            : null;
    }

    /// <summary>A pooled connection for reading: WAL lets readers run beside the writer.</summary>
    private SqliteConnection OpenForRead()
    {
        dataFile.ThrowIfGone();
        var connection = new SqliteConnection(connectionString);
        connection.Open();
        return connection;
    }

    [LoggerMessage(EventId = 3003, EventName = "CheckpointFailed", Level = LogLevel.Warning, Message = "The data file's write-ahead log could not be checkpointed; it grows until a later checkpoint succeeds")]
    private static partial void LogCheckpointFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 3010, EventName = "DataFileGone", Level = LogLevel.Error, Message = "The data file is no longer at {DataPath} (deleted or moved while the service ran): every write and read is refused until the service restarts; put the file back first")]
    private static partial void LogDataFileGone(ILogger logger, string dataPath);

    [LoggerMessage(EventId = 3011, EventName = "DataFileCreated", Level = LogLevel.Warning, Message = "No data file was at {DataPath}: a new, empty one was made there. If the service ran before, its runs are in another file (check Handoff:DataPath, relative to the working directory, and the volume)")]
    private static partial void LogDataFileCreated(ILogger logger, string dataPath);

    [LoggerMessage(EventId = 3004, EventName = "UnreadableRunListed", Level = LogLevel.Warning, Message = "Run {RunId} is left out of the list of runs: its stored state cannot be read")]
    private static partial void LogUnreadableRunListed(ILogger logger, long runId);

    /// <summary>The writer's connection: its commits never checkpoint, <see cref="SqliteCheckpointer"/> does that on its own thread.</summary>
    private SqliteConnection OpenForWriting()
    {
        var connection = Open();
        using var pragma = connection.CreateCommand();
        pragma.CommandText = "PRAGMA wal_autocheckpoint = 0";
        pragma.ExecuteNonQuery();
        return connection;
    }

    private SqliteConnection Open()
    {
        var connection = new SqliteConnection(connectionString);
        connection.Open();
        using var pragma = connection.CreateCommand();
        // A commit is flushed to the disk before it counts, so a power cut or a crashed host cannot take back a
        // launch's saved intent (the provider is called after it) or an event already answered. NORMAL flushes only at
        // checkpoints; FULL costs a flush per commit, which the one writer's group commit spreads over many writes
        // (the load tool: up to a tenth fewer launches/s, most phases within their spread; docs/performance.md).
        pragma.CommandText = "PRAGMA synchronous = FULL";
        pragma.ExecuteNonQuery();
        return connection;
    }
}

public sealed record StoredRun(RunHandoffState? State, long Version)
{
    /// <summary>When there is no row: the run's tombstone, if retention deleted it (<see cref="SqliteRunStore.DeleteSettledAsync"/>).</summary>
    public DeletedRun? Deleted { get; init; }
}

/// <summary>
/// What a saved row says of the completion event it handled: the digest of its bytes (<see cref="SqliteRunStore.DigestEvent"/>)
/// when the same bytes again would change nothing; the digest it had (<see cref="Kept"/>), the snapshot being unchanged;
/// or none (the default).
/// </summary>
public readonly record struct HandledEvent(byte[]? Digest, bool Keep)
{
    public static HandledEvent Of(byte[] digest) => new(digest, false);

    public static readonly HandledEvent Kept = new(null, true);
}

/// <summary>A run the retention sweep may delete: its row as read (the state null when it cannot be read).</summary>
public sealed record SweepCandidate(long RunId, long Version, DateTimeOffset UpdatedAt, RunHandoffState? State);

public sealed class RunVersionConflictException(long runId) : Exception($"Run {runId} was changed by another process.");
