using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// A repository the engine refuses (its name, host or base branch; or a run that names none) is in neither the stored
/// state nor the timeline, so a redelivered event changes nothing: GET /runs/{id}/handoff derives it from the snapshot
/// as <c>refused</c>, or a reader of the run could not learn why it was never launched.
/// </summary>
public sealed class RefusedRepositoriesTests : IDisposable
{
    private const string Route = "/events/autofix-run-completed";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeLogCollector logs = new();

    [Fact]
    public async Task An_events_refused_repositories_are_in_the_runs_view_with_their_failure_type_and_a_printable_name()
    {
        using var factory = Start("refused.db");
        using var client = factory.CreateClient();

        await client.PostJsonAsync(Route, RunWithRefusedRepositories(400));
        await factory.RunScheduleAsync();
        var answer = await client.GetAsync("/runs/400/handoff");
        var text = await answer.Content.ReadAsStringAsync();
        var view = JsonNode.Parse(text)!;

        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Equal(["acme/shop"], view["launches"]!.AsArray().Select(launch => launch!["repository"]!.GetValue<string>()));
        Assert.Equal(
            [("../..", "invalid_repository"), ("?evil/r", "invalid_repository"), ("acme/api", "invalid_repository"), ("acme/web", "invalid_repository")],
            Refused(view));
        Assert.DoesNotContain("\u202e", text);
        Assert.DoesNotContain("\\u202E", text, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task A_redelivery_of_an_event_with_refused_repositories_changes_nothing_and_the_view_still_shows_them()
    {
        using var factory = Start("redelivered.db");
        using var client = factory.CreateClient();
        var run = RunWithRefusedRepositories(401);
        await client.PostJsonAsync(Route, run);
        await factory.RunScheduleAsync();
        var before = await factory.Store.LoadAsync(401, CancellationToken.None);
        var viewBefore = await client.GetStringAsync("/runs/401/handoff");

        var redelivered = await client.PostJsonAsync(Route, run);
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, redelivered.StatusCode);
        Assert.Equal([401L], Repeated()); // answered from the digest of the handled event, the run not even read
        Assert.Equal(before.Version, (await factory.Store.LoadAsync(401, CancellationToken.None)).Version);
        Assert.Equal(viewBefore, await client.GetStringAsync("/runs/401/handoff"));
        Assert.Equal(4, Refused(JsonNode.Parse(viewBefore)!).Count);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task A_run_without_repositories_shows_its_no_repositories_refusal()
    {
        using var factory = Start("none.db");
        using var client = factory.CreateClient();

        var trigger = await client.PostJsonAsync("/runs/402/handoff", Payloads.Trigger(Payloads.Run(402, [], automation: false)));
        var view = JsonNode.Parse(await client.GetStringAsync("/runs/402/handoff"))!;

        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        Assert.Equal("no_repositories", (await trigger.ReadJsonAsync())["failures"]![0]!["failure_type"]!.GetValue<string>());
        Assert.Empty(view["launches"]!.AsArray());
        var refusal = Assert.Single(view["refused"]!.AsArray())!;
        Assert.Null(refusal["repository"]);
        Assert.Equal("no_repositories", refusal["failure_type"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_run_whose_repositories_are_all_launched_shows_refused_as_an_empty_array()
    {
        using var factory = Start("clean.db");
        using var client = factory.CreateClient();

        await client.PostJsonAsync("/runs/403/handoff", Payloads.Trigger(Payloads.Run(403, ["acme/shop"], automation: false)));
        var view = JsonNode.Parse(await client.GetStringAsync("/runs/403/handoff"))!;

        Assert.Empty(view["refused"]!.AsArray());
    }

    /// <summary>
    /// Views stored before <c>refused</c> was part of them: rows of a file this release is upgraded onto (no view format),
    /// and a save by that earlier release on the same file since (a hand-over: a view for the row's version, in the old
    /// shape). Neither is sent: the read builds the view from the state, refused included.
    /// </summary>
    [Theory]
    [InlineData("UPDATE runs SET view = $view, view_format = NULL, view_format_version = NULL")]
    [InlineData("UPDATE runs SET version = version + 1, view = $view, view_version = version + 1")]
    public async Task A_view_stored_in_the_shape_before_refused_is_not_sent(string earlierWrite)
    {
        using var factory = Start("earlier-view.db");
        using var client = factory.CreateClient();
        await client.PostJsonAsync("/runs/404/handoff", Payloads.Trigger(RunWithRefusedRepositories(404)));
        var current = JsonNode.Parse(await client.GetStringAsync("/runs/404/handoff"))!.AsObject();
        current.Remove("refused");

        await using (var connection = new SqliteConnection($"Data Source={factory.DataPath};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = earlierWrite;
            command.Parameters.AddWithValue("$view", System.Text.Encoding.UTF8.GetBytes(current.ToJsonString()));
            Assert.Equal(1, await command.ExecuteNonQueryAsync());
        }

        var view = JsonNode.Parse(await client.GetStringAsync("/runs/404/handoff"))!;

        Assert.Null(factory.Store.LoadView(404));
        Assert.Equal(4, Refused(view).Count);
    }

    /// <summary>A run handed off automatically on acme/shop, with four repositories the engine refuses before any launch.</summary>
    private static JsonObject RunWithRefusedRepositories(long runId)
    {
        var run = Payloads.Run(runId, ["acme/shop", "../..", "\u202eevil/r", "acme/api", "acme/web"]);
        var repositories = run["preferences"]!["repositories"]!.AsArray();
        repositories[3]!["branch_name"] = "ma..in";
        repositories[4]!["provider"] = "gitlab";
        return run;
    }

    private static List<(string?, string)> Refused(JsonNode view) => view["refused"]!.AsArray()
        .Select(refusal => (refusal!["repository"]?.GetValue<string>(), refusal["failure_type"]!.GetValue<string>()))
        .ToList();

    private EmbeddedServiceFactory Start(string file) => new(
        temp.File(file), cursor.Url, settings: new Dictionary<string, string?> { ["Logging:LogLevel:Default"] = "Debug" })
    {
        Logs = logs,
    };

    private List<long> Repeated() => logs.GetSnapshot()
        .Where(record => record.Id.Name == "CompletionEventRepeated")
        .Select(record => long.Parse(record.GetStructuredStateValue("RunId")!))
        .ToList();

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
