using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Api;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// The harness's model of retention (<see cref="RandomProfile.Retention"/>). Which runs a sweep deletes is not predicted:
/// it is read from the file after every operation (a tombstone, and the run's last row as a trigger the harness adds to
/// the file recorded it when the sweep deleted it), and then held to what the design promises:
/// <list type="bullet">
/// <item>a run goes only settled (<see cref="RunHandoffState.IsSettled"/>), with no wake-up row, unchanged for the
/// retention; and, on the provider's side (not the service's predicate), never while an agent of it is unfinished there
/// and young enough that the run still watches it (2 × AgentMaxAge from its start, even given up on);</item>
/// <item>once deleted, for good: no row again, its tombstone kept (the clock stays far inside the tombstones' 30 days,
/// checked, so their expiry, after which an event would start the run anew, is not modelled);</item>
/// <item>its answers: an event is taken (200) and launches nothing (every agent of the run at the provider, at the end,
/// is one its last row tracked), a trigger and a read 404 <c>run-deleted</c> (and that answer only for a deleted run),
/// a webhook 204, and <c>GET /runs</c> does not list it, on either process;</item>
/// <item>at the end its last row is held to the same checks as a live run's view (agents at the provider per repository
/// and generation, no two on a branch, each agent's status against the provider's).</item>
/// </list>
/// </summary>
internal sealed partial class RandomizedEmbeddedHarness
{
    private const string RunDeletedProblem = "/problems/run-deleted\"";

    /// <summary>The clock's start: the harness checks it never moves a tombstone's lifetime past it.</summary>
    private static readonly DateTimeOffset ClockStart = new(2026, 11, 24, 10, 0, 0, TimeSpan.Zero);

    /// <summary>A deleted run as the file shows it: the tombstone's time and the run's last row (its state when deleted).</summary>
    private sealed record DeletedRunSeen(DateTimeOffset DeletedAt, RunHandoffState LastState);

    private readonly ConcurrentDictionary<long, DeletedRunSeen> deletedRuns = new();
    private int sweeps, deletedDuringOperations, deletedAtFinish, eventsOnDeleted, triggersOnDeleted, webhooksOnDeleted, sweepsMeetingTurns;

    private string DataFile => temp.File("shared.db");

    private bool KnownDeleted(long run) => deletedRuns.ContainsKey(run);

    private SqliteConnection OpenFile()
    {
        var connection = new SqliteConnection($"Data Source={DataFile};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA busy_timeout = 10000";
        command.ExecuteNonQuery();
        return connection;
    }

    /// <summary>
    /// Records every row deleted from <c>runs</c> (the sweep's delete is the only one) as it was, with whether it had a
    /// wake-up: the run's last state, read afterwards, in the same transaction as its tombstone.
    /// </summary>
    private void InstallDeleteAudit()
    {
        if (profile.Retention is null)
        {
            return;
        }

        _ = procs[0].Factory!.Store; // the schema exists
        using var connection = OpenFile();
        using var command = connection.CreateCommand();
        command.CommandText = """
            CREATE TABLE IF NOT EXISTS harness_deleted_rows (
                run_id INTEGER NOT NULL, version INTEGER NOT NULL, state BLOB NOT NULL, updated_at INTEGER NOT NULL, had_wakeup INTEGER NOT NULL);
            CREATE TRIGGER IF NOT EXISTS harness_audit_run_delete BEFORE DELETE ON runs BEGIN
                INSERT INTO harness_deleted_rows
                VALUES (OLD.run_id, OLD.version, OLD.state, OLD.updated_at, EXISTS (SELECT 1 FROM wakeups WHERE wakeups.run_id = OLD.run_id));
            END;
            """;
        command.ExecuteNonQuery();
    }

    private sealed record FileView(bool HasRow, DateTimeOffset? DeletedAt, List<(long Version, byte[] State, DateTimeOffset UpdatedAt, bool HadWakeup)> DeletedRows);

    private FileView ReadFile(long run)
    {
        using var connection = OpenFile();
        using var command = connection.CreateCommand();
        command.Parameters.AddWithValue("$run", run);
        command.CommandText = "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = $run), (SELECT deleted_at FROM deleted_runs WHERE run_id = $run)";
        bool hasRow;
        DateTimeOffset? deletedAt;
        using (var reader = command.ExecuteReader())
        {
            reader.Read();
            hasRow = reader.GetInt64(0) == 1;
            deletedAt = reader.IsDBNull(1) ? null : DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(1));
        }

        command.CommandText = "SELECT version, state, updated_at, had_wakeup FROM harness_deleted_rows WHERE run_id = $run ORDER BY rowid";
        var rows = new List<(long, byte[], DateTimeOffset, bool)>();
        using (var reader = command.ExecuteReader())
        {
            while (reader.Read())
            {
                rows.Add((reader.GetInt64(0), reader.GetFieldValue<byte[]>(1), DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(2)), reader.GetInt64(3) == 1));
            }
        }

