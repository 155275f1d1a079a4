using System.Net;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>
/// An event the service will not take is logged with what the sender was told: in embedded mode the 4xx it got,
/// not the word "dropped" (nothing goes to a dead-letter topic there), and why, in the problem's own words.
/// </summary>
public sealed class CompletionEventLogTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeLogCollector logs = new();
    private readonly EmbeddedServiceFactory factory;
    private readonly HttpClient client;

    public CompletionEventLogTests()
    {
        factory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url) { Logs = logs };
        client = factory.CreateClient();
    }

    /// <summary>Why, as the problem's title and detail, whether the body could not be read or its run was refused.</summary>
    [Theory]
    [InlineData("application/json; charset=utf-16", "{}", 415, "Unsupported media type: ")]
    [InlineData("application/json", "", 400, "Invalid request body: The body is empty.")]
    [InlineData("application/json", "[1]", 400, "Invalid request body: The event data must be a JSON object.")]
    [InlineData("application/json", """{"run_id": 5}""", 400, "Invalid request body: The run names no group")]
    public async Task Refused_event_is_logged_with_the_status_it_got_and_why(string contentType, string body, int status, string reason)
    {
        var response = await client.PostRawAsync("/events/autofix-run-completed", body, contentType);

        Assert.Equal(status, (int)response.StatusCode);
        var record = Assert.Single(logs.GetSnapshot(), r => r.Id.Name == "CompletionEventMalformed");
        Assert.StartsWith(reason, record.GetStructuredStateValue("Reason"), StringComparison.Ordinal);
        Assert.Contains($"answered {status}", record.Message);
        Assert.DoesNotContain("dropped", record.Message);
    }

    [Fact]
    public async Task Handed_off_event_does_not_call_launches_saved_as_due_retries()
    {
        // The quick start's first log line read "0 agent(s), 0 failure(s), 2 retry(ies) scheduled" though no attempt
        // had been made, let alone failed: the event is answered once its launches are saved as due.
        Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(73, ["acme/shop", "acme/web"]))).StatusCode);

        var record = Assert.Single(logs.GetSnapshot(), r => r.Id.Name == "CompletionEventHandedOff");
        Assert.DoesNotContain("retry(ies) scheduled", record.Message);
        Assert.Contains("2 launch(es) under way or still to make", record.Message);
    }

    [Fact]
    public async Task Handed_off_event_names_its_count_of_launches_not_yet_done_for_what_it_counts()
    {
        // The field was still named Retries though it counts every launch not yet done: saved as due, in flight, or to be
        // retried; a query on Retries read launches that had never failed as retries.
        Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(74, ["acme/shop", "acme/web"]))).StatusCode);

        var record = Assert.Single(logs.GetSnapshot(), r => r.Id.Name == "CompletionEventHandedOff");
        var fields = record.StructuredState!.ToDictionary(field => field.Key, field => field.Value);
        Assert.False(fields.ContainsKey("Retries"), "the count is still named Retries");
        Assert.Equal("2", fields["PendingLaunches"]);
        Assert.Contains("launch(es) under way or still to make", record.Message);
    }

    [Fact]
    public async Task Event_for_a_run_of_another_group_is_logged_as_answered_404()
    {
        Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(71, ["acme/shop"], automation: false))).StatusCode);
        var moved = Payloads.Run(71, ["acme/shop"], automation: false, groupId: 999);

        var response = await client.PostJsonAsync("/events/autofix-run-completed", moved);

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var record = Assert.Single(logs.GetSnapshot(), r => r.Id.Name == "CompletionEventDropped");
        Assert.Contains("run 71", record.Message);
        Assert.Contains("answered 404", record.Message);
        Assert.DoesNotContain("dropped", record.Message);
    }

    [Fact]
    public async Task Provider_error_answer_is_logged_with_the_run_it_belongs_to()
    {
        cursor.Script("acme/down", FakeCursor.Status(500));

        var response = await client.PostJsonAsync("/runs/72/handoff", Payloads.Trigger(Payloads.Run(72, ["acme/down"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        // The provider client's own line names no run; the engine's scope does.
        var record = Assert.Single(logs.GetSnapshot(), r => r.Id.Name == "ProviderErrorAnswer");
        Assert.Contains(record.Scopes.OfType<IEnumerable<KeyValuePair<string, object>>>(), scope => scope.Contains(new KeyValuePair<string, object>("RunId", 72L)));
        // As text too (the JSON console's Scopes[].Message, the plain console with scopes): it used to be the scope's type name.
        Assert.Contains(record.Scopes, scope => scope?.ToString() == "Run 72");
    }

    /// <summary>
    /// The runbook's promise for a person's stop and follow-up too: the provider client's line about the command is
    /// written under the run's scope, the only place it names the run.
    /// </summary>
    [Theory]
    [InlineData("stop")]
    [InlineData("followup")]
    public async Task Provider_error_answer_to_a_persons_stop_or_follow_up_is_logged_with_the_run_it_belongs_to(string command)
    {
        var launched = await client.PostJsonAsync("/runs/76/handoff", Payloads.Trigger(Payloads.Run(76, ["acme/shop"], automation: false)));
        Assert.Equal(HttpStatusCode.Accepted, launched.StatusCode);
        var agentId = await launched.ReadFirstLaunchedAgentIdAsync();
        cursor.NextCommandAnswer = FakeCursor.Status(429);

        var response = command == "stop"
            ? await client.PostAsync($"/runs/76/agents/{agentId}/stop", null)
            : await client.PostJsonAsync($"/runs/76/agents/{agentId}/followup", new System.Text.Json.Nodes.JsonObject { ["text"] = "Also add a test" });

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        var record = Assert.Single(logs.GetSnapshot(), r => r.Id.Name == "ProviderErrorAnswer");
        Assert.Contains(record.Scopes.OfType<IEnumerable<KeyValuePair<string, object>>>(), scope => scope.Contains(new KeyValuePair<string, object>("RunId", 76L)));
        Assert.Contains(record.Scopes, scope => scope?.ToString() == "Run 76");
    }

    [Fact]
    public async Task Event_text_cannot_forge_log_lines_or_send_terminal_codes()
    {
        // Development logs are plain text: a newline or an escape code from the event would forge a line.
        var run = Payloads.Run(73, ["acme/shop"]);
        run["preferences"]!["automation_handoff"]!["target"] = "x\ninfo: HandoffDapr[1] Run 1 handed off\u001b[2K";

        Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync("/events/autofix-run-completed", run)).StatusCode);

        Assert.Contains(logs.GetSnapshot(), record => record.Id.Name == "AutomationTargetMismatch");
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Message.Any(char.IsControl));
    }

    [Fact]
    public async Task Event_text_cannot_reorder_log_lines_with_bidi_or_zero_width_characters()
    {
        // An owner "\u202eevil" was logged as-is ("Run 500: \u202eevil/r? not launched"): the override shows the line's
        // text reversed from there on, while control characters were already made '?'.
        Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(75, ["\u202eevil/r\u200b"]))).StatusCode);

        var record = Assert.Single(logs.GetSnapshot(), r => r.Id.Name == "HandoffRepositoryNotLaunched");
        Assert.Contains("?evil/r?", record.Message);
        Assert.DoesNotContain(logs.GetSnapshot(), r => r.Message.Any(c => char.GetUnicodeCategory(c) == System.Globalization.UnicodeCategory.Format));
    }

    public void Dispose()
    {
        client.Dispose();
        factory.Dispose();
        cursor.Dispose();
        temp.Dispose();
    }
}
