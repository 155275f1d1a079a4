using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>
/// The example requests of <c>HandoffDapr.Service.http</c> work against the quick start (issue 8), in their order: each
/// gets the answer its title names (a 4xx), else a 2xx. The agent id of the follow-up and the stop is one the run got.
/// </summary>
public sealed partial class HttpExamplesTests : IDisposable
{
    private static readonly string HttpFile = Path.Combine(Security.WebhookSignatureTests.RepositoryRoot(), "src", "HandoffDapr.Service", "HandoffDapr.Service.http");
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task Every_example_request_gets_the_answer_its_title_names()
    {
        var examples = Parse(File.ReadAllText(HttpFile));
        using var factory = new EmbeddedServiceFactory(temp.File("examples.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();
        string? agentId = null;

        Assert.True(examples.Count >= 8, $"{examples.Count} examples read");
        foreach (var example in examples)
        {
            using var request = new HttpRequestMessage(new HttpMethod(example.Method), agentId is null ? example.Path : AgentId().Replace(example.Path, agentId));
            if (example.Body is { } body)
            {
                request.Content = new StringContent(body, Encoding.UTF8, example.ContentType ?? "application/json");
            }

            using var response = await client.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();

            if (example.ExpectedStatus is { } expected)
            {
                Assert.True(expected == (int)response.StatusCode, $"{example.Title}: {(int)response.StatusCode} {text}");
            }
            else
            {
                Assert.True(response.IsSuccessStatusCode, $"{example.Title}: {(int)response.StatusCode} {text}");
            }

            if (example.Path.StartsWith("/events/", StringComparison.Ordinal))
            {
                // Embedded mode makes an event's launches right after answering it: here, when the test runs the schedule.
                await factory.Services.GetRequiredService<WakeupScheduler>().RunDueAsync(CancellationToken.None);
            }
            else if (example.Method == "GET" && example.Path.StartsWith("/runs/", StringComparison.Ordinal))
            {
                agentId = JsonNode.Parse(text)!["coding_agents"]!.AsObject().First().Key;
            }
        }

        Assert.NotNull(agentId);
        Assert.Equal(2, cursor.LaunchRequests); // the sample run's two repositories, once each
    }

    /// <summary>
    /// samples/README.md's steps with its two payloads: the sample event launches the run's two repositories, and the
    /// sample trigger sent after it answers them as launched and launches nothing new.
    /// </summary>
    [Fact]
    public async Task The_sample_trigger_after_the_sample_event_launches_nothing_new()
    {
        var samples = Path.Combine(Security.WebhookSignatureTests.RepositoryRoot(), "samples");
        using var factory = new EmbeddedServiceFactory(temp.File("samples.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));
        var client = factory.CreateClient();

        using var completed = await client.PostAsync("/events/autofix-run-completed",
            new StringContent(File.ReadAllText(Path.Combine(samples, "completion-event.json")), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, completed.StatusCode);
        await factory.Services.GetRequiredService<WakeupScheduler>().RunDueAsync(CancellationToken.None);
        Assert.Equal(2, cursor.LaunchRequests);

        using var trigger = await client.PostAsync("/runs/123/handoff",
            new StringContent(File.ReadAllText(Path.Combine(samples, "handoff-request.json")), Encoding.UTF8, "application/json"));
        var text = await trigger.Content.ReadAsStringAsync();
        Assert.True(trigger.StatusCode == HttpStatusCode.Accepted, $"{(int)trigger.StatusCode} {text}");
        var answer = JsonNode.Parse(text)!;
        Assert.Equal(["acme/payments", "acme/shop"], answer["successes"]!.AsArray().Select(s => s!["repo_name"]!.GetValue<string>()).Order());
        Assert.Empty(answer["failures"]!.AsArray());
        Assert.Empty(answer["retries"]!.AsArray());
        Assert.Equal(2, cursor.LaunchRequests);
    }

    private sealed record Example(string Title, string Method, string Path, string? ContentType, string? Body, int? ExpectedStatus);

    /// <summary>The requests of a .http file as the editors read it: <c>###</c> titles, <c>@name = value</c> variables, <c>&lt; file</c> bodies.</summary>
    private static List<Example> Parse(string text)
    {
        var variables = new Dictionary<string, string>();
        var examples = new List<Example>();
        foreach (var block in text.Split("###"))
        {
            var lines = block.Split('\n').Select(line => line.TrimEnd('\r')).ToList();
            var title = lines[0].Trim();
            var rest = lines.Skip(1).Where(line => !line.StartsWith('#')).SkipWhile(string.IsNullOrWhiteSpace).ToList();
            foreach (var line in lines.Where(line => line.StartsWith('@')))
            {
                var parts = line[1..].Split('=', 2);
                variables[parts[0].Trim()] = parts[1].Trim();
            }

            if (rest.Count == 0 || rest[0].StartsWith('@'))
            {
                continue;
            }

            var requestLine = rest[0].Split(' ', 2);
            var url = Variable().Replace(requestLine[1].Trim(), match => variables[match.Groups[1].Value]);
            var headers = rest.Skip(1).TakeWhile(line => line.Length > 0).ToList();
            var bodyLines = rest.Skip(1 + headers.Count).SkipWhile(string.IsNullOrWhiteSpace).ToList();
            var body = string.Join('\n', bodyLines).Trim();
            if (body.StartsWith('<'))
            {
                body = File.ReadAllText(Path.Combine(Path.GetDirectoryName(HttpFile)!, body[1..].Trim()));
            }

            var contentType = headers.FirstOrDefault(h => h.StartsWith("Content-Type:", StringComparison.OrdinalIgnoreCase))?.Split(':', 2)[1].Trim();
            var expected = Status().Match(title) is { Success: true } status ? int.Parse(status.Value, System.Globalization.CultureInfo.InvariantCulture) : (int?)null;
            examples.Add(new Example(title.Length > 0 ? title : url, requestLine[0], new Uri(url).PathAndQuery, contentType, body.Length > 0 ? body : null, expected));
        }

        return examples;
    }

    [GeneratedRegex(@"\{\{(\w+)\}\}")]
    private static partial Regex Variable();

    [GeneratedRegex(@"\b4\d\d\b")]
    private static partial Regex Status();

    [GeneratedRegex(@"bc-[0-9a-zA-Z]+")]
    private static partial Regex AgentId();

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
