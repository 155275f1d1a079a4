using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>
/// What daprd takes from the app's <c>GET dapr/config</c>: the hosted actor types, only when the body decodes into its
/// ApplicationConfig (pkg/config/app_configuration.go; http_channel.go GetAppConfig) and the two durations parse as Go
/// durations (pkg/actors/actors.go RegisterHosted). Otherwise no type is hosted: reminders of the type are refused (403)
/// and the metadata lists none, which is what the app's readiness check looks at.
/// </summary>
public sealed class AppConfigTests
{
    [Theory]
    [InlineData("""{"entities":["Raw"]}""")]
    [InlineData("""{"Entities":["Raw"]}""")] // Go matches field names case-insensitively
    [InlineData("""{"entities":["Raw"],"actorIdleTimeout":"0h30m0s0ms","drainOngoingCallTimeout":"0h0m20s0ms","drainRebalancedActors":true,"reentrancy":{"enabled":false,"maxStackDepth":32},"remindersStoragePartitions":0}""")]
    public async Task A_config_daprd_decodes_hosts_its_entities(string config)
    {
        var (sidecar, app) = await StartAsync(config);
        await using (sidecar)
        await using (app)
        {
            Assert.Equal(["Raw"], await HostedTypesAsync(sidecar));
            using var reminder = await RegisterReminderAsync(sidecar);
            Assert.Equal(HttpStatusCode.NoContent, reminder.StatusCode);
        }
    }

    [Theory]
    [InlineData("""{"entities":["Raw"],"drainRebalancedActors":"true"}""")] // a string where Go wants a bool: the decode fails
    [InlineData("""{"entities":["Raw"],"remindersStoragePartitions":"0"}""")]
    [InlineData("""{"entities":["Raw"],"reentrancy":{"enabled":"false"}}""")]
    [InlineData("""{"entities":"Raw"}""")]
    [InlineData("""{"entities":["Raw"],"actorIdleTimeout":"30"}""")] // time.ParseDuration: missing unit
    [InlineData("""{"entities":["Raw"],"drainOngoingCallTimeout":"PT20S"}""")] // not a Go duration
    public async Task A_config_daprd_cannot_use_hosts_nothing(string config)
    {
        var (sidecar, app) = await StartAsync(config);
        await using (sidecar)
        await using (app)
        {
            Assert.Empty(await HostedTypesAsync(sidecar));
            using var reminder = await RegisterReminderAsync(sidecar);
            Assert.Equal(HttpStatusCode.Forbidden, reminder.StatusCode);
            Assert.Contains("ERR_ACTOR_REMINDER_NON_HOSTED", await reminder.Content.ReadAsStringAsync());
        }
    }

    private static async Task<(FakeDaprSidecar Sidecar, WebApplication App)> StartAsync(string config)
    {
        var sidecar = await FakeDaprSidecar.StartAsync();
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Testing" });
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.MapGet("dapr/config", () => Results.Text(config, "application/json"));
        await app.StartAsync();
        sidecar.AppChannel = app.GetTestServer().CreateHandler();
        return (sidecar, app);
    }

    private static async Task<List<string>> HostedTypesAsync(FakeDaprSidecar sidecar)
    {
        using var http = new HttpClient { BaseAddress = sidecar.HttpEndpoint };
        using var metadata = JsonDocument.Parse(await http.GetStringAsync("v1.0/metadata"));
        return metadata.RootElement.GetProperty("actors").EnumerateArray().Select(a => a.GetProperty("type").GetString()!).ToList();
    }

    private static async Task<HttpResponseMessage> RegisterReminderAsync(FakeDaprSidecar sidecar)
    {
        using var http = new HttpClient { BaseAddress = sidecar.HttpEndpoint };
        return await http.PutAsync("v1.0/actors/Raw/a/reminders/r", new StringContent("""{"dueTime":"1s"}""", Encoding.UTF8, "application/json"));
    }
}
