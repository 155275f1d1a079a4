using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;

namespace HandoffDapr.Service.Tests.Operability;

public sealed class OpenApiTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task Development_serves_an_openapi_document_with_every_endpoint_and_its_problems()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("openapi.db"), cursor.Url).WithWebHostBuilder(b => b.UseEnvironment("Development"));

        var document = JsonNode.Parse(await factory.CreateClient().GetStringAsync("/openapi/v1.json"))!;

        var paths = document["paths"]!.AsObject();
        foreach (var path in new[] { "/runs/{runId}/handoff", "/runs", "/events/autofix-run-completed", "/webhooks/cursor/{integrationId}", "/runs/{runId}/agents/{agentId}/stop", "/runs/{runId}/agents/{agentId}/followup" })
        {
            Assert.True(paths.ContainsKey(path), path);
        }

        var trigger = paths["/runs/{runId}/handoff"]!["post"]!["responses"]!.AsObject();
        Assert.True(trigger.ContainsKey("202"));
        Assert.True(trigger.ContainsKey("404"));
        Assert.True(trigger.ContainsKey("429"));
        Assert.NotNull(paths["/runs/{runId}/handoff"]!["post"]!["requestBody"]);
        Assert.Contains("HandoffResult", document["components"]!["schemas"]!.AsObject().Select(s => s.Key));
    }

    [Fact]
    public async Task Production_does_not_serve_it()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("prod.db"), cursor.Url);

        Assert.Equal(HttpStatusCode.NotFound, (await factory.CreateClient().GetAsync("/openapi/v1.json")).StatusCode);
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