        return new FileView(hasRow, deletedAt, rows);
    }

    /// <summary>Whether the file has the run's tombstone now (a 404 run-deleted must only ever be said of such a run).</summary>
    private bool DeletedInFile(long run) => profile.Retention is not null && ReadFile(run).DeletedAt is not null;

    /// <summary>Reads every run from the file: a run newly deleted is checked and remembered; a deleted run must stay so.</summary>
    private void ObserveDeletions(bool finishing = false)
    {
        if (profile.Retention is not { } retention)
        {
            return;
        }

        if (time.GetUtcNow() - ClockStart >= RunRetention.TombstoneLifetime - TimeSpan.FromDays(1))
        {
            Violation($"the clock moved {time.GetUtcNow() - ClockStart}: tombstones may expire, which this model does not cover");
        }

        foreach (var run in runs)
        {
            var file = ReadFile(run);
            if (deletedRuns.TryGetValue(run, out var seen))
            {
                if (file.HasRow || file.DeletedAt != seen.DeletedAt || file.DeletedRows.Count != 1)
                {
                    Violation($"run {run}, deleted at {seen.DeletedAt:O}, is back: row {file.HasRow}, tombstone {file.DeletedAt:O}, {file.DeletedRows.Count} rows deleted");
                }

                continue;
            }

            if (file.DeletedAt is not { } deletedAt)
            {
                if (file.DeletedRows.Count > 0)
                {
                    Violation($"run {run}: its row was deleted without a tombstone");
                }

                continue;
            }

            if (file.HasRow || file.DeletedRows.Count != 1)
            {
                Violation($"run {run}: a tombstone with a row ({file.HasRow}) or {file.DeletedRows.Count} rows deleted");
                if (file.DeletedRows.Count == 0)
                {
                    continue;
                }
            }

            var (version, stateBytes, updatedAt, hadWakeup) = file.DeletedRows[^1];
            var state = JsonSerializer.Deserialize(stateBytes, HandoffJsonContext.Default.RunHandoffState)!;
            deletedRuns[run] = new DeletedRunSeen(deletedAt, state);
            Interlocked.Increment(ref finishing ? ref deletedAtFinish : ref deletedDuringOperations);
            Note($"  run {run} deleted at {deletedAt:O} (v{version}, last changed {updatedAt:O}; now {time.GetUtcNow():O})");

            if (hadWakeup)
            {
                Violation($"run {run}: deleted with a wake-up row");
            }

            if (!state.IsSettled)
            {
                Violation($"run {run}: deleted with something pending: launches {string.Join(", ", state.Launches.Where(l => l.IsAwaitingWork).Select(l => $"{l.Repository}#{l.Generation} {l.Phase}"))}; agents to poll {string.Join(", ", state.AgentsToPoll.Select(a => $"{a.Id} {a.Status}"))}");
            }

            if (updatedAt > deletedAt - retention)
            {
                Violation($"run {run}: deleted at {deletedAt:O}, changed at {updatedAt:O}, less than the retention before");
            }

            // The provider's side: an agent still unfinished there that the run watches (even given up on) until 2 × AgentMaxAge from its start.
            foreach (var (id, agent) in ProviderAgentsOf(run))
            {
                var created = createdAtProvider.TryGetValue(id, out var at) ? at : time.GetUtcNow();
                if (agent.Expected is "pending" or "running" && deletedAt < created + GivenUpWatch - LongestPollInterval)
                {
                    Violation($"run {run}: deleted at {deletedAt:O} while its agent {id} ({agent.Repo}), created {created:O}, is {agent.Status} at the provider and still watched");
                }
            }
        }
    }

    /// <summary>Neither process lists a deleted run, and both answer a read of it 404 run-deleted.</summary>
    private async Task CheckDeletedRunsAnswerAsync()
    {
        foreach (var p in procs.Where(p => p.Running))
        {
            var client = p.Client!;
            var list = await client.GetAsync("/runs?limit=200");
            var body = await list.Content.ReadAsStringAsync();
            CheckLeak($"GET /runs on {p.Name}", body);
            if ((int)list.StatusCode != 200)
            {
                Violation($"GET /runs on {p.Name}: {(int)list.StatusCode} {HandoffInvariants.Truncate(body)}");
                continue;
            }

            foreach (var listed in JsonNode.Parse(body)!.AsArray())
            {
                if (listed!["run_id"]!.GetValue<long>() is var id && KnownDeleted(id))
                {
                    Violation($"GET /runs on {p.Name} lists run {id}, deleted at {deletedRuns[id].DeletedAt:O}");
                }
            }

            foreach (var run in deletedRuns.Keys.Order())
            {
                var read = await client.GetAsync($"/runs/{run}/handoff?group_id={Payloads.GroupId}");
                var text = await read.Content.ReadAsStringAsync();
                if ((int)read.StatusCode != 404 || !text.Contains(RunDeletedProblem, StringComparison.Ordinal))
                {
                    Violation($"GET run {run} (deleted) on {p.Name}: {(int)read.StatusCode} {HandoffInvariants.Truncate(text)}");
                }
            }
        }
    }

    /// <summary>
    /// An agent may end at the provider first (so more runs settle); the clock moves (past the retention mostly, short of
    /// it at times), the due work runs or not, then a sweep runs in one process or both, at times meeting an event,
    /// trigger, wake-up or webhook of a run it may delete. Then a deleted run, if any, is sent an event, a trigger or a
    /// webhook of one of its agents.
    /// </summary>
    private async Task SweepStepAsync()
    {
        var retention = profile.Retention!.Value;
        if (random.Next(2) == 0)
        {
            await ProgressAsync();
        }

        var by = random.Next(4) == 0 ? TimeSpan.FromMinutes(random.Next(1, 60)) : retention + TimeSpan.FromMinutes(random.Next(0, 120));
        Note($"advance {by} for a sweep");
        await StepClockAsync(by);
        if (random.Next(2) == 0)
        {
            await RunBothAsync();
        }

        var p = AnyRunning();
        var tasks = new List<Task> { SweepOnAsync(p) };
        if (Other(p) != p && random.Next(3) == 0)
        {
            tasks.Add(SweepOnAsync(Other(p)));
        }

        var run = runs[random.Next(runs.Count)];
        var meet = random.Next(5);
        if (meet < 4)
        {
            Interlocked.Increment(ref sweepsMeetingTurns);
        }

        tasks.Add(meet switch
        {
            0 => EventAsync(AnyRunning(), run: run, once: true),
            1 => TriggerAsync(AnyRunning(), random.Next(3) == 0 ? null : random.Next(3), run: run),
            2 => RunDueAsync(AnyRunning()),
            3 => DeliverPendingWebhookAsync(),
            _ => Task.CompletedTask,
        });
        await Task.WhenAll(tasks);
        ObserveDeletions();
        await CheckDeletedRunsAnswerAsync();
        if (deletedRuns.Keys.Order().ToList() is { Count: > 0 } gone)
        {
            await PokeDeletedRunAsync(gone[random.Next(gone.Count)]);
        }
    }

    /// <summary>A redelivered event (any of its snapshots), a trigger, or a webhook of one of its agents, for a deleted run.</summary>
    private async Task PokeDeletedRunAsync(long run)
    {
        var agents = copilotRuns.Contains(run) ? [] : ProviderAgentsOf(run).Keys.Order().ToList();
        switch (random.Next(agents.Count > 0 ? 3 : 2))
        {
            case 0:
                await EventAsync(AnyRunning(), run: run);
                break;
            case 1:
                await TriggerAsync(AnyRunning(), random.Next(3) == 0 ? null : random.Next(3), run: run);
                break;
            default:
                var id = agents[random.Next(agents.Count)];
                var agent = cursor.Agents[id];
                var status = agent["status"]!.GetValue<string>() is "CREATING" or "RUNNING" ? "FINISHED" : agent["status"]!.GetValue<string>();
                var repository = agent["source"]!["repository"]!.GetValue<string>();
                Note($"webhook of deleted run {run}: {id} {status}");
                await Webhook(AnyRunning(), run, HandoffInvariants.CursorStatusChange(id, status, null, repository, agent["target"]!["branchName"]?.GetValue<string>()));
                break;
        }
    }

    private async Task SweepOnAsync(Proc p)
    {
        var deleted = await p.Factory!.Services.GetRequiredService<RetentionSweeper>().SweepAsync(CancellationToken.None);
        Interlocked.Increment(ref sweeps);
        Note($"  sweep {p.Name}: {deleted} deleted");
    }

    /// <summary>A deleted run's view as its last row had it: what the end's checks hold it to.</summary>
    private JsonObject LastViewOf(DeletedRunSeen seen)
    {
        var http = procs.First(p => p.Running).Factory!.Services.GetRequiredService<IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions>>().Value.SerializerOptions;
        return JsonNode.Parse(RunHandoffView.Json(seen.LastState, http))!.AsObject();
    }

    private string RetentionCounters => profile.Retention is null ? ""
        : $" sweeps={sweeps} deletedDuringOps={deletedDuringOperations} deletedAtFinish={deletedAtFinish} sweepsMeetingTurns={sweepsMeetingTurns} eventsOnDeleted={eventsOnDeleted} triggersOnDeleted={triggersOnDeleted} webhooksOnDeleted={webhooksOnDeleted}";
}
